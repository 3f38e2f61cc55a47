r"""Joint-embedding predictive losses: I-JEPA's latent regression and LeJEPA's SIGReg + invariance.

Global batch. SIGReg is a statistic of the whole batch (the empirical characteristic function of
every slice); the references all-reduce its means across ranks (galilai-group/lejepa
`EppsPulley.forward`: `all_reduce(cos_mean)`, times `N * world_size`), and lightly 1.6's `SIGReg`
needs `gather_distributed=True` for it. Here, as for VICReg (see `_redundancy.py`), the function
is written once on global arrays: under `jax.jit` with the batch sharded over the mesh, the
`jnp.mean` over the batch axis is global and XLA inserts the all-reduce, so 1 device and N
devices give the same value and gradient (tests/losses/test_predictive.py checks 8 == 1).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxssl.losses._regression import smooth_l1


def slice_directions(rng: jax.Array, dim: int, num_slices: int = 1024) -> jax.Array:
    """(D, K) random unit vectors, one per column: Gaussian draws normalised per column.

    As galilai-group/lejepa `SlicingUnivariateTest.forward` (`A = randn(D, K); A /= A.norm(dim=0)`),
    drawn from the step's key so every device uses the same slices (the reference seeds all ranks
    with a synchronised step counter for the same reason).
    """
    a = jax.random.normal(rng, (dim, num_slices), jnp.float32)
    return a / jnp.linalg.norm(a, axis=0, keepdims=True)


def sigreg(z: jax.Array, directions: jax.Array, *, knots: int = 17, t_max: float = 3.0) -> jax.Array:
    r"""SIGReg: the sliced Epps-Pulley statistic of `z` against the isotropic Gaussian N(0, I).

    LeJEPA (Balestriero & LeCun, 2025, arXiv:2511.08544, Sec. 4): "Sketched Isotropic Gaussian
    Regularization [...] projecting the embeddings along [random] directions and enforcing that
    the univariate densities match" N(0, 1), with the Epps-Pulley characteristic-function test.
    For slice :math:`a_k` (unit column of `directions`) and :math:`x_n = a_k^\top z_n`,

    .. math::
        T_k = N \int_{-t_{max}}^{t_{max}} \big|\hat\varphi_k(t) - e^{-t^2/2}\big|^2 e^{-t^2/2}\,dt,
        \qquad \hat\varphi_k(t) = \frac1N \sum_n e^{i t x_n}

    integrated with the trapezoidal rule on `knots` equally spaced t in [0, t_max], doubled (the
    integrand is even: weights dt, 2 dt, ..., 2 dt, dt times :math:`e^{-t^2/2}`), exactly as the
    reference `EppsPulley(t_max=3, n_points=17, integration="trapezoid")`; the result is the mean
    of :math:`T_k` over the K slices. For z drawn from N(0, I) each :math:`T_k` has expectation
    :math:`\int (1 - e^{-t^2}) e^{-t^2/2} dt` (about 1.05 with these defaults; the tests check
    it), independent of N.

    Args:
      z: (..., N, D) embeddings; leading axes (e.g. views) are separate samples, each tested on
        its own N rows, and averaged.
      directions: (D, K) unit slice directions (`slice_directions`); pass the same ones to compare
        implementations.
      knots: number of t nodes (17).
      t_max: upper end of the t grid (3).

    Returns:
      (...) float32 statistics, the mean over slices (a batch-level value: no per-example split).

    Example:
      >>> z = jax.random.normal(jax.random.key(0), (4096, 8))
      >>> a = slice_directions(jax.random.key(1), 8, 64)
      >>> bool(0.5 < sigreg(z, a) < 1.5)
      True

    References:
      Balestriero & LeCun, LeJEPA, https://arxiv.org/abs/2511.08544 ; Epps & Pulley (1983), A test
      for normality based on the empirical characteristic function, Biometrika 70(3).
    """
    if z.ndim < 2 or directions.ndim != 2 or z.shape[-1] != directions.shape[0]:
        raise ValueError(f"sigreg expects z (..., N, D) and directions (D, K), got {z.shape} and {directions.shape}.")
    if knots < 2 or t_max <= 0:
        raise ValueError(f"sigreg needs knots >= 2 and t_max > 0, got {knots} and {t_max}.")
    dtype = jnp.promote_types(z.dtype, jnp.float32)
    n = z.shape[-2]
    t = jnp.linspace(0.0, t_max, knots, dtype=dtype)
    dt = t_max / (knots - 1)
    phi = jnp.exp(-0.5 * t * t)
    weights = jnp.full((knots,), 2 * dt, dtype).at[jnp.array([0, knots - 1])].set(dt) * phi
    x_t = (z.astype(dtype) @ directions.astype(dtype))[..., None] * t  # (..., N, K, knots)
    # Means over the batch axis: under jit on a sharded batch these are the global means.
    err = (jnp.mean(jnp.cos(x_t), axis=-3) - phi) ** 2 + jnp.mean(jnp.sin(x_t), axis=-3) ** 2  # (..., K, knots)
    return jnp.mean(err @ weights, axis=-1) * n


def lejepa_invariance(all_proj: jax.Array, global_proj: jax.Array) -> jax.Array:
    r"""LeJEPA's prediction (invariance) term: every view pulled to the centroid of the global views.

    LeJEPA (arXiv:2511.08544, Sec. 5): the predictor-free JEPA loss
    :math:`\frac{1}{V D} \sum_v \lVert \mu_n - z_{v,n} \rVert^2` with :math:`\mu_n` the mean over
    the :math:`V_g` global views of example n (galilai-group/lejepa MINIMAL.md:
    `(proj.mean(0) - proj).square().mean()`, lightly `lejepa_invariance_loss`). No stop-gradient:
    the centroid is differentiated too.

    Args:
      all_proj: (V, N, D) projections of all views (global first, as the caller orders them).
      global_proj: (V_g, N, D) projections of the global views.

    Returns:
      (N,) float32 per-example values (the mean over views and dimensions).

    Example:
      >>> g = jnp.array([[[0.0, 2.0]], [[2.0, 0.0]]])
      >>> lejepa_invariance(g, g).tolist()
      [1.0]

    References:
      Balestriero & LeCun, LeJEPA, https://arxiv.org/abs/2511.08544.
    """
    if all_proj.ndim != 3 or global_proj.ndim != 3 or all_proj.shape[1:] != global_proj.shape[1:]:
        raise ValueError(f"lejepa_invariance expects (V, N, D) and (V_g, N, D), got {all_proj.shape} and "
                         f"{global_proj.shape}.")
    centre = jnp.mean(global_proj.astype(jnp.float32), axis=0)
    return jnp.mean((centre - all_proj.astype(jnp.float32)) ** 2, axis=(0, 2))


def ijepa_targets(h: jax.Array, ids: jax.Array, eps: float = 1e-5) -> jax.Array:
    """I-JEPA targets: the target encoder's tokens layer-normalised (no affine), gathered at the target blocks.

    facebookresearch/ijepa src/train.py `forward_target`: `h = F.layer_norm(h, (h.size(-1),))`
    ("normalize over feature-dim"), then `apply_masks(h, masks_pred)`.

    Args:
      h: (B, N, D) target-encoder patch tokens.
      ids: (B, M, K) patch indices of the M target blocks.
      eps: LayerNorm epsilon (PyTorch's 1e-5).

    Returns:
      (B, M, K, D) float32 targets (the caller applies `stop_gradient`).
    """
    h = h.astype(jnp.float32)
    mu = jnp.mean(h, axis=-1, keepdims=True)
    h = (h - mu) * jax.lax.rsqrt(jnp.var(h, axis=-1, keepdims=True) + eps)
    b, m, k = ids.shape
    return jnp.take_along_axis(h, ids.reshape(b, m * k, 1), axis=1).reshape(b, m, k, h.shape[-1])


def ijepa(prediction: jax.Array, target: jax.Array, valid: jax.Array, *, beta: float = 1.0) -> jax.Array:
    r"""I-JEPA's latent regression: elementwise smooth-L1 (or squared error) averaged over the predicted tokens.

    I-JEPA (Assran et al., 2023, arXiv:2301.08243, Sec. 3): "The loss is simply the average
    distance between the predicted patch-level representations and the target patch-level
    representation". The official code (facebookresearch/ijepa src/train.py `loss_fn`) uses
    `F.smooth_l1_loss(z, h)` (beta = 1, the mean over every token and channel); the paper's
    text writes an L2 distance, which is `beta=0` here (`F.mse_loss`).

    .. math::
        \ell_b = \frac{1}{|\mathcal V_b| D} \sum_{(m,k) \in \mathcal V_b} \sum_d
        \mathrm{sl1}_\beta(\hat s_{bmkd} - s_{bmkd})

    with :math:`\mathcal V_b` the valid (non-padding) target tokens of example b. With the
    collator's common counts every example has the same number of them, so the batch mean of
    :math:`\ell_b` is the reference's mean over all elements.

    Args:
      prediction: (B, M, K, D) predictor outputs at the target tokens.
      target: (B, M, K, D) targets (`ijepa_targets`, under `stop_gradient`).
      valid: (B, M, K) bool, False for padding.
      beta: smooth-L1 transition (1, the PyTorch default the reference uses); 0 = squared error.

    Returns:
      (B,) float32 per-example losses.

    Example:
      >>> p = jnp.array([[[[0.0, 3.0]]]])
      >>> ijepa(p, jnp.zeros_like(p), jnp.ones((1, 1, 1), bool)).tolist()
      [1.25]

    References:
      Assran et al., Self-Supervised Learning from Images with a Joint-Embedding Predictive
      Architecture, https://arxiv.org/abs/2301.08243.
    """
    if prediction.shape != target.shape or prediction.shape[:-1] != valid.shape:
        raise ValueError(f"ijepa expects prediction and target (B, M, K, D) and valid (B, M, K), got "
                         f"{prediction.shape}, {target.shape} and {valid.shape}.")
    per_token = smooth_l1(prediction, target, beta) / prediction.shape[-1]  # (B, M, K), mean over D
    v = valid.astype(jnp.float32)
    return jnp.sum(per_token * v, axis=(1, 2)) / jnp.maximum(jnp.sum(v, axis=(1, 2)), 1.0)
