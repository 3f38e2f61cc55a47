"""Contrastive (InfoNCE-family) losses."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxssl import ops


def _check_temperature(temperature) -> None:
    """Raise for a concrete temperature <= 0 (or NaN); a traced one (a schedule under jit) is not checked."""
    if isinstance(temperature, jax.core.Tracer):
        return
    if not float(temperature) > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")


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
    _check_temperature(temperature)
    n = z1.shape[0]
    u = ops.l2_normalize(jnp.concatenate([z1, z2], axis=0))
    logits = (u @ u.T) / temperature
    # An anchor is never its own negative: mask the diagonal out of the softmax.
    logits = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, logits)
    positive = jnp.concatenate([jnp.arange(n, 2 * n), jnp.arange(0, n)])
    log_prob = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(log_prob, positive[:, None], axis=-1)[:, 0]


DIRECTCLR_NEGATIVES = ("cross_view", "all")


def directclr(z1: jax.Array, z2: jax.Array, dim: int, *, temperature: float = 0.1,
              negatives: str = "cross_view") -> jax.Array:
    r"""DirectCLR: InfoNCE on the first `dim` coordinates of the representation, per example.

    DirectCLR (Jing et al., 2022, arXiv:2110.09348, Sec. 6): "we directly optimize the
    representation space without a trainable projector [...] only a subvector of the
    representation r[0:d0] is fed into the loss". With :math:`u = r_{[:d_0]} / \lVert r_{[:d_0]} \rVert`
    and the official `infoNCE` (facebookresearch/directclr `directclr/main.py`: logits
    `z1 @ z2.T / 0.1` against the gathered batch, symmetrised `infoNCE(z1, z2) / 2 + infoNCE(z2, z1) / 2`),

    .. math::
        \ell_n = \tfrac12 \Big( -\log \frac{e^{u_{1n} \cdot u_{2n} / \tau}}{\sum_m e^{u_{1n} \cdot u_{2m} / \tau}}
                 - \log \frac{e^{u_{2n} \cdot u_{1n} / \tau}}{\sum_m e^{u_{2n} \cdot u_{1m} / \tau}} \Big)

    (`negatives="cross_view"`, the N keys of the other view, as :func:`infonce` with no queue).
    `negatives="all"` is lightly's `DirectCLRLoss` (an `NTXentLoss`, :func:`nt_xent`: the 2N - 2
    other views, same-view ones included, returned per anchor as (2N,)); lightly also defaults to
    `loss_dim=64` and temperature 0.5 where the official code has `--dim 360` (ResNet-50) and 0.1.

    Args:
      z1: (N, F) representations (backbone outputs, no projector) of view 1; the GLOBAL batch.
      z2: (N, F) representations of view 2.
      dim: d0 <= F, the number of leading coordinates fed to the loss.
      temperature: tau (0.1, the official `infoNCE`).
      negatives: "cross_view" (official) or "all" (lightly).

    Returns:
      (N,) per-example losses ("cross_view"), or (2N,) per-anchor losses ("all"); the objective is
      their mean.

    Example:
      >>> import jax.numpy as jnp
      >>> z = jnp.array([[1.0, 0.0, 5.0], [0.0, 1.0, 5.0]])
      >>> [round(float(x), 4) for x in directclr(z, z, 2, temperature=1.0)]  # log(1 + 1/e)
      [0.3133, 0.3133]

    References:
      Jing, Vincent, LeCun, Tian, Understanding Dimensional Collapse in Contrastive Self-supervised
      Learning, https://arxiv.org/abs/2110.09348 ; lightly `loss/directclr_loss.py`.
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(f"directclr expects two (N, F) arrays of equal shape, got {z1.shape} and {z2.shape}.")
    if not 0 < dim <= z1.shape[1]:
        raise ValueError(f"directclr needs 0 < dim <= {z1.shape[1]} (the representation size), got {dim}.")
    if negatives not in DIRECTCLR_NEGATIVES:
        raise ValueError(f"Unknown negatives {negatives!r}; choose one of {DIRECTCLR_NEGATIVES}.")
    a, b = z1[:, :dim], z2[:, :dim]
    if negatives == "all":
        return nt_xent(a, b, temperature)
    return 0.5 * (infonce(a, b, temperature=temperature) + infonce(b, a, temperature=temperature))


