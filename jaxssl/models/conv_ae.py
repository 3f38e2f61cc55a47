"""Small convolutional encoder/decoder for the autoencoder baselines (32x32 or 16x16 images).

Encoder: `len(channels)` stride-2 3x3 convolutions with ReLU, then Dense to `latent` (or to
2 * latent for a VAE: mean and log-variance). Decoder: the mirror image with transposed
convolutions back to (H, W, 3), linear output (the inputs are normalised, not in [0, 1]).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp


class Encoder(nn.Module):
    channels: Sequence[int] = (32, 64, 128)
    latent: int = 128
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        for i, c in enumerate(self.channels):
            x = nn.relu(nn.Conv(c, (3, 3), strides=(2, 2), dtype=self.dtype, name=f"conv{i}")(x.astype(self.dtype)))
        return nn.Dense(self.latent, dtype=self.dtype, name="out")(x.reshape(x.shape[0], -1)).astype(jnp.float32)


class Decoder(nn.Module):
    shape: Sequence[int]  # (H, W, C) of the output
    channels: Sequence[int] = (128, 64, 32)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z):
        h, w, c = self.shape
        s = 2 ** len(self.channels)
        x = nn.Dense((h // s) * (w // s) * self.channels[0], dtype=self.dtype, name="inp")(z.astype(self.dtype))
        x = nn.relu(x.reshape(z.shape[0], h // s, w // s, self.channels[0]))
        for i, ch in enumerate(self.channels):
            last = i == len(self.channels) - 1
            x = nn.ConvTranspose(c if last else self.channels[i + 1], (3, 3), strides=(2, 2), dtype=self.dtype,
                                 name=f"deconv{i}")(x)
            x = x if last else nn.relu(x)
        return x.astype(jnp.float32)
