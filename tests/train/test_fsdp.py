"""FSDP: parameters and optimiser state split over a second mesh axis give the same training as 1 device.

One subprocess with 8 fake CPU devices. A tiny ViT trained with BYOL (EMA teacher, SGD momentum,
weight decay) on a (data=2, fsdp=4) mesh: its large leaves (attention and MLP kernels, their
momentum and their teacher copies) must really be split over "fsdp", and loss, parameters and
teacher after 2 steps must equal those of the same global batch on 1 device. The same subprocess
saves and restores the sharded state with the Checkpointer (restored to the same layout), and runs
`loop.train` for 2 steps with `config.mesh.fsdp = 4` on the real-CIFAR-10 subset (kNN included).
The per-leaf rule itself is checked in-process.
"""
import math

import pytest
from jax.sharding import PartitionSpec as P

from jaxssl.train import sharding as shd
from tests import multidevice

_CODE = r"""
import json, os, sys, tempfile
import jax, jax.numpy as jnp, numpy as np, optax
from jaxssl import methods, models
from jaxssl.train import checkpoint as ckpt_lib, loop, sharding as shd, step as step_lib
assert len(jax.devices()) == 8, jax.devices()
data_dir = sys.argv[1]

vit = dict(variant="S/4", width=64, depth=1, num_heads=4, img_size=8)
method = methods.get("byol", backbone=models.get("vit", **vit), total_steps=10, proj_hidden=(64,), proj_dim=32,
                     pred_hidden=(64,), base_momentum=0.9)
# SGD with momentum, not Adam: Adam's 1/sqrt(v) turns rounding-level differences of near-zero
# gradients into whole-step parameter differences, which would hide what this test compares.
tx = optax.chain(optax.add_decayed_weights(0.05), optax.sgd(0.05, momentum=0.9))
views = [dict(crop_size=8, crop_scale=(0.3, 1.0), flip_p=0.5, jitter_p=0.8, brightness=0.4, contrast=0.4,
              saturation=0.4, hue=0.1, grayscale_p=0.2, mean=(0.5,) * 3, std=(0.25,) * 3)] * 2
images = np.random.default_rng(0).integers(0, 256, size=(16, 8, 8, 3), dtype=np.uint8)
MIN_SIZE = 4096
init = lambda r: step_lib.init_state(method, tx, r, jnp.zeros((2, 8, 8, 3)))

def run(mesh):
    state_sh = shd.state_shardings(jax.eval_shape(init, jax.random.key(1)), mesh, MIN_SIZE)
    state = jax.jit(init, out_shardings=state_sh)(jax.random.key(1))
    train_step = step_lib.make_train_step(method, tx, views, mesh, state_shardings=state_sh)
    losses = []
    for _ in range(2):
        state, metrics = train_step(state, shd.to_global({"image": images}, mesh), jax.random.key(0))
        losses.append(float(metrics["loss"]))
    return state, losses

flat = lambda t: np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree_util.tree_leaves(t)])
one, loss1 = run(shd.make_mesh(jax.devices()[:1]))
mesh = shd.make_mesh(fsdp=4)
eight, loss8 = run(mesh)
rel = lambda a, b: float(np.max(np.abs(flat(a) - flat(b))) / np.max(np.abs(flat(b))))
specs = {jax.tree_util.keystr(p): (tuple(x.shape), str(x.sharding.spec), len(x.addressable_shards[0].data.ravel()))
         for p, x in jax.tree_util.tree_flatten_with_path(eight)[0]}

ckpt = ckpt_lib.Checkpointer(tempfile.mkdtemp(), async_save=False)
ckpt.save(2, eight, force=True)
restored = ckpt.restore(ckpt_lib.abstract(eight)).state
ckpt.close()
restored_ok = all(a.sharding == b.sharding and np.array_equal(a, b) for a, b in zip(
    jax.tree_util.tree_leaves(eight), jax.tree_util.tree_leaves(restored)))

from configs import simclr_cifar10
config = simclr_cifar10.get_config("runlocal")
config.data.data_dir, config.data.prepare_offline, config.progress_bar = data_dir, False, False
config.model = dict(name="vit", **vit)
config.input.views = tuple(dict(v, crop_size=8) for v in config.input.views)
config.method_kw.proj_hidden, config.method_kw.proj_dim = (32,), 16
config.batch_size, config.total_steps = 16, 2
config.evals.knn.update(train_examples=64, test_examples=32, batch_size=32, protocols=((20, 0.07),),
                        view=dict(crop_size=8, **config.evals.knn.view))
config.mesh = dict(fsdp=4, fsdp_min_size=MIN_SIZE)
workdir = tempfile.mkdtemp()
res = loop.train(config, workdir)
saved = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints")).all_steps()
print("RESULT " + json.dumps(dict(loss1=loss1, loss8=loss8, params=rel(eight.params, one.params),
      teacher=rel(eight.teacher, one.teacher), opt=rel(eight.opt_state, one.opt_state), specs=specs,
      mesh=dict(mesh.shape), restored_ok=restored_ok, loop_loss=res.get("loss"), loop_steps=saved,
      loop_knn=res.get("knn_k20_t0.07_top1"))))
"""


