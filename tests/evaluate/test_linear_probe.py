"""Linear probe: accuracy on separable data, augmented copies, online probe isolation, 8 devices == 1
(offline probe, online probe update and feature export in one subprocess)."""
import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxssl
from jaxssl import methods
from jaxssl.evaluate.linear_probe import linear_probe as linear_probe_fn
from jaxssl.train import step as step_lib
from tests import multidevice

lp_module = importlib.import_module("jaxssl.evaluate.linear_probe")


def separable(seed, n_train=600, n_test=300, dim=24, num_classes=8, margin=3.0):
    """Classes linearly separable by construction: y = argmax(x W), points within `margin` of a boundary dropped."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(dim, num_classes))
    out = []
    for n in (n_train, n_test):
        x = rng.normal(size=(8 * n, dim)).astype(np.float32)
        scores = np.sort(x @ w, axis=1)
        x = x[scores[:, -1] - scores[:, -2] > margin][:n]
        out += [x, np.argmax(x @ w, axis=1)]
    return out


def test_reaches_full_accuracy_on_separable_data():
    x, y, xt, yt = separable(0)
    assert linear_probe_fn is jaxssl.evaluate.linear_probe.linear_probe  # the module holds the function
    out = jaxssl.evaluate.linear_probe.linear_probe(x, y, xt, yt, epochs=40, batch_size=64, base_lr=1.0)
    assert out["top1"] == 1.0 and out["top5"] == 1.0, out
    assert out["train_loss"] < 0.1
    # LARS reaches it too; weight decay is accepted (kernel only).
    out = jaxssl.evaluate.linear_probe.linear_probe(x, y, xt, yt, epochs=40, batch_size=64, optimizer="lars", base_lr=2.0,
                                       weight_decay=1e-5)
    assert out["top1"] >= 0.9, out


def test_chance_level_on_random_labels_and_top5():
    x, _, xt, _ = separable(1)
    rng = np.random.default_rng(1)
    y, yt = rng.integers(0, 8, len(x)), rng.integers(0, 8, len(xt))
    out = jaxssl.evaluate.linear_probe.linear_probe(x, y, xt, yt, epochs=5, num_classes=8)
    assert 0.0 < out["top1"] < 0.3 and out["top1"] < out["top5"] < 1.0, out  # chance: 1/8, 5/8


def test_augmented_copies_and_validation():
    x, y, xt, yt = separable(2)
    noisy = np.stack([x + 0.05 * np.random.default_rng(i).normal(size=x.shape).astype(np.float32) for i in range(3)])
    out = jaxssl.evaluate.linear_probe.linear_probe(noisy, y, xt, yt, epochs=30, batch_size=64, base_lr=1.0)
    assert out["top1"] >= 0.98, out
    with pytest.raises(ValueError, match="Shapes do not match"):
        jaxssl.evaluate.linear_probe.linear_probe(x, y[:-1], xt, yt)
    with pytest.raises(ValueError, match="num_classes"):
        jaxssl.evaluate.linear_probe.linear_probe(x, y, xt, yt, num_classes=3)
    with pytest.raises(ValueError, match="optimizer"):
        jaxssl.evaluate.linear_probe.linear_probe(x, y, xt, yt, optimizer="adam")


def test_epoch_split_over_calls_is_exact(monkeypatch):
    """Bounding the features per jitted call (ImageNet-size epochs) changes nothing."""
    x, y, _, _ = separable(3, n_train=300)
    whole, losses = lp_module.train_linear(x, y, num_classes=8, epochs=3, batch_size=64)
    monkeypatch.setattr(lp_module, "_CALL_BYTES", 64 * x.shape[1] * 4 * 3)  # 4 steps/epoch -> calls of 3 + 1
    split, split_losses = lp_module.train_linear(x, y, num_classes=8, epochs=3, batch_size=64)
    for a, b in zip(jax.tree_util.tree_leaves(whole), jax.tree_util.tree_leaves(split)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(losses, split_losses, rtol=1e-6)
    assert losses.shape == (3,) and losses[-1] < losses[0]


class _TinyBackbone(nn.Module):
    """Conv -> BatchNorm -> mean pool: a backbone with batch statistics that compiles in a second."""

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Conv(8, (3, 3), strides=(2, 2))(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
        return jnp.mean(x, axis=(1, 2))


def test_online_probe_never_changes_the_backbone_update():
    method = methods.get("simclr", backbone=_TinyBackbone(), proj_hidden=(16,), proj_dim=8)
    tx = optax.sgd(0.1, momentum=0.9)
    views = [dict(flip_p=0.5, mean=(0.5,) * 3, std=(0.25,) * 3)] * 2
    example = jnp.zeros((2, 8, 8, 3))
    state = jax.jit(lambda r: step_lib.init_state(method, tx, r, example))(jax.random.key(0))
    probe, probe_state = jaxssl.evaluate.linear_probe.init_online_probe({"num_classes": 4, "lr": 0.5}, method.net,
                                                           {"params": state.params, **state.model_state}, example)
    assert probe_state["params"]["kernel"].shape == (8, 4)
    rng = np.random.default_rng(0)
    batch = {"image": rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8), "label": rng.integers(0, 4, 16)}
    plain = jax.jit(step_lib.make_step_fn(method, tx, views))
    probed = jax.jit(step_lib.make_step_fn(method, tx, views, probe=probe))
    a, b = state, state.replace(probe=probe_state)
    losses = []
    for _ in range(3):
        a, ma = plain(a, batch, jax.random.key(1))
        b, mb = probed(b, batch, jax.random.key(1))
        losses.append(float(mb["probe_loss"]))
    # Bitwise: the backbone, its BatchNorm statistics and the optimiser never see the probe.
    for x, y in zip(jax.tree_util.tree_leaves((a.params, a.model_state, a.opt_state)),
                    jax.tree_util.tree_leaves((b.params, b.model_state, b.opt_state))):
        np.testing.assert_array_equal(x, y)
    assert float(ma["loss"]) == float(mb["loss"])
    assert "probe_loss" not in ma and 0.0 <= float(mb["probe_top1"]) <= 1.0
    assert losses[-1] < losses[0]  # the probe itself learns (same batch three times)
    assert np.abs(np.asarray(b.probe["params"]["kernel"])).sum() > 0

    # And directly: the probe's loss has zero gradient with respect to the backbone parameters.
    def probe_loss(params):
        feats = method.net.apply({"params": params, **state.model_state}, batch["image"] / 255.0, train=False,
                                 method="features")
        _, metrics = probe.update(probe_state, feats, batch["label"])
        return metrics["probe_loss"]
    grads = jax.jit(jax.grad(probe_loss))(state.params)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree_util.tree_leaves(grads))
    with pytest.raises(ValueError, match="labelled"):
        probe.update(probe_state, jnp.zeros((2, 8)), None)  # an unlabelled batch
    off = jaxssl.evaluate.linear_probe.init_online_probe({"num_classes": 4, "enabled": False}, method.net, {}, example)
    assert off == (None, None)


_CODE = r"""
import json, jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
import importlib
lp = importlib.import_module("jaxssl.evaluate.linear_probe")
from jaxssl.train import sharding as shd
assert len(jax.devices()) == 8
rng = np.random.default_rng(0)
w = rng.normal(size=(16, 5))
x = rng.normal(size=(300, 16)).astype(np.float32); y = np.argmax(x @ w + rng.normal(size=(300, 5)), 1)
xt = rng.normal(size=(101, 16)).astype(np.float32); yt = np.argmax(xt @ w + rng.normal(size=(101, 5)), 1)
mesh1, mesh8 = shd.make_mesh(jax.devices()[:1]), shd.make_mesh()
res = {}
for name, mesh in (("one", mesh1), ("eight", mesh8), ("none", None)):
    params, losses = lp.train_linear(x, y, num_classes=5, epochs=5, batch_size=64, mesh=mesh)
    acc = lp.linear_probe(x, y, xt, yt, epochs=5, batch_size=64, mesh=mesh)
    res[name] = dict(params=np.concatenate([np.ravel(v) for v in jax.tree_util.tree_leaves(params)]).tolist(),
                     losses=losses.tolist(), acc=acc)
