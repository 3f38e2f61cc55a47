"""The optimiser chain from config: clip -> (LARS | AdamW | SGD) with masked weight decay.

`config.optimizer` fields (defaults and types in `KEYS` and `OPTIMIZER_KEYS`): name ("lars",
"adamw", "sgd"), base_lr (per 256 images), lr_scaling ("linear": lr = base_lr * batch / 256 as
SimCLR B.1/Goyal et al. 2017; "sqrt": base_lr * sqrt(batch); "none"), warmup_steps,
weight_decay, weight_decay_end (optional: cosine weight-decay schedule, DINO), momentum, b1, b2,
grad_clip (None/0: off, else the max norm), grad_clip_mode ("global": one norm over all
gradients, `optax.clip_by_global_norm`; "per_param": each parameter tensor's gradient clipped to
its own norm, DINO's `clip_gradients`), end_lr_factor, and for LARS trust_coefficient and trust_clip
(see `scale_by_clipped_trust_ratio`). Biases and normalisation parameters
(every parameter of rank <= 1) get no weight decay and, for LARS, no trust-ratio adaptation
(SimCLR B.1: "we exclude [...] batch normalization and bias parameters from LARS adaptation and
weight decay").

Optional `fixed_lr_paths`: a regular expression over parameter paths ("predictor/dense0/kernel");
matching parameters get the same optimiser at the constant peak learning rate (no warm-up, no
decay) instead of the schedule. SimSiam's `fix_pred_lr` is `fixed_lr_paths="^predictor/"`
(Chen & He, 2021, Sec. 4.2 and Table 1c: a predictor with a constant, undecayed learning rate
works better; official `--fix-pred-lr`: the predictor's param group keeps `init_lr`). Unset or
empty: one optimiser for all parameters, as before.
"""
from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import optax

from jaxssl import schedules
from jaxssl.defaults import REQUIRED, Key

# Every key of `config.optimizer` with its default (REQUIRED: none) and type: `make` reads each one
# through `option`, and jaxssl/train/validate.py checks configs against these tables (a key that
# no optimiser reads is a typo; values must fit the types).
KEYS = {
    "name": Key(REQUIRED, "str"), "base_lr": Key(REQUIRED, "float"), "lr_scaling": Key("linear", "str"),
    "warmup_steps": Key(0, "int"), "end_lr_factor": Key(0.0, "float"),
    "weight_decay": Key(0.0, "float"), "weight_decay_end": Key(None, "float | None"),
    "grad_clip": Key(None, "float | None"), "grad_clip_mode": Key("global", "str"),
    "fixed_lr_paths": Key(None, "str | None"), "exclude_rank1": Key(True, "bool"),
}
# The keys only one optimiser reads: LARS (`optax.lars`), AdamW (`optax.adamw`), SGD with momentum.
OPTIMIZER_KEYS = {
    "lars": {"momentum": Key(0.9, "float"), "trust_coefficient": Key(0.001, "float"), "trust_clip": Key(False, "bool")},
    "adamw": {"b1": Key(0.9, "float"), "b2": Key(0.999, "float")},
    "sgd": {"momentum": Key(0.9, "float")},
}
OPTIMIZERS = tuple(OPTIMIZER_KEYS)
GRAD_CLIP_MODES = ("global", "per_param")


def all_keys() -> dict[str, Key]:
    """Every key some optimiser reads: `KEYS` and each optimiser's own (a config may switch `name`)."""
    out = dict(KEYS)
    for keys in OPTIMIZER_KEYS.values():
        out.update(keys)
    return out


def option(cfg, key: str):
    """`cfg[key]` (config.optimizer, a ConfigDict or dict), else its default from `KEYS`/`OPTIMIZER_KEYS`."""
    if key in cfg:
        return cfg[key]
    entry = all_keys().get(key)
    if entry is None:
        raise KeyError(f"optimizer.{key} is not a key of jaxssl.train.optim; valid keys: {sorted(all_keys())}.")
    if entry.default is REQUIRED:
        raise KeyError(f"optimizer.{key} is required: set config.optimizer.{key}.")
    return entry.default


def decay_mask(params):
    """True for parameters that get weight decay: kernels (rank >= 2), not biases or norm scales."""
    return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


def _mask(cfg):
    """The weight-decay / LARS-adaptation mask of `cfg.exclude_rank1`: `decay_mask`, or None (all)."""
    return decay_mask if option(cfg, "exclude_rank1") else None


