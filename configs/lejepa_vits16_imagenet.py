r"""LeJEPA ViT-S/16 on ImageNet-1k (Balestriero & LeCun, 2025, arXiv:2511.08544). For accelerators.

What is taken from where: the method's defaults from the reference implementation (lambda 0.05,
1024 slices, 17 knots on [0, 3], as lightly 1.6 `LeJEPALoss`/`SIGReg` record them); the projector
(2048-2048-16 with BatchNorm), AdamW (lr 2e-3 at batch 256, weight decay 0.05, one epoch of linear
warm-up, cosine to half the peak, `eta_min=1e-3`), ViT drop-path 0.1 and the colour augmentation from
galilai-group/lejepa MINIMAL.md; 100 epochs from the README's ImageNet-1k table (LeJEPA ViT-L, IN-1K,
100 epochs). The paper's global + local multi-crop is taken as DINO's (facebookresearch/dino
main_dino.py defaults: 2 global 224 px crops of scale 0.4-1, `--local_crops_number 8` local 96 px
crops of scale 0.05-0.4). The paper's per-model ImageNet table was not at hand when this config was
written: the view counts, crop scales and batch are jaxssl's choices, not claims about the paper.

  python -m jaxssl.main --config configs/lejepa_vits16_imagenet.py --workdir workdirs/lejepa_vits16 \
      --config.data.manual_dir=/path/to/ILSVRC2012_archives

`:runlocal`: the same recipe for 4 steps of 32 images (a smoke test on an accelerator).
"""
import ml_collections

from configs import common


def _view(size: int, scale) -> dict:
    return common.simclr_view(size, strength=1.0, blur_p=0.5, solarize_p=0.2, scale=scale, mean=common.IMAGENET_MEAN,
                              std=common.IMAGENET_STD)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, runlocal=False)
    batch_size = 256
    epoch = common.steps_per_epoch(batch_size, common.IMAGENET_TRAIN_IMAGES)
    views = (_view(224, (0.4, 1.0)),) * 2 + (_view(96, (0.05, 0.4)),) * 8
    config = common.base_config(
        "lejepa", batch_size=batch_size, total_steps=100 * epoch, views=views, knn_every_steps=20 * epoch,
        model=dict(name="transformer", modality="image", width=384, depth=12, num_heads=6, patch_size=16,
                   img_size=224, drop_path_rate=0.1),
        data=dict(common.IMAGENET_DATA), dtype="bfloat16", log_steps=100, ckpt_steps=5000,
        knn_kw=dict(batch_size=1024, mean=common.IMAGENET_MEAN, std=common.IMAGENET_STD))
    common.imagenet_knn(config)
    config.method_kw = dict(proj_hidden=(2048, 2048), proj_dim=16, lambda_=0.05, num_slices=1024, knots=17,
                            t_max=3.0, global_views=2)
    config.optimizer = common.adamw(2e-3, warmup_steps=epoch, weight_decay=0.05, end_lr_factor=0.5)
    if arg.runlocal:
        common.shrink_for_runlocal(config, backbone=False)
    return config
