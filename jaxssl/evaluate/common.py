"""Evaluators picked by name from `config.evals`, as big_vision's are.

Each block `config.evals.<name>` is one evaluator: the module `jaxssl.evaluate.<type>` (`type`
defaults to `<name>`) provides `Evaluator(net, mesh, *, config, data_dir, **kw)`, where `kw` is the
block without the keys every evaluator shares:

  type         the evaluator module ("knn", "linear_probe"); default: the block's name
  every_steps  also run every that many steps during training (0: only after the last step)
  enabled      False switches the block off (default True)

An Evaluator has `check()` (fail before training if its data is missing), `run(variables) ->
{metric: float}` and `evaluate_features(train_features, train_labels, test_features,
test_labels) -> {metric: float}` (so a tool that already holds features reuses it). Its keyword
arguments and their defaults are its documented options; `validate_config` checks a block against
them. `config.evals = {}` evaluates nothing (e.g. text, which has no labels).

`config.evals.online_probe` is not an evaluator of this kind: it trains inside the step
(`jaxssl.evaluate.linear_probe.init_online_probe`), and `from_config` leaves it to the trainer.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any, NamedTuple

import jax
from jax.sharding import Mesh

from jaxssl.data import inputs
from jaxssl.evaluate import features
from jaxssl.train import sharding as shd

SHARED_KEYS = {"type": "", "every_steps": 0, "enabled": True}
IN_STEP = ("online_probe",)  # evals blocks handled inside the train step, not by an Evaluator


class Entry(NamedTuple):
    """One configured evaluator: `name` prefixes nothing (metric names are the evaluator's own)."""

    name: str
    evaluator: Any
    every_steps: int


def available() -> list[str]:
    """The evaluator types: modules of `jaxssl.evaluate` that define `Evaluator`."""
    import jaxssl.evaluate as pkg  # pylint: disable=g-import-not-at-top
    names = [m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")]
    return sorted(n for n in names if hasattr(importlib.import_module(f"jaxssl.evaluate.{n}"), "Evaluator"))


def evaluator_class(type_: str):
    """`jaxssl.evaluate.<type_>.Evaluator`, or ValueError naming the available types."""
    if type_ not in available():
        raise ValueError(f"Unknown evaluator type {type_!r}. Available evaluators: {', '.join(available())}.")
    return importlib.import_module(f"jaxssl.evaluate.{type_}").Evaluator


def options(type_: str) -> dict[str, inspect.Parameter]:
    """The keyword options of an evaluator type (what a `config.evals` block may set besides SHARED_KEYS)."""
    params = inspect.signature(evaluator_class(type_).__init__).parameters
    return {k: p for k, p in params.items() if p.kind == p.KEYWORD_ONLY and k not in ("config", "data_dir")}


def blocks(config) -> list[tuple[str, str, dict]]:
    """(name, type, options) of every enabled evaluator block of `config.evals`."""
    out = []
    for name, block in (config.get("evals") or {}).items():
        if name in IN_STEP:
            continue
        block = dict(block)
        if not block.get("enabled", True):
            continue
        out.append((name, block.get("type") or name, {k: v for k, v in block.items() if k not in SHARED_KEYS}))
    return out


def check_batch_sizes(config, mesh: Mesh) -> None:
    """ValueError naming the key when an evaluation batch does not split evenly over the devices."""
    devices = shd.batch_shards(mesh)
    for name, _, kw in blocks(config):
        if kw.get("batch_size", devices) % devices:
            raise ValueError(f"config.evals.{name}.batch_size ({kw['batch_size']}) must be divisible by the number of "
                             f"devices ({devices}); set it to a multiple of {devices}.")


def from_config(config, net, mesh: Mesh, data_dir: str) -> list[Entry]:
    """The evaluators of `config.evals`, built (not run): [(name, evaluator, every_steps)]."""
    check_batch_sizes(config, mesh)
    return [Entry(name, evaluator_class(type_)(net, mesh, config=config, data_dir=data_dir, **kw),
                  int(dict(config.evals[name]).get("every_steps", 0)))
            for name, type_, kw in blocks(config)]


class SplitFeatures:
    """Frozen features of a labelled train split and a test split: what the feature evaluators share.

    Args:
      net: the method's network (`Method.net`).
      mesh: the run's mesh.
      config: the run's config (its `data` picks the input, `jaxssl.data.inputs`).
      data_dir: TFDS data dir.
      train_split, test_split: the splits (the kNN bank / probe training set, and the reported set).
      train_examples, test_examples: use only the first N of a split; -1 (or None): all of it.
      batch_size: global evaluation batch (divided over processes; a multiple of the device count).
      view: the evaluation transform of images (`jaxssl.augment.apply` keys, normalisation only);
        must be None for token or waveform inputs.
      method: None (the network's `features`) or a `features.make_fn` method (e.g. patch tokens).
    """

    def __init__(self, net, mesh: Mesh, config, data_dir: str, *, train_split: str, test_split: str,
                 train_examples: int | None, test_examples: int | None, batch_size: int, view, method=None):
        if inputs.kind(config) != "image" and view:
            raise ValueError(f"config.evals: a view applies to images only; {config['data']['name']} is "
                             f"{inputs.kind(config)}: remove the evaluator's `view`.")
        self.net, self.mesh, self.config, self.data_dir = net, mesh, config, data_dir
        self.splits = (train_split, test_split)
        self.limits = tuple(None if n is None or n < 0 else int(n) for n in (train_examples, test_examples))
        self.batch_size = batch_size
        self.view = dict(view or {}) if inputs.kind(config) == "image" else None
        self.method = method
        self._fn = None  # compiled on first use, for the variables' layout of that call

    def _iter(self, split: str, prefetch: int = 4):
        return inputs.eval_iter(self.config, split, batch_size=self.batch_size // jax.process_count(),
                                data_dir_=self.data_dir, prefetch=prefetch)

    def check(self) -> None:
        """Open both splits now (a missing or unlabelled split fails before training, not after it)."""
        for split in self.splits:
            self._iter(split, prefetch=0)

    def __call__(self, variables):
        """(train_features, train_labels, test_features, test_labels), float32 (N, F) / int32 (N,), every process."""
        if self._fn is None:  # the trainer's variables keep one layout (replicated or FSDP) for the whole run
            shardings = jax.tree_util.tree_map(lambda x: x.sharding, variables)
            self._fn = features.make_fn(self.net, self.mesh, self.view, shardings, method=self.method)
        out = []
        for split, limit in zip(self.splits, self.limits):
            out.extend(features.of_split(self._fn, variables, self._iter(split), self.mesh, limit=limit))
        return tuple(out)
