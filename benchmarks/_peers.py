"""The PyTorch/lightly side of the benchmarks: the model, heads, augmentation and step users write.

Only benchmarks import this module (it needs `.venv-bench`, see benchmarks/README.md). It mirrors
what jaxssl runs, written the way lightly's own examples write it:

- backbone: torchvision's ResNet `BasicBlock` stacked as ResNet-18 with the CIFAR stem (3x3/1
  conv, no max-pool) and a channel multiplier `width` (1.0 = torchvision `resnet18`, checked by
  parameter count), zero-initialised last BN of each block as jaxssl's ResNet (unless
  `zero_init_residual=False`), optionally lightly's `SplitBatchNorm` (MoCo's per-GPU BN);
- heads/losses: `lightly.models.modules.*` heads, `lightly.loss.*` losses and
  `lightly.models.utils.{update_momentum, batch_shuffle}` (see `from_config` for each method);
- optimiser: `optimizer(model, config.optimizer, ...)`: lightly's LARS (solo-learn's where
  `trust_clip` asks for the capped rate, which lightly's lacks), torch SGD or AdamW built
  from jaxssl's optimizer config (param groups for jaxssl's decay mask and `fixed_lr_paths`), the
  learning rate set every step from jaxssl's own schedule;
- augmentation: `views_transform(config.input.views)`: lightly's per-view transform
  (`BYOLView1Transform`, which exposes every knob) configured from each jaxssl view dict, on PIL
  images in a `torch.utils.data.DataLoader` (per-image, on the host), lightly's standard data path.
"""
from __future__ import annotations

import copy
import functools
import re
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def conv_init_(weight: torch.Tensor, name: str) -> None:
    """jaxssl's `resnet.CONV_INITS[name]` in PyTorch (in place)."""
    if name == "torchvision":
        nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu")
    elif name == "lecun_normal":  # flax: truncated at 2 std, std corrected for the truncation
        std = (1.0 / nn.init._calculate_fan_in_and_fan_out(weight)[0]) ** 0.5 / 0.87962566103423978
        nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)
    else:
        raise ValueError(f"unknown conv_init {name!r}")


class ResNet18(nn.Module):
    """torchvision BasicBlock ResNet-18, CIFAR stem, channels 64*width*(1, 2, 4, 8); returns pooled features."""

    def __init__(self, width: float = 1.0, zero_init_residual: bool = True, bn_splits: int = 1,
                 conv_init: str = "lecun_normal"):
        """`bn_splits` > 1: every BatchNorm is lightly's `SplitBatchNorm` (statistics per group of
        N/bn_splits images, MoCo's CIFAR-10 demo `bn_splits`). `conv_init`: jaxssl's
        `resnet.Model.conv_init`, the same distribution ("torchvision": torchvision's own
        kaiming_normal_ fan_out, what `torchvision.models.resnet18()` gives lightly's users;
        "lecun_normal": flax's truncated normal of variance 1 / fan_in)."""
        super().__init__()
        block = torchvision.models.resnet.BasicBlock
        norm = nn.BatchNorm2d
        if bn_splits > 1:
            from lightly.models.batchnorm import SplitBatchNorm
            norm = functools.partial(SplitBatchNorm, num_splits=bn_splits)
        base = max(1, int(round(64 * width)))
        self.stem = nn.Sequential(nn.Conv2d(3, base, 3, 1, 1, bias=False), norm(base), nn.ReLU(inplace=True))
        layers, inplanes = [], base
        for i in range(4):
            planes, stride = base * 2 ** i, 1 if i == 0 else 2
            down = None
            if stride != 1 or inplanes != planes:
                down = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), norm(planes))
            layers += [block(inplanes, planes, stride, down, norm_layer=norm), block(planes, planes, norm_layer=norm)]
            inplanes = planes
        self.layers = nn.Sequential(*layers)
        self.out_dim = inplanes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                conv_init_(m.weight, conv_init)
        for m in self.modules():
            if isinstance(m, block) and zero_init_residual:
                nn.init.zeros_(m.bn2.weight)  # zero_init_residual, as jaxssl's ResNet and torchvision's flag

    def forward(self, x):
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1)


