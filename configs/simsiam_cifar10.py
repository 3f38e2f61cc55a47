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
bottleneck, batch 256, 1000 steps (5.1 epochs) at base lr 0.05 (the paper's ImageNet value, Sec. 4
and official main_simsiam.py `--lr 0.05`, the top of its range; with 0.03, the CIFAR value, k=20
kNN is about 0.7 points lower at 500 steps and k=200 the same: benchmarks/RESULTS.md section 7),
then kNN of the 10,000 test images against all 50,000 training images. 1000 steps, not 500: at 500
the k=200 kNN gained only +4.0 points over random init at seed 0 (+5.7 at k=20); at 1000 it gains
+6.9 / +5.0 (seed 0), +7.4 / +5.6 (seed 1) and +7.5 / +6.7 (seed 2), about 15 min on 2 cores:

  python -m jaxssl.main --config configs/simsiam_cifar10.py:cpu --workdir workdirs/simsiam_cpu

`:runlocal` shrinks everything further for smoke tests (a few steps).
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, cpu=False, runlocal=False)
    batch_size = 512  # Appendix D: batch 512.
    epoch = common.steps_per_epoch(batch_size)
    view = common.simclr_view(32, strength=0.5, scale=(0.2, 1.0))
    config = common.base_config("simsiam", batch_size=batch_size, total_steps=800 * epoch,  # Appendix D: 800 epochs.
                                views=(view, view), knn_every_steps=20 * epoch)
    common.torchvision_resnet_init(config)
    # Appendix D / Sec. 4: projector 2 layers of 2048 on CIFAR, predictor bottleneck 512.
    config.method_kw = dict(proj_hidden=(2048,), proj_dim=2048, pred_hidden=(512,))
    # Appendix D: SGD, base lr 0.03 (x batch/256), weight decay 5e-4, momentum 0.9, cosine decay;
    # the predictor keeps the peak lr (fix_pred_lr).
    # exclude_rank1=False: main_simsiam.py decays every parameter of both param groups (facebookresearch/
    # simsiam main_simsiam.py, `torch.optim.SGD(optim_params, init_lr, ..., weight_decay=args.weight_decay)`).
    config.optimizer = common.sgd(0.03, weight_decay=5e-4, fixed_lr_paths="^predictor/",
                                  exclude_rank1=False)
    # `:cpu`: 512-d projections fit 2 CPU cores; 1000 steps at the paper's ImageNet base lr 0.05 (at
    # 500 steps, k=20 kNN over random init at seeds 0 / 1: +4.7 / +5.9 with 0.03, +5.7 / +6.5 with
    # 0.05, and k=200 +4.0 at seed 0; at 1000 steps +6.9 / +5.0 and +7.4 / +5.6, k=20 / k=200).
    common.shrink(config, arg, total_steps=1000, base_lr=0.05,
                  cpu_method_kw=dict(proj_hidden=(512,), proj_dim=512, pred_hidden=(128,)),
                  runlocal_method_kw=dict(proj_hidden=(64,), proj_dim=64, pred_hidden=(16,)))
    return config
