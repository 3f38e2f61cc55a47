"""The trainer for non-image inputs (data2vec text and speech), on the shared jitted step.

`jaxssl.train.loop.train` reads TFDS images and augments them on device; text tokens and
waveforms come from `jaxssl.data.text` / `jaxssl.data.audio` instead. `config.input.views = ()`
makes the shared step (`train/step.py`) hand `batch["inputs"]` to the method unchanged, so the
update itself -- gradients, optimiser, EMA teacher, sharding -- is exactly the image trainer's.

With a `workdir` the run keeps what `loop.train` keeps, through the same pieces (imported from
`loop`, not re-implemented): `config.json` (a workdir holding another config is refused),
`metrics.jsonl` + `tb/` (`loop._Writer`), orbax checkpoints of the TrainState plus the data
iterator's state (`checkpoint.Checkpointer`, every `config.ckpt_steps` and at the end; the
iterators' state is their step counter, so a resumed run reads the same batches), the NaN/Inf
guard (`loop._NonFiniteGuard`), SIGTERM -> checkpoint and `loop.Preempted` (`loop._StopFlag`), and
a progress bar. A run killed and restarted with the same command ends bit-identical to an
uninterrupted one (tests/train/test_sequence.py). Without a workdir nothing is written.

  python -c "from configs import data2vec_speech_fsdd as c; from jaxssl.train import sequence; \
             print(sequence.train(c.get_config('runlocal'), 'workdirs/d2v_speech'))"
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxssl import methods, models
from jaxssl.evaluate import knn  # the function (jaxssl.evaluate re-exports it over the module)
from jaxssl.train import checkpoint as ckpt_lib
from jaxssl.train import loop
from jaxssl.train import optim
from jaxssl.train import sharding as shd
from jaxssl.train import step as step_lib

log = logging.getLogger(__name__)


def make_iter(config: ml_collections.ConfigDict, split: str = "train"):
    from jaxssl.data import audio, text
    if config.data.name == "tiny_shakespeare":
        return text.make_text_iter(config.batch_size, config.data.seq_len, split=split, seed=config.seed)
    if config.data.name == "fsdd":
        return audio.make_audio_iter(config.batch_size, split=split, seed=config.seed,
                                     sample_rate=config.data.sample_rate, clip_seconds=config.data.clip_seconds)
    raise ValueError(f"Unknown sequence dataset {config.data.name!r}; use 'tiny_shakespeare' or 'fsdd'.")


def speech_knn(method, variables, config, mesh, batch: int = 100) -> dict[str, float]:
    """Weighted kNN (k=20, T=0.07) of spoken digits: FSDD train clips -> official test clips."""
    from jaxssl.data import audio
    feats = jax.jit(lambda v, x: method.net.apply(v, x, train=False, method="features"))
    out = {}
    for split in ("train", "test"):
        d = audio.load_fsdd(split, sample_rate=config.data.sample_rate, clip_seconds=config.data.clip_seconds)
        n = len(d["audio"]) // batch * batch
        out[split] = (np.concatenate([np.asarray(feats(variables, d["audio"][i:i + batch]))
                                      for i in range(0, n, batch)]), d["digit"][:n])
    return knn(*out["train"], *out["test"], k=20, temperature=0.07, num_classes=10, mesh=mesh)


def train(config: ml_collections.ConfigDict, workdir: str | None = None) -> dict[str, Any]:
    """Pre-train on text/speech; returns {"losses": [...], "final": metrics[, "knn"]}.

    `losses` holds the loss of every logged step of this call (a resumed run: from its restart).
    Raises FloatingPointError at a NaN/Inf (or after `nonfinite_patience` skips with
    `config.nonfinite = "skip"`) and `loop.Preempted` after SIGTERM, as `loop.train`.
    """
    # --- Setup -----------------------------------------------------------------------------
    if workdir is not None:  # before anything compiles: a workdir of another run is refused at once
        workdir = os.path.abspath(workdir)
        loop._check_workdir_config(workdir, config)
    mesh = shd.make_mesh()
    shd.check_batch_size(config.batch_size, mesh)
    backbone = models.get(**config.model)
    method = methods.get(config.method, backbone=backbone, **config.method_kw)
    tx, lr = optim.make(config.optimizer, config.batch_size, max(config.total_steps, 1))
    it = make_iter(config)
    first = next(it)["inputs"]
    state = jax.jit(lambda r, x: step_lib.init_state(method, tx, r, x),
                    out_shardings=shd.replicated(mesh))(jax.random.key(config.seed), first)
    guard = loop._NonFiniteGuard(config.get("nonfinite", "raise") == "skip", config.get("nonfinite_patience", 10))
    step_fn = step_lib.make_train_step(method, tx, (), mesh, lr_schedule=lr, skip_nonfinite=guard.skip)
    rng = jax.random.key(config.seed + 1)  # the step folds in state.step: the same key every step
    it.set_state({"step": 0, "seed": config.seed})
    ckpt_steps = config.get("ckpt_steps", config.total_steps) or config.total_steps

    # --- Restore ---------------------------------------------------------------------------
    checkpointer = writer = None
    if workdir is not None:
        checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                             max_to_keep=config.get("keep_ckpts", 3))
        writer = loop._Writer(workdir)
    stop = loop._StopFlag() if workdir is not None else None
    losses, final, pbar, finished = [], {}, None, False
    try:
        if checkpointer is not None:
            state = loop._resume(checkpointer, state, it, guard)
        start = last_saved = last_logged = int(state.step)

        # --- Loop --------------------------------------------------------------------------
        if jax.process_index() == 0 and config.get("progress_bar", True):
            from tqdm.auto import tqdm
            pbar = tqdm(total=config.total_steps, initial=start, desc=f"{config.method}/{config.data.name}",
                        unit="step", dynamic_ncols=True)
        pending, t0 = [], time.time()
        for i in range(start + 1, config.total_steps + 1):
            state, metrics = step_fn(state, shd.to_global({"inputs": next(it)["inputs"]}, mesh), rng)
            pending.append(metrics)
            if pbar is not None:
                pbar.update(1)
            stopping = stop is not None and stop.signum is not None and i < config.total_steps
            is_ckpt = checkpointer is not None and (i % ckpt_steps == 0 or i == config.total_steps or stopping)
            if i % config.log_steps == 0 or i == config.total_steps or is_ckpt:
                # Every step is checked before a checkpoint holding it is written.
                pending = jax.device_get(pending)
                guard.check(pending, last_logged + 1, last_saved)
                rows = [m for m in pending if not m.get("nonfinite_skipped", 0)] or pending
                final = {k: float(v) for k, v in rows[-1].items() if np.isfinite(v)}
                final["steps_per_sec"] = (i - last_logged) / max(time.time() - t0, 1e-9)
                if guard.skip:
                    final["nonfinite_skips"] = guard.skipped
                losses.append(final.get("loss", float("nan")))
                if writer is not None:
                    writer.write(i, final)
                if pbar is not None:
                    pbar.set_postfix(loss=f"{losses[-1]:.4f}")
                else:
                    print(f"step {i}: loss {losses[-1]:.4f} ({time.time() - t0:.0f} s)", flush=True)
                pending, last_logged, t0 = [], i, time.time()
            if is_ckpt:
                checkpointer.save(i, state, it.get_state(), meta={"nonfinite_skips": guard.skipped},
                                  force=i == config.total_steps or stopping)
                last_saved = i
            if stopping:
                raise loop.Preempted(f"Stopped by signal {stop.signum} (SIGTERM) after step {i}, which is "
                                     f"checkpointed in {checkpointer.directory}. Rerun the same command to resume.")
        finished = True
    finally:
        if stop is not None:
            stop.restore()
        if pbar is not None:
            pbar.close()
        if checkpointer is not None:
            checkpointer.close()
        if writer is not None and not finished:
            writer.close()

    # --- Final evaluation ------------------------------------------------------------------
    result = {"losses": losses, "final": final}
    if config.data.name == "fsdd" and config.get("knn", True):
        result["knn"] = speech_knn(method, {"params": state.params, **state.model_state}, config, mesh)
        if writer is not None:
            writer.write(int(state.step), {f"knn_{k}": float(v) for k, v in result["knn"].items()})
    if writer is not None:
        writer.close()
    return result
