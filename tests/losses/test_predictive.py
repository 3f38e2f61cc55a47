"""JEPA losses (SIGReg, LeJEPA invariance, I-JEPA regression) vs float64 NumPy, lightly 1.6 and 8 devices."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxssl import losses
from tests import lightly_fixtures, multidevice


def _sigreg_numpy(z, a, knots=17, t_max=3.0):
    """float64: |ECF - CF|^2 weighted by exp(-t^2/2), trapezoid over the SYMMETRIC grid [-t_max, t_max]."""
    t = np.linspace(-t_max, t_max, 2 * knots - 1)
    x = z @ a  # (..., N, K)
    ecf = np.mean(np.exp(1j * x[..., None] * t), axis=-3)  # (..., K, T)
    integrand = np.abs(ecf - np.exp(-t ** 2 / 2)) ** 2 * np.exp(-t ** 2 / 2)
    return np.trapezoid(integrand, t, axis=-1).mean(-1) * z.shape[-2]


def test_sigreg_matches_numpy_float64():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3, 40, 7)) * 1.5 + 0.3
    a = np.asarray(losses.slice_directions(jax.random.key(0), 7, 20), np.float64)
    np.testing.assert_allclose(np.linalg.norm(a, axis=0), 1.0, rtol=1e-6)
    got = jax.jit(lambda z, a: losses.sigreg(z, a))(jnp.asarray(z, jnp.float32), jnp.asarray(a, jnp.float32))
    np.testing.assert_allclose(np.asarray(got), _sigreg_numpy(z, a), rtol=2e-5, atol=1e-5)
    got9 = losses.sigreg(jnp.asarray(z[0], jnp.float32), jnp.asarray(a, jnp.float32), knots=9, t_max=5.0)
    np.testing.assert_allclose(float(got9), _sigreg_numpy(z[0], a, 9, 5.0), rtol=2e-5)
    check_grads(lambda z: losses.sigreg(z, jnp.asarray(a, jnp.float32)), (jnp.asarray(z[0], jnp.float32),),
                order=1, modes=["rev"], atol=5e-2, rtol=5e-2)


def test_sigreg_on_isotropic_gaussian_is_near_its_expectation():
    # E|ECF(t) - CF(t)|^2 = (1 - exp(-t^2)) / N for Gaussian samples, so E[T] is the quadrature of
    # (1 - exp(-t^2)) exp(-t^2 / 2) on the same grid, whatever N.
    t = np.linspace(-3.0, 3.0, 33)
    expected = np.trapezoid((1 - np.exp(-t ** 2)) * np.exp(-t ** 2 / 2), t)
    assert 1.0 < expected < 1.1
    z = jax.random.normal(jax.random.key(1), (8, 1024, 32))
    value = float(jnp.mean(losses.sigreg(z, losses.slice_directions(jax.random.key(2), 32, 256))))
    assert abs(value - expected) < 0.1 * expected, (value, expected)
    # A collapsed or shifted distribution is far from it.
    assert float(losses.sigreg(0.1 * z[0], losses.slice_directions(jax.random.key(2), 32, 256))) > 20 * expected
    assert float(losses.sigreg(z[0] + 1.0, losses.slice_directions(jax.random.key(2), 32, 256))) > 20 * expected


def test_lejepa_invariance_and_ijepa_match_numpy():
    rng = np.random.default_rng(1)
    g, loc = rng.normal(size=(2, 5, 4)), rng.normal(size=(3, 5, 4))
    allp = np.concatenate([g, loc])
    want = ((g.mean(0) - allp) ** 2).mean(axis=(0, 2))
    np.testing.assert_allclose(np.asarray(losses.lejepa_invariance(jnp.asarray(allp), jnp.asarray(g))), want, rtol=1e-5)

    h = rng.normal(size=(2, 9, 6)) * 3 + 1
    ids = rng.integers(0, 9, size=(2, 3, 4))
    hn = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-5)
    want_t = np.stack([hn[b][ids[b]] for b in range(2)])  # (B, M, K, D)
    targets = losses.ijepa_targets(jnp.asarray(h, jnp.float32), jnp.asarray(ids))
    np.testing.assert_allclose(np.asarray(targets), want_t, rtol=1e-5, atol=1e-5)
    p = rng.normal(size=want_t.shape)
    valid = np.ones(ids.shape, bool)
    valid[:, :, 3] = False  # padding must not count
    d = np.abs(p - want_t)
    sl1 = np.where(d < 1, 0.5 * d ** 2, d - 0.5)
    for beta, elem in ((1.0, sl1), (0.0, d ** 2)):
        want_l = np.array([elem[b][valid[b]].mean() for b in range(2)])
        got = losses.ijepa(jnp.asarray(p, jnp.float32), targets, jnp.asarray(valid), beta=beta)
        np.testing.assert_allclose(np.asarray(got), want_l, rtol=1e-5)


def test_lightly_parity():
    cases = lightly_fixtures.load("jepa")
    for name in ("sigreg_small", "sigreg_views", "sigreg_grid"):
        c = cases[name]
        got = jnp.mean(losses.sigreg(jnp.asarray(c["z"], jnp.float32), jnp.asarray(c["directions"], jnp.float32),
                                     knots=int(c["knots"]), t_max=float(c["t_max"])))
        np.testing.assert_allclose(float(got), c["value"], rtol=2e-5, atol=1e-6)
    c = cases["lejepa"]
    g, loc, lam = jnp.asarray(c["global_proj"]), jnp.asarray(c["local_proj"]), float(c["lambda"])
    allp = jnp.concatenate([g, loc])
    inv = jnp.mean(losses.lejepa_invariance(allp, g))
    np.testing.assert_allclose(float(inv), c["invariance"], rtol=1e-5)
    total = lam * jnp.mean(losses.sigreg(allp, jnp.asarray(c["directions"]))) + (1 - lam) * inv
    np.testing.assert_allclose(float(total), c["value"], rtol=2e-5)
    c = cases["ijepa"]
    b, m = c["ids"].shape[:2]
    targets = losses.ijepa_targets(jnp.asarray(c["h"], jnp.float32), jnp.asarray(c["ids"]))
    # lightly's apply_masks stacks the M blocks mask-major: (M * B, K, D).
    to_bm = lambda x: np.swapaxes(x.reshape((m, b) + x.shape[1:]), 0, 1)
    np.testing.assert_allclose(np.asarray(targets), to_bm(c["targets_mask_major"]), rtol=1e-5, atol=1e-5)
    pred = jnp.asarray(to_bm(c["prediction_mask_major"]), jnp.float32)
    valid = jnp.ones(c["ids"].shape, bool)
    for key, beta in (("smooth_l1", 1.0), ("mse", 0.0)):
        got = jnp.mean(losses.ijepa(pred, targets, valid, beta=beta))
        np.testing.assert_allclose(float(got), c[key], rtol=1e-5)


_CODE = r"""
import json, numpy as np, jax, jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from jaxssl import losses
assert jax.device_count() == 8
z = jax.random.normal(jax.random.key(0), (2, 64, 12)) * 1.3 + 0.1
a = losses.slice_directions(jax.random.key(1), 12, 32)
f = jax.jit(jax.value_and_grad(lambda z: jnp.mean(losses.sigreg(z, a))))
v1, g1 = f(jax.device_put(z, jax.devices()[0]))
zs = jax.device_put(z, NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P(None, "data")))
v8, g8 = f(zs)
assert len(zs.sharding.device_set) == 8
g1, g8 = np.asarray(g1), np.asarray(g8)
print("RESULT " + json.dumps({"v1": float(v1), "v8": float(v8), "gdiff": float(np.max(np.abs(g1 - g8))),
                              "gmax": float(np.max(np.abs(g1)))}))
"""


def test_sigreg_8_devices_equal_1():
    r = multidevice.run(_CODE, devices=8)
    assert r["v1"] == pytest.approx(r["v8"], rel=1e-5)
    assert r["gdiff"] <= 1e-5 * max(r["gmax"], 1.0)
