"""BYOL, MoCo v2, MoCo v3, SimSiam: loss wiring, stop-gradients, EMA teacher, queue, shuffle-BN,
and a short real CIFAR-10 run per method. (8 devices == 1 device, the queue's wrap-around
included, is tests/methods/test_every_method.py.)

Method-level checks use a tiny Conv-BN backbone (the methods are backbone-agnostic), so they
compile in seconds; the real-data runs use each config's `:runlocal` ResNet-18.
"""
import importlib
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxssl import methods, models, ops, schedules
from jaxssl.methods import moco_v2
from jaxssl.train import loop, optim, step as step_lib
from tests import multidevice

NAMES = ("byol", "moco_v2", "moco_v3", "simsiam")
KW = {
    "byol": dict(total_steps=4, proj_hidden=(16,), proj_dim=8, pred_hidden=(16,), base_momentum=0.9),
    "moco_v2": dict(queue_size=24, proj_hidden=(16,), proj_dim=8, bn_groups=4, momentum=0.9, temperature=0.2),
    "moco_v3": dict(total_steps=4, proj_hidden=(16,), proj_dim=8, pred_hidden=(16,), temperature=1.0),
    "simsiam": dict(proj_hidden=(16,), proj_dim=8, pred_hidden=(16,)),
}
N = 16  # batch
STEP = jnp.int32(0)  # the step index every direct loss call passes (none of these methods reads it)


class _Tiny(nn.Module):
    """Conv -> BatchNorm -> ReLU -> global mean: a backbone with BatchNorm that compiles fast."""

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Conv(8, (3, 3), strides=(2, 2))(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
        return jnp.mean(x, axis=(1, 2))


def _setup(name, **overrides):
    method = methods.get(name, backbone=_Tiny(), **{**KW[name], **overrides})
    variables = method.net.init(jax.random.key(0), jnp.zeros((2, 8, 8, 3)), train=True)
    params = variables["params"]
    model_state = {k: v for k, v in variables.items() if k != "params"}
    # A teacher that differs from the student, as after some training.
    noise = lambda p: p + 0.05 * jax.random.normal(jax.random.key(7), p.shape)
    teacher = {"params": jax.tree_util.tree_map(noise, params), **model_state}
    extra = method.init_extra(jax.random.key(3))
    rng = np.random.default_rng(0)
    views = [jnp.asarray(rng.normal(size=(N, 8, 8, 3)), jnp.float32) for _ in range(2)]
    return method, params, model_state, teacher, extra, views


def _apply(net, variables, x):
    """One train-mode forward (batch statistics), outputs as float64 numpy."""
    out, _ = net.apply(variables, x, train=True, mutable=[k for k in variables if k != "params"])
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _ce(logits, labels):
    m = logits.max(axis=1, keepdims=True)
    logz = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
    return logz - logits[np.arange(len(labels)), labels]


# ---------------------------------------------------------------------------------------------
# Each method's loss is the paper's formula of the network's outputs (float64 NumPy).
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_loss_matches_float64_formula_of_the_outputs(name):
    overrides = {"bn_groups": 1} if name == "moco_v2" else {}  # one BN group: a plain forward
    method, params, model_state, teacher, extra, views = _setup(name, **overrides)
    loss, (new_state, new_extra, metrics) = method.loss_fn(params, model_state, teacher, extra, views,
                                                           jax.random.key(5), STEP)
    s = [_apply(method.net, {"params": params, **model_state}, v) for v in views]
    t = [_apply(method.net, teacher, v) for v in views]
    cos = lambda a, b: np.sum(_unit(a) * _unit(b), axis=1)
    if name == "byol":  # Eq. 2, symmetrised: ||p1 - z2'||^2 + ||p2 - z1'||^2 on unit vectors.
        want = np.mean(np.sum((_unit(s[0]["prediction"]) - _unit(t[1]["projection"])) ** 2, 1)) + \
               np.mean(np.sum((_unit(s[1]["prediction"]) - _unit(t[0]["projection"])) ** 2, 1))
    elif name == "simsiam":  # Eq. 3 with the same network as target.
        want = 0.5 * (np.mean(-cos(s[0]["prediction"], s[1]["projection"])) +
                      np.mean(-cos(s[1]["prediction"], s[0]["projection"])))
    elif name == "moco_v3":  # Algorithm 1: ctr(q1, k2) + ctr(q2, k1), ctr = 2 tau CE(q k^T / tau).
        tau = KW[name]["temperature"]
        ctr = lambda q, k: 2 * tau * np.mean(_ce(_unit(q) @ _unit(k).T / tau, np.arange(N)))
        want = ctr(s[0]["prediction"], t[1]["projection"]) + ctr(s[1]["prediction"], t[0]["projection"])
    else:  # MoCo Eq. 1: the query of view 1, its key from view 2, negatives from the queue.
        tau = KW[name]["temperature"]
        q, k, queue = _unit(s[0]["projection"]), _unit(t[1]["projection"]), np.asarray(extra["queue"], np.float64)
        logits = np.concatenate([np.sum(q * k, 1, keepdims=True), q @ _unit(queue).T], axis=1) / tau
        want = np.mean(_ce(logits, np.zeros(N, int)))
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    assert jax.tree_util.tree_structure(new_state) == jax.tree_util.tree_structure(model_state)
    assert float(metrics["z_std"]) > 0


@pytest.mark.parametrize("name", ["byol", "moco_v2", "moco_v3"])
def test_gradient_with_respect_to_the_teacher_is_exactly_zero(name):
    method, params, model_state, teacher, extra, views = _setup(name)
    f = lambda p, t: method.loss_fn(p, model_state, t, extra, views, jax.random.key(5), STEP)[0]
    g_student, g_teacher = jax.grad(f, argnums=(0, 1))(params, teacher)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree_util.tree_leaves(g_teacher))
    assert float(optax.tree.norm(g_student)) > 0.0


