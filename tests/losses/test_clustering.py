"""SwAV swapped prediction against a float64 NumPy re-derivation of the official main_swav.py."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import losses, ops


def _sinkhorn_reference(out, epsilon, iters):
    """facebookresearch/swav `distributed_sinkhorn` on one process, float64."""
    q = np.exp(out / epsilon).T  # K x B
    b, k = q.shape[1], q.shape[0]
    q = q / q.sum()
    for _ in range(iters):
        q = q / q.sum(axis=1, keepdims=True) / k
        q = q / q.sum(axis=0, keepdims=True) / b
    return (q * b).T


def _swav_reference(scores, crops_for_assign, temperature, epsilon=0.05, iters=3):
    """main_swav.py's loss per example: codes of the assigned crops, swapped cross entropy."""
    loss = 0.0
    for crop_id in crops_for_assign:
        q = _sinkhorn_reference(scores[crop_id], epsilon, iters)
        subloss = 0.0
        for v in np.delete(np.arange(len(scores)), crop_id):
            x = scores[v] / temperature
            log_p = x - x.max(1, keepdims=True) - np.log(np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True))
            subloss = subloss - np.sum(q * log_p, axis=1)
        loss = loss + subloss / (len(scores) - 1)
    return loss / len(crops_for_assign)


@pytest.mark.parametrize("num_crops,crops_for_assign", [(2, (0, 1)), (5, (0, 1)), (4, (1,))])
def test_swav_matches_reference(num_crops, crops_for_assign):
    rng = np.random.default_rng(num_crops)
    z = rng.normal(size=(num_crops, 16, 8))
    c = rng.normal(size=(8, 10))
    z, c = z / np.linalg.norm(z, axis=-1, keepdims=True), c / np.linalg.norm(c, axis=0, keepdims=True)
    scores = z @ c  # cosine scores in [-1, 1], as with normalised prototypes

    @jax.jit
    def loss(s):
        codes = jnp.stack([ops.sinkhorn_knopp(s[i], epsilon=0.05, num_iters=3) for i in crops_for_assign])
        return losses.swav(s, jax.lax.stop_gradient(codes), crops_for_assign, temperature=0.1)

    got = loss(jnp.asarray(scores, jnp.float32))
    assert got.shape == (16,)
    np.testing.assert_allclose(got, _swav_reference(scores, crops_for_assign, 0.1), rtol=1e-4)


def test_swav_prefers_predicting_the_code():
    codes = jax.nn.one_hot(jnp.arange(4) % 3, 3)[None]
    right = losses.swav(jnp.stack([codes[0], codes[0]]) * 10, codes, (0,), temperature=0.1)
    wrong = losses.swav(jnp.stack([codes[0], codes[0][::-1]]) * 10, codes, (0,), temperature=0.1)
    assert float(right.mean()) < 1e-3 < float(wrong.mean())
    with pytest.raises(ValueError, match="must index"):
        losses.swav(jnp.zeros((2, 4, 3)), codes, (2,))
    with pytest.raises(ValueError, match="temperature"):
        losses.swav(jnp.zeros((2, 4, 3)), codes, (0,), temperature=0.0)
