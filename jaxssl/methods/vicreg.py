"""VICReg (Bardes et al., 2022, arXiv:2105.04906): variance, invariance, covariance regularisation.

"VICReg [...] explicitly avoids the collapse problem with two regularizations terms applied to
both embeddings separately: (1) a term that maintains the variance of each embedding dimension
above a threshold, (2) a term that decorrelates each pair of variables" (Sec. 1). Two views go
through the same backbone and expander, each in its own forward pass as in the reference; the
loss is `jaxssl.losses.vicreg` with its statistics over the global batch. No teacher, no extra
state, no stop_gradient: both branches are trained.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxssl import losses, monitors
from jaxssl.methods import base
from jaxssl.models import heads


def make(*, backbone: nn.Module, proj_hidden: Sequence[int] = (8192, 8192), proj_dim: int = 8192,
         sim_coeff: float = 25.0, std_coeff: float = 25.0, cov_coeff: float = 1.0, eps: float = 1e-4,
         head_init: str = "torch", dtype=jnp.float32) -> base.Method:
    """VICReg with an MLP expander.

    Args:
      backbone: a module mapping images (B,H,W,3) -> features (B,F).
      proj_hidden: widths of the expander's hidden layers, each Linear -> BN -> ReLU. The paper's
        expander has "two fully-connected layers with batch normalization (BN) and ReLU, and a
        third linear layer", all 8192 wide (Sec. 4.1): (8192, 8192) with `proj_dim=8192`.
      proj_dim: embedding size D (8192).
      sim_coeff, std_coeff, cov_coeff: lambda, mu, nu of `jaxssl.losses.vicreg` (25, 25, 1).
      eps: variance epsilon (1e-4).
      head_init: the heads' Linear init, `heads.MLP.kernel_init`: "torch" (the reference's
        `nn.Linear` default) or "lecun_normal" (flax's default).
      dtype: compute dtype of the expander (the loss is computed in float32).
    """
    for name, value in (("sim_coeff", sim_coeff), ("std_coeff", std_coeff), ("cov_coeff", cov_coeff)):
        if value < 0:
            raise ValueError(f"VICReg {name} must be >= 0, got {value}.")
    projector = heads.MLP(tuple(proj_hidden), proj_dim, dtype=dtype, kernel_init=head_init)
    net = heads.BackboneWithHeads(backbone, projector=projector)

    def objective(params, emb, extra, rng, step):
        del params, rng, step
        # Variance and covariance are statistics of the whole (global, or accumulated) batch.
        terms = losses.vicreg_terms(emb["z1"], emb["z2"], eps=eps)
        loss = sim_coeff * terms["invariance"] + std_coeff * terms["variance"] + cov_coeff * terms["covariance"]
        metrics = {**terms, "z_std": monitors.feature_std(emb["z1"]), "h_std": monitors.feature_std(emb["h1"])}
        return loss, (extra, metrics)

    return base.two_stage(net, base.embed_each(net, "VICReg"), objective)
