"""Autoencoder baselines: plain AE, denoising AE (Vincent et al., 2008) and VAE (Kingma & Welling, 2013).

* "ae": minimise `losses.reconstruction(dec(enc(x)), x)`.
* "dae": the encoder sees `x + noise_std * N(0, 1)` and reconstructs the clean x ("a denoising
  autoencoder [...] trained to reconstruct a clean "repaired" input from a corrupted version").
* "vae": the encoder gives (mu, log sigma^2), z = mu + sigma * eps (reparameterisation trick,
  arXiv:1312.6114 Sec. 2.4), loss `losses.vae_elbo` (negative ELBO, KL weight `beta`).
Features for kNN / linear probes are the code (the mean for the VAE).

* Encoder: the configured backbone (`config.model`, any module mapping images (B, H, W, 3) to
  features (B, F)) -> Dense -> the code (mean and log-variance for the VAE). The conv AE of the
  `ae_cifar10` recipe is `config.model = dict(name="conv_ae", channels=(32, 64, 128))`
  (`jaxssl.models.conv_ae.Model`); a ResNet or ViT works too.
* Decoder: `jaxssl.models.conv_ae.Decoder`, transposed convolutions with the widths `channels`
  reversed (the conv backbone's own widths for the mirror-image autoencoder).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxssl import losses, monitors
from jaxssl.methods import base
from jaxssl.models import conv_ae

VARIANTS = ("ae", "dae", "vae")


class Net(nn.Module):
    """backbone -> Dense -> code -> `conv_ae.Decoder`; `__call__` returns reconstruction, mean, logvar."""

    backbone: nn.Module
    variant: str = "ae"
    channels: Sequence[int] = (32, 64, 128)
    latent: int = 128
    dtype: Any = jnp.float32

    def setup(self):
        self.code = nn.Dense(2 * self.latent if self.variant == "vae" else self.latent, dtype=self.dtype)

    def encode(self, x, train: bool):
        h = self.backbone(x, train=train)
        if h.ndim != 2:
            raise ValueError(f"The autoencoder's encoder is config.model, which must map images (B, H, W, 3) to "
                             f"features (B, F); {type(self.backbone).__name__} gave shape {h.shape}. Set "
                             f"config.model = dict(name='conv_ae', channels=...) or a ResNet/ViT.")
        c = self.code(h).astype(jnp.float32)
        return (c[:, :self.latent], c[:, self.latent:]) if self.variant == "vae" else (c, None)

    @nn.compact
    def __call__(self, x, train: bool = True, noise_rng: jax.Array | None = None):
        mean, logvar = self.encode(x, train)
        z = mean
        if self.variant == "vae" and noise_rng is not None:
            z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(noise_rng, mean.shape)  # reparameterisation
        x_hat = conv_ae.Decoder(x.shape[1:], tuple(reversed(self.channels)), dtype=self.dtype, name="decoder")(z)
        return {"reconstruction": x_hat, "mean": mean, "logvar": logvar}

    def features(self, x, train: bool = False):
        return self.encode(x, train)[0]


def make(*, backbone: nn.Module, variant: str = "ae", channels: Sequence[int] = (32, 64, 128),
         latent: int = 128, noise_std: float = 0.3, beta: float = 1.0, dtype=jnp.float32) -> base.Method:
    """AE / DAE / VAE on images.

    Args:
      backbone: the encoder body (`config.model`): images (B, H, W, 3) -> features (B, F), e.g.
        `models.get("conv_ae", channels=(32, 64, 128))`.
      variant: "ae", "dae" or "vae".
      channels: the decoder's widths, reversed (stride 2 each; H and W divisible by 2^len).
      latent: size of the code.
      noise_std: DAE additive Gaussian corruption (on normalised inputs).
      beta: VAE KL weight (1 = the ELBO).
      dtype: compute dtype of the code layer and the decoder.
    """
    if variant not in VARIANTS:
        raise ValueError(f"Unknown autoencoder variant {variant!r}; choose one of {VARIANTS}.")
    if not isinstance(backbone, nn.Module):
        raise ValueError(f"The autoencoder ({variant!r}) encodes with the configured backbone, got {backbone!r}; "
                         f"set config.model, e.g. dict(name='conv_ae', channels={tuple(channels)}) for the "
                         f"mirror-image conv autoencoder.")
    net = Net(backbone, variant, tuple(channels), latent, dtype=dtype)

    def loss_fn(params, model_state, teacher, extra, views, rng, step):
        del teacher, step
        x = views[0]
        noise_rng, z_rng = jax.random.split(rng)
        x_in = x + noise_std * jax.random.normal(noise_rng, x.shape) if variant == "dae" else x
        out, model_state = net.apply({"params": params, **model_state}, x_in, train=True, noise_rng=z_rng,
                                     mutable=list(model_state))  # a BatchNorm backbone updates its statistics
        if variant == "vae":
            per = losses.vae_elbo(out["reconstruction"], x, out["mean"], out["logvar"], beta=beta)
        else:
            per = losses.reconstruction(out["reconstruction"], x)  # DAE: the CLEAN x is the target
        return jnp.mean(per), (model_state, extra, {"h_std": monitors.feature_std(out["mean"])})

    return base.Method(net, loss_fn)
