"""The PyTorch/lightly side of DINO and iBOT: the ViT-S/16 throughput benchmark (`throughput_dino.py`)
and `learning_parity.py` (`from_config`: a jaxssl DINO config, e.g. the `:cpu` ResNet-18 with
BatchNorm in the head and LARS, or an iBOT config, `IBOT`; the student evaluated as jaxssl does).

Only benchmarks import this module (it needs `.venv-bench` plus timm, see benchmarks/README.md).
The throughput side mirrors jaxssl's `configs/dino_vits16_imagenet.py` step, written the way
lightly's DINO example writes it, with the reference's (facebookresearch/dino) choices where
jaxssl follows them:

- backbone: timm's `vit_small_patch16_224` (`dynamic_img_size=True`: the position embedding is
  resized for the 96 px crops, as DINO's `interpolate_pos_encoding`), stochastic depth 0.1 in
  the student and none in the teacher (DINO builds its teacher with `drop_path_rate=0`);
- head/loss: `lightly.models.modules.DINOProjectionHead`, `lightly.loss.DINOLoss` (centring,
  sharpening with the teacher temperature given each step, centre EMA 0.9);
- teacher: a copy of the student, `lightly.models.utils.update_momentum` with
  `lightly.utils.scheduler.cosine_schedule` (0.996 -> 1);
- multi-crop: crops of one resolution go through the backbone in one call and the head runs once
  on all features (DINO's MultiCropWrapper, as jaxssl's `heads.MultiCrop`);
- optimiser: `torch.optim.AdamW` with DINO's parameter groups (no weight decay on biases and
  norm parameters), per-step learning rate and weight-decay schedules, and DINO's per-tensor
  gradient clipping (`utils.clip_gradients`, without its per-tensor host sync);
- augmentation: `lightly.transforms.DINOTransform` on PIL images in a `DataLoader` (per image,
  on the host), lightly's standard data path.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import nn

import _peers


def vit(size: int, drop_path_rate: float, width: int | None = None, depth: int | None = None,
        heads: int | None = None) -> nn.Module:
    """timm ViT-S/16 (or a smaller one: `width`/`depth`/`heads`) returning the CLS feature (B, D)."""
    import timm
    kw = dict(img_size=size, drop_path_rate=drop_path_rate, num_classes=0, dynamic_img_size=True)
    kw.update({k: v for k, v in (("embed_dim", width), ("depth", depth), ("num_heads", heads)) if v})
    return timm.create_model("vit_small_patch16_224", pretrained=False, **kw)


class DINO(nn.Module):
    """Student and EMA teacher (backbone + DINOProjectionHead) and lightly's DINOLoss.

    The trainer sets `momentum` (the teacher EMA, applied at the start of `loss`, lightly's order)
    and `step` before each `loss`; the teacher temperature is `teacher_temperature(step)`.
    `after_backward()` drops the last layer's gradients while `step < freeze_last_layer`
    (lightly's `cancel_last_layer_gradients`, in steps here). Crops of one size share a backbone
    call (`_peers_multicrop.by_resolution`); the teacher sees the first `global_views` views.
    """

    momentum: float = 0.996
    step: int = 0

    def __init__(self, student_backbone: nn.Module, teacher_backbone: nn.Module, *, out_dim: int, hidden_dim: int,
                 bottleneck_dim: int, norm_last_layer: bool, freeze_last_layer: int, student_temperature: float,
                 center_momentum: float, teacher_temperature: Callable[[int], float], batch_norm: bool = False,
                 global_views: int = 2):
        super().__init__()
        from lightly.loss import DINOLoss
        from lightly.models.modules import DINOProjectionHead
        from lightly.models.utils import deactivate_requires_grad
        self.student_backbone, self.teacher_backbone = student_backbone, teacher_backbone
        self.teacher_temperature, self.global_views = teacher_temperature, global_views
        width = getattr(student_backbone, "out_dim", None) or student_backbone.num_features  # ours / timm's
        head = lambda: DINOProjectionHead(width, hidden_dim, bottleneck_dim, out_dim,
                                          batch_norm=batch_norm, freeze_last_layer=freeze_last_layer,
                                          norm_last_layer=norm_last_layer)
        # Two heads and load_state_dict rather than deepcopy: the weight-normed layer holds a
        # non-leaf tensor that deepcopy refuses (lightly's example also builds a second head).
        self.student_head, self.teacher_head = head(), head()
        self.teacher_backbone.load_state_dict(self.student_backbone.state_dict())
        self.teacher_head.load_state_dict(self.student_head.state_dict())
        deactivate_requires_grad(self.teacher_backbone)
        deactivate_requires_grad(self.teacher_head)
        self.criterion = DINOLoss(output_dim=out_dim, student_temp=student_temperature,
                                  center_momentum=center_momentum)

    @property
    def backbone(self) -> nn.Module:
        """The student's backbone (what jaxssl's DINO evaluates: `Method.eval_teacher` is False)."""
        return self.student_backbone

    def loss(self, *views: torch.Tensor) -> torch.Tensor:
        """DINO loss of one batch; views = the global crops, then the local crops."""
        from lightly.models.utils import update_momentum

        from _peers_multicrop import by_resolution
        update_momentum(self.student_backbone, self.teacher_backbone, m=self.momentum)
        update_momentum(self.student_head, self.teacher_head, m=self.momentum)
        n, g = len(views), self.global_views
        with torch.no_grad():  # the teacher in training mode (BatchNorm batch statistics), as the reference
            teacher = self.teacher_head(by_resolution(self.teacher_backbone, views[:g])).chunk(g)
        student = self.student_head(by_resolution(self.student_backbone, views)).chunk(n)
        return self.criterion(list(teacher), list(student), teacher_temp=float(self.teacher_temperature(self.step)))

    def after_backward(self) -> None:
        self.student_head.cancel_last_layer_gradients(current_epoch=self.step)


class IBOT(DINO):
    """iBOT from lightly's pieces: the DINO [CLS] loss over all crops plus lightly's `IBOTPatchLoss`.

    Both backbones are timm ViTs in lightly's `MaskedVisionTransformerTIMM` (timm's own init and
    learned position table kept: `weight_initialization`/`pos_embed_initialization="skip"`;
    `antialias=False`: the table resized for the local crops as jaxssl's ViT, bicubic without
    antialiasing). Each step, `lightly.models.utils.random_block_mask` masks the student's global
    crops (DINOv2's masking: `mask_probability` of the images, ratios spread over `mask_ratio`,
    blocks of at least `min_mask_patches`); one head (`separate_head=False`) maps [CLS] tokens and
    the masked patch tokens; the teacher sees the unmasked global crops.
    """

    def __init__(self, student_backbone: nn.Module, teacher_backbone: nn.Module, *, mask_ratio, mask_probability: float,
                 min_mask_patches: int, dino_loss_weight: float, ibot_loss_weight: float, **dino_kw):
        from lightly.loss import IBOTPatchLoss
        from lightly.models.modules import MaskedVisionTransformerTIMM

        def wrap(vit):
            m = MaskedVisionTransformerTIMM(vit=vit, weight_initialization="skip", pos_embed_initialization="skip",
                                            antialias=False)
            m.out_dim = vit.num_features
            return m
        super().__init__(wrap(student_backbone), wrap(teacher_backbone), **dino_kw)
        self.patch = student_backbone.patch_embed.patch_size[0]
        self.mask_ratio, self.mask_probability, self.min_mask_patches = tuple(mask_ratio), mask_probability, \
            min_mask_patches
        self.weights = (dino_loss_weight, ibot_loss_weight)
        self.patch_criterion = IBOTPatchLoss(output_dim=dino_kw["out_dim"], student_temp=dino_kw["student_temperature"],
                                             center_momentum=dino_kw["center_momentum"])

    def loss(self, *views: torch.Tensor) -> torch.Tensor:
        from lightly.models.utils import random_block_mask, update_momentum

        from _peers_multicrop import by_resolution
        update_momentum(self.student_backbone, self.teacher_backbone, m=self.momentum)
        update_momentum(self.student_head, self.teacher_head, m=self.momentum)
        n, g, b = len(views), self.global_views, views[0].shape[0]
        tau = float(self.teacher_temperature(self.step))
        x = torch.cat(views[:g])
        masks = random_block_mask((g * b, x.shape[2] // self.patch, x.shape[3] // self.patch),
                                  batch_mask_ratio=self.mask_probability, min_image_mask_ratio=self.mask_ratio[0],
                                  max_image_mask_ratio=self.mask_ratio[1],
                                  min_num_masks_per_block=self.min_mask_patches, device=x.device)
        flat = masks.flatten(1)
        with torch.no_grad():
            t = self.teacher_backbone.encode(x)
            t = self.teacher_head(torch.cat([t[:, 0], t[:, 1:][flat]]))
        # The mask covers the patch tokens; the CLS token (position 0) is never masked.
        s = self.student_backbone.encode(x, mask=torch.cat([flat.new_zeros(g * b, 1), flat], 1))
        local = [by_resolution(self.student_backbone, views[g:])] if n > g else []
        s = self.student_head(torch.cat([s[:, 0], *local, s[:, 1:][flat]]))
        cls_loss = self.criterion(list(t[:g * b].chunk(g)), list(s[:n * b].chunk(n)), teacher_temp=tau)
        patch_loss = self.patch_criterion(t[g * b:], s[n * b:], masks, teacher_temp=tau)
        return self.weights[0] * cls_loss + self.weights[1] * patch_loss


def from_config(config, backbone: nn.Module) -> DINO:
    """lightly's DINO (`config.method` "dino") or iBOT ("ibot") with the head, losses and schedules of
    jaxssl's `config.method_kw`, the teacher a second `_peers.backbone` without stochastic depth."""
    from jaxssl import schedules
    kw = dict(config.method_kw)
    if config.method not in ("dino", "ibot"):
        raise NotImplementedError(f"_peers_dino.from_config builds DINO and iBOT, got {config.method!r}.")
    if kw.get("crop_grouping", "resolution") != "resolution":
        raise NotImplementedError("only crop_grouping='resolution' is wired up.")
    teacher = _peers.backbone(config.model, drop_path_rate=0.0)
    tau = schedules.teacher_temperature(kw["warmup_teacher_temperature"], kw["teacher_temperature"],
                                        kw["warmup_teacher_temperature_steps"])
    dino_kw = dict(out_dim=kw["out_dim"], hidden_dim=kw["hidden_dim"], bottleneck_dim=kw["bottleneck_dim"],
                   norm_last_layer=kw["norm_last_layer"], freeze_last_layer=kw.get("freeze_last_layer_steps", 0),
                   student_temperature=kw["student_temperature"], center_momentum=kw["center_momentum"],
                   teacher_temperature=lambda i: float(tau(i)), batch_norm=kw.get("use_bn_in_head", False),
                   global_views=kw.get("global_views", 2))
    if config.method == "dino":
        return DINO(backbone, teacher, **dino_kw)
    unsupported = {k: kw.get(k) for k, ok in (("centering", "ema"), ("separate_head", False),
                                                ("koleo_loss_weight", 0.0)) if kw.get(k, ok) != ok}
    if unsupported or config.model.name != "vit":
        raise NotImplementedError(f"iBOT's torch side: a ViT, EMA centring, one shared head, no KoLeo; got "
                                  f"{unsupported}, model {config.model.name!r}.")
    return IBOT(backbone, teacher, mask_ratio=kw["mask_ratio"], mask_probability=kw["mask_probability"],
                min_mask_patches=kw["min_mask_patches"], dino_loss_weight=kw["dino_loss_weight"],
                ibot_loss_weight=kw["ibot_loss_weight"], **dino_kw)


