r"""Export backbone features: ``jaxssl.embed(variables, images, model=...)`` and a CLI.

  python -m jaxssl.embed --workdir workdirs/simclr_cpu --dataset cifar10 --split test \
      --output features.npz

The CLI rebuilds the network from ``<workdir>/config.json``, restores from the newest (or
``--step``) checkpoint **only** the variables inference needs (the student's ``params`` and
``model_state``, or with ``--teacher`` the EMA teacher), never the optimiser state, and writes an
npz with ``features`` float32 (N, F), ``labels`` int32 (N,) and ``step``. Images go through the
run's evaluation transform (``config.evals.knn.view``: normalisation only), exactly as the
trainer's kNN evaluation sees them.

In Python::

    loaded = jaxssl.embed.load("workdirs/simclr_cpu")            # Loaded(model, variables, ...)
    feats = jaxssl.embed(loaded.variables, images, model=loaded.model, view=loaded.view)

This module is callable (``jaxssl.embed(...)`` is :func:`embed`) so that the function and the
``python -m jaxssl.embed`` module share one name.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import types
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from jaxssl import augment, data as jdata, methods, models
from jaxssl.train import sharding as shd


# ----------------------------------------------------------------------------------------------
# Features of images in memory.
# ----------------------------------------------------------------------------------------------
def _freeze(view: Mapping[str, Any] | None) -> tuple:
    """A view dict as a hashable, sorted tuple (lists from JSON become tuples)."""
    fix = lambda v: tuple(fix(x) for x in v) if isinstance(v, (list, tuple)) else v
    return tuple(sorted((k, fix(v)) for k, v in dict(view or {}).items()))


@functools.lru_cache(maxsize=16)
def _forward(model, mesh: Mesh, view: tuple):
    """Jitted (variables, images, rng) -> features (B, F): the view, then eval-mode features."""
    view_dict = dict(view)
    has_features = callable(getattr(model, "features", None))  # a method's network vs. a bare backbone

    def forward(variables, images, rng):
        x = augment.apply(rng, images, view_dict)
        if has_features:
            return model.apply(variables, x, train=False, method="features")
        return model.apply(variables, x, train=False)

    rep, rows = shd.replicated(mesh), shd.data_sharded(mesh)
    return jax.jit(forward, in_shardings=(rep, rows, rep), out_shardings=rows)


def _get_forward(model, mesh: Mesh, view: tuple):
    try:
        return _forward(model, mesh, view)
    except TypeError:  # an unhashable module (e.g. nn.Sequential of a list): compiled for this call only
        return _forward.__wrapped__(model, mesh, view)


def _as_variables(variables) -> dict:
    """Accept {"params": ..., **collections} or a bare params tree."""
    return dict(variables) if "params" in variables else {"params": variables}


def embed(variables: Any, images: Any, *, model, view: Mapping[str, Any] | None = None, batch_size: int = 256,
          mesh: Mesh | None = None, rng: jax.Array | None = None) -> np.ndarray:
    """Eval-mode backbone features of host images, batched and sharded over devices.

    Args:
        variables: ``{"params": ..., "batch_stats": ...}`` (a bare params tree is wrapped as
            ``{"params": ...}``; a BatchNorm model needs its ``batch_stats`` too).
        images: (N, H, W, 3) uint8 in [0, 255] or float in [0, 1], on this host.
        model: a method's network (``Method.net``, whose ``features`` method gives the backbone
            output) or a backbone module (called with ``train=False``).
        view: the transform applied first (``jaxssl.augment.apply`` keys); the evaluation view
            normalises only. A view with random ops needs ``rng``.
        batch_size: images per jitted call (rounded up to a multiple of the device count; the
            last batch is padded and the padding dropped).
        mesh: mesh with a "data" axis (default: all devices).
        rng: key of the random ops of ``view`` (folded with the batch index), e.g. for augmented
            linear-probe features; None uses a fixed key (deterministic views ignore it).

    Returns:
        float32 NumPy (N, F).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (N, H, W, 3), got shape {images.shape}.")
    mesh = shd.make_mesh() if mesh is None else mesh
    n_dev = mesh.shape[shd.DATA]
    batch_size = -(-max(1, min(batch_size, len(images))) // n_dev) * n_dev
    forward = _get_forward(model, mesh, _freeze(view))
    variables = jax.device_put(_as_variables(variables), shd.replicated(mesh))
    rng = jax.random.key(0) if rng is None else rng
    out = []
    for i, start in enumerate(range(0, len(images), batch_size)):
        chunk = images[start:start + batch_size]
        pad = batch_size - len(chunk)
        chunk = np.pad(chunk, ((0, pad), (0, 0), (0, 0), (0, 0)))
        out.append(np.asarray(forward(variables, chunk, jax.random.fold_in(rng, i)))[: batch_size - pad])
    if not out:
        raise ValueError("images is empty.")
    return np.concatenate(out).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Loading a run for inference.
# ----------------------------------------------------------------------------------------------
class Loaded(NamedTuple):
    """A run restored for inference: ``embed(variables, images, model=model, view=view)``."""

    model: Any           # the method's network (flax module) rebuilt from config.json
    variables: dict      # {"params", **model_state}, replicated over the mesh
    config: dict         # the run's config.json
    step: int            # the checkpoint's step
    view: dict           # the evaluation transform (config.evals.knn.view, or {})


def build_model(config: Mapping[str, Any]):
    """The method's network from a config dict, as ``jaxssl.train.loop.train`` builds it."""
    dtype = jnp.dtype(config.get("dtype", "float32"))
    backbone = models.get(**{**config["model"], "dtype": dtype})
    return methods.get(config["method"], backbone=backbone, dtype=dtype, **config["method_kw"]).net


def load(workdir: str, *, step: int | None = None, teacher: bool = False, mesh: Mesh | None = None) -> Loaded:
    """Restore a run's network for inference: the weights only, no optimiser state.

    Args:
        workdir: a ``jaxssl.train.loop.train`` workdir (``config.json`` + ``checkpoints/<step>``).
        step: checkpoint step (default: the newest).
        teacher: restore the EMA teacher (``TrainState.teacher``, what DINO/BYOL evaluate) instead
            of the student.
        mesh: mesh the variables are replicated on (default: all devices).

    Returns:
        :class:`Loaded`.
    """
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

    workdir = os.path.abspath(workdir)
    config_path = os.path.join(workdir, "config.json")
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"No config.json in {workdir}: is it a jaxssl training workdir (--workdir of "
                                f"python -m jaxssl.main)?")
    with open(config_path) as f:
        config = json.load(f)
    mesh = shd.make_mesh() if mesh is None else mesh
    model = build_model(config)
    size = config["input"]["views"][0].get("crop_size") or 32
    example = jnp.zeros((2, size, size, 3), jnp.float32)
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
    view = dict(config.get("evals", {}).get("knn", {}).get("view") or {})
    return Loaded(model, variables, config, int(step), view)


