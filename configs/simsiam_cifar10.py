r"""SimSiam on CIFAR-10 (Chen & He, 2021, arXiv:2011.10566).

The default is the paper's CIFAR-10 recipe (Appendix D): a ResNet-18 with the CIFAR stem, a
2-layer projection MLP (2048-d, BN on every layer including the output), a prediction MLP with a
512-d hidden layer, SGD with momentum 0.9, lr 0.03 per 256 images (lr x batch/256) on a cosine
schedule without warm-up, weight decay 5e-4, batch 512, 800 epochs; the predictor's learning rate
is held at its initial value (`fix_pred_lr`, Sec. 4.2 / official `--fix-pred-lr`) through
`optimizer.fixed_lr_paths`. Augmentation: the official code's (random resized crop scale 0.2-1,
colour jitter 0.4/0.4/0.4/0.1 with p=0.8, grayscale 0.2, flip) without blur at 32x32 (as SimCLR
B.9). Run it on an accelerator:

  python -m jaxssl.main --config configs/simsiam_cifar10.py --workdir workdirs/simsiam_cifar10

`:cpu` is sized for a 2-core CPU: a 1/8-width ResNet-18, 512-d projections with a 128-d predictor
bottleneck, batch 256, 400 steps (2 epochs), then kNN of the 10,000 test images against all
50,000 training images:

  python -m jaxssl.main --config configs/simsiam_cifar10.py:cpu --workdir workdirs/simsiam_cpu

`:runlocal` shrinks everything further for smoke tests (a few steps).
"""
import ml_collections

from configs import common

TRAIN_IMAGES = 50_000


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, cpu=False, runlocal=False)
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.method = "simsiam"
    # Appendix D / Sec. 4: projector 2 layers of 2048 on CIFAR, predictor bottleneck 512.
    config.method_kw = dict(proj_hidden=(2048,), proj_dim=2048, pred_hidden=(512,))
    config.model = dict(name="resnet", variant="18", width=1.0, cifar_stem=True)
    config.dtype = "float32"

    config.data = dict(name="cifar10", split="train", data_dir="", prepare_offline=True, worker_count=0)
    config.input = ml_collections.ConfigDict()
    view = common.simclr_view(32, strength=0.5, scale=(0.2, 1.0))
    config.input.views = (view, view)

    config.batch_size = 512  # Appendix D: batch 512.
    epochs = 800  # Appendix D: 800 epochs.
    steps_per_epoch = TRAIN_IMAGES // config.batch_size
    config.total_steps = epochs * steps_per_epoch
    # Appendix D: SGD, base lr 0.03 (x batch/256), weight decay 5e-4, momentum 0.9, cosine decay;
    # the predictor keeps the peak lr (fix_pred_lr).
    config.optimizer = dict(name="sgd", base_lr=0.03, lr_scaling="linear", warmup_steps=0, weight_decay=5e-4,
                            momentum=0.9, grad_clip=0.0, end_lr_factor=0.0, fixed_lr_paths="^predictor/")

    config.log_steps = 50
    config.ckpt_steps = 1000
    config.keep_ckpts = 3
    config.progress_bar = True
    config.evals = ml_collections.ConfigDict()
    config.evals.knn = common.knn_eval(every_steps=20 * steps_per_epoch)

    if arg.cpu or arg.runlocal:
        # A 1/8-width ResNet-18 (8-16-32-64 channels) with 512-d projections fits 2 CPU cores.
        config.model.width = 0.125
        config.method_kw.proj_hidden = (512,)
        config.method_kw.proj_dim = 512
        config.method_kw.pred_hidden = (128,)
        config.batch_size = 256
        config.total_steps = 400
        config.log_steps = 20
        config.ckpt_steps = 100
        config.evals.knn = common.knn_eval(every_steps=0)
    if arg.runlocal:
        config.method_kw.proj_hidden = (64,)
        config.method_kw.proj_dim = 64
        config.method_kw.pred_hidden = (16,)
        config.batch_size = 32
        config.total_steps = 4
        config.log_steps = 2
        config.ckpt_steps = 2
        config.evals.knn = common.knn_eval(every_steps=0, train_examples=256, test_examples=128, batch_size=64)
    return config
