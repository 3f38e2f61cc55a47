"""DINO (Caron et al., 2021, arXiv:2104.14294): self-distillation with no labels, multi-crop.

"We train the student network to match the output distribution of the teacher by minimizing
the cross-entropy loss w.r.t. the parameters of the student [...] the teacher is built from past
iterations of the student network [...] an exponential moving average (EMA)" (Sec. 3.1).

* Network: backbone -> `heads.DINOHead` (3-layer MLP, 256 bottleneck, L2 norm, weight-normalised
  last layer), wrapped in `heads.MultiCrop` so crops of one resolution share a backbone call
  (`crop_grouping="resolution"`, the reference's `MultiCropWrapper`; "view": one call per crop,
  the same loss and gradients for a ViT, other BatchNorm statistics for a ResNet).
* Views: the first `global_views` views of `config.input.views` are the global crops; any further
  views are local crops (smaller crop_size). The teacher sees the globals, the student all views;
  the loss is `losses.dino` over every (teacher global view, other student view) pair.
* Teacher: the step's EMA of the student (`schedules.cosine_momentum`, 0.996 -> 1), run without
  drop-path (DINO builds its teacher ViT with `drop_path_rate=0`) and with BatchNorm in batch
  statistics mode (as the reference, which never puts the teacher in eval mode).
* Centring: `extra["center"]` (K,), updated by `losses.update_center` with the mean over the
  GLOBAL batch of the teacher's outputs (momentum 0.9); sharpening: the teacher temperature
  `schedules.teacher_temperature` (0.04 -> 0.07 warm-up), the student's is 0.1.
* Frozen last layer: for `step < freeze_last_layer_steps` the gradient of the head's last layer is
  cut (`ops.stop_gradient_where`), the reference's `cancel_gradients_last_layer` (first epoch).
  Its weight decay still applies, but the layer is weight-normalised (w = g v / ||v||) and decay
  only rescales v, so the function the layer computes does not change while it is frozen.
* The temperature schedule and the freeze read the loss's `step` argument (`state.step`), so they
  follow the EMA schedule's counter, also across a skipped non-finite step. Both are logged
  (`teacher_temperature`, `last_layer_frozen`).
* Gradient clipping and the weight-decay schedule (0.04 -> 0.4) are optimiser settings
  (`config.optimizer.grad_clip`, `weight_decay_end`).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxssl import losses, monitors, ops, schedules
from jaxssl.methods import base
from jaxssl.models import heads


def networks(backbone: nn.Module, head: nn.Module, grouping: str = "resolution"):
    """(student, teacher) `MultiCrop` networks with one parameter structure and one crop `grouping`.

    The teacher's backbone is the student's without stochastic depth, when it has any.
    """
    heads.check_grouping(grouping)
    fields = getattr(backbone, "__dataclass_fields__", {})
    teacher_backbone = backbone.clone(drop_path_rate=0.0) if "drop_path_rate" in fields else backbone
    return (heads.MultiCrop(backbone, head, grouping=grouping),
            heads.MultiCrop(teacher_backbone, head, grouping=grouping))


def apply_teacher(net: nn.Module, teacher, views, **kw):
    """Teacher forward in training mode; its BatchNorm statistics are used, never written back."""
    out, _ = net.apply(teacher, views, train=True, mutable=[k for k in teacher if k != "params"], **kw)
    # stop_gradient: teacher outputs are targets. The step differentiates the student's params
    # only, so nothing would flow into the teacher anyway; this states it and keeps it true.
    return jax.lax.stop_gradient(out)


def check_views(views, global_views: int, name: str) -> tuple[int, int]:
    """(number of views V, batch B); globals first and of one shape, at least two views."""
    if len(views) < 2 or not 1 <= global_views <= len(views):
        raise ValueError(f"{name} needs >= 2 views with 1 <= global_views <= len(views), got {len(views)} views "
                         f"and global_views={global_views}; set config.input.views (globals first).")
    if any(v.shape != views[0].shape for v in views[:global_views]):
        raise ValueError(f"{name}'s first {global_views} (global) views must have one shape, got "
                         f"{[tuple(v.shape) for v in views[:global_views]]}.")
    return len(views), views[0].shape[0]


def make(*, backbone: nn.Module, total_steps: int, out_dim: int = 65536, hidden_dim: int = 2048,
         bottleneck_dim: int = 256, use_bn_in_head: bool = False, norm_last_layer: bool = True,
         global_views: int = 2, student_temperature: float = 0.1, teacher_temperature: float = 0.07,
         warmup_teacher_temperature: float = 0.04, warmup_teacher_temperature_steps: int = 0,
         center_momentum: float = 0.9, base_momentum: float = 0.996, freeze_last_layer_steps: int = 0,
         crop_grouping: str = "resolution", dtype=jnp.float32) -> base.Method:
    """DINO.

    Args:
      backbone: module mapping images (B,H,W,3) -> features (B,F) at every crop size (ResNet, ViT).
      total_steps: length of the run (the EMA momentum reaches 1 there).
      out_dim: K, the head's output dimension (65536 for ViT-S/16 in the paper).
      hidden_dim, bottleneck_dim: head MLP widths (2048, 256).
      use_bn_in_head: BatchNorm in the head's MLP (False for ViT; the paper's ResNet-50 uses it).
      norm_last_layer: fix the last layer's weight-norm gain to 1 (True; stabilises ViT-S).
      global_views: how many leading views are global crops seen by the teacher (2).
      student_temperature: tau_s (0.1).
      teacher_temperature, warmup_teacher_temperature, warmup_teacher_temperature_steps: tau_t
        rises linearly from the warm-up value (0.04) to `teacher_temperature` (0.04 to 0.07)
        over the warm-up steps (30 epochs in the paper).
      center_momentum: m of the centre EMA (0.9).
      base_momentum: teacher EMA momentum at step 0 (0.996), cosine to 1.
      freeze_last_layer_steps: steps with the last layer frozen (1 epoch in the paper).
      crop_grouping: "resolution" (the reference's `MultiCropWrapper`: same-size crops concatenated
        into one backbone call) or "view" (one call per crop); see `heads.MultiCrop`.
      dtype: compute dtype of the head.
    """
    if not student_temperature > 0:
        raise ValueError(f"student_temperature must be > 0, got {student_temperature}.")
    head = heads.DINOHead(out_dim, hidden_dim, bottleneck_dim, use_bn=use_bn_in_head,
                          norm_last_layer=norm_last_layer, dtype=dtype)
    student, teacher_net = networks(backbone, head, crop_grouping)
    temperature = schedules.teacher_temperature(warmup_teacher_temperature, teacher_temperature,
                                                warmup_teacher_temperature_steps)

    def init_extra(rng):
        del rng
        return {"center": jnp.zeros((out_dim,), jnp.float32)}

    def loss_fn(params, model_state, teacher, extra, views, rng, step):
        num_views, b = check_views(views, global_views, "DINO")
        frozen = step < freeze_last_layer_steps
        params = ops.stop_gradient_where(frozen, params, ("head", "last_layer"))
        out, new_state = student.apply({"params": params, **model_state}, views, train=True,
                                       mutable=list(model_state), rngs={"dropout": rng})
        t_logits = apply_teacher(teacher_net, teacher, views[:global_views])["projection"]
        t_logits = t_logits.reshape(global_views, b, out_dim)
        s_logits = out["projection"].reshape(num_views, b, out_dim)
        tau_t = temperature(step)
        targets = losses.centered_softmax(t_logits, extra["center"], tau_t)
        loss = jnp.mean(losses.dino(s_logits, targets, student_temperature=student_temperature))
        new_center = losses.update_center(extra["center"], t_logits, center_momentum)
        centered = t_logits - extra["center"]
        metrics = {"teacher_entropy": monitors.entropy(centered, temperature=tau_t),
                   "teacher_kl": monitors.kl_divergence(centered, s_logits[:global_views], p_temperature=tau_t,
                                                        q_temperature=student_temperature),
                   "teacher_temperature": tau_t, "last_layer_frozen": frozen.astype(jnp.float32),
                   "h_std": monitors.feature_std(out["features"][:b])}
        return loss, (new_state, {"center": new_center}, metrics)

    return base.Method(student, loss_fn, init_extra=init_extra,
                       teacher_momentum=schedules.cosine_momentum(base_momentum, total_steps))
