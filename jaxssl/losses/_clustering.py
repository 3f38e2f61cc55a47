"""Clustering losses: SwAV's swapped prediction of online cluster assignments; MSN / PMSN prototype matching."""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from jaxssl import ops

MSN_PRIORS = ("uniform", "power_law")


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


def power_law_prior(num_prototypes: int, exponent: float = 0.25) -> jax.Array:
    r"""The PMSN power-law prior over K prototypes, :math:`\pi_k \propto k^{-\tau}`, k = 1..K, summing to one.

    PMSN (Assran et al., 2023, arXiv:2210.07277, Sec. 5): a prior in which cluster sizes follow a
    power law instead of MSN's hidden uniform prior. `exponent` is tau (0.25 as lightly's
    `PMSNLoss(power_law_exponent=0.25)`).

    Example:
      >>> [round(float(p), 4) for p in power_law_prior(2, 1.0)]
      [0.6667, 0.3333]
    """
    k = jnp.arange(1, num_prototypes + 1, dtype=jnp.float32)
    w = k ** (-exponent)
    return w / jnp.sum(w)


def msn_terms(anchors: jax.Array, targets: jax.Array, prototypes: jax.Array, *, temperature: float = 0.1,
              sharpen_temperature: float = 0.25, sinkhorn_iterations: int = 3, prior: str = "uniform",
              power_law_exponent: float = 0.25) -> dict[str, jax.Array]:
    r"""The unweighted MSN / PMSN terms: cross entropy to sharpened target assignments, and the prior term.

    MSN (Assran et al., 2022, arXiv:2204.07141, Eq. 1-2): with cosine scores against the K
    prototypes, :math:`p = \mathrm{softmax}(\bar z \cdot \bar q / \tau)`, the target of an image is
    its target view's assignment sharpened with temperature T ("sharpening [...] to encourage
    confident predictions") and, as the official code (`use_sinkhorn: true`), balanced by 3
    Sinkhorn-Knopp iterations over the global batch; each of the V anchor views (masked and focal
    views) predicts it:

    .. math::
        p^+_n &= \mathrm{sinkhorn}\Big(\frac{p(z^+_n)^{1/T}}{\sum_k p(z^+_n)_k^{1/T}}\Big), \qquad
        \text{cross\_entropy} = \frac{1}{V N} \sum_{v, n} H\big(p^+_n, p(z_{vn})\big) \\
        \bar p &= \frac{1}{V N} \sum_{v, n} p(z_{vn}), \qquad
        \text{regularizer} = \begin{cases} \sum_k \bar p_k \log \bar p_k + \log K
            = \mathrm{KL}(\bar p \,\|\, U) & \text{uniform (MSN me-max)} \\
            \mathrm{KL}(\pi \,\|\, \bar p) = \sum_k \pi_k \log(\pi_k / \bar p_k)
            & \text{power\_law (PMSN)} \end{cases}

    Sharpening then Sinkhorn is computed as `ops.sinkhorn_knopp` of the log of the sharpened
    probabilities (log-domain, identical iteration to the official `distributed_sinkhorn`).
    The targets are under `jax.lax.stop_gradient` here, as the official `with torch.no_grad()`:
    neither `targets` nor `prototypes` receive gradient through the target branch (the prototypes
    are trained through the anchors only). The batch mean :math:`\bar p` is over the GLOBAL batch
    (the official `AllReduce` of the per-device mean), since under `jax.jit` the mean is global.

    PMSN has no released official code; its KL direction, :math:`\mathrm{KL}(\pi \| \bar p)`, follows
    lightly's `PMSNLoss` (`F.kl_div(input=log p_bar, target=prior, reduction="sum")`). Note that
    me-max is the other direction, :math:`\mathrm{KL}(\bar p \| U)`, as in the official MSN code.

    Args:
      anchors: (V * N, D) anchor projections, view-major (rows v*N .. v*N+N-1 are view v).
      targets: (N, D) target projections (the EMA target encoder's, on the unmasked view).
      prototypes: (K, D) prototype vectors (L2-normalised here).
      temperature: tau of the cosine softmax (0.1).
      sharpen_temperature: T of the target sharpening (0.25).
      sinkhorn_iterations: Sinkhorn-Knopp iterations on the targets (3; 0 turns balancing off).
      prior: "uniform" (MSN's me-max) or "power_law" (PMSN).
      power_law_exponent: PMSN's tau of :func:`power_law_prior` (0.25).

    Returns:
      {"cross_entropy", "regularizer", "entropy"}: float32 scalars; "entropy" is the mean entropy
      of the anchor predictions (the official `use_entropy` term, weight 0 by default).

    Example:
      >>> import jax.numpy as jnp
      >>> t = msn_terms(jnp.eye(2), jnp.eye(2), jnp.eye(2), sinkhorn_iterations=0)
      >>> round(float(t["regularizer"]), 6)  # mean prediction uniform: me-max is 0
      0.0

    References:
      Assran et al., Masked Siamese Networks for Label-Efficient Learning,
      https://arxiv.org/abs/2204.07141 ; facebookresearch/msn `src/losses.py` (`init_msn_loss`,
      `distributed_sinkhorn`); Assran et al., The Hidden Uniform Cluster Prior in Self-Supervised
      Learning, https://arxiv.org/abs/2210.07277 ; lightly `loss/pmsn_loss.py`.
    """
    if anchors.ndim != 2 or targets.ndim != 2 or prototypes.ndim != 2:
        raise ValueError(f"msn expects 2-D anchors, targets and prototypes, got {anchors.shape}, {targets.shape} "
                         f"and {prototypes.shape}.")
    if anchors.shape[0] % targets.shape[0] or anchors.shape[1] != targets.shape[1] != prototypes.shape[1]:
        raise ValueError(f"msn expects (V*N, D) anchors, (N, D) targets and (K, D) prototypes, got "
                         f"{anchors.shape}, {targets.shape} and {prototypes.shape}.")
    if prior not in MSN_PRIORS:
        raise ValueError(f"Unknown MSN prior {prior!r}; choose one of {MSN_PRIORS}.")
    if not (temperature > 0 and sharpen_temperature > 0):
        raise ValueError(f"temperatures must be > 0, got {temperature} and {sharpen_temperature}.")
    views = anchors.shape[0] // targets.shape[0]
    dtype = jnp.promote_types(jnp.result_type(anchors, targets, prototypes), jnp.float32)
    protos = ops.l2_normalize(prototypes.astype(dtype))
    log_p = jax.nn.log_softmax(ops.l2_normalize(anchors.astype(dtype)) @ protos.T / temperature, axis=-1)
    # Targets: softmax(s / tau) ** (1 / T), renormalised, is softmax(s / (tau T)).
    t_scores = ops.l2_normalize(targets.astype(dtype)) @ protos.T / temperature
    log_sharp = jax.nn.log_softmax(t_scores / sharpen_temperature, axis=-1)
    if sinkhorn_iterations > 0:
        target_p = ops.sinkhorn_knopp(log_sharp, epsilon=1.0, num_iters=sinkhorn_iterations)
    else:
        target_p = jnp.exp(log_sharp)
    # stop_gradient: the targets are constants (official `with torch.no_grad()`); the prototypes
    # and the target encoder get no gradient through this branch.
    target_p = jax.lax.stop_gradient(jnp.tile(target_p, (views, 1)))
    p = jnp.exp(log_p)
    cross_entropy = jnp.mean(-jnp.sum(target_p * log_p, axis=-1))
    p_bar = jnp.mean(p, axis=0)
    log_p_bar = jnp.log(p_bar)
    if prior == "uniform":
        regularizer = jnp.sum(p_bar * log_p_bar) + jnp.log(float(p_bar.shape[0]))
    else:
        pi = power_law_prior(p_bar.shape[0], power_law_exponent)
        regularizer = jnp.sum(pi * (jnp.log(pi) - log_p_bar))
    entropy = jnp.mean(-jnp.sum(p * log_p, axis=-1))
    return {"cross_entropy": cross_entropy, "regularizer": regularizer, "entropy": entropy}


