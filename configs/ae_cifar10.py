r"""Autoencoder baselines on CIFAR-10: `:variant=ae|dae|vae` (our recipe; no published CIFAR SSL numbers).

A 3-layer stride-2 conv encoder (32-64-128) to a 128-d code and its mirror decoder, Adam 1e-3,
batch 256, 100 epochs; DAE noise 0.3 (on normalised pixels), VAE beta 1 (the ELBO). kNN on the code.

  python -m jaxssl.main --config configs/ae_cifar10.py:variant=vae --workdir workdirs/vae_cifar10
"""
import ml_collections

from configs import common

TRAIN_IMAGES = 50_000


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, cpu=False, runlocal=False, variant="ae")
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.method = "ae"
    config.method_kw = dict(variant=arg.variant, channels=(32, 64, 128), latent=128, noise_std=0.3, beta=1.0)
    config.model = dict(name="resnet", variant="18", width=0.0625, cifar_stem=True)  # unused by ae (required key)
    config.dtype = "float32"
    config.data = dict(name="cifar10", split="train", data_dir="", prepare_offline=True, worker_count=0)
    config.input = ml_collections.ConfigDict()
    config.input.views = (dict(crop_size=32, flip_p=0.5, mean=common.CIFAR10_MEAN, std=common.CIFAR10_STD),)
    config.batch_size = 256
    steps_per_epoch = TRAIN_IMAGES // config.batch_size
    config.total_steps = 100 * steps_per_epoch
    config.optimizer = dict(name="adamw", base_lr=1e-3, lr_scaling="none", warmup_steps=steps_per_epoch,
                            weight_decay=0.0, b1=0.9, b2=0.999, end_lr_factor=0.0)
    config.log_steps = 50
    config.ckpt_steps = 1000
    config.keep_ckpts = 3
    config.progress_bar = True
    config.evals = ml_collections.ConfigDict()
    config.evals.knn = common.knn_eval(every_steps=10 * steps_per_epoch)
    if arg.cpu or arg.runlocal:
        config.method_kw.update(channels=(16, 32, 64), latent=64)
        config.total_steps = 400
        config.optimizer.warmup_steps = 20
        config.log_steps = 20
        config.ckpt_steps = 200
        config.evals.knn = common.knn_eval(every_steps=0)
    if arg.runlocal:
        config.batch_size = 32
        config.total_steps = 4
        config.optimizer.warmup_steps = 1
        config.log_steps = 2
        config.ckpt_steps = 2
        config.evals.knn = common.knn_eval(every_steps=0, train_examples=256, test_examples=128, batch_size=64)
    return config
