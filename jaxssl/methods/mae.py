"""MAE (He et al., 2021, arXiv:2111.06377): reconstruct the pixels of masked patches from the visible ones.

"We mask random patches of the input image and reconstruct the missing pixels. [...] an
asymmetric encoder-decoder architecture, with an encoder that operates only on the visible
subset of patches (without mask tokens), along with a lightweight decoder that reconstructs the
original image from the latent representation and mask tokens" (abstract).

* Masking: `masking.random_mask`, exactly round(0.75 N) patches per image (Sec. 3).
* Encoder: the backbone `transformer.Model(modality="image")` on the visible tokens only
  (`keep=`), with the position embedding added before the gather, as MAE does.
* Position embeddings: MAE's fixed 2-D sine-cosine tables in encoder and decoder by default
  (`pos_embed="sincos"`; facebookresearch/mae models_mae.py `initialize_weights`:
  `get_2d_sincos_pos_embed` copied into `pos_embed` and `decoder_pos_embed`, both
  `requires_grad=False`); `pos_embed="learned"` trains both instead.
* Initialisation: MAE's `initialize_weights` (`weight_init="xavier_uniform"`, `jaxssl.models.inits`):
  xavier-uniform Linears in encoder and decoder and on the flattened patch projection, normal
  0.02 mask token; `weight_init="trunc_normal"` is timm's std-0.02 ViT init instead.
* Decoder: a projection to `decoder_dim`, learned mask tokens put back at the masked positions
  ("unshuffle"), the decoder position embedding, `decoder_depth` Transformer blocks (the same `Body`)
  and a linear map to p*p*3 pixels per patch (MAE's default 8 x 512; smaller on CIFAR). The decoder
  blocks take the backbone's `remat` policy (`config.remat`) and `attention_impl`: it runs on all
  N tokens (the encoder on N/4), so at ViT-B/16 most of the activations the backward pass keeps
  are the decoder's (benchmarks/RESULTS.md section 6.1).
* Loss: `losses.masked_mse` on the masked patches only, against per-patch normalised pixels
  when `norm_pix_loss` ("the normalized pixel values of each masked patch", Sec. 3, +0.5% top-1).
* `reconstruct` returns images with the visible patches pasted over the prediction, and
  `save_reconstructions` writes original / masked / reconstruction rows to a PNG.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxssl import losses, masking, monitors
from jaxssl.methods import base
from jaxssl.models import encoders, inits, transformer


def patchify(x: jax.Array, p: int) -> jax.Array:
    """(B, H, W, C) -> (B, (H/p)(W/p), p*p*C), row-major patches (the patch-embedding order)."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(x: jax.Array, p: int, h: int, w: int) -> jax.Array:
    """Inverse of `patchify` for an (h, w) image."""
    b, _, d = x.shape
    c = d // (p * p)
    return x.reshape(b, h // p, w // p, p, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


def pixel_targets(x: jax.Array, p: int, norm_pix: bool, eps: float = 1e-6) -> jax.Array:
    """Per-patch pixel targets (B, N, p*p*C), normalised per patch when `norm_pix` (MAE)."""
    t = patchify(x.astype(jnp.float32), p)
    if not norm_pix:
        return t
    mu, var = jnp.mean(t, -1, keepdims=True), jnp.var(t, -1, keepdims=True)
    return (t - mu) / jnp.sqrt(var + eps)


class Net(nn.Module):
    backbone: nn.Module
    decoder_dim: int = 512
    decoder_depth: int = 8
    decoder_heads: int = 16
    pos_embed: str = "sincos"
    dtype: Any = jnp.float32
    weight_init: str = "xavier_uniform"

    @nn.compact
    def __call__(self, x, train: bool = True, keep: jax.Array | None = None):
        b, h, w, c = x.shape
        p = self.backbone.patch_size
        n = (h // p) * (w // p)
        if keep is None:
            keep = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (b, n))
        z = self.backbone(x, train=train, keep=keep, return_layers=True)["tokens"]  # (B, n_keep, D)
        y = nn.Dense(self.decoder_dim, kernel_init=inits.dense(self.weight_init), dtype=self.dtype,
                     name="decoder_embed")(z)
        token = self.param("mask_token", nn.initializers.normal(0.02), (self.decoder_dim,))
        full = masking.scatter_visible(y, keep, token, n)  # unshuffle: visible tokens back in place
        if self.pos_embed == "sincos":  # MAE's fixed decoder table (no parameter)
            pos = jnp.asarray(encoders.sincos_2d(self.decoder_dim, h // p, w // p), jnp.float32)[None]
        else:
            pos = self.param("decoder_pos", nn.initializers.normal(0.02), (1, n, self.decoder_dim))
        # The encoder's attention path and rematerialisation policy (config.remat) for the decoder too.
        y, _ = transformer.Body(self.decoder_depth, self.decoder_heads, dtype=self.dtype,
                                attention_impl=self.backbone.attention_impl, remat=self.backbone.remat,
                                weight_init=self.weight_init, name="decoder")(full + pos.astype(full.dtype), train)
        pred = nn.Dense(p * p * c, kernel_init=inits.dense(self.weight_init), dtype=self.dtype,
                        name="decoder_pred")(y).astype(jnp.float32)
        return {"prediction": pred, "features": jnp.mean(z, axis=1)}

    def features(self, x, train: bool = False):
        return self.backbone(x, train=train)


def make(*, backbone: nn.Module, mask_ratio: float = 0.75, norm_pix_loss: bool = True, decoder_dim: int = 512,
         decoder_depth: int = 8, decoder_heads: int = 16, pos_embed: str = "sincos",
         weight_init: str = "xavier_uniform", dtype=jnp.float32) -> base.Method:
    """MAE with a `transformer.Model(modality="image")` encoder.

    Args:
      backbone: image `transformer.Model`.
      mask_ratio: fraction of patches masked (0.75, Sec. 4 "Masking ratio").
      norm_pix_loss: per-patch normalised pixel targets (MAE's default for its best results).
      decoder_dim, decoder_depth, decoder_heads: decoder sizes (512, 8, 16 in MAE Table 1).
      pos_embed: "sincos" (MAE's fixed 2-D sin-cos tables in encoder and decoder; the backbone is
        cloned with it) or "learned" (trained tables, a deliberate deviation kept as an option).
      weight_init: weight init of encoder and decoder (the backbone is cloned with it; `inits.INITS`):
        "xavier_uniform" (MAE's `initialize_weights`: xavier-uniform Linears and patch projection)
        or "trunc_normal" (timm's ViT std 0.02, jaxssl's transformer default; a deviation kept as
        an option). At `:cpu` the reference's init learns and jaxssl's did not (RESULTS.md 7).
      dtype: compute dtype of the decoder.
    """
    if getattr(backbone, "modality", None) != "image":
        raise ValueError("MAE needs an image jaxssl.models.transformer.Model backbone (config.model.name="
                         "'transformer', modality='image').")
    if pos_embed not in ("sincos", "learned"):
        raise ValueError(f"pos_embed must be 'sincos' or 'learned', got {pos_embed!r}.")
    # The encoder's table too: MAE fixes both (models_mae.py `initialize_weights`).
    backbone = backbone.clone(pos_embed=pos_embed, weight_init=inits.check(weight_init))
    net = Net(backbone, decoder_dim, decoder_depth, decoder_heads, pos_embed, dtype=dtype, weight_init=weight_init)
    p = backbone.patch_size

    def loss_fn(params, model_state, teacher, extra, views, rng, step):
        del teacher, step
        x = base.one_view("MAE", views)
        mask_rng, drop_rng = jax.random.split(rng)
        mask, keep = masking.random_mask(mask_rng, x.shape[0], backbone.num_tokens(x.shape), mask_ratio)
        out = net.apply({"params": params, **model_state}, x, train=True, keep=keep, rngs={"dropout": drop_rng})
        # Loss on the masked patches only (Sec. 3, "similar to BERT").
        loss = jnp.mean(losses.masked_mse(out["prediction"], pixel_targets(x, p, norm_pix_loss), mask))
        metrics = {"h_std": monitors.feature_std(out["features"]), "mask_ratio": jnp.mean(mask)}
        return loss, (model_state, extra, metrics)

    return base.Method(net, loss_fn)


def reconstruct(method: base.Method, variables, images: jax.Array, rng: jax.Array, mask_ratio: float = 0.75,
                norm_pix_loss: bool = True) -> tuple[jax.Array, jax.Array]:
    """(masked input, reconstruction) images (B, H, W, C); visible patches are the original's.

    With `norm_pix_loss` the prediction is de-normalised with each patch's true mean and std
    (as the MAE visualisation demo does).
    """
    b, h, w, _ = images.shape
    p = method.net.backbone.patch_size
    mask, keep = masking.random_mask(rng, b, (h // p) * (w // p), mask_ratio)
    pred = method.net.apply(variables, images, train=False, keep=keep)["prediction"]
    patches = patchify(images, p)
    if norm_pix_loss:
        mu, var = jnp.mean(patches, -1, keepdims=True), jnp.var(patches, -1, keepdims=True)
        pred = pred * jnp.sqrt(var + 1e-6) + mu
    m = mask[..., None]
    return (unpatchify(jnp.where(m, 0.0, patches), p, h, w), unpatchify(jnp.where(m, pred, patches), p, h, w))


def save_reconstructions(path: str, images, masked, recon, mean=None, std=None) -> str:
    """PNG with rows original / masked / reconstruction (first 8 images), de-normalised by mean/std."""
    from PIL import Image
    rows = []
    for a in (images, masked, recon):
        a = np.asarray(a[:8], np.float32)
        if mean is not None:
            a = a * np.asarray(std) + np.asarray(mean)
        rows.append(np.concatenate(list(np.clip(a, 0, 1)), axis=1))
    Image.fromarray((np.concatenate(rows, axis=0) * 255).astype(np.uint8)).save(path)
    return path
