"""NNCLR, DCL/DCLW, TiCo, MMCR, W-MSE and alignment/uniformity losses.

Each against an independent float64 NumPy re-derivation (explicit loops or NumPy linear algebra),
its gradient where a stop is part of the method (NNCLR's neighbour, DCLW's weight, TiCo's running
matrix), and lightly 1.6's value on fixed inputs (tests/losses/lightly/methods_a.json, written by
benchmarks/lightly_reference_methods_a.py), on the configuration where lightly agrees with the
official code, the difference stated where it does not.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import losses, monitors
from tests import lightly_fixtures

LIGHTLY = lightly_fixtures.load("methods_a")


def _unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _views(seed, n, d, noise=0.5):
    rng = np.random.default_rng(seed)
    z1 = rng.normal(size=(n, d))
    return z1.astype(np.float32), (z1 + noise * rng.normal(size=(n, d))).astype(np.float32)


def _numeric_grad(f, x, h=1e-6):
    """Central differences of a float64 NumPy function."""
    x = np.asarray(x, np.float64)
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = h
        g[idx] = (f(x + e) - f(x - e)) / (2 * h)
    return g


# ---------------------------------------------------------------------------------------------- NNCLR
def _nnclr_reference(z, p, support, tau):
    """NNCLR Eq. 2: argmax-cosine neighbour in the support set, cross entropy against the N predictions."""
    zu, su, pu = _unit(z), _unit(support), _unit(p)
    out = []
    for i in range(len(z)):
        j = max(range(len(support)), key=lambda j: zu[i] @ su[j])
        logits = [su[j] @ pu[k] / tau for k in range(len(p))]
        out.append(-logits[i] + np.log(sum(np.exp(l) for l in logits)))
    return np.array(out)


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_nnclr_matches_float64_reference(tau):
    z, p = _views(1, 8, 5)
    support = np.random.default_rng(2).normal(size=(13, 5)).astype(np.float32)
    np.testing.assert_allclose(jax.jit(losses.nnclr, static_argnums=3)(z, p, support, tau),
                               _nnclr_reference(z, p, support, tau), rtol=2e-5, atol=2e-5)


def test_nnclr_gradient_reaches_predictions_only():
    z, p = _views(3, 6, 4)
    support = np.random.default_rng(4).normal(size=(9, 4)).astype(np.float32)
    gz, gp, gs = jax.jit(jax.grad(lambda z, p, s: losses.nnclr(z, p, s).mean(), argnums=(0, 1, 2)))(z, p, support)
    # The neighbour is an argmax over stored state: no gradient to the query or the support set.
    assert not np.any(gz) and not np.any(gs)
    with jax.enable_x64(True):
        z64, p64, s64 = (np.asarray(a, np.float64) for a in (z, p, support))
        want = _numeric_grad(lambda q: _nnclr_reference(z64, q, s64, 0.1).mean(), p64)
        np.testing.assert_allclose(jax.jit(jax.grad(lambda q: losses.nnclr(z64, q, s64).mean()))(p64), want, atol=1e-6)


def test_nnclr_lightly_parity():
    c = LIGHTLY["nnclr"]
    # The neighbours are lightly's NNMemoryBankModule's, row for row.
    for z, nn in (("z1", "nn1"), ("z2", "nn2")):
        np.testing.assert_allclose(losses.nearest_neighbour(c[z], c["queue"]), c[nn], rtol=1e-6)
    # lightly's recipe puts (NN(z), p) through NTXentLoss (2N - 2 negatives): jaxssl.losses.nt_xent on the
    # same neighbours gives its number ...
    tau = c["temperature"]
    ntxent = 0.5 * (losses.nt_xent(c["nn1"], c["p2"], tau).mean() + losses.nt_xent(c["nn2"], c["p1"], tau).mean())
    np.testing.assert_allclose(ntxent, c["lightly_ntxent_loss"], rtol=1e-5)
    # ... while the paper's Eq. 2 (N - 1 negatives, the other predictions), which jaxssl follows, differs.
    ours = 0.5 * (losses.nnclr(c["z1"], c["p2"], c["queue"], tau).mean()
                  + losses.nnclr(c["z2"], c["p1"], c["queue"], tau).mean())
    want = 0.5 * (_nnclr_reference(c["z1"], c["p2"], c["queue"], tau).mean()
                  + _nnclr_reference(c["z2"], c["p1"], c["queue"], tau).mean())
    np.testing.assert_allclose(ours, want, rtol=1e-5)
    assert abs(float(ours) - c["lightly_ntxent_loss"]) > 0.1


# ---------------------------------------------------------------------------------------------- DCL
def _dcl_reference(z1, z2, tau, weight=None):
    """Yeh et al. Eq. 6 per anchor over the 2N views; `weight` (N,) multiplies the positive term."""
    u = _unit(np.concatenate([z1, z2]))
    n = len(z1)
    w = np.ones(n) if weight is None else weight
    out = []
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        neg = [np.exp(u[i] @ u[k] / tau) for k in range(2 * n) if k not in (i, pos)]
        out.append(-w[i % n] * (u[i] @ u[pos]) / tau + np.log(sum(neg)))
    return np.array(out)


def _dclw_weight(z1, z2, sigma):
    e = np.exp(np.sum(_unit(z1) * _unit(z2), axis=-1) / sigma)
    return 2 - e / e.mean()


@pytest.mark.parametrize("tau,sigma", [(0.1, 0.5), (0.5, 1.0)])
def test_dcl_matches_float64_reference(tau, sigma):
    z1, z2 = _views(5, 7, 6)
    np.testing.assert_allclose(losses.dcl(z1, z2, tau), _dcl_reference(z1, z2, tau), rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(losses.dcl(z1, z2, tau, weighted=True, sigma=sigma),
                               _dcl_reference(z1, z2, tau, _dclw_weight(z1, z2, sigma)), rtol=2e-5, atol=2e-5)


def test_dclw_weight_is_a_constant():
    z1, z2 = _views(6, 5, 4)
    with jax.enable_x64(True):
        a, b = np.asarray(z1, np.float64), np.asarray(z2, np.float64)
        w = _dclw_weight(a, b, 0.5)  # frozen at the evaluation point
        want = _numeric_grad(lambda x: _dcl_reference(x, b, 0.1, w).mean(), a)
        got = jax.jit(jax.grad(lambda x: losses.dcl(x, b, 0.1, weighted=True).mean()))(a)
        np.testing.assert_allclose(got, want, atol=1e-6)
        # Differentiating the weight too would give another gradient (the check has power).
        moving = _numeric_grad(lambda x: _dcl_reference(x, b, 0.1, _dclw_weight(x, b, 0.5)).mean(), a)
        assert np.max(np.abs(moving - want)) > 1e-2


@pytest.mark.parametrize("case", ["dcl", "dcl_t05"])
def test_dcl_lightly_parity(case):
    c = LIGHTLY[case]
    np.testing.assert_allclose(losses.dcl(c["z1"], c["z2"], c["temperature"]).mean(), c["dcl"], rtol=1e-5)
    np.testing.assert_allclose(losses.dcl(c["z1"], c["z2"], c["temperature"], weighted=True, sigma=c["sigma"]).mean(),
                               c["dclw"], rtol=1e-5)


# ---------------------------------------------------------------------------------------------- TiCo
def _tico_reference(za, zb, c_prev, beta, rho):
    """TiCo Algorithm 1 in float64: (per-example losses, C_t)."""
    u, v = _unit(za), _unit(zb)
    c = beta * c_prev + (1 - beta) * sum(np.outer(x, x) for x in u) / len(u)
    return np.array([-(u[i] @ v[i]) + rho * u[i] @ c @ u[i] for i in range(len(u))]), c


def test_tico_matches_float64_reference_over_steps():
    c_ref = c_jax = np.zeros((5, 5))
    for step in range(3):
        za, zb = _views(10 + step, 8, 5)
        want, c_ref = _tico_reference(za, zb, c_ref, 0.9, 8.0)
        c_jax = losses.tico_covariance(c_jax, za, 0.9)
        np.testing.assert_allclose(losses.tico(za, zb, c_jax, 8.0), want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(c_jax, c_ref, atol=1e-6)


def test_tico_gradient_flows_through_the_batch_term():
    """Algorithm 1 detaches C only between steps: this batch's B is differentiated (lightly detaches it)."""
    za, zb = _views(20, 6, 4)
    c0 = np.random.default_rng(21).normal(size=(4, 4))
    c0 = c0 @ c0.T / 4
    with jax.enable_x64(True):
        a, b = np.asarray(za, np.float64), np.asarray(zb, np.float64)
        loss = lambda x: losses.tico(x, b, losses.tico_covariance(c0, x, 0.9), 8.0).mean()
        want = _numeric_grad(lambda x: _tico_reference(x, b, c0, 0.9, 8.0)[0].mean(), a)
        np.testing.assert_allclose(jax.jit(jax.grad(loss))(a), want, atol=1e-6)
        c_fixed = _tico_reference(a, b, c0, 0.9, 8.0)[1]
        detached = _numeric_grad(lambda x: np.mean([-(u @ v) + 8.0 * u @ c_fixed @ u
                                                    for u, v in zip(_unit(x), _unit(b))]), a)
        assert np.max(np.abs(detached - want)) > 1e-3


