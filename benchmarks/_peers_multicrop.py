"""The PyTorch/lightly side of `learning_parity.py` for SwAV, and the crop grouping SwAV/DINO/iBOT share.

Only benchmarks import this module (it needs `.venv-bench`, see benchmarks/README.md).

- `by_resolution`: each run of same-size views goes through the backbone in ONE call, rows in view
  order, as jaxssl's `heads.MultiCrop(grouping="resolution")` (the default of its SwAV, DINO and
  iBOT) and the references (facebookresearch/swav `ResNet.forward`, facebookresearch/dino
  `MultiCropWrapper`). With a BatchNorm backbone this fixes the statistics each crop is normalised
  with (lightly's examples loop over the crops instead: one call, and BN statistics, per crop).
- `SwAV`: lightly's `SwaVProjectionHead`, `SwaVPrototypes` (`n_steps_frozen_prototypes`, and
  `prototypes.normalize()` at the start of every step, as lightly's examples) and `SwaVLoss`
  (temperature, Sinkhorn iterations and epsilon); the high-resolution crops are the assigned ones;
  the optional queue is one lightly `MemoryBankModule` per assigned crop, as lightly's SwAV
  benchmark (`benchmarks/imagenet/resnet50/swav.py`, `_update_queue`).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn


def by_resolution(backbone: nn.Module, views: Sequence[torch.Tensor]) -> torch.Tensor:
    """Backbone features (V*B, F) of `views` (V tensors (B, 3, H, W)), one call per run of same-size views."""
    feats, start = [], 0
    while start < len(views):
        end = start + 1
        while end < len(views) and views[end].shape == views[start].shape:
            end += 1
        feats.append(backbone(torch.cat(list(views[start:end])) if end - start > 1 else views[start]))
        start = end
    return torch.cat(feats) if len(feats) > 1 else feats[0]


def leading_same_size(views: Sequence[Mapping]) -> int:
    """How many leading view dicts share the first one's `crop_size` (SwAV's high-resolution crops)."""
    n = 1
    while n < len(views) and views[n]["crop_size"] == views[0]["crop_size"]:
        n += 1
    return n


class SwAV(nn.Module):
    """lightly's SwAV; `step` is set by the trainer before each `loss` (prototype freeze, queue start).

    Queue (when `queue_size`): as jaxssl's SwAV (`jaxssl/methods/swav.py`), every step writes the
    batch's L2-normalised projections of each assigned crop into its bank (lightly's
    `MemoryBankModule`, which returns the bank as it was before the write), and from
    `queue_start_step` on, once `queue_size` rows have been written (lightly's bank starts with random
    rows, never used), the bank's scores against the current prototypes join the Sinkhorn
    (`SwaVLoss(queue_outputs=...)`, which keeps only the batch's codes).
    """

    step: int = 0

    def __init__(self, backbone: nn.Module, hidden: int, out: int, *, num_prototypes: int, temperature: float,
                 epsilon: float, sinkhorn_iters: int, freeze_prototypes_steps: int, high_resolution: int,
                 queue_size: int = 0, queue_start_step: int = 0, prototype_bias: bool = True):
        super().__init__()
        from lightly.loss import SwaVLoss
        from lightly.models.modules import SwaVProjectionHead, SwaVPrototypes
        from lightly.models.modules.memory_bank import MemoryBankModule
        self.backbone, self.high = backbone, high_resolution
        self.projector = SwaVProjectionHead(backbone.out_dim, hidden, out)
        self.prototypes = SwaVPrototypes(out, num_prototypes, n_steps_frozen_prototypes=freeze_prototypes_steps)
        if not prototype_bias:  # `--peer-swav-bias off`: bias-free prototypes, as the reference's and jaxssl's
            for layer in self.prototypes.heads:
                layer.register_parameter("bias", None)
        self.criterion = SwaVLoss(temperature=temperature, sinkhorn_iterations=sinkhorn_iters,
                                  sinkhorn_epsilon=epsilon)
        self.queue_size, self.queue_start_step, self.written = queue_size, queue_start_step, 0
        self.queues = nn.ModuleList([MemoryBankModule(size=(queue_size, out), feature_dim_first=False)
                                     for _ in range(high_resolution)]) if queue_size else None

    def loss(self, *views):
        self.prototypes.normalize()  # unit prototypes before each step, as lightly's examples
        n = len(views)
        z = nn.functional.normalize(self.projector(by_resolution(self.backbone, views)), dim=1)
        scores = self.prototypes(z, step=self.step).chunk(n)
        queue_scores = None
        if self.queues is not None:
            with torch.no_grad():
                use = self.step >= self.queue_start_step and self.written >= self.queue_size
                banks = [q(zi.detach(), update=True)[1] for q, zi in zip(self.queues, z.chunk(n)[:self.high])]
                self.written += views[0].shape[0]
                if use:
                    queue_scores = [self.prototypes(bank, step=self.step) for bank in banks]
        return self.criterion(list(scores[:self.high]), list(scores[self.high:]), queue_scores)


def from_config(config, backbone: nn.Module, prototype_bias: bool = True) -> nn.Module:
    """lightly's SwAV with the head, prototypes, loss and queue of jaxssl's `config.method_kw`;
    `prototype_bias=False` drops the bias of lightly's `SwaVPrototypes` (a diagnostic)."""
    kw = dict(config.method_kw)
    high = leading_same_size(config.input.views)
    if tuple(kw.get("crops_for_assign", (0, 1))) != tuple(range(high)):
        raise NotImplementedError(f"lightly's SwaVLoss assigns codes from all {high} high-resolution crops; "
                                  f"crops_for_assign={kw.get('crops_for_assign')}.")
    if kw.get("prototype_norm", "in_place") != "in_place" or kw.get("crop_grouping", "resolution") != "resolution":
        raise NotImplementedError("only prototype_norm='in_place' and crop_grouping='resolution' are wired up.")
    hidden = tuple(kw.get("proj_hidden", (2048,)))
    if len(hidden) != 1:
        raise NotImplementedError(f"lightly's SwaVProjectionHead has one hidden layer, got {hidden}.")
    return SwAV(backbone, hidden[0], kw.get("proj_dim", 128), num_prototypes=kw["num_prototypes"],
                temperature=kw["temperature"], epsilon=kw["epsilon"], sinkhorn_iters=kw["sinkhorn_iters"],
                freeze_prototypes_steps=kw.get("freeze_prototypes_steps", 0), high_resolution=high,
                queue_size=int(kw.get("queue_size") or 0), queue_start_step=kw.get("queue_start_step", 0),
                prototype_bias=prototype_bias)
