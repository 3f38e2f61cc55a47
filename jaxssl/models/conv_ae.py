"""Small convolutional encoder/decoder for the autoencoder baselines (32x32 or 16x16 images).

Model (the backbone `models.get("conv_ae", channels=(32, 64, 128))`): `len(channels)` stride-2
3x3 convolutions with ReLU, flattened to features (B, h * w * channels[-1]); the autoencoder
method (`jaxssl.methods.ae`) maps them to its code with one Dense layer. Decoder: the mirror
image with transposed convolutions back to (H, W, 3), linear output (the inputs are normalised,
not in [0, 1]).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp


class Model(nn.Module):
    """The conv encoder as a backbone: images (B, H, W, 3) -> features (B, H/2^n * W/2^n * channels[-1])."""

    channels: Sequence[int] = (32, 64, 128)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = True):
        del train  # no BatchNorm, no dropout
        for i, c in enumerate(self.channels):
            x = nn.relu(nn.Conv(c, (3, 3), strides=(2, 2), dtype=self.dtype, name=f"conv{i}")(x.astype(self.dtype)))
        return x.reshape(x.shape[0], -1).astype(jnp.float32)


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
