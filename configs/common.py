"""Pieces shared by the configs: argument parsing, view and optimiser presets, evaluation blocks.

Every config imports only this module (and jaxssl): a recipe that two configs share lives here.
"""
from __future__ import annotations

import ml_collections

from jaxssl import defaults

# CIFAR-10 training-set channel statistics (see ../shared/data/README.md; the published values).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """Parse "key=value,flag" from `--config path.py:ARG` into a ConfigDict over `defaults`.

    A bare word sets a boolean default to True (`:cpu`, `:runlocal`). Unknown names raise.
    """
    out = ml_collections.ConfigDict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, _, value = item.partition("=")
        if key not in defaults:
            raise ValueError(f"Unknown config argument {key!r}; valid arguments: {sorted(defaults)}.")
        if not value:
            out[key] = True
        else:
            out[key] = type(defaults[key])(value) if not isinstance(defaults[key], bool) else value.lower() in ("1", "true", "yes")
    return out


def simclr_view(size: int, *, strength: float = 0.5, blur_p: float = 0.0, solarize_p: float = 0.0,
                scale=(0.08, 1.0), mean=CIFAR10_MEAN, std=CIFAR10_STD) -> dict:
    """The SimCLR augmentation of one view (arXiv:2002.05709, Appendix A).

    Random resized crop (scale 0.08-1, ratio 3/4-4/3), flip p=0.5, colour jitter p=0.8 with
    brightness/contrast/saturation 0.8*s and hue 0.2*s (s = `strength`; s=0.5 for CIFAR-10,
    Sec. B.9), grayscale p=0.2; Gaussian blur is left out on CIFAR-10 (B.9: "we do not use
    Gaussian blur" at 32x32).
    """
    return dict(crop_size=size, crop_scale=tuple(scale), crop_ratio=(3 / 4, 4 / 3), flip_p=0.5,
                brightness=0.8 * strength, contrast=0.8 * strength, saturation=0.8 * strength,
                hue=0.2 * strength, jitter_p=0.8, grayscale_p=0.2, blur_p=blur_p, solarize_p=solarize_p,
                mean=tuple(mean), std=tuple(std))


def knn_eval(every_steps: int, *, train_examples: int = -1, test_examples: int = -1,
             batch_size: int = 500, mean=CIFAR10_MEAN, std=CIFAR10_STD) -> ml_collections.ConfigDict:
    """Weighted kNN (k=20/T=0.07 as DINO, k=200/T=0.1 as InstDisc) on train -> test features.

    `train_examples`/`test_examples` = -1 uses the whole split.
    """
    return ml_collections.ConfigDict(dict(
        enabled=True, every_steps=every_steps, train_split="train", test_split="test",
        train_examples=train_examples, test_examples=test_examples, batch_size=batch_size,
        protocols=((20, 0.07), (200, 0.1)), view=dict(mean=tuple(mean), std=tuple(std))))


# ImageNet channel statistics (torchvision / every ImageNet recipe) and the JPEG datasets decoded and
# cropped on the host (jaxssl/data/encoded.py): imagenette/112px-v2 (prepared offline from
# shared/data/imagenette2-112_train.tar) and imagenet2012 (TFDS's builder on config.data.manual_dir).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_TRAIN_IMAGES = 1_281_167
IMAGENET_DATA = dict(name="imagenet2012", split="train", data_dir="", manual_dir="", prepare_offline=False,
                     worker_count=32)
IMAGENETTE_TRAIN_IMAGES = 8_525  # imagenette/112px-v2 train split (its holdout split is the other 944).
IMAGENETTE_DATA = dict(name="imagenette/112px-v2", split="train", data_dir="", prepare_offline=True, worker_count=0)


def imagenette_knn(config: ml_collections.ConfigDict) -> None:
    """kNN of Imagenette's held-out split (the last 10% of each class) against train, 10 classes (in place)."""
    config.evals.knn.test_split = "holdout"
    config.evals.knn.num_classes = 10


def shrink_imagenette_knn(config: ml_collections.ConfigDict, arg) -> None:
    """After `shrink`: the Imagenette kNN of `:cpu` (all 944 holdout images against all 8,525 train
    images, batch 256) and `:runlocal` (256 train / 64 holdout images, batch 32), in place."""
    if arg.cpu or arg.runlocal:
        config.evals.knn.batch_size = 256
        imagenette_knn(config)
    if arg.runlocal:
        config.evals.knn.update(train_examples=256, test_examples=64, batch_size=32)


def imagenet_knn(config: ml_collections.ConfigDict) -> None:
    """kNN of ImageNet's validation split against train, 1000 classes (in place)."""
    config.evals.knn.test_split = "validation"
    config.evals.knn.num_classes = 1000


RESNET50 = dict(name="resnet", variant="50", width=1.0, cifar_stem=False)


def imagenet_config(method: str, *, batch_size: int, epochs: int, views, model: dict,
                    knn_every_epochs: int = 20) -> tuple[ml_collections.ConfigDict, int]:
    """The skeleton of a published ImageNet-1k recipe, for accelerators; returns (config, steps per epoch).

    TFDS `imagenet2012` prepared by TFDS's own builder from the hand-downloaded archives in
    `config.data.manual_dir`, host decode/crop with 32 grain workers, bfloat16 compute, a log line
    every 100 steps, a checkpoint every 5000, and kNN of the validation split (batch 1024, ImageNet
    mean/std) every `knn_every_epochs` epochs. The caller adds `method_kw` and `optimizer`.
    """
    epoch = steps_per_epoch(batch_size, IMAGENET_TRAIN_IMAGES)
    config = base_config(method, batch_size=batch_size, total_steps=epochs * epoch, views=views,
                         knn_every_steps=knn_every_epochs * epoch, model=model, data=dict(IMAGENET_DATA),
                         dtype="bfloat16", log_steps=100, ckpt_steps=5000,
                         knn_kw=dict(batch_size=1024, mean=IMAGENET_MEAN, std=IMAGENET_STD))
    imagenet_knn(config)
    return config, epoch


# ----------------------------------------------------------------------------------------------
# The run skeleton and the shared `:cpu` / `:runlocal` sizes. A config file calls these and then
# holds only the numbers specific to its method (with their sources).
# ----------------------------------------------------------------------------------------------
CIFAR10_TRAIN_IMAGES = 50_000
CIFAR10_DATA = dict(name="cifar10", split="train", data_dir="", prepare_offline=True, worker_count=0)
# ResNet-18 with the CIFAR stem (3x3 conv, no max-pool), as solo-learn and SimCLR B.9 on CIFAR.
RESNET18_CIFAR = dict(name="resnet", variant="18", width=1.0, cifar_stem=True)


def torchvision_resnet_init(config: ml_collections.ConfigDict) -> None:
    """The conv init of the PyTorch references' ResNets, when `config.model` is a ResNet (in place):
    torchvision/models/resnet.py `ResNet.__init__` kaiming_normal_(mode="fan_out") (MoCo, SimSiam,
    Barlow Twins, DINO build `torchvision.models`; SwAV's src/resnet50.py and VICReg's resnet.py
    copy that init). jaxssl's default, flax's lecun_normal, is the TF/haiku references' (SimCLR, BYOL)."""
    if config.model.name == "resnet":
        config.model.conv_init = "torchvision"


# ViT-Ti/4: 192 wide, 12 blocks, 3 heads, 4x4 patches (64 tokens at 32 px), drop-path 0.1.
VIT_TI4_CIFAR = dict(name="vit", variant="Ti/4", img_size=32, drop_path_rate=0.1)
# XLA's CPU convolutions (above all their backward pass) are slow at small channel counts: a
# 1/8-width ResNet-18 (8-16-32-64 channels) keeps a step near 1 s on 2 cores. Transformers:
# 64 wide x 4 blocks x 4 heads on `:cpu`, 32 x 2 x 2 on `:runlocal`.
CPU_RESNET_WIDTH = 0.125
CPU_TRANSFORMER = dict(width=64, depth=4, num_heads=4)
RUNLOCAL_TRANSFORMER = dict(width=32, depth=2, num_heads=2)


def crop_flip_view(size: int, scale=None, *, mean=CIFAR10_MEAN, std=CIFAR10_STD) -> dict:
    """A view with random resized crop (when `scale` is given) and flip only (MAE, BEiT/data2vec; AE: flip only)."""
    return dict(crop_size=size, **({"crop_scale": tuple(scale)} if scale else {}), flip_p=0.5, mean=tuple(mean),
                std=tuple(std))


def steps_per_epoch(batch_size: int, train_images: int = CIFAR10_TRAIN_IMAGES) -> int:
    """Optimiser steps in one pass over `train_images` at `batch_size` (the last partial batch dropped)."""
    return train_images // batch_size


def base_config(method: str, *, batch_size: int, total_steps: int, views=(), knn_every_steps: int = 0,
                model: dict = RESNET18_CIFAR, data: dict = CIFAR10_DATA, dtype: str = "float32",
                log_steps: int = 50, ckpt_steps: int = 1000, knn_kw: dict | None = None) -> ml_collections.ConfigDict:
    """The run skeleton shared by the image configs: seed 0, data, views, steps, logs, checkpoints, kNN.

    The caller adds `method_kw` and `optimizer`. Every optional key (progress_bar, nonfinite,
    accum_steps, mesh, ...) is present at its jaxssl/defaults.py default (`with_defaults`). `knn_kw` goes to `knn_eval` (e.g. ImageNet's
    mean/std). `method_kw` may refer to `config.get_ref("total_steps")` so that a command-line
    override of `total_steps` reaches the method's schedules.
    """
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.method = method
    config.batch_size = batch_size
    config.total_steps = total_steps
    config.model = dict(model)
    config.dtype = dtype
    config.data = dict(data)
    config.input = ml_collections.ConfigDict()
    # Independent copies: `--config.input.views[1].<key>=...` must change view 1 only, even where
    # the caller passed one dict twice (`views=(view, view)`).
    config.input.views = tuple(dict(v) for v in views)
    config.log_steps = log_steps
    config.ckpt_steps = ckpt_steps
    config.keep_ckpts = 3
    config.evals = ml_collections.ConfigDict()
    config.evals.knn = knn_eval(every_steps=knn_every_steps, **(knn_kw or {}))
    return with_defaults(config)


def sequence_config(method: str, *, batch_size: int, total_steps: int, model: dict, data: dict,
                    log_steps: int = 100, evals: dict | None = None) -> ml_collections.ConfigDict:
    """The skeleton of a token or waveform run (text, speech): no image views; `evals` ({} = none).

    `config.data.name` picks the input (`jaxssl.data.inputs`: "tiny_shakespeare" text, "fsdd"
    speech); the trainer is the image trainer, with every option it has.
    """
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.method = method
    config.total_steps = total_steps
    config.model = dict(model)
    config.dtype = "float32"
    config.data = dict(data)
    config.input = ml_collections.ConfigDict()
    config.input.views = ()  # tokens/waveforms go to the method unchanged
    config.batch_size = batch_size
    config.log_steps = log_steps
    config.ckpt_steps = 1000
    config.keep_ckpts = 3
    config.evals = ml_collections.ConfigDict(evals or {})
    return with_defaults(config)


def with_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` with every optional key of jaxssl/defaults.py that it does not set, at its default.

    So that every option the trainer reads is visible in the config and settable on the command
    line (`--config.nonfinite=skip`, `--config.data.worker_count=4`, `--config.mesh.fsdp=4`).
    """
    for prefix, table in defaults.TABLES.items():
        node = config
        for part in filter(None, prefix.split(".")):
            if node.get(part) is None:
                node[part] = ml_collections.ConfigDict()
            node = node[part]
        for key in defaults.optional(table):
            if key not in node:
                value = defaults.default(f"{prefix}.{key}" if prefix else key)
                node[key] = ml_collections.ConfigDict(value) if isinstance(value, dict) else value
    return config


def sequence_knn_eval(*, num_classes: int, batch_size: int = 100) -> ml_collections.ConfigDict:
    """Weighted kNN (k=20, T=0.07 as DINO) of labelled sequences, train split -> test split, no view."""
    return ml_collections.ConfigDict(dict(
        enabled=True, every_steps=0, train_split="train", test_split="test", train_examples=-1, test_examples=-1,
        batch_size=batch_size, protocols=((20, 0.07),), view=None, num_classes=num_classes))


def lars(base_lr: float, *, warmup_steps: int, weight_decay: float, trust_coefficient: float,
         end_lr_factor: float = 0.0) -> dict:
    """LARS (momentum 0.9) with lr = base_lr x batch/256, warm-up then cosine, no gradient clipping and
    an uncapped trust ratio (`trust_clip=False`, spelled out so `--config.optimizer.trust_clip=True` can
    switch on solo-learn's cap)."""
    return dict(name="lars", base_lr=base_lr, lr_scaling="linear", warmup_steps=warmup_steps,
                weight_decay=weight_decay, momentum=0.9, trust_coefficient=trust_coefficient, trust_clip=False,
                grad_clip=0.0, end_lr_factor=end_lr_factor)


def sgd(base_lr: float, *, weight_decay: float, warmup_steps: int = 0, **extra) -> dict:
    """SGD (momentum 0.9) with lr = base_lr x batch/256, cosine decay to 0, no clipping; `extra` keys appended."""
    return dict(name="sgd", base_lr=base_lr, lr_scaling="linear", warmup_steps=warmup_steps,
                weight_decay=weight_decay, momentum=0.9, grad_clip=0.0, end_lr_factor=0.0, **extra)


def adamw(base_lr: float, *, warmup_steps: int, weight_decay: float, b2: float = 0.999, lr_scaling: str = "linear",
          end_lr_factor: float = 0.0, **extra) -> dict:
    """AdamW (b1 0.9) with warm-up then cosine; `extra` keys (grad_clip, weight_decay_end, ...) appended."""
    return dict(name="adamw", base_lr=base_lr, lr_scaling=lr_scaling, warmup_steps=warmup_steps,
                weight_decay=weight_decay, b1=0.9, b2=b2, **extra, end_lr_factor=end_lr_factor)


# ----------------------------------------------------------------------------------------------
# Recipes shared by several method configs (BYOL's views and heads serve MoCo v3 too; DINO's
# multi-crop views and ViT optimisation serve the DINO ImageNet run and iBOT).
# ----------------------------------------------------------------------------------------------
def byol_views(size: int, *, scale=(0.08, 1.0)) -> tuple[dict, dict]:
    """BYOL's asymmetric pair of views (arXiv:2006.07733, Table 6).

    Both: random resized crop (scale 0.08-1), flip 0.5, colour jitter brightness 0.4, contrast
    0.4, saturation 0.2, hue 0.1 with p=0.8, grayscale p=0.2. Gaussian blur p=1.0 on view 1 and
    0.1 on view 2; solarisation p=0 on view 1 and 0.2 on view 2. MoCo v3 uses the same pair.
    """
    base = {**simclr_view(size, strength=0.5, scale=scale), "saturation": 0.2}
    return {**base, "blur_p": 1.0, "solarize_p": 0.0}, {**base, "blur_p": 0.1, "solarize_p": 0.2}


def shrink_heads(config: ml_collections.ConfigDict, arg) -> None:
    """`:cpu`/`:runlocal` for the projector + predictor methods (BYOL, MoCo v3): 512-wide heads on CPU."""
    shrink(config, arg, cpu_method_kw=dict(proj_hidden=(512,), proj_dim=128, pred_hidden=(512,)),
           runlocal_method_kw=dict(proj_hidden=(64,), proj_dim=32, pred_hidden=(64,)))


def dino_views(global_size: int, local_size: int = 0, local_crops: int = 0, *, global_scale=(0.08, 1.0),
               local_scale=(0.05, 0.4), blur: bool = False, mean=CIFAR10_MEAN, std=CIFAR10_STD) -> tuple:
    """DINO's multi-crop views (facebookresearch/dino main_dino.py `DataAugmentationDINO`), globals first.

    All: random resized crop, flip 0.5, colour jitter (0.4, 0.4, 0.2, 0.1) w.p. 0.8, grayscale
    0.2. Global 1: blur 1.0; global 2: blur 0.1 and solarisation 0.2; locals: blur 0.5. `blur=False`
    drops blur (CIFAR, solo-learn's asymmetric.yaml) and keeps the solarisation.
    """
    base = lambda size, scale: {**simclr_view(size, strength=0.5, scale=scale, mean=mean, std=std),
                                "saturation": 0.2}
    g1 = {**base(global_size, global_scale), "blur_p": 1.0 if blur else 0.0}
    g2 = {**base(global_size, global_scale), "blur_p": 0.1 if blur else 0.0, "solarize_p": 0.2}
    local = {**base(local_size, local_scale), "blur_p": 0.5 if blur else 0.0}
    return (g1, g2) + (local,) * local_crops


def dino_vit_optimizer(epoch: int) -> dict:
    """DINO's ViT optimisation (facebookresearch/dino main_dino.py defaults; iBOT's main_ibot.py has
    the same): AdamW (`--optimizer adamw`), `--lr 0.0005` per 256 images, `--warmup_epochs 10`,
    cosine to `--min_lr 1e-6`, `--weight_decay 0.04` -> `--weight_decay_end 0.4` (cosine), and
    `--clip_grad 3.0` applied to each parameter tensor's gradient norm (`utils.clip_gradients`):
    per_param. `epoch`: optimiser steps per epoch."""
    return adamw(5e-4, warmup_steps=10 * epoch, weight_decay=0.04, weight_decay_end=0.4, grad_clip=3.0,
                 grad_clip_mode="per_param", end_lr_factor=1e-6 / 5e-4)


def dino_vit_method_kw(config: ml_collections.ConfigDict, epoch: int) -> dict:
    """DINO's ViT head and schedules (facebookresearch/dino main_dino.py defaults with the README's
    "boosting" ViT-S run: `--teacher_temp 0.07 --warmup_teacher_temp_epochs 30 --norm_last_layer false`):
    head 2048 -> 256 -> 65536 without BatchNorm, student temperature 0.1, teacher 0.04 -> 0.07 over 30
    epochs, centre momentum 0.9, teacher EMA 0.996 -> 1, last layer frozen for 1 epoch. `epoch`:
    optimiser steps per epoch; `total_steps` follows `config.total_steps` (command-line overrides too)."""
    return dict(total_steps=config.get_ref("total_steps"), out_dim=65536, hidden_dim=2048, bottleneck_dim=256,
                use_bn_in_head=False, norm_last_layer=False, global_views=2, student_temperature=0.1,
                teacher_temperature=0.07, warmup_teacher_temperature=0.04,
                warmup_teacher_temperature_steps=30 * epoch, center_momentum=0.9, base_momentum=0.996,
                freeze_last_layer_steps=epoch)


def _shrink(config: ml_collections.ConfigDict, *, batch_size: int, total_steps: int, warmup_steps: int,
            log_steps: int, ckpt_steps: int, backbone: dict, knn_kw: dict) -> None:
    config.batch_size = batch_size
    config.total_steps = total_steps
    if config.optimizer.get("warmup_steps"):  # a schedule without warm-up keeps none
        config.optimizer.warmup_steps = warmup_steps
    config.log_steps = log_steps
    config.ckpt_steps = ckpt_steps
    if "knn" in config.get("evals", {}) and config.evals.knn.get("view") is None:  # not images: sizes stay
        config.evals.knn.every_steps = 0
    elif "knn" in config.get("evals", {}):  # the dataset's splits, classes and statistics stay
        old = config.evals.knn
        config.evals.knn = knn_eval(every_steps=0, mean=old.view.mean, std=old.view.std, **knn_kw)
        config.evals.knn.update({k: old[k] for k in ("test_split", "num_classes") if k in old})
    if backbone:
        config.model.update(backbone)
        if "drop_path_rate" in config.model:  # no stochastic depth in a few hundred steps
            config.model.drop_path_rate = 0.0


def shrink_for_cpu(config: ml_collections.ConfigDict, *, batch_size: int = 256, total_steps: int = 400,
                   warmup_steps: int = 40, ckpt_steps: int = 100, base_lr: float | None = None,
                   backbone: bool = True) -> None:
    """`:cpu`, in place: a 2-core CPU in about 10 minutes (400 steps of 256 images = 2 CIFAR epochs).

    Logs every 20 steps; kNN once at the end on the whole train/test splits. `backbone`: shrink the
    model too (a ResNet to `CPU_RESNET_WIDTH`, a ViT/transformer to `CPU_TRANSFORMER`, a ViT to the
    "S/4" variant; drop-path off). A warm-up is shortened only where the recipe has one. `base_lr`,
    if given, replaces the recipe's (a short run of a small transformer wants a larger one).
    """
    if base_lr is not None:
        config.optimizer.base_lr = base_lr
    model = {}
    if backbone:
        if config.model.name == "resnet":
            model = dict(width=CPU_RESNET_WIDTH)
        else:
            model = dict(CPU_TRANSFORMER, **({"variant": "S/4"} if config.model.name == "vit" else {}))
    _shrink(config, batch_size=batch_size, total_steps=total_steps, warmup_steps=warmup_steps, log_steps=20,
            ckpt_steps=ckpt_steps, backbone=model, knn_kw={})


def shrink_for_runlocal(config: ml_collections.ConfigDict, *, batch_size: int = 32, backbone: bool = True) -> None:
    """`:runlocal`, in place, after `shrink_for_cpu`: 4 steps of `batch_size` for smoke tests.

    Logs and checkpoints every 2 steps; kNN on 256 train / 128 test images. `backbone`: a
    ViT/transformer shrinks to `RUNLOCAL_TRANSFORMER` (a ResNet keeps its `:cpu` width).
    """
    model = dict(RUNLOCAL_TRANSFORMER) if backbone and config.model.name != "resnet" else {}
    _shrink(config, batch_size=batch_size, total_steps=4, warmup_steps=1, log_steps=2, ckpt_steps=2,
            backbone=model, knn_kw=dict(train_examples=256, test_examples=128, batch_size=64))


def shrink(config: ml_collections.ConfigDict, arg, *, cpu_method_kw: dict | None = None,
           cpu_optimizer: dict | None = None, runlocal_method_kw: dict | None = None,
           runlocal_batch_size: int = 32, **cpu_kw) -> None:
    """Apply `:cpu` (`shrink_for_cpu(**cpu_kw)`, then `cpu_method_kw` and `cpu_optimizer` keys) and
    `:runlocal` (also the `:cpu` settings, then `shrink_for_runlocal` and `runlocal_method_kw`) as
    `arg` asks, in place."""
    if arg.cpu or arg.runlocal:
        shrink_for_cpu(config, **cpu_kw)
        config.method_kw.update(cpu_method_kw or {})
        config.optimizer.update(cpu_optimizer or {})
    if arg.runlocal:
        shrink_for_runlocal(config, batch_size=runlocal_batch_size, backbone=cpu_kw.get("backbone", True))
        config.method_kw.update(runlocal_method_kw or {})
