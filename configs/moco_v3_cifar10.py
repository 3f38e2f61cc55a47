r"""MoCo v3 on CIFAR-10 (Chen, Xie & He, 2021, arXiv:2104.02057), ResNet backbone.

The method's numbers are the official ResNet-50 recipe (facebookresearch/moco-v3, README and
main_moco.py): temperature 1.0 (`--moco-t`), projector 2 layers 4096 -> 256 with BN on the
output, predictor 4096 -> 256, momentum 0.99 (`--moco-m`) raised to 1 with `--moco-m-cos`, LARS
(trust coefficient 0.001, biases and norms excluded), 10 warm-up epochs then cosine, and BYOL's
asymmetric augmentation (the paper follows BYOL's; see configs/byol_cifar10.py). The CIFAR-10
scale follows solo-learn's CIFAR recipe (scripts/pretrain/cifar/mocov3.yaml): ResNet-18 with the
CIFAR stem, batch 256, 1000 epochs, lr 0.3 per 256 images and weight decay 1e-6 (within the
official ResNet-50 recipes' 0.3-0.6 and 1e-6-1.5e-6). solo-learn uses temperature 0.2; we keep
the paper's 1.0 for ResNet.
Run it on an accelerator:

  python -m jaxssl.main --config configs/moco_v3_cifar10.py --workdir workdirs/moco_v3_cifar10

`:cpu` is sized for a 2-core CPU: a 1/8-width ResNet-18, 512 -> 128 heads, batch 256, 400 steps
(2 epochs), then kNN of the 10,000 test images against all 50,000 training images:

  python -m jaxssl.main --config configs/moco_v3_cifar10.py:cpu --workdir workdirs/moco_v3_cpu

`:runlocal` shrinks everything further for smoke tests (a few steps). For a ViT backbone set
`config.model` to the ViT, `method_kw.temperature=0.2` and `method_kw.proj_hidden=(4096, 4096)`
(3-layer projector) with AdamW, as the paper's ViT recipe.
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, cpu=False, runlocal=False)
    batch_size = 256  # solo-learn CIFAR: optimizer.batch_size 256.
    epoch = common.steps_per_epoch(batch_size)
    config = common.base_config("moco_v3", batch_size=batch_size, total_steps=1000 * epoch,  # solo-learn: 1000 epochs.
                                views=common.byol_views(32), knn_every_steps=20 * epoch)
    common.torchvision_resnet_init(config)
    # Official: --moco-dim 256 --moco-mlp-dim 4096 --moco-t 1.0 --moco-m 0.99 --moco-m-cos. The
    # momentum schedule's K follows config.total_steps (a reference, so overrides reach it).
    config.method_kw = dict(temperature=1.0, proj_hidden=(4096,), proj_dim=256, pred_hidden=(4096,),
                            base_momentum=0.99, momentum_cosine=True, total_steps=config.get_ref("total_steps"))
    # Official ResNet recipe: LARS (trust 0.001, no weight decay or adaptation for biases and BN),
    # 10 warm-up epochs; solo-learn CIFAR: lr 0.3 x batch/256, weight decay 1e-6.
    config.optimizer = common.lars(0.3, warmup_steps=10 * epoch, weight_decay=1e-6, trust_coefficient=0.001)
    common.shrink_heads(config, arg)
    return config
