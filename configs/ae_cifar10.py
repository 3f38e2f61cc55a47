r"""Autoencoder baselines on CIFAR-10: `:variant=ae|dae|vae` (our recipe; no published CIFAR SSL numbers).

A 3-layer stride-2 conv encoder (32-64-128, the backbone `conv_ae`) to a 128-d code and its mirror
decoder (`method_kw.channels`), Adam 1e-3,
batch 256, 100 epochs; DAE noise 0.3 (on normalised pixels), VAE beta 1 (the ELBO). kNN on the code.

  python -m jaxssl.main --config configs/ae_cifar10.py:variant=vae --workdir workdirs/vae_cifar10
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, cpu=False, runlocal=False, variant="ae")
    batch_size = 256
    epoch = common.steps_per_epoch(batch_size)
    config = common.base_config("ae", batch_size=batch_size, total_steps=100 * epoch,
                                views=(common.crop_flip_view(32),), knn_every_steps=10 * epoch,
                                model=dict(name="conv_ae", channels=(32, 64, 128)))
    config.method_kw = dict(variant=arg.variant, channels=(32, 64, 128), latent=128, noise_std=0.3, beta=1.0)
    config.optimizer = common.adamw(1e-3, lr_scaling="none", warmup_steps=epoch, weight_decay=0.0)
    common.shrink(config, arg, warmup_steps=20, ckpt_steps=200, backbone=False,
                  cpu_method_kw=dict(channels=(16, 32, 64), latent=64))
    config.model.channels = config.method_kw.channels  # the decoder mirrors the encoder
    return config
