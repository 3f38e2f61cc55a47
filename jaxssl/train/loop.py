"""`train(config, workdir)`: the trainer, one straight script in marked sections.

Setup (mesh, data, method, optimiser, state) -> restore from the workdir if a checkpoint is
there -> loop (step, log, evaluate, checkpoint) -> final checkpoint and evaluation. Every
method runs through this file; it never branches on the method.

Files written in `workdir`: `config.json` (the run's config), `metrics.jsonl` (one JSON object
per logged step or evaluation), `tb/` (TensorBoard events), `checkpoints/<step>/`.

One writer per workdir: `train` holds `<workdir>/lock` (jaxssl/train/lock.py) while it runs and
refuses a second run with `WorkdirLockedError`. A failed asynchronous save (disk full) raises
`checkpoint.SaveFailedError` at the next step. A checkpoint restores onto any number of devices or
processes with the same global batch (elastic resume); a changed `batch_size` is refused.

Stopping safely: a run killed at any point and restarted with the same command continues from
its newest good checkpoint and ends bit-identical to an uninterrupted run. SIGTERM (preemption)
finishes the current step, checkpoints it and raises `Preempted`. A NaN/Inf in any step metric
(loss, grad_norm, ...) raises FloatingPointError naming the step before that state is
checkpointed, or with `config.nonfinite = "skip"` the step drops the update on device and the
loop counts it (`nonfinite_skips`).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from jaxssl import defaults, evaluate, methods
from jaxssl.data import inputs, prefetch
from jaxssl.train import checkpoint as ckpt_lib
from jaxssl.train import lock as lock_lib
from jaxssl.train import optim, sharding as shd, step as step_lib, validate
from jaxssl.train.validate import validate_config

log = logging.getLogger(__name__)

# Keys of the config that change the meaning of a checkpoint: resuming with other values is refused.
_STRUCTURAL_KEYS = ("method", "method_kw", "model", "batch_size", "dtype", "input", "seed", "optimizer",
                    "data.name", "data.split")


# ----------------------------------------------------------------------------------------------
# Config checks: `validate_config` (jaxssl/train/validate.py) reports every bad value with its key
# before anything compiles; a workdir holding a run with another config is refused.
# ----------------------------------------------------------------------------------------------


def _with_defaults(key: str, value, method=None):
    """config.optimizer / config.method_kw (as saved in config.json) with every unset optional key at its
    default, so that a key spelled out later at its default (e.g. `trust_clip=False`, iBOT's
    `patch_head_tokens="masked"`) is not taken for a change."""
    if not isinstance(value, dict):
        return value
    if key == "optimizer":
        unset = {k: e.default for k, e in optim.all_keys().items() if e.default is not defaults.REQUIRED}
    elif key == "method_kw" and method in methods.available():
        unset = methods.make_defaults(method)
    else:
        return value
    return {**{k: v for k, v in unset.items() if k not in value}, **value}


def _check_workdir_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Refuse to resume a run whose checkpoints were written with an incompatible config."""
    path = os.path.join(workdir, "config.json")
    new = json.loads(config.to_json_best_effort())
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        get = lambda d, key: validate.lookup(d, key) if isinstance(d, dict) else None
        diff = [k for k in _STRUCTURAL_KEYS
                if _with_defaults(k, get(old, k), old.get("method")) != _with_defaults(k, get(new, k), new.get("method"))]
        if "batch_size" in diff and os.path.isdir(os.path.join(workdir, "checkpoints")):
            raise ValueError(
                f"The workdir {workdir} holds a run with global batch {old.get('batch_size')}, now "
                f"{new.get('batch_size')}. A resume may change the number of devices or processes (elastic "
                f"resume: the global batch is split over whatever devices there are), but not the global "
                f"batch, which sets the data order and the learning rate: resume with "
                f"--config.batch_size={old.get('batch_size')}, or start a new --workdir.")
        if diff and os.path.isdir(os.path.join(workdir, "checkpoints")):
            raise ValueError(
                f"The workdir {workdir} holds a run with a different config for {diff} "
                f"(e.g. {diff[0]}: saved {get(old, diff[0])!r}, now {get(new, diff[0])!r}). Resuming would mix "
                f"two runs: use a new --workdir, or restore the original settings.")
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        # Atomic: the other processes of a multi-host run read this file at the same time (above), and
        # a truncated-then-written file read midway is empty (a JSONDecodeError on process 1); a crash
        # mid-write must not leave a broken config beside the checkpoints either.
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(new, f, indent=1)
        os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------