def infonce(q: jax.Array, k: jax.Array, queue: jax.Array | None = None, temperature: float = 0.2) -> jax.Array:
    r"""InfoNCE of queries against their keys, per query; negatives from a queue or the other keys.

    MoCo (He et al., 2020, arXiv:1911.05722, Eq. 1): "a query q and a set of encoded samples
    {k_0, k_1, ...} that are the keys of a dictionary [...] a single key (denoted as k_+) in the
    dictionary that q matches". With u = q/||q||, v = k/||k||, n = queue/||queue|| (row-wise):

    * `queue` given (MoCo v1/v2): the positive is the query's own key and the K negatives are
      the queue's rows,

      .. math::
          \ell_i = -\log \frac{\exp(u_i \cdot v_i / \tau)}
                              {\exp(u_i \cdot v_i / \tau) + \sum_{j=1}^{K} \exp(u_i \cdot n_j / \tau)}

    * `queue=None` (MoCo v3, arXiv:2104.02057, Algorithm 1 `ctr`): the negatives are the other
      N - 1 keys of the batch, i.e. cross entropy of the logits `u @ v.T / tau` with label i,

      .. math::
          \ell_i = -\log \frac{\exp(u_i \cdot v_i / \tau)}{\sum_{j=1}^{N} \exp(u_i \cdot v_j / \tau)}

      Under `jax.jit` on arrays sharded over the mesh's data axis, `k` is the **global** batch:
      this is MoCo v3's `concat_all_gather(k)` with labels offset by the rank, with no code.

    MoCo v3 scales this loss by 2 tau; that factor belongs to the caller (`jaxssl.methods.moco_v3`).

    Args:
      q: (N, D) queries.
      k: (N, D) keys; row i is the positive of query i. Pass them through `jax.lax.stop_gradient`
        when they come from the momentum encoder.
      queue: optional (K, D) negative keys (normalised here, so unnormalised rows are fine).
      temperature: tau > 0 (MoCo v2: 0.2; MoCo v3: 1.0 for ResNet, 0.2 for ViT).

    Returns:
      (N,) per-query losses; the methods' objectives are their mean.

    Example:
      >>> import jax.numpy as jnp
      >>> q = jnp.eye(2)
      >>> float(infonce(q, q, temperature=1.0).mean())  # log(1 + 1/e)  # doctest: +ELLIPSIS
      0.313...

    References:
      He et al., Momentum Contrast for Unsupervised Visual Representation Learning,
      https://arxiv.org/abs/1911.05722 ; Chen et al., Improved Baselines with Momentum Contrastive
      Learning, https://arxiv.org/abs/2003.04297 ; Chen, Xie & He, An Empirical Study of Training
      Self-Supervised Vision Transformers, https://arxiv.org/abs/2104.02057 ; van den Oord et al.,
      2018, https://arxiv.org/abs/1807.03748.
    """
    if q.ndim != 2 or q.shape != k.shape:
        raise ValueError(f"infonce expects (N, D) queries and keys of equal shape, got {q.shape} and {k.shape}.")
    if queue is not None and (queue.ndim != 2 or queue.shape[1] != q.shape[1]):
        raise ValueError(f"infonce expects a (K, {q.shape[1]}) queue, got {queue.shape}.")
    _check_temperature(temperature)
    u, v = ops.l2_normalize(q), ops.l2_normalize(k)
    if queue is None:
        logits = (u @ v.T) / temperature
        labels = jnp.arange(q.shape[0])
    else:
        positive = jnp.sum(u * v, axis=-1, keepdims=True)
        logits = jnp.concatenate([positive, u @ ops.l2_normalize(queue).T], axis=-1) / temperature
        labels = jnp.zeros((q.shape[0],), jnp.int32)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def nearest_neighbour(z: jax.Array, support: jax.Array) -> jax.Array:
    r"""The row of `support` most cosine-similar to each row of `z`, as a constant (no gradient).

    NNCLR (Dwibedi et al., 2021, arXiv:2104.14548, Eq. 2): "NN(z, Q) = argmin_{q in Q} ||z - q||_2",
    with z and q L2-normalised, i.e. the support-set element of largest cosine similarity,

    .. math::
        \mathrm{NN}(z_i, Q) = q_{j^*}, \qquad j^* = \arg\max_j \frac{z_i \cdot q_j}{\lVert z_i \rVert \lVert q_j \rVert}

    The argmax has no gradient, and the support rows are state, not parameters: the result goes
    through `jax.lax.stop_gradient` so that no caller differentiates into the support set.

    Args:
      z: (N, D) queries (any scale).
      support: (K, D) support set Q (any scale; returned as stored).

    Returns:
      (N, D) rows of `support` (float32 or wider), without gradient.

    Example:
      >>> import jax.numpy as jnp
      >>> nearest_neighbour(jnp.array([[0., 2.]]), jnp.array([[1., 0.], [0., 5.]])).tolist()
      [[0.0, 5.0]]

    References:
      Dwibedi et al., With a Little Help from My Friends: Nearest-Neighbor Contrastive Learning of
      Visual Representations, https://arxiv.org/abs/2104.14548.
    """
    if z.ndim != 2 or support.ndim != 2 or support.shape[1] != z.shape[1]:
        raise ValueError(f"nearest_neighbour expects (N, D) queries and a (K, D) support set, got {z.shape} "
                         f"and {support.shape}.")
    support = jnp.asarray(support)
    index = jnp.argmax(ops.l2_normalize(z) @ ops.l2_normalize(support).T, axis=-1)
    return jax.lax.stop_gradient(support[index].astype(jnp.promote_types(support.dtype, jnp.float32)))


