"""optimizer.weight_decay_end: DINO's cosine weight-decay schedule, and unchanged behaviour without it."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxssl.train import optim


def _cfg(**kw):
    base = dict(name="adamw", base_lr=1.0, lr_scaling="none", warmup_steps=0, end_lr_factor=1.0, weight_decay=0.04)
    return ml_collections.ConfigDict({**base, **kw})


def test_weight_decay_follows_dino_cosine_schedule():
    wd = optim.weight_decay(_cfg(weight_decay_end=0.4), total_steps=100)
    # dino.utils.cosine_scheduler(0.04, 0.4, ...): end + (base - end) * (1 + cos(pi * t / T)) / 2.
    for t in (0, 25, 50, 100):
        np.testing.assert_allclose(wd(t), 0.4 + (0.04 - 0.4) * 0.5 * (1 + np.cos(np.pi * t / 100)), rtol=1e-5)


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_scheduled_decay_reaches_the_update(name):
    # With zero gradients (and lr 1) the update is -wd(t) * p on kernels only: read wd(t) back.
    cfg = _cfg(name=name, weight_decay_end=0.4, momentum=0.0, trust_coefficient=1.0)
    tx, _ = optim.make(cfg, batch_size=256, total_steps=10)
    params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
    zero = jax.tree_util.tree_map(jnp.zeros_like, params)
    state = tx.init(params)
    seen = []
    for _ in range(11):
        updates, state = tx.update(zero, state, params)
        seen.append(-float(updates["kernel"][0, 0]))
        assert float(jnp.abs(updates["bias"]).max()) == 0.0
    if name == "lars":  # LARS rescales the decayed update to trust_coefficient * ||p||.
        np.testing.assert_allclose(seen, 1.0, rtol=1e-5)
    else:
        np.testing.assert_allclose(seen[0], 0.04, rtol=1e-5)
        np.testing.assert_allclose(seen[5], 0.22, rtol=1e-5)  # half-way: the mean of the end points
        np.testing.assert_allclose(seen[10], 0.4, rtol=1e-5)


@pytest.mark.parametrize("end", [None, 0.04])
def test_without_an_end_value_nothing_changes(end):
    cfg = _cfg() if end is None else _cfg(weight_decay_end=end)
    assert optim.weight_decay(cfg, total_steps=10) == 0.04
    tx, _ = optim.make(cfg, batch_size=256, total_steps=10)
    ref, _ = optim.make(_cfg(), batch_size=256, total_steps=10)
    params = {"kernel": jnp.ones((2, 2))}
    # Same optimiser state structure as before the option existed (checkpoints stay compatible).
    assert jax.tree_util.tree_structure(tx.init(params)) == jax.tree_util.tree_structure(ref.init(params))
