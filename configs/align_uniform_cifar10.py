r"""Alignment and uniformity on CIFAR-10 (Wang & Isola, 2020, arXiv:2005.10242).

The official code's recipe is STL-10 (SsnL/align_uniform `examples/stl10/main.py`): loss weights 1
and 1, alpha 2, t 2, 128-d output, batch 768, SGD (momentum 0.9) with lr 0.12 per 256 images and
weight decay 1e-4, 200 epochs with the rate divided by 10 at epochs 155, 170 and 185, views: random
resized crop (scale 0.08-1), flip, colour jitter 0.4/0.4/0.4/0.4 (always), grayscale 0.2. This
config keeps all of it on CIFAR-10 (32 px crops, ResNet-18 with the CIFAR stem, a 512 -> 128
projector), except the step decay, replaced by SGD's cosine decay (`common.sgd`). Run it on an
accelerator:

  python -m jaxssl.main --config configs/align_uniform_cifar10.py --workdir workdirs/align_uniform_cifar10

`:cpu` (a 1/8-width ResNet-18, batch 256, 400 steps, kNN on the full splits) and `:runlocal`:

  python -m jaxssl.main --config configs/align_uniform_cifar10.py:cpu --workdir workdirs/align_uniform_cpu
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, cpu=False, runlocal=False)
    batch_size = 768  # official --batch_size 768
    epoch = common.steps_per_epoch(batch_size)
    # official transform: RandomResizedCrop(scale=(0.08, 1)), flip, ColorJitter(0.4, 0.4, 0.4, 0.4) with
    # no RandomApply (p=1), RandomGrayscale(0.2).
    view = {**common.simclr_view(32, strength=0.5), "hue": 0.4, "jitter_p": 1.0}
    config = common.base_config("align_uniform", batch_size=batch_size, total_steps=200 * epoch,  # --epochs 200
                                views=(view, view), knn_every_steps=20 * epoch)
    config.method_kw = dict(align_w=1.0, unif_w=1.0, alpha=2.0, t=2.0, proj_hidden=(512,), proj_dim=128)
    # official: SGD momentum 0.9, lr 0.12 x batch/256, weight decay 1e-4.
    config.optimizer = common.sgd(0.12, weight_decay=1e-4)
    common.shrink(config, arg)
    return config
