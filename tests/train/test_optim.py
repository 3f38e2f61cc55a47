"""Optimiser chain: weight-decay mask, LR scaling and schedule end points."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxssl import schedules
from jaxssl.train import optim


def _cfg(**kw):
    base = dict(name="lars", base_lr=1.0, lr_scaling="linear", warmup_steps=10, weight_decay=1e-4, momentum=0.9)
    return ml_collections.ConfigDict({**base, **kw})


def test_decay_mask_excludes_biases_and_norms():
    params = {"dense": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)}, "bn": {"scale": jnp.ones(4)},
              "conv": {"kernel": jnp.ones((3, 3, 2, 4))}}
    mask = optim.decay_mask(params)
    assert mask == {"dense": {"kernel": True, "bias": False}, "bn": {"scale": False}, "conv": {"kernel": True}}


@pytest.mark.parametrize("scaling,expected", [("linear", 2.0), ("sqrt", np.sqrt(512)), ("none", 1.0)])
def test_peak_learning_rate_scaling(scaling, expected):
    lr = optim.learning_rate(_cfg(lr_scaling=scaling), batch_size=512, total_steps=100)
    np.testing.assert_allclose(lr(10), expected, rtol=1e-6)
    assert float(lr(0)) == 0.0
    np.testing.assert_allclose(lr(100), 0.0, atol=1e-7)


def test_warmup_cosine_midpoint():
    f = schedules.warmup_cosine(1.0, total_steps=110, warmup_steps=10)
    np.testing.assert_allclose(f(5), 0.5, rtol=1e-6)
    np.testing.assert_allclose(f(60), 0.5, rtol=1e-5)  # half-way through the cosine
    np.testing.assert_allclose(schedules.warmup_cosine(1.0, 10, 10)(10), 1.0)


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_weight_decay_touches_only_kernels(name):
    params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
    tx, _ = optim.make(_cfg(name=name, weight_decay=0.5, warmup_steps=0), batch_size=256, total_steps=10)
    zero = jax.tree_util.tree_map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params)
    assert float(jnp.abs(updates["bias"]).max()) == 0.0
    assert float(jnp.abs(updates["kernel"]).max()) > 0.0


def test_exclude_rank1_false_decays_everything_like_torch_sgd():
    """MoCo v2 / SimSiam: torch SGD(model.parameters(), weight_decay): g + wd * p for every tensor."""
    rng = np.random.default_rng(0)
    params = {"kernel": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32), "bias": jnp.asarray(rng.normal(size=2),
                                                                                                  jnp.float32)}
    grads = jax.tree_util.tree_map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
    lr, wd = 0.1, 0.5
    for exclude in (False, True):
        tx, _ = optim.make(_cfg(name="sgd", base_lr=lr, lr_scaling="none", warmup_steps=0, weight_decay=wd,
                                momentum=0.9, exclude_rank1=exclude), batch_size=256, total_steps=1000)
        updates, _ = tx.update(grads, tx.init(params), params)
        for k in params:
            p, g = np.asarray(params[k], np.float64), np.asarray(grads[k], np.float64)
            decayed = not exclude or p.ndim > 1
            want = -lr * (g + (wd * p if decayed else 0.0))  # first step: momentum buffer = d_p
            np.testing.assert_allclose(np.asarray(updates[k]), want, rtol=1e-5, err_msg=f"{k} {exclude}")


def test_exclude_rank1_false_lars_adapts_biases():
    """SwAV: LARC over model.parameters(): every tensor gets the trust ratio and the decay."""
    params = {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.full(2, 3.0)}
    grads = {"kernel": jnp.full((2, 2), 0.5), "bias": jnp.full(2, 0.25)}
    tx, _ = optim.make(_cfg(name="lars", base_lr=1.0, lr_scaling="none", warmup_steps=0, weight_decay=0.1,
                            trust_coefficient=0.02, exclude_rank1=False), batch_size=256, total_steps=1000)
    updates, _ = tx.update(grads, tx.init(params), params)
    for k in params:
        p, g = np.asarray(params[k], np.float64).ravel(), np.asarray(grads[k], np.float64).ravel()
        d = g + 0.1 * p
        trust = 0.02 * np.linalg.norm(p) / np.linalg.norm(d)  # optax.lars: eta ||p|| / ||g + wd p||
        np.testing.assert_allclose(np.asarray(updates[k]).ravel(), -trust * d, rtol=1e-5, err_msg=k)


def test_grad_clip_and_unknown_optimizer():
    tx, _ = optim.make(_cfg(name="sgd", grad_clip=1.0, weight_decay=0.0, warmup_steps=0, momentum=0.0,
                            lr_scaling="none"), 256, 10)
    params = {"w": jnp.zeros(4)}
    updates, _ = tx.update({"w": jnp.full(4, 10.0)}, tx.init(params), params)
    np.testing.assert_allclose(jnp.linalg.norm(updates["w"]), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="Unknown optimizer.name"):
        optim.make(_cfg(name="adam"), 256, 10)


def test_per_param_grad_clip_matches_numpy():
    """DINO's `clip_gradients`: each tensor scaled by min(1, c / (||g|| + 1e-6)) on its own."""
    rng = np.random.default_rng(0)
    grads = {"big": rng.normal(size=(3, 4)).astype(np.float32) * 10.0,  # norm ~35 > 3: clipped
             "small": rng.normal(size=(5,)).astype(np.float32) * 0.1,  # norm ~0.2 < 3: untouched
             "conv": rng.normal(size=(2, 2, 3, 2)).astype(np.float32)}  # norm ~4.9 > 3: clipped
    want = {k: g * min(1.0, 3.0 / (np.linalg.norm(g.astype(np.float64)) + 1e-6)) for k, g in grads.items()}
    cfg = lambda mode: _cfg(name="sgd", grad_clip=3.0, grad_clip_mode=mode, weight_decay=0.0, warmup_steps=0,
                            momentum=0.0, lr_scaling="none")
    tx, _ = optim.make(cfg("per_param"), 256, 10)
    params = jax.tree_util.tree_map(jnp.zeros_like, grads)
    updates, _ = jax.jit(tx.update)(jax.tree_util.tree_map(jnp.asarray, grads), tx.init(params), params)
    for k in grads:  # sgd at lr 1 (constant: cosine at step 0) negates the clipped gradient
        np.testing.assert_allclose(-np.asarray(updates[k]), want[k], rtol=1e-5, err_msg=k)
    np.testing.assert_allclose(np.linalg.norm(-np.asarray(updates["big"])), 3.0, rtol=1e-5)
    np.testing.assert_array_equal(-np.asarray(updates["small"]), grads["small"])
    # The global mode scales every tensor by the one factor c / ||g||_global instead.
    global_tx, _ = optim.make(cfg("global"), 256, 10)
    g_updates, _ = global_tx.update(grads, global_tx.init(params), params)
    total = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads.values()))
    np.testing.assert_allclose(-np.asarray(g_updates["small"]), grads["small"] * 3.0 / total, rtol=1e-5)
    with pytest.raises(ValueError, match="grad_clip_mode"):
        optim.make(cfg("layer"), 256, 10)


