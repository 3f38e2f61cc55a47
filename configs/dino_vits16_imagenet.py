r"""DINO ViT-S/16 on ImageNet-1k (Caron et al., 2021, arXiv:2104.14294). For accelerators.

The official "Boosting DINO performance" run (facebookresearch/dino README: `--arch vit_small
--epochs 300 --teacher_temp 0.07 --warmup_teacher_temp_epochs 30 --norm_last_layer false`, 16
GPUs x 64 images; 73.3% k-NN / 76.0% linear) on top of main_dino.py's defaults: out_dim 65536,
no BatchNorm in the head, teacher EMA 0.996 -> 1, student temperature 0.1, AdamW with lr 5e-4
per 256 images (linear scaling), 10 warm-up epochs, cosine to 1e-6, weight decay 0.04 -> 0.4
(cosine), gradient clipping 3.0 of each parameter's gradient norm (as the reference), last layer
frozen for 1 epoch, drop-path 0.1, multi-crop 2 x 224 (scale 0.4-1) + 8 x 96 (scale 0.05-0.4)
with DINO's blur/solarisation, mixed precision (bfloat16 compute here).

  python -m jaxssl.main --config configs/dino_vits16_imagenet.py --workdir workdirs/dino_vits16 \
      --config.data.manual_dir=/path/to/ILSVRC2012_archives   # prepared by TFDS's builder on first use

Images are decoded and cropped on the host (jaxssl/data/encoded.py; `worker_count` grain processes).

Not run in CI; tests/methods/test_distillation_methods.py builds it and initialises the model
abstractly at 224 px. `:runlocal` keeps the recipe's structure (ViT-S/16, multi-crop) with
a few steps of a small batch for a smoke test on an accelerator.
"""
import ml_collections

from configs import common

IMAGENET_MEAN, IMAGENET_STD = common.IMAGENET_MEAN, common.IMAGENET_STD


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, runlocal=False)
    batch_size = 1024  # 16 GPUs x batch_size_per_gpu 64.
    views = common.dino_views(224, 96, 8, global_scale=(0.4, 1.0), local_scale=(0.05, 0.4), blur=True,
                              mean=IMAGENET_MEAN, std=IMAGENET_STD)
    # kNN every 20 epochs: DINO's k-NN protocol (k = 20, T = 0.07; eval_knn.py) on the full train/validation splits.
    config, epoch = common.imagenet_config("dino", batch_size=batch_size, epochs=300, views=views,
                                           model=dict(name="vit", variant="S/16", img_size=224, drop_path_rate=0.1))
    config.method_kw = common.dino_vit_method_kw(config, epoch)
    config.optimizer = common.dino_vit_optimizer(epoch)
    # --min_lr 1e-6 is absolute: as a factor of the peak lr (5e-4 x batch/256).
    config.optimizer.end_lr_factor = 1e-6 / (5e-4 * batch_size / 256)

    if arg.runlocal:
        common.shrink_for_runlocal(config, backbone=False)
        config.method_kw.update(warmup_teacher_temperature_steps=2, freeze_last_layer_steps=1)
    return config