def test_simsiam_gradient_flows_only_through_the_predictor_branch():
    method, params, model_state, _, extra, views = _setup("simsiam")
    net, mutable = method.net, list(model_state)
    grad_method = jax.grad(lambda p: method.loss_fn(p, model_state, None, extra, views, None, STEP)[0])(params)
    # The same loss with the targets replaced by constants computed beforehand.
    (o1, o2), _ = net.apply({"params": params, **model_state}, views, train=True, mutable=mutable, method="each")
    z1, z2 = o1["projection"], o2["projection"]

    def loss_with(p, target):
        (a, b), _ = net.apply({"params": p, **model_state}, views, train=True, mutable=mutable, method="each")
        t1, t2 = target(a, b)
        cos = lambda x, y: jnp.mean(jnp.sum(ops.l2_normalize(x) * ops.l2_normalize(y), -1))
        return -0.5 * (cos(a["prediction"], t2) + cos(b["prediction"], t1))

    grad_const = jax.grad(loss_with)(params, lambda a, b: (z1, z2))
    grad_through = jax.grad(loss_with)(params, lambda a, b: (a["projection"], b["projection"]))
    for x, y in zip(jax.tree_util.tree_leaves(grad_method), jax.tree_util.tree_leaves(grad_const)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)
    diff = optax.tree.norm(jax.tree_util.tree_map(lambda x, y: x - y, grad_method, grad_through))
    assert float(diff) > 1e-3 * float(optax.tree.norm(grad_through))  # the stop-gradient matters


