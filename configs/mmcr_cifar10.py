r"""MMCR on CIFAR-10 (Yerxa et al., 2023, arXiv:2303.03307).

The default is the official CIFAR-10 recipe (ThomasYerxa/mmcr `pretrain_cifar_stl.py` defaults and
`mmcr/cifar_stl/train.py`): ResNet-50 with the CIFAR stem (3x3 first conv, no max-pool), projector
512 -> 128, 40 views per image (`--n_aug 40`) of a batch of 32 images (`--batch_size 32`), 500
epochs, Adam at lr 1e-3 (constant: no scheduler) with weight decay 1e-6, lambda 0 (`--lmbda 0.0`);
views (`CifarBatchTransform`): random resized crop 32 (scale 0.08-1), flip, colour jitter
0.4/0.4/0.4/0.1 with p=0.8, grayscale 0.2. Run it on an accelerator:

  python -m jaxssl.main --config configs/mmcr_cifar10.py --workdir workdirs/mmcr_cifar10

`:cpu`: a 1/8-width ResNet-18, 4 views of 64 images (256 crops a step, as the other `:cpu` runs),
400 steps, kNN on the full splits; `:runlocal` a few steps:

  python -m jaxssl.main --config configs/mmcr_cifar10.py:cpu --workdir workdirs/mmcr_cpu

Differences from the official code: Adam's weight decay is decoupled here (AdamW; torch's Adam adds
it to the gradient; at 1e-6 the two barely differ); the projector's last Linear has a bias.
"""
import ml_collections

from configs import common

N_AUG = 40  # official --n_aug 40


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, cpu=False, runlocal=False)
    batch_size = 32  # official --batch_size 32 (images; x 40 views)
    epoch = common.steps_per_epoch(batch_size)
    view = common.simclr_view(32, strength=0.5)  # CifarBatchTransform: jitter 0.4/0.4/0.4/0.1, gray 0.2
    config = common.base_config("mmcr", batch_size=batch_size, total_steps=500 * epoch,  # --epochs 500
                                views=(view,) * N_AUG, knn_every_steps=20 * epoch,
                                model={**common.RESNET18_CIFAR, "variant": "50"})  # official: resnet50
    config.method_kw = dict(lmbda=0.0, proj_hidden=(512,), proj_dim=128)  # --lmbda 0.0, projector_dims [512, 128]
    # torch.optim.Adam(lr=1e-3, weight_decay=1e-6), no scheduler: a constant rate at any batch size.
    config.optimizer = common.adamw(1e-3, warmup_steps=0, weight_decay=1e-6, lr_scaling="none", end_lr_factor=1.0)
    common.shrink(config, arg, batch_size=64, runlocal_batch_size=16)
    if arg.cpu or arg.runlocal:
        config.model.variant = "18"  # a 1/8-width ResNet-18 like every `:cpu` run
        config.input.views = tuple(dict(view) for _ in range(4))  # 4 views x 64 images = 256 crops a step
    return config
