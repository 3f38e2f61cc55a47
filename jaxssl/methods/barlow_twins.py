"""Barlow Twins (Zbontar et al., 2021, arXiv:2103.03230): make the cross-correlation the identity.

"an objective function that naturally avoids collapse by measuring the cross-correlation matrix
between the outputs of two identical networks fed with distorted versions of a sample, and
making it as close to the identity matrix as possible" (abstract). Each view goes through the
backbone and projector in its own forward pass, as in the reference; the loss is
`jaxssl.losses.barlow_twins` with the standardisation and C over the global batch. No teacher,
no extra state, no stop_gradient: both branches are trained.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxssl import losses, monitors
from jaxssl.methods import base
from jaxssl.models import heads


def make(*, backbone: nn.Module, proj_hidden: Sequence[int] = (8192, 8192), proj_dim: int = 8192,
         lambd: float = 0.0051, scale_loss: float = 1.0, eps: float = 1e-5, head_init: str = "torch",
         dtype=jnp.float32) -> base.Method:
    """Barlow Twins with an MLP projector.

    Args:
      backbone: a module mapping images (B,H,W,3) -> features (B,F).
      proj_hidden: widths of the projector's hidden layers, each Linear -> BN -> ReLU ("three
        linear layers, each with 8192 output units. The first two layers of the projector are
        followed by a batch normalization layer and rectified linear units", Sec. 4).
      proj_dim: embedding size D (8192).
      lambd: weight of the off-diagonal term (0.0051).
      scale_loss: constant factor on the loss (1.0; solo-learn's CIFAR recipe uses 0.1).
      eps: epsilon of the per-dimension standardisation (1e-5).
      head_init: the heads' Linear init, `heads.MLP.kernel_init`: "torch" (the reference's
        `nn.Linear` default) or "lecun_normal" (flax's default).
      dtype: compute dtype of the projector (the loss is computed in float32).
    """
    if lambd < 0 or scale_loss <= 0:
        raise ValueError(f"Barlow Twins needs lambd >= 0 and scale_loss > 0, got {lambd} and {scale_loss}.")
    projector = heads.MLP(tuple(proj_hidden), proj_dim, dtype=dtype, kernel_init=head_init)
    net = heads.BackboneWithHeads(backbone, projector=projector)

    def objective(params, emb, extra, rng, step):
        del params, rng, step
        # The standardisation and C are statistics of the whole (global, or accumulated) batch.
        terms = losses.barlow_twins_terms(emb["z1"], emb["z2"], eps=eps)
        loss = scale_loss * (terms["on_diagonal"] + lambd * terms["off_diagonal"])
        metrics = {**terms, "z_std": monitors.feature_std(emb["z1"]), "h_std": monitors.feature_std(emb["h1"])}
        return loss, (extra, metrics)

    return base.two_stage(net, base.embed_each(net, "Barlow Twins"), objective)
