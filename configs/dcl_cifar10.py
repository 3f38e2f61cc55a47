r"""DCL on CIFAR-10 (Yeh et al., 2022, arXiv:2110.06848).

DCL is SimCLR with the decoupled loss (paper Sec. 5), so the default is SimCLR's CIFAR-10 recipe
(configs/simclr_cifar10.py: google-research/simclr's CIFAR-10 command) with the loss replaced:
ResNet-18 with the CIFAR stem, batch 512, 1000 epochs, LARS lr 1.0 per 256 images, weight decay
1e-4, 10 warm-up epochs, colour-jitter strength 0.5, no blur; projector 512 -> 128; DCL with
tau 0.1 (lightly's default; the paper reports DCL less sensitive to tau than SimCLR).
`--config.method_kw.loss=dclw` gives DCLW (sigma 0.5, paper Sec. 4.3). Run it on an accelerator:

  python -m jaxssl.main --config configs/dcl_cifar10.py --workdir workdirs/dcl_cifar10

`:cpu` (a 1/8-width ResNet-18, batch 256, 400 steps, kNN on the full splits) and `:runlocal`:

  python -m jaxssl.main --config configs/dcl_cifar10.py:cpu --workdir workdirs/dcl_cpu
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, cpu=False, runlocal=False)
    batch_size = 512  # SimCLR's CIFAR-10 command (google-research/simclr README): batch 512.
    epoch = common.steps_per_epoch(batch_size)
    view = common.simclr_view(32, strength=0.5)
    config = common.base_config("dcl", batch_size=batch_size, total_steps=1000 * epoch, views=(view, view),
                                knn_every_steps=20 * epoch)
    # Loss: DCL, tau 0.1 (lightly DCLLoss default), sigma 0.5 for DCLW (paper Sec. 4.3). Head: SimCLR's
    # (one hidden layer as wide as the ResNet-18 features, 128 outputs; SimCLR Sec. B.1).
    config.method_kw = dict(loss="dcl", temperature=0.1, sigma=0.5, proj_hidden=(512,), proj_dim=128)
    config.optimizer = common.lars(1.0, warmup_steps=10 * epoch, weight_decay=1e-4, trust_coefficient=0.001)
    common.shrink(config, arg)
    return config
