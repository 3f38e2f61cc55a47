"""A modality-agnostic Transformer encoder: one body for images, text and speech (data2vec).

data2vec (Baevski et al., 2022, arXiv:2202.03555, Sec. 3.1): "We use the standard Transformer
architecture with a modality-specific encoding of the input data borrowed from prior work".
`Model(modality=...)` is that: a modality-specific input encoder from `jaxssl.models.encoders`
(ViT patches, token + position embedding, or a wav2vec 2.0 convolutional feature encoder) and
the shared `Body`, a stack of pre-norm `Block`s (also the blocks of `jaxssl.models.vit.Model`), or
post-norm ones (`norm_first=False`, fairseq's data2vec 1.0 text and speech encoders).

Unlike `vit.Model`, every block also returns the output of its feed-forward network before the
last residual connection, which is what data2vec regresses ("we use the output of the
feed-forward network (FFN) prior to the last residual connection in each block as target",
Sec. 3.3); `layer_target="block"` gives the block outputs instead. There is no CLS token:
`features` are the mean over tokens of the final LayerNorm'd sequence (data2vec's linear-probe
pooling for images).

Call: `apply(variables, x, train=bool, mask=None, return_layers=False)` -> (B, D) mean-pooled
features; with `return_layers=True` a dict {"tokens": (B, T, D) final-normed tokens,
"layers": [(B, T, D)] * depth per-block targets}. `mask` (B, T) bool replaces the masked input
embeddings by the learned mask embedding (image and speech; text is masked at the token level);
`keep` (B, T') int instead keeps only those tokens (MAE's encoder on visible patches), and
`keep_valid` (B, T') bool marks padding among them that no token attends to (I-JEPA's context).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxssl.models import encoders, inits


class DropPath(nn.Module):
    """Stochastic depth (Huang et al., 2016): zero a residual branch per sample w.p. `rate`.

    Survivors are scaled by 1 / (1 - rate) so the expectation is unchanged. Identity when
    `deterministic` or `rate == 0`; otherwise draws from the "dropout" rng stream.
    """

    rate: float

    @nn.compact
    def __call__(self, x, deterministic: bool):
        if deterministic or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
        return jnp.where(mask, x / keep, 0.0).astype(x.dtype)


# `attention_impl` values: None, "xla" and "cudnn" go to `jax.nn.dot_product_attention` (its
# `implementation`); "einsum" is the explicit softmax(QK^T / sqrt(C)) V with materialised weights.
ATTENTION_IMPLS = (None, "xla", "cudnn", "einsum")

# `remat` values -> the `jax.checkpoint` policy of each block (what the backward pass may keep from
# the forward instead of recomputing it). "none": no rematerialisation (everything saved).
REMAT_POLICIES = {
    "none": None,
    # Keep only each block's input: the whole block is recomputed in the backward pass
    # (activation memory O(depth x B x T x D) instead of O(depth x B x T x (12 D + heads x T))).
    "block": jax.checkpoint_policies.nothing_saveable,
    # Keep the outputs of the matrix products (qkv, proj, fc1, fc2, attention einsums) and recompute
    # the cheap elementwise work (LayerNorm, GELU, softmax, dropout masks) between them.
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    # Keep only the weight matmuls' outputs (not the batched QK^T / AV products).
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def check_options(attention_impl: str | None, remat: str) -> None:
    """ValueError naming the valid choices for an unknown `attention_impl` or `remat`."""
    if attention_impl not in ATTENTION_IMPLS:
        raise ValueError(f"attention_impl must be one of {ATTENTION_IMPLS}, got {attention_impl!r}.")
    if remat not in REMAT_POLICIES:
        raise ValueError(f"remat must be one of {sorted(REMAT_POLICIES)}, got {remat!r}.")


def block_class(remat: str) -> type[nn.Module]:
    """`Block`, or `Block` under `nn.remat` with the policy named by `remat` (`REMAT_POLICIES`).

    The parameters keep their names and shapes (the module is named by the caller), so checkpoints
    and PyTorch exports do not depend on `remat`; only what the backward pass stores changes.
    """
    check_options(None, remat)
    if remat == "none":
        return Block
    # static_argnums counts `self`: argument 2 is `train` (a Python bool that selects DropPath).
    return nn.remat(Block, policy=REMAT_POLICIES[remat], static_argnums=(2,))


class Attention(nn.Module):
    """Multi-head self-attention over (B, T, D).

    `attention_impl` None / "xla" / "cudnn": `jax.nn.dot_product_attention` with that
    `implementation` (None: JAX picks; jax 0.10-0.11 pick XLA's composition, whose QK^T is
    accumulated in float32 and whose softmax is float32; "cudnn": cuDNN's fused flash attention on
    NVIDIA GPUs, bfloat16/float16 only, head dim a multiple of 8). "einsum": the explicit
    softmax(QK^T / sqrt(C)) V, the same numbers (tests/models/test_attention_impl.py). The
    explicit path also runs, whatever `attention_impl` says, when the "intermediates" collection is
    mutable (`vit.intermediates`, attention maps): only it has the weights (B, heads, T, T) to sow
    as "attention". Parameters are the same for every choice.

    `mask` (B, T) bool, optional: only True tokens are attended to (keys); padding tokens of a
    fixed-size sequence (I-JEPA's common counts) change nothing for the others.
    """

    num_heads: int
    dtype: Any = jnp.float32
    attention_impl: str | None = None
    weight_init: str = "trunc_normal"

    @nn.compact
    def __call__(self, x, mask: jax.Array | None = None):
        b, t, d = x.shape
        if d % self.num_heads:
            raise ValueError(f"ViT width {d} is not divisible by num_heads={self.num_heads}.")
        check_options(self.attention_impl, "none")
        qkv = nn.Dense(3 * d, kernel_init=inits.dense(self.weight_init), dtype=self.dtype, name="qkv")(x)
        q, k, v = jnp.moveaxis(qkv.reshape(b, t, 3, self.num_heads, d // self.num_heads), 2, 0)  # (B, T, H, C)
        scale = 1.0 / (d // self.num_heads) ** 0.5
        key_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, T): broadcast over heads, queries
        if self.attention_impl == "einsum" or self.is_mutable_collection("intermediates"):
            # QK^T accumulated in float32 (as dot_product_attention does), softmax in float32 even
            # under bfloat16 compute: the weights must sum to one.
            logits = jnp.einsum("bqhc,bkhc->bhqk", q, k, preferred_element_type=jnp.float32) * scale
            if key_mask is not None:
                logits = jnp.where(key_mask, logits, jnp.finfo(logits.dtype).min)
            weights = jax.nn.softmax(logits, axis=-1)
            self.sow("intermediates", "attention", weights)
            out = jnp.einsum("bhqk,bkhc->bqhc", weights.astype(v.dtype), v)
        else:
            out = jax.nn.dot_product_attention(q, k, v, scale=scale, mask=key_mask,
                                               implementation=self.attention_impl)
        proj = nn.Dense(d, kernel_init=inits.dense(self.weight_init), dtype=self.dtype, name="proj")
        return proj(out.reshape(b, t, d))


class Block(nn.Module):
    """Pre-norm block: x + DropPath(Attn(LN(x))); x + DropPath(MLP(LN(x))).

    `norm_first=False`: the post-norm block of BERT/RoBERTa and fairseq's data2vec 1.0 text and
    speech encoders, x = LN(x + Attn(x)); x = LN(x + MLP(x)) (fairseq
    `TransformerSentenceEncoderLayer` with `layer_norm_first=False`, `normalize_before: false` in
    examples/data2vec/config/text/pretraining/base.yaml:75), LayerNorm eps 1e-5 as torch's.
    Returns (block output, MLP output before the last residual connection -- data2vec's target,
    fairseq's `layer_result`).
    """

    num_heads: int
    mlp_dim: int
    drop_path: float = 0.0
    norm_first: bool = True
    dtype: Any = jnp.float32
    attention_impl: str | None = None
    weight_init: str = "trunc_normal"

    @nn.compact
    def __call__(self, x, train: bool, mask: jax.Array | None = None):
        eps = 1e-6 if self.norm_first else 1e-5
        norm = lambda name: nn.LayerNorm(epsilon=eps, dtype=self.dtype, name=name)
        pre = norm if self.norm_first else (lambda name: lambda v: v)
        post = (lambda name: lambda v: v) if self.norm_first else norm
        y = Attention(self.num_heads, dtype=self.dtype, attention_impl=self.attention_impl,
                      weight_init=self.weight_init, name="attn")(pre("norm1")(x), mask)
        x = post("norm1")(x + DropPath(self.drop_path, name="drop_path1")(y, deterministic=not train))
        y = nn.Dense(self.mlp_dim, kernel_init=inits.dense(self.weight_init), dtype=self.dtype,
                     name="fc1")(pre("norm2")(x))
        y = nn.Dense(x.shape[-1], kernel_init=inits.dense(self.weight_init), dtype=self.dtype,
                     name="fc2")(nn.gelu(y, approximate=False))
        return post("norm2")(x + DropPath(self.drop_path, name="drop_path2")(y, deterministic=not train)), y


class Body(nn.Module):
    """`depth` pre-norm blocks and a final LayerNorm over (B, T, D) token embeddings.

    Returns (final LayerNorm'd tokens (B, T, D) float32, per-block targets [(B, T, D)] * depth).
    `norm_first=False`: post-norm blocks and no final LayerNorm (the last block already ends in
    one), as fairseq's post-norm encoders. `attention_impl`: `Attention`'s; `remat`: a key of
    `REMAT_POLICIES`, each block rematerialised in the backward pass under that policy.
    """

    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.0
    layer_target: str = "ffn"
    norm_first: bool = True
    dtype: Any = jnp.float32
    attention_impl: str | None = None
    remat: str = "none"
    weight_init: str = "trunc_normal"

    @nn.compact
    def __call__(self, x, train: bool, mask: jax.Array | None = None):
        if self.layer_target not in ("ffn", "block"):
            raise ValueError(f"layer_target must be 'ffn' or 'block', got {self.layer_target!r}.")
        mlp_dim = int(x.shape[-1] * self.mlp_ratio)
        block = block_class(self.remat)
        layers = []
        for i in range(self.depth):
            rate = self.drop_path_rate * i / max(self.depth - 1, 1)
            x, ffn = block(self.num_heads, mlp_dim, rate, self.norm_first, dtype=self.dtype,
                           attention_impl=self.attention_impl, weight_init=self.weight_init,
                           name=f"block{i}")(x, train, mask)
            layers.append((ffn if self.layer_target == "ffn" else x).astype(jnp.float32))
        if self.norm_first:
            x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm")(x)
        return x.astype(jnp.float32), layers


class Model(nn.Module):
    """Input encoder for `modality` + shared `Body`.

    Attributes:
      modality: "image", "text" or "speech".
      width, depth, num_heads, mlp_ratio, drop_path_rate: Transformer sizes (ViT-B: 768, 12, 12).
      layer_target: what `layers` holds per block: "ffn" (data2vec) or "block".
      patch_size, img_size: image patches and the grid the position embedding is stored for.
      pos_embed: image position embedding, "learned" or "sincos" (MAE's fixed table; `encoders.PatchEmbed`).
      vocab_size, max_len: text vocabulary and longest sequence.
      conv_layers: speech feature encoder as (channels, kernel, stride) per layer (wav2vec 2.0).
      pos_conv_kernel, pos_conv_groups: speech convolutional position embedding.
      extractor_mode, pos_conv_depth: speech front-end variant (`encoders.ConvFeatureEncoder`).
      norm_first: pre-norm blocks (True: ViT, data2vec image, MAE) or post-norm (False: fairseq's
        data2vec 1.0 text and speech encoders, `normalize_before: false` / `layer_norm_first`
        False; their configs set it). Post-norm speech also layer-normalises the frame embeddings
        before the first block (wav2vec 2.0 `TransformerEncoder`: `if not layer_norm_first:
        x = self.layer_norm(x)`); text already ends its embedding in a LayerNorm
        (`layernorm_embedding: true`, base.yaml:66).
      dtype: compute dtype.
      attention_impl: None (default), "xla", "cudnn" or "einsum" (`Attention`).
      remat: "none" (default), "block", "dots_saveable" or "dots_with_no_batch_dims_saveable":
        recompute each block in the backward pass under that policy (`REMAT_POLICIES`; the
        trainer sets it from `config.remat`). Same outputs and gradients, less activation memory.
      weight_init: weight initialisation of the Linears and the image patch projection, `inits.INITS`:
        "trunc_normal" (default; timm's ViT, DINO, iBOT, I-JEPA, data2vec) or "xavier_uniform"
        (MAE's reference; `methods.mae` sets it). Text and speech input encoders keep theirs.
    """

    modality: str = "image"
    width: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.0
    layer_target: str = "ffn"
    patch_size: int = 16
    img_size: int = 224
    pos_embed: str = "learned"
    vocab_size: int = 260
    max_len: int = 512
    conv_layers: Sequence[Sequence[int]] = encoders.WAV2VEC2_CONV
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    extractor_mode: str = "default"
    pos_conv_depth: int = 1
    norm_first: bool = True
    dtype: Any = jnp.float32
    attention_impl: str | None = None
    remat: str = "none"
    weight_init: str = "trunc_normal"

    def input_encoder(self) -> nn.Module:
        if self.modality == "image":
            return encoders.PatchEmbed(self.width, self.patch_size, self.img_size, self.pos_embed, dtype=self.dtype,
                                       weight_init=self.weight_init, name="embed")
        if self.modality == "text":
            return encoders.TokenEmbed(self.width, self.vocab_size, self.max_len, dtype=self.dtype, name="embed")
        if self.modality == "speech":
            return encoders.ConvFeatureEncoder(self.width, tuple(map(tuple, self.conv_layers)), self.pos_conv_kernel,
                                               self.pos_conv_groups, self.extractor_mode, self.pos_conv_depth,
                                               dtype=self.dtype, name="embed")
        raise ValueError(f"Unknown modality {self.modality!r}; use 'image', 'text' or 'speech'.")

    def num_tokens(self, input_shape: Sequence[int]) -> int:
        """T, the sequence length the body sees for an input of `input_shape` (batch first)."""
        if self.modality == "image":
            return (input_shape[1] // self.patch_size) * (input_shape[2] // self.patch_size)
        if self.modality == "text":
            return input_shape[1]
        return encoders.num_frames(input_shape[1], self.conv_layers)

    @nn.compact
    def __call__(self, x, train: bool = True, mask: jax.Array | None = None, return_layers: bool = False,
                 keep: jax.Array | None = None, keep_valid: jax.Array | None = None):
        tokens = self.input_encoder()(x, mask=mask, train=train)
        if keep is not None:
            # MAE: the encoder sees only the visible tokens, (B, T_keep) indices after positions.
            tokens = jnp.take_along_axis(tokens, keep[..., None], axis=1)
        if not self.norm_first and self.modality == "speech":
            tokens = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="embed_norm")(tokens)
        tokens, layers = Body(self.depth, self.num_heads, self.mlp_ratio, self.drop_path_rate, self.layer_target,
                              self.norm_first, dtype=self.dtype, attention_impl=self.attention_impl,
                              remat=self.remat, weight_init=self.weight_init, name="body")(tokens, train, keep_valid)
        if return_layers:
            return {"tokens": tokens, "layers": layers}
        return jnp.mean(tokens, axis=1)
