"""Every method, as its CIFAR-10 `:cpu` config defines it: two train steps on 8 devices == 1 device.

Parametrised over `jaxssl.methods.available()`, so a new method is covered the moment its file
exists; a method without a CIFAR-10 config fails here, saying to add `configs/<method>_cifar10.py`.
Configs are found by loading every `configs/*_cifar10.py` and matching `config.method` (data2vec's
is `data2vec_image_cifar10.py`).

For each method, a subprocess with 8 fake CPU devices (XLA_FLAGS must be set before jax loads)
builds the method with `jaxssl.methods.build(config)` (the config's own network, loss, views,
teacher and extra state), initialises one state, and runs two `make_train_step` steps on a
1-device mesh and on an 8-device mesh from that same state and the same global batch of random
uint8 images of the config's size. The step works on global arrays, so every loss, BatchNorm,
centre, queue and Sinkhorn sees the global batch and the two runs must agree up to float32
reduction order: the losses of both steps, every scalar metric, and every leaf of the parameters,
the model state (BatchNorm statistics), the EMA teacher and `extra` (queues, centres, counters).

Only what the comparison needs is overridden (`overrides` in the subprocess code, each with its
reason): batch 16, no learning-rate warm-up, SGD in place of AdamW, and the freeze steps and queue
sizes brought inside the two steps. The gradients of step 2 are compared too: a pass-through
optax transformation chained in front of the config's optimiser keeps them in the optimiser state.

All selected methods run in ONE subprocess (one RESULT entry per method; `pytest -k simclr` runs
only SimCLR's): a per-method subprocess would add a jax import (~3.5 s on a loaded 2-core
machine) per method, while compilation (three programs per method) dominates either way.
"""
import functools
import glob
import importlib
import json
import os
import time

import pytest

from jaxssl import methods
from tests import multidevice

