"""The training state: one pytree holding everything a step reads and writes."""
from __future__ import annotations

from typing import Any

import flax.struct
import jax


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training, as a pytree (checkpointed whole).

    Attributes:
      step: int32 scalar, number of updates applied.
      params: the student's trainable parameters.
      model_state: non-trainable collections of the student, e.g. {"batch_stats": ...}.
      opt_state: optax state of the chain built by `jaxssl.train.optim`.
      teacher: EMA copy {"params", **model_state} of the student, or None.
      extra: method state that is not a parameter (queues, centres); {} when unused.
      probe: state of the online linear probe (`jaxssl.evaluate.linear_probe.online_probe`), or None.

    The random key is not stored: the step derives its key as fold_in(key(seed), step), so a
    resumed run draws exactly the keys of an uninterrupted one.
    """

    step: jax.Array
    params: Any
    model_state: Any
    opt_state: Any
    teacher: Any
    extra: Any
    probe: Any = None
