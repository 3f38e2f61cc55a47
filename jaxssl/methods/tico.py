"""TiCo (Zhu et al., 2022, arXiv:2206.10698): transformation invariance and covariance contrast.

"TiCo [...] maximiz[es] the agreement between embeddings of different distorted versions of the
same image, which pushes the encoder to produce transformation invariant representations. To
avoid the trivial solution where the encoder generates the same representation for all images,
[it is] regularize[d] with a term that penalizes the covariance matrix" (abstract), a running
covariance "which can be seen as an implicit memory bank of unlimited size".

* Network: backbone -> projector (BYOL's: 4096 hidden with BN, 256 out); the second branch is the
  EMA teacher kept by the train step with BYOL's cosine momentum schedule (the paper builds on
  BYOL's momentum encoder; sayannag/TiCo-pytorch and lightly's TiCo benchmark do the same).
* State: the (D, D) running matrix C in `extra` (zeros at the start, Algorithm 1). Each step
  C_t = beta C_{t-1} + (1 - beta) U^T U / N over the **global** batch of online projections
  (`losses.tico_covariance`); the loss uses C_t with its gradient through this batch's term, and
  `extra` keeps stop_gradient(C_t) ("C = C.detach()" after the backward pass, Algorithm 1).
* Loss: `losses.tico(z_a, stop_gradient(z_b), C_t, rho)` with z_a the online projection of view 1
  and z_b the teacher's projection of view 2, averaged over the global batch.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxssl import losses, monitors, schedules
from jaxssl.methods import base
from jaxssl.models import heads


def make(*, backbone: nn.Module, total_steps: int, beta: float = 0.9, rho: float = 8.0,
         proj_hidden: Sequence[int] = (4096,), proj_dim: int = 256, base_momentum: float = 0.99,
         dtype=jnp.float32) -> base.Method:
    """TiCo with an EMA teacher and a running covariance matrix.

    Args:
      backbone: a module mapping images (B,H,W,3) -> features (B,F).
      total_steps: K of the teacher's cosine momentum schedule (the run's number of steps).
      beta: the running matrix's EMA coefficient (0.9, the paper's).
      rho: weight of the covariance contrast (8, the value the paper recommends).
      proj_hidden, proj_dim: projector widths (4096 -> 256 with BN, BYOL's / sayannag's).
      base_momentum: the teacher's starting momentum, rising to 1 on BYOL's cosine schedule (0.99,
        sayannag/TiCo-pytorch `--start_momentum`).
      dtype: compute dtype of the head.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"TiCo beta must be in [0, 1], got {beta}.")
    net = heads.BackboneWithHeads(backbone, projector=heads.MLP(tuple(proj_hidden), proj_dim, dtype=dtype))

    def init_extra(rng):
        del rng
        return {"cov": jnp.zeros((proj_dim, proj_dim), jnp.float32)}

    def loss_fn(params, model_state, teacher, extra, views, rng, step):
        del rng, step
        base.check_two_views("TiCo", views)
        out, new_state = net.apply({"params": params, **model_state}, views[0], train=True,
                                   mutable=list(model_state))
        # The teacher's BatchNorm updates are discarded: the step keeps its running averages as the
        # EMA of the student's (as BYOL). stop_gradient: the teacher branch is a target.
        target, _ = net.apply(teacher, views[1], train=True, mutable=[k for k in teacher if k != "params"])
        z_a, z_b = out["projection"], jax.lax.stop_gradient(target["projection"])
        cov = losses.tico_covariance(extra["cov"], z_a, beta)
        loss = jnp.mean(losses.tico(z_a, z_b, cov, rho))
        metrics = {"z_std": monitors.feature_std(z_a), "h_std": monitors.feature_std(out["features"]),
                   "target_std": monitors.feature_std(z_b), **monitors.alignment_uniformity(z_a, z_b)}
        # Carried to the next step as a constant (Algorithm 1: `C = C.detach()`).
        return loss, (new_state, {"cov": jax.lax.stop_gradient(cov)}, metrics)

    return base.Method(net, loss_fn, init_extra=init_extra,
                       teacher_momentum=schedules.cosine_momentum(base_momentum, total_steps))
