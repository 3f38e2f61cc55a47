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

from configs import byol_cifar10, common

TRAIN_IMAGES = 50_000


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, cpu=False, runlocal=False)
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.method = "moco_v3"
    config.batch_size = 256  # solo-learn CIFAR: optimizer.batch_size 256.
    epochs = 1000  # solo-learn CIFAR: max_epochs 1000.
    steps_per_epoch = TRAIN_IMAGES // config.batch_size
    config.total_steps = epochs * steps_per_epoch
    # Official: --moco-dim 256 --moco-mlp-dim 4096 --moco-t 1.0 --moco-m 0.99 --moco-m-cos. The
    # momentum schedule's K follows config.total_steps (a reference, so overrides reach it).
    config.method_kw = dict(temperature=1.0, proj_hidden=(4096,), proj_dim=256, pred_hidden=(4096,),
                            base_momentum=0.99, momentum_cosine=True, total_steps=config.get_ref("total_steps"))
    config.model = dict(name="resnet", variant="18", width=1.0, cifar_stem=True)
    config.dtype = "float32"

    config.data = dict(name="cifar10", split="train", data_dir="", prepare_offline=True, worker_count=0)
    config.input = ml_collections.ConfigDict()
    config.input.views = byol_cifar10.views(32)

    # Official ResNet recipe: LARS (trust 0.001, no weight decay or adaptation for biases and BN),
    # 10 warm-up epochs; solo-learn CIFAR: lr 0.3 x batch/256, weight decay 1e-6.
    config.optimizer = dict(name="lars", base_lr=0.3, lr_scaling="linear", warmup_steps=10 * steps_per_epoch,
                            weight_decay=1e-6, momentum=0.9, trust_coefficient=0.001, grad_clip=0.0,
                            end_lr_factor=0.0)

    config.log_steps = 50
    config.ckpt_steps = 1000
    config.keep_ckpts = 3
    config.progress_bar = True
    config.evals = ml_collections.ConfigDict()
    config.evals.knn = common.knn_eval(every_steps=20 * steps_per_epoch)

    if arg.cpu or arg.runlocal:
        # A 1/8-width ResNet-18 (8-16-32-64 channels) and 512-wide heads fit 2 CPU cores.
        config.model.width = 0.125
        config.method_kw.proj_hidden = (512,)
        config.method_kw.proj_dim = 128
        config.method_kw.pred_hidden = (512,)
        config.batch_size = 256
        config.total_steps = 400
        config.optimizer.warmup_steps = 40
        config.log_steps = 20
        config.ckpt_steps = 100
        config.evals.knn = common.knn_eval(every_steps=0)
    if arg.runlocal:
        config.method_kw.proj_hidden = (64,)
        config.method_kw.proj_dim = 32
        config.method_kw.pred_hidden = (64,)
        config.batch_size = 32
        config.total_steps = 4
        config.optimizer.warmup_steps = 1
        config.log_steps = 2
        config.ckpt_steps = 2
        config.evals.knn = common.knn_eval(every_steps=0, train_examples=256, test_examples=128, batch_size=64)
    return config
