r"""Redundancy-reduction losses: VICReg and Barlow Twins.

Unlike the other loss families these are **batch-level** objectives and return a scalar, not
per-example values: every term except VICReg's invariance is a function of statistics of the
whole batch (per-dimension variances, a covariance or cross-correlation matrix), so no loss
can be attributed to one example and "reduce by the mean" is not the caller's choice to make.

Global batch. The reference implementations compute these statistics over the batch of all
devices: VICReg all-gathers the embeddings (`FullGatherLayer`) before the variance and
covariance terms; Barlow Twins standardises with synchronised BatchNorm and all-reduces the
cross-correlation matrix. Here the functions are written once, on global arrays: under
`jax.jit` with the batch sharded over the mesh's "data" axis (as in `jaxssl.train.step`) the
plain `jnp` reductions are global and XLA inserts exactly those collectives (partial sums, then
an all-reduce). We keep this as the only form because it is the clearer one: the formula reads
as in the papers, it needs no `axis_name` plumbing, and it gives the same numbers on 1 device,
on N devices and outside `jit`. tests/methods/test_redundancy_methods.py checks it on 8 devices
against a `shard_map` transcription of the reference code with an explicit `all_gather` /
`psum`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxssl import ops


def _check_pair(z1: jax.Array, z2: jax.Array, name: str) -> tuple[jax.Array, jax.Array]:
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(f"{name} expects two (N, D) arrays of equal shape, got {z1.shape} and {z2.shape}.")
    if z1.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 examples to take batch statistics, got N={z1.shape[0]}.")
    dtype = jnp.promote_types(jnp.result_type(z1, z2), jnp.float32)
    return z1.astype(dtype), z2.astype(dtype)


def vicreg_terms(z1: jax.Array, z2: jax.Array, *, eps: float = 1e-4) -> dict[str, jax.Array]:
    r"""The three unweighted VICReg terms: invariance, variance and covariance.

    VICReg (Bardes et al., 2022, arXiv:2105.04906, Sec. 3.1): "the variance term [...] a hinge
    function on the standard deviation of the embeddings along the batch dimension", "the
    covariance term [...] the sum of the squared off-diagonal coefficients of C(Z), with a factor
    1/d", "the invariance term [...] the mean-squared euclidean distance between each pair of
    vectors". With batch statistics over the N rows (unbiased variance, as the reference),

    .. math::
        s &= \frac{1}{N D} \sum_{n,d} (z_{1,nd} - z_{2,nd})^2 \\
        v(Z) &= \frac{1}{D} \sum_d \max\Big(0, 1 - \sqrt{\mathrm{Var}(z_{\cdot d}) + \epsilon}\Big),
            \qquad \text{variance} = \tfrac12 \big(v(Z_1) + v(Z_2)\big) \\
        C(Z) &= \frac{1}{N - 1} \sum_n (z_n - \bar z)(z_n - \bar z)^\top, \qquad
        c(Z) = \frac{1}{D} \sum_{i \ne j} C(Z)_{ij}^2, \qquad
        \text{covariance} = c(Z_1) + c(Z_2)

    The variance term averages the two views and the covariance term sums them, as the
    reference code does (`std_loss = mean(relu(1 - std_x)) / 2 + mean(relu(1 - std_y)) / 2`,
    `cov_loss = c(x) + c(y)`) and as the published coefficients 25/25/1 were tuned for; the
    paper's Eq. 6 writes both as sums (solo-learn follows the paper: its variance term is twice
    this one).

    Args:
      z1: (N, D) embeddings (expander outputs) of the first view, N >= 2; the GLOBAL batch.
      z2: (N, D) embeddings of the second view; row n is the same image as z1's row n.
      eps: added to the variance under the square root (1e-4 in the paper and the reference).

    Returns:
      {"invariance", "variance", "covariance"}: float32 scalars (batch-level, see the module
      docstring). All are >= 0; "variance" is at most 1 - sqrt(eps), reached when all
      embeddings are equal (complete collapse).

    Example:
      >>> import jax.numpy as jnp
      >>> t = vicreg_terms(jnp.ones((4, 3)), jnp.ones((4, 3)))
      >>> float(t["invariance"]), round(float(t["variance"]), 4), float(t["covariance"])
      (0.0, 0.99, 0.0)

    References:
      Bardes, Ponce, LeCun, VICReg: Variance-Invariance-Covariance Regularization for
      Self-Supervised Learning, https://arxiv.org/abs/2105.04906 ; facebookresearch/vicreg
      `main_vicreg.py` (`VICReg.forward`).
    """
    z1, z2 = _check_pair(z1, z2, "vicreg")
    n, d = z1.shape

    def variance(z):
        std = jnp.sqrt(jnp.var(z, axis=0, ddof=1) + eps)
        return jnp.mean(jax.nn.relu(1.0 - std))

    def covariance(z):
        zc = z - jnp.mean(z, axis=0)
        cov = zc.T @ zc / (n - 1)
        return jnp.sum(ops.off_diagonal(cov) ** 2) / d

    return {"invariance": jnp.mean((z1 - z2) ** 2),
            "variance": 0.5 * (variance(z1) + variance(z2)),
            "covariance": covariance(z1) + covariance(z2)}


def vicreg(z1: jax.Array, z2: jax.Array, *, sim_coeff: float = 25.0, std_coeff: float = 25.0,
           cov_coeff: float = 1.0, eps: float = 1e-4) -> jax.Array:
    r"""The VICReg loss: a weighted sum of the terms of :func:`vicreg_terms`.

    .. math::
        \ell = \lambda\, s(Z_1, Z_2) + \mu\, \tfrac12 \big(v(Z_1) + v(Z_2)\big)
               + \nu \big(c(Z_1) + c(Z_2)\big)

    The paper's defaults are lambda = mu = 25 and nu = 1 (Sec. 4.1, implementation details).

    Args:
      z1: (N, D) embeddings of the first view (the global batch), N >= 2.
      z2: (N, D) embeddings of the second view.
      sim_coeff: lambda, weight of the invariance term (25).
      std_coeff: mu, weight of the variance term (25).
      cov_coeff: nu, weight of the covariance term (1).
      eps: see :func:`vicreg_terms` (1e-4).

    Returns:
      float32 scalar: batch-level, because the variance and covariance terms are statistics of
      the whole batch (see the module docstring).

    References:
      Bardes et al., 2022, https://arxiv.org/abs/2105.04906.
    """
    t = vicreg_terms(z1, z2, eps=eps)
    return sim_coeff * t["invariance"] + std_coeff * t["variance"] + cov_coeff * t["covariance"]


def barlow_twins_terms(z1: jax.Array, z2: jax.Array, *, eps: float = 1e-5) -> dict[str, jax.Array]:
    r"""The two unweighted Barlow Twins terms of the cross-correlation matrix C.

    Barlow Twins (Zbontar et al., 2021, arXiv:2103.03230, Eq. 1-2): "C is the cross-correlation
    matrix computed between the outputs of the two identical networks along the batch
    dimension", each output standardised per dimension over the batch
    (`jaxssl.ops.cross_correlation`: a BatchNorm without affine parameters, as the reference).

    .. math::
        \text{on\_diagonal} = \sum_i (1 - C_{ii})^2, \qquad
        \text{off\_diagonal} = \sum_{i \ne j} C_{ij}^2

    Args:
      z1: (N, D) embeddings of the first view (the global batch), N >= 2.
      z2: (N, D) embeddings of the second view.
      eps: BatchNorm epsilon of the standardisation (1e-5, PyTorch's default in the reference).

    Returns:
      {"on_diagonal", "off_diagonal"}: float32 scalars (batch-level); "on_diagonal" is D for
      collapsed (constant) embeddings.

    References:
      Zbontar et al., https://arxiv.org/abs/2103.03230 ; facebookresearch/barlowtwins `main.py`.
    """
    z1, z2 = _check_pair(z1, z2, "barlow_twins")
    c = ops.cross_correlation(z1, z2, eps=eps)
    return {"on_diagonal": jnp.sum((1.0 - jnp.diagonal(c)) ** 2),
            "off_diagonal": jnp.sum(ops.off_diagonal(c) ** 2)}


def barlow_twins(z1: jax.Array, z2: jax.Array, *, lambd: float = 0.0051, eps: float = 1e-5) -> jax.Array:
    r"""The Barlow Twins loss: invariance on the diagonal, redundancy reduction off it.

    .. math::
        \mathcal{L}_{BT} = \sum_i (1 - C_{ii})^2 + \lambda \sum_i \sum_{j \ne i} C_{ij}^2, \qquad
        C_{ij} = \frac{\sum_n \hat z_{1,ni} \hat z_{2,nj}}{N}

    "lambda is a positive constant trading off the importance of the first and second terms of
    the loss" (Eq. 1); lambda = 0.0051 is the reference code's default (`--lambd 0.0051`).

    Args:
      z1: (N, D) embeddings (projector outputs) of the first view (the global batch), N >= 2.
      z2: (N, D) embeddings of the second view.
      lambd: lambda, the weight of the off-diagonal (redundancy-reduction) term.
      eps: see :func:`barlow_twins_terms`.

    Returns:
      float32 scalar: batch-level, because C is a statistic of the whole batch (see the module
      docstring).

    Example:
      >>> import jax.numpy as jnp
      >>> h = jnp.array([[1., 1.], [1., -1.], [-1., 1.], [-1., -1.]])  # centred, unit variance, decorrelated
      >>> round(float(barlow_twins(h, h, eps=0.0)), 6)
      0.0

    References:
      Zbontar, Jing, Misra, LeCun, Deny, Barlow Twins: Self-Supervised Learning via Redundancy
      Reduction, https://arxiv.org/abs/2103.03230.
    """
    t = barlow_twins_terms(z1, z2, eps=eps)
    return t["on_diagonal"] + lambd * t["off_diagonal"]