def lars(model: nn.Module, lr: float, weight_decay: float = 1e-4, momentum: float = 0.9):
    """lightly's LARS on the trainable parameters; biases and BN parameters (ndim <= 1) get
    neither weight decay nor adaptation."""
    from lightly.utils.lars import LARS
    trainable = [p for p in model.parameters() if p.requires_grad]  # BYOL: not the momentum copies
    decay = [p for p in trainable if p.ndim > 1]
    no_decay = [p for p in trainable if p.ndim <= 1]
    # lightly's LARS skips the trust ratio for parameters whose group has weight_decay == 0
    # (lightly/utils/lars.py, 1.6.0), so one group does both exclusions.
    return LARS([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr,
                momentum=momentum, weight_decay=weight_decay, trust_coefficient=0.001)


class SimCLR(nn.Module):
    def __init__(self, width: float, hidden: int, out: int, temperature: float = 0.5, num_layers: int = 2,
                 backbone: nn.Module | None = None):
        super().__init__()
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead
        self.backbone = backbone if backbone is not None else ResNet18(width)
        self.projector = SimCLRProjectionHead(self.backbone.out_dim, hidden, out, num_layers=num_layers)
        self.criterion = NTXentLoss(temperature=temperature)

    def loss(self, x0, x1):
        # Both views in one forward pass, as jaxssl's SimCLR (BN statistics over the 2N images).
        z = self.projector(self.backbone(torch.cat([x0, x1])))
        z0, z1 = z.chunk(2)
        return self.criterion(z0, z1)


class _Momentum(nn.Module):
    """Momentum (EMA) copies of `backbone` and `projector`, updated with lightly's `update_momentum`
    at the start of each `loss` with `self.momentum` (the trainer sets it every step)."""
    momentum: float = 0.99

    def _make_momentum_copies(self):
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projector_momentum = copy.deepcopy(self.projector)
        for p in list(self.backbone_momentum.parameters()) + list(self.projector_momentum.parameters()):
            p.requires_grad = False

    def _update_momentum(self):
        from lightly.models.utils import update_momentum
        update_momentum(self.backbone, self.backbone_momentum, m=self.momentum)
        update_momentum(self.projector, self.projector_momentum, m=self.momentum)

    @torch.no_grad()
    def _target(self, x):
        return self.projector_momentum(self.backbone_momentum(x))


class BYOL(_Momentum):
    def __init__(self, width: float, hidden: int, out: int, pred_hidden: int | None = None,
                 backbone: nn.Module | None = None):
        super().__init__()
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
        self.backbone = backbone if backbone is not None else ResNet18(width)
        self.projector = BYOLProjectionHead(self.backbone.out_dim, hidden, out)
        self.predictor = BYOLPredictionHead(out, pred_hidden or hidden, out)
        self._make_momentum_copies()
        self.criterion = NegativeCosineSimilarity()

    def loss(self, x0, x1):
        self._update_momentum()
        # One forward per view (BN per view), as jaxssl's BYOL (`BackboneWithHeads.each`) and lightly's example.
        p0 = self.predictor(self.projector(self.backbone(x0)))
        p1 = self.predictor(self.projector(self.backbone(x1)))
        z0, z1 = self._target(x0), self._target(x1)
        return 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))