def nnclr(z: jax.Array, p: jax.Array, support: jax.Array, temperature: float = 0.1) -> jax.Array:
    r"""NNCLR's loss, per example: the nearest support-set neighbour of z_i must pick out p_i^+.

    NNCLR (Dwibedi et al., 2021, arXiv:2104.14548, Eq. 2, with the prediction head of Sec. 3.2
    on the positive side): with u = NN(z_i, Q)/||.|| (:func:`nearest_neighbour`, no gradient) and
    v = p/||p|| the predictions of the OTHER view,

    .. math::
        \ell_i = -\log \frac{\exp(u_i \cdot v_i / \tau)}{\sum_{k=1}^{N} \exp(u_i \cdot v_k / \tau)}

    The negatives are the other N - 1 predictions of the batch (the global batch under `jax.jit`),
    as in the paper's Eq. 2 and solo-learn's `nnclr_loss_func`: this is
    `infonce(NN(z, Q), p)` without a queue. lightly 1.6's NNCLR recipe instead feeds
    (NN(z), p) to `NTXentLoss`, whose denominator also holds the 2N - 2 same-side pairs (the
    SimCLR form, `jaxssl.losses.nt_xent`): a different number, documented by the parity test.

    Args:
      z: (N, D) projections of one view, whose neighbours are looked up.
      p: (N, D) predictions of the other view (row i is the positive of z's row i); differentiated.
      support: (K, D) support set Q (NNCLR keeps embeddings of earlier batches in a queue).
      temperature: tau > 0 (0.1, NNCLR Sec. 4.1).

    Returns:
      (N,) per-example losses; NNCLR's objective is the mean of this loss for (z1, p2) and (z2, p1).

    Example:
      >>> import jax.numpy as jnp
      >>> z = jnp.eye(2)
      >>> float(nnclr(z, z, support=z, temperature=1.0).mean())  # log(1 + 1/e)  # doctest: +ELLIPSIS
      0.313...

    References:
      Dwibedi et al., https://arxiv.org/abs/2104.14548 ; vturrisi/solo-learn
      `solo/losses/nnclr.py` (`nnclr_loss_func`).
    """
    return infonce(nearest_neighbour(z, support), p, None, temperature)


