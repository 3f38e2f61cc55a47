"""Training-time collapse monitors: cheap, jittable statistics logged from inside the train step.

Every function takes global arrays (under ``jit`` the reductions cover the whole batch
on all devices, no ``axis_name``), computes in float32 and returns scalars (or a dict
of scalars). They are monitors, not objectives: inputs pass through
``jax.lax.stop_gradient``, so putting them in a loss's aux output is always safe (the
SVD in ``effective_rank`` has undefined gradients at repeated singular values).
``monitors(z)`` gives the method-independent ones (RankMe, feature std) of frozen features, as
host floats, for the trainer's and the probe tool's evaluations.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxssl import losses, ops


def _as_rows(z: jax.Array) -> jax.Array:
    """(..., D) -> (N, D) float32 with no gradient."""
    z = jax.lax.stop_gradient(jnp.asarray(z)).astype(jnp.float32)
    return z.reshape(-1, z.shape[-1])


def _log_softmax(logits: jax.Array, temperature: float) -> jax.Array:
    logits = jax.lax.stop_gradient(jnp.asarray(logits)).astype(jnp.float32)
    return jax.nn.log_softmax(logits / temperature, axis=-1)


def _entropy_of_log_probs(log_p: jax.Array) -> jax.Array:
    """-sum_k p_k log p_k over the last axis, with 0 log 0 = 0 (log p = -inf allowed)."""
    p = jnp.exp(log_p)
    return -jnp.sum(jnp.where(p > 0, p * log_p, 0.0), axis=-1)


def feature_std(z: jax.Array, eps: float = 1e-12) -> jax.Array:
    """Mean per-dimension standard deviation of L2-normalised embeddings.

    .. math::

        \\bar z_n = z_n / \\lVert z_n \\rVert_2, \\qquad
        \\mathrm{std} = \\frac{1}{D} \\sum_{d=1}^{D}
            \\sqrt{\\frac{1}{N} \\sum_{n=1}^{N} (\\bar z_{nd} - \\mu_d)^2}

    SimSiam (Chen & He, 2021, Sec. 4.1) monitors this: outputs collapsed to a constant
    vector have zero std in every channel, while for a zero-mean isotropic Gaussian z
    each channel of z/||z||_2 has std close to 1/sqrt(d).

    Args:
        z: (N, D) embeddings (or (..., D), flattened to rows).
        eps: floor of the norm, so zero rows stay zero.

    Returns:
        float32 scalar: 0 under complete collapse, about 1/sqrt(D) when healthy.

    Example:
        >>> float(feature_std(jnp.ones((4, 3))))
        0.0

    References:
        Chen & He, 2021, https://arxiv.org/abs/2011.10566.
    """
    z = _as_rows(z)
    z = ops.l2_normalize(z, eps=eps)
    return jnp.mean(jnp.std(z, axis=0))


def effective_rank(z: jax.Array, eps: float = 1e-7) -> jax.Array:
    """RankMe: exp of the entropy of the normalised singular values of the embeddings.

    .. math::

        p_k = \\frac{\\sigma_k(Z)}{\\lVert \\sigma(Z) \\rVert_1} + \\epsilon, \\qquad
        \\mathrm{RankMe}(Z) = \\exp\\Big(-\\sum_{k=1}^{\\min(N, D)} p_k \\log p_k\\Big)

    Garrido et al. (2023): a smooth rank between 1 (all rows equal up to scale) and
    min(N, D) (all singular values equal). Z is not centred, as in the paper.

    Args:
        z: (N, D) embeddings (or (..., D), flattened to rows); N >= D gives a reliable
            estimate.
        eps: the paper's epsilon, avoiding log 0.

    Returns:
        float32 scalar in about [1, min(N, D)]; an all-zero Z gives about 1.

    Example:
        >>> round(float(effective_rank(jnp.eye(4))), 3)
        4.0

    References:
        Garrido et al., 2023, https://arxiv.org/abs/2210.02885.
    """
    sigma = jnp.linalg.svd(_as_rows(z), compute_uv=False)
    p = sigma / jnp.maximum(jnp.sum(sigma), jnp.finfo(jnp.float32).tiny) + eps
    return jnp.exp(-jnp.sum(p * jnp.log(p)))


def entropy(logits: jax.Array, *, temperature: float = 1.0) -> jax.Array:
    """Mean entropy of softmax(logits / T) over the batch.

    .. math::

        H = \\frac{1}{N} \\sum_{n} -\\sum_{k} p_{nk} \\log p_{nk}, \\qquad
        p_n = \\mathrm{softmax}(\\ell_n / T)

    For DINO (Caron et al., 2021, Sec. 5.3) pass the centred teacher logits and the
    teacher temperature: entropy near log K with small KL to the student means
    collapse to the uniform distribution, entropy near 0 collapse to one dimension.
    Probabilities go in as ``jnp.log(probs)`` (zeros are fine: 0 log 0 = 0).

    Args:
        logits: (..., K) logits; every leading index is one sample.
        temperature: T > 0.

    Returns:
        float32 scalar in [0, log K].

    Example:
        >>> round(float(entropy(jnp.zeros((2, 4)))), 4)  # log 4
        1.3863

    References:
        Caron et al., 2021, https://arxiv.org/abs/2104.14294.
    """
    return jnp.mean(_entropy_of_log_probs(_log_softmax(logits, temperature)))


def kl_divergence(
    p_logits: jax.Array,
    q_logits: jax.Array,
    *,
    p_temperature: float = 1.0,
    q_temperature: float = 1.0,
) -> jax.Array:
    """Mean KL(p || q) of two categorical distributions given by logits.

    .. math::

        \\mathrm{KL} = \\frac{1}{N} \\sum_n \\sum_k p_{nk} (\\log p_{nk} - \\log q_{nk}),
        \\quad p_n = \\mathrm{softmax}(a_n / T_p),\\; q_n = \\mathrm{softmax}(b_n / T_q)

    In DINO (Sec. 5.3, Fig. 7) KL(teacher || student) going to 0 signals collapse.

    Args:
        p_logits: (..., K) logits of p (e.g. the teacher).
        q_logits: (..., K) logits of q (e.g. the student), same shape.
        p_temperature: T_p > 0.
        q_temperature: T_q > 0.

    Returns:
        float32 scalar >= 0.

    Example:
        >>> float(kl_divergence(jnp.zeros((2, 3)), jnp.zeros((2, 3))))
        0.0

    References:
        Caron et al., 2021, https://arxiv.org/abs/2104.14294.
    """
    log_p = _log_softmax(p_logits, p_temperature)
    log_q = _log_softmax(q_logits, q_temperature)
    p = jnp.exp(log_p)
    kl = jnp.sum(jnp.where(p > 0, p * (log_p - log_q), 0.0), axis=-1)
    return jnp.mean(kl)


def prototype_usage(
    scores: jax.Array, *, from_logits: bool = True, temperature: float = 1.0
) -> dict[str, jax.Array]:
    """How many prototypes the batch uses, for SwAV-style clustering heads.

    .. math::

        \\mathrm{usage} = \\frac{1}{K} \\big|\\{\\arg\\max_k s_{nk} : n\\}\\big|, \\qquad
        \\mathrm{entropy} = -\\sum_k \\bar q_k \\log \\bar q_k, \\quad
        \\bar q = \\frac{1}{N} \\sum_n q_n

    with :math:`q_n = \\mathrm{softmax}(s_n / T)` for logits, or :math:`q_n = s_n` for
    assignments (e.g. the Sinkhorn codes of SwAV, Caron et al., 2020, whose
    equipartition constraint aims at the maximum log K). A collapsed head uses
    one prototype: usage 1/K, entropy 0.

    Args:
        scores: (..., K) prototype logits, or assignments whose rows sum to 1.
        from_logits: whether ``scores`` are logits (softmax applied) or assignments.
        temperature: T > 0 of the softmax (ignored for assignments).

    Returns:
        ``{"usage": fraction of the K prototypes that are the argmax of at least one
        sample, in [1/K, 1], "entropy": entropy of the mean assignment, in [0, log K]}``,
        float32 scalars.

    Example:
        >>> out = prototype_usage(jnp.eye(4)[jnp.array([0, 0, 1])], from_logits=False)
        >>> float(out["usage"])
        0.5

    References:
        Caron et al., 2020, https://arxiv.org/abs/2006.09882.
    """
    s = _as_rows(scores)
    num_prototypes = s.shape[-1]
    used = jnp.zeros((num_prototypes,), jnp.float32).at[jnp.argmax(s, axis=-1)].max(1.0)
    if from_logits:
        q = jax.nn.softmax(s / temperature, axis=-1)
    else:
        q = s
    mean_q = jnp.mean(q, axis=0)
    mean_q = jnp.where(mean_q > 0, mean_q, 0.0)
    safe_log = jnp.log(jnp.where(mean_q > 0, mean_q, 1.0))
    return {"usage": jnp.mean(used), "entropy": -jnp.sum(mean_q * safe_log)}


def alignment_uniformity(z1: jax.Array, z2: jax.Array, *, alpha: float = 2.0, t: float = 2.0) -> dict[str, jax.Array]:
    """Wang & Isola's alignment of positive pairs and uniformity of the batch, as monitors.

    .. math::

        \\mathrm{align} = \\frac{1}{N} \\sum_n \\lVert u_{1n} - u_{2n} \\rVert^{\\alpha}, \\qquad
        \\mathrm{uniform} = \\log \\frac{2}{N(N-1)} \\sum_{i<j} e^{-t \\lVert u_{1i} - u_{1j} \\rVert^2}

    with u = z / ||z|| (`jaxssl.losses.alignment` and `jaxssl.losses.uniformity` on inputs without
    gradient). Any two-view method can log them: collapse shows as align -> 0 with uniform -> 0;
    healthy contrastive training lowers both (Wang & Isola, 2020, Sec. 5, Fig. 5).

    Args:
        z1: (N, D) embeddings of view 1 (the global batch).
        z2: (N, D) embeddings of view 2 (row n the positive of z1's row n).
        alpha: alignment exponent (2, the paper's).
        t: uniformity scale (2, the paper's).

    Returns:
        ``{"align": float32 in [0, 2^alpha], "uniform": float32 in [-4t, 0]}``.

    Example:
        >>> m = alignment_uniformity(jnp.ones((4, 3)), jnp.ones((4, 3)))
        >>> float(m["align"]), round(abs(float(m["uniform"])), 4)  # collapsed: both 0
        (0.0, 0.0)

    References:
        Wang & Isola, 2020, https://arxiv.org/abs/2005.10242.
    """
    z1, z2 = _as_rows(z1), _as_rows(z2)
    return {"align": jnp.mean(losses.alignment(z1, z2, alpha)), "uniform": losses.uniformity(z1, t)}


def monitors(z: jax.Array) -> dict[str, float]:
    """The method-independent collapse monitors of a feature matrix, as host floats.

    ``{"rankme": effective_rank(z), "feature_std": feature_std(z)}``: what the trainer logs for
    every method at each kNN evaluation (backbone features of the test split), so runs of
    different methods can be compared on the same scale.

    Args:
        z: (N, D) features (N >= D for a reliable RankMe).

    Returns:
        dict of Python floats.

    Example:
        >>> m = monitors(jnp.eye(4)); round(m["rankme"], 3)
        4.0
    """
    z = jnp.asarray(z, jnp.float32)
    return {"rankme": float(effective_rank(z)), "feature_std": float(feature_std(z))}
