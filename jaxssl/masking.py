"""Mask generators for masked prediction, all on device, pure and deterministic given the key.

* `random_block_mask` -- BEiT/iBOT block-wise image masks (iBOT, DINOv2, data2vec image);
* `max_block_masked` and `masked_index` -- the most patches `random_block_mask` can mask, and the
  indices of each row's masked tokens padded to that count (heads run on the masked tokens only);
* `random_mask` -- a uniformly random fixed-size subset per sample (MAE, arXiv:2111.06377), with
  the permutation needed to keep only the visible tokens;
* `with_count` -- any mask made to hold exactly n masked tokens per sample, with the indices of
  the visible ones (data2vec 2.0 `require_same_masks`: an encoder that drops the masked tokens
  needs the same number in every sample), and `scatter_visible`, its inverse for decoders;
* `span_mask` -- wav2vec 2.0 / data2vec speech span masking (arXiv:2006.11477 Sec. 3.1:
  "we randomly sample without replacement a certain proportion p of all time steps to be
  starting indices and then mask the subsequent M consecutive time steps");
* `multiblock_mask` -- I-JEPA's context block and M target blocks (arXiv:2301.08243), with the
  official collator's common counts as validity flags of padded index arrays;
* `bert_mask` -- BERT/RoBERTa dynamic token corruption (arXiv:1907.11692 Sec. 3.1: 15% of the
  tokens are selected; of those 80% become <mask>, 10% a random token, 10% stay unchanged),
  re-drawn every step ("dynamic masking").

Sample i of every generator uses `jax.random.split(rng, batch)[i]` (or one key for the batch),
so the masks depend only on the key, never on the device layout.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp


def random_block_mask(rng: jax.Array, batch: int, grid: tuple[int, int], *,
                      ratio: tuple[float, float] = (0.1, 0.5), probability: float = 1.0,
                      min_patches: int = 4, aspect: tuple[float, float] = (0.3, 1 / 0.3),
                      attempts: int = 64) -> jax.Array:
    r"""BEiT/iBOT block-wise patch masks, generated on device: (B, h * w) bool, True = masked.

    BEiT (arXiv:2106.08254, Algorithm 1), used by iBOT (arXiv:2111.07832, "blockwise masking") and
    DINOv2: per image, a masking ratio r ~ U(ratio) sets the target count round(r h w); blocks of
    area s ~ U(min_patches, remaining) and aspect a ~ logU(aspect), h_b = round(sqrt(s a)),
    w_b = round(sqrt(s / a)), at a uniform position, are added while each adds between 1 and the
    remaining number of new patches. The reference's data-dependent while-loop becomes a fixed
    number of `attempts` proposals in a `fori_loop` (rejected proposals change nothing), so the
    result never exceeds the target and reaches it in practice for attempts >= 4 * target / min_patches.
    Each image is masked at all with probability `probability` (1 in iBOT; 0.5 in DINOv2).

    Args:
      rng: PRNG key; image i uses `split(rng, batch)[i]`.
      batch: number of masks B.
      grid: (h, w) patch grid.
      ratio: range of the per-image masking ratio (iBOT: 0.3 +- 0.2; DINOv2: (0.1, 0.5)).
      probability: probability that an image is masked at all.
      min_patches: smallest block area (BEiT: 4; 16 at 14x14 in DINOv2).
      aspect: aspect-ratio range of the blocks (BEiT: 0.3 to 1 / 0.3).
      attempts: block proposals per image.

    Returns:
      (B, h * w) bool masks in row-major patch order (the ViT's token order).
    """
    h, w = grid
    log_lo, log_hi = jnp.log(aspect[0]), jnp.log(aspect[1])
    rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]

    def one(key):
        k_ratio, k_use, k_loop = jax.random.split(key, 3)
        r = jax.random.uniform(k_ratio, (), minval=ratio[0], maxval=ratio[1])
        target = jnp.where(jax.random.uniform(k_use) < probability, jnp.round(r * h * w), 0.0).astype(jnp.int32)

        def propose(i, mask):
            u = jax.random.uniform(jax.random.fold_in(k_loop, i), (4,))
            remaining = target - jnp.sum(mask)
            lo = jnp.minimum(min_patches, remaining).astype(jnp.float32)
            hi = jnp.maximum(min_patches, remaining).astype(jnp.float32)
            area = lo + (hi - lo) * u[0]
            a = jnp.exp(log_lo + (log_hi - log_lo) * u[1])
            bh = jnp.round(jnp.sqrt(area * a)).astype(jnp.int32)
            bw = jnp.round(jnp.sqrt(area / a)).astype(jnp.int32)
            top = jnp.floor(u[2] * (h - bh + 1)).astype(jnp.int32)
            left = jnp.floor(u[3] * (w - bw + 1)).astype(jnp.int32)
            block = (rows >= top) & (rows < top + bh) & (cols >= left) & (cols < left + bw)
            new = jnp.sum(block & ~mask)
            # BEiT keeps blocks strictly smaller than the grid and adding 1..remaining new patches.
            accept = (bh < h) & (bw < w) & (new > 0) & (new <= remaining)
            return mask | (block & accept)

        return jax.lax.fori_loop(0, attempts, propose, jnp.zeros((h, w), bool)).reshape(h * w)

    return jax.vmap(one)(jax.random.split(rng, batch))


def max_block_masked(num_patches: int, ratio: tuple[float, float] = (0.1, 0.5)) -> int:
    """The most patches one `random_block_mask` row can mask: ceil(ratio[1] * num_patches), at most num_patches.

    Each row's target is round(r * num_patches) with r <= ratio[1], and no block is accepted beyond
    the target, so every row holds at most this many masked patches (tests/test_masking.py).
    """
    return min(num_patches, math.ceil(ratio[1] * num_patches))


def masked_index(mask: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
    """The indices of each row's masked tokens, in token order, padded to a fixed `size`.

    jit needs static shapes, and the number of masked tokens differs per row: DINOv2 pads the
    flat list of masked tokens to an upper bound (dinov2/data/collate.py `upperbound`); here each
    row is padded to `size` (e.g. `max_block_masked`) with indices of unmasked tokens, flagged
    invalid. `take_along_axis(x, index[..., None], 1)` then gathers (B, size, D) tokens, and a loss
    weighted by `valid` sees exactly the masked tokens.

    Args:
      mask: (B, N) bool, True = masked; at most `size` True per row (more are dropped silently).
      size: number of indices per row, 0 < size <= N.

    Returns:
      index: (B, size) int32 token indices, the masked ones first in increasing order.
      valid: (B, size) bool, True where `index` points at a masked token.
    """
    if not 0 < size <= mask.shape[-1]:
        raise ValueError(f"size must be in [1, {mask.shape[-1]}] (the number of tokens), got {size}.")
    index = jnp.argsort(~mask, axis=-1, stable=True)[..., :size].astype(jnp.int32)
    return index, jnp.take_along_axis(mask, index, axis=-1)


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


class MultiBlock(NamedTuple):
    """I-JEPA multi-block masks of one batch (see `multiblock_mask`); True = in the block.

    Attributes:
      context: (B, N) bool, the context block with the targets removed, before truncation.
      targets: (B, M, N) bool, the M target blocks.
      context_ids: (B, Kc) int32, the context patches in raster order first, then padding.
      context_valid: (B, Kc) bool, True for the first `k_c` entries of every row, where k_c is the
        smallest context count in the batch (the official collator's common count): the
        patches the context encoder sees. Padding entries are arbitrary patches to be ignored.
      target_ids: (B, M, Kt) int32, each target block's patches in raster order, then padding.
      target_valid: (B, M, Kt) bool, True for the first k_t entries (k_t: smallest target count).
    """

    context: jax.Array
    targets: jax.Array
    context_ids: jax.Array
    context_valid: jax.Array
    target_ids: jax.Array
    target_valid: jax.Array


def _block_size(u, scale, aspect, grid, xp=jnp):
    """The official `_sample_block_size`: ONE uniform u sets both the scale and the aspect ratio.

    `xp` is jax.numpy (traced draws) or numpy (static bounds); both round half to even, as Python's `round`.
    """
    h, w = grid
    max_keep = xp.floor(h * w * (scale[0] + u * (scale[1] - scale[0])))
    a = aspect[0] + u * (aspect[1] - aspect[0])
    # `while h >= self.height: h -= 1`: blocks are strictly smaller than the grid.
    bh = xp.minimum(xp.round(xp.sqrt(max_keep * a)), h - 1).astype(xp.int32)
    bw = xp.minimum(xp.round(xp.sqrt(max_keep / a)), w - 1).astype(xp.int32)
    return bh, bw


def block_area_range(scale, aspect, grid, samples: int = 100_001) -> tuple[int, int]:
    """(smallest, largest) block area `_block_size` can give, from a dense grid of u in [0, 1]; static."""
    import numpy as np  # pylint: disable=g-import-not-at-top
    bh, bw = _block_size(np.linspace(0.0, 1.0, samples), scale, aspect, grid, xp=np)
    area = bh * bw
    return int(area.min()), int(area.max())


def multiblock_mask(rng: jax.Array, batch: int, grid: tuple[int, int], *, num_targets: int = 4,
                    target_scale: tuple[float, float] = (0.15, 0.2),
                    target_aspect: tuple[float, float] = (0.75, 1.5),
                    context_scale: tuple[float, float] = (0.85, 1.0), min_keep: int = 10,
                    allow_overlap: bool = False, attempts: int = 20) -> MultiBlock:
    r"""I-JEPA multi-block masks (Assran et al., 2023, arXiv:2301.08243, Sec. 3), on device.

    facebookresearch/ijepa `src/masks/multiblock.py` `MaskCollator`, step for step:

    1. Once per batch, a target block size and a context block size: with one u ~ U[0, 1) each,
       scale s = s_lo + u (s_hi - s_lo), aspect a = a_lo + u (a_hi - a_lo) (the same u),
       k = floor(h w s), block (round(sqrt(k a)), round(sqrt(k / a))), each side at most grid - 1.
       The context block has aspect 1.
    2. Per image, M target blocks at uniform top-left corners in [0, h - b_h) x [0, w - b_w).
    3. Per image, the context block at a uniform corner with the targets removed; a placement
       keeping <= `min_keep` patches is redrawn, and after every `attempts` failures one more of
       the last targets stops being removed (the official `tries` relaxation). Here the
       (M + 1) x `attempts` proposals are drawn at once and the first valid one in that order
       is taken, so the result is a pure function of the key.
    4. Every mask is truncated to the smallest count in the batch (its first patches in raster
       order), so all images share one context count and one target count.

    Shapes must be static under `jit`, so the index arrays are padded to the largest possible
    block area and the common counts of step 4 are `*_valid` flags; consumers mask the padding
    (attention keys and loss terms).

    Args:
      rng: PRNG key; the block sizes come from `fold_in(rng, 0)`, image i from
        `split(fold_in(rng, 1), batch)[i]`, so the masks depend only on the key and the batch.
      batch: B, the GLOBAL batch (the common counts are minima over it).
      grid: (h, w) patch grid.
      num_targets: M (`num_pred_masks: 4`, configs/in1k_vith14_ep300.yaml).
      target_scale, target_aspect: `pred_mask_scale` (0.15, 0.2), `aspect_ratio` (0.75, 1.5).
      context_scale: `enc_mask_scale` (0.85, 1.0).
      min_keep: a block must keep more than this many patches (`min_keep: 10`).
      allow_overlap: keep the targets inside the context (`allow_overlap: false`).
      attempts: placements per relaxation level (the official `timeout` of 20).

    Returns:
      A `MultiBlock`.

    Example:
      >>> m = multiblock_mask(jax.random.key(0), 2, (14, 14))
      >>> m.targets.shape, bool(jnp.any(m.context & m.targets.any(1)))
      ((2, 4, 196), False)
    """
    h, w = grid
    n = h * w
    t_min, t_max = block_area_range(target_scale, target_aspect, grid)
    c_min, c_max = block_area_range(context_scale, (1.0, 1.0), grid)
    if min(t_min, c_min) <= min_keep:
        # The official sampler would loop forever: a target block is never clipped, so its size
        # alone decides whether it keeps more than min_keep patches.
        raise ValueError(f"On a {h}x{w} grid the smallest target / context block has {t_min} / {c_min} patches, "
                         f"not more than min_keep={min_keep}; lower min_keep or raise the scales.")
    k_size, k_img = jax.random.fold_in(rng, 0), jax.random.fold_in(rng, 1)
    u_t, u_c = jax.random.uniform(k_size, (2,))
    th, tw = _block_size(u_t, target_scale, target_aspect, grid)
    ch, cw = _block_size(u_c, context_scale, (1.0, 1.0), grid)
    rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]

    def place(key, bh, bw):
        k_top, k_left = jax.random.split(key)
        top = jax.random.randint(k_top, (), 0, h - bh)
        left = jax.random.randint(k_left, (), 0, w - bw)
        return ((rows >= top) & (rows < top + bh) & (cols >= left) & (cols < left + bw)).reshape(n)

    def one(key):
        k_t, k_c = jax.random.split(key)
        targets = jax.vmap(lambda k: place(k, th, tw))(jax.random.split(k_t, num_targets))  # (M, N)
        levels = num_targets + 1
        cands = jax.vmap(lambda k: place(k, ch, cw))(jax.random.split(k_c, levels * attempts))
        cands = cands.reshape(levels, attempts, n)
        if not allow_overlap:
            # Level r removes the first M - r targets (the official relaxation drops the last ones).
            first = jnp.cumsum(targets, axis=0) > 0  # first[j]: union of targets 0..j
            keep_out = jnp.concatenate([first[::-1], jnp.zeros((1, n), bool)])  # level r: targets 0..M-1-r
            cands = cands & ~keep_out[:, None, :]
        counts = jnp.sum(cands, axis=-1).reshape(-1)
        valid = counts > min_keep
        pick = jnp.where(jnp.any(valid), jnp.argmax(valid), valid.shape[0] - 1)
        return cands.reshape(-1, n)[pick], targets

    context, targets = jax.vmap(one)(jax.random.split(k_img, batch))
    k_c = jnp.min(jnp.sum(context, axis=-1))
    k_t = jnp.min(jnp.sum(targets, axis=-1))
    # Stable sort of "not in the block": the block's patches first, in raster order (torch.nonzero).
    context_ids = jnp.argsort(~context, axis=-1, stable=True)[:, :c_max].astype(jnp.int32)
    target_ids = jnp.argsort(~targets, axis=-1, stable=True)[..., :t_max].astype(jnp.int32)
    return MultiBlock(context, targets, context_ids, jnp.broadcast_to(jnp.arange(c_max) < k_c, (batch, c_max)),
                      target_ids,
                      jnp.broadcast_to(jnp.arange(t_max) < k_t, targets.shape[:2] + (t_max,)))
