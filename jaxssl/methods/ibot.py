"""iBOT (Zhou et al., 2022, arXiv:2111.07832) with the DINOv2 (arXiv:2304.07193) options.

"We perform masked prediction with an online tokenizer [...] the teacher network [...] as the
online tokenizer" (Sec. 3.2): DINO's [CLS] self-distillation over all crops plus a patch-level
self-distillation where the student sees the global crops with block-masked patches and predicts,
at the masked positions, the teacher's output for the unmasked crop.

* Network: a ViT backbone built with `mask_token=True` -> one `heads.DINOHead` shared by the
  [CLS] and patch tokens (iBOT's `--shared_head true` of its ViT-S/16 recipe; DINOv2's default),
  in `heads.MultiCrop`. `separate_head=True`: two heads of the same shape, one for [CLS] and one
  for patch tokens (DINOv2's `ibot.separate_head`, arXiv:2304.07193 Sec. 4: "Untying head
  weights between both objectives"; iBOT's `--shared_head false` unties only the last layer).
* Masks: `masking.random_block_mask` on device for every global crop (ratio U(0.1, 0.5), iBOT's
  `pred_ratio 0.3 +- 0.2`; each image masked with probability `mask_probability`).
* Loss: `dino_loss_weight * mean(losses.dino)` + `ibot_loss_weight * mean(losses.ibot_patch)`
  (the patch term averaged over the global crops, each crop supervised by the teacher's output
  for the same crop) + `koleo_loss_weight * losses.koleo_per_device` of each global crop's
  student [CLS] feature (neighbours searched on each device, as DINOv2; `koleo_per_device=False`:
  over the global batch). iBOT: lambda1 = lambda2 = 1, no KoLeo; DINOv2 (`dino.loss_weight`,
  `ibot.loss_weight`, `dino.koleo_loss_weight`): 1, 1, 0.1.
* Teacher targets: `centering="ema"` (iBOT): centred and sharpened with `extra["center"]` (K,)
  and `extra["patch_center"]` (K,), the global-batch means (all patch tokens for the latter) at
  momentum 0.9; `centering="sinkhorn"` (DINOv2): `ops.sinkhorn_knopp` with epsilon = the teacher
  temperature, over the global batch ([CLS]) and over the masked patch tokens only (patches).
* Heads on the masked tokens only (`patch_head_tokens="masked"`, the default): the student's patch
  head runs on each global crop's masked tokens, padded per image to the most a mask can hold
  (`masking.max_block_masked`, `masking.masked_index`), as DINOv2; the official iBOT code runs it on
  every token and drops the unmasked ones in the loss ("all"). Same loss and gradients, fewer FLOPs.
* EMA teacher, teacher temperature warm-up, frozen last layer, drop-path-free teacher, crop
  grouping (`crop_grouping`, `heads.MultiCrop`): as DINO (shared helpers from `jaxssl.methods.dino`).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxssl import losses, masking, monitors, ops, schedules
from jaxssl.methods import base, dino
from jaxssl.models import heads

CENTERINGS = ("ema", "sinkhorn")
PATCH_HEAD_TOKENS = ("masked", "all")


class SeparateHeads(nn.Module):
    """Untied heads (DINOv2 `ibot.separate_head`): [CLS] features (B, D) -> `dino`, patch tokens (B, N, D) -> `ibot`.

    `heads.MultiCrop` calls its head on pooled features (rank 2) and on patch tokens (rank 3); the
    rank picks the head. At initialisation both are built (MultiCrop's init sees no patch tokens).
    """

    dino: nn.Module
    ibot: nn.Module

    def __call__(self, x, train: bool = True):
        if x.ndim == 2 and self.is_initializing():
            self.ibot(x[:, None], train=train)
        return (self.ibot if x.ndim == 3 else self.dino)(x, train=train)


def make(*, backbone: nn.Module, total_steps: int, out_dim: int = 8192, hidden_dim: int = 2048,
         bottleneck_dim: int = 256, norm_last_layer: bool = True, global_views: int = 2,
         student_temperature: float = 0.1, teacher_temperature: float = 0.07,
         warmup_teacher_temperature: float = 0.04, warmup_teacher_temperature_steps: int = 0,
         centering: str = "ema", center_momentum: float = 0.9, separate_head: bool = False,
         dino_loss_weight: float = 1.0, ibot_loss_weight: float = 1.0, koleo_loss_weight: float = 0.0,
         koleo_per_device: bool = True, patch_head_tokens: str = "masked",
         mask_ratio: Sequence[float] = (0.1, 0.5),
         mask_probability: float = 1.0, min_mask_patches: int = 4, base_momentum: float = 0.996,
         freeze_last_layer_steps: int = 0, crop_grouping: str = "resolution", dtype=jnp.float32) -> base.Method:
    """iBOT / DINOv2-style masked self-distillation.

    Args:
      backbone: a `jaxssl.models.vit.Model` with `mask_token=True`.
      total_steps: length of the run (the EMA momentum reaches 1 there).
      out_dim: K of the head(s) (8192 for iBOT ViT-S/16).
      hidden_dim, bottleneck_dim, norm_last_layer: `heads.DINOHead` settings.
      separate_head: one head for [CLS] and another for patch tokens (DINOv2) instead of one shared.
      global_views: leading views that are global crops (masked for the student, seen by the teacher).
      student_temperature: tau_s (0.1).
      teacher_temperature, warmup_teacher_temperature, warmup_teacher_temperature_steps: tau_t of
        [CLS] and patch targets, warmed up linearly (0.04 -> 0.07 over 30 epochs in iBOT).
      centering: "ema" (iBOT/DINO centre) or "sinkhorn" (DINOv2 Sinkhorn-Knopp centring).
      center_momentum: momentum of both EMA centres (0.9).
      dino_loss_weight, ibot_loss_weight: lambda_1 ([CLS]) and lambda_2 (masked patches) of iBOT (1, 1).
      koleo_loss_weight: weight of the KoLeo regulariser on the student's global [CLS] features
        (DINOv2: 0.1; 0 = off, the term is still logged).
      koleo_per_device: search each feature's neighbour among its device's rows (True, DINOv2's
        ssl_meta_arch.py, `losses.koleo_per_device`: the result then depends on the device count)
        or among the global batch (False: independent of the device count).
      patch_head_tokens: which patch tokens the student's head runs on. "masked" (default): each
        global crop's masked tokens only, padded to `masking.max_block_masked` per image
        (`masking.masked_index`), as DINOv2 (ssl_meta_arch.py selects `mask_indices_list` before
        the head); with Sinkhorn centring the teacher's head too. "all": every patch token, as
        bytedance/ibot main_ibot.py (the student and teacher heads see all tokens, the loss keeps
        the masked ones). The loss and its gradients are the same (the heads are per token);
        "masked" runs the student head on at most ratio[1] of the tokens (half at iBOT's 0.5).
        With EMA centring the teacher's head still runs on all tokens: iBOT's patch centre is
        their mean.
      mask_ratio, mask_probability, min_mask_patches: block masking (see `masking.random_block_mask`).
      base_momentum: teacher EMA momentum at step 0 (0.996), cosine to 1.
      freeze_last_layer_steps: steps with the head's last layer frozen.
      crop_grouping: "resolution" (bytedance/ibot utils.py `MultiCropWrapper`: same-size crops in one call)
        or "view" (one call per crop; the same loss and gradients for a ViT); see `heads.MultiCrop`.
      dtype: compute dtype of the head.
    """
    if centering not in CENTERINGS:
        raise ValueError(f"Unknown centering {centering!r}; choose one of {CENTERINGS}.")
    if patch_head_tokens not in PATCH_HEAD_TOKENS:
        raise ValueError(f"Unknown patch_head_tokens {patch_head_tokens!r}; choose one of {PATCH_HEAD_TOKENS}.")
    if not getattr(backbone, "mask_token", False):
        raise ValueError("iBOT needs a ViT backbone with a mask token: set config.model.mask_token=True "
                         "(models.get('vit', ..., mask_token=True)).")
    make_head = lambda: heads.DINOHead(out_dim, hidden_dim, bottleneck_dim, norm_last_layer=norm_last_layer,
                                       dtype=dtype)
    head = SeparateHeads(make_head(), make_head()) if separate_head else make_head()
    # The last layer(s) frozen for the first steps: DINOv2 freezes every "last_layer".
    last_layers = [("head", "dino", "last_layer"), ("head", "ibot", "last_layer")] if separate_head \
        else [("head", "last_layer")]
    student, teacher_net = dino.networks(backbone, head, crop_grouping)
    temperature = schedules.teacher_temperature(warmup_teacher_temperature, teacher_temperature,
                                                warmup_teacher_temperature_steps)
    patch = backbone.dims()[3]

    def init_extra(rng):
        del rng
        if centering == "ema":
            return {"center": jnp.zeros((out_dim,), jnp.float32), "patch_center": jnp.zeros((out_dim,), jnp.float32)}
        return {}

    def loss_fn(params, model_state, teacher, extra, views, rng, step):
        num_views, b = dino.check_views(views, global_views, "iBOT")
        mask_rng, drop_rng = jax.random.split(rng)
        tau_t = temperature(step)
        grid = (views[0].shape[1] // patch, views[0].shape[2] // patch)
        masks = masking.random_block_mask(mask_rng, global_views * b, grid, ratio=tuple(mask_ratio),
                                      probability=mask_probability, min_patches=min_mask_patches)
        masks = masks.reshape(global_views, b, -1)
        index = None
        if patch_head_tokens == "masked":
            index, valid = masking.masked_index(masks.reshape(global_views * b, -1),
                                                masking.max_block_masked(grid[0] * grid[1], tuple(mask_ratio)))
            index, valid = index.reshape(global_views, b, -1), valid.reshape(global_views, b, -1)

        frozen = step < freeze_last_layer_steps
        for path in last_layers:
            params = ops.stop_gradient_where(frozen, params, path)
        out, new_state = student.apply({"params": params, **model_state}, views, train=True,
                                       masks=list(masks) + [None] * (num_views - global_views),
                                       patch_views=global_views, patch_index=None if index is None else list(index),
                                       mutable=list(model_state), rngs={"dropout": drop_rng})
        # Sinkhorn centring reads the masked teacher tokens only, so its head may skip the others too.
        t_index = None if index is None or centering == "ema" else list(index)
        t_out = dino.apply_teacher(teacher_net, teacher, views[:global_views], patch_views=global_views,
                                   patch_index=t_index)
        t_cls = t_out["projection"].reshape(global_views, b, out_dim)
        t_patch = jnp.stack(t_out["patch_projection"])  # (G, B, N or M, K)
        s_cls = out["projection"].reshape(num_views, b, out_dim)
        s_patch = jnp.stack(out["patch_projection"])  # (G, B, M, K) with "masked", else (G, B, N, K)

        new_extra = {}
        if centering == "ema":
            cls_targets = losses.centered_softmax(t_cls, extra["center"], tau_t)
            # The centre is the mean over every teacher token; targets are needed at the student's only.
            t_used = t_patch if index is None else jnp.take_along_axis(t_patch, index[..., None], axis=2)
            patch_targets = losses.centered_softmax(t_used, extra["patch_center"], tau_t)
            new_extra["center"] = losses.update_center(extra["center"], t_cls, center_momentum)
            new_extra["patch_center"] = losses.update_center(extra["patch_center"], t_patch, center_momentum)
        else:
            sinkhorn = lambda x, **kw: ops.sinkhorn_knopp(x.reshape(-1, out_dim), epsilon=tau_t, **kw)
            cls_targets = sinkhorn(t_cls).reshape(t_cls.shape)
            # DINOv2 balances the masked patch tokens only (`n_masked_patches` rows).
            patch_valid = masks if index is None else valid
            patch_targets = sinkhorn(t_patch, valid=patch_valid.reshape(-1)).reshape(t_patch.shape)
        cls_loss = jnp.mean(losses.dino(s_cls, cls_targets, student_temperature=student_temperature))
        per_view = lambda s, t, m: losses.ibot_patch(s, t, m, student_temperature=student_temperature)
        patch_loss = jnp.mean(jax.vmap(per_view)(s_patch, patch_targets, masks if index is None else valid))
        loss = dino_loss_weight * cls_loss + ibot_loss_weight * patch_loss
        feats = out["features"][: global_views * b].reshape(global_views, b, -1)
        # Off (weight 0), the logged term is a monitor: the global form, independent of the device count.
        koleo_fn = losses.koleo_per_device if koleo_per_device and koleo_loss_weight else losses.koleo
        koleo = sum(jnp.mean(koleo_fn(f)) for f in feats)
        if koleo_loss_weight:
            loss = loss + koleo_loss_weight * koleo
        metrics = {"cls_loss": cls_loss, "patch_loss": patch_loss, "koleo": koleo,
                   "mask_ratio": jnp.mean(masks.astype(jnp.float32)),
                   # Of the [CLS] targets themselves (centred softmax or Sinkhorn codes; log 0 = -inf is fine).
                   "teacher_entropy": monitors.entropy(jnp.log(cls_targets)),
                   "teacher_kl": monitors.kl_divergence(jnp.log(cls_targets), s_cls[:global_views],
                                                        q_temperature=student_temperature),
                   "teacher_temperature": tau_t, "last_layer_frozen": frozen.astype(jnp.float32),
                   "h_std": monitors.feature_std(feats[0])}
        return loss, (new_state, new_extra, metrics)

    return base.Method(student, loss_fn, init_extra=init_extra,
                       teacher_momentum=schedules.cosine_momentum(base_momentum, total_steps))