# The online probe's update on a batch sharded over 8 devices == on one device.
probe = lp.online_probe(5, lr=0.5)
def run(mesh):
    state = jax.device_put(probe.init(16), shd.replicated(mesh))
    upd = jax.jit(probe.update, in_shardings=(shd.replicated(mesh), shd.data_sharded(mesh), shd.data_sharded(mesh)))
    for i in range(3):
        state, m = upd(state, x[64 * i: 64 * (i + 1)], y[64 * i: 64 * (i + 1)])
    return np.concatenate([np.ravel(v) for v in jax.tree_util.tree_leaves(state["params"])]).tolist()
res["online"] = dict(one=run(mesh1), eight=run(mesh8))
# Feature export shards its batches the same way (13 images: padded to 16 on 8 devices).
import flax.linen as nn, jaxssl
class Net(nn.Module):
    widths: list  # a list attribute makes the module unhashable: embed compiles it uncached
    @nn.compact
    def __call__(self, x, train=False):
        return nn.Conv(self.widths[0], (3, 3))(x).mean((1, 2))
net = Net([4])
imgs = rng.integers(0, 256, (13, 8, 8, 3), dtype=np.uint8)
variables = net.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
view = dict(mean=(0.5,) * 3, std=(0.25,) * 3)
emb = [jaxssl.evaluate.features.of_images(variables, imgs, model=net, view=view, batch_size=5, mesh=m).tolist() for m in (mesh1, mesh8)]
res["embed"] = dict(one=emb[0], eight=emb[1])
print("RESULT " + json.dumps(res))
"""


def test_sharded_probe_equals_unsharded():
    r = multidevice.run(_CODE, devices=8)
    one, eight, none = r["one"], r["eight"], r["none"]
    np.testing.assert_allclose(eight["params"], one["params"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(none["params"], one["params"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(eight["losses"], one["losses"], rtol=1e-5)
    assert eight["acc"] == pytest.approx(one["acc"], abs=1 / 101 + 1e-9)  # at most one borderline flip
    assert 0.5 < one["acc"]["top1"] < 1.0
    np.testing.assert_allclose(r["online"]["eight"], r["online"]["one"], rtol=1e-5, atol=1e-6)
    assert np.abs(r["online"]["one"]).sum() > 0
    assert np.shape(r["embed"]["one"]) == (13, 4)
    np.testing.assert_allclose(r["embed"]["eight"], r["embed"]["one"], rtol=1e-5, atol=1e-6)
