"""The contract between a method and the trainer.

A method is one module `jaxssl/methods/<name>.py` with `make(*, backbone, **hyperparameters)`
returning a `Method`. The train step (`jaxssl.train.step`) receives it and never needs to know
which method it runs (the scenic pattern: the step is given its loss function). Besides the
contract, only the composition of the optional two-stage form (`two_stage`) lives here.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any, Callable, Mapping, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

# loss_fn(params, model_state, teacher, extra, views, rng) -> (loss, (model_state, extra, metrics))
#   params:      the student's trainable parameters (the pytree being differentiated).
#   model_state: non-trained collections, e.g. {"batch_stats": ...}; returned updated.
#   teacher:     EMA variables {"params", ...} or None.
#   extra:       method state that is not a parameter (MoCo queue, DINO centre); returned updated.
#   views:       list of augmented views, float32 (B, H, W, 3) global arrays.
LossFn = Callable[..., tuple[jax.Array, tuple[Any, Any, dict]]]

# Optional two-stage form (GradCache, Gao et al., 2021, arXiv:2101.06983), for gradient
# accumulation that equals the large batch (`jaxssl.train.accumulate`):
# embed(params, model_state, teacher, extra, views, rng) -> (embeddings, model_state)
#   the per-example forward: every leaf of `embeddings` has the batch as its leading axis, and
#   row n depends on example n only (up to BatchNorm statistics). `extra` is read, not updated.
# objective(params, embeddings, extra, rng) -> (loss, (extra, metrics))
#   everything that needs the whole batch (negatives, Sinkhorn, batch statistics). `params` is
#   there for parameters used outside the per-example forward (SwAV scores its queue with them).
EmbedFn = Callable[..., tuple[Any, Any]]
ObjectiveFn = Callable[..., tuple[jax.Array, tuple[Any, dict]]]


class Method(NamedTuple):
    """A self-supervised method as data.

    Attributes:
      net: the flax module; `net.init(rng, views[0], train=True)` creates its variables and
        `net.apply(variables, x, train=False, method="features")` gives backbone features.
      loss_fn: see `LossFn` above.
      init_extra: `init_extra(rng) -> extra` (the method's non-parameter state; {} if none).
      teacher_momentum: EMA momentum schedule step -> m for the teacher, or None (no teacher).
      embed, objective: the optional two-stage form (see `EmbedFn`, `ObjectiveFn`); when set,
        `loss_fn` must be `two_stage_loss(embed, objective)`, so each formula exists once.
    """

    net: nn.Module
    loss_fn: LossFn
    init_extra: Callable[[jax.Array], Any] = lambda rng: {}
    teacher_momentum: optax.Schedule | None = None
    embed: EmbedFn | None = None
    objective: ObjectiveFn | None = None


def split_rng(rng: jax.Array | None) -> tuple[jax.Array | None, jax.Array | None]:
    """(embed_rng, objective_rng) of a two-stage loss; (None, None) for a None key."""
    if rng is None:
        return None, None
    embed_rng, objective_rng = jax.random.split(rng)
    return embed_rng, objective_rng


def two_stage_loss(embed: EmbedFn, objective: ObjectiveFn) -> LossFn:
    """The `LossFn` that is `objective(embed(...))` on the whole batch."""

    def loss_fn(params, model_state, teacher, extra, views, rng):
        embed_rng, objective_rng = split_rng(rng)
        embeddings, model_state = embed(params, model_state, teacher, extra, views, embed_rng)
        loss, (extra, metrics) = objective(params, embeddings, extra, objective_rng)
        return loss, (model_state, extra, metrics)

    return loss_fn


def check_two_views(name: str, views) -> None:
    """The two-view methods' input check: a clear error naming the config key to fix."""
    if len(views) != 2:
        raise ValueError(f"{name} takes exactly 2 views, got {len(views)}; set config.input.views to two dicts.")


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

    def embed(params, model_state, teacher, extra, views, rng):
        del teacher, extra, rng
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
    "bfloat16", default float32) is the compute dtype of both. Nothing is initialised here.
    """
    from jaxssl import defaults, models  # pylint: disable=g-import-not-at-top
    dtype = jnp.dtype(defaults.get(config, "dtype"))
    backbone = models.get(**{**dict(config["model"]), "dtype": dtype})
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
