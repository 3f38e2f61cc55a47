"""Frozen features: the one path from a network and its variables to backbone features.

  fn = features.make_fn(net, mesh, view)              # jitted (variables, x, rng) -> (B, F), sharded rows
  f, y = features.of_split(fn, variables, batches, mesh)   # a padded eval pass, gathered over processes
  f = features.of_images(variables, images, model=net, view=view)   # images in host memory

`net` is a method's network (`Method.net`, whose `features` method gives the backbone output) or
a bare backbone (called with `train=False`). `view` is the evaluation transform of image inputs
(`jaxssl.augment.apply` keys; normalisation only, by default); None passes the input unchanged
(token ids, waveforms). The trainer's evaluators, `python -m jaxssl.tools.features` and
`python -m jaxssl.tools.evaluate` all embed through these functions.
"""
from __future__ import annotations

import functools
from typing import Any, Iterable, Mapping

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from jaxssl import augment
from jaxssl.train import sharding as shd


def _freeze(view: Mapping[str, Any] | None) -> tuple | None:
    """A view dict as a hashable, sorted tuple (lists from JSON become tuples); None stays None."""
    if view is None:
        return None
    fix = lambda v: tuple(fix(x) for x in v) if isinstance(v, (list, tuple)) else v
    return tuple(sorted((k, fix(v)) for k, v in dict(view).items()))


def _make_fn(net, mesh: Mesh, view: tuple | None, variables_shardings, method=None):
    view_dict = None if view is None else dict(view)
    has_features = callable(getattr(net, "features", None))  # a method's network vs. a bare backbone

    def forward(variables, x, rng):
        if view_dict is not None:
            x = augment.apply(rng, x, view_dict)  # the evaluation view: all probabilities 0 by default
        if method is not None:  # another output than the features (e.g. patch tokens, attentive probe)
            return net.apply(variables, x, train=False, method=method)
        if has_features:
            return net.apply(variables, x, train=False, method="features")
        return net.apply(variables, x, train=False)

    rep, rows = shd.replicated(mesh), shd.data_sharded(mesh)
    var_sh = rep if variables_shardings is None else variables_shardings
    return jax.jit(forward, in_shardings=(var_sh, rows, rep), out_shardings=rows)


_cached_fn = functools.lru_cache(maxsize=16)(_make_fn)


def make_fn(net, mesh: Mesh, view: Mapping[str, Any] | None = None, variables_shardings=None, method=None):
    """Jitted `fn(variables, x, rng) -> features (B, F)` in eval mode, rows sharded over the batch axes.

    `variables_shardings`: the variables' layout (e.g. FSDP, `shd.state_shardings`); None: replicated.
    `rng` only matters for a view with random ops (e.g. augmented linear-probe features).
    `method`: None (the network's `features`), or a function `method(module, x, train)` for
    `net.apply(..., method=method)` (module-level, so it is hashable), e.g. patch tokens (B, T, D).
    """
    if variables_shardings is not None:
        return _make_fn(net, mesh, _freeze(view), variables_shardings, method)
    try:
        return _cached_fn(net, mesh, _freeze(view), None, method)
    except TypeError:  # an unhashable module (e.g. nn.Sequential of a list): compiled for this call only
        return _make_fn(net, mesh, _freeze(view), None, method)


def of_split(fn, variables, batches: Iterable[Mapping[str, np.ndarray]], mesh: Mesh, *,
             limit: int | None = None, rng: jax.Array | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of (the first `limit` examples of) one padded evaluation pass, all processes.

    `batches`: process-local {"image" or "inputs", "label", "mask"} as `jaxssl.data.inputs.eval_iter`
    yields; padding rows (mask False) are dropped. Returns float32 (N, F) and int32 (N,) on every process.
    """
    rng = jax.random.key(0) if rng is None else rng
    feats, labels, seen = [], [], 0
    for i, batch in enumerate(batches):
        key = "image" if "image" in batch else "inputs"
        x = shd.to_global({key: batch[key]}, mesh)[key]
        f = multihost_utils.process_allgather(fn(variables, x, jax.random.fold_in(rng, i)), tiled=True)
        mask = multihost_utils.process_allgather(np.asarray(batch["mask"]), tiled=True).astype(bool)
        lab = multihost_utils.process_allgather(np.asarray(batch["label"]), tiled=True)
        feats.append(np.asarray(f)[mask])
        labels.append(np.asarray(lab)[mask])
        seen += int(mask.sum())
        if limit is not None and seen >= limit:
            break
    if not feats:
        raise ValueError("The evaluation split is empty.")
    f, y = np.concatenate(feats).astype(np.float32), np.concatenate(labels).astype(np.int32)
    return (f[:limit], y[:limit]) if limit is not None else (f, y)


def of_images(variables: Any, images: Any, *, model, view: Mapping[str, Any] | None = None,
              batch_size: int = 256, mesh: Mesh | None = None, rng: jax.Array | None = None) -> np.ndarray:
    """Eval-mode backbone features of host images, batched and sharded over devices.

    Args:
        variables: ``{"params": ..., "batch_stats": ...}`` (a bare params tree is wrapped as
            ``{"params": ...}``; a BatchNorm model needs its ``batch_stats`` too).
        images: (N, H, W, 3) uint8 in [0, 255] or float in [0, 1], on this host.
        model: a method's network (``Method.net``) or a backbone module.
        view: the transform applied first (``jaxssl.augment.apply`` keys); the evaluation view
            normalises only. A view with random ops needs ``rng``.
        batch_size: images per jitted call (rounded up to a multiple of the device count; the
            last batch is padded and the padding dropped).
        mesh: mesh with a "data" axis (default: all devices).
        rng: key of the random ops of ``view`` (folded with the batch index); None: a fixed key.

    Returns:
        float32 NumPy (N, F).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (N, H, W, 3), got shape {images.shape}.")
    if not len(images):
        raise ValueError("images is empty.")
    mesh = shd.make_mesh() if mesh is None else mesh
    n_dev = shd.batch_shards(mesh)
    batch_size = -(-max(1, min(batch_size, len(images))) // n_dev) * n_dev
    fn = make_fn(model, mesh, dict(view or {}))
    variables = dict(variables) if "params" in variables else {"params": variables}
    variables = jax.device_put(variables, shd.replicated(mesh))
    rng = jax.random.key(0) if rng is None else rng
    out = []
    for i, start in enumerate(range(0, len(images), batch_size)):
        chunk = images[start:start + batch_size]
        pad = batch_size - len(chunk)
        chunk = np.pad(chunk, ((0, pad), (0, 0), (0, 0), (0, 0)))
        out.append(np.asarray(fn(variables, chunk, jax.random.fold_in(rng, i)))[: batch_size - pad])
    return np.concatenate(out).astype(np.float32)
