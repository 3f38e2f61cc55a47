r"""I-JEPA (Assran et al., 2023, arXiv:2301.08243) with a ViT on Imagenette's JPEGs.

Real image data: `imagenette/112px-v2` (see configs/simclr_imagenette.py; prepared offline by the
trainer when missing); one random-resized crop per image (scale 0.3-1.0, no flip, no colour:
facebookresearch/ijepa configs/in1k_vith14_ep300.yaml `data:`), decoded on the host.

The default is the released ImageNet recipe (configs/ijepa_vith14_imagenet.py) at Imagenette scale on
an accelerator: a ViT-S/8 encoder (384 wide, 12 blocks, 6 heads) at 96 px (a 12x12 grid), a
predictor 3/10 of its width (the yaml's 384 / 1280), 12 blocks deep; multi-block masks as the yaml
(4 targets of scale 0.15-0.2, aspect 0.75-1.5; context 0.85-1.0; min_keep 10); smooth-L1 on
layer-normalised targets; EMA 0.996 -> 1.0; AdamW lr 1e-3 per 2048 images, 40 of 300 epochs warm-up,
cosine to 1e-6, weight decay 0.04 -> 0.4; batch 256.

  python -m jaxssl.main --config configs/ijepa_imagenette.py --workdir workdirs/ijepa_imagenette

`:cpu`: a 64-wide 4-block encoder with 8x8 patches at 64 px (an 8x8 grid, min_keep 4), a 32-wide
2-block predictor, batch 128 for 300 steps at base lr 2.5e-4 per 256 images (twice the recipe's
1e-3 per 2048; the 1e-3 per 256 of the other `:cpu` transformers ended below random init on kNN,
README "Imagenette"), then kNN of the 944 holdout images against the 8,525 train images on the
target encoder's average-pooled patch tokens; compare `--config.total_steps=0`.
`:cpu,size=96`: the same at 96 px (a 12x12 grid, as the accelerator default; about 2.3 s a step on
2 cores instead of 0.4 s). `:runlocal`: a few steps at 32 px for tests.
"""
import ml_collections

from configs import common

TRAIN_IMAGES = common.IMAGENETTE_TRAIN_IMAGES
MEAN, STD = common.IMAGENET_MEAN, common.IMAGENET_STD


def _view(size: int) -> dict:
    return {**common.crop_flip_view(size, (0.3, 1.0), mean=MEAN, std=STD), "flip_p": 0.0}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, cpu=False, runlocal=False, size=0)
    batch_size = 256
    epoch = common.steps_per_epoch(batch_size, TRAIN_IMAGES)
    config = common.base_config(
        "ijepa", batch_size=batch_size, total_steps=300 * epoch, views=(_view(96),), knn_every_steps=20 * epoch,
        model=dict(name="transformer", modality="image", width=384, depth=12, num_heads=6, patch_size=8,
                   img_size=96),
        data=common.IMAGENETTE_DATA, knn_kw=dict(batch_size=256, mean=MEAN, std=STD))
    common.imagenette_knn(config)
    config.method_kw = dict(total_steps=config.get_ref("total_steps"), predictor_dim=112, predictor_depth=12,
                            predictor_heads=4, num_targets=4, target_scale=(0.15, 0.2), target_aspect=(0.75, 1.5),
                            context_scale=(0.85, 1.0), min_keep=10, allow_overlap=False, loss="smooth_l1",
                            base_momentum=0.996, final_momentum=1.0)
    config.optimizer = common.adamw(1e-3 / 8, warmup_steps=40 * epoch, weight_decay=0.04, weight_decay_end=0.4,
                                    end_lr_factor=1e-6 / 1e-3)
    if arg.size and not arg.cpu:
        raise ValueError(f"size={arg.size} sets the `:cpu` image size: use `:cpu,size={arg.size}`.")
    cpu_size = arg.size or 64  # `size`: the `:cpu` image size (64 px: an 8x8 grid of 8-px patches)
    if arg.cpu or arg.runlocal:
        config.input.views = (_view(cpu_size),)
    # `:cpu` lr per 256 images, kNN k=20 at 300 steps (random init 29.87): 1e-3 28.71, 2.5e-4 30.40, 1e-4 30.30.
    common.shrink(config, arg, batch_size=128, total_steps=300, warmup_steps=30, ckpt_steps=100, base_lr=2.5e-4,
                  cpu_method_kw=dict(predictor_dim=32, predictor_depth=2, predictor_heads=2, min_keep=4),
                  runlocal_method_kw=dict(predictor_dim=16, predictor_depth=1, predictor_heads=2, min_keep=0),
                  runlocal_batch_size=16)
    if arg.cpu or arg.runlocal:
        config.model.img_size = cpu_size
    if arg.runlocal:
        config.input.views = (_view(32),)
        config.model.img_size = 32
    common.shrink_imagenette_knn(config, arg)
    return config
