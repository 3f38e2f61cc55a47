"""`optimizer.fixed_lr_paths` (SimSiam's fix_pred_lr): matching parameters keep the peak lr."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxssl.train import optim


def _cfg(**kw):
    base = dict(name="sgd", base_lr=0.5, lr_scaling="linear", warmup_steps=2, weight_decay=0.0, momentum=0.0,
                end_lr_factor=0.0)
    return ml_collections.ConfigDict({**base, **kw})


def _params():
    return {"backbone": {"conv": {"kernel": jnp.ones((3, 3, 2, 4))}},
            "projector": {"out": {"kernel": jnp.ones((4, 4)), "bias": jnp.ones(4)}},
            "predictor": {"dense0": {"kernel": jnp.ones((4, 2))},
                          "out": {"kernel": jnp.ones((2, 4)), "bias": jnp.ones(4)}}}


def test_labels_follow_the_regex_over_parameter_paths():
    labels = optim.fixed_lr_labels(_params(), "^predictor/")
    assert labels["predictor"] == {"dense0": {"kernel": "fixed"}, "out": {"kernel": "fixed", "bias": "fixed"}}
    assert labels["backbone"]["conv"]["kernel"] == "scheduled"
    assert labels["projector"]["out"] == {"kernel": "scheduled", "bias": "scheduled"}
    with pytest.raises(ValueError, match="matches no parameter.*backbone/conv/kernel"):
        optim.fixed_lr_labels(_params(), "^head/")


def test_fixed_parameters_get_the_constant_peak_lr_others_the_schedule():
    # Plain SGD without momentum or decay: update = -lr * grad, so lr can be read off the update.
    total, batch = 10, 512
    tx, lr = optim.make(_cfg(fixed_lr_paths="^predictor/"), batch_size=batch, total_steps=total)
    peak = 0.5 * batch / 256
    params = _params()
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    state = tx.init(params)
    update = jax.jit(tx.update)
    for step in range(total + 1):
        updates, state = update(grads, state, params)
        np.testing.assert_allclose(updates["predictor"]["dense0"]["kernel"], -peak, rtol=1e-6)
        np.testing.assert_allclose(updates["predictor"]["out"]["bias"], -peak, rtol=1e-6)
        np.testing.assert_allclose(updates["backbone"]["conv"]["kernel"], -lr(step), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(updates["projector"]["out"]["bias"], -lr(step), rtol=1e-6, atol=1e-9)
    assert float(lr(0)) == 0.0 and float(lr(total)) < 1e-6  # the schedule really warmed up and decayed


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_unset_or_empty_pattern_leaves_the_optimiser_unchanged(name):
    params = _params()
    grads = jax.tree_util.tree_map(lambda p: 0.1 * jnp.ones_like(p), params)
    outs = []
    for extra in ({}, {"fixed_lr_paths": ""}, {"fixed_lr_paths": None}):
        tx, _ = optim.make(_cfg(name=name, weight_decay=1e-3, momentum=0.9, **extra), batch_size=256, total_steps=10)
        state = tx.init(params)
        for _ in range(3):
            updates, state = tx.update(grads, state, params)
        outs.append((jax.tree_util.tree_structure(state), updates))
    for structure, updates in outs[1:]:
        assert structure == outs[0][0]
        for a, b in zip(jax.tree_util.tree_leaves(updates), jax.tree_util.tree_leaves(outs[0][1])):
            np.testing.assert_array_equal(a, b)


def test_fixed_group_keeps_lars_masks():
    # Weight decay still skips biases inside the fixed group (the masks see the group's subtree).
    tx, _ = optim.make(_cfg(name="lars", weight_decay=0.5, warmup_steps=0, fixed_lr_paths="^predictor/"),
                       batch_size=256, total_steps=10)
    params = _params()
    zero = jax.tree_util.tree_map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params)
    assert float(jnp.abs(updates["predictor"]["out"]["bias"]).max()) == 0.0
    assert float(jnp.abs(updates["predictor"]["out"]["kernel"]).max()) > 0.0
