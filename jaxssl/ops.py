"""Jit-safe numerics shared by several losses and methods.

Everything here is a pure function of arrays; statistics are taken over the axis the caller
passes in. Under `jax.jit` on globally sharded arrays, "the batch" is the global batch.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
    r"""Scale `x` to unit L2 norm along `axis`.

    .. math:: \hat x = x / \max(\lVert x \rVert_2, \epsilon)

    Args:
      x: array of any shape.
      axis: axis to normalise over.
      eps: lower bound on the norm (keeps the zero vector finite; the same clamp as
        `torch.nn.functional.normalize`).

    Returns:
      Array of the shape of `x`, computed in float32 or wider.
    """
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    norm = jnp.sqrt(jnp.sum(x * x, axis=axis, keepdims=True))
    return x / jnp.maximum(norm, eps)


def off_diagonal(m: jax.Array) -> jax.Array:
    """The off-diagonal entries of a square (D, D) matrix, flattened to (D * (D - 1),)."""
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"off_diagonal expects a square matrix, got shape {m.shape}.")
    d = m.shape[0]
    return m.reshape(-1)[:-1].reshape(d - 1, d + 1)[:, 1:].reshape(-1)


def cross_correlation(a: jax.Array, b: jax.Array, eps: float = 1e-5) -> jax.Array:
    r"""Cross-correlation matrix of two batches, each standardised per dimension over the batch.

    .. math::
        \hat a_{nd} = \frac{a_{nd} - \mu_d(a)}{\sqrt{\sigma^2_d(a) + \epsilon}}, \qquad
        C_{ij} = \frac{1}{N} \sum_{n=1}^{N} \hat a_{ni} \hat b_{nj}

    with the biased (1/N) batch variance, i.e. an affine-free BatchNorm in training mode, which
    is how the Barlow Twins reference implementation standardises (`nn.BatchNorm1d(affine=False)`,
    eps 1e-5). For well-spread inputs `C_ii` is the Pearson correlation of dimension i of `a`
    with dimension i of `b`, in [-1, 1].

    The mean, the variance and the sum over n are over axis 0 of the arrays given: under
    `jax.jit` on arrays sharded over the mesh's data axis that is the global batch, and XLA
    computes per-device partial sums of `\hat a^T \hat b` followed by one all-reduce, the
    `torch.distributed.all_reduce(c)` of the reference.

    Args:
      a: (N, D) array.
      b: (N, E) array.
      eps: added to the variance (keeps a constant dimension finite: it standardises to 0).

    Returns:
      (D, E) float32 (or wider) matrix.
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(f"cross_correlation expects (N, D) and (N, E) arrays, got {a.shape} and {b.shape}.")

    def standardize(x):
        x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        x = x - jnp.mean(x, axis=0)
        return x * jax.lax.rsqrt(jnp.mean(x * x, axis=0) + eps)

    return standardize(a).T @ standardize(b) / a.shape[0]
