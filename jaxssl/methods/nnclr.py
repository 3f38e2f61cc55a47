"""NNCLR (Dwibedi et al., 2021, arXiv:2104.14548): nearest neighbours from a support set as positives.

"We propose to use the nearest neighbor (NN) of the sample in the learned latent space as the
positive [...] We maintain a support set Q of embeddings from previous batches" (Sec. 3.1-3.2).

* Network: backbone -> projector (3 layers, BN on every layer) -> predictor (2 layers), each view
  in its own forward pass (`base.apply_each`), as solo-learn's `nnclr.py`.
* Support set: a (K, D) ring buffer of L2-normalised projections of view 1 plus a write pointer in
  `extra`, written after the loss (`moco_v2.enqueue`, the same ring buffer as MoCo v2's queue).
  Under `jax.jit` the projections are the **global** batch, so Q gains N_global rows per step on any
  number of devices (solo-learn all-gathers them: `dequeue_and_enqueue(gather(z1))`). Initialised
  with random unit vectors, as solo-learn.
* Loss: `losses.nnclr` symmetrised, 0.5 (l(NN(z1, Q), p2) + l(NN(z2, Q), p1)) (paper Eq. 2 with the
  prediction head of Sec. 3.2 "on the positive side"), negatives the other predictions of the
  global batch. The neighbour is a stored row chosen by argmax: no gradient reaches the support
  set or the query projection through it (stop_gradient inside `losses.nearest_neighbour`); the
  projector is trained through the predictor.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxssl import losses, monitors, ops
from jaxssl.methods import base, moco_v2
from jaxssl.models import heads


def make(*, backbone: nn.Module, temperature: float = 0.1, queue_size: int = 98304,
         proj_hidden: Sequence[int] = (2048, 2048), proj_dim: int = 256, pred_hidden: Sequence[int] = (4096,),
         dtype=jnp.float32) -> base.Method:
    """NNCLR with a support-set queue.

    Args:
      backbone: a module mapping images (B,H,W,3) -> features (B,F).
      temperature: tau (0.1, paper Sec. 4.1 "temperature of 0.1").
      queue_size: K, the support-set size (98,304, paper Sec. 4.1); must be >= the global batch.
      proj_hidden, proj_dim: projector "MLP with 3 layers [...] 2048 hidden [...] 256 output", BN
        on every layer including the output (paper Sec. 4.1; solo-learn's projector).
      pred_hidden: predictor hidden widths ("2 layers [...] hidden 4096", output `proj_dim`).
      dtype: compute dtype of the heads.
    """
    if not temperature > 0:
        raise ValueError(f"NNCLR temperature must be > 0, got {temperature}.")
    projector = heads.MLP(tuple(proj_hidden), proj_dim, last_norm=True, last_norm_scale=True, dtype=dtype)
    net = heads.BackboneWithHeads(backbone, projector=projector,
                                  predictor=heads.MLP(tuple(pred_hidden), proj_dim, dtype=dtype))

    def init_extra(rng):
        queue = ops.l2_normalize(jax.random.normal(rng, (queue_size, proj_dim), jnp.float32))
        return {"queue": queue, "ptr": jnp.zeros((), jnp.int32)}

    def loss_fn(params, model_state, teacher, extra, views, rng, step):
        del teacher, rng, step
        base.check_two_views("NNCLR", views)
        if views[0].shape[0] > queue_size:
            raise ValueError(f"NNCLR queue_size ({queue_size}) must be at least the global batch size "
                             f"({views[0].shape[0]}).")
        (o1, o2), new_state = base.apply_each(net, {"params": params, **model_state}, views)
        z1, z2 = o1["projection"], o2["projection"]
        p1, p2 = o1["prediction"], o2["prediction"]
        queue = extra["queue"]
        loss = 0.5 * (jnp.mean(losses.nnclr(z1, p2, queue, temperature))
                      + jnp.mean(losses.nnclr(z2, p1, queue, temperature)))
        # The support set is state: what enters it carries no gradient.
        queue, ptr = moco_v2.enqueue(queue, extra["ptr"], jax.lax.stop_gradient(ops.l2_normalize(z1)))
        metrics = {"z_std": monitors.feature_std(z1), "p_std": monitors.feature_std(p1),
                   "h_std": monitors.feature_std(o1["features"]), **monitors.alignment_uniformity(z1, z2)}
        return loss, (new_state, {"queue": queue, "ptr": ptr}, metrics)

    return base.Method(net, loss_fn, init_extra=init_extra)
