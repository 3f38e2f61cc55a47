"""Gradient accumulation that equals the large batch, for losses that need the whole batch.

Plain accumulation (average the gradients of M micro-batch losses) changes a contrastive, Sinkhorn
or batch-statistics objective: NT-Xent would see B/M - 1 negatives instead of B - 1, Sinkhorn
would equipartition each micro-batch, VICReg's covariance would be estimated on B/M rows. GradCache
(Gao et al., 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup",
arXiv:2101.06983, Sec. 3) avoids that by splitting the network at the representations:

1. forward all M micro-batches (no gradient, nothing kept but the embeddings) -> the embeddings
   of the whole batch, in the original row order;
2. `loss, (dL/dparams, dL/dE) = value_and_grad(objective)(params, E)` on the whole batch: the
   same objective, the same negatives, the same statistics as the large batch;
3. for each micro-batch m, recompute its forward and pull its rows of dL/dE back through it
   (`jax.vjp`); the parameter gradient is the sum over m (plus stage 2's direct term).

By the chain rule this is the large batch's gradient exactly (up to float rounding) whenever row
n of the embeddings depends on example n only. It needs the method's two-stage form
(`Method.embed` / `Method.objective`, see `jaxssl.methods.base`). Peak activation memory is that
of one micro-batch; the cost is a second forward pass (as gradient checkpointing).

Micro-batch m holds rows m, m + M, m + 2M, ...: with the batch sharded over D devices in
contiguous blocks and B divisible by M * D, every micro-batch is spread evenly over all devices.

Where it is not the large batch (documented, as in GradCache):
* BatchNorm in training mode normalises with the statistics of each micro-batch (B / M rows),
  and its running averages are updated once per micro-batch, in order. Equality with the large
  batch holds for backbones and heads without batch-dependent layers (LayerNorm, GroupNorm, no
  norm), which is what tests/train/test_accumulate.py checks.
* Random layers inside `embed` (dropout, drop-path) get `fold_in(rng, m)` per micro-batch, so
  their masks differ from the large batch's. The view augmentation is done by the step before
  the split, so it is identical.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxssl.methods import base


def check(method: base.Method, accum_steps: int) -> None:
    """Raise ValueError, with the fix, when `method` cannot be accumulated `accum_steps` times."""
    if not isinstance(accum_steps, int) or accum_steps < 1:
        raise ValueError(f"accum_steps must be an int >= 1, got {accum_steps!r}.")
    if accum_steps > 1 and (method.embed is None or method.objective is None):
        raise ValueError(
            f"config.accum_steps={accum_steps} needs a method with the two-stage form (Method.embed and "
            f"Method.objective, built with jaxssl.methods.base.two_stage); this method only has a loss_fn. "
            f"Set config.accum_steps=1, or give the method an embed/objective split.")


def _split(x: jax.Array, m: int) -> jax.Array:
    """(B, ...) -> (M, B / M, ...): micro-batch i holds rows i, i + M, i + 2M, ..."""
    return jnp.swapaxes(x.reshape(x.shape[0] // m, m, *x.shape[1:]), 0, 1)


def _merge(x: jax.Array) -> jax.Array:
    """Inverse of `_split`: (M, B / M, ...) -> (B, ...) in the original row order."""
    return jnp.swapaxes(x, 0, 1).reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def value_and_grad(method: base.Method, accum_steps: int) -> Callable:
    """`jax.value_and_grad(method.loss_fn, has_aux=True)` computed over `accum_steps` micro-batches.

    Returns f(params, model_state, teacher, extra, views, rng, step) ->
    ((loss, (model_state, extra, metrics)), grads), the signature and meaning of
    `jax.value_and_grad(method.loss_fn, has_aux=True)` (the step swaps one for the other). Every
    view's batch size must be divisible by `accum_steps` (ValueError otherwise).
    """
    check(method, accum_steps)
    m = accum_steps

    def fn(params, model_state, teacher, extra, views, rng, step):
        b = views[0].shape[0]
        if any(v.shape[0] != b for v in views) or b % m:
            raise ValueError(f"Every view's batch ({[v.shape[0] for v in views]}) must be divisible by "
                             f"accum_steps ({m}).")
        # The same split as `base.two_stage_loss`, so objective-stage randomness equals the large batch's.
        embed_rng, objective_rng = base.split_rng(rng)
        micro_rng = lambda i: None if embed_rng is None else jax.random.fold_in(embed_rng, i)
        micro_views = [_split(v, m) for v in views]
        index = jnp.arange(m)

        # (1) Forward every micro-batch; BatchNorm running averages are threaded through in order.
        def forward(state, xs):
            i, vs = xs
            emb, state = method.embed(params, state, teacher, extra, list(vs), micro_rng(i), step)
            return state, emb

        new_model_state, emb = jax.lax.scan(forward, model_state, (index, micro_views))
        # stop_gradient: stage 1 only supplies values; gradients come from stages 2 and 3.
        emb = jax.lax.stop_gradient(jax.tree_util.tree_map(_merge, emb))

        # (2) The objective on the whole batch: its value, d/dparams (direct use, e.g. SwAV's queue
        # scores) and d/dembeddings.
        (loss, (new_extra, metrics)), (grads, emb_grads) = jax.value_and_grad(
            method.objective, argnums=(0, 1), has_aux=True)(params, emb, extra, objective_rng, step)

        # (3) Pull each micro-batch's rows of d/dembeddings back through its recomputed forward.
        def backward(grads, xs):
            i, vs, cotangent = xs
            _, pull = jax.vjp(lambda p: method.embed(p, model_state, teacher, extra, list(vs), micro_rng(i), step)[0],
                              params)
            return jax.tree_util.tree_map(jnp.add, grads, pull(cotangent)[0]), None

        micro_cotangents = jax.tree_util.tree_map(lambda g: _split(g, m), emb_grads)
        grads, _ = jax.lax.scan(backward, grads, (index, micro_views, micro_cotangents))
        return (loss, (new_model_state, new_extra, metrics)), grads

    return fn
