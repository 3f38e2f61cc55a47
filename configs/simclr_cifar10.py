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

TRAIN_IMAGES = 50_000


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, cpu=False, runlocal=False)
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.method = "simclr"
    config.method_kw = dict(temperature=0.5, proj_hidden=(512,), proj_dim=128)
    config.model = dict(name="resnet", variant="18", width=1.0, cifar_stem=True)
    config.dtype = "float32"

    config.data = dict(name="cifar10", split="train", data_dir="", prepare_offline=True, worker_count=0)
    config.input = ml_collections.ConfigDict()
    config.input.views = (common.simclr_view(32, strength=0.5), common.simclr_view(32, strength=0.5))

    config.batch_size = 512
    epochs = 1000
    steps_per_epoch = TRAIN_IMAGES // config.batch_size
    config.total_steps = epochs * steps_per_epoch
    config.optimizer = dict(name="lars", base_lr=1.0, lr_scaling="linear", warmup_steps=10 * steps_per_epoch,
                            weight_decay=1e-4, momentum=0.9, trust_coefficient=0.001, grad_clip=0.0,
                            end_lr_factor=0.0)

    config.log_steps = 50
    config.ckpt_steps = 1000
    config.keep_ckpts = 3
    config.progress_bar = True
    config.evals = ml_collections.ConfigDict()
    config.evals.knn = common.knn_eval(every_steps=20 * steps_per_epoch)

    if arg.cpu or arg.runlocal:
        # XLA's CPU convolutions (above all their backward pass) are slow at small channel
        # counts: a 1/8-width ResNet-18 (8-16-32-64 channels) keeps a step near 1 s on 2 cores.
        config.model.width = 0.125
        config.batch_size = 256
        config.total_steps = 400
        config.optimizer.warmup_steps = 40
        config.log_steps = 20
        config.ckpt_steps = 100
        config.evals.knn = common.knn_eval(every_steps=0)
    if arg.runlocal:
        config.batch_size = 32
        config.total_steps = 4
        config.optimizer.warmup_steps = 1
        config.log_steps = 2
        config.ckpt_steps = 2
        config.evals.knn = common.knn_eval(every_steps=0, train_examples=256, test_examples=128, batch_size=64)
    return config
