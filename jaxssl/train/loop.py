"""`train(config, workdir)`: the trainer, one straight script in marked sections.

Setup (mesh, data, method, optimiser, state) -> restore from the workdir if a checkpoint is
there -> loop (step, log, evaluate, checkpoint) -> final checkpoint and evaluation. Every
method runs through this file; it never branches on the method.

Files written in `workdir`: `config.json` (the run's config), `metrics.jsonl` (one JSON object
per logged step or evaluation), `tb/` (TensorBoard events), `checkpoints/<step>/`.

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
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from jaxssl import data as jdata
from jaxssl import evaluate, methods, models, monitors
from jaxssl.train import checkpoint as ckpt_lib
from jaxssl.train import optim, sharding as shd, step as step_lib, validate
from jaxssl.train.validate import validate_config

log = logging.getLogger(__name__)

# Keys of the config that change the meaning of a checkpoint: resuming with other values is refused.
_STRUCTURAL_KEYS = ("method", "method_kw", "model", "batch_size", "dtype", "input", "seed", "optimizer",
                    "data.name", "data.split")
_DTYPES = validate.DTYPES


# ----------------------------------------------------------------------------------------------
# Config checks: `validate_config` (jaxssl/train/validate.py) reports every bad value with its key
# before anything compiles; a workdir holding a run with another config is refused.
# ----------------------------------------------------------------------------------------------


def _check_workdir_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Refuse to resume a run whose checkpoints were written with an incompatible config."""
    path = os.path.join(workdir, "config.json")
    new = json.loads(config.to_json_best_effort())
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        get = lambda d, key: validate.lookup(d, key) if isinstance(d, dict) else None
        diff = [k for k in _STRUCTURAL_KEYS if get(old, k) != get(new, k)]
        if diff and os.path.isdir(os.path.join(workdir, "checkpoints")):
            raise ValueError(
                f"The workdir {workdir} holds a run with a different config for {diff} "
                f"(e.g. {diff[0]}: saved {get(old, diff[0])!r}, now {get(new, diff[0])!r}). Resuming would mix "
                f"two runs: use a new --workdir, or restore the original settings.")
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(path, "w") as f:
            json.dump(new, f, indent=1)


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
# Evaluation: weighted kNN on frozen backbone features (train split as bank, test split as query).
# ----------------------------------------------------------------------------------------------
def _features(embed_fn, variables, cfg, split: str, limit: int | None, mesh, data_dir) -> tuple[np.ndarray, np.ndarray]:
    """Backbone features and labels of (the first `limit` records of) a split, gathered to the host."""
    it = jdata.make_eval_iter(cfg.data.name, split, data_dir=data_dir, batch_size=cfg.evals.knn.batch_size // jax.process_count())
    feats, labels, seen = [], [], 0
    for batch in it:
        x = shd.to_global({"image": batch["image"]}, mesh)["image"]
        f = multihost_utils.process_allgather(embed_fn(variables, x), tiled=True)
        mask = multihost_utils.process_allgather(batch["mask"], tiled=True).astype(bool)
        lab = multihost_utils.process_allgather(batch["label"], tiled=True)
        feats.append(np.asarray(f)[mask])
        labels.append(np.asarray(lab)[mask])
        seen += int(mask.sum())
        if limit is not None and seen >= limit:
            break
    f, y = np.concatenate(feats), np.concatenate(labels)
    return (f[:limit], y[:limit]) if limit is not None else (f, y)


def run_knn(config, method, state, mesh, data_dir) -> dict[str, float]:
    """kNN accuracies (both protocols, top-1 and top-5) and collapse monitors of the student backbone's features."""
    cfg = config.evals.knn
    variables = {"params": state.params, **state.model_state}
    embed_fn = step_lib.make_embed_fn(method, mesh, cfg.get("view", None),
                                      jax.tree_util.tree_map(lambda x: x.sharding, variables))
    limit = lambda n: None if n is None or n < 0 else n
    ftr, ytr = _features(embed_fn, variables, config, cfg.train_split, limit(cfg.train_examples), mesh, data_dir)
    fte, yte = _features(embed_fn, variables, config, cfg.test_split, limit(cfg.test_examples), mesh, data_dir)
    protocols = tuple((int(k), float(t)) for k, t in cfg.protocols)
    out = evaluate.knn_protocols(ftr, ytr, fte, yte, protocols=protocols, num_classes=cfg.get("num_classes", None))
    # Collapse monitors of the backbone features, the same for every method: RankMe (Garrido et
    # al., 2023) and the std of the L2-normalised features (SimSiam Sec. 4.1), on the test split.
    out.update(monitors.monitors(fte))
    return out


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


def _resume(checkpointer: ckpt_lib.Checkpointer, state, data_iter, guard: _NonFiniteGuard):
    """The newest good checkpoint's state (data iterator and skip count restored too), else `state`."""
    restored = checkpointer.restore(ckpt_lib.abstract(state))
    if restored is None:
        return state
    if restored.data is not None:
        data_iter.set_state(restored.data)
    guard.skipped = int(restored.meta.get("nonfinite_skips", 0))
    log.info("Resumed from step %d in %s", restored.step, os.path.dirname(checkpointer.directory))
    return restored.state


# ----------------------------------------------------------------------------------------------
# The trainer.
# ----------------------------------------------------------------------------------------------
def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Pre-train `config.method` with the data, model and optimiser of `config`; resume from `workdir`.

    Returns the final metrics (last logged training metrics and the final evaluation).
    Raises ValueError, TypeError or FileNotFoundError for a bad config, dataset or workdir (before
    anything compiles), FloatingPointError at a NaN/Inf, and `Preempted` after SIGTERM.
    """
    # --- Setup -----------------------------------------------------------------------------
    validate_config(config)
    workdir = os.path.abspath(workdir)
    _check_workdir_config(workdir, config)
    mesh_cfg = config.get("mesh") or {}  # optional: fsdp > 1 shards large state leaves (train/sharding.py)
    mesh = shd.make_mesh(fsdp=mesh_cfg.get("fsdp", 1))
    shd.check_batch_size(config.batch_size, mesh)
    knn_cfg = config.evals.get("knn")
    knn_on = knn_cfg is not None and knn_cfg.get("enabled", True)
    if knn_on and knn_cfg.batch_size % shd.batch_shards(mesh):
        raise ValueError(f"config.evals.knn.batch_size ({knn_cfg.batch_size}) must be divisible by the number of "
                         f"devices ({shd.batch_shards(mesh)}); set it to a multiple of {shd.batch_shards(mesh)}.")
    dtype = _DTYPES[config.get("dtype", "float32")]
    data_dir = config.data.data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")
    if config.data.get("prepare_offline", True) and jax.process_index() == 0:
        try:
            jdata.get_source(config.data.name, config.data.split, data_dir)
        except FileNotFoundError:
            # Offline machines: build the TFDS dataset from the project's local arrays if it is missing.
            jdata.ensure_prepared(config.data.name, data_dir)
    multihost_utils.sync_global_devices("jaxssl:data_prepared")

    backbone = models.get(**{**config.model, "dtype": dtype})
    method = methods.get(config.method, backbone=backbone, dtype=dtype, **config.method_kw)
    tx, lr_schedule = optim.make(config.optimizer, config.batch_size, max(config.total_steps, 1))
    views = [dict(v) for v in config.input.views]

    train_iter = jdata.make_train_iter(config.data.name, config.data.split, data_dir=data_dir,
                                       global_batch_size=config.batch_size, seed=config.seed,
                                       worker_count=config.data.get("worker_count", 0))
    if knn_on:  # Evaluation needs labelled splits: find out now, not after training (checks the first record).
        for split in (knn_cfg.train_split, knn_cfg.test_split):
            jdata.make_eval_iter(config.data.name, split, data_dir=data_dir, prefetch=0,
                                 batch_size=knn_cfg.batch_size // jax.process_count())
    rng = jax.random.key(config.seed)
    example = jnp.zeros((2, views[0].get("crop_size", 32), views[0].get("crop_size", 32), 3), jnp.float32)
    init = lambda r: step_lib.init_state(method, tx, r, example)
    # Created directly in its layout (replicated, or FSDP-sharded: a large model never sits whole on one device).
    min_size = mesh_cfg.get("fsdp_min_size", shd.FSDP_MIN_SIZE)
    state_sh = shd.state_shardings(jax.eval_shape(init, jax.random.fold_in(rng, 1)), mesh, min_size)
    state = jax.jit(init, out_shardings=state_sh)(jax.random.fold_in(rng, 1))
    # Optional online linear probe (config.evals.online_probe), state in TrainState.probe.
    probe, probe_state = evaluate.init_online_probe(config.evals.get("online_probe"), method.net,
                                                    {"params": state.params, **state.model_state}, example)
    if probe is not None:
        state = state.replace(probe=jax.device_put(probe_state, shd.replicated(mesh)))
    state = jax.device_put(state, shd.state_shardings(state, mesh, min_size))  # restores get the same layout
    guard = _NonFiniteGuard(config.get("nonfinite", "raise") == "skip", config.get("nonfinite_patience", 10))
    train_step = step_lib.make_train_step(method, tx, views, mesh, lr_schedule, probe, skip_nonfinite=guard.skip,
                                          state_shardings=shd.state_shardings(state, mesh, min_size),
                                          accum_steps=config.get("accum_steps", 1))
    step_rng = jax.random.fold_in(rng, 2)

    # --- Restore ---------------------------------------------------------------------------
    checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=config.keep_ckpts)
    stop = _StopFlag()  # Installed from here on: SIGTERM -> finish the step, checkpoint, raise Preempted.
    writer = _Writer(workdir)
    final: dict[str, Any] = {}
    pbar, pending, start, finished = None, [], int(state.step), False
    last_saved = start
    try:
        state = _resume(checkpointer, state, train_iter, guard)
        start = last_saved = int(state.step)

        # --- Loop --------------------------------------------------------------------------
        if jax.process_index() == 0 and config.get("progress_bar", True):
            from tqdm.auto import tqdm
            pbar = tqdm(total=config.total_steps, initial=start, desc=f"{config.method}", unit="step",
                        dynamic_ncols=True)
        last_logged, checked, t0 = start, start, time.time()
        for step in range(start + 1, config.total_steps + 1):
            batch = shd.to_global(next(train_iter), mesh)
            state, metrics = train_step(state, batch, step_rng)
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
                # The newest step that was not skipped; of a skipped one only its finite metrics.
                rows = [m for m in pending if not m.get("nonfinite_skipped", 0)] or pending
                scalars = {k: float(v) for k, v in rows[-1].items() if np.isfinite(v)}
                if guard.skip:
                    scalars["nonfinite_skips"] = guard.skipped
                scalars["steps_per_sec"] = (step - last_logged) / max(time.time() - t0, 1e-9)
                writer.write(step, scalars)
                final.update(scalars)
                if pbar is not None and "loss" in scalars:
                    pbar.set_postfix(loss=f"{scalars['loss']:.4f}")
                pending, last_logged, t0 = [], step, time.time()
            if knn_on and knn_cfg.every_steps > 0 and step % knn_cfg.every_steps == 0 and step != config.total_steps:
                res = run_knn(config, method, state, mesh, data_dir)
                writer.write(step, res)
                log.info("step %d kNN %s", step, res)
            if is_ckpt:
                checkpointer.save(step, state, train_iter.get_state(), meta={"nonfinite_skips": guard.skipped},
                                  force=step == config.total_steps or stopping)
                last_saved = step
            if stopping:
                raise Preempted(f"Stopped by signal {stop.signum} (SIGTERM) after step {step}, which is checkpointed "
                                f"in {checkpointer.directory}. Rerun the same command to resume.")
        finished = True
    except KeyboardInterrupt:
        # Unlike SIGTERM this can land inside a step whose input state is already donated: save if possible.
        try:
            if int(state.step) > last_saved:
                checkpointer.save(int(state.step), state, train_iter.get_state(),
                                  meta={"nonfinite_skips": guard.skipped}, force=True)
                log.warning("Interrupted: wrote a checkpoint at step %d before exiting.", int(state.step))
        except Exception as e:  # noqa: BLE001
            log.warning("Interrupted: no checkpoint written (%s); the newest is step %d.", e, last_saved)
        raise
    finally:
        stop.restore()
        if pbar is not None:
            pbar.close()
        checkpointer.close()
        if not finished:
            writer.close()

    # --- Final evaluation ------------------------------------------------------------------
    if knn_on:
        res = run_knn(config, method, state, mesh, data_dir)
        writer.write(int(state.step), res)
        final.update(res)
    writer.close()
    return final