def test_tico_lightly_parity():
    """Same values as lightly's TiCoLoss over three steps, up to its constant +1 (1 - u.v)."""
    c = LIGHTLY["tico"]
    cov = jnp.zeros((c["z_a"].shape[-1],) * 2)
    for t in range(len(c["losses"])):
        cov = losses.tico_covariance(cov, c["z_a"][t], c["beta"])
        np.testing.assert_allclose(cov, c["covs"][t], atol=1e-6)
        np.testing.assert_allclose(losses.tico(c["z_a"][t], c["z_b"][t], cov, c["rho"]).mean() + 1.0,
                                   c["losses"][t], rtol=1e-5)


# ---------------------------------------------------------------------------------------------- MMCR
def _mmcr_reference(z, lmbda):
    u = _unit(z)
    loss = -np.linalg.svd(u.mean(axis=1), compute_uv=False).sum()
    return loss + lmbda * sum(np.linalg.svd(x, compute_uv=False).sum() for x in u) / len(u)


@pytest.mark.parametrize("lmbda", [0.0, 0.01])
def test_mmcr_matches_float64_reference(lmbda):
    z = np.random.default_rng(30).normal(size=(9, 3, 6)).astype(np.float32)
    np.testing.assert_allclose(losses.mmcr(z, lmbda), _mmcr_reference(z, lmbda), rtol=1e-5)
    with jax.enable_x64(True):
        z64 = np.asarray(z, np.float64)
        np.testing.assert_allclose(jax.jit(jax.grad(lambda x: losses.mmcr(x, lmbda)))(z64),
                                   _numeric_grad(lambda x: _mmcr_reference(x, lmbda), z64), atol=1e-6)


