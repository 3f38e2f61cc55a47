r"""Barlow Twins on CIFAR-10 (Zbontar et al., 2021, arXiv:2103.03230).

The default is solo-learn's published CIFAR recipe (vturrisi/solo-learn,
scripts/pretrain/cifar/barlow.yaml with augmentations/asymmetric.yaml): ResNet-18 with the
CIFAR stem, a 3-layer 2048-wide projector, lambda 0.0051 (the paper's) and loss scale 0.1,
batch 256, 1000 epochs, LARS (eta 0.02, biases and norms excluded) with lr 0.3 per 256 images,
weight decay 1e-4, 10 warm-up epochs then cosine to 0, and the asymmetric augmentation of
BYOL/Barlow Twins without blur (solarisation only on the second view). Run it on an accelerator:

  python -m jaxssl.main --config configs/barlow_twins_cifar10.py --workdir workdirs/barlow_cifar10

`:cpu` is sized for a 2-core CPU: a 1/8-width ResNet-18, a 512-wide projector, batch 256, 400
steps (2 epochs), then kNN of the 10,000 test images against all 50,000 training images:

  python -m jaxssl.main --config configs/barlow_twins_cifar10.py:cpu --workdir workdirs/barlow_cpu

`:runlocal` shrinks everything further for smoke tests (a few steps).

Differences from solo-learn: its LARS clips the adaptive rate at the base rate (`clip_lr`),
which `optax.lars` does not do; it trains in mixed precision (16-bit), we in float32.
"""
import ml_collections

from configs import common

TRAIN_IMAGES = 50_000


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, cpu=False, runlocal=False)
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.method = "barlow_twins"
    # solo-learn barlow.yaml: proj_hidden_dim 2048, proj_output_dim 2048, scale_loss 0.1, and
    # lamb 0.0051 (its default; the Barlow Twins reference code's --lambd).
    config.method_kw = dict(proj_hidden=(2048, 2048), proj_dim=2048, lambd=0.0051, scale_loss=0.1)
    config.model = dict(name="resnet", variant="18", width=1.0, cifar_stem=True)
    config.dtype = "float32"

    config.data = dict(name="cifar10", split="train", data_dir="", prepare_offline=True, worker_count=0)
    config.input = ml_collections.ConfigDict()
    # solo-learn augmentations/asymmetric.yaml: random resized crop 32 with scale 0.08-1, flip
    # 0.5, colour jitter brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1 with p=0.8,
    # grayscale 0.2, no blur; solarisation 0 on the first view and 0.2 on the second.
    view = {**common.simclr_view(32, strength=0.5, scale=(0.08, 1.0)), "saturation": 0.2}
    config.input.views = (view, {**view, "solarize_p": 0.2})

    config.batch_size = 256  # solo-learn: optimizer.batch_size 256 on one GPU.
    epochs = 1000  # solo-learn: max_epochs 1000.
    steps_per_epoch = TRAIN_IMAGES // config.batch_size
    config.total_steps = epochs * steps_per_epoch
    # solo-learn: LARS, lr 0.3 scaled by batch/256, weight_decay 1e-4, eta 0.02,
    # exclude_bias_n_norm; warmup_cosine with 10 warm-up epochs and min_lr 0 (its defaults).
    config.optimizer = dict(name="lars", base_lr=0.3, lr_scaling="linear", warmup_steps=10 * steps_per_epoch,
                            weight_decay=1e-4, momentum=0.9, trust_coefficient=0.02, grad_clip=0.0,
                            end_lr_factor=0.0)

    config.log_steps = 50
    config.ckpt_steps = 1000
    config.keep_ckpts = 3
    config.progress_bar = True
    config.evals = ml_collections.ConfigDict()
    config.evals.knn = common.knn_eval(every_steps=20 * steps_per_epoch)

    if arg.cpu or arg.runlocal:
        # A 1/8-width ResNet-18 (8-16-32-64 channels) and a 512-wide projector fit 2 CPU cores.
        config.model.width = 0.125
        config.method_kw.proj_hidden = (512, 512)
        config.method_kw.proj_dim = 512
        config.batch_size = 256
        config.total_steps = 400
        config.optimizer.warmup_steps = 40
        config.log_steps = 20
        config.ckpt_steps = 100
        config.evals.knn = common.knn_eval(every_steps=0)
    if arg.runlocal:
        config.method_kw.proj_hidden = (64, 64)
        config.method_kw.proj_dim = 64
        config.batch_size = 32
        config.total_steps = 4
        config.optimizer.warmup_steps = 1
        config.log_steps = 2
        config.ckpt_steps = 2
        config.evals.knn = common.knn_eval(every_steps=0, train_examples=256, test_examples=128, batch_size=64)
    return config
