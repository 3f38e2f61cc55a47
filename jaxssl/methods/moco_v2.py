"""MoCo v2 (Chen, Fan, Girshick & He, 2020, arXiv:2003.04297): momentum encoder + queue of negatives.

MoCo (He et al., 2020, arXiv:1911.05722) "maintain[s] the dictionary as a queue of data samples:
the encoded representations of the current mini-batch are enqueued, and the oldest are dequeued"
(Sec. 3.2), with keys from "a momentum-based moving average of the query encoder". MoCo v2 adds
an MLP head (2048-d hidden layer with ReLU, no BN), blur augmentation and a cosine learning
rate; its temperature is 0.2.

* Key encoder: the EMA teacher kept by the train step with a constant momentum m (0.999).
* Queue: a (K, D) ring buffer of L2-normalised keys plus a write pointer in `extra`
  (`init_extra`), written by `enqueue` after the loss is computed, as `_dequeue_and_enqueue`.
  Under `jax.jit` the keys are the **global** batch, so the queue gains N_global keys per step
  on any number of devices (the official code all-gathers them).
* Loss: `losses.infonce(q, k, queue, temperature)` with the query from view 1 and the key from
  view 2, averaged over the global batch.

Shuffling BN (MoCo Sec. 3.3). "The model appears to 'cheat' the pretext task and easily finds a
low-loss solution. This is possibly because the intra-batch communication among samples (caused
by BN) leaks information." Synchronised BatchNorm over the global batch does not remove this
leak for MoCo v2: a query and its positive key are normalised with statistics of the same N
images, while every negative in the queue was normalised with statistics of an earlier batch,
so BN statistics alone can tell the positive apart. (MoCo v3 and SimCLR draw all negatives from
the current batch, where this argument fails and sync BN suffices.) So this module implements
the equivalent of MoCo's per-GPU BN with shuffling, with `bn_groups` = G fixed groups instead
of the devices: the query encoder normalises each of G contiguous sub-batches of N/G images
with its own statistics (MoCo's per-GPU BN), and the key encoder does the same on a random
permutation of the batch and then restores the order (MoCo's shuffle-BN), so a query's and its
key's statistics come from different image sets. The groups are `jax.vmap`-ed forwards (the
official CIFAR-10 demo's `SplitBatchNorm` with `bn_splits=8`, plus the shuffle); the running
averages written back are the mean over groups, as in `SplitBatchNorm`. Groups rather than
`shard_map` over devices keep the result independent of the device count (8 devices == 1
device, tested); with G equal to the device count, each query group is one device's shard.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxssl import losses, monitors, ops
from jaxssl.methods import base
from jaxssl.models import heads


def enqueue(queue: jax.Array, ptr: jax.Array, keys: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Write `keys` into the ring buffer `queue` at `ptr`, wrapping around the end.

    Args:
      queue: (K, D) buffer.
      ptr: int32 scalar, the next row to write.
      keys: (N, D) rows to write, N <= K (rows ptr, ptr+1, ... mod K are overwritten: the oldest).

    Returns:
      (new queue, (ptr + N) mod K).
    """
    n, k = keys.shape[0], queue.shape[0]
    if n > k:
        raise ValueError(f"MoCo queue_size ({k}) must be at least the global batch size ({n}).")
    rows = (ptr + jnp.arange(n)) % k
    return queue.at[rows].set(keys.astype(queue.dtype)), ((ptr + n) % k).astype(ptr.dtype)


