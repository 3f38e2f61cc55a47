r"""LeJEPA (Balestriero & LeCun, 2025, arXiv:2511.08544) with a ViT on Imagenette's JPEGs.

The authors' own Imagenette recipe (galilai-group/lejepa MINIMAL.md, "Case-Study: ViT/s-8 +
Imagenette", `+lamb=0.02 +V=4 +proj_dim=16 +lr=2e-3 +bs=256 +epochs=800`, 90.7% linear probe):
ViT-S/8, V = 4 views of one augmentation (random resized crop 0.08-1, colour jitter
0.8/0.8/0.8/0.2 w.p. 0.8, grayscale 0.2, blur w.p. 0.5, solarisation 0.2, flip), all of them
"global" (the invariance target is the centroid of all four), projector 2048-2048-16 with
BatchNorm, lambda 0.02, 256 slices (its `SIGReg`), AdamW lr 2e-3 with weight decay 0.05, one epoch
of linear warm-up then cosine to 1e-3, batch 256, 800 epochs. Ours: the `imagenette/112px-v2`
images at 96 px instead of 128 px crops of the 160 px set (a 12x12 grid of 8x8 patches), features
= the average-pooled patch tokens (MINIMAL.md's timm ViT adds a 512-wide linear head on [CLS]).

  python -m jaxssl.main --config configs/lejepa_imagenette.py --workdir workdirs/lejepa_imagenette

`:cpu`: a 64-wide 4-block encoder with 8x8 patches at 64 px, 4 views, a 512-wide projector, batch 128
for 300 steps, then kNN of the 944 holdout images against the 8,525 train images; compare
`--config.total_steps=0`. `:runlocal`: a few steps at 32 px for tests.
"""
import ml_collections

from configs import common

TRAIN_IMAGES = common.IMAGENETTE_TRAIN_IMAGES
MEAN, STD = common.IMAGENET_MEAN, common.IMAGENET_STD


def _views(size: int) -> tuple:
    view = common.simclr_view(size, strength=1.0, blur_p=0.5, solarize_p=0.2, mean=MEAN, std=STD)
    return (view,) * 4


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, cpu=False, runlocal=False)
    batch_size = 256
    epoch = common.steps_per_epoch(batch_size, TRAIN_IMAGES)
    config = common.base_config(
        "lejepa", batch_size=batch_size, total_steps=800 * epoch, views=_views(96), knn_every_steps=50 * epoch,
        model=dict(name="transformer", modality="image", width=384, depth=12, num_heads=6, patch_size=8,
                   img_size=96, drop_path_rate=0.1),
        data=common.IMAGENETTE_DATA, knn_kw=dict(batch_size=256, mean=MEAN, std=STD))
    common.imagenette_knn(config)
    config.method_kw = dict(proj_hidden=(2048, 2048), proj_dim=16, lambda_=0.02, num_slices=256, knots=17,
                            t_max=3.0, global_views=4)
    config.optimizer = common.adamw(2e-3, warmup_steps=epoch, weight_decay=0.05, end_lr_factor=0.5)
    if arg.cpu or arg.runlocal:
        config.input.views = _views(64)
    common.shrink(config, arg, batch_size=128, total_steps=300, warmup_steps=30, ckpt_steps=100,
                  cpu_method_kw=dict(proj_hidden=(512, 512)), runlocal_method_kw=dict(proj_hidden=(32, 32),
                                                                                      num_slices=16),
                  runlocal_batch_size=16)
    if arg.cpu or arg.runlocal:
        config.model.img_size = 64
    if arg.runlocal:
        config.input.views = _views(32)
        config.model.img_size = 32
    common.shrink_imagenette_knn(config, arg)
    return config
