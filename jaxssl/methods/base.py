"""The contract between a method and the trainer.

A method is one module `jaxssl/methods/<name>.py` with `make(*, backbone, **hyperparameters)` returning
a `Method`, and optionally `KEY_RANGES = {argument: (low, high, low_ok, high_ok)}` where the allowed
values of one of its arguments differ from the range `jaxssl.train.validate` infers from the name (SwAV:
`queue_size=0` is no queue, where a size must otherwise be > 0). The train step (`jaxssl.train.step`)
receives it and never needs to know which method it runs (the scenic pattern: the step is given its loss
function). Besides the contract, only the composition of the optional two-stage form (`two_stage`) lives
here.
"""
from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
from typing import Any, Callable, Mapping, NamedTuple, Protocol, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


class LossFn(Protocol):
    """`loss_fn(params, model_state, teacher, extra, views, rng, step) -> (loss, (model_state, extra, metrics))`.

    The method's whole training objective for one step on the GLOBAL batch (under `jax.jit` a
    batch mean covers every device). The step differentiates it with respect to `params` only.

    Args:
      params: the student's trainable parameters, the pytree being differentiated.
      model_state: the student's non-trained collections, e.g. {"batch_stats": ...} ({} if none).
      teacher: the EMA teacher's variables {"params", **model_state}, or None when
        `Method.teacher_momentum` is None.
      extra: the method's non-parameter state (MoCo queue, DINO centre; {} if none), as
        `Method.init_extra` made it and the previous step returned it.
      views: the augmented views, a list of V float arrays (B, H, W, 3) (or (B, ...) non-image
        inputs); views may differ in size (multi-crop).
      rng: PRNG key for the loss's randomness (dropout, masks, shuffles), or None in tests that
        need none.
      step: int32 scalar, the 0-based index of the step being taken (`state.step` before its
        increment). Schedules inside the loss (teacher temperature, frozen layers, queue start)
        read it, so they follow `state.step` and `Method.teacher_momentum` even when the step
        skips a non-finite update (`skip_nonfinite`), which advances `state.step` only.

    Returns:
      (loss, (model_state, extra, metrics)): loss a float32 scalar; model_state and extra the
      updated pytrees of the same structure as the inputs; metrics a dict of scalar arrays.
    """

    def __call__(self, params: Any, model_state: Any, teacher: Any, extra: Any, views: Sequence[jax.Array],
                 rng: jax.Array | None, step: jax.Array) -> tuple[jax.Array, tuple[Any, Any, dict]]:
        ...


class EmbedFn(Protocol):
    """`embed(params, model_state, teacher, extra, views, rng, step) -> (embeddings, model_state)`.

    The per-example forward of the optional two-stage form (GradCache, Gao et al., 2021,
    arXiv:2101.06983), for gradient accumulation that equals the large batch
    (`jaxssl.train.accumulate`, which calls it once per micro-batch).

    Args:
      params, model_state, teacher, extra, views, rng, step: as `LossFn`. `extra` is read, not
        updated; `views` may be a micro-batch (B / M rows each); `rng` is per micro-batch. `step`
        is there for schedules of the forward itself (SwAV freezes its prototypes by it).

    Returns:
      (embeddings, model_state): every leaf of `embeddings` (a pytree) has the batch B as its
      leading axis, and row n depends on example n only (up to BatchNorm statistics); model_state
      the updated non-trained collections.
    """

    def __call__(self, params: Any, model_state: Any, teacher: Any, extra: Any, views: Sequence[jax.Array],
                 rng: jax.Array | None, step: jax.Array) -> tuple[Any, Any]:
        ...


