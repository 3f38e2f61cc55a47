r"""VICReg on CIFAR-10 (Bardes et al., 2022, arXiv:2105.04906).

The default is solo-learn's published CIFAR recipe (vturrisi/solo-learn,
scripts/pretrain/cifar/vicreg.yaml): ResNet-18 with the CIFAR stem, a 3-layer 2048-wide
expander, coefficients 25/25/1 (the paper's), batch 256, 1000 epochs, LARS (eta 0.02, biases and
norms excluded) with lr 0.3 per 256 images, weight decay 1e-4, 10 warm-up epochs then cosine to
0, and its symmetric augmentation (crop scale 0.2-1, jitter 0.4/0.4/0.2/0.1 p=0.8, grayscale
0.2, solarisation 0.1, no blur). Run it on an accelerator:

  python -m jaxssl.main --config configs/vicreg_cifar10.py --workdir workdirs/vicreg_cifar10

`:cpu` (`configs.common.shrink_for_cpu`: 1/8-width ResNet-18, batch 256, 400 steps, kNN on the
full splits) with a 512-wide expander; `:runlocal` a few steps for smoke tests:

  python -m jaxssl.main --config configs/vicreg_cifar10.py:cpu --workdir workdirs/vicreg_cpu

Differences from solo-learn: its LARS clips the adaptive rate at the base rate (`clip_lr`), ours by
default does not (`--config.optimizer.trust_clip=True` does); it trains in mixed precision (16-bit), we
in float32; its variance term is the sum over the two views, ours the mean as in the reference code.
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, cpu=False, runlocal=False)
    batch_size = 256  # solo-learn: optimizer.batch_size 256 on one GPU.
    epoch = common.steps_per_epoch(batch_size)
    # solo-learn vicreg.yaml augmentations (both views alike): random resized crop 32 with scale
    # 0.2-1, flip 0.5, colour jitter brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1 with
    # p=0.8, grayscale 0.2, no blur, solarisation 0.1. (strength 0.5 gives 0.4/0.4/0.4/0.1.)
    view = {**common.simclr_view(32, strength=0.5, scale=(0.2, 1.0), solarize_p=0.1), "saturation": 0.2}
    config = common.base_config("vicreg", batch_size=batch_size, total_steps=1000 * epoch,  # max_epochs 1000
                                views=(view, view), knn_every_steps=20 * epoch)
    common.torchvision_resnet_init(config)
    # solo-learn vicreg.yaml: proj_hidden_dim 2048, proj_output_dim 2048 (3 linear layers);
    # sim/var/cov weights 25/25/1 and eps 1e-4 as the paper (Sec. 4.1) and the reference code.
    # solo-learn sums its variance term over the two views where the reference code (and
    # `jaxssl.losses.vicreg`) averages it, so its 25 is std_coeff=50 here; we keep the reference's.
    config.method_kw = dict(proj_hidden=(2048, 2048), proj_dim=2048, sim_coeff=25.0, std_coeff=25.0,
                            cov_coeff=1.0, eps=1e-4)
    # solo-learn: LARS, lr 0.3 scaled by batch/256, weight_decay 1e-4, eta 0.02,
    # exclude_bias_n_norm; warmup_cosine with 10 warm-up epochs and min_lr 0 (its defaults).
    config.optimizer = common.lars(0.3, warmup_steps=10 * epoch, weight_decay=1e-4, trust_coefficient=0.02)
    # A 512-wide expander fits 2 CPU cores.
    common.shrink(config, arg, cpu_method_kw=dict(proj_hidden=(512, 512), proj_dim=512),
                  runlocal_method_kw=dict(proj_hidden=(64, 64), proj_dim=64))
    return config