class MoCoV2(_Momentum):
    """lightly's MoCo v2: `MoCoProjectionHead` (no BN), `NTXentLoss` with a memory bank of
    `queue_size` keys, `batch_shuffle`/`batch_unshuffle` for the key encoder, and `SplitBatchNorm`
    in the backbone (lightly's MoCo CIFAR-10 tutorial: `num_splits=8`), query from view 1 and key
    from view 2 (asymmetric, as jaxssl's and the official MoCo)."""

    def __init__(self, backbone: nn.Module, hidden: int, out: int, temperature: float, queue_size: int,
                 momentum: float):
        super().__init__()
        from lightly.loss import NTXentLoss
        from lightly.models.modules import MoCoProjectionHead
        self.backbone, self.momentum = backbone, momentum
        self.projector = MoCoProjectionHead(backbone.out_dim, hidden, out)
        self._make_momentum_copies()
        self.criterion = NTXentLoss(temperature=temperature, memory_bank_size=(queue_size, out))

    def loss(self, x0, x1):
        from lightly.models.utils import batch_shuffle, batch_unshuffle
        self._update_momentum()
        query = self.projector(self.backbone(x0))
        shuffled, order = batch_shuffle(x1)
        key = batch_unshuffle(self._target(shuffled), order)
        return self.criterion(query, key)


class MoCoV3(_Momentum):
    """MoCo v3 (ResNet) from lightly's heads: `MoCoProjectionHead(batch_norm=True)` (BN on every
    layer; lightly's output BN is affine, the official one is not) and `BYOLPredictionHead`
    (Linear-BN-ReLU-Linear). lightly 1.6 has no MoCo v3 loss: `ctr` is the official Algorithm 1
    (`CrossEntropyLoss(q k^T / T) * 2T`, keys of the momentum encoder, both directions summed)."""

    def __init__(self, backbone: nn.Module, hidden: int, out: int, pred_hidden: int, temperature: float):
        super().__init__()
        from lightly.models.modules import BYOLPredictionHead, MoCoProjectionHead
        self.backbone, self.temperature = backbone, temperature
        self.projector = MoCoProjectionHead(backbone.out_dim, hidden, out, num_layers=2, batch_norm=True)
        self.predictor = BYOLPredictionHead(out, pred_hidden, out)
        self._make_momentum_copies()

    def _ctr(self, q, k):
        q, k = nn.functional.normalize(q, dim=1), nn.functional.normalize(k, dim=1)
        logits = q @ k.T / self.temperature
        labels = torch.arange(len(q), device=q.device)
        return nn.functional.cross_entropy(logits, labels) * 2 * self.temperature

    def loss(self, x0, x1):
        self._update_momentum()
        q0 = self.predictor(self.projector(self.backbone(x0)))
        q1 = self.predictor(self.projector(self.backbone(x1)))
        k0, k1 = self._target(x0), self._target(x1)
        return self._ctr(q0, k1) + self._ctr(q1, k0)


class SimSiam(nn.Module):
    """lightly's SimSiam: `SimSiamPredictionHead`, `NegativeCosineSimilarity`, stop-gradient on the
    projections. The projector is lightly's `ProjectionHead` with jaxssl's layer list (one BN-ReLU
    hidden layer per `proj_hidden` entry, output BN without affine): lightly's
    `SimSiamProjectionHead` has a fixed 3 layers and `:cpu` uses 2."""

    def __init__(self, backbone: nn.Module, hidden: Sequence[int], out: int, pred_hidden: int):
        super().__init__()
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import SimSiamPredictionHead
        from lightly.models.modules.heads import ProjectionHead
        self.backbone = backbone
        dims = [backbone.out_dim, *hidden]
        self.projector = ProjectionHead([(a, b, nn.BatchNorm1d(b), nn.ReLU()) for a, b in zip(dims, dims[1:])]
                                        + [(dims[-1], out, nn.BatchNorm1d(out, affine=False), None)])
        self.predictor = SimSiamPredictionHead(out, pred_hidden, out)
        self.criterion = NegativeCosineSimilarity()

    def loss(self, x0, x1):
        z0, z1 = self.projector(self.backbone(x0)), self.projector(self.backbone(x1))
        p0, p1 = self.predictor(z0), self.predictor(z1)
        return 0.5 * (self.criterion(p0, z1.detach()) + self.criterion(p1, z0.detach()))


