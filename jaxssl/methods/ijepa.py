"""I-JEPA (Assran et al., 2023, arXiv:2301.08243): predict the representations of masked target blocks.

"The idea behind I-JEPA is simple: from a single context block, predict the representations of
various target blocks in the same image" (abstract); "the context encoder [...] only processes
the visible context patches [...] the predictor takes as input the output of the context encoder
and, conditioned on positional tokens, predicts the representations of a specific target block
[...] The target representations correspond to the outputs of the target-encoder" (Sec. 3),
whose weights are "an exponential moving average of the context-encoder weights".
Follows facebookresearch/ijepa (src/train.py, src/models/vision_transformer.py, src/masks/multiblock.py):

* Masks: `masking.multiblock_mask` on the patch grid of each step's global batch (1 context block
  of scale 0.85-1.0, M = 4 targets of scale 0.15-0.2 and aspect 0.75-1.5, targets removed from
  the context, common counts per batch).
* Context encoder: the backbone `transformer.Model(modality="image")` (no [CLS], fixed 2-D
  sin-cos positions, final LayerNorm: the reference `VisionTransformer`) on the context patches
  only (`keep=`), padding beyond the batch's common count masked out of attention.
* Predictor (`VisionTransformerPredictor`): Linear to `predictor_dim`, its own fixed sin-cos
  positions added to the context tokens; for each target block, a learned mask token plus the
  positions of the block's patches appended; `predictor_depth` pre-norm blocks; LayerNorm; Linear
  back to the encoder width; the outputs at the target tokens are the predictions. The blocks take
  the encoder's `remat` policy (`config.remat`) and `attention_impl`.
* Target encoder: the EMA teacher's backbone on ALL patches; its tokens layer-normalised without
  affine and gathered at the target blocks (`losses.ijepa_targets`), under `stop_gradient`.
* Loss: `losses.ijepa`, smooth-L1 (beta 1) averaged over the predicted tokens and channels, as the
  official `loss_fn` (`F.smooth_l1_loss(z, h)`); `loss="mse"` is the paper's L2 (Sec. 3).
* EMA momentum: linear from 0.996 to 1.0 over the run (src/train.py `momentum_scheduler`;
  configs/in1k_vith14_ep300.yaml `ema: [0.996, 1.0]`).
* Evaluation: `Method.eval_teacher`: the trainer's kNN / probes embed with the target encoder,
  the average-pooled patch tokens (the I-JEPA paper evaluates the target encoder, Sec. 5).

Differences from the reference, all deliberate: the predictor processes the (B x M) pairs with
padded index arrays and attention masks instead of the collator's truncated tensors (identical
results on the valid tokens); the reference's `fix_init_weight` depth rescaling of the output
projections is not applied (the shared `Block` keeps its truncated-normal(0.02) init).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxssl import losses, masking, monitors
from jaxssl.methods import base
from jaxssl.models import encoders, transformer

LOSSES = {"smooth_l1": 1.0, "mse": 0.0}  # name -> beta of `losses.ijepa`


class Predictor(nn.Module):
    """I-JEPA's narrow ViT predictor: (context tokens, their ids, target ids) -> (B, M, Kt, D) predictions."""

    out_dim: int
    dim: int = 384
    depth: int = 12
    num_heads: int = 12
    dtype: Any = jnp.float32
    attention_impl: str | None = None  # the backbone's (`transformer.Attention`)
    remat: str = "none"  # the backbone's `config.remat` policy (`transformer.REMAT_POLICIES`)

    @nn.compact
    def __call__(self, z, grid, ctx_ids, ctx_valid, tgt_ids, tgt_valid, train: bool = True):
        b, kc, _ = z.shape
        _, m, kt = tgt_ids.shape
        # Fixed (requires_grad=False) 2-D sin-cos table, as the reference `predictor_pos_embed`.
        pos = jnp.asarray(encoders.sincos_2d(self.dim, *grid), jnp.float32)
        y = nn.Dense(self.dim, dtype=self.dtype, name="predictor_embed")(z) + pos[ctx_ids].astype(self.dtype)
        token = self.param("mask_token", nn.initializers.truncated_normal(0.02), (self.dim,))
        queries = (token + pos[tgt_ids]).astype(y.dtype)  # (B, M, Kt, dim)
        # Each (image, target block) pair is one sequence: the context, then that block's mask tokens.
        seq = jnp.concatenate([jnp.broadcast_to(y[:, None], (b, m, kc, self.dim)), queries], axis=2)
        valid = jnp.concatenate([jnp.broadcast_to(ctx_valid[:, None], (b, m, kc)), tgt_valid], axis=2)
        out, _ = transformer.Body(self.depth, self.num_heads, dtype=self.dtype, attention_impl=self.attention_impl,
                                  remat=self.remat, name="body")(
            seq.reshape(b * m, kc + kt, self.dim), train, valid.reshape(b * m, kc + kt))
        out = nn.Dense(self.out_dim, dtype=self.dtype, name="predictor_proj")(out[:, kc:])
        return out.reshape(b, m, kt, self.out_dim).astype(jnp.float32)