_CODE = r"""
import importlib, json, time, traceback
import jax, jax.numpy as jnp, numpy as np, optax
from jaxssl import methods
from jaxssl.train import optim, sharding as shd, step as step_lib
assert len(jax.devices()) == 8, jax.devices()

BATCH = 16  # the smallest batch that splits over 8 devices with 2 images each (MoCo v2's 8 BN groups too)


def record_gradients():
    # Pass-through transformation whose state is the last gradient it saw: chained in front of the
    # config's optimiser, it exposes the step's gradients without calling the method's loss.
    return optax.GradientTransformation(lambda params: jax.tree_util.tree_map(jnp.zeros_like, params),
                                        lambda updates, state, params=None: (updates, updates))


def overrides(config):
    config.batch_size = BATCH
    opt = config.optimizer
    # No warm-up: with one, the first step's learning rate is 0 and step 1 would not move the
    # parameters, leaving step 2 a repeat of step 1.
    opt.warmup_steps = 0
    if opt.name == "adamw":
        # AdamW's g / sqrt(v) turns float32 rounding noise in near-zero gradient entries into
        # full-size updates (NOTES.md: 2.6e-3 parameter gaps with losses equal to 2e-6), so the
        # parameters could not be compared tightly. SGD with momentum maps gradients linearly to
        # updates; weight decay (and its schedule) and gradient clipping stay as configured. Its
        # step size (0.05) moves the parameters far above float32 rounding; AdamW's own rates scaled
        # to batch 16 (~3e-5) would barely move them under SGD.
        opt.name, opt.momentum, opt.lr_scaling, opt.base_lr = "sgd", 0.9, "none", 0.05
    elif opt.name == "sgd":
        # Plain SGD at its recipe's lr, unscaled: the linear rule (lr x batch / 256) divides it by 16
        # at batch 16, and parameters that move that little are compared below the float32 noise of
        # the step (measured on an AVX-512 Xeon: MoCo v2's lr 0.03 / 16 left a BN bias 0.8% of its
        # movement apart between 8 and 1 devices, 50x the tolerance below; the AMD EPYC machines of
        # earlier sessions stayed within it). LARS keeps the linear rule: its trust ratio sets the
        # step size, and 16x larger LARS steps make step 2 start from states too far apart.
        opt.lr_scaling = "none"
    kw = config.method_kw
    # Frozen last layer / prototypes for step 1 only, so the two steps cover both regimes.
    for key in ("freeze_last_layer_steps", "freeze_prototypes_steps"):
        if key in kw:
            kw[key] = 1
    if "queue_start_step" in kw:
        # SwAV: a queue of one batch, used from step 2 on (its use needs step >= queue_size / batch).
        kw.queue_size, kw.queue_start_step = BATCH, 1
    elif "queue_size" in kw:
        # MoCo v2: 1.5 batches, so that step 2's enqueue wraps around the ring buffer.
        kw.queue_size = BATCH + BATCH // 2
    if "w_size" in kw:
        # W-MSE: one whitening sub-batch of all 16 images (spread over the 8 devices), with an embedding
        # of 4 so that its covariance is full rank and well conditioned: whitening magnifies rounding
        # noise by the condition number.
        kw.w_size, kw.proj_dim = BATCH, 4
    if config.model.get("name") == "resnet":
        # Zero-init of each block's last BN (MoCo v2, SwAV and DINO-ResNet use torchvision's ones):
        # at this batch of 16 a ones-init ResNet has near-constant BN channels, whose 1/sqrt(var + eps)
        # (up to ~300) magnifies the float32 reduction-order noise this test bounds (measured: MoCo v2's
        # grad norm 5.6e-5 relative between 8 and 1 devices with ones, < 1e-6 with zeros). The
        # sharding invariance under test does not depend on the init; tests/models/test_resnet.py
        # checks the option itself.
        config.model.zero_init_residual = True
    return config


def leaves(tree):
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): np.asarray(x) for path, x in flat}


def compare(a8, a1, a0):
    # Per leaf: [max |8-dev - 1-dev|, max |1-dev - initial| (how far it moved), max |1-dev|, exact?].
    out = {}
    for k in a1:
        x8, x1, x0 = (np.asarray(t[k], np.float64) for t in (a8, a1, a0))
        out[k] = [float(np.max(np.abs(x8 - x1), initial=0)), float(np.max(np.abs(x1 - x0), initial=0)),
                  float(np.max(np.abs(x1), initial=0)), not np.issubdtype(a1[k].dtype, np.inexact)]
    return out


def one_method(module):
    config = overrides(importlib.import_module(f"configs.{module}").get_config("cpu"))
    method = methods.build(config)
    tx, lr_schedule = optim.make(config.optimizer, config.batch_size, config.total_steps)
    tx = optax.chain(record_gradients(), tx)
    views = [dict(v) for v in config.input.views]
    # Random CIFAR-10-sized images (32x32 RGB); the views crop and augment them on device.
    images = np.random.default_rng(0).integers(0, 256, size=(BATCH, 32, 32, 3), dtype=np.uint8)
    example = jnp.zeros((2, views[0].get("crop_size", 32), views[0].get("crop_size", 32), 3), jnp.float32)
    t0 = time.time()
    # One initial state for both meshes (one init compile); each run gets fresh replicated copies
    # of it, since the step donates its input state.
    init = jax.jit(lambda r: step_lib.init_state(method, tx, r, example))(jax.random.key(1))
    init_np = jax.tree_util.tree_map(np.asarray, init)
    runs = {}
    for n in (1, 8):
        mesh = shd.make_mesh(jax.devices()[:n])
        state = jax.device_put(init_np, shd.replicated(mesh))
        train_step = step_lib.make_train_step(method, tx, views, mesh, lr_schedule)
        batch = shd.to_global({"image": images}, mesh)
        metrics = []
        for _ in range(2):
            state, m = train_step(state, batch, jax.random.key(2))
            metrics.append({k: float(v) for k, v in m.items() if np.ndim(v) == 0})
        runs[n] = dict(metrics=metrics, state=jax.tree_util.tree_map(np.asarray, state))
    one, eight = runs[1], runs[8]
    groups = {}
    for group in ("params", "model_state", "teacher", "extra"):
        a0, a1, a8 = (leaves(getattr(s, group)) for s in (init_np, one["state"], eight["state"]))
        groups[group] = compare(a8, a1, a0)
    # Step 2's gradients (compared to zero as "initial": a leaf's scale is then its gradient's).
    g1, g8 = (leaves(s.opt_state[0]) for s in (one["state"], eight["state"]))
    groups["grads"] = compare(g8, g1, {k: np.zeros_like(v) for k, v in g1.items()})
    return dict(metrics1=one["metrics"], metrics8=eight["metrics"], groups=groups, seconds=time.time() - t0,
                finite=bool(all(np.all(np.isfinite(x)) for x in leaves(one["state"].params).values())))


result = {}
for module in json.loads('MODULES_JSON'):
    try:
        result[module] = one_method(module)
    except Exception:
        result[module] = dict(error=traceback.format_exc())
print("RESULT " + json.dumps(result))
"""


_TEST = "test_two_steps_on_8_devices_equal_1_device"


