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
    assert counts.min() >= 4 and counts.max() <= round(0.5 * 196) == masking.max_block_masked(196, (0.1, 0.5))
    # Per image the target round(r * 196) is reached or nearly (a last block may not fit).
    fixed = masks_fn(jax.random.key(1), (0.4, 0.4), 1.0)
    np.testing.assert_array_less(np.asarray(fixed.sum(1)), 79)  # never above the target 78
    assert masking.max_block_masked(196, (0.4, 0.4)) == 79  # ceil(78.4): a bound, not the target
    # The bound at iBOT's `:cpu` grid, the one `ibot.make` pads the student's patch head to.
    eight = np.asarray(jax.jit(lambda k: masking.random_block_mask(k, 4096, (8, 8), ratio=(0.1, 0.5)))(jax.random.key(5)))
    assert eight.sum(1).max() == masking.max_block_masked(64, (0.1, 0.5)) == 32
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


def test_masked_index_pads_each_row_to_a_fixed_size():
    mask = np.zeros((3, 10), bool)
    mask[0, [7, 2, 5]] = True
    mask[1, :] = False  # an image without masked patches
    mask[2, [0, 9]] = True
    index, valid = masking.masked_index(jnp.asarray(mask), 4)
    index, valid = np.asarray(index), np.asarray(valid)
    assert index.shape == valid.shape == (3, 4) and index.dtype == np.int32
    for row, idx, ok in zip(mask, index, valid):
        np.testing.assert_array_equal(idx[ok], np.flatnonzero(row))  # the masked tokens, in order, first
        assert ok.sum() == row.sum() and not ok[row.sum():].any()
        assert len(set(idx)) == 4 and not row[idx[~ok]].any()  # padding: distinct unmasked tokens
    # Gathered and weighted by `valid`, a per-row mean over tokens is the masked mean of the full row.
    x = np.random.default_rng(0).normal(size=(3, 10))
    gathered = np.take_along_axis(x, index, 1)
    np.testing.assert_allclose((gathered * valid).sum(1), (x * mask).sum(1))
    for size in (0, 11):
        try:
            masking.masked_index(jnp.asarray(mask), size)
        except ValueError as e:
            assert "size must be in [1, 10]" in str(e)
        else:
            raise AssertionError(size)


def _official_block_size(u, scale, aspect, grid):
    """facebookresearch/ijepa src/masks/multiblock.py `_sample_block_size`, in plain Python."""
    import math
    height, width = grid
    max_keep = int(height * width * (scale[0] + u * (scale[1] - scale[0])))
    ar = aspect[0] + u * (aspect[1] - aspect[0])
    h, w = int(round(math.sqrt(max_keep * ar))), int(round(math.sqrt(max_keep / ar)))
    while h >= height:
        h -= 1
    while w >= width:
        w -= 1
    return h, w


def _extent(mask_2d):
    rows, cols = np.nonzero(mask_2d)
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


def test_multiblock_block_sizes_follow_the_official_sampler():
    for u in np.linspace(0.0, 0.999, 37):
        for scale, aspect in (((0.15, 0.2), (0.75, 1.5)), ((0.85, 1.0), (1.0, 1.0))):
            got = masking._block_size(np.float64(u), scale, aspect, (14, 14), xp=np)
            assert tuple(int(v) for v in got) == _official_block_size(float(u), scale, aspect, (14, 14))


def test_multiblock_invariants():
    grid, b, m_targets = (14, 14), 16, 4
    gen = jax.jit(lambda k: masking.multiblock_mask(k, b, grid))
    for seed in range(3):
        m = jax.tree.map(np.asarray, gen(jax.random.key(seed)))
        assert m.targets.shape == (b, m_targets, 196) and m.context.shape == (b, 196)
        # One target block shape for the whole batch (drawn once per batch), full rectangles.
        shapes = {_extent(t.reshape(grid)) for t in m.targets.reshape(-1, 196)}
        assert len(shapes) == 1
        (th, tw), = shapes
        np.testing.assert_array_equal(m.targets.sum(-1), th * tw)
        assert 0.15 * 196 - 14 <= th * tw <= 0.2 * 196 + 14 and 0.75 - 0.5 <= th / tw <= 1.5 + 0.5
        # Context: disjoint from every target, more than min_keep patches, inside a square block.
        assert not np.any(m.context & m.targets.any(1))
        assert np.all(m.context.sum(-1) > 10)
        for c in m.context:
            eh, ew = _extent(c.reshape(grid))
            assert eh <= 13 and ew <= 13
        # Common counts: the batch minimum, the first patches of each mask in raster order.
        k_c = m.context.sum(-1).min()
        np.testing.assert_array_equal(m.context_valid.sum(-1), k_c)
        for c, ids, ok in zip(m.context, m.context_ids, m.context_valid):
            np.testing.assert_array_equal(ids[ok], np.flatnonzero(c)[:k_c])
        for t, ids, ok in zip(m.targets.reshape(-1, 196), m.target_ids.reshape(-1, m.target_ids.shape[-1]),
                              m.target_valid.reshape(-1, m.target_valid.shape[-1])):
            np.testing.assert_array_equal(ids[ok], np.flatnonzero(t))
    # Deterministic from the key; another key gives other masks.
    a = masking.multiblock_mask(jax.random.key(7), b, grid)  # eager == jitted
    again = gen(jax.random.key(7))
    for x, y in zip(a, again):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert not np.array_equal(np.asarray(a.context), np.asarray(gen(jax.random.key(8)).context))


def test_multiblock_relaxes_and_rejects_impossible_settings():
    # Large targets on a small grid: the context falls back to removing fewer targets, never <= min_keep.
    m = masking.multiblock_mask(jax.random.key(0), 32, (8, 8), target_scale=(0.4, 0.45), min_keep=4)
    assert np.all(np.asarray(m.context).sum(-1) > 4)
    try:
        masking.multiblock_mask(jax.random.key(0), 2, (8, 8), min_keep=10)  # 9-patch targets
    except ValueError as e:
        assert "min_keep" in str(e)
    else:
        raise AssertionError("expected a ValueError")
