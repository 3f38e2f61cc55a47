"""data2vec (Baevski et al., 2022, arXiv:2202.03555): regress the teacher's averaged layers at masked positions.

"We first encode a masked version of the training sample (model in student mode) and then
construct training targets by encoding the unmasked version of the input sample with the same
model but when parameterized as an exponentially moving average of the model weights (model in
teacher mode). The target representations encode all of the information in the training
sample and the learning task is for the student to predict these representations given a
partial view of the input" (Sec. 3). One method for three modalities: the backbone is
`jaxssl.models.transformer.Model(modality=...)`, a modality-specific input encoder and one
shared Transformer body; only the masking differs:

* image: BEiT block-wise masking of ~60% of the patches (`masking.random_block_mask`), with the
  learned mask embedding;
* text: RoBERTa dynamic masking, 15% of the tokens, 80/10/10 (`masking.bert_mask`); `views` is
  `[int tokens (B, T)]`;
* speech: wav2vec 2.0 span masking p = 0.65, M = 10 over the conv-encoder frames
  (`masking.span_mask`); `views` is `[float waveforms (B, L)]`.

Targets (Sec. 3.3, Eq. 1): the teacher's top-K per-block FFN outputs, each normalised
(`target_norm`: parameter-less instance norm over time for speech and -- as in data2vec 2.0 --
images, layer norm for text), averaged, optionally layer-normalised again (`final_norm`,
data2vec 2.0's `layer_norm_targets`). Loss (Eq. 2): smooth-L1 with `beta` (beta = 0: squared
error), summed over channels, averaged over the predicted positions of the global batch, times
`loss_scale`. Defaults per modality follow fairseq's released v1 configs: text beta = 4, scale 1,
regressed only where the student's input holds <mask> (`text_targets="mask_token"`); speech
beta = 0, scale 1/sqrt(D); image beta = 2, scale 1/sqrt(D) (see `make`). Teacher momentum: linear from 0.999 to 0.9999
over `ema_anneal_steps`, then constant (fairseq `ema_decay`, `ema_end_decay`,
`ema_anneal_end_step`). `ema_transformer_only` (fairseq v1's default for speech and text) runs
the teacher with the student's current input encoder and the EMA body.

data2vec 2.0 options (arXiv:2212.07525): `clone_batch` M masked copies of every sample share
one teacher pass ("we reuse the teacher representation for multiple masked versions of the
training sample", Sec. 2); `decoder` adds a light convolutional decoder (Sec. 2, "a
lightweight decoder network consisting of D convolutions, each followed by layer
normalization, a GELU activation function, and a residual connection") on the student's output
before the regression head; `student_visible_only` (image and speech) is data2vec 2.0's
efficient student: "we do not encode masked timesteps [...] similar to MAE" (Sec. 2) -- the
student encoder sees only the visible tokens (every sample masked to the same count,
`masking.with_count`), a learned mask token fills the masked positions before the decoder
(which it therefore needs; fairseq fills them with Gaussian noise instead), and the teacher
still encodes the full, unmasked input. Without it the student encodes the mask embeddings (v1).

Remaining differences from fairseq's data2vec 1.0 text and speech models (issue 18), and why:
* The bodies are post-norm with a 2-layer text head and the audio front-end of the released
  configs (set in configs/data2vec_{text,speech}_*.py: `norm_first=False`,
  `extractor_mode="layer_norm"`, `pos_conv_depth=5`), but `jaxssl.models.transformer` has no
  dropout (fairseq: `dropout`/`attention_dropout` 0.1) and no layer drop (speech
  `encoder_layerdrop: 0.05`, base_librispeech.yaml:58): the shared body carries only stochastic
  depth (`drop_path_rate`); adding dropout is a body change left for later, and these short
  recipes are not regularisation-bound.
* Text: bytes (`jaxssl.data.text`) instead of a 50k BPE vocabulary, no BOS/EOS tokens, and the
  paper's 15% 80/10/10 masking rather than the yaml's 35% spans of 4 (see `text_targets`); the
  loss covers the <mask> positions as fairseq's does.
* Speech: FSDD clips at 16 kHz instead of LibriSpeech crops of 2-20 s, and no padding masks
  (every clip in a batch has the same length).
* Speech `ema_layers_only: true` (base_librispeech.yaml) EMAs the transformer blocks only: the
  positional convs and the encoder's input LayerNorm are the student's. Here
  `ema_transformer_only` shares the whole input encoder (`embed`, positional convs included), but
  the post-norm input LayerNorm (`embed_norm`) is part of the EMA'd body: one LayerNorm's
  parameters differ, kept simple because `embed_norm` belongs to the body's module.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxssl import losses, masking, monitors
from jaxssl.methods import base


def _norm(x: jax.Array, axis: int, eps: float) -> jax.Array:
    mu = jnp.mean(x, axis=axis, keepdims=True)
    return (x - mu) * jax.lax.rsqrt(jnp.var(x, axis=axis, keepdims=True) + eps)


def layer_targets(layers, top_k: int, target_norm: str = "instance", final_norm: bool = False,
                  eps: float = 1e-5) -> jax.Array:
    r"""data2vec targets: the average of the top-K normalised layer outputs (Eq. 1).

    .. math:: y_t = \frac{1}{K} \sum_{l=L-K+1}^{L} \hat a_t^l

    where :math:`\hat a^l` is layer l normalised without parameters: "instance" standardises each
    channel over time per sample (F.instance_norm on (B, D, T)), "layer" each token over its
    channels, "none" leaves it; `final_norm` layer-normalises the average.

    Args:
      layers: sequence of L arrays (B, T, D), first layer first.
      top_k: K <= L.
      target_norm: "instance", "layer" or "none".
      final_norm: layer-normalise the average.
      eps: variance epsilon (PyTorch's 1e-5).

    Returns:
      (B, T, D) float32 targets.
    """
    if not 1 <= top_k <= len(layers):
        raise ValueError(f"top_k must be in [1, {len(layers)}] (the depth), got {top_k}.")
    axis = {"instance": 1, "layer": -1, "none": None}
    if target_norm not in axis:
        raise ValueError(f"target_norm must be one of {sorted(axis)}, got {target_norm!r}.")
    top = [l.astype(jnp.float32) for l in layers[-top_k:]]
    if axis[target_norm] is not None:
        top = [_norm(l, axis[target_norm], eps) for l in top]
    y = sum(top) / top_k
    return _norm(y, -1, eps) if final_norm else y


def masked_loss(prediction: jax.Array, targets: jax.Array, mask: jax.Array, beta: float) -> jax.Array:
    """Smooth-L1 (`beta`; 0 = squared error) summed over channels, averaged over the masked positions.

    prediction, targets: (B, T, D); mask: (B, T) bool, True = predicted. Positions outside the
    mask do not count (fairseq data2vec: `x = x[mask]`, loss summed / sample_size). Returns a scalar.
    """
    per_token = losses.smooth_l1(prediction, targets, beta)  # (B, T)
    m = mask.astype(jnp.float32)
    # Mean over the masked positions of the global batch.
    return jnp.sum(per_token * m) / jnp.maximum(jnp.sum(m), 1.0)


def student_mask(rng: jax.Array, backbone: nn.Module, x: jax.Array, *, mask_ratio: float = 0.6,
                 min_mask_patches: int = 16, mask_prob: float = 0.65, mask_span: int = 10,
                 visible_only: bool = False) -> tuple[jax.Array, jax.Array | None]:
    """The student's mask for image or speech input `x`: ((B, T) bool, True = predicted; keep ids or None).

    Image: BEiT block masking of `mask_ratio`; speech: span masks (p = `mask_prob`, M = `mask_span`).
    `visible_only` (data2vec 2.0): every sample gets exactly round(fraction T) masked tokens
    (fraction: `mask_ratio`, or the span masks' expected 1 - (1 - p / M)^M) and the (B, T_keep)
    indices of its visible tokens are returned too.
    """
    b, t = x.shape[0], backbone.num_tokens(x.shape)
    if backbone.modality == "image":
        grid = (x.shape[1] // backbone.patch_size, x.shape[2] // backbone.patch_size)
        mask = masking.random_block_mask(rng, b, grid, ratio=(mask_ratio, mask_ratio),
                                     min_patches=min(min_mask_patches, max(1, int(mask_ratio * t) // 2)))
        fraction = mask_ratio
    else:
        mask = masking.span_mask(rng, b, t, prob=mask_prob, span=mask_span)
        fraction = 1.0 - (1.0 - mask_prob / mask_span) ** mask_span
    if not visible_only:
        return mask, None
    return masking.with_count(jax.random.fold_in(rng, 1), mask, min(max(int(round(fraction * t)), 1), t - 1))


class ConvDecoder(nn.Module):
    """data2vec 2.0's light decoder: `layers` x (conv, LayerNorm, GELU, residual after the first), then Dense(out).

    1-D over the token sequence, or 2-D over the square patch grid when `two_d`.
    """

    dim: int
    out_dim: int
    kernel: int = 3
    layers: int = 2
    groups: int = 16
    two_d: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        b, t, _ = x.shape
        if self.two_d:
            side = math.isqrt(t)
            if side * side != t:
                raise ValueError(f"a 2-D decoder needs a square patch grid, got {t} tokens.")
            x = x.reshape(b, side, side, -1)
        ksize = (self.kernel,) * (2 if self.two_d else 1)
        for i in range(self.layers):
            y = nn.Conv(self.dim, ksize, padding="SAME", feature_group_count=self.groups if i else 1,
                        dtype=self.dtype, name=f"conv{i}")(x)
            y = nn.gelu(nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name=f"norm{i}")(y), approximate=False)
            x = x + y if i else y
        return nn.Dense(self.out_dim, dtype=self.dtype, name="proj")(x.reshape(b, t, -1))


class Net(nn.Module):
    """Backbone (returning layers) -> [ConvDecoder] -> linear regression head ("final_proj").

    `keep` (B, T_keep) runs the backbone on those tokens only and puts the learned `mask_token`
    (created when `visible_only`) at the others before the decoder (data2vec 2.0).
    """

    backbone: nn.Module
    decoder: ConvDecoder | None = None
    visible_only: bool = False
    head_layers: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = True, mask: jax.Array | None = None, keep: jax.Array | None = None):
        token = None
        if self.visible_only:
            token = self.param("mask_token", nn.initializers.normal(0.02), (self.backbone.width,))
        if keep is not None:
            if token is None:
                raise ValueError("keep= needs Net(visible_only=True) (its mask token).")
            out = self.backbone(x, train=train, keep=keep, return_layers=True)
            y = masking.scatter_visible(out["tokens"], keep, token, self.backbone.num_tokens(x.shape))
        else:
            out = self.backbone(x, train=train, mask=mask, return_layers=True)
            y = out["tokens"]
        if self.decoder is not None:
            y = self.decoder(y)
        d = y.shape[-1]
        # fairseq data2vec_text.py regression head: (head_layers - 1) x [Linear -> GELU], the first
        # widening to 2D, then Linear(D) ("head").
        for i in range(self.head_layers - 1):
            y = nn.gelu(nn.Dense(2 * d, dtype=self.dtype, name=f"head_hidden{i}")(y), approximate=False)
        pred = nn.Dense(d, dtype=self.dtype, name="head")(y).astype(jnp.float32)
        return {"prediction": pred, "layers": out["layers"], "features": jnp.mean(out["tokens"], axis=1)}

    def features(self, x, train: bool = False):
        return self.backbone(x, train=train)


TEXT_TARGETS = ("mask_token", "selected")


def make(*, backbone: nn.Module, top_k: int = 8, target_norm: str | None = None, final_norm: bool = False,
         beta: float | None = None, loss_scale: float | None = None, text_targets: str = "mask_token",
         mask_ratio: float = 0.6,
         min_mask_patches: int = 16, mask_prob: float | None = None, mask_span: int = 10,
         mask_id: int = 259, num_tokens: int = 256, clone_batch: int = 1, decoder: dict | None = None,
         base_momentum: float = 0.999, final_momentum: float = 0.9999, ema_anneal_steps: int = 30_000,
         ema_transformer_only: bool = False, student_visible_only: bool = False, head_layers: int | None = None,
         dtype=jnp.float32) -> base.Method:
    """data2vec for `backbone.modality` in {"image", "text", "speech"}.

    Args:
      backbone: a `jaxssl.models.transformer.Model`.
      top_k: K, the teacher layers averaged (paper: 6 image, 10 text, 8 speech).
      target_norm: per-layer normalisation; None = "layer" for text, "instance" otherwise.
      final_norm: layer-normalise the averaged target (data2vec 2.0).
      beta: smooth-L1 beta, 0 = squared error; None = the released fairseq v1 value per modality:
        text 4 (fairseq examples/data2vec/config/text/pretraining/base.yaml:60 `loss_beta: 4`),
        speech 0 (examples/data2vec/config/audio/pretraining/base_librispeech.yaml:67 `loss_beta: 0`;
        the paper's Sec. 4.2 text says 0.25 -- the released recipe is followed), image 2 (paper Sec. 4.1).
      loss_scale: multiplies the loss; None = 1 for text (text/pretraining/base.yaml:56
        `loss_scale: 1`), else 1/sqrt(D) (base_librispeech.yaml:68 `loss_scale: null`, which
        fairseq's data2vec models turn into 1/sqrt(D)).
      text_targets: which text positions are regressed. "mask_token" (default, fairseq
        examples/data2vec/models/data2vec_text.py `masked_indices = src_tokens.eq(self.mask_idx)`):
        only the positions whose student input is <mask>, not the selected tokens kept or
        replaced at random. "selected": every selected token, as BERT's MLM loss (a deliberate
        deviation kept as an option). The masking itself is the paper's (Sec. 4.3: 15%, 80/10/10);
        the released yaml instead masks 35% in spans of 4 with no random/kept tokens
        (base.yaml:23-26) -- set mask_prob accordingly to approach it.
      mask_ratio, min_mask_patches: image block masking (60%, BEiT's minimum block of 16 patches).
      mask_prob: text selection probability (0.15) or speech span-start probability (0.65); None = those.
      mask_span: speech span length M (10).
      mask_id, num_tokens: text <mask> id and the ordinary vocabulary size for random replacements
        (the byte tokenizer of `jaxssl.data.text`: 256 bytes, <mask> = 259).
      clone_batch: masked copies per sample sharing one teacher pass (data2vec 2.0; 1 = v1).
      decoder: None, or ConvDecoder kwargs (dim, kernel, layers, groups) for the data2vec 2.0 decoder.
      base_momentum, final_momentum, ema_anneal_steps: the teacher's linear EMA schedule.
      ema_transformer_only: the teacher uses the student's current input encoder.
      student_visible_only: data2vec 2.0's student that encodes only the visible tokens (image and
        speech; needs `decoder`). Image: exactly round(mask_ratio T) masked per sample; speech: the
        span masks' expected fraction 1 - (1 - p / M)^M.
      head_layers: layers of the regression head; None = 2 for text (fairseq
        examples/data2vec/config/text/pretraining/base.yaml:53 `head_layers: 2`: Linear(D, 2D) ->
        GELU -> Linear(2D, D)), 1 otherwise (data2vec_audio.py's `final_proj`, one Linear).
      dtype: compute dtype of the head/decoder.
    """
    modality = getattr(backbone, "modality", None)
    if modality not in ("image", "text", "speech"):
        raise ValueError("data2vec needs a jaxssl.models.transformer.Model backbone (config.model.name="
                         f"'transformer'); got {type(backbone).__name__} with modality {modality!r}.")
    if clone_batch < 1:
        raise ValueError(f"clone_batch must be >= 1, got {clone_batch}.")
    if student_visible_only and (modality == "text" or decoder is None):
        raise ValueError("student_visible_only needs modality 'image' or 'speech' (text is corrupted token by "
                         f"token, not dropped; got {modality!r}) and a decoder (e.g. decoder=dict(dim=..., "
                         f"groups=...)); got decoder={decoder!r}.")
    if text_targets not in TEXT_TARGETS:
        raise ValueError(f"text_targets must be one of {TEXT_TARGETS}, got {text_targets!r}.")
    target_norm = target_norm or ("layer" if modality == "text" else "instance")
    # fairseq text/pretraining/base.yaml:60 (4), audio/pretraining/base_librispeech.yaml:67 (0).
    beta = {"image": 2.0, "text": 4.0, "speech": 0.0}[modality] if beta is None else beta
    # fairseq text/pretraining/base.yaml:56 (`loss_scale: 1`); None -> 1/sqrt(D) below.
    loss_scale = (1.0 if modality == "text" else None) if loss_scale is None else loss_scale
    mask_prob = {"image": None, "text": 0.15, "speech": 0.65}[modality] if mask_prob is None else mask_prob
    dec = None
    if decoder is not None:
        dec = ConvDecoder(**{"dim": backbone.width, **dict(decoder)}, out_dim=backbone.width,
                          two_d=modality == "image", dtype=dtype)
    head_layers = (2 if modality == "text" else 1) if head_layers is None else head_layers
    if head_layers < 1:
        raise ValueError(f"head_layers must be >= 1, got {head_layers}.")
    net = Net(backbone, dec, visible_only=student_visible_only, head_layers=head_layers, dtype=dtype)

    def corrupt(rng, x):
        """(student input, mask (B, T) of predicted positions, mask passed to the net, keep ids or None)."""
        if modality == "text":
            tokens, selected = masking.bert_mask(rng, x, mask_id=mask_id, vocab_size=num_tokens, prob=mask_prob)
            if text_targets == "mask_token":
                # fairseq data2vec_text.py: the loss covers `src_tokens.eq(mask_idx)` only.
                selected = selected & (tokens == mask_id)
            return tokens, selected, None, None
        mask, keep = student_mask(rng, backbone, x, mask_ratio=mask_ratio, min_mask_patches=min_mask_patches,
                                  mask_prob=mask_prob, mask_span=mask_span, visible_only=student_visible_only)
        # v1: mask embeddings replace the masked tokens; v2: the masked tokens are dropped (keep).
        return x, mask, (mask if keep is None else None), keep

    def loss_fn(params, model_state, teacher, extra, views, rng, step):
        del step
        x = base.one_view("data2vec", views)
        mask_rng, drop_rng = jax.random.split(rng)
        t_params = teacher["params"]
        if ema_transformer_only:
            t_params = {**t_params, "backbone": {**t_params["backbone"], "embed": params["backbone"]["embed"]}}
        # Teacher mode: the EMA weights (eval mode, no dropout) encode the UNMASKED input once.
        t_out = net.apply({**teacher, "params": t_params}, x, train=False)
        # stop_gradient: the targets are constants of the student's update. The step differentiates
        # `params` only, but with ema_transformer_only the teacher reads the student's input
        # encoder, whose gradient must not flow through the targets.
        y = jax.lax.stop_gradient(layer_targets(t_out["layers"], top_k, target_norm, final_norm))
        # data2vec 2.0 clone_batch: M masked copies share the one teacher pass above.
        xs = jnp.concatenate([x] * clone_batch) if clone_batch > 1 else x
        ys = jnp.concatenate([y] * clone_batch) if clone_batch > 1 else y
        x_in, mask, net_mask, keep = corrupt(mask_rng, xs)
        out = net.apply({"params": params, **model_state}, x_in, train=True, mask=net_mask, keep=keep,
                        rngs={"dropout": drop_rng})
        scale = 1.0 / math.sqrt(ys.shape[-1]) if loss_scale is None else loss_scale
        loss = masked_loss(out["prediction"], ys, mask, beta) * scale
        m = mask.astype(jnp.float32)
        metrics = {"mask_ratio": jnp.mean(m), "h_std": monitors.feature_std(out["features"]),
                   "target_std": monitors.feature_std(y.reshape(-1, y.shape[-1])),
                   "pred_std": monitors.feature_std(out["prediction"].reshape(-1, y.shape[-1])),
                   # Tokens the student encoder saw per sample: T (v1) or T_keep (student_visible_only).
                   "student_tokens": jnp.asarray(m.shape[1] if keep is None else keep.shape[1], jnp.float32)}
        return loss, (model_state, extra, metrics)

    momentum = optax.linear_schedule(base_momentum, final_momentum, max(ema_anneal_steps, 1))
    return base.Method(net, loss_fn, teacher_momentum=momentum)