def grouped_apply(net: nn.Module, variables, x: jax.Array, groups: int,
                  perm: jax.Array | None = None) -> tuple[Any, Any]:
    """`net.apply(variables, x, train=True)` with BatchNorm statistics per group of N / `groups` images.

    Args:
      net: the flax module.
      variables: {"params", **collections}.
      x: (N, ...) inputs, N divisible by `groups`.
      groups: G; group g is rows [g N/G, (g+1) N/G) of `x[perm]`.
      perm: optional (N,) permutation applied before grouping and undone after (shuffle-BN).

    Returns:
      (outputs in the order of `x`, the non-param collections averaged over the groups).
    """
    n = x.shape[0]
    if groups < 1 or n % groups:
        raise ValueError(f"MoCo v2 bn_groups ({groups}) must divide the global batch size ({n}).")
    if perm is not None:
        x = x[perm]
    collections = [c for c in variables if c != "params"]
    out, state = jax.vmap(lambda xg: net.apply(variables, xg, train=True, mutable=collections))(
        x.reshape(groups, n // groups, *x.shape[1:]))
    out = jax.tree_util.tree_map(lambda a: a.reshape(n, *a.shape[2:]), out)
    if perm is not None:
        inverse = jnp.argsort(perm)
        out = jax.tree_util.tree_map(lambda a: a[inverse], out)
    return out, jax.tree_util.tree_map(lambda a: jnp.mean(a, axis=0), state)


def make(*, backbone: nn.Module, temperature: float = 0.2, queue_size: int = 65536,
         proj_hidden: Sequence[int] = (2048,), proj_dim: int = 128, momentum: float = 0.999,
         bn_groups: int = 8, head_init: str = "torch", dtype=jnp.float32) -> base.Method:
    """MoCo v2 with an MLP head, a momentum key encoder and a queue.

    Args:
      backbone: a module mapping images (B,H,W,3) -> features (B,F).
      temperature: tau (0.2, MoCo v2 Sec. 2 / official `--moco-t 0.2`).
      queue_size: K negatives (65536, official `--moco-k`); must be >= the global batch.
      proj_hidden: MLP head hidden widths, Linear -> ReLU without BN (official `--mlp`: one layer
        as wide as the backbone features, 2048 for ResNet-50).
      proj_dim: key/query size (128, official `--moco-dim`).
      momentum: m of the key encoder (0.999, official `--moco-m`).
      bn_groups: G BatchNorm groups for per-group / shuffled BN (see the module docstring);
        1 turns shuffle-BN off (plain synchronised BN).
      head_init: the heads' Linear init, `heads.MLP.kernel_init`: "torch" (the reference's
        `nn.Linear` default) or "lecun_normal" (flax's default).
      dtype: compute dtype of the head.
    """
    if not temperature > 0:
        raise ValueError(f"MoCo v2 temperature must be > 0, got {temperature}.")
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"MoCo v2 momentum must be in [0, 1], got {momentum}.")
    projector = heads.MLP(tuple(proj_hidden), proj_dim, norm="none", dtype=dtype, kernel_init=head_init)
    net = heads.BackboneWithHeads(backbone, projector=projector)

    def init_extra(rng):
        # The official code starts from random unit vectors (`randn` then `normalize`).
        queue = ops.l2_normalize(jax.random.normal(rng, (queue_size, proj_dim), jnp.float32))
        return {"queue": queue, "ptr": jnp.zeros((), jnp.int32)}

    def loss_fn(params, model_state, teacher, extra, views, rng, step):
        del step
        base.check_two_views("MoCo v2", views)
        q_out, new_state = grouped_apply(net, {"params": params, **model_state}, views[0], bn_groups)
        perm = jax.random.permutation(rng, views[1].shape[0])
        # The key encoder's BatchNorm updates are discarded: the step keeps the teacher's running
        # averages as the EMA of the student's; training uses batch statistics only.
        k_out, _ = grouped_apply(net, teacher, views[1], bn_groups, perm)
        # stop_gradient: keys are constants ("no gradient to keys", MoCo Algorithm 1); redundant
        # with the step differentiating `params` only, kept so the loss is correct on its own.
        # The queue in `extra` is not differentiated either: it is state, not a parameter.
        k = jax.lax.stop_gradient(ops.l2_normalize(k_out["projection"]))
        q = q_out["projection"]
        loss = jnp.mean(losses.infonce(q, k, extra["queue"], temperature))
        queue, ptr = enqueue(extra["queue"], extra["ptr"], k)
        metrics = {"z_std": monitors.feature_std(q), "k_std": monitors.feature_std(k),
                   "h_std": monitors.feature_std(q_out["features"])}
        return loss, (new_state, {"queue": queue, "ptr": ptr}, metrics)

    return base.Method(net, loss_fn, init_extra=init_extra, teacher_momentum=optax.constant_schedule(momentum))
