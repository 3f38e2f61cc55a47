r"""Redundancy-reduction losses: VICReg (and VICRegL's local form) and Barlow Twins.

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
    return {"invariance": jnp.mean((z1 - z2) ** 2),
            "variance": 0.5 * (_variance(z1, eps) + _variance(z2, eps)),
            "covariance": _covariance(z1) + _covariance(z2)}


def _variance(z: jax.Array, eps: float) -> jax.Array:
    """VICReg's hinge on the per-dimension std over the N rows of (N, D) `z` (unbiased variance)."""
    std = jnp.sqrt(jnp.var(z, axis=0, ddof=1) + eps)
    return jnp.mean(jax.nn.relu(1.0 - std))


def _covariance(z: jax.Array) -> jax.Array:
    """VICReg's sum of squared off-diagonal covariances of (N, D) `z`, divided by D."""
    n, d = z.shape
    zc = z - jnp.mean(z, axis=0)
    cov = zc.T @ zc / (n - 1)
    return jnp.sum(ops.off_diagonal(cov) ** 2) / d


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


VICREGL_MATCH_ORDERS = ("index", "distance")


def _matches(inputs: jax.Array, candidates: jax.Array, sq_dist: jax.Array, num_matches: int | None,
             order: str) -> tuple[jax.Array, jax.Array]:
    """VICRegL's nearest-neighbour filtering (official `neirest_neighbores`).

    Each input position's nearest candidate by `sq_dist` (N, Mi, Mc); the `num_matches` input
    positions with the smallest such distance are kept (None: all), in increasing position
    order ("index", the official mask-select) or by increasing distance ("distance", lightly).
    Returns two (N, k, C) arrays: the kept inputs and their nearest candidates.
    """
    nearest = jnp.argmin(sq_dist, axis=-1)
    best = jnp.min(sq_dist, axis=-1)
    k = inputs.shape[1] if num_matches is None else min(num_matches, inputs.shape[1])
    keep = jnp.argsort(best, axis=1, stable=True)[:, :k]
    if order == "index":
        keep = jnp.sort(keep, axis=1)
    take = lambda x, idx: jnp.take_along_axis(x, idx[..., None], axis=1)
    return take(inputs, keep), take(candidates, jnp.take_along_axis(nearest, keep, axis=1))


def _sq_dist(a: jax.Array, b: jax.Array) -> jax.Array:
    """(N, Ma, C), (N, Mb, C) -> (N, Ma, Mb) squared Euclidean distances (ranking as `torch.cdist`)."""
    return (jnp.sum(a * a, -1)[:, :, None] + jnp.sum(b * b, -1)[:, None, :]
            - 2.0 * jnp.einsum("nac,nbc->nab", a, b))


def _local_vicreg(x: jax.Array, y: jax.Array, eps: float) -> jax.Array:
    """Unweighted (invariance, variance, covariance) of matched (N, k, C) maps: statistics per slot k.

    The official `VICRegL._vicreg_loss`: batch statistics of each of the k matched slots over the
    N images, averaged over slots; variance and covariance the mean of the two sides.
    """
    per_slot = lambda f: lambda z: jnp.mean(jax.vmap(f, in_axes=1)(z))
    var = per_slot(lambda z: _variance(z, eps))
    cov = per_slot(_covariance)
    return jnp.stack([jnp.mean((x - y) ** 2), 0.5 * (var(x) + var(y)), 0.5 * (cov(x) + cov(y))])


