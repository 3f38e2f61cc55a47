r"""TiCo on CIFAR-10 (Zhu et al., 2022, arXiv:2206.10698).

The paper reports ImageNet only and builds on BYOL's framework (momentum encoder, projector, LARS); the
default is therefore BYOL's CIFAR recipe (configs/byol_cifar10.py: solo-learn's
scripts/pretrain/cifar/byol.yaml) with the TiCo loss: ResNet-18 with the CIFAR stem, projector 4096 ->
256, teacher momentum 0.99 -> 1 (cosine), batch 256, 1000 epochs, LARS (eta 0.02, without solo-learn's
`clip_lr` unless `--config.optimizer.trust_clip=True`) with lr 1.0 per 256 images, weight decay 1e-5, 10
warm-up epochs, BYOL's asymmetric views; beta 0.9 and rho 8 (the paper's). Run it on an accelerator:

  python -m jaxssl.main --config configs/tico_cifar10.py --workdir workdirs/tico_cifar10

`:cpu` (a 1/8-width ResNet-18, a 512 -> 128 projector, batch 256, 400 steps, kNN on the full
splits) and `:runlocal`:

  python -m jaxssl.main --config configs/tico_cifar10.py:cpu --workdir workdirs/tico_cpu
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, cpu=False, runlocal=False)
    batch_size = 256  # solo-learn byol.yaml: batch 256.
    epoch = common.steps_per_epoch(batch_size)
    config = common.base_config("tico", batch_size=batch_size, total_steps=1000 * epoch,  # max_epochs 1000.
                                views=common.byol_views(32), knn_every_steps=20 * epoch)
    # TiCo: beta 0.9, rho 8 (paper; lightly TiCoLoss defaults); projector 4096 -> 256 (BYOL's, as
    # sayannag/TiCo-pytorch); momentum 0.99 -> 1 (solo-learn byol.yaml base_tau, sayannag --start_momentum).
    config.method_kw = dict(beta=0.9, rho=8.0, proj_hidden=(4096,), proj_dim=256, base_momentum=0.99,
                            total_steps=config.get_ref("total_steps"))
    # solo-learn byol.yaml: LARS lr 1.0 (x batch/256), weight_decay 1e-5, eta 0.02, 10 warm-up epochs.
    config.optimizer = common.lars(1.0, warmup_steps=10 * epoch, weight_decay=1e-5, trust_coefficient=0.02)
    common.shrink(config, arg, cpu_method_kw=dict(proj_hidden=(512,), proj_dim=128),
                  runlocal_method_kw=dict(proj_hidden=(64,), proj_dim=32))
    return config
