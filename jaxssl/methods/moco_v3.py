"""MoCo v3 (Chen, Xie & He, 2021, arXiv:2104.02057): a momentum encoder, in-batch keys, no queue.

"we use the keys that naturally co-exist in the same batch. We abandon the memory queue"
(Sec. 3). Algorithm 1: `loss = ctr(q1, k2) + ctr(q2, k1)` with
`ctr(q, k) = 2 tau * CrossEntropyLoss(q @ k.T / tau, arange(N))`, where q = predictor(projector(
backbone(x))) of the trained encoder and k = projector(backbone(x)) of the momentum encoder.

* The momentum encoder is the EMA teacher kept by the train step; its momentum follows
  `schedules.cosine_momentum(base_momentum, total_steps)` (the official `--moco-m-cos`) or is
  constant (`momentum_cosine=False`).
* Keys from all devices: under `jax.jit` the keys are the global batch, so `losses.infonce(q, k)`
  (no queue) contrasts each query with every key of every device, which the official code gets
  from `concat_all_gather(k)` and rank-offset labels.
* No shuffle-BN: the backbone's BatchNorm is synchronised over the global batch (the official
  code converts the model to SyncBN). All N candidate keys of a query (the positive and the
  N - 1 negatives) then share the same batch statistics, so BatchNorm carries no signal that
  singles out the positive; shuffling the batch before the key encoder would only permute the
  keys (tested in tests/methods/test_momentum_methods.py). MoCo v2 differs: its negatives come
  from a queue of earlier batches, see `jaxssl.methods.moco_v2`.
* Backbone-agnostic: any module mapping images to (B, F) features. For ResNet the projector has
  2 layers and tau = 1.0; for ViT 3 layers (`proj_hidden=(4096, 4096)`) and tau = 0.2 (Sec. 4).
* Each view is its own forward pass (BatchNorm statistics per view), as the official code.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxssl import losses, monitors, schedules
from jaxssl.methods import base
from jaxssl.models import heads


def make(*, backbone: nn.Module, total_steps: int, temperature: float = 1.0, proj_hidden: Sequence[int] = (4096,),
         proj_dim: int = 256, pred_hidden: Sequence[int] = (4096,), base_momentum: float = 0.99,
         momentum_cosine: bool = True, head_init: str = "torch", dtype=jnp.float32) -> base.Method:
    """MoCo v3 with projector, predictor and a momentum encoder.

    Args:
      backbone: a module mapping images (B,H,W,3) -> features (B,F) (ResNet or ViT).
      total_steps: K of the cosine momentum schedule (the run's number of steps).
      temperature: tau (official `--moco-t`: 1.0 for ResNet-50, 0.2 for ViT).
      proj_hidden, proj_dim: projector widths (official `--mlp-dim 4096 --dim 256`); hidden layers
        are Linear -> BN -> ReLU and the output has an affine-free BN, as `_build_mlp(..., last_bn=True)`.
        ResNet: (4096,); ViT: (4096, 4096).
      pred_hidden: predictor hidden widths ((4096,), output without BN).
      base_momentum: initial momentum (official `--moco-m 0.99`).
      momentum_cosine: raise the momentum to 1 with a half-cosine (`--moco-m-cos`); else constant.
      head_init: the heads' Linear init, `heads.MLP.kernel_init`: "torch" (the reference's
        `nn.Linear` default) or "lecun_normal" (flax's default).
      dtype: compute dtype of the heads.
    """
    if not temperature > 0:
        raise ValueError(f"MoCo v3 temperature must be > 0, got {temperature}.")
    mlp = lambda hidden, **kw: heads.MLP(tuple(hidden), proj_dim, dtype=dtype, kernel_init=head_init, **kw)
    net = heads.BackboneWithHeads(backbone, projector=mlp(proj_hidden, last_norm=True), predictor=mlp(pred_hidden))

    def ctr(q, k):
        # Algorithm 1 / official code: `nn.CrossEntropyLoss()(logits, labels) * (2 * self.T)`. The
        # cross entropy's gradient w.r.t. the cosine similarities scales as 1 / tau; tau cancels it.
        return 2.0 * temperature * jnp.mean(losses.infonce(q, k, None, temperature))

    def embed(params, model_state, teacher, extra, views, rng, step):
        del extra, rng, step
        base.check_two_views("MoCo v3", views)
        (o1, o2), new_state = base.apply_each(net, {"params": params, **model_state}, views)
        # The momentum encoder's BatchNorm updates are discarded: the step keeps the teacher's
        # running averages as the EMA of the student's; training uses batch statistics only.
        (t1, t2), _ = base.apply_each(net, teacher, views)
        emb = {"q1": o1["prediction"], "q2": o2["prediction"], "k1": t1["projection"], "k2": t2["projection"],
               "z1": o1["projection"], "h1": o1["features"]}
        return emb, new_state

    def objective(params, emb, extra, rng, step):
        del params, rng, step
        # stop_gradient: the keys are constants (the momentum encoder gets no gradient). Redundant
        # with the step differentiating `params` only, kept so the loss is correct on its own.
        k1, k2 = jax.lax.stop_gradient(emb["k1"]), jax.lax.stop_gradient(emb["k2"])
        # In-batch keys of the whole (global, or accumulated) batch are the negatives.
        loss = ctr(emb["q1"], k2) + ctr(emb["q2"], k1)
        metrics = {"z_std": monitors.feature_std(emb["z1"]), "q_std": monitors.feature_std(emb["q1"]),
                   "k_std": monitors.feature_std(k1), "h_std": monitors.feature_std(emb["h1"])}
        return loss, (extra, metrics)

    momentum = (schedules.cosine_momentum(base_momentum, total_steps) if momentum_cosine
                else optax.constant_schedule(base_momentum))
    return base.two_stage(net, embed, objective, teacher_momentum=momentum)