# Logging: JSONL + TensorBoard, process 0 only.
# ----------------------------------------------------------------------------------------------
class _Writer:
    def __init__(self, workdir: str):
        self.active = jax.process_index() == 0
        if self.active:
            from tensorboardX import SummaryWriter
            self.jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
            self.tb = SummaryWriter(os.path.join(workdir, "tb"))

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self.active:
            return
        self.jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        self.jsonl.flush()
        for k, v in scalars.items():
            self.tb.add_scalar(k, v, step)
        self.tb.flush()

    def close(self) -> None:
        if self.active:
            self.jsonl.close()
            self.tb.close()


# ----------------------------------------------------------------------------------------------
# Stopping safely: on SIGTERM (preemption) and on NaN/Inf.
# ----------------------------------------------------------------------------------------------
class Preempted(RuntimeError):
    """`train` received SIGTERM, finished its step and checkpointed it; rerun the same command to resume."""


class _StopFlag:
    """While installed, SIGTERM only sets `signum`: the loop finishes its step, checkpoints, raises Preempted.

    Handlers can only be set from the main thread; elsewhere this does nothing. `restore()` puts the
    previous handler back.
    """

    def __init__(self):
        self.signum, self._previous, self._installed = None, None, False
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True

    def _handle(self, signum, frame):
        del frame
        self.signum = signum

    def restore(self) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if self._previous is None else self._previous)
            self._installed = False


class _NonFiniteGuard:
    """Checks the fetched per-step metrics before anything holding those steps is checkpointed.

    "raise" (default): FloatingPointError at the first step with a NaN/Inf metric, naming the step
    and the quantities (loss, grad_norm, ...). "skip": the train step has already dropped such
    updates on device (metric "nonfinite_skipped"); count them, raise after `patience` in a row.
    """

    def __init__(self, skip: bool, patience: int):
        self.skip, self.patience, self.skipped, self.in_a_row = skip, patience, 0, 0

    def check(self, rows: list[dict], first: int, last_ckpt: int) -> None:
        """`rows`: host metrics of steps first, first + 1, ...; `last_ckpt`: the newest checkpoint's step."""
        where = f"; the newest checkpoint (step {last_ckpt}) is good and a rerun resumes from it" if last_ckpt else ""
        for i, m in enumerate(rows):
            step = first + i
            if self.skip and m.get("nonfinite_skipped", 0):
                self.skipped, self.in_a_row = self.skipped + 1, self.in_a_row + 1
                log.warning("Step %d: non-finite loss, gradients or state; update skipped (%d so far).",
                            step, self.skipped)
                if self.in_a_row >= self.patience:
                    raise FloatingPointError(
                        f"{self.in_a_row} updates in a row were non-finite and skipped (steps "
                        f"[{step - self.in_a_row + 1}, {step}], config.nonfinite_patience={self.patience}){where}.")
                continue
            self.in_a_row = 0
            bad = sorted(k for k, v in m.items() if not np.all(np.isfinite(np.asarray(v, np.float64))))
            if bad:
                raise FloatingPointError(
                    f"{', '.join(bad)} became NaN or Inf at step {step} (the first bad one of steps "
                    f"[{first}, {first + len(rows) - 1}] checked here). Training stopped without checkpointing "
                    f"it{where}. Lower the learning rate (--config.optimizer.base_lr), clip gradients "
                    f"(--config.optimizer.grad_clip), or set config.nonfinite='skip' to drop such updates.")


