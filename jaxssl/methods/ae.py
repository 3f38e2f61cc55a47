"""Autoencoder baselines: plain AE, denoising AE (Vincent et al., 2008) and VAE (Kingma & Welling, 2013).

* "ae": minimise `losses.reconstruction(dec(enc(x)), x)`.
* "dae": the encoder sees `x + noise_std * N(0, 1)` and reconstructs the clean x ("a denoising
  autoencoder [...] trained to reconstruct a clean "repaired" input from a corrupted version").
* "vae": the encoder gives (mu, log sigma^2), z = mu + sigma * eps (reparameterisation trick,
  arXiv:1312.6114 Sec. 2.4), loss `losses.vae_elbo` (negative ELBO, KL weight `beta`).
Features for kNN / linear probes are the latent code (the mean for the VAE). The backbone
passed by the trainer is ignored: these baselines use `jaxssl.models.conv_ae`.
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
    variant: str = "ae"
    channels: Sequence[int] = (32, 64, 128)
    latent: int = 128
    dtype: Any = jnp.float32

    def setup(self):
        out = 2 * self.latent if self.variant == "vae" else self.latent
        self.encoder = conv_ae.Encoder(tuple(self.channels), out, dtype=self.dtype)

    def encode(self, x):
        h = self.encoder(x)
        return (h[:, :self.latent], h[:, self.latent:]) if self.variant == "vae" else (h, None)

    @nn.compact
    def __call__(self, x, train: bool = True, noise_rng: jax.Array | None = None):
        mean, logvar = self.encode(x)
        z = mean
        if self.variant == "vae" and noise_rng is not None:
            z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(noise_rng, mean.shape)  # reparameterisation
        x_hat = conv_ae.Decoder(x.shape[1:], tuple(reversed(self.channels)), dtype=self.dtype, name="decoder")(z)
        return {"reconstruction": x_hat, "mean": mean, "logvar": logvar}

    def features(self, x, train: bool = False):
        return self.encode(x)[0]


def make(*, backbone: nn.Module | None = None, variant: str = "ae", channels: Sequence[int] = (32, 64, 128),
         latent: int = 128, noise_std: float = 0.3, beta: float = 1.0, dtype=jnp.float32) -> base.Method:
    """AE / DAE / VAE on images.

    Args:
      backbone: ignored (the conv encoder/decoder of `jaxssl.models.conv_ae` are used).
      variant: "ae", "dae" or "vae".
      channels: encoder widths (stride 2 each; the decoder mirrors them).
      latent: size of the code.
      noise_std: DAE additive Gaussian corruption (on normalised inputs).
      beta: VAE KL weight (1 = the ELBO).
      dtype: compute dtype.
    """
    del backbone
    if variant not in VARIANTS:
        raise ValueError(f"Unknown autoencoder variant {variant!r}; choose one of {VARIANTS}.")
    net = Net(variant, tuple(channels), latent, dtype=dtype)

    def loss_fn(params, model_state, teacher, extra, views, rng, step):
        del teacher, step
        x = views[0]
        noise_rng, z_rng = jax.random.split(rng)
        x_in = x + noise_std * jax.random.normal(noise_rng, x.shape) if variant == "dae" else x
        out = net.apply({"params": params, **model_state}, x_in, train=True, noise_rng=z_rng)
        if variant == "vae":
            per = losses.vae_elbo(out["reconstruction"], x, out["mean"], out["logvar"], beta=beta)
        else:
            per = losses.reconstruction(out["reconstruction"], x)  # DAE: the CLEAN x is the target
        return jnp.mean(per), (model_state, extra, {"h_std": monitors.feature_std(out["mean"])})

    return base.Method(net, loss_fn)
