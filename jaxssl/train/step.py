"""One pure, jitted training step, shared by every method.

`make_train_step(method, tx, views, mesh)` returns `train_step(state, batch, rng) ->
(state, metrics)`. The step is written on **global** arrays: the batch is sharded over the
mesh's "data" axis, the state replicated, and XLA inserts the collectives, so every loss and
every BatchNorm sees the global batch (the invariant tested in tests/methods/test_every_method.py).
The input state is donated: its buffers are reused for the output state.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from jaxssl import augment, ops
from jaxssl.methods.base import Method
from jaxssl.train import accumulate, sharding as shd
from jaxssl.train.state import TrainState


def init_state(method: Method, tx: optax.GradientTransformation, rng: jax.Array,
               example_view: jax.Array) -> TrainState:
    """Variables from `method.net.init` on one example view, optimiser state, teacher, extra."""
    init_rng, extra_rng = jax.random.split(rng)
    variables = method.net.init(init_rng, example_view, train=True)
    params = variables["params"]
    if method.after_update is not None:
        # The constraint holds from the first step (SwAV normalises its prototypes before the first forward).
        params = method.after_update(params)
    model_state = {k: v for k, v in variables.items() if k != "params"}
    teacher = None
    if method.teacher_momentum is not None:
        # The teacher starts as an exact copy of the student (BYOL Sec. 3.1, MoCo Sec. 3.2).
        # A copy, not an alias: the donating step must not see one buffer twice.
        teacher = jax.tree_util.tree_map(jnp.copy, {"params": params, **model_state})
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
                      opt_state=tx.init(params), teacher=teacher, extra=method.init_extra(extra_rng))


def make_step_fn(method: Method, tx: optax.GradientTransformation, views: Sequence[Mapping[str, Any]],
                 lr_schedule: optax.Schedule | None = None, probe=None, skip_nonfinite: bool = False,
                 accum_steps: int = 1) -> Callable:
    """The un-jitted step: (state, batch, rng) -> (state, metrics).

    batch: {"image": uint8 (B,H,W,3), ...} (cropped here per view), or {"views": [uint8 (B,h_v,w_v,3)] per
    view, ...} already cropped on the host (photometric ops only). rng: the run's base key; the step folds in
    `state.step`, so the same key can be passed every step and a resumed run reproduces the
    keys of an uninterrupted one. `probe`: an optional online linear probe
    (`jaxssl.evaluate.linear_probe.OnlineProbe`, state in `state.probe`, needs batch["label"]).
    `skip_nonfinite`: a step whose loss, gradients or new state hold NaN/Inf changes nothing but
    the step counter; metrics["nonfinite_skipped"] is 1 for it (0 otherwise). The method's loss
    receives `state.step` (the index of the step being taken), so its schedules stay those of the
    counter, as the teacher momentum does, across a skipped step.
    `accum_steps` > 1: the gradient of the whole batch from that many micro-batches, GradCache-style
    (`jaxssl.train.accumulate`; needs the method's embed/objective form).
    """
    views = [dict(v) for v in views]
    accumulate.check(method, accum_steps)

    def step(state: TrainState, batch, rng):
        rng = jax.random.fold_in(rng, state.step)
        aug_rng, loss_rng = jax.random.split(rng)
        if views and "views" in batch:
            # Views decoded and cropped on the host (JPEG datasets, jaxssl/data/encoded.py): colour only.
            images = augment.make_views(aug_rng, batch["views"], views, cropped=True)
        elif views:
            # Photometric augmentation on device (the DeepMind-BYOL split: decode on host, colour here).
            images = augment.make_views(aug_rng, batch["image"], views)
        else:
            # No image views (text tokens, waveforms): batch["inputs"] reaches the method unchanged.
            images = [batch["inputs"]]

        def loss_fn(params):
            return method.loss_fn(params, state.model_state, state.teacher, state.extra, images, loss_rng, state.step)

        if accum_steps > 1:
            # Same loss and gradient as the whole batch, at the activation memory of one micro-batch.
            (loss, (model_state, extra, metrics)), grads = accumulate.value_and_grad(method, accum_steps)(
                state.params, state.model_state, state.teacher, state.extra, images, loss_rng, state.step)
        else:
            (loss, (model_state, extra, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if method.after_update is not None:
            # A projection outside the gradient, e.g. SwAV's in-place prototype renormalisation.
            params = method.after_update(params)
        teacher = state.teacher
        if method.teacher_momentum is not None:
            # EMA teacher inside the pure step: teacher <- m * teacher + (1 - m) * student.
            m = method.teacher_momentum(state.step)
            teacher = optax.incremental_update({"params": params, **model_state}, teacher, step_size=1.0 - m)
            metrics = {**metrics, "teacher_momentum": m}
        metrics = {**metrics, "loss": loss, "grad_norm": optax.tree.norm(grads),
                   "param_norm": optax.tree.norm(params), "update_norm": optax.tree.norm(updates)}
        if lr_schedule is not None:
            metrics["lr"] = lr_schedule(state.step)
        probe_state = state.probe
        if probe is not None:
            # Online linear probe (solo-learn): eval-mode backbone features of the first view,
            # through stop_gradient, fit by the probe's own optimiser. The method's gradient and
            # update above never see it, so the backbone trains exactly as without a probe.
            feats = method.net.apply({"params": state.params, **state.model_state}, images[0], train=False,
                                     method="features")
            probe_state, probe_metrics = probe.update(state.probe, jax.lax.stop_gradient(feats), batch.get("label"))
            metrics = {**metrics, **probe_metrics}
        new_state = state.replace(step=state.step + 1, params=params, model_state=model_state,
                                  opt_state=opt_state, teacher=teacher, extra=extra, probe=probe_state)
        if skip_nonfinite:
            # Decided on device with jnp.where: no host sync and no second program. Every float leaf
            # of the new state is checked too (teacher, BN statistics, queues). The counter still
            # advances, so data order and random keys stay those of an uninterrupted run.
            ok = jnp.isfinite(loss) & jnp.isfinite(metrics["grad_norm"])
            for x in jax.tree_util.tree_leaves(new_state):
                if jnp.issubdtype(x.dtype, jnp.inexact):
                    ok &= jnp.all(jnp.isfinite(x))
            new_state = jax.tree_util.tree_map(lambda new, old: jnp.where(ok, new, old), new_state,
                                               state.replace(step=state.step + 1))
            metrics = {**metrics, "nonfinite_skipped": 1 - ok.astype(jnp.int32)}
        return new_state, metrics

    return step


def make_train_step(method: Method, tx: optax.GradientTransformation, views: Sequence[Mapping[str, Any]],
                    mesh: Mesh, lr_schedule: optax.Schedule | None = None, probe=None,
                    skip_nonfinite: bool = False, state_shardings=None, accum_steps: int = 1) -> Callable:
    """`make_step_fn` jitted over `mesh`: batch split over the batch axes, state donated.

    `state_shardings`: the state's layout, a TrainState of NamedShardings (e.g.
    `shd.state_shardings(state, mesh)` for FSDP); None replicates the state. The new state keeps it.
    `train_step.lower(state, batch, rng)` lowers the jitted step (as `jax.jit(...).lower`).
    """
    step = make_step_fn(method, tx, views, lr_schedule, probe, skip_nonfinite, accum_steps)
    rep, data = shd.replicated(mesh), shd.data_sharded(mesh)
    state_sh = rep if state_shardings is None else state_shardings
    jitted = jax.jit(step, in_shardings=(state_sh, data, rep), out_shardings=(state_sh, rep), donate_argnums=(0,))

    def train_step(state, batch, rng):
        # Traced (on the first call) with the mesh known to per-device losses (`ops.per_device`, DINOv2's KoLeo).
        with ops.step_mesh(mesh):
            return jitted(state, batch, rng)

    def lower(state, batch, rng):
        # `jax.stages.Lowered` of the step (cost/memory analysis, AOT compile); arguments may be ShapeDtypeStructs.
        with ops.step_mesh(mesh):
            return jitted.lower(state, batch, rng)

    train_step.lower = lower
    return train_step