def _log_row(pending: list[dict], step: int, last_logged: int, t0: float, guard: _NonFiniteGuard,
             writer: _Writer, pbar) -> dict[str, float]:
    """The logged scalars of `step`: the newest step that was not skipped (of a skipped one, its finite metrics)."""
    rows = [m for m in pending if not m.get("nonfinite_skipped", 0)] or pending
    scalars = {k: float(v) for k, v in rows[-1].items() if np.isfinite(v)}
    if guard.skip:
        scalars["nonfinite_skips"] = guard.skipped
    scalars["steps_per_sec"] = (step - last_logged) / max(time.time() - t0, 1e-9)
    writer.write(step, scalars)
    if pbar is not None and "loss" in scalars:
        pbar.set_postfix(loss=f"{scalars['loss']:.4f}")
    return scalars


def _resume(checkpointer: ckpt_lib.Checkpointer, state, data_iter, guard: _NonFiniteGuard):
    """The newest good checkpoint's state (data iterator and skip count restored too), else `state`."""
    restored = checkpointer.restore(ckpt_lib.abstract(state))
    if restored is None:
        return state
    if restored.data is not None:
        data_iter.set_state(restored.data)
    else:  # a step saved without the iterator state (not by this trainer): continuing is still useful
        log.warning("THE DATA ORDER RESTARTS: the checkpoint of step %d holds no data-iterator state, so the input "
                    "pipeline starts again from its first batch and this run is no longer exact (not equal to an "
                    "uninterrupted run).", restored.step)
    guard.skipped = int(restored.meta.get("nonfinite_skips", 0))
    log.info("Resumed from step %d in %s", restored.step, os.path.dirname(checkpointer.directory))
    return restored.state


# ----------------------------------------------------------------------------------------------
# Setup: everything a run needs, built from the config (the same for images, text and speech).
# ----------------------------------------------------------------------------------------------
class _Run(NamedTuple):
    mesh: Any
    method: methods.Method
    state: Any
    train_step: Any
    train_iter: Any
    evaluators: list
    guard: "_NonFiniteGuard"
    rng: jax.Array  # the step's base key; the step folds in state.step


def _setup(config: ml_collections.ConfigDict) -> _Run:
    """Mesh, data, method, optimiser, sharded state, jitted step and evaluators of a validated config."""
    mesh = shd.make_mesh(fsdp=defaults.get(config, "mesh.fsdp"))
    shd.check_batch_size(config.batch_size, mesh)
    evaluate.common.check_batch_sizes(config, mesh)  # before any data is read
    data_dir = inputs.data_dir(config)
    if jax.process_index() == 0:
        inputs.ensure_ready(config, data_dir)  # offline machines: prepares a missing TFDS dataset
    multihost_utils.sync_global_devices("jaxssl:data_prepared")

    method = methods.build(config)
    tx, lr_schedule = optim.make(config.optimizer, config.batch_size, max(config.total_steps, 1))
    train_iter = inputs.train_iter(config, data_dir)
    evaluators = evaluate.common.from_config(config, method.net, mesh, data_dir)
    for entry in evaluators:  # a missing or unlabelled split fails now, not after training
        entry.evaluator.check()

    rng = jax.random.key(config.seed)
    example = inputs.example(config)
    init = lambda r: step_lib.init_state(method, tx, r, example)
    # Created directly in its layout (replicated, or FSDP-sharded: a large model never sits whole on one device).
    min_size = defaults.get(config, "mesh.fsdp_min_size")
    state_sh = shd.state_shardings(jax.eval_shape(init, jax.random.fold_in(rng, 1)), mesh, min_size)
    state = jax.jit(init, out_shardings=state_sh)(jax.random.fold_in(rng, 1))
    if defaults.get(config, "init_from"):  # PyTorch weights for the backbone (a resume overwrites them)
        from jaxssl.models import pytorch_layout  # pylint: disable=g-import-not-at-top
        state = pytorch_layout.init_train_state(state, config.init_from, config.model, log.info)
    # Optional online linear probe (config.evals.online_probe), state in TrainState.probe.
    probe, probe_state = evaluate.linear_probe.init_online_probe(
        (config.get("evals") or {}).get("online_probe"), method.net, {"params": state.params, **state.model_state},
        example)
    if probe is not None:
        state = state.replace(probe=jax.device_put(probe_state, shd.replicated(mesh)))
    state_sh = shd.state_shardings(state, mesh, min_size)
    state = jax.device_put(state, state_sh)  # restores get the same layout
    guard = _NonFiniteGuard(defaults.get(config, "nonfinite") == "skip", defaults.get(config, "nonfinite_patience"))
    train_step = step_lib.make_train_step(method, tx, [dict(v) for v in config.input.views], mesh, lr_schedule,
                                          probe, skip_nonfinite=guard.skip, state_shardings=state_sh,
                                          accum_steps=defaults.get(config, "accum_steps"))
    return _Run(mesh, method, state, train_step, train_iter, evaluators, guard, jax.random.fold_in(rng, 2))


