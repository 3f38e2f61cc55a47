r"""Alignment and uniformity on the unit hypersphere (Wang & Isola, 2020).

"Alignment: two samples forming a positive pair should be mapped to nearby features [...]
Uniformity: feature vectors should be roughly uniformly distributed on the unit hypersphere"
(Sec. 4). Both are functions of L2-normalised embeddings (normalised here). Alignment is a mean
of per-pair values; uniformity is the log of a mean over all pairs of the batch, hence a
batch-level scalar (under `jax.jit` the pairs are those of the global batch). The same functions
serve as training monitors (`jaxssl.monitors.alignment_uniformity`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxssl import ops


def _unit(z: jax.Array) -> jax.Array:
    """Rows scaled to unit norm, in float32 (or wider)."""
    return ops.l2_normalize(z.astype(jnp.promote_types(z.dtype, jnp.float32)))


def alignment(z1: jax.Array, z2: jax.Array, alpha: float = 2.0) -> jax.Array:
    r"""Alignment of positive pairs, per pair: the alpha-th power of their distance on the sphere.

    Wang & Isola (2020, arXiv:2005.10242, Eq. 4), with u = z/||z||,

    .. math::
        \ell_{\text{align},i} = \lVert u_{1,i} - u_{2,i} \rVert_2^{\alpha}

    Args:
      z1: (N, D) embeddings of the first view.
      z2: (N, D) embeddings of the second view (row i is the positive of z1's row i).
      alpha: alpha > 0 (2, the paper's and the official code's `--align_alpha`).

    Returns:
      (N,) per-pair values in [0, 2^alpha]; the paper's L_align is their mean.

    Example:
      >>> import jax.numpy as jnp
      >>> alignment(jnp.array([[1., 0.]]), jnp.array([[0., 3.]])).tolist()  # ||e1 - e2||^2
      [2.0...]

    References:
      Wang & Isola, Understanding Contrastive Representation Learning through Alignment and
      Uniformity on the Hypersphere, https://arxiv.org/abs/2005.10242 ; SsnL/align_uniform
      `align_uniform/__init__.py` (`align_loss`).
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(f"alignment expects two (N, D) arrays of equal shape, got {z1.shape} and {z2.shape}.")
    d2 = jnp.sum((_unit(z1) - _unit(z2)) ** 2, axis=-1)
    # ||.||^alpha as (||.||^2)^(alpha/2): no square root, whose gradient is infinite at 0 (a
    # perfectly aligned pair); for alpha = 2 this is the squared distance itself.
    return d2 if alpha == 2 else jnp.maximum(d2, 0.0) ** (alpha / 2)


def uniformity(z: jax.Array, t: float = 2.0) -> jax.Array:
    r"""Uniformity of a batch: log of the mean Gaussian potential over all pairs of distinct rows.

    Wang & Isola (2020, arXiv:2005.10242, Eq. 5), with u = z/||z|| and the N(N-1)/2 pairs i < j,

    .. math::
        \mathcal{L}_{\text{uniform}} = \log \frac{2}{N(N-1)} \sum_{i<j} e^{-t \lVert u_i - u_j \rVert_2^2}

    computed as a masked log-sum-exp (stable for large t).

    Args:
      z: (N, D) embeddings, N >= 2 (the global batch under `jax.jit`).
      t: t > 0 (2, the paper's and the official code's `--unif_t`).

    Returns:
      float32 scalar in [-4t, 0]; 0 when all rows coincide (collapse), lower is more uniform.

    Example:
      >>> import jax.numpy as jnp
      >>> round(float(uniformity(jnp.array([[1., 0.], [-1., 0.]]), t=1.0)), 4)  # antipodal: -t * 4
      -4.0

    References:
      Wang & Isola, https://arxiv.org/abs/2005.10242 ; SsnL/align_uniform `uniform_loss`.
    """
    if z.ndim != 2 or z.shape[0] < 2:
        raise ValueError(f"uniformity expects (N, D) embeddings with N >= 2, got {z.shape}.")
    n = z.shape[0]
    u = _unit(z)
    # ||u_i - u_j||^2 from the Gram matrix of the rows centred on their mean (the distances do not
    # depend on the centre, so it carries no gradient). Not 2 - 2 u_i . u_j: near collapse (a fresh
    # network maps all images close together) that difference cancels to a few float32 ulps, and the
    # gradient, a small component orthogonal to nearly parallel rows, drowns in rounding noise.
    a = u - jax.lax.stop_gradient(jnp.mean(u, axis=0))
    norms = jnp.sum(a * a, axis=-1)
    sq = jnp.maximum(norms[:, None] + norms[None, :] - 2.0 * (a @ a.T), 0.0)
    upper = jnp.triu(jnp.ones((n, n), bool), k=1)
    return jax.nn.logsumexp(jnp.where(upper, -t * sq, -jnp.inf)) - jnp.log(n * (n - 1) / 2)
