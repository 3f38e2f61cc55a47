"""Regression losses between an online prediction and a target (BYOL, SimSiam)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxssl import ops


def negative_cosine(p: jax.Array, z: jax.Array, eps: float = 1e-12) -> jax.Array:
    r"""Negative cosine similarity between predictions and targets, per example.

    SimSiam (Chen & He, 2021, arXiv:2011.10566, Eq. 1): "we minimize their negative cosine
    similarity: D(p_1, z_2) = -p_1/||p_1||_2 . z_2/||z_2||_2". BYOL's normalised mean squared
    error (Grill et al., 2020, arXiv:2006.07733, Eq. 2) is the same quantity up to an affine map:
    :math:`\lVert \bar p - \bar z \rVert_2^2 = 2 - 2\cos(p, z) = 2 + 2\,\mathrm{negative\_cosine}(p, z)`.

    .. math::
        \ell_i = -\frac{p_i \cdot z_i}{\max(\lVert p_i \rVert_2, \epsilon)\,\max(\lVert z_i \rVert_2, \epsilon)}

    The function is symmetric in its arguments and differentiates through both: the caller
    makes `z` a target with `jax.lax.stop_gradient` (SimSiam's stop-gradient, BYOL's target
    network), so the gradient policy is visible where the method is written.

    Args:
      p: (N, D) predictions (the online branch).
      z: (N, D) targets, row i paired with row i of `p`.
      eps: lower bound on each norm (as `torch.nn.functional.cosine_similarity`).

    Returns:
      (N,) per-example losses in [-1, 1], computed in float32 or wider.

    Example:
      >>> import jax.numpy as jnp
      >>> negative_cosine(jnp.array([[1.0, 0.0]]), jnp.array([[2.0, 0.0]])).tolist()
      [-1.0]

    References:
      Chen & He, Exploring Simple Siamese Representation Learning, https://arxiv.org/abs/2011.10566 ;
      Grill et al., Bootstrap Your Own Latent, https://arxiv.org/abs/2006.07733.
    """
    if p.ndim != 2 or p.shape != z.shape:
        raise ValueError(f"negative_cosine expects two (N, D) arrays of equal shape, got {p.shape} and {z.shape}.")
    return -jnp.sum(ops.l2_normalize(p, eps=eps) * ops.l2_normalize(z, eps=eps), axis=-1)


def fastsiam(p: jax.Array, z: jax.Array, eps: float = 1e-12) -> jax.Array:
    r"""FastSiam: each view predicts the mean of the other views' projections, per example.

    FastSiam (Pototzky et al., 2022, arXiv:2204.13631, Sec. 3): SimSiam with K > 2 views per
    image, where "the target [...] is the average of the representations of the remaining K - 1
    views", which gives a more stable target and lets a small batch train. Every view takes the
    predictor's role once (lightly's FastSiam example, `fastsiam.py`):

    .. math::
        \ell_n = \frac{1}{V} \sum_{i=1}^{V} \mathrm{negative\_cosine}\Big(p_{in},\,
                 \mathrm{sg}\Big[\frac{1}{V - 1} \sum_{j \ne i} z_{jn}\Big]\Big)

    The stop-gradient (sg) is applied here, on the averaged targets, because the targets are
    formed inside the loss (SimSiam's Eq. 3 with the mean target; as lightly's example, which
    detaches z before averaging). The average is of the raw projections, normalised only by the
    cosine.

    Args:
      p: (V, N, D) predictions of the V >= 2 views.
      z: (V, N, D) projections of the same views (the targets' raw material).
      eps: lower bound on each norm, as :func:`negative_cosine`.

    Returns:
      (N,) per-example losses in [-1, 1].

    Example:
      >>> import jax.numpy as jnp
      >>> z = jnp.array([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 1.0]]])
      >>> round(float(fastsiam(z, z)[0]), 4)
      -0.6315

    References:
      Pototzky, Sultan, Schmidt-Thieme, FastSiam: Resource-Efficient Self-supervised Learning on a
      Single GPU, https://arxiv.org/abs/2204.13631 ; lightly `examples/pytorch/fastsiam.py`.
    """
    if p.ndim != 3 or p.shape != z.shape or p.shape[0] < 2:
        raise ValueError(f"fastsiam expects (V, N, D) predictions and projections of equal shape with V >= 2, got "
                         f"{p.shape} and {z.shape}.")
    v = p.shape[0]
    z = z.astype(jnp.promote_types(z.dtype, jnp.float32))
    # Mean of the other views: (sum of all - own) / (V - 1), without materialising V masks.
    targets = jax.lax.stop_gradient((jnp.sum(z, axis=0, keepdims=True) - z) / (v - 1))
    return jnp.mean(jax.vmap(lambda a, b: negative_cosine(a, b, eps))(p, targets), axis=0)


def smooth_l1(x: jax.Array, y: jax.Array, beta: float = 1.0) -> jax.Array:
    r"""Smooth-L1 (Huber-like) regression loss summed over the last axis; squared error if beta = 0.

    data2vec (Baevski et al., 2022, arXiv:2202.03555, Eq. 2): "We use a Smooth L1 loss to regress
    these targets [...] where beta controls the transition from a squared loss to an L1 loss".
    As in fairseq's data2vec, `beta = 0` selects the plain squared error (the released speech recipe).

    .. math::
        \ell = \sum_d \begin{cases} \tfrac{1}{2}(x_d - y_d)^2 / \beta & |x_d - y_d| \le \beta \\
                                   |x_d - y_d| - \tfrac{1}{2}\beta & \text{otherwise}\end{cases}
        \qquad (\beta > 0), \qquad \ell = \sum_d (x_d - y_d)^2 \quad (\beta = 0).

    Args:
      x: (..., D) predictions.
      y: (..., D) targets (the caller applies `stop_gradient`).
      beta: transition point (fairseq data2vec v1 configs: 2 images, 4 text, 0 = L2 speech).

    Returns:
      (...,) float32 losses, one per prediction row.

    Example:
      >>> smooth_l1(jnp.array([[0.0, 3.0]]), jnp.zeros((1, 2)), beta=2.0).tolist()
      [2.0]

    References:
      Baevski et al., data2vec, https://arxiv.org/abs/2202.03555 ; Girshick, Fast R-CNN,
      https://arxiv.org/abs/1504.08083.
    """
    if x.shape != y.shape:
        raise ValueError(f"smooth_l1 expects equal shapes, got {x.shape} and {y.shape}.")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}.")
    d = x.astype(jnp.float32) - y.astype(jnp.float32)
    if beta == 0:
        return jnp.sum(d * d, axis=-1)
    a = jnp.abs(d)
    return jnp.sum(jnp.where(a <= beta, 0.5 * d * d / beta, a - 0.5 * beta), axis=-1)


def masked_mse(pred: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
    r"""Mean squared error per token, averaged over the masked tokens of each example (MAE).

    MAE (He et al., 2021, arXiv:2111.06377, Sec. 3): "Our loss function computes the mean squared
    error (MSE) between the reconstructed and original images in the pixel space. We compute
    the loss only on masked patches, similar to BERT."

    .. math::
        \ell_n = \frac{\sum_t m_{nt} \frac{1}{D}\sum_d (p_{ntd} - y_{ntd})^2}{\max(\sum_t m_{nt}, 1)}

    Args:
      pred: (N, T, D) predictions (e.g. pixels per patch).
      target: (N, T, D) targets.
      mask: (N, T) bool or {0, 1}, 1 = masked (counted).

    Returns:
      (N,) float32 per-example losses (0 for an example with no masked token).

    Example:
      >>> masked_mse(jnp.ones((1, 2, 1)), jnp.zeros((1, 2, 1)), jnp.array([[1, 0]])).tolist()
      [1.0]

    References:
      He et al., Masked Autoencoders Are Scalable Vision Learners, https://arxiv.org/abs/2111.06377.
    """
    if pred.shape != target.shape or pred.ndim != 3 or mask.shape != pred.shape[:2]:
        raise ValueError(f"masked_mse expects (N, T, D) pred/target and (N, T) mask, got {pred.shape}, "
                         f"{target.shape} and {mask.shape}.")
    per_token = jnp.mean((pred.astype(jnp.float32) - target.astype(jnp.float32)) ** 2, axis=-1)
    m = mask.astype(jnp.float32)
    return jnp.sum(per_token * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)
