"""Attention maps: CLS-to-patch weights, per-head maps that sum to one, DINO masks, and a real ViT."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl.evaluate import attention


def _softmax_weights(seed, b=2, heads=3, tokens=17):
    logits = jax.random.normal(jax.random.key(seed), (b, heads, tokens, tokens)) * 2.0
    return jax.nn.softmax(logits, axis=-1)


def dino_masks_reference(maps, mass):
    """DINO's visualize_attention.py thresholding, in NumPy, one (h, w) map at a time."""
    out = np.zeros(maps.shape, bool)
    for index in np.ndindex(maps.shape[:-2]):
        a = np.asarray(maps[index], np.float64).ravel()
        idx = np.argsort(a, kind="stable")
        val = a[idx] / a.sum()
        keep = np.cumsum(val) > (1 - mass)
        out[index] = keep[np.argsort(idx, kind="stable")].reshape(maps.shape[-2:])
    return out


def test_cls_to_patch_shapes_and_sums():
    w = _softmax_weights(0)
    a = attention.cls_to_patch(w)
    assert a.shape == (2, 3, 16) and a.dtype == jnp.float32
    np.testing.assert_allclose(a.sum(-1), 1.0, rtol=1e-6)
    # Proportional to the CLS row over the patch columns (the CLS->CLS weight is dropped).
    ref = np.asarray(w)[:, :, 0, 1:]
    np.testing.assert_allclose(a, ref / ref.sum(-1, keepdims=True), rtol=1e-6)
    # Register tokens (DINOv2 "registers"): 1 CLS + 4 registers + 12 patches.
    a = attention.cls_to_patch(w, num_prefix_tokens=5)
    assert a.shape == (2, 3, 12)
    np.testing.assert_allclose(a.sum(-1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="B, heads, T, T"):
        attention.cls_to_patch(w[:, :, 0])


@pytest.mark.parametrize("method", ["nearest", "linear", "cubic"])
def test_maps_sum_to_one_per_head_at_every_resolution(method):
    a = attention.cls_to_patch(_softmax_weights(1))
    maps = attention.attention_maps(a, (4, 4))
    assert maps.shape == (2, 3, 4, 4)
    np.testing.assert_allclose(maps.sum((-2, -1)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(maps.reshape(2, 3, 16), a, rtol=1e-6)  # row-major patch order
    up = attention.attention_maps(a, (4, 4), image_size=(32, 32), method=method)
    assert up.shape == (2, 3, 32, 32)
    assert float(up.min()) >= 0.0
    np.testing.assert_allclose(up.sum((-2, -1)), 1.0, rtol=1e-5)
    if method == "nearest":
        # Each patch covers its 8x8 pixels with 1/64 of its weight.
        np.testing.assert_allclose(up[:, :, ::8, ::8] * 64, maps, rtol=1e-5)
        np.testing.assert_allclose(up[:, :, 7::8, 7::8] * 64, maps, rtol=1e-5)
    with pytest.raises(ValueError, match="patches"):
        attention.attention_maps(a, (3, 5))


@pytest.mark.parametrize("mass", [0.6, 0.9, 1.0, 0.05])
def test_threshold_masks_match_dino_and_keep_the_mass(mass):
    maps = attention.attention_maps(attention.cls_to_patch(_softmax_weights(2, tokens=50)), (7, 7))
    masks = np.asarray(attention.threshold_masks(maps, mass))
    assert masks.shape == maps.shape and masks.dtype == bool
    np.testing.assert_array_equal(masks, dino_masks_reference(np.asarray(maps), mass))
    m = np.asarray(maps)
    kept = (m * masks).sum((-2, -1))
    assert np.all(kept >= mass - 1e-6)
    # Minimal: without its smallest kept position, every mask holds less than `mass`.
    smallest = np.where(masks, m, np.inf).min((-2, -1))
    assert np.all(kept - smallest < mass + 1e-6)
    # The kept positions are the largest ones.
    assert np.all(smallest >= np.where(masks, -np.inf, m).max((-2, -1)))
    with pytest.raises(ValueError, match="mass"):
        attention.threshold_masks(maps, 0.0)


def test_vit_last_block_attention():
    from jaxssl.models import vit
    model = vit.Model(variant="Ti/4", width=16, depth=2, num_heads=2, img_size=16)
    images = jax.random.uniform(jax.random.key(0), (3, 16, 16, 3))
    variables = jax.jit(lambda r: model.init(r, images, train=False))(jax.random.key(1))
    a, grid = attention.vit_cls_attention(model, variables, images)
    assert grid == (4, 4) and a.shape == (3, 2, 16)
    np.testing.assert_allclose(a.sum(-1), 1.0, rtol=1e-5)
    last = jax.jit(lambda v: vit.intermediates(model, v, images)["attention"][-1])(variables)
    ref = np.asarray(last)[:, :, 0, 1:]
    np.testing.assert_allclose(a, ref / ref.sum(-1, keepdims=True), rtol=1e-5)
    first, _ = attention.vit_cls_attention(model, variables, images, block=0)
    assert not np.allclose(first, a)
    maps = attention.attention_maps(a, grid, image_size=(16, 16))
    masks = attention.threshold_masks(attention.attention_maps(a, grid), 0.6)
    assert maps.shape == (3, 2, 16, 16) and masks.shape == (3, 2, 4, 4)
