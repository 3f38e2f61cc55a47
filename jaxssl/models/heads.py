"""Projection / prediction heads shared by the joint-embedding methods.

`MLP(hidden=(2048,), out=128, norm="batch")` is the SimCLR projection head g(.) (Chen et al.,
2020, arXiv:2002.05709, Sec. 2.1: "we use a MLP with one hidden layer to obtain
z_i = g(h_i) = W(2) sigma(W(1) h_i)"); with BatchNorm after each hidden layer as in SimCLR v2
and the BYOL/MoCo v3 heads. `last_norm=True` adds a final affine-free BatchNorm (SimSiam,
MoCo v3 projector).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp


class MLP(nn.Module):
    """Linear -> [BN] -> ReLU, repeated for each hidden width, then Linear(out) [-> BN].

    Input (B, D_in) -> output (B, out), float32. `norm` is "batch", "layer" or "none".
    """

    hidden: Sequence[int] = (2048,)
    out: int = 128
    norm: str = "batch"
    last_norm: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = True):
        if self.norm not in ("batch", "layer", "none"):
            raise ValueError(f"Unknown head norm {self.norm!r}; choose 'batch', 'layer' or 'none'.")

        def normalize(y, name, affine=True):
            if self.norm == "batch":
                return nn.BatchNorm(use_running_average=not train, momentum=0.9, use_bias=affine,
                                    use_scale=affine, dtype=self.dtype, name=name)(y)
            if self.norm == "layer":
                return nn.LayerNorm(use_bias=affine, use_scale=affine, dtype=self.dtype, name=name)(y)
            return y

        x = x.astype(self.dtype)
        for i, width in enumerate(self.hidden):
            # A bias before BatchNorm is redundant (BN removes the mean).
            x = nn.Dense(width, use_bias=self.norm == "none", dtype=self.dtype, name=f"dense{i}")(x)
            x = nn.relu(normalize(x, f"norm{i}"))
        x = nn.Dense(self.out, use_bias=not self.last_norm, dtype=self.dtype, name="out")(x)
        if self.last_norm:
            x = normalize(x, "out_norm", affine=False)
        return x.astype(jnp.float32)


class Encoder(nn.Module):
    """backbone -> [projector] -> [predictor], the network of every joint-embedding method.

    `__call__(x, train)` returns a dict: "features" (B, F) backbone output (what evaluation
    uses), "projection" (B, P) and, when a predictor is set, "prediction" (B, P). The method
    `features(x, train=False)` runs the backbone alone (embedding export, kNN).
    """

    backbone: nn.Module
    projector: nn.Module | None = None
    predictor: nn.Module | None = None

    def __call__(self, x, train: bool = True):
        h = self.backbone(x, train=train)
        z = self.projector(h, train=train) if self.projector is not None else h
        out = {"features": h, "projection": z}
        if self.predictor is not None:
            out["prediction"] = self.predictor(z, train=train)
        return out

    def features(self, x, train: bool = False):
        return self.backbone(x, train=train)

    def each(self, views, train: bool = True):
        """`__call__` on each view separately: a list of output dicts, one per view.

        BatchNorm statistics are then per view (one forward pass per view, as the VICReg and
        Barlow Twins reference implementations run them), unlike one pass on the concatenation.
        """
        return [self(v, train=train) for v in views]
