"""Modality-specific input encoders mapping raw inputs to (B, T, D) token embeddings.

Each takes `(x, mask=None, train=...)`; where a learned mask embedding applies (images, speech)
it replaces the masked embeddings before the position information is added, as BEiT/data2vec
(images) and wav2vec 2.0 (speech, after the feature projection) do. The mask embedding is
always created, so variables initialised without a mask accept one later.

* `PatchEmbed` -- ViT patches (arXiv:2010.11929) with a learned 2-D position embedding, or MAE's
  fixed 2-D sine-cosine one (`pos_embed="sincos"`).
* `TokenEmbed` -- token + learned position embedding and LayerNorm (RoBERTa, arXiv:1907.11692).
* `ConvFeatureEncoder` -- wav2vec 2.0's raw-waveform encoder (arXiv:2006.11477 Sec. 2 and
  Appendix B: seven temporal convolutions with 512 channels, strides (5,2,2,2,2,2,2) and kernels
  (10,3,3,3,3,2,2), GELU, group norm on the first layer; then LayerNorm, a projection to the
  model width and a grouped convolutional position embedding of kernel 128 in 16 groups).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxssl.models import inits

_init = inits.TRUNC_NORMAL

# (channels, kernel, stride) per layer: wav2vec 2.0 / data2vec "conv_feature_layers"; total
# stride 320 = 20 ms at 16 kHz, receptive field 400 samples = 25 ms.
WAV2VEC2_CONV = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2


def num_frames(length: int, conv_layers: Sequence[Sequence[int]]) -> int:
    """Frames a VALID-padded conv stack produces from `length` samples."""
    for _, kernel, stride in conv_layers:
        length = (length - kernel) // stride + 1
        if length < 1:
            raise ValueError(f"input too short for the conv feature encoder {tuple(conv_layers)}.")
    return length


def _apply_mask(module: nn.Module, x: jax.Array, mask: jax.Array | None) -> jax.Array:
    token = module.param("mask_embedding", nn.initializers.normal(0.02), (x.shape[-1],))
    if mask is None:
        return x
    if mask.shape != x.shape[:2]:
        raise ValueError(f"mask must have shape (B, T) = {x.shape[:2]}, got {mask.shape}.")
    return jnp.where(mask[..., None], token.astype(x.dtype), x)


def _cubic_matrix(n_in: int, n_out: int, a: float, offset: float) -> np.ndarray:
    """(n_out, n_in) float64 weights of 1-D cubic-convolution resampling, PyTorch's bicubic rule.

    Source coordinate of output i: (i + 0.5) * n_in / (n_out + offset) - 0.5 (align_corners=False
    with `scale_factor = (n_out + offset) / n_in`, as DINO passes it); the four taps at
    floor(src) - 1 .. floor(src) + 2 are clamped to the border; no antialiasing.
    """
    scale = n_in / (n_out + offset)
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        src = (i + 0.5) * scale - 0.5
        base = math.floor(src)
        t = src - base
        for k in range(-1, 3):
            d = abs(t - k)
            w = ((a + 2) * d - (a + 3)) * d * d + 1 if d <= 1 else ((d - 5) * d + 8) * d * a - 4 * a
            m[i, min(max(base + k, 0), n_in - 1)] += w
    return m


def interpolate_pos_embed(pos: jax.Array, grid: tuple[int, int], *, a: float = -0.75,
                          offset: float = 0.1) -> jax.Array:
    """Resize a (1, G_h, G_w, D) position-embedding grid to `grid` as DINO's `interpolate_pos_encoding`.

    facebookresearch/dino vision_transformer.py `interpolate_pos_encoding` (L174 at commit
    7c446df): "w0, h0 = w0 + 0.1, h0 + 0.1" then `nn.functional.interpolate(...,
    scale_factor=(w0 / sqrt(N), h0 / sqrt(N)), mode="bicubic")`: PyTorch's bicubic is Keys' cubic
    convolution with A = -0.75, border-clamped taps and no antialiasing; the 0.1 offset ("to
    avoid floating point error") sets the scale PyTorch maps coordinates with. `jax.image.resize`
    would use A = -0.5 and antialias when shrinking (a different function: it matters when
    importing weights trained with DINO's code). Separable: one (out, in) matrix per axis.
    """
    _, gh, gw, _ = pos.shape
    mh = jnp.asarray(_cubic_matrix(gh, grid[0], a, offset), jnp.float32)
    mw = jnp.asarray(_cubic_matrix(gw, grid[1], a, offset), jnp.float32)
    return jnp.einsum("ih,jw,bhwd->bijd", mh, mw, pos.astype(jnp.float32)).astype(pos.dtype)


def sincos_2d(dim: int, grid_h: int, grid_w: int) -> np.ndarray:
    r"""MAE's fixed 2-D sine-cosine position table, (grid_h * grid_w, dim) float64, row-major patches.

    facebookresearch/mae util/pos_embed.py `get_2d_sincos_pos_embed` / `_from_grid` / `get_1d_...`:
    the first dim/2 channels encode the patch's column, the last dim/2 its row; each half is
    [sin(c w_k), cos(c w_k)] with w_k = 10000^{-k / (dim/4)}, k = 0 .. dim/4 - 1. (The reference
    builds `np.meshgrid(grid_w, grid_h)` and uses its first plane -- the column index -- for its
    "emb_h"; the table is the same.) `dim` must be a multiple of 4.
    """
    if dim % 4:
        raise ValueError(f"a 2-D sin-cos position embedding needs a width divisible by 4, got {dim}.")
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim // 4))
    rows, cols = np.meshgrid(np.arange(grid_h, dtype=np.float64), np.arange(grid_w, dtype=np.float64),
                             indexing="ij")

    def one_d(c):
        out = np.outer(c.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    return np.concatenate([one_d(cols), one_d(rows)], axis=1)


class PatchEmbed(nn.Module):
    """(B, H, W, C) images -> (B, (H/p)(W/p), D) patch embeddings + positions.

    `pos_embed`: "learned" (a parameter for the `img_size` grid, DINO-interpolated for other
    grids) or "sincos" (MAE's fixed table `sincos_2d` of the input's grid; no parameter, as
    MAE's `pos_embed` with `requires_grad=False`). `init`: the projection's initialiser
    (`inits.INITS`: "trunc_normal", or MAE's "xavier_uniform").
    """

    width: int
    patch_size: int
    img_size: int
    pos_embed: str = "learned"
    dtype: Any = jnp.float32
    weight_init: str = "trunc_normal"

    @nn.compact
    def __call__(self, x, mask=None, train: bool = True):
        del train
        p = self.patch_size
        x = nn.Conv(self.width, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype, name="patch",
                    **inits.patch(self.weight_init, p * p * x.shape[-1]))(x.astype(self.dtype))
        b, gh, gw, d = x.shape
        x = _apply_mask(self, x.reshape(b, gh * gw, d), mask)
        if self.pos_embed == "sincos":
            return x + jnp.asarray(sincos_2d(d, gh, gw), jnp.float32)[None].astype(x.dtype)
        if self.pos_embed != "learned":
            raise ValueError(f"pos_embed must be 'learned' or 'sincos', got {self.pos_embed!r}.")
        grid = self.img_size // p
        pos = self.param("pos_embedding", _init, (1, grid, grid, d))
        if (gh, gw) != (grid, grid):
            pos = interpolate_pos_embed(pos, (gh, gw))  # DINO's bicubic, A = -0.75, no antialiasing
        return x + pos.reshape(1, gh * gw, d).astype(x.dtype)


class TokenEmbed(nn.Module):
    """(B, T) int tokens -> (B, T, D): token + learned position embedding, then LayerNorm."""

    width: int
    vocab_size: int
    max_len: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, mask=None, train: bool = True):
        del train
        if mask is not None:
            raise ValueError("Text is masked at the token level (jaxssl.masking.bert_mask); pass mask=None.")
        if x.shape[1] > self.max_len:
            raise ValueError(f"sequence length {x.shape[1]} exceeds max_len={self.max_len}.")
        tok = nn.Embed(self.vocab_size, self.width, embedding_init=_init, dtype=self.dtype, name="tokens")(x)
        pos = self.param("pos_embedding", _init, (self.max_len, self.width))
        return nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="norm")(tok + pos[None, :x.shape[1]].astype(tok.dtype))


class ConvFeatureEncoder(nn.Module):
    """(B, L) raw waveforms -> (B, T, D) frame embeddings (wav2vec 2.0 feature encoder).

    `extractor_mode`: "default" (wav2vec 2.0 base: GroupNorm with one group per channel on the
    first conv only) or "layer_norm" (a LayerNorm over channels after every conv, fairseq
    `ConvFeatureExtractionModel(mode="layer_norm")`; data2vec's audio recipe,
    examples/data2vec/config/audio/pretraining/base_librispeech.yaml:57 `extractor_mode: layer_norm`).
    `pos_conv_depth`: 1 = wav2vec 2.0's single grouped conv of `pos_conv_kernel` + GELU; n > 1 =
    data2vec_audio's stack of n grouped convs of kernel max(3, pos_conv_kernel // n), each followed
    by a parameter-free LayerNorm and GELU (base_librispeech.yaml:73-74 `pos_conv_depth: 5`,
    `conv_pos: 95`). Either is added to the projected features as a residual.
    """

    width: int
    conv_layers: Sequence[Sequence[int]] = WAV2VEC2_CONV
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    extractor_mode: str = "default"
    pos_conv_depth: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, mask=None, train: bool = True):
        del train
        if x.ndim != 2:
            raise ValueError(f"ConvFeatureEncoder expects (B, L) waveforms, got shape {x.shape}.")
        if self.extractor_mode not in ("default", "layer_norm"):
            raise ValueError(f"extractor_mode must be 'default' or 'layer_norm', got {self.extractor_mode!r}.")
        x = x.astype(self.dtype)[..., None]
        for i, (ch, k, s) in enumerate(self.conv_layers):
            x = nn.Conv(ch, (k,), strides=(s,), padding="VALID", use_bias=False, dtype=self.dtype, name=f"conv{i}")(x)
            if self.extractor_mode == "layer_norm":
                x = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name=f"conv{i}_norm")(x)
            elif i == 0:
                # wav2vec 2.0 "default" mode: GroupNorm with one group per channel on the first layer.
                x = nn.GroupNorm(num_groups=ch, epsilon=1e-5, dtype=self.dtype, name="conv0_norm")(x)
            x = nn.gelu(x, approximate=False)
        x = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="feature_norm")(x)
        x = nn.Dense(self.width, dtype=self.dtype, name="project")(x)
        x = _apply_mask(self, x, mask)
        depth = max(int(self.pos_conv_depth), 1)
        k = self.pos_conv_kernel if depth == 1 else max(3, self.pos_conv_kernel // depth)
        pos = x
        for i in range(depth):
            name = "pos_conv" if depth == 1 else f"pos_conv{i}"
            pos = nn.Conv(self.width, (k,), padding=[(k // 2, k // 2)], feature_group_count=self.pos_conv_groups,
                          dtype=self.dtype, name=name)(pos)
            pos = pos[:, :x.shape[1]]  # fairseq SamePad: drop the extra frame of an even kernel
            if depth > 1:
                pos = nn.LayerNorm(epsilon=1e-5, use_bias=False, use_scale=False, dtype=self.dtype)(pos)
            pos = nn.gelu(pos, approximate=False)
        return x + pos