def peak_learning_rate(cfg, batch_size: int) -> float:
    """`cfg.base_lr` scaled by the batch size rule in `cfg.lr_scaling`."""
    scaling = option(cfg, "lr_scaling")
    if scaling == "linear":
        peak = option(cfg, "base_lr") * batch_size / 256
    elif scaling == "sqrt":
        peak = option(cfg, "base_lr") * math.sqrt(batch_size)
    elif scaling == "none":
        peak = option(cfg, "base_lr")
    else:
        raise ValueError(f"optimizer.lr_scaling must be 'linear', 'sqrt' or 'none', got {scaling!r}.")
    return peak


def learning_rate(cfg, batch_size: int, total_steps: int) -> optax.Schedule:
    """Warm-up + cosine schedule with the peak scaled by the batch size rule in `cfg.lr_scaling`."""
    peak = peak_learning_rate(cfg, batch_size)
    return schedules.warmup_cosine(peak, total_steps, option(cfg, "warmup_steps"),
                                   end_value=peak * option(cfg, "end_lr_factor"))


def make(cfg, batch_size: int, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Build (tx, lr_schedule) from `config.optimizer`."""
    name = option(cfg, "name")
    if name not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer.name {name!r}; choose one of {', '.join(OPTIMIZERS)}.")
    lr = learning_rate(cfg, batch_size, total_steps)
    tx = _optimizer(cfg, lr, total_steps)
    pattern = option(cfg, "fixed_lr_paths")
    if pattern:
        fixed = _optimizer(cfg, peak_learning_rate(cfg, batch_size), total_steps)
        tx = optax.multi_transform({"scheduled": tx, "fixed": fixed}, lambda p: fixed_lr_labels(p, pattern))
    clip, mode = option(cfg, "grad_clip"), option(cfg, "grad_clip_mode")
    if mode not in GRAD_CLIP_MODES:
        raise ValueError(f"optimizer.grad_clip_mode must be one of {GRAD_CLIP_MODES}, got {mode!r}.")
    if clip:
        tx = optax.chain(optax.clip_by_global_norm(clip) if mode == "global" else clip_by_param_norm(clip), tx)
    return tx, lr


def clip_by_param_norm(max_norm: float, eps: float = 1e-6) -> optax.GradientTransformation:
    r"""Clip each gradient leaf (parameter tensor) to L2 norm `max_norm` on its own.

    .. math:: g_p \leftarrow g_p \min\left(1, \frac{c}{\lVert g_p \rVert_2 + \epsilon}\right)

    DINO's `utils.clip_gradients` (facebookresearch/dino, `--clip_grad 3.0`): "clip_coef = clip /
    (param_norm + 1e-6); if clip_coef < 1: p.grad.data.mul_(clip_coef)", per `named_parameters()`
    entry. Unlike `optax.clip_by_global_norm` a large gradient in one tensor does not shrink the
    others; unlike `optax.clip_by_block_rms` it bounds the norm, not the RMS. Stateless. Under jit
    on sharded arrays the norm is of the whole (global) tensor.
    """
    def update_fn(updates, state, params=None):
        del params

        def clip(g):
            coef = max_norm / (jnp.linalg.norm(g.ravel()) + eps)
            return jnp.where(coef < 1, g * coef.astype(g.dtype), g)

        return jax.tree_util.tree_map(clip, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def scale_by_clipped_trust_ratio(learning_rate, trust_coefficient: float) -> optax.GradientTransformation:
    r"""LARS's layer-wise rate capped at the learning rate: LARC's ``clip=True``, solo-learn's ``clip_lr``.

    With :math:`u = g + \lambda w` (the decayed gradient), :math:`\eta` the trust coefficient and
    :math:`\alpha_t` the learning rate of step :math:`t`, each tensor's update is scaled by

    .. math:: s = \min\left(\frac{\eta \lVert w \rVert_2}{\alpha_t \lVert u \rVert_2}, 1\right)

    before ``optax.scale_by_learning_rate`` multiplies it by :math:`\alpha_t`: the step is
    :math:`\min(\eta \lVert w \rVert / \lVert u \rVert, \alpha_t) \, u`, at most plain SGD's. Unclipped
    LARS (``optax.scale_by_trust_ratio``, :math:`s = \eta \lVert w \rVert / \lVert u \rVert`) moves every
    tensor by :math:`\alpha_t \eta` of its norm however small its gradient. References: NVIDIA apex
    ``LARC`` (``clip=True``: "adaptive_lr = min(adaptive_lr / group['lr'], 1)"), used by
    facebookresearch/swav with ``clip=False``; solo-learn ``solo/utils/lars.py`` (``clip_lars_lr``),
    the ``clip_lr: True`` of its CIFAR recipes. Their denominator is :math:`\lVert g \rVert +
    \lambda \lVert w \rVert`; this one keeps ``optax.lars``'s :math:`\lVert g + \lambda w \rVert` (no larger; equal
    when :math:`g` and :math:`w` point the same way), so switching the clip changes only the cap.
    A zero parameter or update norm, or a zero learning rate, gives :math:`s = 1` (``optax``'s rule).
    tests/train/test_optim.py checks five steps against solo-learn's LARS, clipped and not, where the
    two must agree (weight decay 0, a constant lr; fixture from benchmarks/solo_lars_reference.py).

    ``learning_rate``: the same schedule (or constant) as the ``scale_by_learning_rate`` after it;
    the state's step count advances with that transform's, so both read :math:`\alpha_t` of one step.
    """
    schedule = learning_rate if callable(learning_rate) else (lambda count: learning_rate)

    def init_fn(params):
        del params
        return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("scale_by_clipped_trust_ratio needs the parameters: tx.update(updates, state, params).")
        lr = jnp.asarray(schedule(state.count), jnp.float32)

        def scale(u, w):
            # Reductions only: no reshape of a (possibly FSDP-sharded) tensor; at least float32.
            w_norm, u_norm = (jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.promote_types(x.dtype, jnp.float32)))))
                              for x in (w, u))
            ratio = trust_coefficient * w_norm / jnp.where(lr * u_norm > 0, lr * u_norm, 1.0)
            s = jnp.where((w_norm > 0) & (u_norm > 0) & (lr > 0), jnp.minimum(ratio, 1.0), 1.0)
            return u * s.astype(u.dtype)

        updates = jax.tree_util.tree_map(scale, updates, params)
        return updates, optax.ScaleByScheduleState(count=optax.safe_increment(state.count))

    return optax.GradientTransformation(init_fn, update_fn)


def fixed_lr_labels(params, pattern: str):
    """"fixed" for parameters whose path ("predictor/dense0/kernel") matches `pattern`, else "scheduled"."""
    regex = re.compile(pattern)
    path = lambda keys: jax.tree_util.keystr(keys, simple=True, separator="/")
    labels = jax.tree_util.tree_map_with_path(lambda k, _: "fixed" if regex.search(path(k)) else "scheduled", params)
    if "fixed" not in jax.tree_util.tree_leaves(labels):
        examples = [path(k) for k, _ in jax.tree_util.tree_flatten_with_path(params)[0][:3]]
        raise ValueError(f"optimizer.fixed_lr_paths {pattern!r} matches no parameter; paths look like {examples}.")
    return labels


def weight_decay(cfg, total_steps: int):
    """`cfg.weight_decay`, or a cosine schedule from it to `cfg.weight_decay_end` when that is set.

    DINO (arXiv:2104.14294, App.: "the weight decay follows a cosine schedule from 0.04 to 0.4";
    official `--weight_decay 0.04 --weight_decay_end 0.4`, `cosine_scheduler` per iteration).
    Unset (or equal to `weight_decay`): the constant, and the optimiser state is unchanged.
    """
    wd = option(cfg, "weight_decay")
    wd_end = option(cfg, "weight_decay_end")
    if wd_end is None or wd_end == wd:
        return wd
    return schedules.warmup_cosine(wd, max(total_steps, 1), 0, init_value=wd, end_value=wd_end)


def _optimizer(cfg, lr, total_steps: int = 1) -> optax.GradientTransformation:
    """The optimiser named by `cfg.name` with learning rate `lr` (a schedule or a constant)."""
    wd, name, mask = weight_decay(cfg, total_steps), option(cfg, "name"), _mask(cfg)
    if name == "lars" and option(cfg, "trust_clip"):
        # optax.lars's chain with the trust ratio capped at the learning rate (solo-learn's clip_lr).
        mask = True if mask is None else mask
        tx = optax.chain(optax.add_decayed_weights(wd, mask=mask),
                         optax.masked(scale_by_clipped_trust_ratio(lr, option(cfg, "trust_coefficient")), mask),
                         optax.scale_by_learning_rate(lr), optax.trace(decay=option(cfg, "momentum")))
    elif name == "lars":
        # optax.lars: a mask of True decays and adapts every parameter.
        mask = True if mask is None else mask
        tx = optax.lars(lr, weight_decay=wd, weight_decay_mask=mask, trust_ratio_mask=mask,
                        momentum=option(cfg, "momentum"), trust_coefficient=option(cfg, "trust_coefficient"))
    elif name == "adamw":
        tx = optax.adamw(lr, b1=option(cfg, "b1"), b2=option(cfg, "b2"), weight_decay=wd, mask=mask)
    else:
        tx = optax.chain(optax.add_decayed_weights(wd, mask=mask),
                         optax.sgd(lr, momentum=option(cfg, "momentum")))
    return tx
