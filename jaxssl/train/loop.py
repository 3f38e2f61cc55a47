"""`train(config, workdir)`: the trainer, one straight script in marked sections.

Setup (mesh, data, method, optimiser, state) -> restore from the workdir if a checkpoint is
there -> loop (step, log, evaluate, checkpoint) -> final checkpoint and evaluation. Every
method runs through this file; it never branches on the method.

Files written in `workdir`: `config.json` (the run's config), `metrics.jsonl` (one JSON object
per logged step or evaluation), `tb/` (TensorBoard events), `checkpoints/<step>/`.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from jaxssl import data as jdata
from jaxssl import evaluate, methods, models
from jaxssl.train import checkpoint as ckpt_lib
from jaxssl.train import optim, sharding as shd, step as step_lib

log = logging.getLogger(__name__)

# Keys of the config that change the meaning of a checkpoint: resuming with other values is refused.
_STRUCTURAL_KEYS = ("method", "method_kw", "model", "batch_size", "dtype", "input", "seed", "optimizer")
_REQUIRED_KEYS = ("seed", "method", "method_kw", "model", "data", "input", "batch_size", "total_steps",
                  "optimizer", "log_steps", "ckpt_steps", "keep_ckpts", "evals")
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


# ----------------------------------------------------------------------------------------------
# Config checks: every bad value is reported with the key and the fix, before anything runs.
# ----------------------------------------------------------------------------------------------
def validate_config(config: ml_collections.ConfigDict) -> None:
    missing = [k for k in _REQUIRED_KEYS if k not in config]
    if missing:
        raise ValueError(f"Config is missing key(s) {missing}; start from a file in configs/ "
                         f"(e.g. configs/simclr_cifar10.py).")
    for key in ("batch_size", "total_steps", "log_steps", "ckpt_steps", "keep_ckpts"):
        value = config[key]
        if not isinstance(value, int) or value < (0 if key == "total_steps" else 1):
            raise ValueError(f"config.{key} must be a positive integer, got {value!r}.")
    if config.dtype not in _DTYPES:
        raise ValueError(f"config.dtype must be one of {sorted(_DTYPES)}, got {config.dtype!r}.")
    if not config.input.views:
        raise ValueError("config.input.views is empty; give one dict per augmented view.")
    knn = config.evals.get("knn")
    if knn is not None and knn.get("enabled", True):
        for k, t in knn.protocols:
            if k < 1 or t <= 0:
                raise ValueError(f"config.evals.knn.protocols has (k={k}, T={t}); need k >= 1 and T > 0.")


def _check_workdir_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Refuse to resume a run whose checkpoints were written with an incompatible config."""
    path = os.path.join(workdir, "config.json")
    new = json.loads(config.to_json_best_effort())
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        diff = [k for k in _STRUCTURAL_KEYS if old.get(k) != new.get(k)]
        if diff and os.path.isdir(os.path.join(workdir, "checkpoints")):
            raise ValueError(
                f"The workdir {workdir} holds a run with a different config for {diff} "
                f"(e.g. {diff[0]}: saved {old.get(diff[0])!r}, now {new.get(diff[0])!r}). Resuming would mix "
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
    """kNN accuracies (both protocols, top-1 and top-5) of the student backbone's features."""
    cfg = config.evals.knn
    embed_fn = step_lib.make_embed_fn(method, mesh, cfg.get("view", None))
    variables = {"params": state.params, **state.model_state}
    limit = lambda n: None if n is None or n < 0 else n
    ftr, ytr = _features(embed_fn, variables, config, cfg.train_split, limit(cfg.train_examples), mesh, data_dir)
    fte, yte = _features(embed_fn, variables, config, cfg.test_split, limit(cfg.test_examples), mesh, data_dir)
    protocols = tuple((int(k), float(t)) for k, t in cfg.protocols)
    return evaluate.knn_protocols(ftr, ytr, fte, yte, protocols=protocols, num_classes=cfg.get("num_classes", None))


# ----------------------------------------------------------------------------------------------
# The trainer.
# ----------------------------------------------------------------------------------------------
def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Pre-train `config.method` with the data, model and optimiser of `config`; resume from `workdir`.

    Returns the final metrics (last logged training metrics and the final evaluation).
    """
    # --- Setup -----------------------------------------------------------------------------
    validate_config(config)
    workdir = os.path.abspath(workdir)
    _check_workdir_config(workdir, config)
    mesh = shd.make_mesh()
    shd.check_batch_size(config.batch_size, mesh)
    dtype = _DTYPES[config.dtype]
    data_dir = config.data.data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")
    if config.data.get("prepare_offline", True) and jax.process_index() == 0:
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
    rng = jax.random.key(config.seed)
    example = jnp.zeros((2, views[0].get("crop_size", 32), views[0].get("crop_size", 32), 3), jnp.float32)
    state = jax.jit(lambda r: step_lib.init_state(method, tx, r, example),
                    out_shardings=shd.replicated(mesh))(jax.random.fold_in(rng, 1))
    train_step = step_lib.make_train_step(method, tx, views, mesh, lr_schedule)
    step_rng = jax.random.fold_in(rng, 2)

    # --- Restore ---------------------------------------------------------------------------
    checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=config.keep_ckpts)
    restored = checkpointer.restore(ckpt_lib.abstract(state))
    if restored is not None:
        state, data_state, start = restored
        if data_state is not None:
            train_iter.set_state(data_state)
        log.info("Resumed from step %d in %s", start, workdir)
    start = int(state.step)

    writer = _Writer(workdir)
    final: dict[str, Any] = {}
    knn_cfg = config.evals.get("knn")
    knn_on = knn_cfg is not None and knn_cfg.get("enabled", True)

    # --- Loop ------------------------------------------------------------------------------
    pbar = None
    if jax.process_index() == 0 and config.get("progress_bar", True):
        from tqdm.auto import tqdm
        pbar = tqdm(total=config.total_steps, initial=start, desc=f"{config.method}", unit="step", dynamic_ncols=True)
    pending: list = []
    last_logged, t0 = start, time.time()
    try:
        for step in range(start + 1, config.total_steps + 1):
            batch = shd.to_global(next(train_iter), mesh)
            state, metrics = train_step(state, batch, step_rng)
            pending.append(metrics)
            if pbar is not None:
                pbar.update(1)
            if step % config.log_steps == 0 or step == config.total_steps:
                # Fetch only at log steps: the host never waits on the device in between.
                fetched = jax.device_get(pending)
                pending = []
                for name in fetched[-1]:
                    values = np.asarray([m[name] for m in fetched], np.float64)
                    if not np.all(np.isfinite(values)):
                        raise FloatingPointError(
                            f"{name} became nan or inf somewhere within steps [{last_logged + 1}, {step}]. "
                            f"No checkpoint was written after step {last_logged}; lower the learning rate "
                            f"(--config.optimizer.base_lr) or enable gradient clipping (--config.optimizer.grad_clip).")
                scalars = {k: float(v) for k, v in fetched[-1].items()}
                scalars["steps_per_sec"] = (step - last_logged) / max(time.time() - t0, 1e-9)
                writer.write(step, scalars)
                final.update(scalars)
                if pbar is not None:
                    pbar.set_postfix(loss=f"{scalars['loss']:.4f}")
                last_logged, t0 = step, time.time()
            if knn_on and knn_cfg.every_steps > 0 and step % knn_cfg.every_steps == 0 and step != config.total_steps:
                res = run_knn(config, method, state, mesh, data_dir)
                writer.write(step, res)
                log.info("step %d kNN %s", step, res)
            if step % config.ckpt_steps == 0 or step == config.total_steps:
                checkpointer.save(step, state, train_iter.get_state(), force=step == config.total_steps)
    except KeyboardInterrupt:
        log.warning("Interrupted: writing a checkpoint at step %d before exiting.", int(state.step))
        checkpointer.save(int(state.step), state, train_iter.get_state(), force=True)
        raise
    finally:
        if pbar is not None:
            pbar.close()
        checkpointer.close()

    # --- Final evaluation ------------------------------------------------------------------
    if knn_on:
        res = run_knn(config, method, state, mesh, data_dir)
        writer.write(int(state.step), res)
        final.update(res)
    writer.close()
    return final
