r"""data2vec image on CIFAR-10 (Baevski et al., 2022, arXiv:2202.03555).

Default: the paper's ViT-B recipe (Sec. 4.1 and Appendix) moved to 32x32 images with 4x4
patches (64 tokens): width 768, depth 12, 12 heads, K = 6 top layers, smooth-L1 beta = 2,
block-wise masking of 60% of the patches, AdamW (b2 0.999, weight decay 0.05), cosine schedule;
the teacher EMA 0.999 -> 0.9999 (Sec. 3.3). Per-layer instance norm + final layer norm of the
targets as data2vec 2.0 (arXiv:2212.07525). The batch, epochs and learning rate are our CIFAR
choices (not published). One view: random resized crop + flip, no colour distortion (BEiT/data2vec).

  python -m jaxssl.main --config configs/data2vec_image_cifar10.py --workdir workdirs/d2v_img

`:cpu` is a width-64 depth-4 model for a 2-core CPU, `:runlocal` a few steps of a tiny one.
"""
import ml_collections

from configs import common

TRAIN_IMAGES = 50_000


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, cpu=False, runlocal=False)
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.method = "data2vec"
    config.batch_size = 512
    steps_per_epoch = TRAIN_IMAGES // config.batch_size
    config.total_steps = 800 * steps_per_epoch  # data2vec ViT-B: 800 epochs on ImageNet
    config.method_kw = dict(top_k=6, target_norm="instance", final_norm=True, beta=2.0, mask_ratio=0.6,
                            min_mask_patches=4, base_momentum=0.999, final_momentum=0.9999,
                            ema_anneal_steps=config.total_steps // 2, clone_batch=1, decoder=None)
    config.model = dict(name="transformer", modality="image", width=768, depth=12, num_heads=12, patch_size=4,
                        img_size=32, drop_path_rate=0.1)
    config.dtype = "float32"
    config.data = dict(name="cifar10", split="train", data_dir="", prepare_offline=True, worker_count=0)
    config.input = ml_collections.ConfigDict()
    config.input.views = (dict(crop_size=32, crop_scale=(0.2, 1.0), flip_p=0.5, mean=common.CIFAR10_MEAN,
                               std=common.CIFAR10_STD),)
    config.optimizer = dict(name="adamw", base_lr=2.5e-4, lr_scaling="linear", warmup_steps=10 * steps_per_epoch,
                            weight_decay=0.05, b1=0.9, b2=0.999, grad_clip=3.0, end_lr_factor=0.0)
    config.log_steps = 50
    config.ckpt_steps = 1000
    config.keep_ckpts = 3
    config.progress_bar = True
    config.evals = ml_collections.ConfigDict()
    config.evals.knn = common.knn_eval(every_steps=50 * steps_per_epoch)

    if arg.cpu or arg.runlocal:
        config.model.update(width=64, depth=4, num_heads=4, drop_path_rate=0.0)
        config.method_kw.update(top_k=3, ema_anneal_steps=200)
        config.batch_size = 128
        config.total_steps = 400
        config.optimizer.update(base_lr=1e-3, warmup_steps=40)
        config.log_steps = 20
        config.ckpt_steps = 200
        config.evals.knn = common.knn_eval(every_steps=0)
    if arg.runlocal:
        config.model.update(width=32, depth=2, num_heads=2)
        config.method_kw.update(top_k=2, ema_anneal_steps=4)
        config.batch_size = 32
        config.total_steps = 4
        config.optimizer.warmup_steps = 1
        config.log_steps = 2
        config.ckpt_steps = 2
        config.evals.knn = common.knn_eval(every_steps=0, train_examples=256, test_examples=128, batch_size=64)
    return config
