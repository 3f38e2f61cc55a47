"""data2vec: targets vs NumPy, no gradient into the teacher, a short run per modality, 8 == 1 device, configs."""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxssl import methods
from jaxssl.methods import data2vec
from jaxssl.models import transformer
from jaxssl.train import step as step_lib
from tests import multidevice

TINY = dict(width=32, depth=2, num_heads=2, patch_size=4, img_size=16,
            conv_layers=((32, 10, 5), (32, 4, 4)), pos_conv_kernel=8, pos_conv_groups=4)


def _inputs(modality, b=8):
    rng = np.random.default_rng(0)
    if modality == "image":
        return jnp.asarray(rng.normal(size=(b, 16, 16, 3)), jnp.float32)
    if modality == "text":
        return jnp.asarray(rng.integers(0, 256, (b, 24)), jnp.int32)
    t = np.arange(2000) / 8000
    return jnp.asarray(np.sin(2 * np.pi * rng.uniform(100, 800, (b, 1)) * t) + 0.1 * rng.normal(size=(b, 2000)),
                       jnp.float32)


def _method(modality, **kw):
    return data2vec.make(backbone=transformer.Model(modality=modality, **TINY), top_k=2, **kw)


@pytest.mark.parametrize("norm,final", [("instance", False), ("layer", True), ("none", False)])
def test_targets_match_numpy(norm, final):
    rng = np.random.default_rng(0)
    layers = [rng.normal(size=(3, 5, 4)).astype(np.float32) * (i + 1) + i for i in range(4)]

    def ref_norm(x, axis):
        return (x - x.mean(axis, keepdims=True)) / np.sqrt(x.var(axis, keepdims=True) + 1e-5)

    top = layers[-3:]
    if norm != "none":
        top = [ref_norm(l, 1 if norm == "instance" else -1) for l in top]
    want = np.mean(top, axis=0)
    if final:
        want = ref_norm(want, -1)
    got = data2vec.layer_targets([jnp.asarray(l) for l in layers], 3, norm, final)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_no_gradient_reaches_teacher():
    method = _method("speech", ema_transformer_only=True)
    x = _inputs("speech", 4)
    params = method.net.init(jax.random.key(0), x)["params"]
    teacher = {"params": jax.tree_util.tree_map(lambda p: p + 0.01, params)}

    def loss(p, t):
        return method.loss_fn(p, {}, t, {}, [x], jax.random.key(1))[0]

    g_student, g_teacher = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, teacher)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree_util.tree_leaves(g_teacher))
    assert optax.tree.norm(g_student) > 0
    # The student's input encoder gets gradient only through its own (masked) pass.
    assert optax.tree.norm(g_student["backbone"]["embed"]) > 0


@pytest.mark.parametrize("modality", ["image", "text", "speech"])
def test_short_run_lowers_loss(modality):
    kw = dict(clone_batch=2, decoder=dict(dim=32, groups=4)) if modality == "image" else {}
    method = _method(modality, ema_anneal_steps=10, **kw)
    tx = optax.adam(2e-3)
    x = _inputs(modality)
    state = step_lib.init_state(method, tx, jax.random.key(0), x)
    step = jax.jit(step_lib.make_step_fn(method, tx, ()))
    losses = []
    for _ in range(15):
        state, metrics = step(state, {"inputs": x}, jax.random.key(1))
        losses.append(float(metrics["loss"]))
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses
    assert 0.0 < float(metrics["mask_ratio"]) < 1.0
    assert float(metrics["teacher_momentum"]) == pytest.approx(0.9999, abs=1e-6)  # annealed after 10 steps


def test_sharded_equals_unsharded():
    code = """
    import json, jax, numpy as np, optax
    from jax.sharding import Mesh
    from tests.methods.test_data2vec import _inputs, _method
    from jaxssl.train import sharding as shd, step as step_lib
    out = {}
    for modality in ("image", "text", "speech"):
        method, tx = _method(modality, clone_batch=2), optax.adam(1e-3)
        x = _inputs(modality)
        res = []
        for devices in (jax.devices(), jax.devices()[:1]):
            mesh = Mesh(np.asarray(devices), ("data",))
            state = step_lib.init_state(method, tx, jax.random.key(0), x)
            # Fresh buffers: the teacher starts as the params' arrays, and the step donates its state.
            state = jax.tree_util.tree_map(lambda a: jax.numpy.array(a, copy=True), state)
            step = step_lib.make_train_step(method, tx, (), mesh)
            state, m = step(state, shd.to_global({"inputs": np.asarray(x)}, mesh), jax.random.key(1))
            leaf = jax.tree_util.tree_leaves(state.params)[0]
            res.append([float(m["loss"]), float(m["grad_norm"]), np.asarray(leaf).ravel()[:8].tolist()])
        out[modality] = res
    print("RESULT " + json.dumps(out))
    """
    out = multidevice.run(code, devices=8)
    for modality, (sharded, single) in out.items():
        np.testing.assert_allclose(sharded[0], single[0], rtol=1e-4, err_msg=modality)
        np.testing.assert_allclose(sharded[1], single[1], rtol=1e-4, err_msg=modality)
        np.testing.assert_allclose(sharded[2], single[2], rtol=1e-4, atol=1e-6, err_msg=modality)


@pytest.mark.parametrize("name", ["data2vec_image_cifar10", "data2vec_text_shakespeare", "data2vec_speech_fsdd"])
@pytest.mark.parametrize("arg", ["", "cpu", "runlocal"])
def test_configs_construct(name, arg):
    config = importlib.import_module(f"configs.{name}").get_config(arg)
    from jaxssl import models
    backbone = models.get(**config.model)
    method = methods.get(config.method, backbone=backbone, **config.method_kw)
    assert method.teacher_momentum(0) == pytest.approx(0.999)
    if name == "data2vec_image_cifar10":
        from jaxssl.train.validate import validate_config
        validate_config(config)
