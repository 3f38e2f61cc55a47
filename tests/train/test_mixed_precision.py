"""Mixed precision: bfloat16 compute, float32 parameters and float32 loss-critical reductions.

`config.dtype = "bfloat16"` reaches the backbone and heads as their compute `dtype`; parameters,
optimiser state and BatchNorm statistics stay float32 (flax `param_dtype`), and every loss-critical
reduction (softmax / log-softmax, Sinkhorn-Knopp, DINO centring, VICReg covariance, Barlow
cross-correlation, L2 normalisation) casts its inputs to float32 first. Checked here: (1) each such
function returns float32 for bfloat16 inputs AND equals its value on the same numbers given as
float32 (so nothing inside runs in bfloat16); (2) three SimCLR and three DINO train steps in
bfloat16 and float32 from the same initialisation agree within a stated tolerance.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxssl import losses, methods, models, ops
from jaxssl.train import step as step_lib

# Loss tolerance of bf16 vs f32 over 3 steps: bf16 has an 8-bit mantissa (relative rounding 2^-9 ~ 2e-3
# per operation); a few layers and 3 optimiser steps stay well within 2 %.
LOSS_RTOL = 2e-2


def _inputs(seed=0):
    r = np.random.default_rng(seed)
    return [jnp.asarray(r.normal(size=(8, 6)), jnp.bfloat16) for _ in range(3)]


_CRITICAL = {
    "nt_xent": lambda a, b, c: losses.nt_xent(a, b, 0.1),
    "infonce": lambda a, b, c: losses.infonce(a, b, c, 0.2),
    "l2_normalize": lambda a, b, c: ops.l2_normalize(a),
    "sinkhorn_knopp": lambda a, b, c: ops.sinkhorn_knopp(a, epsilon=0.05),
    "swav": lambda a, b, c: losses.swav(jnp.stack([a, b]), jnp.stack([ops.sinkhorn_knopp(b), ops.sinkhorn_knopp(a)]),
                                        (0, 1), temperature=0.1),
    "centered_softmax": lambda a, b, c: losses.centered_softmax(a, b[0], 0.04),
    "dino": lambda a, b, c: losses.dino(jnp.stack([a, b]), jax.nn.softmax(jnp.stack([b, a]).astype(jnp.float32)),
                                        student_temperature=0.1),
    "update_center": lambda a, b, c: losses.update_center(b[0], a, 0.9),
    "vicreg_terms": lambda a, b, c: losses.vicreg_terms(a, b),
    "barlow_twins_terms": lambda a, b, c: losses.barlow_twins_terms(a, b),
    "cross_correlation": lambda a, b, c: ops.cross_correlation(a, b),
    "negative_cosine": lambda a, b, c: losses.negative_cosine(a, b),
    "koleo": lambda a, b, c: losses.koleo(a),
}


def test_loss_critical_functions_compute_in_float32():
    xs = _inputs()
    # One jitted program per input dtype for all functions (compile time is what a CPU test pays for).
    run = jax.jit(lambda *args: {name: f(*args) for name, f in _CRITICAL.items()})
    out_bf16, out_f32 = run(*xs), run(*(x.astype(jnp.float32) for x in xs))
    for name in _CRITICAL:
        for a, b in zip(jax.tree_util.tree_leaves(out_bf16[name]), jax.tree_util.tree_leaves(out_f32[name])):
            assert a.dtype == jnp.float32, (name, a.dtype)
            # Same numbers in, same result out: no bfloat16 rounding happened inside.
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6, err_msg=name)


_VIEW = dict(flip_p=0.5, mean=(0.5,) * 3, std=(0.25,) * 3)  # cheap to compile; the crops are not under test


def _make(name, dtype):
    # A one-block ViT (LayerNorm, attention softmax, GELU): bf16 convolutions are slow on CPU.
    backbone = models.get("vit", variant="S/4", width=16, depth=1, num_heads=2, img_size=8, dtype=dtype)
    if name == "simclr":  # projector with BatchNorm: its statistics stay float32 too
        return methods.get("simclr", backbone=backbone, proj_hidden=(16,), proj_dim=8, dtype=dtype)
    return methods.get("dino", backbone=backbone, total_steps=10, out_dim=32, hidden_dim=16, bottleneck_dim=8,
                       dtype=dtype)


@pytest.mark.parametrize("name", ["simclr", "dino"])
def test_bfloat16_and_float32_runs_agree_with_float32_params(name):
    # A small step size: the runs move, but the comparison is of precision, not of two trajectories
    # diverging (measured max relative loss difference: SimCLR 4.6e-3, DINO 8.1e-3; at lr 1e-3 SimCLR 1.7e-2).
    tx = optax.adam(3e-4)
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, size=(16, 8, 8, 3), dtype=np.uint8))
    runs = {}
    for dtype in (jnp.float32, jnp.bfloat16):
        method = _make(name, dtype)
        state = step_lib.init_state(method, tx, jax.random.key(1), jnp.zeros((2, 8, 8, 3)))
        step = jax.jit(step_lib.make_step_fn(method, tx, [_VIEW] * 2))
        init_params = state.params
        losses_ = []
        for _ in range(3):
            state, metrics = step(state, {"image": images}, jax.random.key(0))
            losses_.append(float(metrics["loss"]))
        runs[dtype] = (init_params, state, np.asarray(losses_))
    (p32, s32, l32), (p16, s16, l16) = runs[jnp.float32], runs[jnp.bfloat16]
    # Same initialisation: parameter init does not depend on the compute dtype.
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(p32), jax.tree_util.tree_leaves(p16)))
    # Parameters, optimiser state, BatchNorm statistics and teacher stay float32 under bf16 compute.
    for tree in (s16.params, s16.opt_state, s16.model_state, s16.teacher, s16.extra):
        for leaf in jax.tree_util.tree_leaves(tree):
            if jnp.issubdtype(leaf.dtype, jnp.floating):
                assert leaf.dtype == jnp.float32, leaf.dtype
    assert np.all(np.isfinite(l16)) and np.all(np.isfinite(l32))
    np.testing.assert_allclose(l16, l32, rtol=LOSS_RTOL)
    # The runs moved (the comparison is not of two untrained states).
    assert not np.array_equal(np.asarray(jax.tree_util.tree_leaves(s32.params)[0]),
                              np.asarray(jax.tree_util.tree_leaves(p32)[0]))