@pytest.fixture(scope="module")
def result(cifar10_data_dir):
    return multidevice.run(_CODE.replace("sys.argv[1]", repr(cifar10_data_dir)), devices=8)


def test_fsdp_step_equals_one_device(result):
    assert result["mesh"] == {"data": 2, "fsdp": 4}
    for a, b in zip(result["loss8"], result["loss1"]):
        assert abs(a - b) <= 1e-5 * abs(b), result
    assert result["loss8"][0] != result["loss8"][1]  # the parameters did change
    for key in ("params", "teacher"):
        assert result[key] < 1e-5, (key, result[key])
    # The SGD momentum is the gradient itself (2 steps): its largest entries sum over the batch in
    # another order on the (2, 4) mesh. With fused attention (`jax.nn.dot_product_attention`'s XLA
    # composition) that float32 reduction noise measured 1.24e-5 of the largest entry (parameters
    # 8e-7), so the bound is 3e-5; a real sharding error moves it by orders of magnitude.
    assert result["opt"] < 3e-5, ("opt", result["opt"])


def test_large_leaves_are_sharded_over_fsdp(result):
    specs = result["specs"]
    for path, (shape, spec, local) in specs.items():
        size = math.prod(shape)
        if size >= 4096 and any(d % 4 == 0 for d in shape):
            assert "fsdp" in spec, (path, shape, spec)
            assert local == size // 4, (path, local)  # each device stores a quarter of it
        else:
            assert "fsdp" not in spec, (path, shape, spec)
    # A parameter, its momentum and its teacher copy share one layout.
    params = {k[len(".params"):]: v for k, v in specs.items() if k.startswith(".params")}
    assert any("fsdp" in v[1] for v in params.values())
    for suffix, (_, spec, _) in params.items():
        assert specs[".teacher['params']" + suffix][1] == spec, suffix
        moments = [v[1] for k, v in specs.items() if k.startswith(".opt_state") and k.endswith(suffix)]
        assert len(moments) == 1 and set(moments) == {spec}, (suffix, moments)  # the momentum


def test_checkpoint_restores_the_sharded_layout(result):
    assert result["restored_ok"]


def test_loop_trains_with_config_mesh_fsdp(result):
    assert result["loop_steps"] == [2]
    assert result["loop_loss"] is not None and 0.0 <= result["loop_knn"] <= 1.0


def test_fsdp_spec_rule():
    assert shd.fsdp_spec((64, 256), 4, min_size=4096) == P(None, "fsdp")  # largest divisible dimension
    assert shd.fsdp_spec((256, 64), 4, min_size=4096) == P("fsdp", None)
    assert shd.fsdp_spec((64, 64), 4, min_size=4096) == P(None, "fsdp")  # tie: the last (output) dimension
    assert shd.fsdp_spec((64,), 4, min_size=4096) == P()  # small: replicated
    assert shd.fsdp_spec((4097, 3), 4, min_size=4096) == P()  # nothing divides
    assert shd.fsdp_spec((64, 256), 1, min_size=1) == P()  # no fsdp axis
