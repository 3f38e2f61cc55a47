"""Mask generators: ratios, block shapes, spans, 80/10/10 corruption and determinism by key."""
import jax
import jax.numpy as jnp
import numpy as np

from jaxssl import masking


def test_random_mask_exact_ratio_and_visible_indices():
    mask, keep = masking.random_mask(jax.random.key(0), 6, 64, 0.75)
    mask, keep = np.asarray(mask), np.asarray(keep)
    assert mask.shape == (6, 64) and keep.shape == (6, 16)
    np.testing.assert_array_equal(mask.sum(1), 48)
    for m, k in zip(mask, keep):
        np.testing.assert_array_equal(np.flatnonzero(~m), k)  # sorted visible positions
    assert not np.array_equal(mask[0], mask[1])  # per-sample masks differ
    again, _ = masking.random_mask(jax.random.key(0), 6, 64, 0.75)
    np.testing.assert_array_equal(mask, np.asarray(again))


def test_block_mask_ratio_and_rectangles():
    # data2vec image uses masking.random_block_mask at a fixed 60% ratio on an 8x8 grid.
    mask = np.asarray(masking.random_block_mask(jax.random.key(1), 32, (8, 8), ratio=(0.6, 0.6), min_patches=4))
    frac = mask.mean(1)
    assert np.all(frac <= 38 / 64 + 1e-6) and frac.mean() > 0.5  # target round(0.6*64)=38, never exceeded
    # Block-wise: masked patches have masked 4-neighbours far more often than random masks would.
    grid = mask.reshape(32, 8, 8)
    neighbours = (grid[:, 1:, :] & grid[:, :-1, :]).sum() / grid[:, 1:, :].sum()
    assert neighbours > 0.7
    np.testing.assert_array_equal(mask, np.asarray(masking.random_block_mask(jax.random.key(1), 32, (8, 8),
                                                                         ratio=(0.6, 0.6), min_patches=4)))


def test_span_mask_spans_and_ratio():
    mask = np.asarray(masking.span_mask(jax.random.key(2), 64, 200, prob=0.65, span=10))
    # Every masked run is at least one span long (runs are unions of length-10 spans).
    for row in mask:
        padded = np.concatenate([[0], row.astype(int), [0]])
        starts, ends = np.flatnonzero(np.diff(padded) == 1), np.flatnonzero(np.diff(padded) == -1)
        assert len(starts) >= 1 and np.all(ends - starts >= 10)
    # Overlapping spans: ~1 - exp(-0.65) of the steps for long sequences (wav2vec 2.0: ~49%).
    assert 0.40 < mask.mean() < 0.56
    np.testing.assert_array_equal(mask, np.asarray(masking.span_mask(jax.random.key(2), 64, 200)))
    assert not np.array_equal(mask, np.asarray(masking.span_mask(jax.random.key(3), 64, 200)))


def test_bert_mask_80_10_10():
    tokens = jnp.full((64, 512), 7, jnp.int32)
    out, sel = masking.bert_mask(jax.random.key(4), tokens, mask_id=259, vocab_size=256, prob=0.15)
    out, sel = np.asarray(out), np.asarray(sel)
    assert abs(sel.mean() - 0.15) < 0.01
    np.testing.assert_array_equal(out[~sel], 7)  # unselected tokens untouched
    chosen = out[sel]
    assert abs(np.mean(chosen == 259) - 0.8) < 0.02
    random = chosen[chosen != 259]
    assert abs(np.mean(random != 7) * len(random) / len(chosen) - 0.1) < 0.02  # ~10% replaced (rarely by 7)
    assert np.all(random < 256)
    special = np.zeros((64, 512), bool)
    special[:, 0] = True
    _, sel2 = masking.bert_mask(jax.random.key(4), tokens, mask_id=259, vocab_size=256, special=jnp.asarray(special))
    assert not np.asarray(sel2)[:, 0].any()


def test_random_block_mask_counts_and_blocks():
    # One compilation: the ratio range and the probability are traced arguments, B and the grid fixed.
    grid, b = (14, 14), 256
    masks_fn = jax.jit(lambda key, ratio, p: masking.random_block_mask(key, b, grid, ratio=ratio, probability=p))
    masks = masks_fn(jax.random.key(0), (0.1, 0.5), 1.0)
    assert masks.shape == (b, 196) and masks.dtype == jnp.bool_
    counts = np.asarray(masks.sum(1))
    assert counts.min() >= 4 and counts.max() <= round(0.5 * 196)
    # Per image the target round(r * 196) is reached or nearly (a last block may not fit).
    fixed = masks_fn(jax.random.key(1), (0.4, 0.4), 1.0)
    np.testing.assert_array_less(np.asarray(fixed.sum(1)), 79)  # never above the target 78
    assert np.asarray(fixed.sum(1)).mean() > 0.9 * 78
    # Masks are blocks: almost every masked patch has a masked 4-neighbour (only a last block
    # filling fewer than `min_patches` remaining patches can be 1x1); i.i.d. masking at 40% gives
    # about 1 - 0.6^4 = 87%.
    m = np.asarray(fixed).reshape(b, 14, 14)
    pad = np.pad(m, ((0, 0), (1, 1), (1, 1)))
    neighbours = pad[:, :-2, 1:-1] | pad[:, 2:, 1:-1] | pad[:, 1:-1, :-2] | pad[:, 1:-1, 2:]
    assert neighbours[m].mean() > 0.97
    # Different keys per image; probability 0 masks nothing; per-image probability (0.5 +- 3 sd).
    assert len({tuple(r) for r in np.asarray(masks)}) == b
    assert not masks_fn(jax.random.key(2), (0.1, 0.5), 0.0).any()
    half = masks_fn(jax.random.key(3), (0.1, 0.5), 0.5)
    assert 0.4 < float(half.any(1).mean()) < 0.6
