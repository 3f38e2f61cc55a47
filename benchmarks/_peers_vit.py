"""The PyTorch/lightly side of the transformer methods of `learning_parity.py`: timm backbones and MAE.

Only benchmarks import this module (it needs `.venv-bench` plus timm, see benchmarks/README.md).

- `timm_backbone(config.model)`: the timm `VisionTransformer` that
  `jaxssl.models.pytorch_layout.torch_model(model_cfg, "timm")` names for the jaxssl backbone, the
  model jaxssl's export maps to exactly (a `vit`: CLS token after the final LayerNorm; the image
  `transformer`: no CLS token, final LayerNorm then the mean over tokens), so both sides have the
  same architecture and parameter count (`param_counts`).
- `MAE`: lightly's `MaskedVisionTransformerTIMM` around that model (MAE's weight init and fixed
  2-D sine-cosine position table, as jaxssl's `pos_embed="sincos"`), `random_token_mask`, a
  `decoder_embed` Linear, `MaskedVisionTransformerDecoderTIMM` (mask token, fixed sine-cosine
  table, blocks, final LayerNorm) and a Linear prediction head, the loss an MSE on the masked
  patches against per-patch normalised pixels when `norm_pix_loss` (`utils.normalize_mean_var`),
  the structure of lightly's MAE example.
"""
from __future__ import annotations

import torch
from torch import nn


def timm_backbone(model_cfg, drop_path_rate: float | None = None) -> nn.Module:
    """The timm model of `pytorch_layout.torch_model(model_cfg, "timm")`, features (B, D), `.out_dim` = D.

    A `vit` also takes smaller crops (`dynamic_img_size`: the position table resized, bicubic, as
    jaxssl's ViT; timm antialiases when it shrinks the table, jaxssl does not).
    `drop_path_rate`: None keeps `model_cfg.drop_path_rate` (0 if unset).
    """
    import timm

    from jaxssl.models import pytorch_layout
    spec = pytorch_layout.torch_model(dict(model_cfg), "timm")
    dpr = float(model_cfg.get("drop_path_rate", 0.0) or 0.0) if drop_path_rate is None else drop_path_rate
    extra = {"dynamic_img_size": True} if model_cfg.name == "vit" else {}
    model = timm.create_model(spec["model_name"], pretrained=False, num_classes=0, drop_path_rate=dpr,
                              **spec["kwargs"], **extra)
    model.out_dim = model.num_features
    return model


def param_counts(config, torch_backbone: nn.Module) -> tuple[int, int]:
    """(jaxssl backbone parameters, torch backbone parameters), position tables and mask tokens left out.

    A fixed sine-cosine table is a constant in jaxssl and a frozen parameter in timm, and a learned
    one holds a CLS row only in timm; jaxssl's mask tokens (`mask_token`, `mask_embedding`) have
    no timm counterpart. Everything else (patch embedding, blocks, final norm) counts on both sides.
    """
    import jax

    from jaxssl import methods
    from jaxssl.data import inputs
    method = methods.build(config)
    shapes = jax.eval_shape(lambda r: method.net.init(r, inputs.example(config), train=True), jax.random.key(0))
    flat = jax.tree_util.tree_flatten_with_path(shapes["params"]["backbone"])[0]
    skip = lambda name: "mask" in name or "pos_emb" in name
    n_jax = sum(int(x.size) for path, x in flat if not skip(jax.tree_util.keystr(path)))
    n_torch = sum(p.numel() for name, p in torch_backbone.named_parameters() if not skip(name))
    return n_jax, n_torch


class MAE(nn.Module):
    """lightly's MAE on a timm image transformer without CLS token (jaxssl's `transformer` backbone)."""

    def __init__(self, vit: nn.Module, *, decoder_dim: int, decoder_depth: int, decoder_heads: int, mask_ratio: float,
                 norm_pix_loss: bool):
        super().__init__()
        from lightly.models.modules import MaskedVisionTransformerTIMM
        from lightly.models.modules.masked_vision_transformer_decoder_timm import MaskedVisionTransformerDecoderTIMM
        if vit.num_prefix_tokens:
            raise NotImplementedError("MAE here follows jaxssl's transformer: no CLS (prefix) token.")
        self.backbone = MaskedVisionTransformerTIMM(vit=vit)  # MAE init, fixed sine-cosine table
        self.patch_size = vit.patch_embed.patch_size[0]
        self.mask_ratio, self.norm_pix_loss = mask_ratio, norm_pix_loss
        self.decoder_embed = nn.Linear(vit.embed_dim, decoder_dim)
        self.decoder = MaskedVisionTransformerDecoderTIMM(num_patches=vit.patch_embed.num_patches,
                                                          embed_dim=decoder_dim, depth=decoder_depth,
                                                          num_heads=decoder_heads, num_prefix_tokens=0)
        self.prediction_head = nn.Linear(decoder_dim, self.patch_size ** 2 * 3)

    def loss(self, images: torch.Tensor) -> torch.Tensor:
        from lightly.models import utils
        b, n = images.shape[0], self.backbone.sequence_length
        # No CLS token: every token may be masked; int(n (1 - r)) kept, jaxssl's round(r n) masked.
        idx_keep, idx_mask = utils.random_token_mask((b, n), self.mask_ratio, mask_class_token=True,
                                                     device=images.device)
        x = self.decoder_embed(self.backbone.encode(images, idx_keep=idx_keep))
        full = utils.repeat_token(self.decoder.mask_token, (b, n))
        full = utils.set_at_index(full, idx_keep, x.type_as(full))  # the visible tokens back in place
        pred = self.prediction_head(utils.get_at_index(self.decoder(full), idx_mask))
        target = utils.get_at_index(utils.patchify(images, self.patch_size), idx_mask)
        if self.norm_pix_loss:
            target = utils.normalize_mean_var(target, dim=-1)
        return nn.functional.mse_loss(pred, target)


def from_config(config, backbone: nn.Module) -> nn.Module:
    """lightly's implementation of `config.method` ("mae") on the timm backbone of `config.model`."""
    kw = dict(config.method_kw)
    if config.method != "mae":
        raise NotImplementedError(f"_peers_vit.from_config builds MAE, got {config.method!r}.")
    if kw.get("pos_embed", "sincos") != "sincos":
        raise NotImplementedError("lightly's MAE uses fixed sine-cosine tables (pos_embed='sincos').")
    return MAE(backbone, decoder_dim=kw["decoder_dim"], decoder_depth=kw["decoder_depth"],
               decoder_heads=kw["decoder_heads"], mask_ratio=kw["mask_ratio"], norm_pix_loss=kw["norm_pix_loss"])
