r"""MAE on CIFAR-10 (He et al., 2021, arXiv:2111.06377).

Default: MAE's recipe (Table 1 and Appendix A.1) on 32x32 images with 4x4 patches: mask ratio
0.75, normalised-pixel loss, decoder 512 wide, 8 blocks, 16 heads; AdamW (b1 0.9, b2 0.95,
weight decay 0.05), base lr 1.5e-4 per 256 images with linear scaling, 40 warm-up epochs, 800
epochs (MAE Appendix A.1); augmentation: random resized crop (0.2, 1) and flip only. The
encoder (ViT-B sized, 768 x 12) and batch are ours for CIFAR.

  python -m jaxssl.main --config configs/mae_cifar10.py --workdir workdirs/mae_cifar10
"""
import ml_collections

from configs import common

TRAIN_IMAGES = 50_000


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, cpu=False, runlocal=False)
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.method = "mae"
    config.method_kw = dict(mask_ratio=0.75, norm_pix_loss=True, decoder_dim=512, decoder_depth=8, decoder_heads=16)
    config.model = dict(name="transformer", modality="image", width=768, depth=12, num_heads=12, patch_size=4,
                        img_size=32)
    config.dtype = "float32"
    config.data = dict(name="cifar10", split="train", data_dir="", prepare_offline=True, worker_count=0)
    config.input = ml_collections.ConfigDict()
    config.input.views = (dict(crop_size=32, crop_scale=(0.2, 1.0), flip_p=0.5, mean=common.CIFAR10_MEAN,
                               std=common.CIFAR10_STD),)
    config.batch_size = 512
    steps_per_epoch = TRAIN_IMAGES // config.batch_size
    config.total_steps = 800 * steps_per_epoch
    config.optimizer = dict(name="adamw", base_lr=1.5e-4, lr_scaling="linear", warmup_steps=40 * steps_per_epoch,
                            weight_decay=0.05, b1=0.9, b2=0.95, end_lr_factor=0.0)
    config.log_steps = 50
    config.ckpt_steps = 1000
    config.keep_ckpts = 3
    config.progress_bar = True
    config.evals = ml_collections.ConfigDict()
    config.evals.knn = common.knn_eval(every_steps=50 * steps_per_epoch)
    if arg.cpu or arg.runlocal:
        config.model.update(width=64, depth=4, num_heads=4)
        config.method_kw.update(decoder_dim=32, decoder_depth=1, decoder_heads=2)
        config.batch_size = 128
        config.total_steps = 400
        config.optimizer.update(base_lr=1e-3, warmup_steps=40)
        config.log_steps = 20
        config.ckpt_steps = 200
        config.evals.knn = common.knn_eval(every_steps=0)
    if arg.runlocal:
        config.model.update(width=32, depth=2, num_heads=2)
        config.batch_size = 32
        config.total_steps = 4
        config.optimizer.warmup_steps = 1
        config.log_steps = 2
        config.ckpt_steps = 2
        config.evals.knn = common.knn_eval(every_steps=0, train_examples=256, test_examples=128, batch_size=64)
    return config
