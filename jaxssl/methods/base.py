"""The contract between a method and the trainer. No logic lives here.

A method is one module `jaxssl/methods/<name>.py` with `make(*, backbone, **hyperparameters)`
returning a `Method`. The train step (`jaxssl.train.step`) receives it and never needs to know
which method it runs (the scenic pattern: the step is given its loss function).
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import optax

# loss_fn(params, model_state, teacher, extra, views, rng) -> (loss, (model_state, extra, metrics))
#   params:      the student's trainable parameters (the pytree being differentiated).
#   model_state: non-trained collections, e.g. {"batch_stats": ...}; returned updated.
#   teacher:     EMA variables {"params", ...} or None.
#   extra:       method state that is not a parameter (MoCo queue, DINO centre); returned updated.
#   views:       list of augmented views, float32 (B, H, W, 3) global arrays.
LossFn = Callable[..., tuple[jax.Array, tuple[Any, Any, dict]]]


class Method(NamedTuple):
    """A self-supervised method as data.

    Attributes:
      net: the flax module; `net.init(rng, views[0], train=True)` creates its variables and
        `net.apply(variables, x, train=False, method="features")` gives backbone features.
      loss_fn: see `LossFn` above.
      init_extra: `init_extra(rng) -> extra` (the method's non-parameter state; {} if none).
      teacher_momentum: EMA momentum schedule step -> m for the teacher, or None (no teacher).
    """

    net: nn.Module
    loss_fn: LossFn
    init_extra: Callable[[jax.Array], Any] = lambda rng: {}
    teacher_momentum: optax.Schedule | None = None


def available() -> list[str]:
    """Names of the method modules in this package."""
    import jaxssl.methods as pkg
    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if m.name != "base")


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
