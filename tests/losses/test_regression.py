"""negative_cosine against an independent float64 NumPy derivation, BYOL's identity, gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxssl import losses


def _negative_cosine_reference(p, z):
    """-cos(p_i, z_i) row by row in float64, with explicit norms."""
    p, z = np.asarray(p, np.float64), np.asarray(z, np.float64)
    return np.array([-(a @ b) / (np.sqrt(a @ a) * np.sqrt(b @ b)) for a, b in zip(p, z)])


def test_negative_cosine_matches_float64_reference():
    rng = np.random.default_rng(0)
    p, z = rng.normal(size=(2, 16, 9)).astype(np.float32)
    got = jax.jit(losses.negative_cosine)(p, z)
    assert got.shape == (16,)
    np.testing.assert_allclose(got, _negative_cosine_reference(p, z), rtol=1e-5, atol=1e-6)


def test_byol_normalised_mse_is_two_plus_two_negative_cosine():
    # BYOL Eq. 2: ||p/||p|| - z/||z||||^2 = 2 - 2 cos(p, z).
    rng = np.random.default_rng(1)
    p, z = rng.normal(size=(2, 10, 6))
    pn = p / np.linalg.norm(p, axis=1, keepdims=True)
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    mse = np.sum((pn - zn) ** 2, axis=1)
    got = 2.0 + 2.0 * losses.negative_cosine(jnp.asarray(p, jnp.float32), jnp.asarray(z, jnp.float32))
    np.testing.assert_allclose(got, mse, rtol=1e-5, atol=1e-6)


def test_negative_cosine_hand_values_scale_invariance_and_symmetry():
    p = jnp.array([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    z = jnp.array([[3.0, 0.0], [-2.0, 0.0], [0.0, 5.0]])
    np.testing.assert_allclose(losses.negative_cosine(p, z), [-1.0, 1.0, -np.sqrt(0.5)], atol=1e-7)
    rng = np.random.default_rng(2)
    a, b = jnp.asarray(rng.normal(size=(2, 8, 5)), jnp.float32)
    np.testing.assert_allclose(losses.negative_cosine(a, b), losses.negative_cosine(4.0 * a, 0.1 * b), rtol=1e-5)
    np.testing.assert_allclose(losses.negative_cosine(a, b), losses.negative_cosine(b, a), rtol=1e-6)
    # A zero row stays finite (the norm is clamped), as torch's cosine_similarity.
    assert np.all(np.isfinite(losses.negative_cosine(jnp.zeros((2, 3)), jnp.ones((2, 3)))))


def test_negative_cosine_gradients():
    rng = np.random.default_rng(3)
    p, z = rng.normal(size=(2, 6, 4))
    with jax.enable_x64(True):
        f = lambda a, b: jnp.mean(losses.negative_cosine(a, b))
        check_grads(f, (jnp.asarray(p), jnp.asarray(z)), order=2, modes=("rev",), atol=1e-4, rtol=1e-4)


def test_gradient_through_a_stopped_target_is_exactly_zero():
    rng = np.random.default_rng(4)
    p, z = jnp.asarray(rng.normal(size=(2, 8, 5)), jnp.float32)
    f = lambda p, z: jnp.mean(losses.negative_cosine(p, jax.lax.stop_gradient(z)))
    gp, gz = jax.grad(f, argnums=(0, 1))(p, z)
    assert float(jnp.abs(gz).max()) == 0.0
    assert float(jnp.abs(gp).max()) > 0.0


def test_negative_cosine_falls_under_gradient_descent():
    rng = np.random.default_rng(5)
    p0, z = jnp.asarray(rng.normal(size=(2, 16, 8)), jnp.float32)
    f = jax.jit(jax.value_and_grad(lambda p: jnp.mean(losses.negative_cosine(p, z))))
    p, (first, _) = p0, f(p0)
    for _ in range(50):
        value, g = f(p)
        p = p - 5.0 * g
    assert value < first - 0.5 and value > -1.0 - 1e-6


def test_negative_cosine_rejects_bad_shapes():
    with pytest.raises(ValueError, match="equal shape"):
        losses.negative_cosine(jnp.ones((4, 3)), jnp.ones((4, 2)))
