"""A small trainer for non-image inputs (data2vec text and speech), on the shared jitted step.

`jaxssl.train.loop.train` reads TFDS images and augments them on device; text tokens and
waveforms come from `jaxssl.data.text` / `jaxssl.data.audio` instead. `config.input.views = ()`
makes the shared step (`train/step.py`) hand `batch["inputs"]` to the method unchanged, so the
update itself -- gradients, optimiser, EMA teacher, sharding -- is exactly the image trainer's.
No checkpointing here: the iterators' state is one step counter (`get_state`), ready for it.

  python -c "from configs import data2vec_speech_fsdd as c; from jaxssl.train import sequence; \
             print(sequence.train(c.get_config('runlocal')))"
"""
from __future__ import annotations

import time
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxssl import methods, models
from jaxssl.evaluate import knn
from jaxssl.train import optim
from jaxssl.train import sharding as shd
from jaxssl.train import step as step_lib


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
    return knn.knn(*out["train"], *out["test"], k=20, temperature=0.07, num_classes=10, mesh=mesh)


def train(config: ml_collections.ConfigDict, workdir: str | None = None) -> dict[str, Any]:
    """Pre-train on text/speech; returns {"losses": [...], "final": metrics[, "knn_top1"]}."""
    del workdir
    mesh = shd.make_mesh()
    shd.check_batch_size(config.batch_size, mesh)
    backbone = models.get(**config.model)
    method = methods.get(config.method, backbone=backbone, **config.method_kw)
    tx, lr = optim.make(config.optimizer, config.batch_size, max(config.total_steps, 1))
    it = make_iter(config)
    first = shd.to_global(next(it), mesh)
    state = step_lib.init_state(method, tx, jax.random.key(config.seed), first["inputs"])
    step = step_lib.make_train_step(method, tx, (), mesh, lr_schedule=lr)
    rng, losses, t0, metrics = jax.random.key(config.seed + 1), [], time.time(), {}
    it.set_state({"step": 0, "seed": config.seed})
    for i in range(config.total_steps):
        batch = shd.to_global({"inputs": next(it)["inputs"]}, mesh)
        state, metrics = step(state, batch, rng)
        if (i + 1) % config.log_steps == 0 or i + 1 == config.total_steps:
            losses.append(float(metrics["loss"]))
            print(f"step {i + 1}: loss {losses[-1]:.4f} ({time.time() - t0:.0f} s)", flush=True)
    result = {"losses": losses, "final": {k: float(v) for k, v in metrics.items()}}
    if config.data.name == "fsdd" and config.get("knn", True):
        result["knn"] = speech_knn(method, {"params": state.params, **state.model_state}, config, mesh)
    return result