def vicregl_terms(embeddings, maps, locations, *, global_views: int = 2, num_matches=(20, 4),
                  l2_all_matches: bool = True, match_order: str = "index",
                  eps: float = 1e-4) -> dict[str, jax.Array]:
    r"""The unweighted VICRegL terms: VICReg on the global embeddings and on matched local features.

    VICRegL (Bardes et al., 2022, arXiv:2210.01571, Sec. 3): "the VICReg criterion [is applied]
    between pairs of feature vectors from the feature maps", matched two ways: "location-based"
    (each position is matched to the spatially closest position of the other view, in image
    coordinates) and "feature-based" (to the closest in the embedding space), keeping "the top-γ
    pairs". Following the official `main_vicregl.py` (`global_loss`, `local_loss`, `_local_loss`,
    `neirest_neighbores`), with G global views first among V views and pairs
    :math:`P = \{(a, b): a < G, b \ne a\}`:

    .. math::
        \text{invariance} &= \frac{1}{|P|} \sum_{(a, b) \in P} \mathrm{mse}(z_a, z_b), \quad
        \text{variance} = \frac1V \sum_v v(z_v), \quad
        \text{covariance} = \frac1V \sum_v c(z_v) \\
        \text{local\_}t &= \frac{1}{|P|} \sum_{(a, b) \in P} \sum_{m \in \{\text{l2}, \text{location}\}}
            \tfrac12 \big( t(\mathrm{NN}_m(a \to b; \gamma_0)) + t(\mathrm{NN}_m(b \to a; \gamma_1)) \big)

    with v, c VICReg's variance hinge and covariance term (:func:`vicreg_terms`); on matched
    (N, k, C) maps t is computed per slot over the N images and averaged over the k slots, with
    variance and covariance the mean of the two sides. Note the covariance is averaged over views
    (VICReg sums its two views'), which is why lightly's `VICRegLLoss` halves `nu`.

    Where lightly 1.6 differs (its numbers are reproduced with `l2_all_matches=False,
    match_order="distance"`): (1) the official code matches ALL positions in feature space
    (`--l2_all_matches 1`) and uses `num_matches` = (gamma_0, gamma_1) = (20, 4) only for the
    location matching; lightly uses (20, 4) for both; (2) the official code keeps the matched
    positions in index order, lightly sorts them by distance, which changes the per-slot
    statistics. Deviation from the official code (a bug there): its `local_loss` assigns instead of
    accumulating over the pairs (`inv_loss, var_loss, cov_loss = self._local_loss(...)`), so only the
    last pair counts (divided by the number of pairs); here, as in lightly, every pair counts.

    Args:
      embeddings: V arrays (N, D), the expander outputs of the views (globals first); GLOBAL batch.
      maps: V arrays (N, M_v, C), the local-projector outputs of each view's feature map, M_v
        positions (row-major H_v x W_v).
      locations: V arrays (N, M_v, 2), each position's (y, x) coordinates in the original image.
      global_views: G, how many leading views are global crops (2).
      num_matches: (gamma_0, gamma_1) kept pairs of the a -> b and b -> a matchings (20, 4),
        capped at the number of positions.
      l2_all_matches: feature-based matching keeps every position (official default True).
      match_order: "index" (official) or "distance" (lightly), see above.
      eps: variance epsilon (1e-4).

    Returns:
      {"invariance", "variance", "covariance", "local_invariance", "local_variance",
      "local_covariance"}: float32 scalars (batch-level).

    Example:
      >>> import jax.numpy as jnp
      >>> e = [jnp.ones((4, 3))] * 2; m = [jnp.ones((4, 2, 3))] * 2; loc = [jnp.zeros((4, 2, 2))] * 2
      >>> float(vicregl_terms(e, m, loc)["local_invariance"])
      0.0

    References:
      Bardes, Ponce, LeCun, VICRegL: Self-Supervised Learning of Local Visual Features,
      https://arxiv.org/abs/2210.01571 ; facebookresearch/VICRegL `main_vicregl.py`; lightly
      `loss/vicregl_loss.py`.
    """
    v = len(embeddings)
    if not (len(maps) == len(locations) == v and 1 <= global_views <= v and v >= 2):
        raise ValueError(f"vicregl needs V >= 2 embeddings, maps and locations with 1 <= global_views <= V, got "
                         f"{len(embeddings)}, {len(maps)}, {len(locations)} and global_views={global_views}.")
    if match_order not in VICREGL_MATCH_ORDERS:
        raise ValueError(f"Unknown match_order {match_order!r}; choose one of {VICREGL_MATCH_ORDERS}.")
    f32 = lambda xs: [jnp.asarray(x, jnp.promote_types(jnp.result_type(x), jnp.float32)) for x in xs]
    embeddings, maps, locations = f32(embeddings), f32(maps), f32(locations)
    for i, (z, m, loc) in enumerate(zip(embeddings, maps, locations)):
        if z.ndim != 2 or m.ndim != 3 or loc.shape != (*m.shape[:2], 2) or m.shape[0] != z.shape[0]:
            raise ValueError(f"view {i}: expected (N, D) embedding, (N, M, C) map and (N, M, 2) locations, got "
                             f"{z.shape}, {m.shape} and {loc.shape}.")
    pairs = [(a, b) for a in range(global_views) for b in range(v) if b != a]
    inv = jnp.mean(jnp.stack([jnp.mean((embeddings[a] - embeddings[b]) ** 2) for a, b in pairs]))
    var = jnp.mean(jnp.stack([_variance(z, eps) for z in embeddings]))
    cov = jnp.mean(jnp.stack([_covariance(z) for z in embeddings]))
    l2_matches = (None, None) if l2_all_matches else tuple(num_matches)

    def pair_terms(a, b):
        total = 0.0
        # Feature-based (distances between the maps) then location-based (between the coordinates).
        for space, ks in ((maps, l2_matches), (locations, tuple(num_matches))):
            x1, y1 = _matches(maps[a], maps[b], _sq_dist(space[a], space[b]), ks[0], match_order)
            x2, y2 = _matches(maps[b], maps[a], _sq_dist(space[b], space[a]), ks[1], match_order)
            total = total + 0.5 * (_local_vicreg(x1, y1, eps) + _local_vicreg(x2, y2, eps))
        return total

    local = jnp.mean(jnp.stack([pair_terms(a, b) for a, b in pairs]), axis=0)
    return {"invariance": inv, "variance": var, "covariance": cov, "local_invariance": local[0],
            "local_variance": local[1], "local_covariance": local[2]}


def vicregl(embeddings, maps, locations, *, alpha: float = 0.75, inv_coeff: float = 25.0,
            var_coeff: float = 25.0, cov_coeff: float = 1.0, **kw) -> jax.Array:
    r"""The VICRegL loss: alpha-weighted global and local VICReg terms of :func:`vicregl_terms`.

    .. math::
        \ell = \alpha (\lambda s + \mu v + \nu c) + (1 - \alpha)(\lambda s_{loc} + \mu v_{loc} + \nu c_{loc})

    Official defaults (`main_vicregl.py`): alpha 0.75, lambda = `--inv-coeff` 25, mu = `--var-coeff`
    25, nu = `--cov-coeff` 1.

    Args:
      embeddings, maps, locations: see :func:`vicregl_terms`.
      alpha: weight of the global criterion (0.75); 1 - alpha weighs the local one.
      inv_coeff, var_coeff, cov_coeff: lambda, mu, nu (25, 25, 1).
      **kw: the keyword options of :func:`vicregl_terms`.

    Returns:
      float32 scalar (batch-level).

    References:
      Bardes et al., 2022, https://arxiv.org/abs/2210.01571.
    """
    t = vicregl_terms(embeddings, maps, locations, **kw)
    glob = inv_coeff * t["invariance"] + var_coeff * t["variance"] + cov_coeff * t["covariance"]
    local = inv_coeff * t["local_invariance"] + var_coeff * t["local_variance"] + cov_coeff * t["local_covariance"]
    return alpha * glob + (1.0 - alpha) * local


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
