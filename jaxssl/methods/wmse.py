"""W-MSE (Ermolov et al., 2021, arXiv:2007.06346): whiten the embeddings, then pull positives together.

"We propose a different direction [from negatives]: a new loss function which is based on the
whitening of the latent-space features. The whitening operation has a 'scattering' effect on
the batch samples, avoiding degenerate solutions where all the sample representations collapse
to a single point" (abstract). K views (W-MSE 2 or W-MSE 4) go through the backbone and an MLP
head; `losses.wmse` splits the **global** batch into random sub-batches of `w_size` images,
whitens each view's sub-batch by its Cholesky factor and averages the normalised MSE over the
pairs of views. The gradient flows through the whitening (official `Whitening2d` with
`track_running_stats=False`). No teacher, no extra state.

* The sub-batch permutation is drawn from the step's rng (the official `torch.randperm` per
  step), the same key on every device, so the sub-batches do not depend on the device count.
* `w_iter` > 1 repeats the whitening with fresh permutations and averages (official `--w_iter`).
* Each view is its own forward pass (`base.apply_each`), as the official backbone forward; the
  official head runs once on the concatenation (its BatchNorm statistics over all views).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxssl import losses, monitors
from jaxssl.methods import base
from jaxssl.models import heads


def make(*, backbone: nn.Module, w_size: int = 128, w_iter: int = 1, eps: float = 0.0,
         proj_hidden: Sequence[int] = (1024,), proj_dim: int = 64, dtype=jnp.float32) -> base.Method:
    """W-MSE with an MLP head over K >= 2 views.

    Args:
      backbone: a module mapping images (B,H,W,3) -> features (B,F).
      w_size: sub-batch size of the whitening (128 on CIFAR, htdt/self-supervised README
        `--w_size 128`); divides the global batch and exceeds `proj_dim`.
      w_iter: whitening repetitions per step (1, official `--w_iter` default).
      eps: shrinkage of the covariance toward the identity (0, official `--w_eps`).
      proj_hidden, proj_dim: head widths, Linear -> BN -> ReLU -> Linear (1024 hidden, paper Sec. 5;
        embedding 64 on CIFAR, README `--emb 64`).
      dtype: compute dtype of the head.
    """
    if w_size <= proj_dim:
        raise ValueError(f"W-MSE w_size ({w_size}) must exceed proj_dim ({proj_dim}): the whitening needs a "
                         "full-rank covariance of each sub-batch.")
    if w_iter < 1:
        raise ValueError(f"W-MSE w_iter must be >= 1, got {w_iter}.")
    net = heads.BackboneWithHeads(backbone, projector=heads.MLP(tuple(proj_hidden), proj_dim, dtype=dtype))

    def loss_fn(params, model_state, teacher, extra, views, rng, step):
        del teacher, step
        if len(views) < 2:
            raise ValueError(f"W-MSE takes K >= 2 views, got {len(views)}; set config.input.views.")
        outs, new_state = base.apply_each(net, {"params": params, **model_state}, views)
        z = jnp.stack([o["projection"] for o in outs])  # (K, N, D)
        n = z.shape[1]
        if n % w_size:
            raise ValueError(f"W-MSE w_size ({w_size}) must divide the global batch size ({n}).")
        perms = [jax.random.permutation(key, n) for key in jax.random.split(rng, w_iter)]
        loss = sum(losses.wmse(z, perm, w_size, eps) for perm in perms) / w_iter
        metrics = {"z_std": monitors.feature_std(z[0]), "h_std": monitors.feature_std(outs[0]["features"]),
                   **monitors.alignment_uniformity(z[0], z[1])}
        return loss, (new_state, extra, metrics)

    return base.Method(net, loss_fn)
