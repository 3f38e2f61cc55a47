"""Vision Transformer backbones (Dosovitskiy et al., 2021, arXiv:2010.11929) in flax.linen.

`Model(variant="S/16")` maps images (B, H, W, 3) to the final-LayerNorm'd CLS token (B, D), like
the ResNet backbone returns pooled features; `return_tokens=True` returns all tokens
(B, 1 + N, D) with the CLS token first. The blocks are pre-norm, "x + DropPath(MHSA(LN(x)))",
"x + DropPath(MLP(LN(x)))", as in DeiT and DINO (arXiv:2104.14294, whose `vision_transformer.py`
this follows: LayerNorm eps 1e-6, GELU MLP of ratio 4, truncated-normal(0.02) init).

Any input size works: the learned position embedding is stored for the grid of `img_size` and
bicubically resized to the grid of the input when they differ, exactly as DINO's
`interpolate_pos_encoding` (PyTorch's bicubic, A = -0.75, no antialiasing; `encoders.interpolate_pos_embed`),
so multi-crop (224 + 96, or 32 + 16 on CIFAR) runs one parameter set at every resolution.

Optional token mask (iBOT arXiv:2111.07832, data2vec arXiv:2202.03555): `mask` (B, N) bool replaces
the embeddings of masked patches by a learned `mask_token` (created when `mask_token=True`) before
the position embedding is added.

Optional token dropping (MSN arXiv:2204.07141): `keep` (B, N') int patch indices keeps only those
patch tokens (and the CLS token), after the position embedding.

Attention runs through `jax.nn.dot_product_attention` (`attention_impl`, see
`transformer.Attention`). Introspection without extra outputs: with a mutable "intermediates"
collection (`apply(..., mutable=["intermediates"])`, see `intermediates`) each block takes the
explicit path and sows its attention weights (B, heads, 1+N, 1+N) and its output tokens; otherwise
nothing is sown and the weights are never materialised, so training pays nothing for it.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# The blocks are the shared pre-norm blocks of `jaxssl.models.transformer` (re-exported here).
from jaxssl.models import encoders, inits, transformer
from jaxssl.models.transformer import Attention, Block, DropPath  # noqa: F401

# name -> (width D, depth, heads); MLP width is 4 D. DeiT (arXiv:2012.12877) Table 1 / ViT Table 1.
VARIANTS = {"Ti": (192, 12, 3), "S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16)}

_init = inits.TRUNC_NORMAL


def parse_variant(variant: str) -> tuple[int, int, int, int]:
    """"S/16" -> (width, depth, heads, patch). Raises ValueError with the valid names."""
    name, _, patch = variant.partition("/")
    if name not in VARIANTS or not patch.isdigit():
        raise ValueError(f"Unknown ViT variant {variant!r}; use '<size>/<patch>' with size in "
                         f"{sorted(VARIANTS)}, e.g. 'S/16'.")
    return (*VARIANTS[name], int(patch))


class Model(nn.Module):
    """ViT backbone.

    Attributes:
      variant: "<size>/<patch>", size in Ti, S, B, L (e.g. "S/16").
      patch_size: overrides the variant's patch size (e.g. 4 for 32x32 CIFAR images).
      width, depth, num_heads, mlp_ratio: override the variant's sizes (tiny test models).
      img_size: the image size whose patch grid the position embedding is stored for; other
        sizes are bicubically interpolated.
      drop_path_rate: stochastic depth rate of the last block, linearly increasing from 0 at the
        first (DeiT / DINO `drop_path_rate`, 0.1 for ViT-S/16 in DINO); active only when train.
      mask_token: create the learned mask token used by `mask` (iBOT, data2vec).
      dtype: compute dtype; parameters stay float32.
      attention_impl: None (default: `jax.nn.dot_product_attention`, JAX picks), "xla", "cudnn"
        (cuDNN flash attention, GPU and bfloat16 only) or "einsum" (explicit weights); see
        `transformer.Attention`. `intermediates` always takes the explicit path.
      remat: "none" (default), "block", "dots_saveable" or "dots_with_no_batch_dims_saveable":
        per-block `jax.checkpoint` policy (`transformer.REMAT_POLICIES`; the trainer sets it from
        `config.remat`). Same outputs and gradients, less activation memory.

    Call: `apply(variables, x (B,H,W,3), train=bool, mask=None | (B, N) bool,
    return_tokens=False, keep=None | (B, N') int)` -> (B, D) CLS feature, or (B, 1+N, D) tokens with
    `return_tokens` (1+N' with `keep`), float32.
    With `train=True` and `drop_path_rate > 0`, pass `rngs={"dropout": key}`.
    """

    variant: str = "S/16"
    patch_size: int | None = None
    width: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    mlp_ratio: float = 4.0
    img_size: int = 224
    drop_path_rate: float = 0.0
    mask_token: bool = False
    dtype: Any = jnp.float32
    attention_impl: str | None = None
    remat: str = "none"

    def dims(self) -> tuple[int, int, int, int]:
        """(width, depth, heads, patch) after overrides."""
        w, d, h, p = parse_variant(self.variant)
        return (self.width or w, self.depth or d, self.num_heads or h, self.patch_size or p)

    @nn.compact
    def __call__(self, x, train: bool = True, mask: jax.Array | None = None, return_tokens: bool = False,
                 keep: jax.Array | None = None):
        width, depth, heads, patch = self.dims()
        if self.img_size < patch:
            raise ValueError(f"img_size {self.img_size} is smaller than the patch size {patch}.")
        x = nn.Conv(width, (patch, patch), strides=(patch, patch), padding="VALID", kernel_init=_init,
                    dtype=self.dtype, name="patch_embed")(x.astype(self.dtype))
        b, gh, gw, _ = x.shape
        x = x.reshape(b, gh * gw, width)
        if mask is not None:
            if not self.mask_token:
                raise ValueError("A token mask was given but the ViT has no mask token; build it with "
                                 "mask_token=True.")
            if mask.shape != (b, gh * gw):
                raise ValueError(f"mask must have shape (B, N) = {(b, gh * gw)}, got {mask.shape}.")
        if self.mask_token:
            token = self.param("mask_embedding", nn.initializers.zeros, (1, 1, width))
            if mask is not None:
                x = jnp.where(mask[..., None], token.astype(x.dtype), x)

        grid = self.img_size // patch
        pos = self.param("pos_embedding", _init, (1, grid, grid, width))
        if (gh, gw) != (grid, grid):
            # DINO interpolates the learned grid bicubically (A = -0.75, no antialiasing) for crops
            # of another size (encoders.interpolate_pos_embed).
            pos = encoders.interpolate_pos_embed(pos, (gh, gw))
        x = x + pos.reshape(1, gh * gw, width).astype(x.dtype)
        if keep is not None:
            # MSN's patch dropping: only the kept patch tokens (after their position embedding) go
            # through the blocks, with the CLS token (facebookresearch/msn src/deit.py `patch_drop`).
            x = jnp.take_along_axis(x, keep[..., None], axis=1)
        cls = self.param("cls_token", _init, (1, 1, width))
        # The CLS token has its own learned embedding, so it needs no position term.
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (b, 1, width)), x], axis=1)

        mlp_dim = int(width * self.mlp_ratio)
        block = transformer.block_class(self.remat)
        for i in range(depth):
            rate = self.drop_path_rate * i / max(depth - 1, 1)
            x, _ = block(heads, mlp_dim, rate, dtype=self.dtype, attention_impl=self.attention_impl,
                         name=f"block{i}")(x, train)
            self.sow("intermediates", f"out{i}", x)
        x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm")(x).astype(jnp.float32)
        return x if return_tokens else x[:, 0]


def intermediates(model: Model, variables, x, **kw) -> dict[str, list[jax.Array]]:
    """Attention weights and block outputs of one forward pass (eval mode unless `train` is given).

    Returns {"attention": [(B, heads, 1+N, 1+N)] * depth, "layers": [(B, 1+N, D)] * depth}: the
    softmax weights of every block (each row sums to one over the keys) and every block's output
    tokens before the final LayerNorm (the per-layer targets of data2vec).
    """
    kw.setdefault("train", False)
    _, state = model.apply(variables, x, mutable=["intermediates"], **kw)
    inter = state["intermediates"]
    depth = model.dims()[1]
    return {"attention": [inter[f"block{i}"]["attn"]["attention"][0] for i in range(depth)],
            "layers": [inter[f"out{i}"][0] for i in range(depth)]}
