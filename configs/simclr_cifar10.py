r"""SimCLR on CIFAR-10 (Chen et al., 2020, arXiv:2002.05709).

The published recipe (default) follows google-research/simclr's CIFAR-10 command (README):
ResNet-18 with the CIFAR stem, batch 512, 1000 epochs, LARS with learning rate 1.0 scaled
linearly (x batch/256), weight decay 1e-4, temperature 0.5, 10 warm-up epochs, colour-jitter
strength 0.5 and no blur; projection head with one hidden layer as wide as the features (512)
and 128 outputs (paper Sec. B.1). Run it on an accelerator:

  python -m jaxssl.main --config configs/simclr_cifar10.py --workdir workdirs/simclr_cifar10

`:cpu` is the README's main job, sized for a 2-core CPU in about 10 minutes: a 1/8-width
ResNet-18, batch 256, 400 steps (2 epochs), then kNN of the 10,000 test images against all
50,000 training images:

  python -m jaxssl.main --config configs/simclr_cifar10.py:cpu --workdir workdirs/simclr_cpu

`:runlocal` shrinks everything further for smoke tests (a few steps). Any field can be
overridden on the command line, e.g. `--config.batch_size=128 --config.total_steps=50`.
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, cpu=False, runlocal=False)
    batch_size = 512
    epoch = common.steps_per_epoch(batch_size)
    view = common.simclr_view(32, strength=0.5)
    config = common.base_config("simclr", batch_size=batch_size, total_steps=1000 * epoch, views=(view, view),
                                knn_every_steps=20 * epoch)
    config.method_kw = dict(temperature=0.5, proj_hidden=(512,), proj_dim=128)
    config.optimizer = common.lars(1.0, warmup_steps=10 * epoch, weight_decay=1e-4, trust_coefficient=0.001)
    common.shrink(config, arg)
    return config
