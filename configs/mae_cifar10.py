r"""MAE on CIFAR-10 (He et al., 2021, arXiv:2111.06377).

Default: MAE's recipe (Table 1 and Appendix A.1) on 32x32 images with 4x4 patches: mask ratio
0.75, normalised-pixel loss, decoder 512 wide, 8 blocks, 16 heads; AdamW (b1 0.9, b2 0.95,
weight decay 0.05), base lr 1.5e-4 per 256 images with linear scaling, 40 warm-up epochs, 800
epochs (MAE Appendix A.1); augmentation: random resized crop (0.2, 1) and flip only. The
encoder (ViT-B sized, 768 x 12) and batch are ours for CIFAR.

  python -m jaxssl.main --config configs/mae_cifar10.py --workdir workdirs/mae_cifar10

`:cpu`: a 64-wide, 4-block encoder and a 32-wide 1-block decoder, batch 128, 1500 steps: the budget at
which MAE beats its random init by more than 5 linear-probe points on a 2-core CPU (46.0% against
40.2%, lightly 45.1%; seed 1: 45.3% against 39.5%, lightly 46.0%; at 500 steps +3.2; benchmarks/RESULTS.md
section 7). The weights follow MAE's
reference init (`weight_init="xavier_uniform"`, `methods.mae`).
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, cpu=False, runlocal=False)
    batch_size = 512
    epoch = common.steps_per_epoch(batch_size)
    config = common.base_config("mae", batch_size=batch_size, total_steps=800 * epoch,
                                views=(common.crop_flip_view(32, (0.2, 1.0)),), knn_every_steps=50 * epoch,
                                model=dict(name="transformer", modality="image", width=768, depth=12, num_heads=12,
                                           patch_size=4, img_size=32))
    config.method_kw = dict(mask_ratio=0.75, norm_pix_loss=True, decoder_dim=512, decoder_depth=8, decoder_heads=16)
    config.optimizer = common.adamw(1.5e-4, warmup_steps=40 * epoch, weight_decay=0.05, b2=0.95)
    common.shrink(config, arg, batch_size=128, total_steps=1500, ckpt_steps=500, base_lr=1e-3,
                  cpu_method_kw=dict(decoder_dim=32, decoder_depth=1, decoder_heads=2))
    return config
