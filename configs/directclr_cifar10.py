r"""DirectCLR on CIFAR-10 (Jing et al., 2022, arXiv:2110.09348): InfoNCE on a sub-vector of the representation.

The paper trains ResNet-50 on ImageNet (facebookresearch/directclr `directclr/main.py`:
`--mode directclr --dim 360`, LARS with eta 0.001 and weight decay 1e-6 (biases and norms
excluded), lr 4.8 at batch 4096 (0.3 per 256), 10 warm-up epochs then cosine to 0.001 x, 100
epochs; `utils.Transform`: the BYOL/Barlow Twins asymmetric pair, blur 1.0 / 0.1, solarisation
0 / 0.2). Moved to CIFAR-10 (ours): ResNet-18 with the CIFAR stem, whose 512-d representation
gets d0 = 90 (the paper's 360/2048 fraction), batch 256, 1000 epochs (the CIFAR length of the
other recipes here), no blur at 32 px (SimCLR B.9). Run it on an accelerator:

  python -m jaxssl.main --config configs/directclr_cifar10.py --workdir workdirs/directclr_cifar10

`:cpu` (1/8-width ResNet-18: a 64-d representation, d0 = 12), `:runlocal` a few steps:

  python -m jaxssl.main --config configs/directclr_cifar10.py:cpu --workdir workdirs/directclr_cpu
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, cpu=False, runlocal=False)
    batch_size = 256
    epoch = common.steps_per_epoch(batch_size)
    # utils.Transform: jitter 0.4/0.4/0.2/0.1 p=0.8, grayscale 0.2, blur 1.0/0.1 (dropped at 32 px),
    # solarisation 0/0.2 (common.byol_views is that pair).
    v1, v2 = common.byol_views(32)
    config = common.base_config("directclr", batch_size=batch_size, total_steps=1000 * epoch,
                                views=({**v1, "blur_p": 0.0}, {**v2, "blur_p": 0.0}), knn_every_steps=20 * epoch)
    # main.py: --dim 360 (of 2048) -> 90 of ResNet-18's 512; infoNCE temperature 0.1.
    config.method_kw = dict(dim=90, temperature=0.1, negatives="cross_view")
    # main.py / utils.py: LARS(eta=0.001, weight_decay=1e-6, exclude_bias_and_norm), lr 4.8 / 4096 x 256
    # = 0.3 per 256, 10 warm-up epochs, cosine to end_lr = 0.001 x base.
    config.optimizer = common.lars(0.3, warmup_steps=10 * epoch, weight_decay=1e-6, trust_coefficient=0.001,
                                   end_lr_factor=0.001)
    # 1/8-width ResNet-18: 64-d representation, d0 = 12 (the same fraction).
    common.shrink(config, arg, cpu_method_kw=dict(dim=12))
    return config
