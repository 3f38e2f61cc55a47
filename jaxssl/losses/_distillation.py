"""Self-distillation losses: DINO, iBOT's masked patch loss, KoLeo, and the DINO centre."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxssl import ops


def centered_softmax(teacher_logits: jax.Array, center: jax.Array, temperature) -> jax.Array:
    r"""DINO's teacher targets: centring then sharpening, :math:`\mathrm{softmax}((g_t - c) / \tau_t)`.

    DINO (arXiv:2104.14294, Sec. 3.2): "the centering operation only depends on first-order batch
    statistics and can be interpreted as adding a bias term c to the teacher", and sharpening is a
    low teacher temperature. The alternative centring of DINOv2 is `ops.sinkhorn_knopp(logits,
    epsilon=temperature)`.

    Args:
      teacher_logits: (..., K) teacher outputs.
      center: (K,) running centre (see `update_center`).
      temperature: teacher temperature tau_t > 0 (may be a traced scalar from a schedule).

    Returns:
      (..., K) float32 probabilities.
    """
    logits = (teacher_logits.astype(jnp.float32) - center.astype(jnp.float32)) / temperature
    return jax.nn.softmax(logits, axis=-1)


def dino(student_logits: jax.Array, teacher_probs: jax.Array, *, student_temperature: float = 0.1) -> jax.Array:
    r"""DINO multi-crop self-distillation cross entropy, per example.

    DINO (Caron et al., 2021, arXiv:2104.14294, Eq. 3): "we minimize
    :math:`\sum_{x \in \{x_1^g, x_2^g\}} \sum_{x' \in V, x' \ne x} H(P_t(x), P_s(x'))`", with
    :math:`H(a, b) = -a \log b`, the teacher seeing the global views only and the student all
    views. With T teacher views (student views 0..T-1 are the same crops) and V student views,

    .. math::
        \ell_n = \frac{1}{|\mathcal P|} \sum_{(t, v) \in \mathcal P}
            -\sum_k P_t(x_{t n})_k \log \mathrm{softmax}(s_{v n} / \tau_s)_k,
        \quad \mathcal P = \{(t, v) : t < T,\ v < V,\ v \ne t\},

    the mean over pairs used by the official `DINOLoss` (`total_loss /= n_loss_terms`). The
    targets are `centered_softmax(teacher_logits, center, tau_t)` (DINO) or Sinkhorn-Knopp codes
    (DINOv2); they must carry no gradient (the caller applies `stop_gradient`).

    Args:
      student_logits: (V, B, K) student head outputs for every view (globals first).
      teacher_probs: (T, B, K) teacher target probabilities for the first T views, T <= V.
      student_temperature: tau_s > 0 (0.1).

    Returns:
      (B,) float32 per-example losses.

    Example:
      >>> s = jnp.zeros((2, 1, 4)); t = jnp.full((2, 1, 4), 0.25)
      >>> round(float(dino(s, t)[0]), 4)  # log 4
      1.3863

    References:
      Caron et al., Emerging Properties in Self-Supervised Vision Transformers,
      https://arxiv.org/abs/2104.14294 .
    """
    if not student_temperature > 0:
        raise ValueError(f"student_temperature must be > 0, got {student_temperature}.")
    if teacher_probs.shape[0] > student_logits.shape[0]:
        raise ValueError(f"More teacher views ({teacher_probs.shape[0]}) than student views "
                         f"({student_logits.shape[0]}).")
    return ops.cross_view_cross_entropy(student_logits, teacher_probs, range(teacher_probs.shape[0]),
                                        student_temperature)


def ibot_patch(student_patch_logits: jax.Array, teacher_patch_probs: jax.Array, mask: jax.Array, *,
               student_temperature: float = 0.1) -> jax.Array:
    r"""iBOT masked image modelling loss: distil the teacher's patch tokens into masked student tokens.

    iBOT (Zhou et al., 2022, arXiv:2111.07832, Eq. 2): "
    :math:`\mathcal L_{MIM} = -\sum_{i=1}^N m_i \cdot P_\theta^{patch}(u_i)^T \log P_\theta^{patch}(\hat u_i)`"
    where the student sees the masked view :math:`\hat u` and the online tokenizer (teacher) the
    unmasked one. Per image, as the official loss, averaged over its masked patches:

    .. math::
        \ell_n = \frac{\sum_i m_{ni} \left(-\sum_k t_{nik} \log \mathrm{softmax}(s_{ni} / \tau_s)_k\right)}
                 {\max(\sum_i m_{ni}, 1)}

    Args:
      student_patch_logits: (B, N, K) student head outputs of the patch tokens of the masked view.
      teacher_patch_probs: (B, N, K) teacher targets for the same view, unmasked (centred and
        sharpened, or Sinkhorn codes), without gradient.
      mask: (B, N) bool, True where the student's patch was masked.
      student_temperature: tau_s > 0 (0.1).

    Returns:
      (B,) float32 per-image losses (0 for an image without masked patches).

    References:
      Zhou et al., iBOT: Image BERT Pre-Training with Online Tokenizer, https://arxiv.org/abs/2111.07832 .
    """
    if student_patch_logits.shape != teacher_patch_probs.shape or mask.shape != student_patch_logits.shape[:2]:
        raise ValueError(f"expected (B, N, K) logits and targets and a (B, N) mask, got "
                         f"{student_patch_logits.shape}, {teacher_patch_probs.shape} and {mask.shape}.")
    log_p = jax.nn.log_softmax(student_patch_logits.astype(jnp.float32) / student_temperature, axis=-1)
    ce = -jnp.sum(teacher_patch_probs.astype(jnp.float32) * log_p, axis=-1)  # (B, N)
    m = mask.astype(jnp.float32)
    return jnp.sum(ce * m, axis=-1) / jnp.maximum(jnp.sum(m, axis=-1), 1.0)


def koleo(x: jax.Array, eps: float = 1e-8) -> jax.Array:
    r"""KoLeo regulariser: spread features by pushing each away from its nearest neighbour.

    DINOv2 (Oquab et al., 2023, arXiv:2304.07193, Sec. 4): "
    :math:`\mathcal L_{koleo} = -\frac1n \sum_{i=1}^n \log(d_{n,i})`, where
    :math:`d_{n,i} = \min_{j \ne i} \lVert x_i - x_j \rVert` [...] We also l2-normalize the
    features before computing this regularizer" (Sablayrolles et al., 2019). As the official
    `KoLeoLoss`, the neighbour is the most cosine-similar other row:

    .. math::
        \ell_i = -\log\left(\lVert \hat x_i - \hat x_{j^*(i)} \rVert_2 + \epsilon\right), \quad
        j^*(i) = \arg\max_{j \ne i} \hat x_i^\top \hat x_j

    The neighbours are searched in the batch given: under `jax.jit` on sharded arrays that is the
    global batch. DINOv2 searches each device's batch (facebookresearch/dinov2
    dinov2/train/ssl_meta_arch.py: `self.koleo_loss(p)` on each GPU's own student CLS tokens, no
    gather; dinov2/loss/koleo_loss.py): use `koleo_per_device` for that.

    Args:
      x: (B, D) features (DINOv2: the student's backbone CLS tokens of one global crop), B >= 2.
      eps: keeps the log finite for duplicate rows.

    Returns:
      (B,) float32 per-example terms; their mean is the regulariser (weight 0.1 in DINOv2).

    References:
      Oquab et al., DINOv2, https://arxiv.org/abs/2304.07193 ; Sablayrolles et al., Spreading
      vectors for similarity search, https://arxiv.org/abs/1806.03198 .
    """
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"koleo expects (B, D) features with B >= 2, got {x.shape}.")
    u = ops.l2_normalize(x)
    sim = u @ u.T
    # The neighbour search is a discrete choice; the loss is differentiated through the distance.
    sim = jnp.where(jnp.eye(x.shape[0], dtype=bool), -jnp.inf, jax.lax.stop_gradient(sim))
    nearest = u[jnp.argmax(sim, axis=1)]
    dist = jnp.sqrt(jnp.sum(jnp.square(u - nearest), axis=-1) + eps * eps)
    return -jnp.log(dist + eps)


def koleo_per_device(x: jax.Array, eps: float = 1e-8) -> jax.Array:
    r"""KoLeo with each example's neighbour searched among its own device's rows (DINOv2's form).

    `koleo` within each device's shard (`ops.per_device`: `jax.shard_map` over the train step's
    batch axes; the whole batch when there is one device or no mesh). What changes against the
    global form: the nearest neighbour is the nearest among B / n_devices rows, farther on average,
    so -log d is smaller and its gradient weaker, and the regulariser changes with the per-device
    batch (a weight tuned at one per-device batch size is a different regulariser at another),
    exactly as in the reference. The mean of the returned terms is the mean over devices of each
    device's KoLeo loss (equal shards).

    Args:
      x: (B, D) features, sharded over the batch; each device holds >= 2 rows.
      eps: as `koleo`.

    Returns:
      (B,) float32 per-example terms.
    """
    return ops.per_device(lambda local: koleo(local, eps), x)


def update_center(center: jax.Array, teacher_logits: jax.Array, momentum: float = 0.9) -> jax.Array:
    r"""The EMA centre of the teacher outputs, from the mean over the whole (global) batch.

    DINO (arXiv:2104.14294, Eq. 4): ":math:`c \leftarrow m c + (1 - m) \frac1B \sum_{i=1}^B g_{\theta_t}(x_i)`";
    the official `update_center` all-reduces the sum over devices and divides by the global
    number of rows. Here the mean is over every leading index of `teacher_logits` (all global views
    of the batch; or all patch tokens for iBOT's patch centre); under `jax.jit` on arrays sharded
    over the mesh it is the global batch, whatever the device count (tested 8 vs 1 device).

    Args:
      center: (K,) current centre.
      teacher_logits: (..., K) teacher outputs of this step (gradient stopped inside: the centre
        is a statistic, not a function of the parameters to differentiate).
      momentum: m in [0, 1] (0.9).

    Returns:
      (K,) float32 new centre.
    """
    rows = jax.lax.stop_gradient(teacher_logits).astype(jnp.float32).reshape(-1, teacher_logits.shape[-1])
    return momentum * center.astype(jnp.float32) + (1.0 - momentum) * jnp.mean(rows, axis=0)