def msn(anchors: jax.Array, targets: jax.Array, prototypes: jax.Array, *, regularization_weight: float = 1.0,
        entropy_weight: float = 0.0, **kw) -> jax.Array:
    r"""The MSN (`prior="uniform"`) or PMSN (`prior="power_law"`) objective, a batch-level scalar.

    .. math::
        \ell = \text{cross\_entropy} + \lambda\, \text{regularizer} + \eta\, \text{entropy}

    with the terms of :func:`msn_terms`; official MSN ViT-S/16 config: lambda = `memax_weight` 1,
    eta = `ent_weight` 0. Batch-level, not per example: the regulariser is a function of the
    batch-mean prediction.

    Args:
      anchors, targets, prototypes: see :func:`msn_terms`.
      regularization_weight: lambda (1).
      entropy_weight: eta (0).
      **kw: the keyword options of :func:`msn_terms`.

    Returns:
      float32 scalar.

    Example:
      >>> import jax.numpy as jnp
      >>> round(float(msn(jnp.eye(2), jnp.eye(2), jnp.eye(2), sinkhorn_iterations=0)), 4)
      0.0

    References:
      Assran et al., 2022, https://arxiv.org/abs/2204.07141 ; Assran et al., 2023,
      https://arxiv.org/abs/2210.07277.
    """
    t = msn_terms(anchors, targets, prototypes, **kw)
    return t["cross_entropy"] + regularization_weight * t["regularizer"] + entropy_weight * t["entropy"]