def _variables(method, state) -> dict:
    """What the evaluators embed with: the student's weights and model state (or the EMA teacher's, `eval_teacher`)."""
    if method.eval_teacher:
        return dict(state.teacher)
    return {"params": state.params, **state.model_state}


def _evaluate(run: _Run, state, step: int, writer: _Writer, final: bool) -> dict[str, float]:
    """Run the evaluators due at `step` (all of them when `final`); log and return their metrics."""
    out = {}
    for entry in run.evaluators:
        if final or (entry.every_steps > 0 and step % entry.every_steps == 0):
            res = entry.evaluator.run(_variables(run.method, state))
            writer.write(step, res)
            log.info("step %d %s %s", step, entry.name, res)
            out.update(res)
    return out


# ----------------------------------------------------------------------------------------------
# The trainer.
# ----------------------------------------------------------------------------------------------
def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Pre-train `config.method` on `config.data` (TFDS images, text or speech); resume from `workdir`.

    Returns the final metrics (last logged training metrics and the final evaluation).
    Raises ValueError, TypeError or FileNotFoundError for a bad config, dataset or workdir (before
    anything compiles), `lock.WorkdirLockedError` while another run writes to `workdir`,
    FloatingPointError at a NaN/Inf, and `Preempted` after SIGTERM.
    """
    # --- Setup -----------------------------------------------------------------------------
    validate_config(config)
    workdir = os.path.abspath(workdir)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise NotADirectoryError(f"--workdir {workdir} is a file, not a directory: pass a directory for the run's "
                                 f"checkpoints and logs (it is created if missing).")
    held = _lock(workdir)  # one writer per workdir (jaxssl/train/lock.py)
    try:
        return _train(config, workdir)
    finally:
        held.release()


def _lock(workdir: str) -> lock_lib.WorkdirLock:
    """Process 0 locks the workdir; every process raises WorkdirLockedError if it could not."""
    held, error = lock_lib.WorkdirLock(workdir, None), ""
    if jax.process_index() == 0:
        try:
            held = lock_lib.acquire(workdir)
        except lock_lib.WorkdirLockedError as e:
            error = str(e)
    if jax.process_count() > 1 and not multihost_utils.broadcast_one_to_all(np.int32(error == "")):
        error = error or f"Process 0 could not lock the workdir {workdir} (see its log): another run holds it."
    if error:
        raise lock_lib.WorkdirLockedError(error)
    return held


def _train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """`train` once the config is valid and the workdir locked."""
    _check_workdir_config(workdir, config)
    run = _setup(config)
    # The next batch is placed on the devices while the current step runs (double buffering); its
    # get_state() is that of the batches consumed, so checkpoints resume exactly (jaxssl/data/prefetch.py).
    train_iter = prefetch.DevicePrefetch(run.train_iter, lambda batch: shd.to_global(batch, run.mesh),
                                         size=defaults.get(config, "data.prefetch"))
    state, guard = run.state, run.guard

    # --- Restore ---------------------------------------------------------------------------
    checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=config.keep_ckpts)
    stop = _StopFlag()  # Installed from here on: SIGTERM -> finish the step, checkpoint, raise Preempted.
    writer = _Writer(workdir)
    final: dict[str, Any] = {}
    pbar, pending, finished = None, [], False
    last_saved = int(state.step)
    save = lambda step, force: checkpointer.save(step, state, train_iter.get_state(),
                                                 meta={"nonfinite_skips": guard.skipped,
                                                       "process_count": jax.process_count()}, force=force)
    try:
        state = _resume(checkpointer, state, train_iter, guard)
        start = last_saved = int(state.step)

        # --- Loop --------------------------------------------------------------------------
        if jax.process_index() == 0 and defaults.get(config, "progress_bar"):
            from tqdm.auto import tqdm
            pbar = tqdm(total=config.total_steps, initial=start, desc=f"{config.method}/{config.data.name}",
                        unit="step", dynamic_ncols=True)
        last_logged, checked, t0 = start, start, time.time()
        for step in range(start + 1, config.total_steps + 1):
            # Named regions for `jax.profiler` traces (benchmarks/host_trace.py); free when not tracing.
            with jax.profiler.StepTraceAnnotation("train", step_num=step):
                with jax.profiler.TraceAnnotation("input"):
                    batch = next(train_iter)
                # Asynchronous: returns once the step is enqueued; the metrics stay on the devices.
                state, metrics = run.train_step(state, batch, run.rng)
                if step < config.total_steps:
                    with jax.profiler.TraceAnnotation("input"):
                        train_iter.fill()  # the next batch is read and transferred while this step runs
                checkpointer.check_saves(now=step)  # a failed async save (disk full) stops the run now
                pending.append(metrics)
                if pbar is not None:
                    pbar.update(1)
                stopping = stop.signum is not None and step < config.total_steps
                is_log = step % config.log_steps == 0 or step == config.total_steps
                is_ckpt = step % config.ckpt_steps == 0 or step == config.total_steps or stopping
                if is_log or is_ckpt:
                    # Fetch only here: the host never waits on the device in between. Every step is
                    # checked before a checkpoint holding it is written.
                    pending = jax.device_get(pending)
                    guard.check(pending[checked - last_logged:], checked + 1, last_saved)
                    checked = step
                if is_log:
                    final.update(_log_row(pending, step, last_logged, t0, guard, writer, pbar))
                    pending, last_logged, t0 = [], step, time.time()
                if step != config.total_steps:
                    _evaluate(run, state, step, writer, final=False)
                if is_ckpt:
                    save(step, force=step == config.total_steps or stopping)
                    last_saved = step
                if stopping:
                    checkpointer.wait()  # "which is checkpointed" must be true
                    raise Preempted(f"Stopped by signal {stop.signum} (SIGTERM) after step {step}, which is "
                                    f"checkpointed in {checkpointer.directory}. Rerun the same command to resume.")
        finished = True
    except KeyboardInterrupt:
        # Unlike SIGTERM this can land inside a step whose input state is already donated: save if possible.
        try:
            if int(state.step) > last_saved:
                save(int(state.step), force=True)
                log.warning("Interrupted: wrote a checkpoint at step %d before exiting.", int(state.step))
        except Exception as e:  # noqa: BLE001
            log.warning("Interrupted: no checkpoint written (%s); the newest is step %d.", e, last_saved)
        raise
    finally:
        stop.restore()
        if pbar is not None:
            pbar.close()
        try:
            checkpointer.close()
        except ckpt_lib.SaveFailedError as e:
            if finished:
                raise
            log.error("%s", e)  # another exception is on its way out: report this one beside it
        if not finished:
            writer.close()

    # --- Final evaluation ------------------------------------------------------------------
    final.update(_evaluate(run, state, int(state.step), writer, final=True))
    writer.close()
    return final
