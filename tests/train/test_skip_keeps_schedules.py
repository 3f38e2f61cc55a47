"""A skipped non-finite step does not shift the schedules inside a method's loss.

With `skip_nonfinite=True` a bad step keeps the old state but advances `state.step`. The loss
receives `state.step` (`jaxssl.methods.base.LossFn`), so the teacher temperature, the frozen last
layer (DINO, iBOT) and the queue start / frozen prototypes (SwAV) stay those that `state.step`
implies, like the teacher momentum computed by the step itself. (Methods used to count steps in
`extra`, which a skipped step rolls back: every later schedule value lagged by one.)
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxssl import methods, schedules
from jaxssl.train import sharding as shd, step as step_lib

B, STEPS, BAD = 8, 6, 2  # batch, steps run, the (0-based) step whose loss is NaN
VIEW = dict(crop_size=8, crop_scale=(0.5, 1.0), flip_p=0.5, mean=(0.5,) * 3, std=(0.25,) * 3)


class PixelMLP(nn.Module):
    """A tiny backbone that compiles fast: per-pixel Dense, global mean pool, Dense."""

    @nn.compact
    def __call__(self, x, train: bool = True):
        del train
        return nn.Dense(8)(jnp.mean(nn.gelu(nn.Dense(8)(x)), axis=(1, 2)))


def poisoned(method: methods.Method, bad_step: int) -> methods.Method:
    """`method` whose loss (hence every gradient) is NaN at step `bad_step`, unchanged otherwise."""

    def loss_fn(params, model_state, teacher, extra, views, rng, step):
        loss, aux = method.loss_fn(params, model_state, teacher, extra, views, rng, step)
        return loss * jnp.where(step == bad_step, jnp.nan, 1.0), aux

    # No embed/objective: the poisoned loss is not their composition any more.
    return method._replace(loss_fn=loss_fn, embed=None, objective=None)


def run(method, path):
    """STEPS skip_nonfinite steps on one batch: per-step metrics and the `path` sub-tree of params after each."""
    tx = optax.sgd(0.1)
    mesh = shd.make_mesh(jax.devices()[:1])
    images = np.random.default_rng(0).integers(0, 256, size=(B, 8, 8, 3), dtype=np.uint8)
    state = step_lib.init_state(method, tx, jax.random.key(0), jnp.zeros((2, 8, 8, 3)))
    train_step = step_lib.make_train_step(poisoned(method, BAD), tx, [VIEW, VIEW], mesh, skip_nonfinite=True)
    batch = shd.to_global({"image": images}, mesh)
    rows, sub = [], [_get(state.params, path)]
    for _ in range(STEPS):
        state, metrics = train_step(state, batch, jax.random.key(1))
        rows.append(jax.tree_util.tree_map(np.asarray, metrics))
        sub.append(_get(state.params, path))
    assert int(state.step) == STEPS
    assert [int(r["nonfinite_skipped"]) for r in rows] == [int(i == BAD) for i in range(STEPS)]
    return rows, sub


def _get(tree, path):
    for key in path:
        tree = tree[key]
    return jax.tree_util.tree_map(np.asarray, tree)


def _moved(a, b):
    return any(not np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def test_dino_teacher_temperature_and_last_layer_freeze_follow_state_step():
    kw = dict(total_steps=10, warmup_teacher_temperature=0.04, teacher_temperature=0.07,
              warmup_teacher_temperature_steps=STEPS, freeze_last_layer_steps=4, base_momentum=0.9)
    method = methods.get("dino", backbone=PixelMLP(), out_dim=16, hidden_dim=16, bottleneck_dim=8, **kw)
    rows, last = run(method, ("head", "last_layer"))
    tau = schedules.teacher_temperature(0.04, 0.07, STEPS)
    momentum = schedules.cosine_momentum(0.9, 10)
    for i, r in enumerate(rows):  # i == state.step when step i was taken
        np.testing.assert_allclose(r["teacher_temperature"], tau(i), rtol=1e-6, err_msg=f"step {i}")
        np.testing.assert_allclose(r["teacher_momentum"], momentum(i), rtol=1e-6, err_msg=f"step {i}")
        assert r["last_layer_frozen"] == float(i < 4), (i, r["last_layer_frozen"])
        # The freeze itself: steps 0-3 leave the last layer as it was (SGD, no weight decay).
        assert _moved(last[i], last[i + 1]) == (i >= 4 and i != BAD), i


def test_swav_queue_start_and_prototype_freeze_follow_state_step():
    method = methods.get("swav", backbone=PixelMLP(), proj_hidden=(), proj_dim=8, num_prototypes=6,
                         queue_size=B, queue_start_step=3, freeze_prototypes_steps=4)
    rows, prototypes = run(method, ("prototypes",))
    for i, r in enumerate(rows):
        # The queue (B rows) is full after step 0, so it is used from queue_start_step on.
        assert r["queue_used"] == float(i >= 3), (i, r["queue_used"])
        assert r["prototypes_frozen"] == float(i < 4), (i, r["prototypes_frozen"])
        # Renormalised in place after every step (the reference's, frozen or not): a frozen unit
        # prototype comes back within float32 rounding, not bit for bit.
        moved = any(np.abs(x - y).max() > 1e-6 for x, y in
                    zip(jax.tree_util.tree_leaves(prototypes[i]), jax.tree_util.tree_leaves(prototypes[i + 1])))
        assert moved == (i >= 4 and i != BAD), i
