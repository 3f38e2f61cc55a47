"""Mask generators for masked prediction, all on device, pure and deterministic given the key.

* `random_block_mask` (BEiT/iBOT block-wise image masks) lives in `jaxssl.ops` and is reused by
  data2vec image;
* `random_mask` -- a uniformly random fixed-size subset per sample (MAE, arXiv:2111.06377), with
  the permutation needed to keep only the visible tokens;
* `with_count` -- any mask made to hold exactly n masked tokens per sample, with the indices of
  the visible ones (data2vec 2.0 `require_same_masks`: an encoder that drops the masked tokens
  needs the same number in every sample), and `scatter_visible`, its inverse for decoders;
* `span_mask` -- wav2vec 2.0 / data2vec speech span masking (arXiv:2006.11477 Sec. 3.1:
  "we randomly sample without replacement a certain proportion p of all time steps to be
  starting indices and then mask the subsequent M consecutive time steps");
* `bert_mask` -- BERT/RoBERTa dynamic token corruption (arXiv:1907.11692 Sec. 3.1: 15% of the
  tokens are selected; of those 80% become <mask>, 10% a random token, 10% stay unchanged),
  re-drawn every step ("dynamic masking").

Sample i of every generator uses `jax.random.split(rng, batch)[i]` (or one key for the batch),
so the masks depend only on the key, never on the device layout.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def random_mask(rng: jax.Array, batch: int, num_tokens: int, ratio: float) -> tuple[jax.Array, jax.Array]:
    """A uniformly random subset of exactly round(ratio * N) tokens per sample, masked.

    MAE's per-sample shuffle ("random sampling [...] without replacement, following a uniform
    distribution", Sec. 3): the tokens are sorted by i.i.d. uniform noise, the first
    N - round(ratio N) are kept.

    Args:
      rng: PRNG key.
      batch: B.
      num_tokens: N.
      ratio: masking ratio in [0, 1).

    Returns:
      mask: (B, N) bool, True = masked; exactly round(ratio N) per row.
      ids_keep: (B, N - round(ratio N)) int32 indices of the visible tokens in increasing order
        (so `take_along_axis(x, ids_keep[..., None], 1)` keeps the token order).
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"masking ratio must be in [0, 1), got {ratio}.")
    num_masked = int(round(ratio * num_tokens))
    noise = jax.random.uniform(rng, (batch, num_tokens))
    order = jnp.argsort(noise, axis=1)
    ids_keep = jnp.sort(order[:, num_masked:], axis=1).astype(jnp.int32)
    mask = jnp.ones((batch, num_tokens), bool).at[jnp.arange(batch)[:, None], ids_keep].set(False)
    return mask, ids_keep


def with_count(rng: jax.Array, mask: jax.Array, num_masked: int) -> tuple[jax.Array, jax.Array]:
    """`mask` (B, N) changed as little as possible to exactly `num_masked` True per row.

    Rows with more masked tokens unmask a uniformly random subset of them; rows with fewer mask
    uniformly random further tokens (data2vec 2.0, arXiv:2212.07525, keeps every sample's count
    equal the same way, `require_same_masks`). Every originally masked token stays masked when
    the row had at most `num_masked`.

    Args:
      rng: PRNG key.
      mask: (B, N) bool, True = masked.
      num_masked: n in [0, N).

    Returns:
      mask: (B, N) bool with exactly n True per row.
      ids_keep: (B, N - n) int32 indices of the visible tokens in increasing order.
    """
    b, n_tok = mask.shape
    if not 0 <= num_masked < n_tok:
        raise ValueError(f"num_masked must be in [0, {n_tok}), got {num_masked}.")
    # Masked tokens score in [2, 3), the others in [0, 1): the top n are the masked ones first.
    score = 2.0 * mask + jax.random.uniform(rng, mask.shape)
    top = jnp.argsort(-score, axis=1)[:, :num_masked]
    mask = jnp.zeros((b, n_tok), bool).at[jnp.arange(b)[:, None], top].set(True)
    ids_keep = jnp.argsort(mask, axis=1, stable=True)[:, :n_tok - num_masked].astype(jnp.int32)
    return mask, ids_keep


