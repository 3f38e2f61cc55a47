"""The invariant of the library: a step on 8 devices equals the same global batch on 1 device.

Loss, gradients, BatchNorm statistics and the updated parameters of a SimCLR train step (NT-Xent
negatives over the global batch, synchronised BatchNorm) are compared between a mesh of 8 fake
CPU devices and a mesh of 1 device, in one subprocess (XLA_FLAGS must be set before jax loads).
"""
from tests import multidevice

_CODE = r"""
import json, jax, jax.numpy as jnp, numpy as np, optax
from jaxssl import methods, models
from jaxssl.train import sharding as shd, step as step_lib
assert len(jax.devices()) == 8, jax.devices()

backbone = models.get("resnet", variant="18", width=0.125, cifar_stem=True)
method = methods.get("simclr", backbone=backbone, temperature=0.5, proj_hidden=(32,), proj_dim=16)
tx = optax.lars(0.1, weight_decay=1e-4)
views = [dict(crop_size=16, crop_scale=(0.2, 1.0), flip_p=0.5, jitter_p=0.8, brightness=0.4, contrast=0.4,
              saturation=0.4, hue=0.1, grayscale_p=0.2, mean=(0.5,) * 3, std=(0.25,) * 3)] * 2
images = np.random.default_rng(0).integers(0, 256, size=(32, 16, 16, 3), dtype=np.uint8)
rng = jax.random.key(0)

def run(devices):
    mesh = shd.make_mesh(devices)
    state = jax.jit(lambda r: step_lib.init_state(method, tx, r, jnp.zeros((2, 16, 16, 3))),
                    out_shardings=shd.replicated(mesh))(jax.random.key(1))
    batch = shd.to_global({"image": images}, mesh)
    # Gradients of the loss exactly as the step computes them.
    step_fn = step_lib.make_step_fn(method, tx, views)
    def grads(state, batch):
        from jaxssl import augment
        r = jax.random.fold_in(rng, state.step)
        aug, loss_rng = jax.random.split(r)
        v = augment.make_views(aug, batch["image"], views)
        f = lambda p: method.loss_fn(p, state.model_state, state.teacher, state.extra, v, loss_rng,
                                   state.step)
        return jax.grad(f, has_aux=True)(state.params)[0]
    g = jax.jit(grads, in_shardings=(shd.replicated(mesh), shd.data_sharded(mesh)))(state, batch)
    train_step = step_lib.make_train_step(method, tx, views, mesh)
    new_state, metrics = train_step(state, batch, rng)
    new_state, metrics2 = train_step(new_state, batch, rng)
    leaves = lambda t: [np.asarray(x, np.float64).ravel() for x in jax.tree_util.tree_leaves(t)]
    return dict(loss=[float(metrics["loss"]), float(metrics2["loss"])],
                grads=np.concatenate(leaves(g)), params=np.concatenate(leaves(new_state.params)),
                bn=np.concatenate(leaves(new_state.model_state)))

one, eight = run(jax.devices()[:1]), run(jax.devices())
rel = lambda a, b: float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12))
print("RESULT " + json.dumps(dict(loss1=one["loss"], loss8=eight["loss"], grads=rel(eight["grads"], one["grads"]),
      params=rel(eight["params"], one["params"]), bn=rel(eight["bn"], one["bn"]),
      grad_norm=float(np.linalg.norm(one["grads"])), bn_size=len(one["bn"]))))
"""


def test_simclr_step_8_devices_equals_1_device():
    r = multidevice.run(_CODE, devices=8)
    assert r["bn_size"] > 0 and r["grad_norm"] > 0
    for a, b in zip(r["loss8"], r["loss1"]):
        assert abs(a - b) <= 1e-5 * abs(b), r
    assert r["grads"] < 1e-4, r
    assert r["bn"] < 1e-5, r
    assert r["params"] < 1e-5, r
