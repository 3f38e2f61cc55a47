"""Contrastive (InfoNCE-family) losses."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxssl import ops


def nt_xent(z1: jax.Array, z2: jax.Array, temperature: float = 0.5) -> jax.Array:
    r"""Normalised-temperature cross entropy (NT-Xent), per example, over the 2N views.

    SimCLR (Chen et al., 2020, arXiv:2002.05709, Eq. 1): "Given a set {x_k} including a positive
    pair of examples x_i and x_j, the contrastive prediction task aims to identify x_j in
    {x_k}_{k != i} for a given x_i."  With u = z / ||z|| and s_ij = u_i . u_j / tau over the
    2N stacked views [z1; z2],

    .. math::
        \ell_i = -\log \frac{\exp(s_{i,p(i)})}{\sum_{k \ne i} \exp(s_{ik})}

    where p(i) is the other view of the same image. The 2N - 2 negatives of each anchor are every
    other view in the batch: when `z1`, `z2` are global arrays under `jax.jit` (sharded over the
    mesh's data axis) the negatives are the **global** batch; XLA gathers across devices.

    Args:
      z1: (N, D) embeddings of the first view.
      z2: (N, D) embeddings of the second view (row i is the positive of z1's row i).
      temperature: tau > 0.

    Returns:
      (2N,) per-anchor losses: rows 0..N-1 anchor on view 1, rows N..2N-1 on view 2.
      SimCLR's objective is their mean.

    Example:
      >>> import jax.numpy as jnp
      >>> z = jnp.eye(2)
      >>> float(nt_xent(z, z, temperature=1.0).mean())  # doctest: +ELLIPSIS
      0.55...

    References:
      Chen et al., A Simple Framework for Contrastive Learning of Visual Representations,
      https://arxiv.org/abs/2002.05709 ; Sohn, 2016 (N-pair loss); van den Oord et al., 2018.
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(f"nt_xent expects two (N, D) arrays of equal shape, got {z1.shape} and {z2.shape}.")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    n = z1.shape[0]
    u = ops.l2_normalize(jnp.concatenate([z1, z2], axis=0))
    logits = (u @ u.T) / temperature
    # An anchor is never its own negative: mask the diagonal out of the softmax.
    logits = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, logits)
    positive = jnp.concatenate([jnp.arange(n, 2 * n), jnp.arange(0, n)])
    log_prob = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(log_prob, positive[:, None], axis=-1)[:, 0]
