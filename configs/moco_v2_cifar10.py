r"""MoCo v2 on CIFAR-10 (Chen, Fan, Girshick & He, 2020, arXiv:2003.04297).

The method's numbers are MoCo v2's (paper Sec. 2 and facebookresearch/moco `main_moco.py` with
`--mlp --moco-t 0.2 --cos`): an MLP head with one hidden layer as wide as the backbone features
and ReLU (no BN), 128-d keys, temperature 0.2, SGD with momentum 0.9, lr 0.03 per 256 images with
a cosine schedule and no warm-up. The CIFAR-10 scale follows the official CIFAR-10 demo
(facebookresearch/moco, colab/moco_cifar10_demo.ipynb): ResNet-18 with the CIFAR stem, batch
512 (lr 0.06 = 0.03 x 512/256), 200 epochs, weight decay 5e-4, a 4096-key queue, key-encoder
momentum 0.99 and BatchNorm split into 8 groups (`bn_splits=8`, here `bn_groups`, with
MoCo's shuffle-BN for the keys; see jaxssl/methods/moco_v2.py), and its augmentation: random
resized crop (scale 0.08-1), flip, colour jitter 0.4/0.4/0.4/0.1 with p=0.8, grayscale 0.2, no
blur at 32x32. Run it on an accelerator:

  python -m jaxssl.main --config configs/moco_v2_cifar10.py --workdir workdirs/moco_v2_cifar10

`:cpu` is sized for a 2-core CPU: a 1/8-width ResNet-18, batch 256, 400 steps (2 epochs), then
kNN of the 10,000 test images against all 50,000 training images:

  python -m jaxssl.main --config configs/moco_v2_cifar10.py:cpu --workdir workdirs/moco_v2_cpu

`:runlocal` shrinks everything further for smoke tests (a few steps).

Differences from the demo: it uses temperature 0.1 and no MLP head (MoCo v1 settings); we use
MoCo v2's 0.2 and MLP head.
"""
import ml_collections

from configs import common

TRAIN_IMAGES = 50_000


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, cpu=False, runlocal=False)
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.method = "moco_v2"
    # MoCo v2: --moco-t 0.2, --moco-dim 128, --mlp (hidden = feature width, 512 for ResNet-18).
    # CIFAR-10 demo: moco_k 4096, moco_m 0.99, bn_splits 8.
    config.method_kw = dict(temperature=0.2, queue_size=4096, proj_hidden=(512,), proj_dim=128, momentum=0.99,
                            bn_groups=8)
    config.model = dict(name="resnet", variant="18", width=1.0, cifar_stem=True)
    config.dtype = "float32"

    config.data = dict(name="cifar10", split="train", data_dir="", prepare_offline=True, worker_count=0)
    config.input = ml_collections.ConfigDict()
    # Demo: RandomResizedCrop(32), ColorJitter(0.4, 0.4, 0.4, 0.1) p=0.8, RandomGrayscale(0.2), flip.
    view = common.simclr_view(32, strength=0.5)
    config.input.views = (view, view)

    config.batch_size = 512  # demo: bs 512.
    epochs = 200  # demo: epochs 200.
    steps_per_epoch = TRAIN_IMAGES // config.batch_size
    config.total_steps = epochs * steps_per_epoch
    # MoCo: SGD momentum 0.9, lr 0.03 per 256 (demo: 0.06 at batch 512), cosine (--cos), no
    # warm-up; demo weight decay 5e-4.
    config.optimizer = dict(name="sgd", base_lr=0.03, lr_scaling="linear", warmup_steps=0, weight_decay=5e-4,
                            momentum=0.9, grad_clip=0.0, end_lr_factor=0.0)

    config.log_steps = 50
    config.ckpt_steps = 1000
    config.keep_ckpts = 3
    config.progress_bar = True
    config.evals = ml_collections.ConfigDict()
    config.evals.knn = common.knn_eval(every_steps=20 * steps_per_epoch)

    if arg.cpu or arg.runlocal:
        # A 1/8-width ResNet-18 (8-16-32-64 channels): the MLP head is as wide as its 64 features.
        config.model.width = 0.125
        config.method_kw.proj_hidden = (64,)
        config.batch_size = 256
        config.total_steps = 400
        config.log_steps = 20
        config.ckpt_steps = 100
        config.evals.knn = common.knn_eval(every_steps=0)
    if arg.runlocal:
        config.method_kw.proj_dim = 32
        config.method_kw.queue_size = 128
        config.method_kw.bn_groups = 4
        config.batch_size = 32
        config.total_steps = 4
        config.log_steps = 2
        config.ckpt_steps = 2
        config.evals.knn = common.knn_eval(every_steps=0, train_examples=256, test_examples=128, batch_size=64)
    return config
