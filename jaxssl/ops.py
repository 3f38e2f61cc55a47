"""Jit-safe numerics shared by several losses and methods.

Everything here is a pure function of arrays; statistics are taken over the axis the caller
passes in. Under `jax.jit` on globally sharded arrays, "the batch" is the global batch.
"""
from __future__ import annotations

import contextlib
import contextvars

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

# The mesh the train step is being traced for (`jaxssl.train.step.make_train_step` sets it), so a
# loss whose reference is per device (`per_device`) can shard_map over its batch axes.
_MESH: contextvars.ContextVar = contextvars.ContextVar("jaxssl_mesh", default=None)
BATCH_AXES = ("data", "fsdp")


@contextlib.contextmanager
def step_mesh(mesh):
    """Within this block, `per_device` splits the batch over `mesh`'s batch axes ("data", "fsdp")."""
    token = _MESH.set(mesh)
    try:
        yield mesh
    finally:
        _MESH.reset(token)


def per_device(fn, x: jax.Array) -> jax.Array:
    """`fn` applied to each device's rows of `x` (B, ...) -> (B, ...) per-example values.

    Under `step_mesh(mesh)` (the train step) this is `jax.shard_map` over the mesh's batch axes:
    row i of the result depends on the rows of x on i's device only, as in a per-GPU PyTorch
    loss. Without a mesh (1 device, or a direct call) it is `fn(x)`: the whole batch is one device's.
    """
    mesh = _MESH.get()
    axes = tuple(a for a in getattr(mesh, "axis_names", ()) if a in BATCH_AXES)
    if mesh is None or not axes or all(mesh.shape[a] == 1 for a in axes):
        return fn(x)
    spec = P(axes)
    return jax.shard_map(fn, mesh=mesh, in_specs=spec, out_specs=spec)(x)


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
    sq = jnp.sum(x * x, axis=axis, keepdims=True)
    # Guarded sqrt: at an all-zero row sqrt'(0) = inf would turn the gradient into NaN (0 * inf).
    big = sq > eps * eps
    norm = jnp.where(big, jnp.sqrt(jnp.where(big, sq, 1.0)), eps)
    return x / norm


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


_LOG_ZERO = -1e30  # log of an exact zero in float32 (exp underflows to 0).


def _batch_logsumexp(x: jax.Array, axis_name: str | None) -> jax.Array:
    """log sum_n exp(x_nk) over axis 0 (and over devices when `axis_name` is given), keepdims."""
    if axis_name is None:
        return jax.nn.logsumexp(x, axis=0, keepdims=True)
    # The shift only guards exp against overflow; it cancels exactly, so no gradient flows into it.
    m = jax.lax.stop_gradient(jax.lax.pmax(jnp.max(x, axis=0, keepdims=True), axis_name))
    return m + jnp.log(jax.lax.psum(jnp.sum(jnp.exp(x - m), axis=0, keepdims=True), axis_name))


