r"""Barlow Twins on CIFAR-10 (Zbontar et al., 2021, arXiv:2103.03230).

The default is solo-learn's published CIFAR recipe (vturrisi/solo-learn,
scripts/pretrain/cifar/barlow.yaml with augmentations/asymmetric.yaml): ResNet-18 with the
CIFAR stem, a 3-layer 2048-wide projector, lambda 0.0051 (the paper's) and loss scale 0.1,
batch 256, 1000 epochs, LARS (eta 0.02, biases and norms excluded) with lr 0.3 per 256 images,
weight decay 1e-4, 10 warm-up epochs then cosine to 0, and the asymmetric augmentation of
BYOL/Barlow Twins without blur (solarisation only on the second view). Run it on an accelerator:

  python -m jaxssl.main --config configs/barlow_twins_cifar10.py --workdir workdirs/barlow_cifar10

`:cpu` (`configs.common.shrink_for_cpu`: 1/8-width ResNet-18, batch 256, 400 steps, kNN on the
full splits) with a 512-wide projector; `:runlocal` a few steps for smoke tests:

  python -m jaxssl.main --config configs/barlow_twins_cifar10.py:cpu --workdir workdirs/barlow_cpu

Differences from solo-learn: its LARS clips the adaptive rate at the base rate (`clip_lr`), ours
by default does not (as lightly's and the reference's LARS); `--config.optimizer.trust_clip=True`
clips as solo-learn does (`jaxssl.train.optim.scale_by_clipped_trust_ratio`). It trains in mixed
precision (16-bit), we in float32.
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, cpu=False, runlocal=False)
    batch_size = 256  # solo-learn: optimizer.batch_size 256 on one GPU.
    epoch = common.steps_per_epoch(batch_size)
    # solo-learn augmentations/asymmetric.yaml: random resized crop 32 with scale 0.08-1, flip
    # 0.5, colour jitter brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1 with p=0.8,
    # grayscale 0.2, no blur; solarisation 0 on the first view and 0.2 on the second.
    view = {**common.simclr_view(32, strength=0.5, scale=(0.08, 1.0)), "saturation": 0.2}
    config = common.base_config("barlow_twins", batch_size=batch_size, total_steps=1000 * epoch,  # max_epochs 1000
                                views=(view, {**view, "solarize_p": 0.2}), knn_every_steps=20 * epoch)
    common.torchvision_resnet_init(config)
    # solo-learn barlow.yaml: proj_hidden_dim 2048, proj_output_dim 2048, scale_loss 0.1, and
    # lamb 0.0051 (its default; the Barlow Twins reference code's --lambd).
    config.method_kw = dict(proj_hidden=(2048, 2048), proj_dim=2048, lambd=0.0051, scale_loss=0.1)
    # solo-learn: LARS, lr 0.3 scaled by batch/256, weight_decay 1e-4, eta 0.02,
    # exclude_bias_n_norm; warmup_cosine with 10 warm-up epochs and min_lr 0 (its defaults).
    config.optimizer = common.lars(0.3, warmup_steps=10 * epoch, weight_decay=1e-4, trust_coefficient=0.02)
    # A 512-wide projector fits 2 CPU cores.
    common.shrink(config, arg, cpu_method_kw=dict(proj_hidden=(512, 512), proj_dim=512),
                  runlocal_method_kw=dict(proj_hidden=(64, 64), proj_dim=64))
    return config