def embed_split(loaded: Loaded, dataset: str, split: str, *, data_dir: str | None = None, batch_size: int = 256,
                limit: int | None = None, mesh: Mesh | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of (the first ``limit`` examples of) a TFDS split, all processes gathered.

    ``batch_size`` is per process (``jaxssl.data.make_eval_iter``); padding is dropped.
    """
    mesh = shd.make_mesh() if mesh is None else mesh
    n_dev_local = mesh.shape[shd.DATA] // jax.process_count()
    batch_size = -(-batch_size // n_dev_local) * n_dev_local
    forward = _get_forward(loaded.model, mesh, _freeze(loaded.view))
    rng = jax.random.key(0)
    feats, labels, seen = [], [], 0
    for batch in jdata.make_eval_iter(dataset, split, data_dir=data_dir, batch_size=batch_size):
        x = shd.to_global({"image": batch["image"]}, mesh)["image"]
        f = multihost_utils.process_allgather(forward(loaded.variables, x, rng), tiled=True)
        mask = multihost_utils.process_allgather(batch["mask"], tiled=True).astype(bool)
        lab = multihost_utils.process_allgather(batch["label"], tiled=True)
        feats.append(np.asarray(f)[mask])
        labels.append(np.asarray(lab)[mask])
        seen += int(mask.sum())
        if limit is not None and seen >= limit:
            break
    f, y = np.concatenate(feats).astype(np.float32), np.concatenate(labels).astype(np.int32)
    return (f[:limit], y[:limit]) if limit is not None else (f, y)


# ----------------------------------------------------------------------------------------------
# CLI.
# ----------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxssl.embed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="training workdir (config.json + checkpoints/)")
    parser.add_argument("--output", required=True, help="npz to write (features, labels, step)")
    parser.add_argument("--dataset", default=None, help="TFDS name (default: the run's config.data.name)")
    parser.add_argument("--split", default="test", help="TFDS split, slicing allowed (e.g. 'train[:10%%]')")
    parser.add_argument("--data_dir", default=None, help="TFDS data dir (default: the run's, $TFDS_DATA_DIR, "
                                                         "~/tensorflow_datasets)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest)")
    parser.add_argument("--teacher", action="store_true", help="use the EMA teacher's backbone")
    parser.add_argument("--batch_size", type=int, default=256, help="images per batch on each process")
    parser.add_argument("--limit", type=int, default=None, help="embed only the first LIMIT examples")
    args = parser.parse_args(argv)
    try:
        loaded = load(args.workdir, step=args.step, teacher=args.teacher)
        data_cfg = loaded.config.get("data", {})
        data_dir = (args.data_dir or data_cfg.get("data_dir") or os.environ.get("TFDS_DATA_DIR")
                    or os.path.expanduser("~/tensorflow_datasets"))
        features, labels = embed_split(loaded, args.dataset or data_cfg.get("name", "cifar10"), args.split,
                                       data_dir=data_dir, batch_size=args.batch_size, limit=args.limit)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if jax.process_index() == 0:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        np.savez(args.output, features=features, labels=labels, step=np.int64(loaded.step))
        print(f"Wrote {args.output}: features {features.shape} from step {loaded.step} of {args.workdir}")
    return 0


class _CallableModule(types.ModuleType):
    """``jaxssl.embed(...)`` calls :func:`embed` even though ``jaxssl.embed`` is this module."""

    def __call__(self, *args, **kwargs):
        return embed(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(main())