class ObjectiveFn(Protocol):
    """`objective(params, embeddings, extra, rng, step) -> (loss, (extra, metrics))`.

    The batch-level stage of the two-stage form: everything that needs the whole batch
    (negatives, Sinkhorn, batch statistics), computed once on the whole (accumulated) batch.

    Args:
      params: the student's trainable parameters, for those used outside the per-example forward
        (SwAV scores its queue with its prototypes); differentiated as in `LossFn`.
      embeddings: the output of `EmbedFn` on the whole batch (leaves (B, ...)).
      extra, step: as `LossFn`.
      rng: PRNG key of this stage, or None.

    Returns:
      (loss, (extra, metrics)): a float32 scalar, the updated `extra`, a dict of scalar metrics.
    """

    def __call__(self, params: Any, embeddings: Any, extra: Any, rng: jax.Array | None,
                 step: jax.Array) -> tuple[jax.Array, tuple[Any, dict]]:
        ...


class Method(NamedTuple):
    """A self-supervised method as data.

    Attributes:
      net: the flax module; `net.init(rng, views[0], train=True)` creates its variables and
        `net.apply(variables, x, train=False, method="features")` gives backbone features.
      loss_fn: a `LossFn` (the contract with the train step, above).
      init_extra: `init_extra(rng) -> extra` (the method's non-parameter state; {} if none).
      teacher_momentum: EMA momentum schedule step -> m for the teacher, or None (no teacher).
      embed, objective: the optional two-stage form (see `EmbedFn`, `ObjectiveFn`); when set,
        `loss_fn` must be `two_stage_loss(embed, objective)`, so each formula exists once.
      after_update: optional `params -> params` the step applies to the freshly initialised
        parameters and after every optimiser update, outside the gradient (SwAV's in-place
        renormalisation of its prototypes); None: nothing.
      eval_teacher: the trainer's evaluators embed with the EMA teacher's variables instead of
        the student's (I-JEPA evaluates its target encoder); needs `teacher_momentum`.
    """

    net: nn.Module
    loss_fn: LossFn
    init_extra: Callable[[jax.Array], Any] = lambda rng: {}
    teacher_momentum: optax.Schedule | None = None
    embed: EmbedFn | None = None
    objective: ObjectiveFn | None = None
    after_update: Callable[[Any], Any] | None = None
    eval_teacher: bool = False


def split_rng(rng: jax.Array | None) -> tuple[jax.Array | None, jax.Array | None]:
    """(embed_rng, objective_rng) of a two-stage loss; (None, None) for a None key."""
    if rng is None:
        return None, None
    embed_rng, objective_rng = jax.random.split(rng)
    return embed_rng, objective_rng


def two_stage_loss(embed: EmbedFn, objective: ObjectiveFn) -> LossFn:
    """The `LossFn` that is `objective(embed(...))` on the whole batch."""

    def loss_fn(params, model_state, teacher, extra, views, rng, step):
        embed_rng, objective_rng = split_rng(rng)
        embeddings, model_state = embed(params, model_state, teacher, extra, views, embed_rng, step)
        loss, (extra, metrics) = objective(params, embeddings, extra, objective_rng, step)
        return loss, (model_state, extra, metrics)

    return loss_fn


def check_two_views(name: str, views) -> None:
    """The two-view methods' input check: a clear error naming the config key to fix."""
    if len(views) != 2:
        raise ValueError(f"{name} takes exactly 2 views, got {len(views)}; set config.input.views to two dicts.")


def one_view(name: str, views) -> jax.Array:
    """The single-view methods' input (MAE, data2vec, I-JEPA): the one view, or a clear error naming the key to fix."""
    if len(views) != 1:
        raise ValueError(f"{name} takes one view, got {len(views)}; set config.input.views to one dict.")
    return views[0]


def apply_each(net: nn.Module, variables: dict, views) -> tuple[Any, dict]:
    """Each view through `net` in its own train-mode forward pass (BatchNorm statistics per view).

    `variables` is {"params", **model_state} (the student's, or the EMA teacher's). Returns
    ((out_1, out_2, ...), new model_state).
    """
    mutable = [k for k in variables if k != "params"]
    return net.apply(variables, views, train=True, mutable=mutable, method="each")