def _clipped_lars_reference(params, grads_per_step, lrs, wd, eta, momentum, adapt):
    """float64 NumPy LARS with the rate capped at the lr (solo-learn `clip_lr`, apex LARC clip=True), in
    optax's order: u = g + wd w; s = min(eta |w| / (lr |u|), 1) on adapted tensors; buf = mu buf + lr s u."""
    w = {k: np.asarray(v, np.float64) for k, v in params.items()}
    buf = {k: np.zeros_like(v) for k, v in w.items()}
    steps = []
    for grads, lr in zip(grads_per_step, lrs):
        out = {}
        for k in w:
            u = np.asarray(grads[k], np.float64) + (wd * w[k] if adapt[k] else 0.0)
            s = 1.0
            if adapt[k] and lr > 0 and np.linalg.norm(u) > 0 and np.linalg.norm(w[k]) > 0:
                s = min(eta * np.linalg.norm(w[k]) / (lr * np.linalg.norm(u)), 1.0)
            buf[k] = momentum * buf[k] + lr * s * u
            out[k] = -buf[k]
            w[k] = w[k] - buf[k]
        steps.append(out)
    return steps


def test_clipped_lars_matches_numpy_over_a_schedule():
    """`trust_clip` (solo-learn `clip_lr`): small gradients get plain SGD steps (the cap), large ones
    LARS steps; lr 0 gives 0."""
    rng = np.random.default_rng(0)
    params = {"small_grad": rng.normal(size=(4, 3)), "large_grad": rng.normal(size=(2, 2, 3)),
              "bias": rng.normal(size=3)}
    scale = {"small_grad": 1e-3, "large_grad": 30.0, "bias": 1.0}
    grads = [{k: rng.normal(size=v.shape) * scale[k] for k, v in params.items()} for _ in range(6)]
    cfg = _cfg(name="lars", base_lr=0.5, lr_scaling="linear", warmup_steps=2, weight_decay=1e-2,
               trust_coefficient=0.02, momentum=0.9, trust_clip=True)
    tx, lr_fn = optim.make(cfg, batch_size=512, total_steps=6)
    lrs = [float(lr_fn(t)) for t in range(6)]
    assert lrs[0] == 0.0 and max(lrs) == pytest.approx(1.0)
    adapt = {k: v.ndim > 1 for k, v in params.items()}
    want = _clipped_lars_reference(params, grads, lrs, 1e-2, 0.02, 0.9, adapt)
    p = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float32), params)
    state = tx.init(p)
    update = jax.jit(tx.update)
    for t in range(6):
        g = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float32), grads[t])
        updates, state = update(g, state, p)
        for k in params:
            np.testing.assert_allclose(np.asarray(updates[k]), want[t][k], rtol=2e-5, atol=1e-9,
                                       err_msg=f"{k} step {t}")
        p = optax.apply_updates(p, updates)
    # First step at lr 0.3 (no warm-up; cosine at step 0): a tiny gradient gets plain SGD's -lr u when
    # clipped, unclipped LARS's -lr eta |w| u / |u| (a step of lr eta |w| whatever the gradient).
    w, g = {"kernel": jnp.ones((4, 4))}, {"kernel": jnp.full((4, 4), 1e-4)}
    one = lambda clip: optim.make(_cfg(name="lars", base_lr=0.3, lr_scaling="none", warmup_steps=0,
                                       weight_decay=0.0, trust_coefficient=0.02, trust_clip=clip), 256, 1000)[0]
    clipped, plain = ((lambda tx: np.asarray(tx.update(g, tx.init(w), w)[0]["kernel"]))(one(c)) for c in (True, False))
    np.testing.assert_allclose(clipped, -0.3 * 1e-4, rtol=1e-5)
    np.testing.assert_allclose(plain, -0.3 * 0.02 * 4.0 / 4.0, rtol=1e-5)  # |w| = 4, u / |u| = 1/4 each


