"""nt_xent against an independent float64 NumPy derivation, gradients, and a descent check."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxssl import losses


def _nt_xent_reference(z1, z2, tau):
    """SimCLR Eq. 1 written out with explicit loops in float64."""
    z = np.concatenate([z1, z2]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n2 = len(z)
    n = n2 // 2
    out = np.zeros(n2)
    for i in range(n2):
        pos = (i + n) % n2
        denom = sum(np.exp(z[i] @ z[k] / tau) for k in range(n2) if k != i)
        out[i] = -np.log(np.exp(z[i] @ z[pos] / tau) / denom)
    return out


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_nt_xent_matches_float64_reference(tau):
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(2, 12, 7)).astype(np.float32)
    got = jax.jit(losses.nt_xent, static_argnums=2)(z1, z2, tau)
    np.testing.assert_allclose(got, _nt_xent_reference(z1, z2, tau), rtol=1e-5, atol=1e-5)


def test_nt_xent_hand_computed_case():
    # z1 = z2 = I_2: each anchor has positive sim 1 and two negatives of sim 0 -> log((e + 2) / e).
    z = jnp.eye(2)
    np.testing.assert_allclose(losses.nt_xent(z, z, 1.0), np.full(4, np.log((np.e + 2) / np.e)), rtol=1e-6)


def test_nt_xent_is_scale_invariant_and_symmetric():
    rng = np.random.default_rng(1)
    z1, z2 = rng.normal(size=(2, 8, 5)).astype(np.float32)
    a = losses.nt_xent(z1, z2, 0.5)
    np.testing.assert_allclose(a, losses.nt_xent(3.0 * z1, 0.5 * z2, 0.5), rtol=1e-5)
    b = losses.nt_xent(z2, z1, 0.5)
    np.testing.assert_allclose(a, jnp.concatenate([b[8:], b[:8]]), rtol=1e-5)


def test_nt_xent_gradients():
    rng = np.random.default_rng(2)
    z1, z2 = rng.normal(size=(2, 6, 4))
    with jax.enable_x64(True):
        f = lambda a, b: jnp.mean(losses.nt_xent(a, b, 0.5))
        check_grads(f, (jnp.asarray(z1), jnp.asarray(z2)), order=2, modes=("rev",), atol=1e-4, rtol=1e-4)


def test_nt_xent_falls_under_gradient_descent():
    rng = np.random.default_rng(3)
    z = jnp.asarray(rng.normal(size=(2, 16, 8)), jnp.float32)
    f = jax.jit(jax.value_and_grad(lambda z: jnp.mean(losses.nt_xent(z[0], z[1], 0.5))))
    first, _ = f(z)
    for _ in range(50):
        value, g = f(z)
        z = z - 0.5 * g
    assert value < first - 0.5


def test_nt_xent_rejects_bad_input():
    with pytest.raises(ValueError, match="equal shape"):
        losses.nt_xent(jnp.ones((4, 3)), jnp.ones((5, 3)))
    with pytest.raises(ValueError, match="temperature"):
        losses.nt_xent(jnp.ones((4, 3)), jnp.ones((4, 3)), temperature=0.0)