class Net(nn.Module):
    """Context encoder (the backbone) + predictor; `tokens` / `features` are the encoder alone."""

    backbone: nn.Module
    predictor: Predictor

    def _grid(self, x):
        p = self.backbone.patch_size
        return x.shape[1] // p, x.shape[2] // p

    @nn.compact
    def __call__(self, x, train: bool = True, masks: masking.MultiBlock | None = None):
        grid = self._grid(x)
        if masks is None:  # initialisation: every patch is context, patch 0 the one target
            b, n = x.shape[0], grid[0] * grid[1]
            ids = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (b, n))
            masks = masking.MultiBlock(None, None, ids, jnp.ones((b, n), bool), jnp.zeros((b, 1, 1), jnp.int32),
                                       jnp.ones((b, 1, 1), bool))
        z = self.backbone(x, train=train, keep=masks.context_ids, keep_valid=masks.context_valid,
                          return_layers=True)["tokens"]
        pred = self.predictor(z, grid, masks.context_ids, masks.context_valid, masks.target_ids, masks.target_valid,
                              train)
        valid = masks.context_valid[..., None].astype(jnp.float32)
        return {"prediction": pred, "features": jnp.sum(z * valid, 1) / jnp.maximum(jnp.sum(valid, 1), 1.0)}

    def tokens(self, x, train: bool = False):
        """(B, N, D) encoder tokens of all patches (the target encoder's forward)."""
        return self.backbone(x, train=train, return_layers=True)["tokens"]

    def features(self, x, train: bool = False):
        """(B, D) average-pooled patch tokens (the evaluation features)."""
        return self.backbone(x, train=train)


def make(*, backbone: nn.Module, total_steps: int, predictor_dim: int = 384, predictor_depth: int = 12,
         predictor_heads: int | None = None, num_targets: int = 4,
         target_scale: Sequence[float] = (0.15, 0.2), target_aspect: Sequence[float] = (0.75, 1.5),
         context_scale: Sequence[float] = (0.85, 1.0), min_keep: int = 10, allow_overlap: bool = False,
         loss: str = "smooth_l1", base_momentum: float = 0.996, final_momentum: float = 1.0,
         dtype=jnp.float32) -> base.Method:
    """I-JEPA.

    Args:
      backbone: an image `transformer.Model` (cloned with fixed sin-cos positions, as the reference).
      total_steps: length of the run (the EMA momentum reaches `final_momentum` there).
      predictor_dim, predictor_depth: predictor width and depth (`pred_emb_dim: 384`,
        `pred_depth: 12`, configs/in1k_vith14_ep300.yaml).
      predictor_heads: predictor heads; None = the backbone's (the reference passes the
        encoder's `num_heads`, src/helper.py `init_model`).
      num_targets, target_scale, target_aspect, context_scale, min_keep, allow_overlap: the mask
        collator (`masking.multiblock_mask`; yaml `mask:` 4, (0.15, 0.2), (0.75, 1.5), (0.85, 1.0), 10, false).
      loss: "smooth_l1" (the official code) or "mse" (the paper's L2).
      base_momentum, final_momentum: EMA momentum, linear over the run (`ema: [0.996, 1.0]`).
      dtype: compute dtype of the predictor.
    """
    if getattr(backbone, "modality", None) != "image":
        raise ValueError("I-JEPA needs an image jaxssl.models.transformer.Model backbone (config.model.name="
                         "'transformer', modality='image').")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}.")
    # The reference's encoder and predictor both use fixed sin-cos tables (requires_grad=False).
    backbone = backbone.clone(pos_embed="sincos")
    # The predictor's blocks follow the encoder's attention path and `config.remat` policy.
    predictor = Predictor(backbone.width, predictor_dim, predictor_depth, predictor_heads or backbone.num_heads,
                          dtype=dtype, attention_impl=backbone.attention_impl, remat=backbone.remat)
    net = Net(backbone, predictor)
    p = backbone.patch_size
    mask_kw = dict(num_targets=num_targets, target_scale=tuple(target_scale), target_aspect=tuple(target_aspect),
                   context_scale=tuple(context_scale), min_keep=min_keep, allow_overlap=allow_overlap)

    def loss_fn(params, model_state, teacher, extra, views, rng, step):
        del step
        x = base.one_view("I-JEPA", views)
        mask_rng, drop_rng = jax.random.split(rng)
        masks = masking.multiblock_mask(mask_rng, x.shape[0], (x.shape[1] // p, x.shape[2] // p), **mask_kw)
        # Target encoder: the EMA weights on the full image. stop_gradient: the targets are constants
        # of the update (the step differentiates `params` only; this states it and keeps it true).
        h = net.apply(teacher, x, train=False, method="tokens")
        targets = jax.lax.stop_gradient(losses.ijepa_targets(h, masks.target_ids))
        out = net.apply({"params": params, **model_state}, x, train=True, masks=masks, rngs={"dropout": drop_rng})
        value = jnp.mean(losses.ijepa(out["prediction"], targets, masks.target_valid, beta=LOSSES[loss]))
        metrics = {"context_patches": jnp.sum(masks.context_valid[0]).astype(jnp.float32),
                   "target_patches": jnp.sum(masks.target_valid[0, 0]).astype(jnp.float32),
                   "h_std": monitors.feature_std(out["features"])}
        return value, (model_state, extra, metrics)

    momentum = optax.linear_schedule(base_momentum, final_momentum, max(total_steps, 1))
    return base.Method(net, loss_fn, teacher_momentum=momentum, eval_teacher=True)
