"""ops.sinkhorn_knopp, cross_view_cross_entropy and stop_gradient_where.

The sharded == unsharded checks of Sinkhorn-Knopp (jit on a mesh of 8 devices and a shard_map +
psum version) run in the single multi-device subprocess of tests/methods/test_distillation_methods.py.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import ops
from tests.losses.test_clustering import _sinkhorn_reference


@pytest.fixture(scope="module")
def scores():
    return np.random.default_rng(0).normal(size=(32, 12)).astype(np.float32) * 0.5


def test_marginals_before_rescaling(scores):
    b, k = scores.shape
    q = ops.sinkhorn_knopp(jnp.asarray(scores), epsilon=0.05, num_iters=3) / b
    # The last iteration normalises the samples: each sums to exactly 1/B (the reference's
    # columns); the prototypes (rows) approach 1/K with the iterations.
    np.testing.assert_allclose(q.sum(1), 1 / b, rtol=1e-5)
    q = ops.sinkhorn_knopp(jnp.asarray(scores), epsilon=0.05, num_iters=300) / b
    np.testing.assert_allclose(q.sum(0), 1 / k, rtol=1e-3)
    np.testing.assert_allclose(q.sum(1), 1 / b, rtol=1e-5)


@pytest.mark.parametrize("epsilon,iters", [(0.05, 3), (0.5, 1), (0.1, 10)])
def test_matches_the_official_algorithm(scores, epsilon, iters):
    got = jax.jit(lambda s: ops.sinkhorn_knopp(s, epsilon=epsilon, num_iters=iters))(jnp.asarray(scores))
    want = _sinkhorn_reference(scores.astype(np.float64), epsilon, iters)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)


def test_log_domain_is_stable_for_large_logits(scores):
    # exp(s / eps) overflows float32 beyond s / eps ~ 88; the log-domain iteration does not.
    big = jnp.asarray(scores) * 100.0
    q = ops.sinkhorn_knopp(big, epsilon=0.05)
    assert bool(jnp.all(jnp.isfinite(q)))
    np.testing.assert_allclose(q.sum(1), 1.0, rtol=1e-5)


def test_valid_rows_equal_the_subset(scores):
    valid = np.arange(32) % 3 != 0
    q = ops.sinkhorn_knopp(jnp.asarray(scores), valid=jnp.asarray(valid))
    np.testing.assert_allclose(q[valid], ops.sinkhorn_knopp(jnp.asarray(scores[valid])), rtol=1e-5, atol=1e-7)
    assert float(jnp.abs(q[~valid]).max()) == 0.0
    g = jax.grad(lambda s: ops.sinkhorn_knopp(s, valid=jnp.asarray(valid))[:, 0].sum())(jnp.asarray(scores))
    assert bool(jnp.all(jnp.isfinite(g)))


def test_equipartition_spreads_a_collapsed_batch():
    # Every sample prefers prototype 0; the codes still use every prototype equally (SwAV's point).
    s = jnp.zeros((12, 4)).at[:, 0].set(1.0) + 0.01 * jax.random.normal(jax.random.key(0), (12, 4))
    q = ops.sinkhorn_knopp(s, epsilon=0.05, num_iters=50)
    np.testing.assert_allclose(q.sum(0), 3.0, rtol=1e-2)
    with pytest.raises(ValueError, match="epsilon"):
        ops.sinkhorn_knopp(s, epsilon=0.0)
    with pytest.raises(ValueError, match=r"\(B, K\)"):
        ops.sinkhorn_knopp(jnp.zeros(3))


def test_cross_view_cross_entropy_pairs():
    s = jax.random.normal(jax.random.key(0), (3, 2, 4))
    t = jax.nn.softmax(jax.random.normal(jax.random.key(1), (2, 2, 4)))
    got = ops.cross_view_cross_entropy(s, t, (0, 2), 0.5)
    ce = lambda a, v: -jnp.sum(t[a] * jax.nn.log_softmax(s[v] / 0.5), -1)
    np.testing.assert_allclose(got, (ce(0, 1) + ce(0, 2) + ce(1, 0) + ce(1, 1)) / 4, rtol=1e-6)
    with pytest.raises(ValueError, match="at least two views"):
        ops.cross_view_cross_entropy(s[:1], t[:1], (0,), 0.5)


def test_stop_gradient_where():
    f = lambda p, c: jnp.sum(ops.stop_gradient_where(c, p)["w"] ** 2)
    p = {"w": jnp.ones(3)}
    np.testing.assert_array_equal(jax.grad(f)(p, jnp.asarray(True))["w"], 0.0)
    np.testing.assert_array_equal(jax.grad(f)(p, jnp.asarray(False))["w"], 2.0)
    nested = {"head": {"last": jnp.ones(2), "mlp": jnp.ones(2)}, "backbone": jnp.ones(2)}
    g = jax.grad(lambda t: sum(jnp.sum(x ** 2) for x in jax.tree_util.tree_leaves(
        ops.stop_gradient_where(jnp.asarray(True), t, ("head", "last")))))(nested)
    np.testing.assert_array_equal(g["head"]["last"], 0.0)
    np.testing.assert_array_equal(g["head"]["mlp"], 2.0)
    np.testing.assert_array_equal(g["backbone"], 2.0)
