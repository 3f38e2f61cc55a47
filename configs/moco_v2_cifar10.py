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


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, cpu=False, runlocal=False)
    batch_size = 512  # demo: bs 512.
    epoch = common.steps_per_epoch(batch_size)
    # Demo: RandomResizedCrop(32), ColorJitter(0.4, 0.4, 0.4, 0.1) p=0.8, RandomGrayscale(0.2), flip.
    view = common.simclr_view(32, strength=0.5)
    config = common.base_config("moco_v2", batch_size=batch_size, total_steps=200 * epoch,  # demo: epochs 200.
                                views=(view, view), knn_every_steps=20 * epoch)
    common.torchvision_resnet_init(config)
    # torchvision's default init, no zero-init of the last BN (facebookresearch/moco main_moco.py builds
    # `models.__dict__[args.arch]` without zero_init_residual).
    config.model.zero_init_residual = False
    # MoCo v2: --moco-t 0.2, --moco-dim 128, --mlp (hidden = feature width, 512 for ResNet-18).
    # CIFAR-10 demo: moco_k 4096, moco_m 0.99, bn_splits 8.
    config.method_kw = dict(temperature=0.2, queue_size=4096, proj_hidden=(512,), proj_dim=128, momentum=0.99,
                            bn_groups=8)
    # MoCo: SGD momentum 0.9, lr 0.03 per 256 (demo: 0.06 at batch 512), cosine (--cos), no
    # warm-up; demo weight decay 5e-4.
    # exclude_rank1=False: main_moco.py passes model.parameters() whole to torch.optim.SGD(weight_decay=...),
    # so biases and BN parameters are decayed too (facebookresearch/moco main_moco.py, the optimizer line).
    config.optimizer = common.sgd(0.03, weight_decay=5e-4, exclude_rank1=False)
    # `:cpu`: the MLP head is as wide as the 1/8-width ResNet's 64 features.
    common.shrink(config, arg, cpu_method_kw=dict(proj_hidden=(64,)),
                  runlocal_method_kw=dict(proj_dim=32, queue_size=128, bn_groups=4))
    return config
