r"""Losses on second-order statistics of the embeddings: TiCo, MMCR and W-MSE.

Each is a function of the batch's covariance (TiCo, W-MSE) or singular values (MMCR), so, like
`_redundancy.py`, the functions are written on global arrays: under `jax.jit` with the batch
sharded over the mesh's "data" axis the reductions, the Cholesky factorisations and the SVDs
cover the whole batch of every device (the references all-gather the embeddings first), and the
result is the same on 1 and on N devices.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxssl import ops


def _rows(z: jax.Array, name: str, ndim: int = 2) -> jax.Array:
    if z.ndim != ndim:
        raise ValueError(f"{name} expects a {ndim}-d array, got shape {z.shape}.")
    return z.astype(jnp.promote_types(z.dtype, jnp.float32))


def tico_covariance(cov: jax.Array, z: jax.Array, beta: float = 0.9) -> jax.Array:
    r"""TiCo's running covariance (second-moment) matrix after one batch: an EMA of u^T u / N.

    TiCo (Zhu et al., 2022, arXiv:2206.10698, Algorithm 1), with u = z/||z|| row-wise,

    .. math::
        B = \frac{1}{N} U^\top U, \qquad C_t = \beta\, C_{t-1} + (1 - \beta)\, B

    The result is differentiable in `z` (through B): the paper's pseudocode computes the loss with
    this C_t and detaches C only when carrying it to the next step (`C = C.detach()` after
    `loss.backward()`), so the caller stores `jax.lax.stop_gradient(C_t)`. lightly 1.6's
    `TiCoLoss` detaches B itself: same value, a gradient without the B term.

    Args:
      cov: (D, D) C_{t-1} (zeros at the start, as the pseudocode).
      z: (N, D) embeddings of the online branch (the global batch).
      beta: beta in [0, 1] (0.9, the paper's).

    Returns:
      (D, D) C_t, float32.

    References:
      Zhu et al., TiCo: Transformation Invariance and Covariance Contrast for Self-Supervised
      Visual Representation Learning, https://arxiv.org/abs/2206.10698.
    """
    u = ops.l2_normalize(_rows(z, "tico_covariance"))
    return beta * cov + (1.0 - beta) * (u.T @ u) / u.shape[0]


def tico(z_a: jax.Array, z_b: jax.Array, cov: jax.Array, rho: float = 8.0) -> jax.Array:
    r"""TiCo's loss, per example: transformation invariance plus covariance contrast.

    TiCo (Zhu et al., 2022, arXiv:2206.10698, Eq. 5 / Algorithm 1), with u, v the L2-normalised
    rows of the two branches and C the running matrix of :func:`tico_covariance` (already
    updated with this batch),

    .. math::
        \ell_i = -u_i \cdot v_i + \rho\, u_i^\top C\, u_i

    "the second term [...] penalizes the embeddings of different images for being similar to
    each other": u^T C u is the mean squared cosine of u_i with the (decayed) past embeddings, an
    implicit memory bank of unlimited size. lightly 1.6's `TiCoLoss` adds the constant 1 to the
    first term (1 - u.v); the value here is the paper's.

    Args:
      z_a: (N, D) online embeddings (differentiated).
      z_b: (N, D) embeddings of the other view (the EMA teacher's in the paper's setting; pass
        them through `jax.lax.stop_gradient`).
      cov: (D, D) C_t.
      rho: weight of the covariance contrast (8, the value the paper recommends; lightly's default).

    Returns:
      (N,) per-example losses; the objective is their mean.

    Example:
      >>> import jax.numpy as jnp
      >>> z = jnp.eye(2)
      >>> c = tico_covariance(jnp.zeros((2, 2)), z, beta=0.0)  # I / 2
      >>> tico(z, z, c, rho=2.0).tolist()  # -1 + 2 * 1/2
      [0.0, 0.0]

    References:
      Zhu et al., https://arxiv.org/abs/2206.10698 ; sayannag/TiCo-pytorch `TiCo/main.py`.
    """
    u = ops.l2_normalize(_rows(z_a, "tico"))
    v = ops.l2_normalize(_rows(z_b, "tico"))
    if u.shape != v.shape or cov.shape != (u.shape[1], u.shape[1]):
        raise ValueError(f"tico expects (N, D) z_a, z_b and a (D, D) cov, got {z_a.shape}, {z_b.shape}, {cov.shape}.")
    return -jnp.sum(u * v, axis=-1) + rho * jnp.sum((u @ cov) * u, axis=-1)


def mmcr(z: jax.Array, lmbda: float = 0.0) -> jax.Array:
    r"""Maximum manifold capacity (MMCR): minus the nuclear norm of the matrix of view centroids.

    MMCR (Yerxa et al., 2023, arXiv:2303.03307, Eq. 3), with u_{nk} = z_{nk}/||z_{nk}|| the K
    views of image n and c_n = (1/K) sum_k u_{nk} its centroid, C = [c_1; ...; c_N] (N, D),

    .. math::
        \mathcal{L} = -\lVert C \rVert_* + \frac{\lambda}{N} \sum_{n=1}^{N} \lVert U_n \rVert_*

    where ||.||_* is the sum of singular values and U_n the (K, D) matrix of image n's views (the
    optional local term). The nuclear norm couples the whole batch: it is a batch-level scalar,
    taken over the global batch (the official code all-gathers before the SVD).
    lightly 1.6's `MMCRLoss(online, momentum)` does not normalise (the caller must) and stacks its
    two inputs along the view axis; on normalised views split in two halves it is this loss.

    Args:
      z: (N, K, D) embeddings of K >= 1 views of N images.
      lmbda: lambda >= 0 of the local term (0, the official CIFAR/STL `--lmbda 0.0`).

    Returns:
      float32 scalar, >= -sqrt(min(N, D) N) (centroids of unit vectors).

    Example:
      >>> import jax.numpy as jnp
      >>> z = jnp.stack([jnp.eye(2), jnp.eye(2)], axis=1)  # 2 images, 2 identical views each
      >>> round(float(mmcr(z)), 4)  # -||I||_*
      -2.0

    References:
      Yerxa et al., Learning Efficient Coding of Natural Images with Maximum Manifold Capacity
      Representations, https://arxiv.org/abs/2303.03307 ; ThomasYerxa/mmcr
      `mmcr/cifar_stl/loss_mmcr.py` (`MMCR_Loss`).
    """
    u = ops.l2_normalize(_rows(z, "mmcr", ndim=3))
    centroids = jnp.mean(u, axis=1)
    loss = -jnp.sum(jnp.linalg.svd(centroids, compute_uv=False))
    if lmbda:
        loss = loss + lmbda * jnp.sum(jnp.linalg.svd(u, compute_uv=False)) / u.shape[0]
    return loss


def whiten(x: jax.Array, eps: float = 0.0) -> jax.Array:
    r"""Cholesky whitening of one batch: zero mean and identity covariance.

    W-MSE (Ermolov et al., 2021, arXiv:2007.06346, Eq. 4-5): "W_V is the inverse of the Cholesky
    factor of the covariance", with the official code's shrinkage eps (L computed here from a QR
    factorisation, the same factor in exact arithmetic, see the code),

    .. math::
        \Sigma = \frac{1}{M - 1} (X - \bar x)^\top (X - \bar x), \qquad
        L L^\top = (1 - \epsilon)\Sigma + \epsilon I, \qquad
        \hat X = (X - \bar x) L^{-\top}

    Differentiable (the gradient flows through the mean, the covariance and the factorisation, as
    in the reference's `Whitening2d` with `track_running_stats=False`).

    Args:
      x: (M, D) rows, M > D (the covariance must be full rank unless eps > 0).
      eps: shrinkage toward the identity (0, the official `--w_eps`).

    Returns:
      (M, D) whitened rows, float32.

    References:
      Ermolov et al., Whitening for Self-Supervised Representation Learning,
      https://arxiv.org/abs/2007.06346 ; htdt/self-supervised `methods/whitening.py`.
    """
    x = _rows(x, "whiten")
    m, d = x.shape
    xc = x - jnp.mean(x, axis=0)
    # The Cholesky factor without forming the covariance: for A = [sqrt((1-eps)/(M-1)) xc; sqrt(eps) I],
    # A^T A is the shrunk covariance, so A's QR factor R (sign-fixed to a positive diagonal) is L^T.
    # Forming xc^T xc squares the condition number, which float32 cannot afford near collapse (and
    # then rounding noise dominates the whitened rows); the QR route does not.
    a = jnp.concatenate([jnp.sqrt((1.0 - eps) / (m - 1)) * xc, jnp.sqrt(eps) * jnp.eye(d, dtype=xc.dtype)])
    r = jnp.linalg.qr(a, mode="r")
    # xc L^{-T} = xc R^{-1} diag(sign(diag R)): solve R^T Y^T = xc^T (the reference's conv with
    # triangular_solve(I, L)).
    y = jax.scipy.linalg.solve_triangular(r, xc.T, trans="T", lower=False).T
    return y * jnp.sign(jnp.diagonal(r))


def wmse(z: jax.Array, perm: jax.Array, w_size: int, eps: float = 0.0) -> jax.Array:
    r"""W-MSE: whiten random sub-batches of each view, then the normalised MSE of every pair of views.

    W-MSE (Ermolov et al., 2021, arXiv:2007.06346, Eq. 6 and Sec. 3.1 "batch slicing"): the N
    images are split by the permutation `perm` into N / M sub-batches of M = `w_size`; each view's
    rows of each sub-batch are whitened on their own (:func:`whiten`), then for the K views

    .. math::
        \mathcal{L} = \frac{2}{K(K-1)} \sum_{k<l} \frac{1}{N} \sum_{n=1}^{N}
            \Big\lVert \frac{\hat z_{kn}}{\lVert \hat z_{kn} \rVert} - \frac{\hat z_{ln}}{\lVert \hat z_{ln} \rVert} \Big\rVert^2

    (`norm_mse_loss`, 2 - 2 cos, of the official code). Batch-level: whitening couples the rows
    of a sub-batch. The official code draws `perm` with `torch.randperm` each step (pass one from
    the step's rng: the same on every device, so the sub-batches are those of the global batch).

    Args:
      z: (K, N, D) embeddings of K >= 2 views of N images.
      perm: (N,) permutation of the images.
      w_size: M, the sub-batch size; divides N and exceeds D (official CIFAR: 128 for D = 64).
      eps: shrinkage of :func:`whiten` (0).

    Returns:
      float32 scalar in [0, 4].

    References:
      Ermolov et al., https://arxiv.org/abs/2007.06346 ; htdt/self-supervised `methods/w_mse.py`.
    """
    z = _rows(z, "wmse", ndim=3)
    k, n, d = z.shape
    if k < 2 or n % w_size or w_size <= d:
        raise ValueError(f"wmse needs K >= 2 views and a w_size that divides the batch N and exceeds the "
                         f"embedding size D; got K={k}, N={n}, D={d}, w_size={w_size}.")
    groups = z[:, perm].reshape(k * (n // w_size), w_size, d)
    # A Python loop over the K N / M sub-batches, not `jax.vmap`: XLA:CPU runs a batched triangular
    # solve through jax's ParallelBatchMap, which deadlocked inside a training step here (jax 0.10.2,
    # every thread waiting in `lapack_strsm_ffi`); K N / M is small (4 on CIFAR-10).
    white = jnp.stack([whiten(g, eps) for g in groups]).reshape(k, n, d)
    u = ops.l2_normalize(white)
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    return sum(2.0 - 2.0 * jnp.mean(jnp.sum(u[i] * u[j], axis=-1)) for i, j in pairs) / len(pairs)