def test_mmcr_lightly_parity():
    """lightly's MMCRLoss(online, momentum) on normalised inputs split in two halves of the views."""
    c = LIGHTLY["mmcr"]
    np.testing.assert_allclose(losses.mmcr(c["z"], c["lmbda"]), c["loss"], rtol=1e-5)
    np.testing.assert_allclose(losses.mmcr(c["z"]), c["loss_lmbda0"], rtol=1e-5)


# ---------------------------------------------------------------------------------------------- W-MSE
def _whiten_reference(x):
    x = np.asarray(x, np.float64)
    xc = x - x.mean(0)
    chol = np.linalg.cholesky(xc.T @ xc / (len(x) - 1))
    return xc @ np.linalg.inv(chol).T


def _wmse_reference(z, perm, w_size):
    k, n, _ = z.shape
    white = np.zeros_like(z, dtype=np.float64)
    for v in range(k):
        for g in range(n // w_size):
            idx = perm[g * w_size:(g + 1) * w_size]
            white[v, idx] = _whiten_reference(z[v, idx])
    u = _unit(white)
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    return sum(2 - 2 * np.mean(np.sum(u[i] * u[j], -1)) for i, j in pairs) / len(pairs)


def test_whiten_gives_identity_covariance():
    x = np.random.default_rng(40).normal(size=(32, 4)) @ np.random.default_rng(41).normal(size=(4, 4))
    w = np.asarray(losses.whiten(x.astype(np.float32)), np.float64)
    np.testing.assert_allclose(w.T @ w / 31, np.eye(4), atol=1e-4)
    np.testing.assert_allclose(w, _whiten_reference(x), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("k,n,d,w_size", [(2, 16, 3, 8), (4, 24, 4, 12)])
def test_wmse_matches_float64_reference(k, n, d, w_size):
    rng = np.random.default_rng(k * n)
    z = (rng.normal(size=(k, n, d)) + rng.normal(size=(1, n, d))).astype(np.float32)
    perm = rng.permutation(n)
    np.testing.assert_allclose(losses.wmse(z, perm, w_size), _wmse_reference(z, perm, w_size), rtol=1e-4)
    if k > 2:
        return  # the gradient check once is enough
    with jax.enable_x64(True):
        z64 = np.asarray(z, np.float64)
        np.testing.assert_allclose(jax.jit(jax.grad(lambda x: losses.wmse(x, perm, w_size)))(z64),
                                   _numeric_grad(lambda x: _wmse_reference(x, perm, w_size), z64), atol=1e-6)


@pytest.mark.parametrize("case", ["wmse", "wmse_4views"])
def test_wmse_lightly_parity(case):
    """lightly's WMSELoss (the official code, ported) with the same sub-batch permutation."""
    c = LIGHTLY[case]
    np.testing.assert_allclose(losses.wmse(c["z"], c["perm"], int(c["w_size"])), c["loss"], rtol=1e-5)


# ---------------------------------------------------------------------------------- alignment / uniformity
def test_alignment_uniformity_match_float64_reference():
    z1, z2 = _views(50, 9, 5)
    u1, u2 = _unit(z1), _unit(z2)
    for alpha in (2.0, 1.0):
        want = np.array([np.linalg.norm(a - b) ** alpha for a, b in zip(u1, u2)])
        np.testing.assert_allclose(losses.alignment(z1, z2, alpha), want, rtol=1e-5)
    for t in (2.0, 5.0):
        pairs = [np.exp(-t * np.sum((u1[i] - u1[j]) ** 2)) for i in range(9) for j in range(i + 1, 9)]
        np.testing.assert_allclose(losses.uniformity(z1, t), np.log(np.mean(pairs)), rtol=1e-5)
    with jax.enable_x64(True):
        z64 = np.asarray(z1, np.float64)
        ref = lambda a: np.log(np.mean([np.exp(-2 * np.sum((x - y) ** 2)) for i, x in enumerate(_unit(a))
                                        for y in _unit(a)[i + 1:]]))
        np.testing.assert_allclose(jax.jit(jax.grad(lambda a: losses.uniformity(a, 2.0)))(z64), _numeric_grad(ref, z64),
                                   atol=1e-6)
    # Perfectly aligned pairs: finite zero gradient (no square root at 0).
    assert not np.any(np.asarray(jax.jit(jax.grad(lambda a: losses.alignment(a, a).mean()))(z1)))


def test_hypersphere_lightly_parity():
    c = LIGHTLY["hypersphere"]
    ours = (losses.alignment(c["z1"], c["z2"], c["alpha"]).mean()
            + c["lam"] * 0.5 * (losses.uniformity(c["z1"], c["t"]) + losses.uniformity(c["z2"], c["t"])))
    np.testing.assert_allclose(ours, c["loss"], rtol=1e-5)


def test_alignment_uniformity_monitors_are_the_losses_without_gradient():
    z1, z2 = _views(51, 8, 4)
    m = jax.jit(monitors.alignment_uniformity)(z1, z2)
    np.testing.assert_allclose(m["align"], losses.alignment(z1, z2).mean(), rtol=1e-6)
    np.testing.assert_allclose(m["uniform"], losses.uniformity(z1), rtol=1e-6)
    g = jax.grad(lambda a: sum(monitors.alignment_uniformity(a, z2).values()))(z1)
    assert not np.any(np.asarray(g))
