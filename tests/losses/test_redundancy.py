"""VICReg and Barlow Twins against float64 NumPy derivations, gradients, and collapsed inputs.

The gradient-direction tests build the degenerate inputs each term exists to penalise
(all-equal embeddings, differing views, redundant dimensions) and check that one step along
minus the gradient of that term moves away from the degenerate state, with the direction the
formula predicts.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxssl import losses, ops

EPS_V = 1e-4  # VICReg
EPS_B = 1e-5  # Barlow Twins


def _vicreg_reference(z1, z2, eps=EPS_V):
    """Bardes et al. Sec. 3.1 written out term by term in float64 (reference-code weighting)."""
    z1, z2 = np.asarray(z1, np.float64), np.asarray(z2, np.float64)
    n, d = z1.shape
    inv = sum((z1[b, k] - z2[b, k]) ** 2 for b in range(n) for k in range(d)) / (n * d)

    def v(z):
        out = 0.0
        for k in range(d):
            mu = sum(z[:, k]) / n
            var = sum((z[b, k] - mu) ** 2 for b in range(n)) / (n - 1)
            out += max(0.0, 1.0 - np.sqrt(var + eps))
        return out / d

    def c(z):
        mu = z.mean(axis=0)
        out = 0.0
        for i in range(d):
            for j in range(d):
                if i != j:
                    cov_ij = sum((z[b, i] - mu[i]) * (z[b, j] - mu[j]) for b in range(n)) / (n - 1)
                    out += cov_ij ** 2
        return out / d

    return {"invariance": inv, "variance": (v(z1) + v(z2)) / 2, "covariance": c(z1) + c(z2)}


def _barlow_reference(z1, z2, lambd, eps=EPS_B):
    """Zbontar et al. Eq. 1-2 in float64 with BatchNorm-style (biased) standardisation."""
    z1, z2 = np.asarray(z1, np.float64), np.asarray(z2, np.float64)
    n, d = z1.shape
    s = lambda z: (z - z.mean(0)) / np.sqrt(((z - z.mean(0)) ** 2).mean(0) + eps)
    a, b = s(z1), s(z2)
    c = np.array([[sum(a[k, i] * b[k, j] for k in range(n)) / n for j in range(d)] for i in range(d)])
    on = sum((1 - c[i, i]) ** 2 for i in range(d))
    off = sum(c[i, j] ** 2 for i in range(d) for j in range(d) if i != j)
    return on + lambd * off, on, off


def _random_pair(seed, n, d):
    """Two correlated views whose columns have std from 0.2 to 3 (the hinge active and not)."""
    rng = np.random.default_rng(seed)
    scale = np.geomspace(0.2, 3.0, d)
    z1 = rng.normal(size=(n, d)) * scale + rng.normal(size=d)
    z2 = z1 + 0.5 * rng.normal(size=(n, d)) * scale
    return z1.astype(np.float32), z2.astype(np.float32)


@pytest.mark.parametrize("n,d", [(8, 5), (16, 3), (6, 12)])
def test_vicreg_matches_float64_reference(n, d):
    z1, z2 = _random_pair(n * d, n, d)
    want = _vicreg_reference(z1, z2)
    got = jax.jit(losses.vicreg_terms)(z1, z2)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=2e-5, atol=1e-6, err_msg=k)
    total = jax.jit(losses.vicreg)(z1, z2)
    np.testing.assert_allclose(total, 25 * want["invariance"] + 25 * want["variance"] + want["covariance"],
                               rtol=2e-5)
    assert 0 < want["variance"] < 1 - np.sqrt(EPS_V)  # some dimensions inside the hinge, some not


@pytest.mark.parametrize("n,d,lambd", [(8, 5, 0.0051), (16, 3, 0.5), (6, 12, 0.0051)])
def test_barlow_twins_matches_float64_reference(n, d, lambd):
    z1, z2 = _random_pair(n + d, n, d)
    want, on, off = _barlow_reference(z1, z2, lambd)
    np.testing.assert_allclose(jax.jit(lambda a, b: losses.barlow_twins(a, b, lambd=lambd))(z1, z2), want,
                               rtol=2e-5)
    terms = losses.barlow_twins_terms(z1, z2)
    np.testing.assert_allclose([terms["on_diagonal"], terms["off_diagonal"]], [on, off], rtol=2e-5, atol=1e-6)


def test_cross_correlation_is_pearson_correlation():
    z1, z2 = _random_pair(7, 64, 4)
    c = np.asarray(ops.cross_correlation(z1, z2, eps=0.0), np.float64)
    want = np.corrcoef(z1.astype(np.float64), z2.astype(np.float64), rowvar=False)[:4, 4:]
    np.testing.assert_allclose(c, want, rtol=1e-5, atol=1e-6)


def test_gradients_match_finite_differences():
    z1, z2 = (np.asarray(z, np.float64) for z in _random_pair(3, 7, 4))
    with jax.enable_x64(True):
        for f in (jax.jit(losses.vicreg), jax.jit(lambda a, b: losses.barlow_twins(a, b, lambd=0.1))):
            check_grads(f, (jnp.asarray(z1), jnp.asarray(z2)), order=1, modes=("rev",), atol=1e-5, rtol=1e-5)


def test_all_equal_embeddings_give_the_maximal_variance_penalty():
    z = jnp.tile(jnp.array([[0.3, -1.0, 2.0, 0.0]]), (8, 1))
    t = losses.vicreg_terms(z, z)
    np.testing.assert_allclose(t["variance"], 1 - np.sqrt(EPS_V), rtol=1e-6)  # the hinge's maximum
    assert float(t["invariance"]) == 0.0 and float(t["covariance"]) == 0.0
    for seed in range(3):  # any spread lowers it
        assert losses.vicreg_terms(*_random_pair(seed, 8, 4))["variance"] < t["variance"]
    # Barlow Twins: collapsed embeddings standardise to 0, so C = 0 and every diagonal term is 1.
    b = losses.barlow_twins_terms(z, z)
    np.testing.assert_allclose([b["on_diagonal"], b["off_diagonal"]], [4.0, 0.0], atol=1e-6)


def _unit(x):
    x = np.asarray(x, np.float64).ravel()
    return x / np.linalg.norm(x)


def test_variance_gradient_spreads_a_nearly_collapsed_batch():
    # All rows equal up to 1e-3 noise: d v / d z_nk = -(z_nk - mu_k) / (D (N-1) std_k), so minus the
    # gradient pushes every example away from the batch mean, dimension by dimension.
    rng = np.random.default_rng(0)
    z = jnp.asarray(np.tile(rng.normal(size=(1, 6)), (16, 1)) + 1e-3 * rng.normal(size=(16, 6)), jnp.float32)
    v = lambda z: losses.vicreg_terms(z, z)["variance"]
    g = np.asarray(jax.grad(v)(z))
    z = np.asarray(z)
    centred = z - z.mean(axis=0)
    assert _unit(-g) @ _unit(centred) > 0.99
    for k in range(6):  # per dimension, not only overall
        assert _unit(-g[:, k]) @ _unit(centred[:, k]) > 0.999
    assert np.all(np.std(z - 1.0 * g, axis=0) > np.std(z, axis=0))


def test_identical_views_give_zero_invariance_and_the_gradient_pulls_views_together():
    z1, z2 = (jnp.asarray(z) for z in _random_pair(1, 10, 4))
    t = losses.vicreg_terms(z1, z1)
    assert float(t["invariance"]) == 0.0
    np.testing.assert_array_equal(jax.grad(lambda a: losses.vicreg_terms(a, z1)["invariance"])(z1), 0.0)
    # Different views: minus the gradient w.r.t. z1 points exactly from z1 to z2 (MSE).
    g = jax.grad(lambda a: losses.vicreg_terms(a, z2)["invariance"])(z1)
    np.testing.assert_allclose(_unit(-g) @ _unit(z2 - z1), 1.0, rtol=1e-6)


def test_covariance_gradient_on_redundant_dimensions():
    # Every dimension is one shared signal plus a little noise: maximal redundancy.
    rng = np.random.default_rng(2)
    n, d = 32, 5
    z = np.asarray(rng.normal(size=(n, 1)) * np.linspace(1, 2, d) + 0.1 * rng.normal(size=(n, d)), np.float32)
    cov = lambda z: losses.vicreg_terms(z, z)["covariance"] / 2  # one view's c(Z)
    g = np.asarray(jax.grad(cov)(jnp.asarray(z)), np.float64)
    # Analytic gradient of c(Z) = sum_{i!=j} C_ij^2 / D: 4 / (D (N-1)) (Z - mean) offdiag(C).
    zc = z.astype(np.float64) - z.mean(axis=0)
    c = zc.T @ zc / (n - 1)
    np.testing.assert_allclose(g, 4 / (d * (n - 1)) * zc @ (c - np.diag(np.diag(c))), rtol=1e-4, atol=1e-7)
    # Minus the gradient removes the shared component (it points against the centred data), so the
    # off-diagonal covariance and the correlation fall. On its own the covariance term can be lowered
    # by shrinking every dimension; the variance term is what forbids that.
    assert _unit(-g) @ _unit(zc) < -0.9
    corr = lambda z: np.abs(np.corrcoef(z, rowvar=False)[~np.eye(d, dtype=bool)]).mean()
    stepped = z - 0.5 * g
    assert corr(stepped) < corr(z) and cov(jnp.asarray(stepped, jnp.float32)) < 0.7 * cov(jnp.asarray(z))


def test_barlow_on_diagonal_gradient_aligns_the_views():
    z1, z2 = (jnp.asarray(z) for z in _random_pair(4, 32, 4))
    on = lambda a, b: losses.barlow_twins_terms(a, b)["on_diagonal"]
    g1, g2 = jax.grad(on, argnums=(0, 1))(z1, z2)
    before = jnp.diagonal(ops.cross_correlation(z1, z2))
    after = jnp.diagonal(ops.cross_correlation(z1 - 0.05 * g1, z2 - 0.05 * g2))
    assert jnp.all(before < 0.999) and jnp.all(after > before)


def test_barlow_identical_whitened_views_give_zero_loss_and_redundancy_is_reduced():
    # Columns of a Hadamard matrix (minus the constant one): centred, unit variance, orthogonal.
    h = np.array([[1]])
    for _ in range(3):
        h = np.block([[h, h], [h, -h]])
    z = jnp.asarray(h[:, 1:], jnp.float32)  # (8, 7)
    np.testing.assert_allclose(losses.barlow_twins(z, z, eps=0.0), 0.0, atol=1e-10)
    np.testing.assert_allclose(losses.barlow_twins(z, z), 0.0, atol=1e-8)  # eps=1e-5: C_ii = 1 - 5e-6
    # Two redundant dimensions (identical columns): the off-diagonal gradient decorrelates them.
    rng = np.random.default_rng(5)
    base = rng.normal(size=(32, 1))
    r = jnp.asarray(np.concatenate([base, base + 0.1 * rng.normal(size=(32, 1)), rng.normal(size=(32, 2))], 1),
                    jnp.float32)
    off = lambda a: losses.barlow_twins_terms(a, a)["off_diagonal"]
    c01 = lambda a: float(ops.cross_correlation(a, a)[0, 1])
    # C is scale-invariant, so unlike VICReg's covariance this gradient can only decorrelate.
    stepped = r - 2.0 * jax.grad(off)(r)
    assert c01(r) > 0.99 and c01(stepped) < c01(r) - 0.005
    assert off(stepped) < off(r)


def test_low_precision_input_is_computed_in_float32():
    z1, z2 = _random_pair(6, 8, 4)
    for f in (losses.vicreg, losses.barlow_twins):
        out = f(jnp.asarray(z1, jnp.bfloat16), jnp.asarray(z2, jnp.bfloat16))
        assert out.dtype == jnp.float32
        np.testing.assert_allclose(out, f(z1, z2), rtol=5e-2)


def test_bad_input_is_rejected():
    for f in (losses.vicreg, losses.barlow_twins):
        with pytest.raises(ValueError, match="equal shape"):
            f(jnp.ones((4, 3)), jnp.ones((5, 3)))
        with pytest.raises(ValueError, match="at least 2"):
            f(jnp.ones((1, 3)), jnp.ones((1, 3)))
