"""SwAV (Caron et al., 2020, arXiv:2006.09882): swapped prediction of online cluster assignments.

"We compute a code from an augmented version of the image and predict this code from other
augmented versions of the same image" (Sec. 3). The codes are the Sinkhorn-Knopp equipartition of
the batch's prototype scores; "the codes are computed using only the image features within a
batch" (Sec. 3.1), here the GLOBAL batch.

* Network: backbone -> MLP projector -> `heads.Prototypes` (scores of the L2-normalised
  projection against unit-norm prototypes), in `heads.MultiCrop` so each resolution group of the
  multi-crop views is one backbone call (`crop_grouping="resolution"`, the reference's
  src/resnet50.py `ResNet.forward`; "view": one call per crop, which changes the BatchNorm
  statistics of a ResNet backbone). The prototypes are renormalised in place after every
  update (`prototype_norm="in_place"`, the reference's; `Method.after_update`).
* Codes: `ops.sinkhorn_knopp` (epsilon 0.05, 3 iterations) of the scores of each crop in
  `crops_for_assign`, over the global batch: under `jax.jit` the column sums are global, the
  reference's `dist.all_reduce` (tested 8 devices == 1 device). They are targets: gradient stopped.
* Loss: `losses.swav`, temperature 0.1, every other crop predicts each assigned crop's code.
* Queue (optional, `queue_size > 0`, for small batches, Sec. 4 / App. A.1): `extra["queue"]`
  (A, Q, D) holds the projections of the last Q images of each assigned crop; from
  `queue_start_step` on, once full (its last row is non-zero, the reference's test), their
  scores against the current prototypes are stacked under the batch's for the Sinkhorn and
  only the batch's codes are kept. The queue is updated every step (solo-learn's variant; the
  reference starts filling it at `epoch_queue_starts`). Logged as `queue_used`.
* Frozen prototypes: for `step < freeze_prototypes_steps` the prototypes' gradient is cut
  (the reference's `freeze_prototypes_niters`). Logged as `prototypes_frozen`.
* Both schedules read the `step` argument (`state.step`), so a skipped non-finite step does not
  shift them.
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxssl import losses, monitors, ops
from jaxssl.methods import base
from jaxssl.models import heads

# The validator's ranges for this method's keyword arguments where they differ from the rule of the
# name (jaxssl.train.validate: a "size" must be > 0): a queue of 0 rows is no queue, so the option can
# be switched off from the command line (`--config.method_kw.queue_size=0`; None cannot be set there).
KEY_RANGES = {"queue_size": (0.0, math.inf, True, False)}


def make(*, backbone: nn.Module, proj_hidden: Sequence[int] = (2048,), proj_dim: int = 128,
         num_prototypes: int = 3000, temperature: float = 0.1, epsilon: float = 0.05, sinkhorn_iters: int = 3,
         crops_for_assign: Sequence[int] = (0, 1), queue_size: int | None = None, queue_start_step: int = 0,
         freeze_prototypes_steps: int = 0, prototype_norm: str = "in_place", prototype_bias: bool = False,
         crop_grouping: str = "resolution", head_init: str = "torch", dtype=jnp.float32) -> base.Method:
    """SwAV.

    Args:
      backbone: module mapping images (B,H,W,3) -> features (B,F) at every crop size.
      proj_hidden, proj_dim: projector widths (2048 -> 128, with BatchNorm, as the reference).
      num_prototypes: K (3000 for ImageNet and in solo-learn's CIFAR recipe).
      temperature: tau of the swapped-prediction softmax (0.1).
      epsilon, sinkhorn_iters: Sinkhorn-Knopp regularisation and iterations (0.05, 3).
      crops_for_assign: crops whose codes are targets (the two global crops, (0, 1)).
      queue_size: Q past projections per assigned crop; None (or 0) for no queue (3840 in the CIFAR recipe).
      queue_start_step: first step that may use the queue.
      freeze_prototypes_steps: steps with frozen prototypes (313 iterations on ImageNet).
      prototype_norm: "in_place" (default, facebookresearch/swav main_swav.py `train`: the prototype
        matrix is L2-normalised in place at every iteration, outside the gradient) or "forward"
        (weight normalisation in the forward pass: another gradient and effective learning rate;
        `heads.Prototypes`).
      prototype_bias: False (default, the reference's bias-free prototype layer, src/resnet50.py
        `nn.Linear(output_dim, nmb_prototypes, bias=False)`) or True: a learned offset per prototype,
        added to the scores, as lightly 1.6's `SwaVPrototypes` (a plain `nn.Linear` with its default
        bias). A deviation, kept for comparisons with lightly (benchmarks/RESULTS.md 7 measures what it
        is worth on either side at the `:cpu` budget); "in_place" normalisation only.
      crop_grouping: "resolution" (same-size crops concatenated into one backbone call, the
        reference's) or "view" (one call per crop); see `heads.MultiCrop`.
      head_init: the heads' Linear init, `heads.MLP.kernel_init`: "torch" (the reference's
        `nn.Linear` default) or "lecun_normal" (flax's default).
      dtype: compute dtype of the heads.
    """
    crops_for_assign = tuple(int(c) for c in crops_for_assign)
    queue_size = int(queue_size or 0)
    heads.check_grouping(crop_grouping)
    if not crops_for_assign:
        raise ValueError("crops_for_assign must name at least one crop.")
    net = heads.MultiCrop(backbone, heads.MLP(tuple(proj_hidden), proj_dim, dtype=dtype, kernel_init=head_init),
                          heads.Prototypes(num_prototypes, normalize=prototype_norm, bias=prototype_bias,
                                           dtype=dtype),
                          grouping=crop_grouping)
    score = lambda module, z: module.prototypes(z)

    def init_extra(rng):
        del rng
        if queue_size:
            return {"queue": jnp.zeros((len(crops_for_assign), queue_size, proj_dim), jnp.float32)}
        return {}

    def queue_used(extra, step):
        """Whether the queue joins the Sinkhorn this step: from `queue_start_step` on, once full."""
        # Full once its last (oldest) rows were written: L2-normalised projections are non-zero.
        full = jnp.all(jnp.any(extra["queue"][:, -1] != 0, axis=-1))
        return (step >= queue_start_step) & full

    def codes_of(params, extra, scores, batch, use_queue):
        """Sinkhorn codes (A, B, K) of the assigned crops, with the queue when `use_queue`."""
        sinkhorn = lambda s: ops.sinkhorn_knopp(s, epsilon=epsilon, num_iters=sinkhorn_iters)
        codes = []
        for a, crop in enumerate(crops_for_assign):
            s = scores[crop]
            if queue_size:
                queued = net.apply({"params": params}, extra["queue"][a], method=score)
                q = jax.lax.cond(use_queue, lambda: sinkhorn(jnp.concatenate([s, queued]))[:batch],
                                 lambda: sinkhorn(s))
            else:
                q = sinkhorn(s)
            codes.append(q)
        # stop_gradient: codes are targets ("we do not backpropagate through Q", the reference
        # computes them under torch.no_grad()).
        return jax.lax.stop_gradient(jnp.stack(codes))

    def embed(params, model_state, teacher, extra, views, rng, step):
        del teacher
        num_views, b = len(views), views[0].shape[0]
        if num_views < 2 or any(not 0 <= c < num_views for c in crops_for_assign):
            raise ValueError(f"SwAV needs >= 2 views and crops_for_assign {crops_for_assign} indexing them, got "
                             f"{num_views} views; set config.input.views.")
        params = ops.stop_gradient_where(step < freeze_prototypes_steps, params, ("prototypes",))
        out, new_state = net.apply({"params": params, **model_state}, views, train=True,
                                   mutable=list(model_state), rngs={"dropout": rng})
        scores = out["scores"].reshape(num_views, b, num_prototypes)
        z = out["projection"].reshape(num_views, b, -1)
        # Per-view lists of (B, ...) rows: the batch stays the leading axis of every leaf.
        emb = {"scores": list(scores), "z_assign": [z[c] for c in crops_for_assign], "z1": z[0],
               "h1": out["features"][:b]}
        return emb, new_state

    def objective(params, emb, extra, rng, step):
        del rng
        scores, b = jnp.stack(emb["scores"]), emb["z1"].shape[0]
        use_queue = queue_used(extra, step) if queue_size else jnp.bool_(False)
        # Sinkhorn over the whole (global, or accumulated) batch; codes are stop_gradient targets.
        codes = codes_of(params, extra, jax.lax.stop_gradient(scores), b, use_queue)
        loss = jnp.mean(losses.swav(scores, codes, crops_for_assign, temperature=temperature))
        new_extra = {}
        if queue_size:
            # stop_gradient: the queue holds constants, as the reference's detached `queue` tensor.
            z = jax.lax.stop_gradient(ops.l2_normalize(jnp.stack(emb["z_assign"])))
            new_extra["queue"] = jnp.concatenate([z, extra["queue"]], axis=1)[:, :queue_size]
        usage = monitors.prototype_usage(codes[0], from_logits=False)
        metrics = {"prototype_usage": usage["usage"], "code_entropy": usage["entropy"],
                   "z_std": monitors.feature_std(emb["z1"]), "h_std": monitors.feature_std(emb["h1"]),
                   "queue_used": use_queue.astype(jnp.float32),
                   "prototypes_frozen": (step < freeze_prototypes_steps).astype(jnp.float32)}
        return loss, (new_extra, metrics)

    def after_update(params):
        # The reference's `prototypes.weight.copy_(normalize(w))` under no_grad, each iteration.
        # Only the weight: lightly's bias (`prototype_bias`) is not rescaled (its `normalize`).
        weights = params["prototypes"]["weights"]
        return {**params, "prototypes": {"weights": {**weights, "kernel": heads.renormalize(weights["kernel"])}}}

    return base.two_stage(net, embed, objective, init_extra=init_extra,
                          after_update=after_update if prototype_norm == "in_place" else None)
