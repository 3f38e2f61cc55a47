r"""MAE ViT-B/16 on ImageNet-1k (He et al., 2021, arXiv:2111.06377). For accelerators.

The paper's pre-training recipe (Appendix A.1, Table 8; facebookresearch/mae PRETRAIN.md: `--model
mae_vit_base_patch16 --norm_pix_loss --mask_ratio 0.75 --epochs 800 --warmup_epochs 40 --blr 1.5e-4
--weight_decay 0.05`, effective batch 4096): ViT-B/16 encoder at 224 px, decoder 512 wide, 8 blocks,
16 heads, mask ratio 0.75, normalised-pixel loss, AdamW (b1 0.9, b2 0.95, weight decay 0.05) with base
lr 1.5e-4 x batch/256, 40 warm-up epochs then cosine, 800 epochs, augmentation random resized crop
(0.2, 1) + flip only. Images are decoded and cropped on the host (jaxssl/data/encoded.py). Data: TFDS
`imagenet2012`, prepared by TFDS's builder from `config.data.manual_dir`:

  python -m jaxssl.main --config configs/mae_vitb16_imagenet.py --workdir workdirs/mae_vitb16 \
      --config.data.manual_dir=/path/to/ILSVRC2012_archives

The kNN evaluation is a monitor only (MAE reports fine-tuning and linear probing).
`:runlocal`: the same recipe for 4 steps of 32 images (a smoke test on an accelerator).
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, runlocal=False)
    view = common.crop_flip_view(224, (0.2, 1.0), mean=common.IMAGENET_MEAN, std=common.IMAGENET_STD)
    config, epoch = common.imagenet_config(
        "mae", batch_size=4096, epochs=800, views=(view,), knn_every_epochs=100,
        model=dict(name="transformer", modality="image", width=768, depth=12, num_heads=12, patch_size=16,
                   img_size=224))
    config.method_kw = dict(mask_ratio=0.75, norm_pix_loss=True, decoder_dim=512, decoder_depth=8, decoder_heads=16)
    config.optimizer = common.adamw(1.5e-4, warmup_steps=40 * epoch, weight_decay=0.05, b2=0.95)
    if arg.runlocal:
        common.shrink_for_runlocal(config, backbone=False)
    return config