# ---------------------------------------------------------------------------------------------
# EMA teacher: teacher <- m_k teacher + (1 - m_k) student after the update, m_k on BYOL's cosine.
# ---------------------------------------------------------------------------------------------
def test_ema_teacher_follows_the_update_formula_and_schedule():
    method = methods.get("byol", backbone=_Tiny(), **KW["byol"])
    tx = optax.sgd(0.5, momentum=0.9)
    state = step_lib.init_state(method, tx, jax.random.key(1), jnp.zeros((2, 8, 8, 3)))
    view = dict(crop_size=8, crop_scale=(0.5, 1.0), flip_p=0.5, mean=(0.5,) * 3, std=(0.25,) * 3)
    step = step_lib.make_step_fn(method, tx, [view, view])  # eager: a tiny net runs faster than it compiles
    batch = {"image": np.random.default_rng(0).integers(0, 256, size=(N, 8, 8, 3), dtype=np.uint8)}
    f64 = lambda t: [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(t)]
    np.testing.assert_array_equal(np.concatenate([x.ravel() for x in f64(state.teacher["params"])]),
                                  np.concatenate([x.ravel() for x in f64(state.params)]))  # starts as a copy
    schedule = schedules.cosine_momentum(KW["byol"]["base_momentum"], KW["byol"]["total_steps"])
    for k in range(3):
        old = f64(state.teacher)
        state, metrics = step(state, batch, jax.random.key(0))
        m = float(schedule(k))
        np.testing.assert_allclose(float(metrics["teacher_momentum"]), m, rtol=1e-7)
        new_student = f64({"params": state.params, **state.model_state})
        for t_new, t_old, s_new in zip(f64(state.teacher), old, new_student):
            np.testing.assert_allclose(t_new, m * t_old + (1 - m) * s_new, rtol=1e-5, atol=1e-6)
    assert not np.allclose(f64(state.teacher["params"])[0], f64(state.params)[0])  # the teacher lags


# ---------------------------------------------------------------------------------------------
# MoCo v2: the ring buffer, what it holds, and shuffle-BN.
# ---------------------------------------------------------------------------------------------
def test_enqueue_wraps_around_the_ring_buffer():
    queue = jnp.arange(10.0).reshape(5, 2)
    keys = -jnp.arange(1.0, 9.0).reshape(4, 2)
    new, ptr = moco_v2.enqueue(queue, jnp.asarray(3, jnp.int32), keys)
    assert int(ptr) == 2
    np.testing.assert_array_equal(np.asarray(new)[[3, 4, 0, 1]], keys)  # the oldest rows, in order, wrapping
    np.testing.assert_array_equal(np.asarray(new)[2], np.asarray(queue)[2])  # untouched
    full, ptr = moco_v2.enqueue(queue, jnp.asarray(0, jnp.int32), jnp.ones((5, 2)))
    assert int(ptr) == 0 and float(full.min()) == 1.0
    with pytest.raises(ValueError, match="queue_size"):
        moco_v2.enqueue(queue, jnp.asarray(0, jnp.int32), jnp.ones((6, 2)))


def test_moco_v2_enqueues_this_batchs_normalised_keys_after_the_loss():
    method, params, model_state, teacher, extra, views = _setup("moco_v2", bn_groups=1)
    extra = {**extra, "ptr": jnp.asarray(20, jnp.int32)}  # 20 + 16 wraps past K = 24
    _, (_, new_extra, _) = method.loss_fn(params, model_state, teacher, extra, views, jax.random.key(5), STEP)
    keys = _unit(_apply(method.net, teacher, views[1])["projection"])
    rows = (20 + np.arange(N)) % 24
    np.testing.assert_allclose(np.asarray(new_extra["queue"])[rows], keys, rtol=1e-5, atol=1e-6)
    untouched = np.setdiff1d(np.arange(24), rows)
    np.testing.assert_array_equal(np.asarray(new_extra["queue"])[untouched], np.asarray(extra["queue"])[untouched])
    assert int(new_extra["ptr"]) == (20 + N) % 24


