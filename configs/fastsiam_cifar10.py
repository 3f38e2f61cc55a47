r"""FastSiam on CIFAR-10 (Pototzky et al., 2022, arXiv:2204.13631): SimSiam with 3 averaged target views.

FastSiam is SimSiam with V = 4 views per image (Sec. 3: one predicting view, the mean of K = 3
targets). The default is SimSiam's CIFAR-10 recipe (Chen & He, arXiv:2011.10566, Appendix D:
ResNet-18 with the CIFAR stem, 2-layer 2048-d projector, 512-d predictor bottleneck, SGD lr 0.03
per 256 with cosine decay, weight decay 5e-4, the predictor at a fixed lr) with 4 views of
lightly's `FastSiamTransform` (num_views 4, crop scale 0.2-1, jitter 0.4/0.4/0.4/0.1 p=0.8,
grayscale 0.2; no blur at 32 px, SimCLR B.9). FastSiam's point is a small batch: batch 128 (ours),
800 epochs (SimSiam's CIFAR length). Run it on an accelerator:

  python -m jaxssl.main --config configs/fastsiam_cifar10.py --workdir workdirs/fastsiam_cifar10

`:cpu` (1/8-width ResNet-18, 512-d projections with a 128-d bottleneck, batch 256, 400 steps),
`:runlocal` a few steps:

  python -m jaxssl.main --config configs/fastsiam_cifar10.py:cpu --workdir workdirs/fastsiam_cpu
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, cpu=False, runlocal=False)
    batch_size = 128
    epoch = common.steps_per_epoch(batch_size)
    # lightly FastSiamTransform: num_views=4, min_scale 0.2, cj 0.4/0.4/0.4/0.1 p=0.8, gray 0.2.
    view = common.simclr_view(32, strength=0.5, scale=(0.2, 1.0))
    config = common.base_config("fastsiam", batch_size=batch_size, total_steps=800 * epoch,
                                views=(view,) * 4, knn_every_steps=20 * epoch)
    common.torchvision_resnet_init(config)
    # SimSiam Appendix D / Sec. 4: 2-layer 2048-d projector on CIFAR, predictor bottleneck 512.
    config.method_kw = dict(proj_hidden=(2048,), proj_dim=2048, pred_hidden=(512,))
    # SimSiam Appendix D: SGD lr 0.03 x batch/256, weight decay 5e-4, cosine; fix_pred_lr; every
    # parameter decayed (official main_simsiam.py).
    config.optimizer = common.sgd(0.03, weight_decay=5e-4, fixed_lr_paths="^predictor/", exclude_rank1=False)
    common.shrink(config, arg, cpu_method_kw=dict(proj_hidden=(512,), proj_dim=512, pred_hidden=(128,)),
                  runlocal_method_kw=dict(proj_hidden=(64,), proj_dim=64, pred_hidden=(16,)))
    return config
