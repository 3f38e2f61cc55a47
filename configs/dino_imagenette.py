r"""DINO (Caron et al., 2021, arXiv:2104.14294) with a ViT and multi-crop on Imagenette's JPEGs.

Real image data: `imagenette/112px-v2` (see configs/simclr_imagenette.py; prepared offline by the
trainer when missing). Every image is decoded once on the host and cut into DINO's multi-crop views
(facebookresearch/dino main_dino.py `DataAugmentationDINO`: 2 global crops, scale 0.4-1, and N local
crops, scale 0.05-0.4) of fixed sizes by `jaxssl.data.encoded`; flip, colour jitter, grayscale, blur
and solarisation (global 1: blur 1.0; global 2: blur 0.1, solarise 0.2; locals: blur 0.5) run on device.

The default follows main_dino.py's ViT-S/16 defaults at Imagenette scale on an accelerator: ViT-S/8 at
96 px global / 48 px local crops (144 / 36 tokens), 6 local crops, head 2048 -> 256 -> 65536 without
BatchNorm, `norm_last_layer` off, student temperature 0.1, teacher 0.04 -> 0.07 over 30 epochs, teacher
EMA 0.996 -> 1, AdamW lr 5e-4 x batch/256 with 10 warm-up epochs and cosine to 1e-6, weight decay
0.04 -> 0.4, per-parameter gradient clipping at 3.0, last layer frozen for 1 epoch, batch 256, 300 epochs.

  python -m jaxssl.main --config configs/dino_imagenette.py --workdir workdirs/dino_imagenette

`:cpu` learns within ~15 minutes on 2 CPU cores: a 64-wide, 4-block ViT with 8x8 patches, 64 px global
(64 tokens) + 4 x 32 px local crops (16 tokens), a 512 -> 128 -> 1024 head with BatchNorm (the BN-free
head collapses at this length, as configs/dino_cifar10.py measured), batch 128; then kNN of all 944
holdout images against all 8,525 train images; compare with `--config.total_steps=0` (random init):

  python -m jaxssl.main --config configs/dino_imagenette.py:cpu --workdir workdirs/dino_imagenette_cpu

`:runlocal`: a few steps at 32 / 16 px for tests.
"""
import ml_collections

from configs import common

TRAIN_IMAGES = common.IMAGENETTE_TRAIN_IMAGES
MEAN, STD = common.IMAGENET_MEAN, common.IMAGENET_STD


def _views(global_size: int, local_size: int, local_crops: int) -> tuple:
    return common.dino_views(global_size, local_size, local_crops, global_scale=(0.4, 1.0), local_scale=(0.05, 0.4),
                             blur=True, mean=MEAN, std=STD)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, cpu=False, runlocal=False)
    batch_size = 256
    epoch = common.steps_per_epoch(batch_size, TRAIN_IMAGES)
    config = common.base_config(
        "dino", batch_size=batch_size, total_steps=300 * epoch, views=_views(96, 48, 6), knn_every_steps=20 * epoch,
        model=dict(name="vit", variant="S/8", img_size=96, drop_path_rate=0.1), data=common.IMAGENETTE_DATA,
        knn_kw=dict(batch_size=256, mean=MEAN, std=STD))
    common.imagenette_knn(config)
    config.method_kw = common.dino_vit_method_kw(config, epoch)
    config.optimizer = common.dino_vit_optimizer(epoch)
    if arg.cpu or arg.runlocal:
        config.input.views = _views(64, 32, 4)
    common.shrink(config, arg, batch_size=128, total_steps=300, warmup_steps=30, ckpt_steps=100, base_lr=2e-3,
                  cpu_method_kw=dict(out_dim=1024, hidden_dim=512, bottleneck_dim=128, use_bn_in_head=True,
                                     warmup_teacher_temperature_steps=30, freeze_last_layer_steps=10),
                  runlocal_method_kw=dict(out_dim=64, hidden_dim=64, bottleneck_dim=32,
                                          warmup_teacher_temperature_steps=2, freeze_last_layer_steps=1),
                  runlocal_batch_size=16)
    if arg.cpu or arg.runlocal:
        config.model = dict(name="vit", variant="S/8", img_size=64, drop_path_rate=0.0, **common.CPU_TRANSFORMER)
    if arg.runlocal:
        config.input.views = _views(32, 16, 2)
        config.model.update(img_size=32, **common.RUNLOCAL_TRANSFORMER)
    common.shrink_imagenette_knn(config, arg)
    return config