class _TwoViewLoss(nn.Module):
    """backbone -> projector per view (BN per view, as jaxssl's `embed_each`), then `scale * criterion(z0, z1)`."""

    def __init__(self, backbone: nn.Module, projector: nn.Module, criterion: nn.Module, scale: float = 1.0):
        super().__init__()
        self.backbone, self.projector, self.criterion, self.scale = backbone, projector, criterion, scale

    def loss(self, x0, x1):
        return self.scale * self.criterion(self.projector(self.backbone(x0)), self.projector(self.backbone(x1)))


def make_model(method: str, width: float, hidden: int, out: int) -> nn.Module:
    return {"simclr": SimCLR, "byol": BYOL}[method](width, hidden, out)


def _single(widths: Sequence[int], what: str) -> int:
    """The one width of lightly heads whose hidden layers are all alike."""
    if len(set(widths)) != 1:
        raise NotImplementedError(f"lightly's head needs equal hidden widths for {what}, got {tuple(widths)}.")
    return widths[0]


# Methods whose lightly side lives in another peers module (each has `from_config(config, backbone)`).
PEER_MODULES = {"swav": "_peers_multicrop", "dino": "_peers_dino", "ibot": "_peers_dino", "mae": "_peers_vit"}


def backbone(model_cfg, *, bn_splits: int = 1, drop_path_rate: float | None = None) -> nn.Module:
    """The PyTorch backbone of a jaxssl `config.model` (`.out_dim`: its feature width).

    ResNet-18 with the CIFAR stem: `ResNet18`; a ViT or image transformer: the timm model that
    `jaxssl.models.pytorch_layout.torch_model` names for it (`_peers_vit.timm_backbone`).
    `drop_path_rate`: None keeps the config's (a teacher passes 0).
    """
    if model_cfg.name == "resnet":
        if not (str(model_cfg.variant) == "18" and model_cfg.get("cifar_stem")):
            raise NotImplementedError(f"PyTorch ResNet only for ResNet-18 with the CIFAR stem, got {dict(model_cfg)}.")
        return ResNet18(model_cfg.get("width", 1.0), zero_init_residual=model_cfg.get("zero_init_residual", True),
                        bn_splits=bn_splits, conv_init=model_cfg.get("conv_init", "lecun_normal"))
    import _peers_vit
    return _peers_vit.timm_backbone(model_cfg, drop_path_rate)


def from_config(config, **peer_kw) -> nn.Module:
    """lightly's implementation of `config.method` with the backbone and head sizes of the jaxssl
    config (`config.model`, `config.method_kw`): the same architecture, numbers read from the config.

    Covered here: simclr, byol, moco_v2, moco_v3, simsiam, vicreg, barlow_twins (ResNet-18, CIFAR
    stem); in `PEER_MODULES`: swav, dino, ibot, mae. `peer_kw`: diagnostic switches of a
    `PEER_MODULES` peer's `from_config` (e.g. SwAV's `prototype_bias`).
    """
    import importlib
    kw = dict(config.method_kw)
    name = config.method
    if name in PEER_MODULES:
        return importlib.import_module(PEER_MODULES[name]).from_config(config, backbone(config.model), **peer_kw)
    if peer_kw:
        raise NotImplementedError(f"{name}: no peer switches, got {peer_kw}.")
    if config.model.name != "resnet":
        raise NotImplementedError(f"{name}: PyTorch side only with the ResNet-18 backbone, got {dict(config.model)}.")
    backbone_ = backbone(config.model, bn_splits=kw.get("bn_groups", 1) if name == "moco_v2" else 1)
    hidden = list(kw.get("proj_hidden", ()))
    if name == "simclr":
        return SimCLR(0, _single(hidden, name), kw["proj_dim"], kw["temperature"], len(hidden) + 1, backbone_)
    if name == "byol":
        return BYOL(0, _single(hidden, name), kw["proj_dim"], _single(kw["pred_hidden"], name), backbone_)
    if name == "moco_v2":
        return MoCoV2(backbone_, _single(hidden, name), kw["proj_dim"], kw["temperature"], kw["queue_size"],
                      kw["momentum"])
    if name == "moco_v3":
        return MoCoV3(backbone_, _single(hidden, name), kw["proj_dim"], _single(kw["pred_hidden"], name),
                      kw["temperature"])
    if name == "simsiam":
        return SimSiam(backbone_, hidden, kw["proj_dim"], _single(kw["pred_hidden"], name))
    if name == "vicreg":
        from lightly.loss import VICRegLoss
        from lightly.models.modules.heads import VICRegProjectionHead
        head = VICRegProjectionHead(backbone_.out_dim, _single(hidden, name), kw["proj_dim"], len(hidden) + 1)
        return _TwoViewLoss(backbone_, head, VICRegLoss(lambda_param=kw["sim_coeff"], mu_param=kw["std_coeff"],
                                                       nu_param=kw["cov_coeff"], eps=kw["eps"]))
    if name == "barlow_twins":
        from lightly.loss import BarlowTwinsLoss
        from lightly.models.modules import BarlowTwinsProjectionHead
        if len(hidden) != 2:
            raise NotImplementedError(f"lightly's BarlowTwinsProjectionHead has 2 hidden layers, got {hidden}.")
        head = BarlowTwinsProjectionHead(backbone_.out_dim, _single(hidden, name), kw["proj_dim"])
        # lightly's loss has no scale; solo-learn's `scale_loss` (jaxssl's config) multiplies it.
        return _TwoViewLoss(backbone_, head, BarlowTwinsLoss(lambda_param=kw["lambd"]), kw.get("scale_loss", 1.0))
    raise NotImplementedError(f"No lightly counterpart wired up for method {name!r}.")


