r"""W-MSE on CIFAR-10 (Ermolov et al., 2021, arXiv:2007.06346).

The default is the official W-MSE 2 CIFAR-10 command (htdt/self-supervised README: `--epoch 1000
--lr 3e-3 --emb 64 --w_size 128`, Adam) with solo-learn's CIFAR values for what the command leaves
to defaults (vturrisi/solo-learn scripts/pretrain/cifar/wmse.yaml: head 1024 -> 64, whitening size
128, batch 256, weight decay 1e-6, warm-up then cosine, and its views: crop scale 0.2-1, colour
jitter 0.8/0.8/0.8/0.2 with p=0.8, grayscale 0.2, no blur). ResNet-18 with the CIFAR stem. W-MSE 4
is `--config.input.views` with four view dicts. Run it on an accelerator:

  python -m jaxssl.main --config configs/wmse_cifar10.py --workdir workdirs/wmse_cifar10

`:cpu` (a 1/8-width ResNet-18, a 512 -> 64 head, batch 256 in 2 sub-batches of 128, 400 steps, kNN
on the full splits) and `:runlocal` (an 8-d embedding in sub-batches of 16):

  python -m jaxssl.main --config configs/wmse_cifar10.py:cpu --workdir workdirs/wmse_cpu

Differences: solo-learn's lr is 2e-3, the official command's 3e-3 (used here); Adam's weight decay
is decoupled here (AdamW).
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, cpu=False, runlocal=False)
    batch_size = 256  # solo-learn wmse.yaml batch 256 (the README's W-MSE 4 command: --bs 256)
    epoch = common.steps_per_epoch(batch_size)
    # solo-learn wmse.yaml augmentations: crop 0.2-1, jitter 0.8/0.8/0.8/0.2 p=0.8, gray 0.2, flip 0.5.
    view = common.simclr_view(32, strength=1.0, scale=(0.2, 1.0))
    config = common.base_config("wmse", batch_size=batch_size, total_steps=1000 * epoch,  # --epoch 1000
                                views=(view, view), knn_every_steps=20 * epoch)
    # README: --emb 64 --w_size 128; w_iter 1 and w_eps 0 (official defaults); head 1024 hidden (solo-learn).
    config.method_kw = dict(w_size=128, w_iter=1, eps=0.0, proj_hidden=(1024,), proj_dim=64)
    # README --lr 3e-3 (Adam, no batch scaling); weight decay 1e-6 (solo-learn); solo-learn's warmup_cosine.
    config.optimizer = common.adamw(3e-3, warmup_steps=10 * epoch, weight_decay=1e-6, lr_scaling="none")
    common.shrink(config, arg, cpu_method_kw=dict(proj_hidden=(512,)),
                  runlocal_method_kw=dict(proj_hidden=(64,), proj_dim=8, w_size=16))
    return config