def embed_each(net: nn.Module, name: str) -> EmbedFn:
    """The two-view `embed` of VICReg and Barlow Twins: each view in its own forward pass.

    Returns embeddings {"z1", "z2": (B, P) projections, "h1": (B, F) backbone features of view 1
    (for the collapse monitors)}. BatchNorm statistics are per view, as in those references.
    """

    def embed(params, model_state, teacher, extra, views, rng, step):
        del teacher, extra, rng, step
        check_two_views(name, views)
        (o1, o2), new_state = apply_each(net, {"params": params, **model_state}, views)
        return {"z1": o1["projection"], "z2": o2["projection"], "h1": o1["features"]}, new_state

    return embed


def two_stage(net: nn.Module, embed: EmbedFn, objective: ObjectiveFn, **kw) -> Method:
    """A `Method` in the two-stage form: its `loss_fn` is the composition of `embed` and `objective`."""
    return Method(net, two_stage_loss(embed, objective), embed=embed, objective=objective, **kw)


def available() -> list[str]:
    """Names of the method modules in this package."""
    import jaxssl.methods as pkg
    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if m.name != "base")


def build(config: Mapping[str, Any]) -> Method:
    """The method a config describes, the one way every caller builds it (trainer, tools, tests).

    `config` is an ml_collections ConfigDict or the plain dict of a run's `config.json`:
    `models.get(**config["model"], dtype)` is the backbone, and `get(config["method"], backbone=...,
    dtype=..., **config["method_kw"])` the method around it; `config["dtype"]` ("float32" or
    "bfloat16", default float32) is the compute dtype of both, and `config["remat"]` (default "none")
    the backbone's per-block rematerialisation. Nothing is initialised here.
    """
    from jaxssl import defaults, models  # pylint: disable=g-import-not-at-top
    dtype = jnp.dtype(defaults.get(config, "dtype"))
    model_kw = {**dict(config["model"]), "dtype": dtype}
    if defaults.get(config, "remat") != "none":  # Transformer backbones only (validated)
        model_kw["remat"] = defaults.get(config, "remat")
    backbone = models.get(**model_kw)
    return get(config["method"], backbone=backbone, dtype=dtype, **dict(config["method_kw"]))


def get(name: str, **kw) -> Method:
    """`jaxssl.methods.<name>.make(**kw)`, with errors that name the valid choices."""
    if name not in available():
        raise ValueError(f"Unknown method {name!r}. Available methods: {', '.join(available())}.")
    make = importlib.import_module(f"jaxssl.methods.{name}").make
    params = inspect.signature(make).parameters
    unknown = sorted(set(kw) - set(params))
    if unknown:
        raise ValueError(f"Unknown keyword(s) {unknown} for method {name!r}; valid keys: "
                         f"{sorted(p for p in params if p != 'backbone')}.")
    return make(**kw)


def config_parameters(name: str) -> dict[str, inspect.Parameter]:
    """The keyword parameters of `jaxssl.methods.<name>.make` that `config.method_kw` holds: all but
    `backbone` and `dtype`, which `build` passes from config.model and config.dtype. The caller checks
    `name` (`available()`, or `validate`'s message)."""
    params = inspect.signature(importlib.import_module(f"jaxssl.methods.{name}").make).parameters
    return {k: p for k, p in params.items() if k not in ("backbone", "dtype")}


def make_defaults(name: str) -> dict[str, Any]:
    """The defaults of `config_parameters(name)` as config.json holds them (JSON values).

    A saved config without one of these keys ran at its default (e.g. a run saved before the
    keyword existed): the resume check fills them in before comparing `config.method_kw`.
    """
    if name not in available():
        raise ValueError(f"Unknown method {name!r}. Available methods: {', '.join(available())}.")
    out = {}
    for key, p in config_parameters(name).items():
        if p.default is inspect.Parameter.empty:
            continue
        try:
            out[key] = json.loads(json.dumps(p.default))  # as config.json reads it back (tuples as lists)
        except (TypeError, ValueError):
            continue  # not a config value (a function, a dtype)
    return out