def dcl(z1: jax.Array, z2: jax.Array, temperature: float = 0.1, *, weighted: bool = False,
        sigma: float = 0.5) -> jax.Array:
    r"""Decoupled contrastive loss (DCL) and its weighted form (DCLW), per anchor, over the 2N views.

    DCL (Yeh et al., 2022, arXiv:2110.06848, Eq. 6) removes the positive pair from the InfoNCE
    denominator: "the negative-positive-coupling (NPC) effect [...] we remove the positive pair
    from the denominator". With u = z/||z||, s_ij = u_i . u_j / tau over the 2N stacked views and
    p(i) the other view of the same image,

    .. math::
        \ell_i = -w_i\, s_{i,p(i)} + \log \sum_{k \notin \{i, p(i)\}} \exp(s_{ik})

    DCL has w_i = 1. DCLW weights the positive term with the negative von Mises-Fisher weight
    (Eq. 7), computed within each view over the batch,

    .. math::
        w_i = 2 - \frac{\exp(u_i \cdot u_{p(i)} / \sigma)}{\frac{1}{N}\sum_{n=1}^{N} \exp(u_n \cdot u_{p(n)} / \sigma)}

    so that both views of a pair get the same weight. The weight scales the positive term and is
    not itself optimised: it is a constant (`jax.lax.stop_gradient`), as in lightly 1.6
    (`negative_mises_fisher_weights` on detached inputs); raminnakhli's reimplementation, which
    lightly cites, differentiates it (the authors released no code).

    Args:
      z1: (N, D) embeddings of the first view (the global batch under `jax.jit`).
      z2: (N, D) embeddings of the second view (row i is the positive of z1's row i).
      temperature: tau > 0 (0.1, lightly's default; the paper reports DCL less sensitive to it than InfoNCE).
      weighted: False for DCL, True for DCLW.
      sigma: sigma > 0 of the DCLW weight (0.5, the paper's Sec. 4.3 and lightly).

    Returns:
      (2N,) per-anchor losses: rows 0..N-1 anchor on view 1, rows N..2N-1 on view 2. The mean is
      lightly's `DCLLoss` / `DCLWLoss` (its 0.5 (loss(z1, z2) + loss(z2, z1))).

    Example:
      >>> import jax.numpy as jnp
      >>> z = jnp.eye(2)
      >>> round(float(dcl(z, z, temperature=1.0).mean()), 4)  # -1 + log(2)
      -0.3069

    References:
      Yeh et al., Decoupled Contrastive Learning, https://arxiv.org/abs/2110.06848 ;
      lightly-ai/lightly `lightly/loss/dcl_loss.py`.
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(f"dcl expects two (N, D) arrays of equal shape, got {z1.shape} and {z2.shape}.")
    _check_temperature(temperature)
    _check_temperature(sigma)
    n = z1.shape[0]
    z = jnp.concatenate([z1, z2], axis=0)
    u = ops.l2_normalize(z.astype(jnp.promote_types(z.dtype, jnp.float32)))
    logits = (u @ u.T) / temperature
    positive = jnp.concatenate([jnp.arange(n, 2 * n), jnp.arange(0, n)])
    pos_logit = jnp.take_along_axis(logits, positive[:, None], axis=-1)[:, 0]
    # Decoupling: neither the anchor itself nor its positive is in the denominator.
    excluded = jnp.eye(2 * n, dtype=bool) | (jnp.arange(2 * n)[None, :] == positive[:, None])
    negative = jax.nn.logsumexp(jnp.where(excluded, -jnp.inf, logits), axis=-1)
    weight = 1.0
    if weighted:
        cos = jax.lax.stop_gradient(jnp.sum(u[:n] * u[n:], axis=-1))
        w = 2.0 - n * jax.nn.softmax(cos / sigma)
        weight = jnp.concatenate([w, w])
    return -weight * pos_logit + negative