def adamw(model: DINO, lr: float, weight_decay: float, betas=(0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW on the student; biases and norm parameters (ndim <= 1) without weight decay (DINO's
    `get_params_groups`, jaxssl's optim.decay_mask). Groups carry "decay" for the wd schedule."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if p.ndim > 1], "decay": True},
              {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0, "decay": False}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay)


def clip_per_param_(params: list[torch.Tensor], max_norm: float, eps: float = 1e-6) -> None:
    """Each gradient scaled by min(1, max_norm / (||g|| + eps)), DINO's `clip_gradients`, on device
    (the reference's `if clip_coef < 1` would synchronise the host once per tensor)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    norms = torch._foreach_norm(grads) if hasattr(torch, "_foreach_norm") else [g.norm() for g in grads]
    coefs = torch.clamp(max_norm / (torch.stack(norms) + eps), max=1.0)
    for g, c in zip(grads, coefs.unbind()):
        g.mul_(c.to(g.dtype))


def train_step_fn(model: DINO, opt: torch.optim.Optimizer, *, device: str, bf16: bool, lr, weight_decay,
                  total_steps: int, base_momentum: float, grad_clip: float | None):
    """step(views) -> loss tensor: schedules, EMA, forward (autocast when bf16), backward, clip, AdamW.

    `lr`, `weight_decay`: step -> float (the same schedules as jaxssl); the teacher temperature is the model's.
    """
    from lightly.utils.scheduler import cosine_schedule
    trainable = [p for p in model.parameters() if p.requires_grad]
    count = {"step": 0}

    def step(views):
        i = count["step"]
        for g in opt.param_groups:
            g["lr"] = lr(i)
            if g["decay"]:
                g["weight_decay"] = weight_decay(i)
        views = [v.to(device, non_blocking=True) for v in views]
        model.momentum, model.step = cosine_schedule(i, total_steps, base_momentum, 1.0), i
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
            loss = model.loss(*views)
        loss.backward()
        model.student_head.cancel_last_layer_gradients(current_epoch=0)  # freeze_last_layer epochs
        if grad_clip:
            clip_per_param_(trainable, grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        count["step"] = i + 1
        return loss

    return step


def transform(global_size: int, local_size: int, local_views: int):
    """lightly's DINOTransform with jaxssl's DINO views (its defaults are DINO's: global scale
    0.4-1, local 0.05-0.4, jitter 0.4/0.4/0.2/0.1 w.p. 0.8, grey 0.2, blur 1.0/0.1/0.5,
    solarisation 0.2 on the second global crop, ImageNet normalisation)."""
    from lightly.transforms import DINOTransform
    return DINOTransform(global_crop_size=global_size, local_crop_size=local_size, n_local_views=local_views)


PREFETCH = 2  # batches each DataLoader worker prepares ahead (torch's default prefetch_factor)


def loader(images: np.ndarray, tf, batch: int, workers: int, pin_memory: bool, seed: int = 0):
    """An endless DataLoader over `_peers._Images`: one epoch of sampling with replacement that never
    ends, so no epoch boundary drains the workers' prefetch queue with a small image set. Up to
    `workers * PREFETCH` batches wait in its queue."""
    g = torch.Generator().manual_seed(seed)
    ds = _peers._Images(images, None, tf)
    sampler = torch.utils.data.RandomSampler(ds, replacement=True, num_samples=2 ** 31 - 1, generator=g)
    return torch.utils.data.DataLoader(ds, batch_size=batch, sampler=sampler, drop_last=True, num_workers=workers,
                                       pin_memory=pin_memory, persistent_workers=workers > 0,
                                       prefetch_factor=PREFETCH if workers > 0 else None)


def cosine(start: float, end: float, total_steps: int, warmup_steps: int = 0, warmup_start: float = 0.0):
    """step -> linear warm-up from `warmup_start` to `start`, then cosine to `end` at `total_steps`
    (jaxssl.schedules.warmup_cosine / DINO's `cosine_scheduler`, per step)."""
    def f(step: int) -> float:
        if step < warmup_steps:
            return warmup_start + (start - warmup_start) * step / warmup_steps
        frac = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * frac))
    return f
