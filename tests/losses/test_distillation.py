"""DINO, iBOT patch, KoLeo and centre update against float64 NumPy re-derivations of the official code."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxssl import losses


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _log_softmax(x):
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _dino_reference(student, teacher, center, tau_s, tau_t):
    """facebookresearch/dino `DINOLoss.forward` in float64 (views stacked along the batch there)."""
    student_out = [s / tau_s for s in student]
    teacher_out = [_softmax((t - center) / tau_t) for t in teacher]
    total, n = 0.0, 0
    for iq, q in enumerate(teacher_out):
        for v in range(len(student_out)):
            if v == iq:
                continue
            total = total + np.sum(-q * _log_softmax(student_out[v]), axis=-1)
            n += 1
    return total / n  # per example; the reference takes its mean


@pytest.fixture(scope="module")
def logits():
    rng = np.random.default_rng(0)
    return rng.normal(size=(5, 6, 7)) * 2, rng.normal(size=(2, 6, 7)) * 2, rng.normal(size=(7,)) * 0.5


def test_dino_matches_reference(logits):
    student, teacher, center = logits
    targets = losses.centered_softmax(jnp.asarray(teacher, jnp.float32), jnp.asarray(center, jnp.float32), 0.04)
    got = jax.jit(lambda s, t: losses.dino(s, t, student_temperature=0.1))(jnp.asarray(student, jnp.float32), targets)
    want = _dino_reference(student, teacher, center, 0.1, 0.04)
    assert got.shape == (6,)
    np.testing.assert_allclose(got, want, rtol=2e-5)


def test_dino_with_only_global_views_and_gradients(logits):
    student, teacher, center = logits
    targets = jax.nn.softmax(jnp.asarray(teacher, jnp.float32) / 0.07)
    got = losses.dino(jnp.asarray(student[:2], jnp.float32), targets, student_temperature=0.1)
    np.testing.assert_allclose(got, _dino_reference(student[:2], teacher, 0.0, 0.1, 0.07), rtol=2e-5)
    check_grads(lambda s: losses.dino(s, targets, student_temperature=0.1).mean(),
                (jnp.asarray(student, jnp.float32),), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)
    with pytest.raises(ValueError, match="More teacher views"):
        losses.dino(jnp.zeros((1, 6, 7)), targets)


def test_dino_is_minimised_by_matching_the_teacher():
    # H(p, q) >= H(p, p): student logits tau_s * log(p) reproduce the target, and the loss is H(p).
    p = jax.nn.softmax(jax.random.normal(jax.random.key(0), (4, 5)))
    targets = jnp.stack([p, p])
    matched = losses.dino(jnp.stack([jnp.log(p) * 0.1] * 3), targets)
    np.testing.assert_allclose(matched, -jnp.sum(p * jnp.log(p), -1), rtol=1e-5)
    shifted = losses.dino(jnp.stack([jnp.log(p) * 0.1 + jax.random.normal(jax.random.key(1), (4, 5))] * 3), targets)
    assert bool(jnp.all(shifted > matched))


def test_update_center_is_the_batch_mean_ema():
    rng = np.random.default_rng(1)
    center, t = rng.normal(size=8), rng.normal(size=(2, 16, 8))
    got = losses.update_center(jnp.asarray(center, jnp.float32), jnp.asarray(t, jnp.float32), 0.9)
    # dino.update_center: sum over the batch (all-reduced), divided by the global row count.
    want = 0.9 * center + 0.1 * t.reshape(-1, 8).sum(0) / 32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert jax.grad(lambda x: losses.update_center(jnp.zeros(8), x).sum())(jnp.ones((4, 8))).max() == 0.0


def test_ibot_patch_matches_reference():
    rng = np.random.default_rng(2)
    s, t = rng.normal(size=(3, 10, 6)) * 2, _softmax(rng.normal(size=(3, 10, 6)) / 0.07)
    mask = rng.random((3, 10)) < 0.4
    mask[2] = False  # an image without masked patches contributes 0, not nan
    # ibot/loss.py: sum(-t * log_softmax(s / tau_s), -1), masked mean over patches with clamp(min=1).
    ce = np.sum(-t * _log_softmax(s / 0.1), -1)
    want = (ce * mask).sum(-1) / np.maximum(mask.sum(-1), 1.0)
    got = jax.jit(lambda a, b, m: losses.ibot_patch(a, b, m, student_temperature=0.1))(
        jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32), jnp.asarray(mask))
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
    assert float(got[2]) == 0.0
    with pytest.raises(ValueError, match="mask"):
        losses.ibot_patch(jnp.zeros((3, 10, 6)), jnp.zeros((3, 10, 6)), jnp.zeros((3, 9), bool))


def test_koleo_matches_reference():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(12, 5))
    # dinov2 KoLeoLoss: l2-normalise, nearest neighbour by the largest inner product (self
    # excluded), -log(distance + eps).
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    dots = u @ u.T
    np.fill_diagonal(dots, -np.inf)
    d = np.linalg.norm(u - u[dots.argmax(1)], axis=1)
    want = -np.log(d + 1e-8)
    got = jax.jit(losses.koleo)(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(got, want, rtol=1e-4)
    # Spreading the points lowers it: a tight cluster scores higher than orthogonal directions.
    assert float(losses.koleo(jnp.eye(4)).mean()) < float(losses.koleo(jnp.eye(4) * 0.01 + 1).mean())
    g = jax.grad(lambda z: losses.koleo(z).mean())(jnp.asarray(x, jnp.float32))
    assert bool(jnp.all(jnp.isfinite(g)))
    with pytest.raises(ValueError, match="B >= 2"):
        losses.koleo(jnp.ones((1, 3)))
