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


def cosine_momentum(base_value: float, total_steps: int, final_value: float = 1.0) -> optax.Schedule:
    r"""EMA momentum rising from `base_value` at step 0 to `final_value` (1) at `total_steps`.

    BYOL (Grill et al., 2020, arXiv:2006.07733, Sec. 3.3): "the exponential moving average
    parameter tau starts from tau_base = 0.996 and is increased to one during training [...]
    tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2 with k the current training step and K the
    maximum number of training steps". MoCo v3's `--moco-m-cos` (arXiv:2104.02057, official code
    `adjust_moco_momentum`) is the same curve.

    .. math::
        \tau(k) = \tau_{end} - (\tau_{end} - \tau_{base}) \tfrac12 (\cos(\pi \min(k, K) / K) + 1)

    Args:
      base_value: momentum at step 0, in [0, 1].
      total_steps: K >= 0; steps past K keep `final_value` (K = 0, a run that only evaluates its
        initialisation, gives `final_value` throughout).
      final_value: momentum at step K (1.0 in BYOL and MoCo v3).

    Returns:
      A jittable `step -> momentum` schedule (float32 scalar).

    Example:
      >>> f = cosine_momentum(0.99, 100)
      >>> round(float(f(0)), 6), float(f(100))
      (0.99, 1.0)
    """
    if total_steps < 0:
        raise ValueError(f"total_steps must be >= 0, got {total_steps}.")
    if not 0.0 <= base_value <= 1.0 or not 0.0 <= final_value <= 1.0:
        raise ValueError(f"momentum values must be in [0, 1], got base {base_value} and final {final_value}.")

    def schedule(step):
        frac = jnp.clip(jnp.asarray(step, jnp.float32) / total_steps, 0.0, 1.0) if total_steps else 1.0
        return final_value - (final_value - base_value) * 0.5 * (jnp.cos(jnp.pi * frac) + 1.0)

    return schedule


def teacher_temperature(warmup_value: float, value: float, warmup_steps: int) -> optax.Schedule:
    r"""Teacher temperature: linear warm-up from `warmup_value` to `value`, then constant.

    DINO (Caron et al., 2021, arXiv:2104.14294, Sec. 3.1 and App.): "we use a linear warm-up for
    tau_t from 0.04 to 0.07 during the first 30 epochs" (official `--warmup_teacher_temp 0.04
    --teacher_temp 0.07 --warmup_teacher_temp_epochs 30`, in epochs there, in steps here).

    .. math::
        \tau_t(k) = \tau_{warm} + (\tau - \tau_{warm}) \min(k / W, 1)

    Args:
      warmup_value: temperature at step 0 (0.04).
      value: temperature from step `warmup_steps` on (0.04 to 0.07).
      warmup_steps: W >= 0; 0 gives the constant `value`.

    Returns:
      A jittable `step -> temperature` schedule (float32 scalar).

    Example:
      >>> f = teacher_temperature(0.04, 0.07, 10)
      >>> round(float(f(5)), 6), round(float(f(100)), 6)
      (0.055, 0.07)
    """
    if not warmup_value > 0 or not value > 0 or warmup_steps < 0:
        raise ValueError(f"need temperatures > 0 and warmup_steps >= 0, got {warmup_value}, {value}, {warmup_steps}.")
    if warmup_steps == 0:
        return lambda step: jnp.full((), value, jnp.float32)
    return optax.linear_schedule(warmup_value, value, warmup_steps)
