"""infonce (MoCo v2 queue form, MoCo v3 in-batch form) against float64 NumPy derivations."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxssl import losses


def _unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _moco_reference(q, k, queue, tau):
    """MoCo Eq. 1 with explicit loops: -log exp(q.k+/tau) / (exp(q.k+/tau) + sum_queue exp(q.n/tau))."""
    q, k, queue = _unit(q), _unit(k), _unit(queue)
    out = np.zeros(len(q))
    for i in range(len(q)):
        pos = np.exp(q[i] @ k[i] / tau)
        neg = sum(np.exp(q[i] @ n / tau) for n in queue)
        out[i] = -np.log(pos / (pos + neg))
    return out


def _in_batch_reference(q, k, tau):
    """MoCo v3 `ctr` without the 2 tau factor: -log exp(q_i.k_i/tau) / sum_j exp(q_i.k_j/tau)."""
    q, k = _unit(q), _unit(k)
    out = np.zeros(len(q))
    for i in range(len(q)):
        out[i] = -np.log(np.exp(q[i] @ k[i] / tau) / sum(np.exp(q[i] @ k[j] / tau) for j in range(len(k))))
    return out


@pytest.mark.parametrize("tau", [0.07, 0.2, 1.0])
def test_queue_form_matches_float64_reference(tau):
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(2, 10, 6)).astype(np.float32)
    queue = rng.normal(size=(32, 6)).astype(np.float32)
    got = jax.jit(losses.infonce, static_argnums=3)(q, k, queue, tau)
    assert got.shape == (10,)
    np.testing.assert_allclose(got, _moco_reference(q, k, queue, tau), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("tau", [0.2, 1.0])
def test_in_batch_form_matches_float64_reference(tau):
    rng = np.random.default_rng(1)
    q, k = rng.normal(size=(2, 12, 5)).astype(np.float32)
    got = losses.infonce(q, k, None, tau)
    np.testing.assert_allclose(got, _in_batch_reference(q, k, tau), rtol=2e-5, atol=2e-5)


def test_moco_v3_scaled_loss_is_two_tau_cross_entropy():
    # Algorithm 1 of MoCo v3: CrossEntropyLoss(q @ k.T / tau, arange(N)) * 2 * tau, symmetrised.
    rng = np.random.default_rng(2)
    q1, q2, k1, k2 = rng.normal(size=(4, 8, 5)).astype(np.float32)
    tau = 0.2
    got = 2 * tau * (jnp.mean(losses.infonce(q1, k2, None, tau)) + jnp.mean(losses.infonce(q2, k1, None, tau)))
    want = 2 * tau * (_in_batch_reference(q1, k2, tau).mean() + _in_batch_reference(q2, k1, tau).mean())
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_hand_computed_cases():
    e = np.e
    q = jnp.eye(2)
    # In-batch, tau=1: positive sim 1, one orthogonal negative: log(1 + e^-1).
    np.testing.assert_allclose(losses.infonce(q, q, None, 1.0), np.full(2, np.log(1 + 1 / e)), rtol=1e-6)
    # Queue (-e1, -e2): each query has negatives of similarity -1 and 0: log((e + 1 + 1/e) / e).
    queue = jnp.array([[-1.0, 0.0], [0.0, -1.0]])
    np.testing.assert_allclose(losses.infonce(q, q, queue, 1.0), np.full(2, np.log((e + 1 + 1 / e) / e)), rtol=1e-6)


def test_queue_rows_need_not_be_normalised_and_keys_are_scale_invariant():
    rng = np.random.default_rng(3)
    q, k = rng.normal(size=(2, 6, 4)).astype(np.float32)
    queue = rng.normal(size=(16, 4)).astype(np.float32)
    a = losses.infonce(q, k, queue, 0.2)
    b = losses.infonce(3.0 * q, 0.5 * k, 7.0 * queue, 0.2)
    np.testing.assert_allclose(a, b, rtol=1e-5)


def test_infonce_gradients():
    rng = np.random.default_rng(4)
    q, k = rng.normal(size=(2, 5, 4))
    queue = rng.normal(size=(7, 4))
    with jax.enable_x64(True):
        f = lambda a, b: jnp.mean(losses.infonce(a, b, jnp.asarray(queue), 0.5))
        check_grads(f, (jnp.asarray(q), jnp.asarray(k)), order=1, modes=("rev",), atol=1e-4, rtol=1e-4)
        g = lambda a, b: jnp.mean(losses.infonce(a, b, None, 0.5))
        check_grads(g, (jnp.asarray(q), jnp.asarray(k)), order=1, modes=("rev",), atol=1e-4, rtol=1e-4)


def test_gradient_through_stopped_keys_and_queue_is_exactly_zero():
    rng = np.random.default_rng(5)
    q, k = jnp.asarray(rng.normal(size=(2, 6, 4)), jnp.float32)
    queue = jnp.asarray(rng.normal(size=(8, 4)), jnp.float32)
    f = lambda q, k, n: jnp.mean(losses.infonce(q, jax.lax.stop_gradient(k), jax.lax.stop_gradient(n), 0.2))
    gq, gk, gn = jax.grad(f, argnums=(0, 1, 2))(q, k, queue)
    assert float(jnp.abs(gk).max()) == 0.0 and float(jnp.abs(gn).max()) == 0.0
    assert float(jnp.abs(gq).max()) > 0.0


def test_infonce_falls_under_gradient_descent():
    rng = np.random.default_rng(6)
    q0, k = jnp.asarray(rng.normal(size=(2, 16, 8)), jnp.float32)
    queue = jnp.asarray(rng.normal(size=(64, 8)), jnp.float32)
    f = jax.jit(jax.value_and_grad(lambda q: jnp.mean(losses.infonce(q, k, queue, 0.2))))
    q, (first, _) = q0, f(q0)
    for _ in range(30):
        value, g = f(q)
        q = q - 1.0 * g
    assert value < first - 0.5


def test_infonce_rejects_bad_input():
    with pytest.raises(ValueError, match="equal shape"):
        losses.infonce(jnp.ones((4, 3)), jnp.ones((5, 3)))
    with pytest.raises(ValueError, match="queue"):
        losses.infonce(jnp.ones((4, 3)), jnp.ones((4, 3)), jnp.ones((8, 2)))
    with pytest.raises(ValueError, match="temperature"):
        losses.infonce(jnp.ones((4, 3)), jnp.ones((4, 3)), temperature=0.0)
