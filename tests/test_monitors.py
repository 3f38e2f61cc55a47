"""Tests for jaxssl.monitors: hand-built cases and NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import monitors


def test_feature_std_collapsed_is_zero():
    z = jnp.tile(jnp.array([[1.0, -2.0, 3.0, 0.5]]), (16, 1))
    assert float(jax.jit(monitors.feature_std)(z)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("dim", [64, 512])
def test_feature_std_gaussian_is_inverse_sqrt_dim(dim):
    z = jax.random.normal(jax.random.key(0), (4096, dim)) * 3.0 + 0.0
    assert float(monitors.feature_std(z)) == pytest.approx(1.0 / np.sqrt(dim), rel=0.03)


def test_feature_std_matches_numpy_and_flattens_leading_dims():
    z = np.random.default_rng(0).normal(size=(2, 8, 5)).astype(np.float32)
    rows = z.reshape(-1, 5)
    rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    expected = rows.std(axis=0).mean()
    assert float(monitors.feature_std(z)) == pytest.approx(expected, rel=1e-5)
    assert monitors.feature_std(z.astype(jnp.bfloat16)).dtype == jnp.float32


@pytest.mark.parametrize("rank", [1, 3, 8])
def test_effective_rank_of_low_rank_matrix(rank):
    rng = np.random.default_rng(rank)
    # Orthonormal factors and equal singular values: RankMe is exactly the rank.
    u, _ = np.linalg.qr(rng.normal(size=(128, rank)))
    v, _ = np.linalg.qr(rng.normal(size=(32, rank)))
    z = (u @ v.T).astype(np.float32)
    assert float(jax.jit(monitors.effective_rank)(z)) == pytest.approx(rank, rel=1e-3)
    # Unequal singular values: strictly between 1 and the rank.
    z_skewed = (u * np.linspace(1.0, 3.0, rank)) @ v.T
    assert 1.0 <= float(monitors.effective_rank(z_skewed)) <= rank + 1e-3


def test_effective_rank_identical_rows_and_full_rank():
    z = jnp.tile(jnp.arange(1.0, 9.0)[None], (64, 1))
    assert float(monitors.effective_rank(z)) == pytest.approx(1.0, abs=1e-3)
    assert float(monitors.effective_rank(jnp.zeros((8, 4)))) == pytest.approx(1.0, abs=1e-3)
    gaussian = jax.random.normal(jax.random.key(1), (2048, 16))
    assert 15.0 < float(monitors.effective_rank(gaussian)) <= 16.0


def test_effective_rank_matches_numpy():
    z = np.random.default_rng(2).normal(size=(50, 10)) * np.arange(1, 11)
    s = np.linalg.svd(z, compute_uv=False)
    p = s / s.sum() + 1e-7
    expected = np.exp(-np.sum(p * np.log(p)))
    assert float(monitors.effective_rank(z.astype(np.float32))) == pytest.approx(expected, rel=1e-4)


def test_entropy_uniform_and_one_hot():
    assert float(jax.jit(monitors.entropy)(jnp.zeros((4, 7)))) == pytest.approx(np.log(7), rel=1e-6)
    # Any logits at an enormous temperature are uniform.
    logits = jax.random.normal(jax.random.key(0), (3, 10))
    assert float(monitors.entropy(logits, temperature=1e6)) == pytest.approx(np.log(10), rel=1e-5)
    # One-hot probabilities given as log-probabilities with -inf: entropy 0, no nan.
    log_p = jnp.log(jnp.eye(5))
    assert float(monitors.entropy(log_p)) == pytest.approx(0.0, abs=1e-7)


def test_entropy_matches_numpy():
    logits = np.random.default_rng(3).normal(size=(6, 9)).astype(np.float32)
    t = 0.04
    p = np.exp(logits / t - (logits / t).max(1, keepdims=True))
    p = p / p.sum(1, keepdims=True)
    expected = np.mean(-np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), axis=1))
    assert float(monitors.entropy(logits, temperature=t)) == pytest.approx(expected, rel=1e-4)


def test_kl_divergence():
    a = jax.random.normal(jax.random.key(0), (8, 12))
    assert float(jax.jit(monitors.kl_divergence)(a, a)) == pytest.approx(0.0, abs=1e-6)
    # Shifting logits by a per-row constant leaves the distribution unchanged.
    assert float(monitors.kl_divergence(a, a + 5.0)) == pytest.approx(0.0, abs=1e-5)

    rng = np.random.default_rng(4)
    p_logits, q_logits = rng.normal(size=(2, 5, 6))
    tp, tq = 0.5, 2.0

    def softmax(x):
        e = np.exp(x - x.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    p, q = softmax(p_logits / tp), softmax(q_logits / tq)
    expected = np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1))
    got = monitors.kl_divergence(p_logits, q_logits, p_temperature=tp, q_temperature=tq)
    assert float(got) == pytest.approx(expected, rel=1e-4)
    assert float(got) > 0


def test_prototype_usage_hand_built():
    # Assignments: samples pick prototypes 0, 0, 1, 3 out of 4.
    q = jnp.eye(4)[jnp.array([0, 0, 1, 3])]
    out = jax.jit(lambda s: monitors.prototype_usage(s, from_logits=False))(q)
    assert float(out["usage"]) == pytest.approx(3 / 4)
    mean_q = np.array([0.5, 0.25, 0.0, 0.25])
    nz = mean_q[mean_q > 0]
    assert float(out["entropy"]) == pytest.approx(-np.sum(nz * np.log(nz)), rel=1e-6)

    # Collapsed logits: every sample prefers prototype 2.
    logits = jnp.tile(jnp.array([[0.0, 0.0, 9.0, 0.0, 0.0]]), (10, 1))
    out = monitors.prototype_usage(logits)
    assert float(out["usage"]) == pytest.approx(1 / 5)
    p = np.exp([0.0, 0.0, 9.0, 0.0, 0.0])
    p = p / p.sum()
    assert float(out["entropy"]) == pytest.approx(-np.sum(p * np.log(p)), rel=1e-3)

    # Perfect equipartition: every prototype used, entropy log K.
    out = monitors.prototype_usage(jnp.eye(6) * 50.0, temperature=0.1)
    assert float(out["usage"]) == 1.0
    assert float(out["entropy"]) == pytest.approx(np.log(6), rel=1e-5)


def test_monitors_pass_no_gradient():
    z = jax.random.normal(jax.random.key(0), (16, 4))
    for fn in (monitors.feature_std, monitors.effective_rank, monitors.entropy):
        grad = jax.grad(fn)(z)
        assert np.all(np.asarray(grad) == 0.0)


def test_monitors_match_float64_numpy():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(64, 8)) * np.linspace(0.1, 2.0, 8)
    s = np.linalg.svd(z, compute_uv=False)
    p = s / s.sum() + 1e-7
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    got = monitors.monitors(z.astype(np.float32))
    assert set(got) == {"rankme", "feature_std"} and all(isinstance(v, float) for v in got.values())
    np.testing.assert_allclose(got["rankme"], np.exp(-(p * np.log(p)).sum()), rtol=1e-5)
    np.testing.assert_allclose(got["feature_std"], zn.std(axis=0).mean(), rtol=1e-5)
    assert monitors.monitors(np.ones((16, 8), np.float32))["rankme"] < 1.01  # collapsed: rank 1
