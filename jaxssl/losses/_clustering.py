"""Clustering losses: SwAV's swapped prediction of online cluster assignments."""
from __future__ import annotations

from typing import Sequence

import jax

from jaxssl import ops


def swav(scores: jax.Array, codes: jax.Array, crops_for_assign: Sequence[int], *,
         temperature: float = 0.1) -> jax.Array:
    r"""SwAV swapped prediction: predict the code of one crop from every other crop, per example.

    SwAV (Caron et al., 2020, arXiv:2006.09882, Eq. 1-2): ":math:`L(z_t, z_s) = \ell(z_t, q_s) +
    \ell(z_s, q_t)`" with ":math:`\ell(z_t, q_s) = -\sum_k q_s^{(k)} \log p_t^{(k)}`, where
    :math:`p_t^{(k)} = \frac{\exp(\frac1\tau z_t^\top c_k)}{\sum_{k'} \exp(\frac1\tau z_t^\top c_{k'})}`".
    With multi-crop, the codes of the crops in `crops_for_assign` (the two global crops) supervise
    every other crop; as the official `main_swav.py` (`subloss / (num_crops - 1)`, then
    `/ len(crops_for_assign)`), the result is the mean over those pairs:

    .. math::
        \ell_n = \frac{1}{A (V - 1)} \sum_{a=1}^{A} \sum_{v \ne c_a}
            -\sum_k q_{a n k} \log \mathrm{softmax}(s_{v n} / \tau)_k

    Args:
      scores: (V, B, K) prototype scores :math:`z^\top c_k` of every crop (globals first).
      codes: (A, B, K) Sinkhorn codes (`ops.sinkhorn_knopp`) of the crops in `crops_for_assign`,
        computed without gradient.
      crops_for_assign: length-A indices of the crops whose codes are targets ((0, 1) in SwAV).
      temperature: tau > 0 (0.1).

    Returns:
      (B,) float32 per-example losses.

    Example:
      >>> import jax.numpy as jnp
      >>> s = jnp.zeros((2, 1, 4)); q = jnp.full((2, 1, 4), 0.25)
      >>> round(float(swav(s, q, (0, 1))[0]), 4)  # log 4
      1.3863

    References:
      Caron et al., Unsupervised Learning of Visual Features by Contrasting Cluster Assignments,
      https://arxiv.org/abs/2006.09882 .
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    return ops.cross_view_cross_entropy(scores, codes, crops_for_assign, temperature)
