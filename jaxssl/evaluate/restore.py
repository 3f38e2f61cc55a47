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
        step: checkpoint step (default: the newest).
        teacher: restore the EMA teacher (`TrainState.teacher`, what DINO/BYOL evaluate) instead
            of the student.
        mesh: mesh the variables are replicated on (default: all devices).

    Returns:
        `Loaded`.
    """
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

    workdir = os.path.abspath(workdir)
    config = read_config(workdir)
    mesh = shd.make_mesh() if mesh is None else mesh
    model = methods.build(config).net
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
    # orbax writes a step into "<step>.orbax-checkpoint-tmp-*" and renames it when complete, so
    # every all-digit entry is a committed step.
    steps = sorted(int(d) for d in os.listdir(directory) if d.isdigit()) if os.path.isdir(directory) else []
    if not steps:
        raise FileNotFoundError(f"No checkpoint in {directory}.")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise ValueError(f"No checkpoint for step {step} in {directory}; available steps: {steps}.")
    restore = ocp.args.PyTreeRestore(item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                                     partial_restore=True)
    path = os.path.join(directory, str(step), "state")  # the TrainState item (jaxssl.train.checkpoint)
    try:
        with ocp.PyTreeCheckpointer() as checkpointer:
            restored = checkpointer.restore(path, args=restore)
    except (KeyError, TypeError, ValueError) as e:
        what = "an EMA teacher (this method has none?)" if teacher else "the network of config.json"
        raise ValueError(f"Checkpoint {path} does not hold {what}: {str(e)[:300]}") from e
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