def test_clipped_lars_fixed_lr_paths_and_validation():
    """A constant lr (fixed_lr_paths) works too, and `trust_clip` is a validated LARS key."""
    from configs import byol_cifar10
    from jaxssl.train import validate
    params = {"predictor": {"kernel": jnp.ones((3, 3))}, "encoder": {"kernel": jnp.ones((3, 3))}}
    cfg = _cfg(name="lars", warmup_steps=0, trust_clip=True, trust_coefficient=0.02, fixed_lr_paths="^predictor/")
    tx, _ = optim.make(cfg, batch_size=256, total_steps=10)
    g = jax.tree_util.tree_map(lambda v: v * 1e-4, params)
    updates, _ = tx.update(g, tx.init(params), params)
    assert all(np.isfinite(np.asarray(u)).all() for u in jax.tree_util.tree_leaves(updates))
    for value, ok in ((True, True), ("yes", False)):
        raw = byol_cifar10.get_config("runlocal").to_dict()
        raw["optimizer"]["trust_clip"] = value  # as a config file could write it (no ConfigDict type lock)
        config = ml_collections.ConfigDict(raw)
        if ok:
            validate.validate_config(config)
        else:
            with pytest.raises(TypeError, match="trust_clip must be a bool"):
                validate.validate_config(config)


@pytest.mark.parametrize("clip", [True, False])
def test_lars_matches_solo_learn(clip):
    """jaxssl's LARS (`trust_clip` on / off) against solo-learn's (`clip` on / off), five steps, fixture
    from benchmarks/solo_lars_reference.py (weight decay 0 and a constant lr: the cases where the two
    must agree exactly; that script's docstring says why)."""
    import json
    import os
    with open(os.path.join(os.path.dirname(__file__), "solo_lars.json")) as f:
        ref = json.load(f)
    s = ref["settings"]
    cfg = _cfg(name="lars", base_lr=s["lr"], lr_scaling="none", warmup_steps=0, end_lr_factor=1.0,
               weight_decay=s["weight_decay"], trust_coefficient=s["eta"], momentum=s["momentum"], trust_clip=clip)
    tx, lr = optim.make(cfg, batch_size=256, total_steps=s["steps"])
    assert all(float(lr(t)) == pytest.approx(s["lr"]) for t in range(s["steps"]))
    with jax.enable_x64(True):
        params = {k: jnp.asarray(v, jnp.float64) for k, v in ref["params"].items()}
        state = tx.init(params)
        for t, grads in enumerate(ref["grads"]):
            updates, state = tx.update({k: jnp.asarray(v, jnp.float64) for k, v in grads.items()}, state, params)
            params = optax.apply_updates(params, updates)
            for k, want in ref["after_step"]["clip" if clip else "no_clip"][t].items():
                # float64 arrays; the schedule's and the optimiser's constants are float32 (rel. ~1e-8).
                np.testing.assert_allclose(np.asarray(params[k]), np.asarray(want), rtol=1e-6, atol=1e-12,
                                           err_msg=f"{k} after step {t + 1}")
    # The tolerance separates the two: clipping changes the adapted tensors by far more than it.
    final = {c: np.asarray(ref["after_step"][c][-1]["small_grad"]) for c in ("clip", "no_clip")}
    assert np.abs(final["clip"] - final["no_clip"]).max() > 1e-3 * np.abs(final["clip"]).max()
    if clip:  # the fixture exercises the cap: the small-gradient tensor moved by plain SGD steps
        moved = np.asarray(ref["after_step"]["clip"][0]["small_grad"]) - np.asarray(ref["params"]["small_grad"])
        np.testing.assert_allclose(moved, -s["lr"] * np.asarray(ref["grads"][0]["small_grad"]), rtol=1e-10)