def test_shuffle_bn_normalises_each_key_with_its_own_group_only():
    """A key depends on the images of its BN group (under the shuffle), on no other image."""
    method, params, model_state, _, _, views = _setup("moco_v2")
    net, variables, groups, x = method.net, {"params": params, **model_state}, 4, views[0]
    perm = jax.random.permutation(jax.random.key(11), N)
    group_of = np.empty(N, int)
    group_of[np.asarray(perm)] = np.arange(N) // (N // groups)  # x[perm][g*4:(g+1)*4] is group g
    apply = lambda x, perm: moco_v2.grouped_apply(net, variables, x, groups, perm)[0]["projection"]
    base = np.asarray(apply(x, perm))
    j = 5
    changed = np.asarray(apply(x.at[j].add(3.0), perm))
    moved = np.abs(changed - base).max(axis=1) > 1e-6
    np.testing.assert_array_equal(moved, group_of == group_of[j])
    # The groups equal separate forward passes on each group's images (statistics per group).
    for g in range(groups):
        idx = np.asarray(perm)[g * 4:(g + 1) * 4]
        np.testing.assert_allclose(base[idx], _apply(net, variables, x[idx])["projection"], rtol=1e-5, atol=1e-6)
    # Without a permutation the groups are contiguous (the query side, MoCo's per-GPU BN), and the
    # shuffle puts some image in another group than its query: BN cannot pair them up.
    contiguous = np.arange(N) // (N // groups)
    assert np.any(contiguous != group_of)
    # Running averages written back: the mean of the groups' updates.
    _, state = moco_v2.grouped_apply(net, variables, x, groups)
    per_group = [net.apply(variables, x[g * 4:(g + 1) * 4], train=True, mutable=["batch_stats"])[1]
                 for g in range(groups)]
    for got, *each in zip(jax.tree_util.tree_leaves(state), *map(jax.tree_util.tree_leaves, per_group)):
        np.testing.assert_allclose(got, np.mean(each, axis=0), rtol=1e-5, atol=1e-7)