def view_transform(view: Mapping):
    """lightly's transform of one view configured from a jaxssl view dict (`jaxssl.augment.apply` keys).

    `BYOLView1Transform` exposes every knob jaxssl's views use, in the same order (random resized
    crop, flip, colour jitter, grayscale, blur, solarise, normalise). A crop whose scale range ends
    below 1 (multi-crop's local crops) uses `DINOViewTransform`, the same steps with a (min, max)
    scale (and bicubic resizing; `BYOLView1Transform` resizes bilinearly). Differences that
    remain: lightly blurs with PIL's `GaussianBlur(radius=sigma)` (no kernel size), solarises at
    128/255 (jaxssl: `solarize_threshold`, 0.5), and its jitter strengths are symmetric ranges.
    """
    from lightly import transforms as T

    from jaxssl import augment
    v = {**augment.DEFAULT_VIEW, **dict(view)}
    ratio, scale = tuple(v["crop_ratio"]), tuple(v["crop_scale"])
    if abs(ratio[0] - 3 / 4) > 1e-6 or abs(ratio[1] - 4 / 3) > 1e-6:
        raise NotImplementedError(f"lightly's crop ratio is (3/4, 4/3); got {v['crop_ratio']}.")
    jitter = [v[k] for k in ("brightness", "contrast", "saturation", "hue")]
    if any(isinstance(j, (tuple, list)) for j in jitter):
        raise NotImplementedError(f"jitter ranges have no lightly counterpart: {jitter}.")
    normalize = None if v["mean"] is None else {"mean": list(v["mean"]), "std": list(v["std"])}
    kw = dict(cj_prob=v["jitter_p"], cj_strength=1.0, cj_bright=jitter[0], cj_contrast=jitter[1], cj_sat=jitter[2],
              cj_hue=jitter[3], random_gray_scale=v["grayscale_p"], gaussian_blur=v["blur_p"],
              solarization_prob=v["solarize_p"], sigmas=tuple(v["blur_sigma"]), hf_prob=v["flip_p"],
              normalize=normalize)
    if scale[1] != 1.0:
        return T.DINOViewTransform(crop_size=v["crop_size"], crop_scale=scale, **kw)
    return T.BYOLView1Transform(input_size=v["crop_size"], min_scale=scale[0], **kw)


def views_transform(views: Sequence[Mapping]):
    """lightly's `MultiViewTransform` of jaxssl's views (a list of view dicts, `config.input.views`)."""
    from lightly.transforms.multi_view_transform import MultiViewTransform
    return MultiViewTransform([view_transform(v) for v in views])


