r"""SimCLR (Chen et al., 2020, arXiv:2002.05709) with a ResNet on Imagenette's JPEGs (shorter side 112 px).

Real image data: `imagenette/112px-v2` (9,469 JPEGs of 75 sizes, 173 grayscale; prepared offline
from shared/data/imagenette2-112_train.tar by `python -m jaxssl.data.prepare imagenette`, which the
trainer runs itself when the dataset is missing). Each image is decoded on the host and cut into two
random-resized crops (scale 0.08-1, ratio 3/4-4/3) by `jaxssl.data.encoded`; the colour part of the
SimCLR augmentation (flip, jitter strength 1.0 with p=0.8, grayscale p=0.2, blur p=0.5, paper
Appendix A for ImageNet) runs on device. The kNN evaluation embeds the `holdout` split (the last 10%
of each class) against `train`, both centre-cropped (shorter side x 256/224, then the crop size).

The default is the paper's ImageNet recipe scaled to Imagenette on an accelerator: ResNet-18 (standard
stem) at 96 px, batch 256, 200 epochs, LARS lr 0.3 x batch/256 (the paper's square-root-free linear
rule, Sec. B.1), weight decay 1e-6, temperature 0.2 (Table 5 / B.1 for batch 256), 10 warm-up epochs,
projection 2048 -> 128 (as the paper's ResNet-50 head, at ResNet-18's 512 width here).

  python -m jaxssl.main --config configs/simclr_imagenette.py --workdir workdirs/simclr_imagenette

`:cpu` learns within ~15 minutes on 2 CPU cores (a 1/4-width ResNet-18 at 64 px, batch 128), then kNN
on all 8,525 train / 944 holdout images; compare with `--config.total_steps=0` (random init):

  python -m jaxssl.main --config configs/simclr_imagenette.py:cpu --workdir workdirs/simclr_imagenette_cpu

`:runlocal`: a few steps at 32 px on a 200 / 50 image subset for tests.
"""
import ml_collections

from configs import common

TRAIN_IMAGES = common.IMAGENETTE_TRAIN_IMAGES
IMAGENET_MEAN, IMAGENET_STD = common.IMAGENET_MEAN, common.IMAGENET_STD


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, cpu=False, runlocal=False)
    batch_size = 256
    epoch = common.steps_per_epoch(batch_size, TRAIN_IMAGES)
    view = common.simclr_view(96, strength=1.0, blur_p=0.5, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    config = common.base_config(
        "simclr", batch_size=batch_size, total_steps=200 * epoch, views=(view, view), knn_every_steps=20 * epoch,
        model=dict(name="resnet", variant="18", width=1.0, cifar_stem=False), data=common.IMAGENETTE_DATA,
        knn_kw=dict(batch_size=256, mean=IMAGENET_MEAN, std=IMAGENET_STD))
    common.imagenette_knn(config)
    config.method_kw = dict(temperature=0.2, proj_hidden=(2048,), proj_dim=128)
    config.optimizer = common.lars(0.3, warmup_steps=10 * epoch, weight_decay=1e-6, trust_coefficient=0.001)
    if arg.cpu or arg.runlocal:
        cpu_view = common.simclr_view(64, strength=1.0, blur_p=0.5, mean=IMAGENET_MEAN, std=IMAGENET_STD)
        config.input.views = (cpu_view, cpu_view)
    common.shrink(config, arg, batch_size=128, total_steps=300, warmup_steps=30, ckpt_steps=100,
                  cpu_method_kw=dict(proj_hidden=(512,)), runlocal_method_kw=dict(proj_hidden=(32,), proj_dim=16),
                  runlocal_batch_size=16)
    if arg.cpu or arg.runlocal:
        config.model.width = 0.25
    if arg.runlocal:
        runlocal_view = common.simclr_view(32, strength=1.0, blur_p=0.5, mean=IMAGENET_MEAN, std=IMAGENET_STD)
        config.input.views = (runlocal_view, runlocal_view)
    common.shrink_imagenette_knn(config, arg)
    return config
