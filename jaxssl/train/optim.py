"""The optimiser chain from config: clip -> (LARS | AdamW | SGD) with masked weight decay.

`config.optimizer` fields: name ("lars", "adamw", "sgd"), base_lr (per 256 images),
lr_scaling ("linear": lr = base_lr * batch / 256 as SimCLR B.1/Goyal et al. 2017; "sqrt":
base_lr * sqrt(batch); "none"), warmup_steps, weight_decay, momentum, b1, b2, grad_clip (None
or max global norm), end_lr_factor. Biases and normalisation parameters (every parameter of
rank <= 1) get no weight decay and, for LARS, no trust-ratio adaptation (SimCLR B.1: "we
exclude [...] batch normalization and bias parameters from LARS adaptation and weight decay").
"""
from __future__ import annotations

import math

import jax
import optax

from jaxssl import schedules

OPTIMIZERS = ("lars", "adamw", "sgd")


def decay_mask(params):
    """True for parameters that get weight decay: kernels (rank >= 2), not biases or norm scales."""
    return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


def learning_rate(cfg, batch_size: int, total_steps: int) -> optax.Schedule:
    """Warm-up + cosine schedule with the peak scaled by the batch size rule in `cfg.lr_scaling`."""
    scaling = cfg.get("lr_scaling", "linear")
    if scaling == "linear":
        peak = cfg.base_lr * batch_size / 256
    elif scaling == "sqrt":
        peak = cfg.base_lr * math.sqrt(batch_size)
    elif scaling == "none":
        peak = cfg.base_lr
    else:
        raise ValueError(f"optimizer.lr_scaling must be 'linear', 'sqrt' or 'none', got {scaling!r}.")
    return schedules.warmup_cosine(peak, total_steps, cfg.get("warmup_steps", 0),
                                   end_value=peak * cfg.get("end_lr_factor", 0.0))


def make(cfg, batch_size: int, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Build (tx, lr_schedule) from `config.optimizer`."""
    if cfg.name not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer.name {cfg.name!r}; choose one of {', '.join(OPTIMIZERS)}.")
    lr = learning_rate(cfg, batch_size, total_steps)
    wd = cfg.get("weight_decay", 0.0)
    if cfg.name == "lars":
        tx = optax.lars(lr, weight_decay=wd, weight_decay_mask=decay_mask, trust_ratio_mask=decay_mask,
                        momentum=cfg.get("momentum", 0.9), trust_coefficient=cfg.get("trust_coefficient", 0.001))
    elif cfg.name == "adamw":
        tx = optax.adamw(lr, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999), weight_decay=wd, mask=decay_mask)
    else:
        tx = optax.chain(optax.add_decayed_weights(wd, mask=decay_mask),
                         optax.sgd(lr, momentum=cfg.get("momentum", 0.9)))
    clip = cfg.get("grad_clip", None)
    if clip:
        tx = optax.chain(optax.clip_by_global_norm(clip), tx)
    return tx, lr
