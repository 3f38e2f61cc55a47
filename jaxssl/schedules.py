"""Step -> scalar schedules (learning rate, EMA momentum, temperatures).

Each function returns an `optax.Schedule`: a pure, jittable `step -> value` function.
"""
from __future__ import annotations

import jax.numpy as jnp
import optax


def warmup_cosine(peak_value: float, total_steps: int, warmup_steps: int = 0,
                  init_value: float = 0.0, end_value: float = 0.0) -> optax.Schedule:
    r"""Linear warm-up from `init_value` to `peak_value`, then cosine decay to `end_value`.

    .. math::
        \eta(t) = \eta_{end} + \tfrac12(\eta_{peak} - \eta_{end})(1 + \cos(\pi \tfrac{t - W}{T - W}))

    The schedule of SimCLR (arXiv:2002.05709, Sec. B.1: "linear warmup for the first 10 epochs,
    and decay the learning rate with the cosine decay schedule without restarts") and most SSL
    recipes. Wraps `optax.warmup_cosine_decay_schedule`.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}.")
    warmup_steps = min(warmup_steps, total_steps)
    if warmup_steps == total_steps:
        return optax.linear_schedule(init_value, peak_value, max(1, warmup_steps))
    return optax.warmup_cosine_decay_schedule(init_value, peak_value, warmup_steps, total_steps, end_value)
