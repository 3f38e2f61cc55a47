"""Alignment and uniformity (Wang & Isola, 2020, arXiv:2005.10242) optimised directly.

"We [...] directly optimize for these two metrics [...] representations learned this way
perform comparably to or better than contrastive learning" (Sec. 6). Two views through one
network whose output is L2-normalised; the loss is

    align_w * mean_i ||u_1i - u_2i||^alpha + unif_w * (L_uniform(u_1) + L_uniform(u_2)) / 2

(`losses.alignment`, `losses.uniformity`, over the global batch), as the official
`examples/stl10/main.py`. No teacher, no extra state.

* Network: backbone -> MLP projection head (SimCLR's), normalised inside the losses; the official
  STL-10 encoder is a small AlexNet whose last layer is the 128-d output and an L2 norm.
* Each view is its own forward pass (`base.embed_each`); the official code forwards the
  concatenation of both views (BatchNorm statistics over 2N images).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxssl import losses, monitors
from jaxssl.methods import base
from jaxssl.models import heads


def make(*, backbone: nn.Module, align_w: float = 1.0, unif_w: float = 1.0, alpha: float = 2.0, t: float = 2.0,
         proj_hidden: Sequence[int] = (2048,), proj_dim: int = 128, dtype=jnp.float32) -> base.Method:
    """Alignment + uniformity with an MLP projection head.

    Args:
      backbone: a module mapping images (B,H,W,3) -> features (B,F).
      align_w, unif_w: the two weights (1 and 1, official `--align_w 1 --unif_w 1`).
      alpha: alignment exponent (2, official `--align_alpha`).
      t: uniformity scale (2, official `--unif_t`).
      proj_hidden, proj_dim: projection head (one hidden layer; 128 outputs, official `--feat_dim 128`).
      dtype: compute dtype of the head.
    """
    if align_w < 0 or unif_w < 0:
        raise ValueError(f"align_uniform weights must be >= 0, got align_w={align_w}, unif_w={unif_w}.")
    net = heads.BackboneWithHeads(backbone, projector=heads.MLP(tuple(proj_hidden), proj_dim, dtype=dtype))

    def objective(params, emb, extra, rng, step):
        del params, rng, step
        z1, z2 = emb["z1"], emb["z2"]
        align = jnp.mean(losses.alignment(z1, z2, alpha))
        uniform = 0.5 * (losses.uniformity(z1, t) + losses.uniformity(z2, t))
        metrics = {"align": align, "uniform": uniform, "z_std": monitors.feature_std(z1),
                   "h_std": monitors.feature_std(emb["h1"])}
        return align_w * align + unif_w * uniform, (extra, metrics)

    return base.two_stage(net, base.embed_each(net, "Alignment-uniformity"), objective)