def sinkhorn_knopp(scores: jax.Array, *, epsilon: float = 0.05, num_iters: int = 3,
                   valid: jax.Array | None = None, axis_name: str | None = None) -> jax.Array:
    r"""Equipartitioned soft assignments of B samples to K prototypes (Sinkhorn-Knopp).

    SwAV (Caron et al., 2020, arXiv:2006.09882, Sec. 3.1, Eq. 3): the codes maximise
    :math:`\mathrm{Tr}(Q^\top C^\top Z) + \epsilon H(Q)` over the transportation polytope where
    every prototype receives 1/K of the mass and every sample 1/B, giving
    :math:`Q^* = \mathrm{Diag}(u) \exp(C^\top Z / \epsilon) \mathrm{Diag}(v)`. Starting from
    :math:`P_{nk} = \exp(s_{nk} / \epsilon)`, each of the `num_iters` iterations
    (the official `distributed_sinkhorn`) rescales

    .. math::
        P_{nk} \leftarrow \frac{P_{nk}}{K \sum_{n'} P_{n'k}} \quad (\text{prototype mass } 1/K), \qquad
        P_{nk} \leftarrow \frac{P_{nk}}{B \sum_{k'} P_{nk'}} \quad (\text{sample mass } 1/B),

    and returns :math:`B P` (each sample's code sums to one). DINOv2 (arXiv:2304.07193) uses the
    same iteration with :math:`\epsilon` = the teacher temperature to centre teacher outputs.

    The sums over samples are over the **global** batch: with `axis_name=None` (the default, for
    `jax.jit` on global arrays sharded over the mesh) XLA all-reduces the column sums exactly as
    the reference's `dist.all_reduce`. Inside `shard_map`, pass the mesh axis as `axis_name` and
    the column sums and B are `psum`-med over it; both give the same codes (tested 8 vs 1 device).
    The iteration runs in the log domain (mathematically identical; no overflow of
    `exp(s / epsilon)` for large logits). No gradient is stopped here: the callers use the codes as
    targets under `stop_gradient`.

    Args:
      scores: (B, K) sample-prototype scores (SwAV: cosine similarities; DINOv2: teacher logits).
      epsilon: entropic regularisation (0.05 in SwAV); may be traced (a temperature schedule).
      num_iters: Sinkhorn iterations (3 in SwAV and DINOv2).
      valid: optional (B,) bool; rows marked False take no part (B counts the valid rows) and get
        all-zero codes. DINOv2 balances only the masked patch tokens this way.
      axis_name: the mapped mesh axis when called inside `shard_map`; None under plain `jit`.

    Returns:
      (B, K) float32 codes, rows summing to one (zero rows where not `valid`).

    Example:
      >>> q = sinkhorn_knopp(jnp.zeros((4, 2)))
      >>> q.tolist()
      [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]

    References:
      Caron et al., Unsupervised Learning of Visual Features by Contrasting Cluster Assignments,
      https://arxiv.org/abs/2006.09882 ; Cuturi, 2013, https://arxiv.org/abs/1306.0895 .
    """
    if scores.ndim != 2:
        raise ValueError(f"sinkhorn_knopp expects (B, K) scores, got shape {scores.shape}.")
    if (isinstance(epsilon, (int, float)) and not epsilon > 0) or num_iters < 1:
        raise ValueError(f"need epsilon > 0 and num_iters >= 1, got {epsilon} and {num_iters}.")
    k = scores.shape[1]
    log_p = scores.astype(jnp.float32) / epsilon
    if valid is None:
        b = jnp.asarray(scores.shape[0], jnp.float32)
        valid = jnp.ones(scores.shape[:1], bool)
    else:
        b = jnp.sum(valid.astype(jnp.float32))
        # A finite floor instead of -inf: exp gives exact zeros and no inf - inf reaches a gradient.
        log_p = jnp.where(valid[:, None], log_p, _LOG_ZERO)
    if axis_name is not None:
        b = jax.lax.psum(b, axis_name)
    # (The reference first divides P by its total; every iteration starts with a normalisation
    # that removes any global factor, so that step does not change the result and is left out.)
    def iteration(_, log_p):
        log_p = log_p - _batch_logsumexp(log_p, axis_name) - jnp.log(k)
        row = jax.nn.logsumexp(log_p, axis=1, keepdims=True)
        return jnp.where(valid[:, None], log_p - row - jnp.log(jnp.maximum(b, 1.0)), _LOG_ZERO)

    return jnp.exp(jax.lax.fori_loop(0, num_iters, iteration, log_p)) * b


def cross_view_cross_entropy(student_logits: jax.Array, targets: jax.Array, target_views,
                             temperature: float) -> jax.Array:
    r"""Mean cross entropy between target distributions and the student's other views.

    The swapped-prediction / multi-crop distillation sum shared by SwAV and DINO: targets of view
    `target_views[a]` supervise every student view `v != target_views[a]`,

    .. math::
        \ell_n = \frac{1}{|\mathcal P|} \sum_{(a, v) \in \mathcal P}
            -\sum_k t_{a n k} \log \mathrm{softmax}(s_{v n} / \tau)_k, \quad
        \mathcal P = \{(a, v) : v \ne \mathrm{target\_views}[a]\}.

    Args:
      student_logits: (V, B, K) student logits of all views.
      targets: (A, B, K) target probabilities (rows sum to one).
      target_views: length-A sequence: the student view index each target comes from.
      temperature: student temperature tau > 0.

    Returns:
      (B,) float32 per-example losses (the mean over the pairs).
    """
    target_views = tuple(int(t) for t in target_views)
    if student_logits.ndim != 3 or targets.ndim != 3 or targets.shape[0] != len(target_views):
        raise ValueError(f"expected student (V, B, K), targets (A, B, K) and A target views, got "
                         f"{student_logits.shape}, {targets.shape} and {target_views}.")
    num_views = student_logits.shape[0]
    if any(not 0 <= t < num_views for t in target_views):
        raise ValueError(f"target_views {target_views} must index the {num_views} student views.")
    pairs = [[float(v != t) for v in range(num_views)] for t in target_views]  # (A, V), static
    num_pairs = sum(map(sum, pairs))
    if num_pairs == 0:
        raise ValueError("No (target, student) pair with different views: give at least two views.")
    log_p = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
    ce = -jnp.einsum("abk,vbk->avb", targets.astype(jnp.float32), log_p)  # (A, V, B)
    return jnp.einsum("avb,av->b", ce, jnp.asarray(pairs, jnp.float32)) / num_pairs


def stop_gradient_where(condition: jax.Array, tree, path: tuple[str, ...] = ()):
    """`tree` with the gradient of its sub-tree at `path` cut where `condition` (a traced bool) is True.

    `where(c, stop_gradient(x), x)` has the value of `x` and the gradient `(1 - c) * dx`: the
    jit-friendly way to freeze part of the parameters for the first steps (DINO's last layer at
    `("head", "last_layer")`, SwAV's prototypes) without recompiling when the condition flips.
    `path` indexes nested dicts; the rest of the tree is returned as is.
    """
    if path:
        return {**tree, path[0]: stop_gradient_where(condition, tree[path[0]], tuple(path[1:]))}
    return jax.tree_util.tree_map(lambda x: jnp.where(condition, jax.lax.stop_gradient(x), x), tree)

