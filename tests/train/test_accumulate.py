"""GradCache-style accumulation (jaxssl/train/accumulate.py) equals the single large batch.

Losses that need the whole batch (NT-Xent negatives, Sinkhorn equipartition with a queue,
VICReg / Barlow statistics) are compared between one batch of B and `accum_steps` micro-batches,
on a backbone and heads without BatchNorm (equality is the claim there). With BatchNorm (MoCo v3's
heads) the claim is per-micro-batch statistics: checked against an explicit per-micro-batch
reference. The step-level test runs `make_step_fn(accum_steps=...)` twice from the same state.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxssl import methods
from jaxssl.train import accumulate, step as step_lib
from jaxssl.train.validate import validate_config

B, M = 16, 4  # batch, micro-batches
STEP = jnp.int32(5)  # the index of the step taken (SwAV: past queue_start_step, its filled queue is used)


class PixelMLP(nn.Module):
    """A batch-independent backbone for any resolution: per-pixel MLP, global mean pool, Dense."""

    width: int = 16
    dtype: object = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = True):
        del train
        h = nn.gelu(nn.Dense(self.width, dtype=self.dtype)(x.astype(self.dtype)))
        return nn.Dense(self.width, dtype=self.dtype)(jnp.mean(h, axis=(1, 2))).astype(jnp.float32)


def _views(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.normal(size=(B, s, s, 3)), jnp.float32) for s in sizes]


# proj_hidden=() : a Linear projector, no BatchNorm anywhere, so every embedding row depends on its
# own example only and accumulation must equal the large batch. One method per kind of whole-batch
# objective (VICReg shares Barlow Twins' `base.embed_each` and is left out for test time).
_NO_BN = {
    # proj_last_bn=False: BN-free (SimCLR's reference projector ends in a BatchNorm).
    "simclr": (dict(temperature=0.5, proj_hidden=(), proj_dim=8, proj_last_bn=False), (8, 8)),
    "barlow_twins": (dict(proj_hidden=(), proj_dim=8), (8, 8)),
    # Multi-crop (2 x 8 px + 2 x 4 px) and a full queue in use: Sinkhorn over batch + queue.
    "swav": (dict(proj_hidden=(), proj_dim=8, num_prototypes=6, queue_size=8, crops_for_assign=(0, 1)), (8, 8, 4, 4)),
}


def _setup(name, kw, sizes):
    method = methods.get(name, backbone=PixelMLP(), **kw)
    views = _views(sizes)
    variables = method.net.init(jax.random.key(0), views[0], train=True)
    params = variables["params"]
    model_state = {k: v for k, v in variables.items() if k != "params"}
    extra = method.init_extra(jax.random.key(1))
    if "queue" in extra:  # a filled queue (no zero rows), in use at STEP
        extra = {"queue": jax.random.normal(jax.random.key(2), extra["queue"].shape)}
    return method, params, model_state, extra, views


def _rel(a, b):
    """Max abs difference of two pytrees relative to the largest entry of `b` (0 for empty trees)."""
    a, b = (np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree_util.tree_leaves(t)] + [np.zeros(0)])
            for t in (a, b))
    if not b.size:
        return 0.0
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12))


@pytest.mark.parametrize("name", sorted(_NO_BN))
def test_accumulated_loss_and_gradient_equal_the_large_batch(name):
    method, params, model_state, extra, views = _setup(name, *_NO_BN[name])
    rng = jax.random.key(3)
    large = jax.jit(jax.value_and_grad(method.loss_fn, has_aux=True))
    (loss, (_, extra1, metrics1)), grads1 = large(params, model_state, None, extra, views, rng, STEP)
    acc = jax.jit(accumulate.value_and_grad(method, M))
    (loss_m, (_, extra_m, metrics_m)), grads_m = acc(params, model_state, None, extra, views, rng, STEP)
    assert np.isfinite(float(loss)) and _rel(grads1, jax.tree_util.tree_map(jnp.zeros_like, grads1)) > 0
    assert abs(float(loss_m) - float(loss)) <= 1e-5 * abs(float(loss)) + 1e-6, (loss_m, loss)
    assert _rel(grads_m, grads1) < 1e-4, _rel(grads_m, grads1)
    assert _rel(extra_m, extra1) < 1e-5  # SwAV queue: same rows in the same order
    assert _rel(metrics_m, metrics1) < 1e-4
    if name != "simclr":
        return
    # A per-micro-batch loss (plain accumulation) is a different objective: the test can tell.
    small = jax.jit(jax.vmap(lambda vs: jax.grad(method.loss_fn, has_aux=True)(params, model_state, None, extra, vs,
                                                                                rng, STEP)[0]))
    naive = jax.tree_util.tree_map(lambda g: jnp.mean(g, axis=0), small([accumulate._split(v, M) for v in views]))
    assert _rel(naive, grads1) > 1e-2


def test_with_batchnorm_each_micro_batch_uses_its_own_statistics():
    """MoCo v3 (BN heads, EMA teacher): accumulation == objective(concat of per-micro-batch embeds)."""
    method = methods.get("moco_v3", backbone=PixelMLP(), total_steps=10, proj_hidden=(8,), proj_dim=8,
                         pred_hidden=(8,))
    views = _views((8, 8))
    variables = method.net.init(jax.random.key(0), views[0], train=True)
    params = variables["params"]
    model_state = {k: v for k, v in variables.items() if k != "params"}
    teacher = jax.tree_util.tree_map(lambda x: x * 1.01, {"params": params, **model_state})
    rng = jax.random.key(3)
    embed_rng, objective_rng = methods.base.split_rng(rng)

    def reference(p):  # micro-batch i = rows i, i + M, ...; embeddings re-interleaved to the original order
        parts = [method.embed(p, model_state, teacher, {}, [v[i::M] for v in views],
                              jax.random.fold_in(embed_rng, i), STEP)[0] for i in range(M)]
        emb = jax.tree_util.tree_map(lambda *x: jnp.stack(x, axis=1).reshape(B, *x[0].shape[1:]), *parts)
        return method.objective(p, emb, {}, objective_rng, STEP)[0]

    loss_ref, grads_ref = jax.jit(jax.value_and_grad(reference))(params)
    (loss, (new_state, _, _)), grads = jax.jit(accumulate.value_and_grad(method, M))(
        params, model_state, teacher, {}, views, rng, STEP)
    assert abs(float(loss) - float(loss_ref)) <= 1e-5 * abs(float(loss_ref)), (loss, loss_ref)
    # float32 through BatchNorm over micro-batches of 2 rows: the gradients agree to ~1e-4 (2.6e-4
    # with MoCo v3's PyTorch head init); the wrong, naive accumulation is off by > 1e-2 (above).
    assert _rel(grads, grads_ref) < 1e-3
    # BatchNorm running averages were updated (M times, in order) and the teacher got no gradient.
    assert _rel(new_state, model_state) > 0
    loss_large = method.loss_fn(params, model_state, teacher, {}, views, rng, STEP)[0]
    assert abs(float(loss_large) - float(loss)) > 1e-6  # different BN statistics: not the large batch


def test_train_step_with_accumulation_equals_the_large_batch_step():
    """Two `make_step_fn` steps (augmentation on device, then the split): same params as accum_steps=1."""
    method = methods.get("simclr", backbone=PixelMLP(), temperature=0.5, proj_hidden=(), proj_dim=8,
                         proj_last_bn=False)  # BN-free: accumulation equals the large batch exactly
    tx = optax.adam(1e-2)
    view = dict(crop_size=8, crop_scale=(0.3, 1.0), flip_p=0.5, mean=(0.5,) * 3, std=(0.25,) * 3)
    images = np.random.default_rng(0).integers(0, 256, size=(B, 8, 8, 3), dtype=np.uint8)
    batch = {"image": jnp.asarray(images)}
    out = {}
    for accum in (1, M):
        state = step_lib.init_state(method, tx, jax.random.key(1), jnp.zeros((2, 8, 8, 3)))
        step = jax.jit(step_lib.make_step_fn(method, tx, [view] * 2, accum_steps=accum))
        losses = []
        for _ in range(2):
            state, metrics = step(state, batch, jax.random.key(0))
            losses.append(float(metrics["loss"]))
        out[accum] = (losses, state.params, float(metrics["grad_norm"]))
    assert out[1][2] > 0
    np.testing.assert_allclose(out[M][0], out[1][0], rtol=1e-5)
    assert _rel(out[M][1], out[1][1]) < 1e-5


def test_clear_errors():
    byol = methods.get("byol", backbone=PixelMLP(), total_steps=10)
    with pytest.raises(ValueError, match="two-stage"):
        step_lib.make_step_fn(byol, optax.sgd(0.1), [{}], accum_steps=2)
    simclr = methods.get("simclr", backbone=PixelMLP(), proj_hidden=(), proj_dim=8)
    with pytest.raises(ValueError, match="divisible by accum_steps"):
        accumulate.value_and_grad(simclr, 3)(None, {}, None, {}, _views((8, 8)), None, STEP)
    with pytest.raises(ValueError, match="accum_steps must be an int"):
        accumulate.check(simclr, 0)

    from configs import byol_cifar10, simclr_cifar10
    config = simclr_cifar10.get_config("runlocal")
    config.accum_steps = 2
    validate_config(config)  # accepted
    config.batch_size = 2 * jax.device_count() + 1
    with pytest.raises(ValueError, match="accum_steps"):
        validate_config(config)
    config = byol_cifar10.get_config("runlocal")
    config.accum_steps = 2
    with pytest.raises(ValueError, match="two-stage"):
        validate_config(config)
    config.accum_steps = 0
    with pytest.raises(ValueError, match="accum_steps"):
        validate_config(config)