@functools.cache
def _cifar_configs() -> dict:
    """method name -> config module name, from every configs/*_cifar10.py."""
    out = {}
    for path in sorted(glob.glob(os.path.join(multidevice.REPO, "configs", "*_cifar10.py"))):
        module = os.path.basename(path)[:-3]
        method = importlib.import_module(f"configs.{module}").get_config("cpu").method
        assert method not in out, f"two CIFAR-10 configs for {method!r}: {out.get(method)}.py and {module}.py"
        out[method] = module
    return out


@pytest.fixture(scope="module")
def results(request) -> dict:
    """config module -> RESULT entry, for every selected method that has a config (one subprocess)."""
    selected = [item.callspec.params["name"] for item in request.session.items
                if getattr(item, "originalname", None) == _TEST and item.module.__name__ == __name__]
    modules = [_cifar_configs()[n] for n in selected if n in _cifar_configs()]
    # multidevice.run compiles at LLVM optimisation level 0 (2-3x faster; same HLO, both meshes alike).
    code = _CODE.replace("MODULES_JSON", json.dumps(modules))
    t0 = time.time()
    out = multidevice.run(code, devices=8, timeout=1800)
    print(f"{len(modules)} methods in {time.time() - t0:.0f} s:",
          {m: round(r.get("seconds", 0)) for m, r in out.items()})
    return out


@pytest.mark.parametrize("name", methods.available())
def test_two_steps_on_8_devices_equal_1_device(name, results):
    configs = _cifar_configs()
    if name not in configs:
        pytest.fail(f"Method {name!r} has no CIFAR-10 config: add configs/{name}_cifar10.py with "
                    f"get_config(arg) setting config.method = {name!r} and a ':cpu' variant (see "
                    f"configs/simclr_cifar10.py), so that this test covers it.")
    r = results[configs[name]]
    assert "error" not in r, f"{name} ({configs[name]}.py :cpu) failed in the subprocess:\n{r.get('error')}"
    assert r["finite"], name
    # Losses and every scalar metric (grad/param/update norms, collapse monitors, schedules) of both
    # steps. Both steps compute the same sums in another order (per-device partial sums, then
    # across devices), ~1e-7 relative in float32 (measured: at most 2e-7); step 2 starts from
    # states that already differ at that level. 1e-5 relative, plus 1e-6 absolute for values that
    # are small differences of O(1) terms (SimSiam's loss, -0.0045, is a mean of cosines near 0).
    for step, (m8, m1) in enumerate(zip(r["metrics8"], r["metrics1"]), 1):
        assert set(m8) == set(m1), (name, sorted(set(m8) ^ set(m1)))
        for k in m1:
            assert abs(m8[k] - m1[k]) <= 1e-5 * abs(m1[k]) + 1e-6, (name, f"step {step}", k, m8[k], m1[k])
    # Every leaf of the state after two steps (and of step 2's gradients). A leaf's gap is judged
    # against how far it moved in the two steps, not its size (a slow EMA teacher moves by ~1e-5
    # of its value, so a size-relative test would be blind to it):
    #   max|8 - 1| <= 1e-4 max|1 - initial| + 1e-5 max over the group of max|1 - initial|
    #                 + 4 float32 ulps of max|1|.
    # The second term is the rounding noise of gradients that are zero in exact arithmetic (a
    # bias followed by BatchNorm moves by ~1e-9 of pure noise); the third is the rounding of the
    # stored values (two steps, each rounding the update and the sum). Measured on 13 methods:
    # at most 0.25 of this tolerance. Per-device statistics (BatchNorm, centres or Sinkhorn over
    # 2 images per device, a local-batch loss) change the gradients at O(1), hence the updates by
    # about their own size. Integer leaves (queue pointers, step counters) must be equal.
    for group, per_leaf in r["groups"].items():
        moved_most = max([moved for _, moved, _, _ in per_leaf.values()], default=0.0)
        for path, (gap, moved, size, exact) in per_leaf.items():
            tol = 0.0 if exact else 1e-4 * moved + 1e-5 * moved_most + 4 * 2.0**-23 * size
            assert gap <= tol, (f"{name}: {group}{path} differs by {gap:.3g} between 8 and 1 devices "
                                f"(moved {moved:.3g}, size {size:.3g}, tolerance {tol:.3g})")
    # Something really changed, or the comparison would be vacuous.
    moved = {g: any(v[1] > 0 for v in per_leaf.values()) for g, per_leaf in r["groups"].items()}
    assert moved["params"] and moved["grads"], (name, moved)
    assert moved["teacher"] or not r["groups"]["teacher"], (name, moved)
