"""MSN / PMSN, VICRegL, FastSiam and DirectCLR losses against float64 NumPy derivations, their stopped
gradients, and lightly 1.6 on fixed inputs (tests/losses/lightly/methods_b.json, written by
benchmarks/lightly_reference_methods_b.py)."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import losses
from tests import lightly_fixtures


def _normalize(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# ---------------------------------------------------------------------------------------------- MSN
def _msn_reference(anchors, targets, prototypes, tau=0.1, sharpen=0.25, iters=3, prior="uniform", exponent=0.25):
    """Assran et al. Eq. 1-2 and the official `src/losses.py`, written out in float64."""
    a, t, c = (np.asarray(x, np.float64) for x in (anchors, targets, prototypes))
    probs = _softmax(_normalize(a) @ _normalize(c).T / tau)
    q = _softmax(_normalize(t) @ _normalize(c).T / tau) ** (1 / sharpen)
    q = q / q.sum(1, keepdims=True)
    if iters:
        b, k = q.shape
        q = q.T / q.sum()
        for _ in range(iters):
            q = q / q.sum(1, keepdims=True) / k
            q = q / q.sum(0, keepdims=True) / b
        q = (q * b).T
    q = np.concatenate([q] * (a.shape[0] // t.shape[0]))
    ce = np.mean([-sum(q[i, j] * np.log(probs[i, j]) for j in range(q.shape[1])) for i in range(q.shape[0])])
    p_bar = probs.mean(0)
    if prior == "uniform":
        reg = np.log(len(p_bar)) - (-np.sum(p_bar * np.log(p_bar)))
    else:
        pi = np.arange(1, len(p_bar) + 1, dtype=np.float64) ** -exponent
        pi /= pi.sum()
        reg = np.sum(pi * np.log(pi / p_bar))
    return ce, reg


@pytest.mark.parametrize("prior,iters,views", [("uniform", 3, 3), ("uniform", 0, 1), ("power_law", 3, 2)])
def test_msn_matches_float64_reference(prior, iters, views):
    rng = np.random.default_rng(views + iters)
    a, t, c = rng.normal(size=(views * 5, 6)), rng.normal(size=(5, 6)), rng.normal(size=(7, 6))
    ce, reg = _msn_reference(a, t, c, iters=iters, prior=prior)
    got = jax.jit(lambda *x: losses.msn_terms(*x, sinkhorn_iterations=iters, prior=prior))(
        *(jnp.float32(x) for x in (a, t, c)))
    np.testing.assert_allclose(got["cross_entropy"], ce, rtol=2e-5)
    np.testing.assert_allclose(got["regularizer"], reg, rtol=2e-4, atol=1e-6)
    total = losses.msn(jnp.float32(a), jnp.float32(t), jnp.float32(c), regularization_weight=0.5,
                       sinkhorn_iterations=iters, prior=prior)
    np.testing.assert_allclose(total, ce + 0.5 * reg, rtol=2e-5)


def test_msn_target_branch_has_no_gradient():
    rng = np.random.default_rng(0)
    a, t, c = (jnp.float32(rng.normal(size=s)) for s in ((10, 4), (5, 4), (3, 4)))
    g_a, g_t, g_c = jax.grad(lambda *x: losses.msn(*x), argnums=(0, 1, 2))(a, t, c)
    assert float(jnp.max(jnp.abs(g_t))) == 0.0  # targets are constants (official torch.no_grad)
    assert float(jnp.max(jnp.abs(g_a))) > 0
    # The prototypes' gradient is the anchor branch's only: the same as with the (float64 reference)
    # target probabilities given as a constant.
    probs_t = _softmax(_normalize(np.asarray(t, np.float64)) @ _normalize(np.asarray(c, np.float64)).T / 0.1) ** 4
    probs_t /= probs_t.sum(1, keepdims=True)
    q = probs_t.T / probs_t.sum()
    for _ in range(3):
        q = q / q.sum(1, keepdims=True) / 3
        q = q / q.sum(0, keepdims=True) / 5
    q = jnp.float32(np.tile((q * 5).T, (2, 1)))

    def anchor_only(protos):
        u = protos / jnp.linalg.norm(protos, axis=1, keepdims=True)
        log_p = jax.nn.log_softmax((a / jnp.linalg.norm(a, axis=1, keepdims=True)) @ u.T / 0.1)
        p_bar = jnp.mean(jnp.exp(log_p), 0)
        return jnp.mean(-jnp.sum(q * log_p, 1)) + jnp.sum(p_bar * jnp.log(p_bar)) + jnp.log(3.0)

    np.testing.assert_allclose(g_c, jax.grad(anchor_only)(c), rtol=1e-4, atol=1e-6)


def test_power_law_prior():
    pi = np.asarray(losses.power_law_prior(6, 0.25))
    np.testing.assert_allclose(pi.sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(pi[0] / pi[5], 6 ** 0.25, rtol=1e-6)
    with pytest.raises(ValueError, match="prior"):
        losses.msn(jnp.ones((2, 2)), jnp.ones((2, 2)), jnp.ones((2, 2)), prior="zipf")


# ---------------------------------------------------------------------------------------- FastSiam
def _fastsiam_reference(p, z):
    p, z = np.asarray(p, np.float64), np.asarray(z, np.float64)
    v, n, _ = p.shape
    out = np.zeros(n)
    for i in range(v):
        target = np.mean([z[j] for j in range(v) if j != i], axis=0)
        out += -np.sum(_normalize(p[i]) * _normalize(target), axis=-1) / v
    return out


def test_fastsiam_matches_float64_reference_and_stops_target_gradient():
    rng = np.random.default_rng(1)
    p, z = rng.normal(size=(4, 6, 5)), rng.normal(size=(4, 6, 5))
    np.testing.assert_allclose(jax.jit(losses.fastsiam)(jnp.float32(p), jnp.float32(z)), _fastsiam_reference(p, z),
                               rtol=1e-5, atol=1e-6)
    g_p, g_z = jax.grad(lambda a, b: jnp.mean(losses.fastsiam(a, b)), argnums=(0, 1))(jnp.float32(p), jnp.float32(z))
    assert float(jnp.max(jnp.abs(g_z))) == 0.0  # the averaged targets are under stop_gradient
    assert float(jnp.max(jnp.abs(g_p))) > 0


# --------------------------------------------------------------------------------------- DirectCLR
def _info_nce_reference(a, b, tau):
    logits = _normalize(a) @ _normalize(b).T / tau
    return -np.diag(logits) + np.log(np.exp(logits).sum(1))


def _nt_xent_reference(a, b, tau):
    u = _normalize(np.concatenate([a, b]))
    n = a.shape[0]
    s = u @ u.T / tau
    out = []
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        out.append(-s[i, pos] + np.log(sum(np.exp(s[i, k]) for k in range(2 * n) if k != i)))
    return np.array(out)


def test_directclr_matches_float64_reference_and_uses_only_the_subvector():
    rng = np.random.default_rng(2)
    z1, z2 = rng.normal(size=(7, 10)), rng.normal(size=(7, 10))
    a, b = z1[:, :4], z2[:, :4]
    want = 0.5 * (_info_nce_reference(a, b, 0.1) + _info_nce_reference(b, a, 0.1))
    f32 = jnp.float32
    np.testing.assert_allclose(losses.directclr(f32(z1), f32(z2), 4), want, rtol=1e-5)
    np.testing.assert_allclose(losses.directclr(f32(z1), f32(z2), 4, temperature=0.5, negatives="all"),
                               _nt_xent_reference(a, b, 0.5), rtol=1e-5)
    g = jax.grad(lambda x: jnp.mean(losses.directclr(x, f32(z2), 4)))(f32(z1))
    assert float(jnp.max(jnp.abs(g[:, 4:]))) == 0.0 and float(jnp.max(jnp.abs(g[:, :4]))) > 0
    with pytest.raises(ValueError, match="dim"):
        losses.directclr(f32(z1), f32(z2), 11)


# ----------------------------------------------------------------------------------------- VICRegL
def _variance(z, eps=1e-4):
    return np.mean(np.maximum(0.0, 1.0 - np.sqrt(z.var(0, ddof=1) + eps)))


def _covariance(z):
    n, d = z.shape
    c = (z - z.mean(0)).T @ (z - z.mean(0)) / (n - 1)
    return (np.sum(c ** 2) - np.sum(np.diag(c) ** 2)) / d


def _nn(x, y, dist, k, order):
    """Official `neirest_neighbores` per image: nearest y of every x; keep the k closest pairs."""
    xs, ys = [], []
    for i in range(x.shape[0]):
        nearest = [int(np.argmin(dist[i, m])) for m in range(x.shape[1])]
        best = [dist[i, m, nearest[m]] for m in range(x.shape[1])]
        kk = x.shape[1] if k is None else min(k, x.shape[1])
        chosen = sorted(range(x.shape[1]), key=lambda m: best[m])[:kk]
        if order == "index":
            chosen = sorted(chosen)
        xs.append(x[i, chosen])
        ys.append(y[i, [nearest[m] for m in chosen]])
    return np.stack(xs), np.stack(ys)


def _local(x, y):
    slots = range(x.shape[1])
    var = np.mean([(_variance(x[:, s]) + _variance(y[:, s])) / 2 for s in slots])
    cov = np.mean([(_covariance(x[:, s]) + _covariance(y[:, s])) / 2 for s in slots])
    return np.array([np.mean((x - y) ** 2), var, cov])


def _vicregl_reference(emb, maps, locs, matches=(20, 4), l2_all=True, order="index", g=2):
    """`main_vicregl.py` (`global_loss`, `local_loss` accumulated over the pairs) in float64."""
    cdist = lambda a, b: np.linalg.norm(a[:, :, None, :] - b[:, None, :, :], axis=-1)
    pairs = [(a, b) for a in range(g) for b in range(len(emb)) if b != a]
    inv = np.mean([np.mean((emb[a] - emb[b]) ** 2) for a, b in pairs])
    var = np.mean([_variance(z) for z in emb])
    cov = np.mean([_covariance(z) for z in emb])
    local = np.zeros(3)
    for a, b in pairs:
        for space, ks in ((maps, (None, None) if l2_all else matches), (locs, matches)):
            x1, y1 = _nn(maps[a], maps[b], cdist(space[a], space[b]), ks[0], order)
            x2, y2 = _nn(maps[b], maps[a], cdist(space[b], space[a]), ks[1], order)
            local += (_local(x1, y1) + _local(x2, y2)) / 2
    local /= len(pairs)
    return np.array([inv, var, cov, *local])


@pytest.mark.parametrize("l2_all,order", [(True, "index"), (False, "distance")])
def test_vicregl_matches_float64_reference(l2_all, order):
    rng = np.random.default_rng(3)
    n, sizes = 5, (9, 9, 4)  # two global 3x3 maps, one local 2x2 map
    emb = [rng.normal(size=(n, 6)) * rng.uniform(0.3, 2, 6) for _ in sizes]
    maps = [rng.normal(size=(n, m, 4)) * rng.uniform(0.3, 2, 4) for m in sizes]
    locs = [rng.uniform(0, 32, size=(n, m, 2)) for m in sizes]
    want = _vicregl_reference(emb, maps, locs, (3, 2), l2_all, order)
    f32 = lambda xs: [jnp.float32(x) for x in xs]
    got = jax.jit(lambda e, m, l: losses.vicregl_terms(e, m, l, num_matches=(3, 2), l2_all_matches=l2_all,
                                                      match_order=order))(f32(emb), f32(maps), f32(locs))
    keys = ["invariance", "variance", "covariance", "local_invariance", "local_variance", "local_covariance"]
    np.testing.assert_allclose([got[k] for k in keys], want, rtol=2e-5, atol=1e-6)


# ----------------------------------------------------------------------------------- lightly 1.6
@pytest.fixture(scope="module")
def lightly_cases():
    return lightly_fixtures.load("methods_b")


@pytest.mark.parametrize("case", ["msn", "msn_no_sinkhorn", "pmsn"])
def test_msn_matches_lightly(lightly_cases, case):
    c = lightly_cases[case]
    got = losses.msn(*(jnp.float32(c[k]) for k in ("anchors", "targets", "prototypes")), temperature=c["temperature"],
                     sharpen_temperature=c["sharpen_temperature"], sinkhorn_iterations=int(c["sinkhorn_iterations"]),
                     prior=c["prior"], power_law_exponent=c["power_law_exponent"])
    np.testing.assert_allclose(got, c["loss"], rtol=2e-6)


def test_directclr_matches_lightly(lightly_cases):
    c = lightly_cases["directclr"]
    # lightly's DirectCLRLoss is NT-Xent on the subvector (negatives="all"); the official loss differs.
    got = losses.directclr(jnp.float32(c["z1"]), jnp.float32(c["z2"]), int(c["dim"]), temperature=c["temperature"],
                           negatives="all")
    np.testing.assert_allclose(jnp.mean(got), c["loss"], rtol=2e-6)
    official = jnp.mean(losses.directclr(jnp.float32(c["z1"]), jnp.float32(c["z2"]), int(c["dim"]),
                                         temperature=c["temperature"]))
    assert abs(float(official) - c["loss"]) > 0.1  # 2.32 vs 2.90 on these inputs: a documented difference


def test_fastsiam_matches_lightly_example(lightly_cases):
    c = lightly_cases["fastsiam"]
    np.testing.assert_allclose(jnp.mean(losses.fastsiam(jnp.float32(c["p"]), jnp.float32(c["z"]))), c["loss"],
                               rtol=2e-5, atol=1e-7)


def test_vicregl_matches_lightly(lightly_cases):
    c = lightly_cases["vicregl"]
    maps = [jnp.float32(m) for m in itertools.chain(c["global_maps"], c["local_maps"])]
    locs = [jnp.float32(m) for m in itertools.chain(c["global_locations"], c["local_locations"])]
    emb = [jnp.float32(e) for e in c["embeddings"]]
    kw = dict(alpha=float(c["alpha"]), num_matches=tuple(int(k) for k in c["num_matches"]))

    @jax.jit
    def both(e, m, l):
        # lightly = the official loss with lightly's matching (l2 top-k, distance order).
        return (losses.vicregl(e, m, l, l2_all_matches=False, match_order="distance", **kw),
                losses.vicregl(e, m, l, **kw))

    lightly_like, official = both(emb, maps, locs)
    np.testing.assert_allclose(lightly_like, c["loss"], rtol=2e-6)
    assert abs(float(official) - c["loss"]) > 1.0  # 65.39 vs 61.94 on these inputs