def scatter_visible(visible: jax.Array, ids_keep: jax.Array, fill: jax.Array, num_tokens: int) -> jax.Array:
    """(B, N_keep, D) visible tokens back at their positions of an (B, N, D) sequence of `fill` (D,).

    The decoder input of MAE ("unshuffle") and data2vec 2.0: mask tokens wherever nothing was kept.
    """
    b, _, d = visible.shape
    full = jnp.broadcast_to(fill.astype(visible.dtype), (b, num_tokens, d))
    return full.at[jnp.arange(b)[:, None], ids_keep].set(visible)


def span_mask(rng: jax.Array, batch: int, length: int, *, prob: float = 0.65, span: int = 10,
              min_spans: int = 2) -> jax.Array:
    """wav2vec 2.0 span masks over T time steps: (B, T) bool, True = masked.

    As fairseq's `compute_mask_indices` (mask_type "static"): per sample,
    `n = max(min_spans, floor(prob * T / span + u))` with u ~ U[0, 1) span starts are drawn
    without replacement from [0, T - span], and each masks `span` consecutive steps. Spans may
    overlap, so the masked fraction is below `prob` (about 0.49 for p = 0.65, M = 10, the value
    quoted in the wav2vec 2.0 paper).

    Args:
      rng: PRNG key; sample i uses `split(rng, batch)[i]`.
      batch: B.
      length: T, number of time steps (frames of the feature encoder).
      prob: p, the proportion of time steps that start a span (0.65 in data2vec/wav2vec 2.0).
      span: M, span length (10).
      min_spans: minimum number of spans (fairseq `mask_min_space`-free default of 2).

    Returns:
      (B, T) bool mask.
    """
    if span > length:
        raise ValueError(f"span {span} is longer than the sequence ({length} steps).")
    starts_avail = length - span + 1
    pos = jnp.arange(length)

    def one(key):
        k_n, k_perm = jax.random.split(key)
        n = jnp.floor(prob * length / span + jax.random.uniform(k_n)).astype(jnp.int32)
        n = jnp.clip(n, min(min_spans, starts_avail), starts_avail)
        starts = jax.random.permutation(k_perm, starts_avail)  # without replacement
        used = jnp.arange(starts_avail) < n
        covered = (pos[None, :] >= starts[:, None]) & (pos[None, :] < starts[:, None] + span) & used[:, None]
        return jnp.any(covered, axis=0)

    return jax.vmap(one)(jax.random.split(rng, batch))


def bert_mask(rng: jax.Array, tokens: jax.Array, *, mask_id: int, vocab_size: int, prob: float = 0.15,
              mask_frac: float = 0.8, random_frac: float = 0.1, special: jax.Array | None = None
              ) -> tuple[jax.Array, jax.Array]:
    """RoBERTa dynamic masking: select `prob` of the tokens; 80% <mask>, 10% random, 10% kept.

    Args:
      rng: PRNG key (one draw for the batch; re-drawn each step by the caller's step key).
      tokens: (B, T) int token ids.
      mask_id: id of the <mask> token.
      vocab_size: random replacements are drawn from [0, vocab_size) (the ordinary tokens).
      prob: selection probability (0.15, BERT Sec. 3.1).
      mask_frac, random_frac: of the selected tokens, the fraction replaced by <mask> and by a
        random token (0.8 and 0.1); the rest stay unchanged.
      special: optional (B, T) bool of positions never selected (padding, BOS/EOS).

    Returns:
      corrupted: (B, T) int tokens fed to the student.
      selected: (B, T) bool, the positions whose targets are predicted (all selected ones,
        including the unchanged 10%, as in BERT).
    """
    k_sel, k_kind, k_rand = jax.random.split(rng, 3)
    selected = jax.random.uniform(k_sel, tokens.shape) < prob
    if special is not None:
        selected &= ~special
    u = jax.random.uniform(k_kind, tokens.shape)
    random_tokens = jax.random.randint(k_rand, tokens.shape, 0, vocab_size, dtype=tokens.dtype)
    corrupted = jnp.where(selected & (u < mask_frac), jnp.asarray(mask_id, tokens.dtype), tokens)
    corrupted = jnp.where(selected & (u >= mask_frac) & (u < mask_frac + random_frac), random_tokens, corrupted)
    return corrupted, selected