def transform(method: str, size: int = 32):
    """lightly's two-view transform matching jaxssl's views for `method` (CIFAR-10 normalisation)."""
    from configs import common
    if method == "simclr":  # = configs.common.simclr_view(size, strength=0.5): no blur on CIFAR.
        return views_transform([common.simclr_view(size)] * 2)
    return views_transform(common.byol_views(size))  # blur 1.0 / 0.1, solarise 0 / 0.2


def solo_lars_module():
    """solo-learn's `solo/utils/lars.py` (1.0.2: `LARSWrapper`), loaded from its file: importing the `solo`
    package pulls in lightning, which the benchmarks venv does not install (solo-learn is `--no-deps`)."""
    import importlib.util
    import os
    spec = importlib.util.find_spec("solo")
    if spec is None:
        raise ImportError("solo-learn is not installed: run benchmarks/setup.sh (it installs solo-learn --no-deps).")
    path = os.path.join(spec.submodule_search_locations[0], "utils", "lars.py")
    module_spec = importlib.util.spec_from_file_location("solo_lars", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def optimizer(model: nn.Module, cfg, batch_size: int, total_steps: int):
    """(torch optimiser, before_step(step), clip()) from jaxssl's `config.optimizer`.

    The same rules as `jaxssl.train.optim.make`: lightly's LARS / torch SGD / AdamW; rank <= 1
    parameters (biases, norms) without weight decay and LARS adaptation when `exclude_rank1`;
    parameters whose path (`predictor/0/weight`, the module names with "/") matches
    `fixed_lr_paths` stay at the peak learning rate; everything else follows jaxssl's own
    warm-up + cosine schedule, and the decayed groups jaxssl's weight-decay schedule
    (`weight_decay_end`: cosine, DINO's), both evaluated by `before_step(step)`; `clip()` applies
    `grad_clip` (global, or per parameter tensor: DINO's `clip_gradients`).
    """
    from jaxssl.train import optim
    opt = lambda key: optim.option(cfg, key)
    wd_schedule = optim.weight_decay(cfg, total_steps)  # a constant, or jaxssl's cosine to weight_decay_end
    peak = optim.peak_learning_rate(cfg, batch_size)
    schedule = optim.learning_rate(cfg, batch_size, total_steps)
    wd, pattern = opt("weight_decay"), opt("fixed_lr_paths")
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            fixed = bool(pattern and re.search(pattern, name.replace(".", "/")))
            decay = p.ndim > 1 or not opt("exclude_rank1")
            groups.setdefault((fixed, decay), []).append(p)
    if pattern and not any(fixed for fixed, _ in groups):
        raise ValueError(f"fixed_lr_paths {pattern!r} matches no torch parameter name.")
    param_groups = [{"params": ps, "weight_decay": wd if decay else 0.0, "fixed": fixed, "decay": decay}
                    for (fixed, decay), ps in groups.items()]
    name = opt("name")
    if name == "lars":
        if opt("trust_clip"):
            # lightly's LARS cannot cap the rate; solo-learn's LARS (clip=True) around torch SGD can. Its
            # excluded (rank-1) tensors get neither adaptation nor decay, as jaxssl's masked ones.
            sgd = torch.optim.SGD(param_groups, lr=peak, momentum=opt("momentum"))
            torch_opt = solo_lars_module().LARSWrapper(sgd, eta=opt("trust_coefficient"), clip=True,
                                                       exclude_bias_n_norm=opt("exclude_rank1"))
        else:
            from lightly.utils.lars import LARS
            # lightly's LARS adapts only groups with weight_decay != 0 (lightly/utils/lars.py, 1.6.0).
            if wd == 0:
                raise NotImplementedError("lightly's LARS skips adaptation without weight decay; jaxssl adapts.")
            torch_opt = LARS(param_groups, lr=peak, momentum=opt("momentum"), weight_decay=wd,
                             trust_coefficient=opt("trust_coefficient"))
    elif name == "sgd":
        torch_opt = torch.optim.SGD(param_groups, lr=peak, momentum=opt("momentum"))
    elif name == "adamw":
        torch_opt = torch.optim.AdamW(param_groups, lr=peak, betas=(opt("b1"), opt("b2")))
    else:
        raise ValueError(f"unknown optimizer {name!r}")

    def before_step(step: int):
        lr = float(schedule(step))
        wd_now = float(wd_schedule(step)) if callable(wd_schedule) else None
        for g in torch_opt.param_groups:
            g["lr"] = peak if g["fixed"] else lr
            if wd_now is not None and g["decay"]:
                g["weight_decay"] = wd_now

    clip_norm, mode = opt("grad_clip"), opt("grad_clip_mode")
    trainable = [p for p in model.parameters() if p.requires_grad]

    def clip():
        if not clip_norm:
            return
        if mode == "global":
            torch.nn.utils.clip_grad_norm_(trainable, clip_norm)
        else:  # per_param: DINO's utils.clip_gradients
            for p in trainable:
                if p.grad is not None:
                    torch.nn.utils.clip_grad_norm_([p], clip_norm)

    return torch_opt, before_step, clip


def features(backbone: nn.Module, images: np.ndarray, mean=CIFAR10_MEAN, std=CIFAR10_STD,
             batch_size: int = 500) -> np.ndarray:
    """Eval-mode `backbone` features of uint8 (N,H,W,3) images, normalised only (as jaxssl's
    `evaluate.features.of_images` with the evaluation view)."""
    was_training = backbone.training
    backbone.eval()
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            t = torch.from_numpy(images[i:i + batch_size]).permute(0, 3, 1, 2).float() / 255.0
            out.append(backbone((t - m) / s).numpy())
    backbone.train(was_training)
    return np.concatenate(out)


class _Images(torch.utils.data.Dataset):
    """uint8 (N,H,W,3) arrays as PIL images through a transform, as torchvision's CIFAR10 dataset."""

    def __init__(self, images: np.ndarray, labels: np.ndarray | None, tf):
        self.images, self.labels, self.tf = images, labels, tf

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.tf(Image.fromarray(self.images[i])), (0 if self.labels is None else int(self.labels[i]))


def loader(images: np.ndarray, tf, batch: int, workers: int, labels=None, shuffle: bool = True, seed: int = 0,
           persistent: bool = True, pin_memory: bool = False):
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(_Images(images, labels, tf), batch_size=batch, shuffle=shuffle,
                                       drop_last=shuffle, num_workers=workers, generator=g,
                                       persistent_workers=persistent and workers > 0, pin_memory=pin_memory)


def batches_loader(images: np.ndarray, tf, batches: Sequence[np.ndarray], workers: int = 0):
    """A DataLoader yielding exactly the image indices of `batches` (one array per step), in order:
    the same images per step as the other contender."""
    return torch.utils.data.DataLoader(_Images(images, None, tf), batch_sampler=[list(map(int, b)) for b in batches],
                                       num_workers=workers, persistent_workers=False)


def forever(dl) -> Iterator:
    while True:
        yield from dl


def setup_device(device: str) -> torch.device:
    """torch.device for `device`; on CUDA with cuDNN autotuning (`cudnn.benchmark`), as a user
    tuning a fixed-shape training run sets it (TF32 stays at PyTorch's defaults)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return dev


def train_step_fn(model: nn.Module, opt, method: str, device: str | torch.device = "cpu", dtype: str = "float32"):
    """step(x0, x1) -> loss tensor: views to `device` (non-blocking from pinned memory), forward
    under bf16 autocast when `dtype == "bfloat16"` (parameters and optimiser stay float32, as
    jaxssl's `dtype=`), backward, optimiser step. Callers synchronise with `loss.item()`."""
    dev = torch.device(device)
    bf16 = dtype == "bfloat16"

    def step(x0, x1):
        x0, x1 = x0.to(dev, non_blocking=True), x1.to(dev, non_blocking=True)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model.loss(x0, x1)
        loss.backward()
        opt.step()
        return loss
    return step


def params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