def test_moco_v3_needs_no_shuffle_bn_under_synchronised_bn():
    """With BN over the global batch, shuffling before the key encoder only permutes the keys,
    and the loss is invariant to the batch order: there is no BN shortcut to remove."""
    method, params, model_state, teacher, extra, views = _setup("moco_v3")
    perm = np.asarray(jax.random.permutation(jax.random.key(2), N))
    keys = _apply(method.net, teacher, views[1])["projection"]
    shuffled = _apply(method.net, teacher, views[1][perm])["projection"][np.argsort(perm)]
    np.testing.assert_allclose(shuffled, keys, rtol=1e-4, atol=1e-4)  # float32 reduction order only
    f = lambda v: method.loss_fn(params, model_state, teacher, extra, v, jax.random.key(0), STEP)[0]
    np.testing.assert_allclose(f(views), f([v[perm] for v in views]), rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Configs: every variant builds its method and optimiser; K of the momentum follows total_steps.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("arg", ["", "cpu", "runlocal"])
def test_configs_build(name, arg):
    config = importlib.import_module(f"configs.{name}_cifar10").get_config(arg)
    assert config.method == name
    loop.validate_config(config)
    method = methods.get(config.method, backbone=models.get(**config.model), **config.method_kw)
    optim.make(config.optimizer, config.batch_size, config.total_steps)
    assert len(config.input.views) == 2
    if "total_steps" in config.method_kw:
        assert config.method_kw.total_steps == config.total_steps
        config.total_steps = 123  # as `--config.total_steps=123` does
        assert config.method_kw.total_steps == 123
    if name == "moco_v2":
        assert config.method_kw.queue_size >= config.batch_size and config.batch_size % config.method_kw.bn_groups == 0
    assert isinstance(method, methods.Method)
    if name == "simsiam":  # fix_pred_lr: the regex selects exactly the predictor (same tree with _Tiny).
        tiny = methods.get(name, backbone=_Tiny(), **config.method_kw)
        params = jax.eval_shape(lambda: tiny.net.init(jax.random.key(0), jnp.zeros((2, 8, 8, 3))))["params"]
        labels = optim.fixed_lr_labels(params, config.optimizer.fixed_lr_paths)
        assert set(jax.tree_util.tree_leaves(labels["predictor"])) == {"fixed"}
        assert set(jax.tree_util.tree_leaves(labels["backbone"])) == {"scheduled"}
        assert set(jax.tree_util.tree_leaves(labels["projector"])) == {"scheduled"}


# ---------------------------------------------------------------------------------------------
# Real CIFAR-10 (the prepared subset): a few steps of each config lower the loss, no collapse.
# ---------------------------------------------------------------------------------------------
# At batch 32 the recipes' linearly scaled learning rates (e.g. 0.03 x 32/256 for SGD) barely
# move a network in 16 steps; these raise the step size so that 16 steps show learning.
_REAL_OVERRIDES = {
    "byol": {},
    # Queue full after 2 steps. Zero-init of the last BN per block: MoCo v2's reference init (torchvision's
    # ones) lowers the loss by only 0.014 in these 16 steps at 1/16 width (measured); this test checks that
    # the loss and the queue machinery learn, so it starts from the init the other recipes use.
    "moco_v2": {"optimizer.base_lr": 3.0, "method_kw.queue_size": 64, "model.zero_init_residual": True},
    "moco_v3": {"optimizer.base_lr": 3.0, "optimizer.trust_coefficient": 0.02},
    "simsiam": {"optimizer.base_lr": 1.0},
}

# The four runs share one subprocess, which compiles at XLA's CPU optimisation level 0
# (`multidevice.run`): these runs are compile-bound (a ResNet-18 step with four forward passes),
# and level 0 compiles it about 3x faster. It changes no HLO semantics, only the LLVM code generation.
_REAL_CODE = r"""
import importlib, json, os
from jaxssl.train import loop
data_dir, workdir, overrides = json.loads('ARGS_JSON')
out = {}
for name, extra in overrides.items():
    config = importlib.import_module(f"configs.{name}_cifar10").get_config("runlocal")
    config.data.data_dir = data_dir
    config.progress_bar = False
    config.model.width = 0.0625
    config.total_steps = 16
    config.log_steps = 1
    config.ckpt_steps = 16
    config.evals.knn.enabled = False  # tests/test_main.py covers the kNN evaluation end to end
    for key, value in extra.items():
        section, field = key.split(".")
        config[section][field] = value
    loop.train(config, os.path.join(workdir, name))
    records = [json.loads(l) for l in open(os.path.join(workdir, name, "metrics.jsonl")) if '"loss"' in l]
    out[name] = dict(loss=[r["loss"] for r in records], z_std=[r["z_std"] for r in records],
                     dim=config.method_kw.proj_dim)
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def real_runs(cifar10_data_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("real_runs"))
    return multidevice.run(_REAL_CODE.replace("ARGS_JSON", json.dumps([cifar10_data_dir, workdir, _REAL_OVERRIDES])),
                           devices=1)


@pytest.mark.parametrize("name", NAMES)
def test_short_real_cifar10_run_lowers_the_loss_without_collapse(name, real_runs):
    loss, z_std = np.array(real_runs[name]["loss"]), np.array(real_runs[name]["z_std"])
    assert len(loss) == 16 and np.all(np.isfinite(loss))
    first = loss[2:6] if name == "moco_v2" else loss[:4]  # MoCo v2: after random queue entries are gone
    assert loss[-4:].mean() < first.mean() - 0.03, (name, loss.round(3).tolist())
    # Embedding std of the L2-normalised projections: at most 1/sqrt(D) (isotropic), 0 if collapsed.
    dim = real_runs[name]["dim"]
    assert z_std.min() > 0.1 / np.sqrt(dim) and z_std[-1] > 0.5 * z_std[0], (name, z_std.round(3).tolist())
