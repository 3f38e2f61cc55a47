"""A trained run's network and weights, restored for inference (the weights only, no optimiser state).

    run = jaxssl.evaluate.restore.load("workdirs/simclr_cpu")          # Loaded(model, variables, ...)
    feats = jaxssl.evaluate.features.of_images(run.variables, images, model=run.model, view=run.view)

The network is rebuilt from the run's `config.json` by `jaxssl.methods.build`, the one builder the
trainer uses too.
"""
from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

import jax
from jax.sharding import Mesh

from jaxssl import methods
from jaxssl.data import inputs
from jaxssl.train import checkpoint as ckpt_lib
from jaxssl.train import sharding as shd


class Loaded(NamedTuple):
    """A run restored for inference: `features.of_images(variables, images, model=model, view=view)`."""

    model: Any           # the method's network (flax module) rebuilt from config.json
    variables: dict      # {"params", **model_state}, replicated over the mesh
    config: dict         # the run's config.json
    step: int            # the checkpoint's step
    view: dict | None    # the evaluation transform of its kNN evaluator ({} if none; None for non-image input)


def read_config(workdir: str) -> dict:
    """The run's `config.json` as a dict (FileNotFoundError naming what a workdir is)."""
    path = os.path.join(os.path.abspath(workdir), "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"No config.json in {os.path.abspath(workdir)}: is it a jaxssl training workdir "
                                f"(--workdir of python -m jaxssl.main)?")
    with open(path) as f:
        return json.load(f)


def load(workdir: str, *, step: int | None = None, teacher: bool = False, mesh: Mesh | None = None) -> Loaded:
    """Restore a run's network for inference: the weights only, no optimiser state.

    Args:
        workdir: a `jaxssl.train.loop.train` workdir (`config.json` + `checkpoints/<step>`).
        step: checkpoint step (default: the newest good one; a newer unusable step is skipped with a
            warning).
        teacher: restore the EMA teacher (`TrainState.teacher`, what DINO/BYOL evaluate) instead
            of the student.
        mesh: mesh the variables are replicated on (default: all devices).

    Returns:
        `Loaded`.

    Raises:
        FileNotFoundError: no config.json or no checkpoint.
        ValueError: no usable checkpoint (each step's reason in one line: a checksum mismatch, a
            missing or truncated file, ...), `step` missing or unusable, or no teacher to restore.
    """
    workdir = os.path.abspath(workdir)
    config = read_config(workdir)
    mesh = shd.make_mesh() if mesh is None else mesh
    method = methods.build(config)
    model = method.net
    example = inputs.example(config)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), example, train=True))
    rep = shd.replicated(mesh)
    abstract = jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep), shapes)
    params = abstract["params"]
    model_state = {k: v for k, v in abstract.items() if k != "params"}
    # Only these subtrees of the saved TrainState are read (partial_restore): the optimiser state,
    # often 2-3x the size of the weights, never leaves the disk.
    if teacher:
        target = {"teacher": {"params": params, **model_state}}
    else:
        target = {"params": params, **({"model_state": model_state} if model_state else {})}

    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory) or not any(d.isdigit() for d in os.listdir(directory)):
        raise FileNotFoundError(f"No checkpoint in {directory}.")
    if teacher and method.teacher_momentum is None:
        raise ValueError(f"The run in {workdir} ({config.get('method')}) has no EMA teacher: drop --teacher.")
    # The trainer's reader (jaxssl.train.checkpoint): every leaf read is checked against the checksum
    # saved with it, and an unusable newest step is skipped for the next older one with a warning
    # (read-only: nothing is moved or deleted beside a run that may still be writing).
    checkpointer = ckpt_lib.Checkpointer(directory, read_only=True)
    try:
        found = checkpointer.restore(target, step=step, partial=True)
    except RuntimeError as e:
        raise ValueError(str(e)) from None
    finally:
        checkpointer.close()
    restored, step = found.state, found.step
    if teacher:
        variables = dict(restored["teacher"])
    else:
        variables = {"params": restored["params"], **restored.get("model_state", {})}
    view = None
    if inputs.kind(config) == "image":
        view = dict((config.get("evals") or {}).get("knn", {}).get("view") or {})
    return Loaded(model, variables, config, int(step), view)


def split_features(loaded: Loaded, split: str, *, dataset: str | None = None, data_dir: str | None = None,
                   batch_size: int = 256, limit: int | None = None,
                   mesh: Mesh | None = None) -> tuple[Any, Any]:
    """Features and labels of (the first `limit` examples of) a split of the run's data (or `dataset`).

    `batch_size` is per process, rounded up to a multiple of the local device count; padding is dropped.
    """
    from jaxssl.evaluate import features  # pylint: disable=g-import-not-at-top
    config = dict(loaded.config)
    if dataset is not None:
        config["data"] = {**config.get("data", {}), "name": dataset}
    data_dir = data_dir or inputs.data_dir(config)
    mesh = shd.make_mesh() if mesh is None else mesh
    n_local = shd.batch_shards(mesh) // jax.process_count()
    batch_size = -(-batch_size // n_local) * n_local
    fn = features.make_fn(loaded.model, mesh, loaded.view)
    batches = inputs.eval_iter(config, split, batch_size=batch_size, data_dir_=data_dir)
    return features.of_split(fn, loaded.variables, batches, mesh, limit=limit)
