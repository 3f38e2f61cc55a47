"""MSN (Assran et al., 2022, arXiv:2204.07141) and PMSN (Assran et al., 2023, arXiv:2210.07277): masked siamese networks.

"MSN [...] matches the representation of an image view containing randomly masked patches to the
representation of the original unmasked image" (abstract), both expressed as soft assignments to
K learned prototypes. Following the official facebookresearch/msn (`src/msn_train.py`,
`src/losses.py`, `src/deit.py`, `configs/pretrain/msn_vits16.yaml`):

* Views (globals first): view 0 is the target view, seen by the EMA target encoder unmasked;
  views 1 .. `rand_views` are the "random" anchor views of the same size, and the remaining views
  the smaller "focal" anchor views. The anchors go through the student grouped by resolution
  (`deit.py` `forward`: one call per size); the first group (the random views) has
  `patch_drop` of its patch tokens dropped ("random masking"): one random subset of
  floor(N (1 - patch_drop)) patches kept for the whole group, the CLS token always kept
  (`forward_features`: `torch.randperm` once per call). Focal views are not masked.
* Network: ViT backbone -> projection MLP (`init_model`: Linear -> BN -> GELU, twice, then
  Linear; hidden 2048, output 256) whose output is both anchor and target representation
  (`use_pred_head: false`), and the prototypes, a (K, D) parameter initialised U(-1/sqrt(D),
  1/sqrt(D)) (`num_proto` 1024), trained through the anchor branch only.
* Loss: `losses.msn` (cross entropy to the target view's sharpened (T = 0.25), Sinkhorn-balanced
  assignment, + `regularization_weight` x me-max, + `entropy_weight` x mean entropy), over the
  global batch. `prior="power_law"` is PMSN: the me-max term becomes the KL between the
  power-law prior and the mean prediction.
* Target encoder: EMA of the student, momentum increasing LINEARLY from 0.996 to 1 over 1.25 x
  the run (`momentum_scheduler`), so it ends at 0.996 + 0.004 / 1.25 = 0.9992.

Deviation (optimiser, not in this file): the official code keeps the prototypes out of weight
decay (`WD_exclude`); jaxssl's decay mask excludes rank-1 parameters only, so the (K, D)
prototypes are decayed. They are L2-normalised in the loss, so decay changes only their norm (and
thereby the effective step size), not the function.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxssl import losses, monitors
from jaxssl.methods import base
from jaxssl.models import heads


class Net(nn.Module):
    """ViT backbone -> projection head, and the prototypes parameter (K, D).

    `__call__(views, train, keep=None)`: `views` one (B, H, W, 3) array or a list; views of one
    shape that are consecutive go through the backbone in one call; `keep` (B, N') patch indices
    apply to the first group only (the official `patch_drop` of the random views). Returns
    {"features": (V*B, F), "projection": (V*B, D)}. `features(x)` runs the backbone alone.
    """

    backbone: nn.Module
    head: nn.Module
    num_prototypes: int = 1024

    @nn.compact
    def __call__(self, views, train: bool = True, keep=None):
        views = list(views) if isinstance(views, (list, tuple)) else [views]
        feats, start = [], 0
        while start < len(views):
            end = start + 1
            while end < len(views) and views[end].shape == views[start].shape:
                end += 1
            x = jnp.concatenate(views[start:end]) if end - start > 1 else views[start]
            if start == 0 and keep is not None:
                feats.append(self.backbone(x, train=train, keep=jnp.broadcast_to(keep, (x.shape[0], keep.shape[-1]))))
            else:
                feats.append(self.backbone(x, train=train))
            start = end
        h = jnp.concatenate(feats) if len(feats) > 1 else feats[0]
        # One head call per resolution group, as the official `fc` inside `forward_features` (its
        # BatchNorm statistics are per group there too).
        z = jnp.concatenate([self.head(f, train=train) for f in feats])
        dim = z.shape[-1]
        bound = dim ** -0.5
        self.param("prototypes", lambda key, shape: jax.random.uniform(key, shape, jnp.float32, -bound, bound),
                   (self.num_prototypes, dim))
        return {"features": h, "projection": z}

    def features(self, x, train: bool = False):
        return self.backbone(x, train=train)


def make(*, backbone: nn.Module, total_steps: int, num_prototypes: int = 1024, proj_hidden: Sequence[int] = (2048, 2048),
         proj_dim: int = 256, use_bn: bool = True, rand_views: int = 1, patch_drop: float = 0.15,
         temperature: float = 0.1, sharpen_temperature: float = 0.25, sinkhorn_iterations: int = 3,
         regularization_weight: float = 1.0, entropy_weight: float = 0.0, prior: str = "uniform",
         power_law_exponent: float = 0.25, base_momentum: float = 0.996, momentum_stretch: float = 1.25,
         dtype=jnp.float32) -> base.Method:
    """MSN / PMSN.

    Args:
      backbone: a `jaxssl.models.vit.Model` (it must accept `keep=`).
      total_steps: length of the run (the EMA momentum schedule spans `momentum_stretch` x it).
      num_prototypes: K (`num_proto: 1024`).
      proj_hidden, proj_dim: the projection MLP (`hidden_dim: 2048` twice, `output_dim: 256`).
      use_bn: BatchNorm in the projection MLP (`use_bn: true`).
      rand_views: anchor views of the target's size after the target view (`rand_views: 1`).
      patch_drop: fraction of patch tokens dropped from the random anchor views (`patch_drop: 0.15`).
      temperature: tau of the prototype softmax (`temperature: 0.1`).
      sharpen_temperature: T (`start_sharpen = final_sharpen = 0.25`).
      sinkhorn_iterations: balancing of the targets (`use_sinkhorn: true`, 3 iterations; 0 = off).
      regularization_weight: weight of me-max / the PMSN prior term (`memax_weight: 1.0`).
      entropy_weight: weight of the anchors' mean entropy (`ent_weight: 0.0`).
      prior: "uniform" (MSN) or "power_law" (PMSN).
      power_law_exponent: PMSN's exponent (0.25).
      base_momentum: target-encoder EMA momentum at step 0 (0.996).
      momentum_stretch: the linear momentum schedule reaches 1 at this multiple of `total_steps` (1.25).
      dtype: compute dtype of the head.
    """
    if not 0.0 <= patch_drop < 1.0 or rand_views < 1:
        raise ValueError(f"MSN needs 0 <= patch_drop < 1 and rand_views >= 1, got {patch_drop} and {rand_views}.")
    head = heads.MLP(tuple(proj_hidden), proj_dim, norm="batch" if use_bn else "none", activation="gelu", dtype=dtype)
    net = Net(backbone, head, num_prototypes)
    # The target encoder runs without stochastic depth (as DINO's teacher); same parameter tree.
    fields = getattr(backbone, "__dataclass_fields__", {})
    target_net = Net(backbone.clone(drop_path_rate=0.0) if "drop_path_rate" in fields else backbone, head,
                     num_prototypes)
    patch = backbone.dims()[3]
    msn_kw = dict(temperature=temperature, sharpen_temperature=sharpen_temperature,
                  sinkhorn_iterations=sinkhorn_iterations, prior=prior, power_law_exponent=power_law_exponent)

    def loss_fn(params, model_state, teacher, extra, views, rng, step):
        del step
        if len(views) < 1 + rand_views:
            raise ValueError(f"MSN needs a target view and {rand_views} random anchor view(s) first, got {len(views)} "
                             "views; set config.input.views (target, random anchors, then focal views).")
        if any(v.shape != views[0].shape for v in views[1:1 + rand_views]):
            raise ValueError(f"MSN's target and random anchor views must have one shape, got "
                             f"{[tuple(v.shape) for v in views[:1 + rand_views]]}.")
        drop_rng, path_rng = jax.random.split(rng)
        num_patches = (views[0].shape[1] // patch) * (views[0].shape[2] // patch)
        kept = int(num_patches * (1.0 - patch_drop))
        keep = None
        if kept < num_patches:
            # One random subset of patches for the whole group (the official single `randperm`).
            keep = jnp.sort(jax.random.permutation(drop_rng, num_patches)[:kept])[None]
        out, new_state = net.apply({"params": params, **model_state}, views[1:], train=True, keep=keep,
                                   mutable=list(model_state), rngs={"dropout": path_rng})
        # The target encoder (EMA teacher) on the unmasked target view; its BatchNorm statistics
        # are used, not written back. stop_gradient: targets are constants (official torch.no_grad).
        t_out, _ = target_net.apply(teacher, views[0], train=True, mutable=[k for k in teacher if k != "params"])
        targets = jax.lax.stop_gradient(t_out["projection"])
        anchors = out["projection"]
        terms = losses.msn_terms(anchors, targets, params["prototypes"], **msn_kw)
        loss = terms["cross_entropy"] + regularization_weight * terms["regularizer"] + entropy_weight * terms["entropy"]
        scores = anchors @ params["prototypes"].T
        usage = monitors.prototype_usage(jax.lax.stop_gradient(scores))
        metrics = {**terms, "prototype_usage": usage["usage"], "h_std": monitors.feature_std(t_out["features"]),
                   "z_std": monitors.feature_std(anchors[: views[0].shape[0]]),
                   "kept_patches": jnp.float32(kept)}
        return loss, (new_state, extra, metrics)

    momentum = optax.linear_schedule(base_momentum, 1.0, int(momentum_stretch * total_steps))
    return base.Method(net, loss_fn, teacher_momentum=momentum)
