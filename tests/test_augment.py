"""Tests for jaxssl.augment: shapes, p semantics, determinism; NumPy, colorsys and scipy refs."""

import colorsys
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from jaxssl import augment

GRAY = np.array([0.299, 0.587, 0.114])

SIMCLR_VIEW = {
    "crop_size": 16, "crop_scale": (0.08, 1.0), "crop_ratio": (0.75, 1.333), "flip_p": 0.5,
    "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1, "jitter_p": 0.8,
    "grayscale_p": 0.2, "blur_p": 0.5, "blur_sigma": (0.1, 2.0), "solarize_p": 0.2,
    "mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616),
}

# Every random op with a probability, as (name, fn(rng, images, p)).
OPS = {
    "flip": lambda r, x, p: augment.random_flip(r, x, p=p),
    "jitter": lambda r, x, p: augment.color_jitter(r, x, p=p),
    "grayscale": lambda r, x, p: augment.random_grayscale(r, x, p=p),
    # sigma >= 1 so that every applied blur changes a random image visibly (sigma=0.1 is a no-op).
    "blur": lambda r, x, p: augment.gaussian_blur(r, x, p=p, sigma=(1.0, 2.0)),
    "solarize": lambda r, x, p: augment.solarize(r, x, p=p),
}


@functools.lru_cache(maxsize=None)
def _simclr_apply():
    """One jitted SimCLR-style `apply`, shared by the tests so that it compiles once."""
    return jax.jit(functools.partial(augment.apply, view=SIMCLR_VIEW))


def _run(fn, rng, images, **kw):
    """``fn(rng, images, **kw)`` under jit: one compile beats eager op-by-op dispatch of vmaps."""
    return np.asarray(jax.jit(functools.partial(fn, **kw))(rng, images))


def _images(b=8, h=16, w=16, seed=0):
    return np.random.default_rng(seed).uniform(size=(b, h, w, 3)).astype(np.float32)


def _uint8(b=4, h=20, w=20, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(b, h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# Shapes, ranges, p semantics, determinism.


@pytest.mark.parametrize("name", sorted(OPS))
def test_ops_keep_shape_dtype_and_range(name):
    x = _images()
    out = jax.jit(lambda r, x: OPS[name](r, x, 1.0))(jax.random.key(0), x)
    assert out.shape == x.shape and out.dtype == jnp.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert np.all(np.any(np.asarray(out) != x, axis=(1, 2, 3)))  # p = 1 applies to every image.


@pytest.mark.parametrize("size", [8, 24])
def test_random_resized_crop_shape_and_range(size):
    out = _run(augment.random_resized_crop, jax.random.key(0), _images(h=16, w=20), size=size)
    assert out.shape == (8, size, size, 3) and out.dtype == jnp.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0 + 1e-6


@pytest.mark.parametrize("name", sorted(OPS))
def test_p_zero_is_exact_identity(name):
    x = _images()
    np.testing.assert_array_equal(np.asarray(OPS[name](jax.random.key(0), x, 0.0)), x)


@pytest.mark.parametrize("name", sorted(OPS))
def test_empirical_rate_matches_p(name):
    x = _images(b=2000, h=4, w=4)
    out = np.asarray(jax.jit(lambda r, x: OPS[name](r, x, 0.3))(jax.random.key(1), x))
    rate = np.mean(np.any(out != x, axis=(1, 2, 3)))
    assert abs(rate - 0.3) <= 0.04, rate


def test_same_key_same_result_different_key_different_result():
    x = _uint8()
    f = _simclr_apply()
    a, b = f(jax.random.key(0), x), f(jax.random.key(0), x)
    c = f(jax.random.key(1), x)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))


def test_images_get_independent_parameters():
    x = np.repeat(_images(b=1), 16, axis=0)  # 16 copies of one image.
    out = _run(augment.color_jitter, jax.random.key(0), x, p=1.0)
    assert len({o.tobytes() for o in out}) == 16


# ---------------------------------------------------------------------------------------------
# Colour: HSV against colorsys, jitter against a NumPy re-derivation of torchvision.


def test_rgb_to_hsv_matches_colorsys():
    rgb = np.random.default_rng(0).uniform(size=(2000, 3))
    special = [[0, 0, 0], [1, 1, 1], [0.5, 0.5, 0.5], [1, 0, 0], [0, 1, 0], [0, 0, 1],
               [1, 1, 0], [0, 1, 1], [1, 0, 1], [0.2, 0.2, 0.7], [0.7, 0.2, 0.2]]
    rgb = np.concatenate([rgb, np.array(special, float)])
    ref = np.array([colorsys.rgb_to_hsv(*px) for px in rgb])
    hsv = np.asarray(jax.jit(augment.rgb_to_hsv)(jnp.asarray(rgb, jnp.float32)), np.float64)
    dh = np.abs(hsv[:, 0] - ref[:, 0])
    np.testing.assert_allclose(np.minimum(dh, 1 - dh), 0, atol=1e-5)  # H is circular.
    np.testing.assert_allclose(hsv[:, 1:], ref[:, 1:], atol=1e-5)
    assert np.all((hsv[:, 0] >= 0) & (hsv[:, 0] < 1))


def test_hsv_to_rgb_matches_colorsys_and_round_trips():
    hsv = np.random.default_rng(1).uniform(size=(2000, 3))
    ref = np.array([colorsys.hsv_to_rgb(*px) for px in hsv])
    out = jax.jit(augment.hsv_to_rgb)(jnp.asarray(hsv, jnp.float32))
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5)
    rgb = _images(b=4)
    back = jax.jit(lambda x: augment.hsv_to_rgb(augment.rgb_to_hsv(x)))(jnp.asarray(rgb))
    np.testing.assert_allclose(np.asarray(back), rgb, atol=1e-5)


def _np_jitter(img, factors, order):
    """torchvision ColorJitter's functional ops in float64 NumPy, hue through colorsys."""
    img = img.astype(np.float64)
    for op in order:
        f = factors[op]
        gray = (img @ GRAY)[..., None]
        if op == 0:
            img = np.clip(f * img, 0, 1)
        elif op == 1:
            img = np.clip(f * img + (1 - f) * gray.mean(), 0, 1)
        elif op == 2:
            img = np.clip(f * img + (1 - f) * gray, 0, 1)
        else:
            hsv = [colorsys.rgb_to_hsv(*px) for px in img.reshape(-1, 3)]
            rgb = [colorsys.hsv_to_rgb((h + f) % 1.0, s, v) for h, s, v in hsv]
            img = np.array(rgb).reshape(img.shape)
    return img


def test_jitter_pieces_match_numpy_for_every_order():
    img = _images(b=1, h=6, w=6)[0]
    factors = np.array([1.3, 0.6, 1.7, -0.15], np.float32)
    orders = np.array(list(itertools.permutations(range(4))), np.int32)
    out = jax.jit(jax.vmap(augment._jitter_one, in_axes=(None, None, 0)))(img, factors, orders)
    for order, got in zip(orders, np.asarray(out)):
        np.testing.assert_allclose(got, _np_jitter(img, factors, order), atol=2e-5)


def test_color_jitter_uses_a_random_order_per_image():
    # Fixed factors (degenerate ranges), 64 copies of one image: each output is the reference for
    # one of the 24 orders, and many orders occur.
    img = _images(b=1, h=6, w=6)[0]
    factors = (1.3, 0.6, 1.7, -0.15)
    x = np.repeat(img[None], 64, axis=0)
    out = _run(augment.color_jitter, jax.random.key(3), x, brightness=(1.3, 1.3),
               contrast=(0.6, 0.6), saturation=(1.7, 1.7), hue=(-0.15, -0.15), p=1.0)
    refs = {o: _np_jitter(img, factors, o) for o in itertools.permutations(range(4))}
    seen = set()
    for got in out:
        match = [o for o, ref in refs.items() if np.allclose(got, ref, atol=2e-5)]
        assert match, "output matches no order of the four ops"
        seen.add(match[0])
    assert len(seen) >= 10


def test_brightness_only_scales_by_one_factor_per_image():
    x = _images(b=16) * 0.5  # Stay below 1 / 1.4 so nothing clips.
    out = _run(augment.color_jitter, jax.random.key(0), x, brightness=0.4, contrast=0,
               saturation=0, hue=0, p=1.0)
    per_image = (out / x).reshape(16, -1)
    first = np.broadcast_to(per_image[:, :1], per_image.shape)
    np.testing.assert_allclose(per_image, first, rtol=1e-5)
    assert np.all((per_image >= 0.6 - 1e-6) & (per_image <= 1.4 + 1e-6))
    assert per_image[:, 0].std() > 0.05  # Factors differ across images.


def test_grayscale_keeps_three_equal_channels():
    x = _images()
    out = _run(augment.random_grayscale, jax.random.key(0), x, p=1.0)
    np.testing.assert_allclose(out, np.repeat((x @ GRAY)[..., None], 3, axis=-1), atol=1e-6)


def test_solarize_inverts_above_threshold():
    x = _images()
    out = _run(augment.solarize, jax.random.key(0), x, p=1.0, threshold=0.3)
    np.testing.assert_allclose(out, np.where(x >= 0.3, 1 - x, x), atol=1e-7)


# ---------------------------------------------------------------------------------------------
# Blur.


def test_blur_of_constant_image_is_identity():
    x = np.full((4, 16, 16, 3), 0.37, np.float32)
    out = _run(augment.gaussian_blur, jax.random.key(0), x, p=1.0, kernel_size=7)
    np.testing.assert_allclose(out, x, atol=1e-6)


def test_blur_preserves_total_intensity_approximately():
    x = _images(h=32, w=32)
    out = _run(augment.gaussian_blur, jax.random.key(0), x, p=1.0)
    np.testing.assert_allclose(out.sum(axis=(1, 2)), x.sum(axis=(1, 2)), rtol=2e-2)
    assert out.std() < x.std()  # It smooths.


def test_blur_matches_scipy_gaussian_filter():
    x = _images(b=2, h=20, w=24)
    out = _run(augment.gaussian_blur, jax.random.key(0), x, p=1.0, sigma=(1.0, 1.0),
               kernel_size=9)
    for img, got in zip(x.astype(np.float64), out):
        # truncate=4 -> radius 4 = kernel 9; 'mirror' is NumPy's/torchvision's 'reflect'.
        ref = ndimage.gaussian_filter(img, sigma=(1.0, 1.0, 0), truncate=4.0, mode="mirror")
        np.testing.assert_allclose(got, ref, atol=1e-5)
        ref_interior = ndimage.gaussian_filter(img, sigma=(1.0, 1.0, 0), truncate=4.0)
        np.testing.assert_allclose(got[4:-4, 4:-4], ref_interior[4:-4, 4:-4], atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Random resized crop.


def test_full_scale_crop_is_identity_resize():
    x = _images(h=16, w=16)
    out = _run(augment.random_resized_crop, jax.random.key(0), x, size=16, scale=(1, 1),
               ratio=(1, 1))
    np.testing.assert_allclose(out, x, atol=1e-5)


def test_crop_resize_geometry():
    x = _images(b=1, h=16, w=16)[0]
    # Same size: an exact sub-array (checks the sign of the translation).
    box = jnp.array([3, 5, 8, 6])
    crop_resize = jax.jit(augment._crop_resize, static_argnums=2)
    got = crop_resize(jnp.asarray(x), box, (8, 6))
    np.testing.assert_allclose(np.asarray(got), x[3:11, 5:11], atol=1e-6)
    # Upsampling a linear ramp is exact: output pixel o samples row (o + 0.5) / s + top - 0.5.
    ramp = np.broadcast_to(np.arange(16, dtype=np.float32)[:, None, None], (16, 16, 3))
    got = np.asarray(crop_resize(jnp.asarray(ramp), jnp.array([4, 0, 8, 16]), (16, 16)))
    rows = np.clip((np.arange(16) + 0.5) / 2 + 4 - 0.5, 0, 15)
    np.testing.assert_allclose(got[:, 0, 0], rows, atol=1e-5)


@pytest.mark.parametrize("scale,ratio", [((0.08, 1.0), (3 / 4, 4 / 3)), ((0.3, 0.5), (0.5, 2.0))])
def test_sample_crop_box_respects_bounds(scale, ratio):
    height, width = 24, 32
    keys = jax.random.split(jax.random.key(0), 2000)
    boxes = np.asarray(jax.jit(jax.vmap(
        lambda k: augment._sample_crop_box(k, height, width, scale, ratio)))(keys))
    top, left, h, w = boxes.T
    assert np.all((top >= 0) & (left >= 0) & (h > 0) & (w > 0))
    assert np.all((top + h <= height) & (left + w <= width))
    frac = h * w / (height * width)
    # Rounding w and h to integers moves the area by up to ~(w + h) / 2 pixels.
    slack = (h + w) / (height * width)
    assert np.all((frac >= scale[0] - slack) & (frac <= scale[1] + slack))
    assert np.all((w / h >= ratio[0] * (1 - 2 / h)) & (w / h <= ratio[1] * (1 + 2 / w)))
    assert len({tuple(b) for b in boxes}) > 100  # Many distinct boxes.
    assert top.max() > 0 and left.max() > 0


@pytest.mark.parametrize("height,width,expected", [
    (32, 48, [0, 2, 32, 43]),  # Too wide: w = round(32 * 4/3), centred.
    (48, 32, [2, 0, 43, 32]),  # Too tall: h = round(32 / (3/4)), centred.
    (32, 36, [0, 0, 32, 36]),  # Ratio in range: the whole image.
])
def test_sample_crop_box_falls_back_to_centre_crop(height, width, expected):
    # No candidate can fit (area 2x the image): torchvision's centre crop at the ratio bound.
    sample = jax.jit(augment._sample_crop_box, static_argnums=(1, 2, 3, 4))
    box = sample(jax.random.key(0), height, width, (2.0, 2.0), (3 / 4, 4 / 3))
    np.testing.assert_array_equal(np.asarray(box), expected)


def test_crops_stay_inside_the_image():
    # A constant image stays constant: no sample falls outside the image (no zero padding leaks in).
    x = np.full((64, 16, 16, 3), 0.7, np.float32)
    for size, scale in [(8, (0.02, 0.1)), (24, (0.08, 1.0))]:
        out = _run(augment.random_resized_crop, jax.random.key(0), x, size=size, scale=scale)
        np.testing.assert_allclose(out, 0.7, atol=1e-6)
    # Top half 0, bottom half 1: the full-image crop keeps its top row 0 and bottom row 1.
    x = np.zeros((4, 16, 16, 3), np.float32)
    x[:, 8:] = 1.0
    full = _run(augment.random_resized_crop, jax.random.key(0), x, size=8, scale=(1, 1),
                ratio=(1, 1))
    assert np.all(full[:, 0] < 1e-6) and np.all(full[:, -1] > 1 - 1e-6)


# ---------------------------------------------------------------------------------------------
# apply / make_views.


def test_apply_all_off_equals_to_float():
    x = _uint8()
    expected = np.asarray(augment.to_float(x))
    assert expected.dtype == np.float32 and expected.max() <= 1.0
    np.testing.assert_array_equal(_run(augment.apply, jax.random.key(0), x, view={}), expected)
    view = {"crop_size": 20, "crop_scale": (1.0, 1.0), "crop_ratio": (1.0, 1.0), "flip_p": 0.0,
            "jitter_p": 0.0, "grayscale_p": 0.0, "blur_p": 0.0, "solarize_p": 0.0}
    out = _run(augment.apply, jax.random.key(0), x, view=view)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    # Float input passes through to_float unchanged.
    np.testing.assert_array_equal(_run(augment.apply, jax.random.key(0), expected, view={}),
                                  expected)


def test_apply_jit_shapes_and_normalisation():
    out = _simclr_apply()(jax.random.key(0), _uint8())
    assert out.shape == (4, 16, 16, 3) and out.dtype == jnp.float32
    mean, std = np.array(SIMCLR_VIEW["mean"]), np.array(SIMCLR_VIEW["std"])
    assert np.all(np.asarray(out) >= (0 - mean) / std - 1e-5)
    assert np.all(np.asarray(out) <= (1 - mean) / std + 1e-5)


def test_normalize():
    x = _images(b=2)
    out = augment.normalize(x, (0.5, 0.4, 0.3), (0.2, 0.25, 0.5))
    np.testing.assert_allclose(np.asarray(out), (x - [0.5, 0.4, 0.3]) / [0.2, 0.25, 0.5], atol=1e-6)


def test_apply_rejects_unknown_keys():
    with pytest.raises(ValueError, match="flip_prob") as err:
        augment.apply(jax.random.key(0), _uint8(), {"flip_prob": 0.5})
    assert "flip_p" in str(err.value)  # Lists the valid keys.


@pytest.mark.parametrize("bad", [
    np.zeros((16, 16, 3), np.uint8),  # rank 3
    np.zeros((2, 16, 16, 4), np.uint8),  # 4 channels
    np.zeros((2, 16, 16, 3), np.int32),  # dtype
])
def test_apply_rejects_bad_images(bad):
    with pytest.raises(ValueError, match="Expected"):
        augment.apply(jax.random.key(0), bad, {})


def test_apply_rejects_mean_without_std_and_bad_p():
    with pytest.raises(ValueError, match="std"):
        augment.apply(jax.random.key(0), _uint8(), {"mean": (0.5, 0.5, 0.5)})
    with pytest.raises(ValueError, match="Probability"):
        augment.apply(jax.random.key(0), _uint8(), {"flip_p": 1.5})


def test_make_views_independent_and_multi_size():
    x = _uint8(h=24, w=24)
    view = {"crop_size": 16, "crop_scale": (0.2, 1.0), "flip_p": 0.5, "grayscale_p": 0.5}
    views = [view, view, dict(view, crop_size=8, crop_scale=(0.05, 0.3))]
    out = jax.jit(functools.partial(augment.make_views, views=views))(jax.random.key(0), x)
    assert [o.shape for o in out] == [(4, 16, 16, 3), (4, 16, 16, 3), (4, 8, 8, 3)]
    assert not np.allclose(np.asarray(out[0]), np.asarray(out[1]))


def test_view_size_is_the_crop_size_else_the_input_size():
    assert augment.view_size({"crop_size": 16}) == (16, 16)
    assert augment.view_size({"crop_size": (8, 12)}) == (8, 12)
    assert augment.view_size({}) == augment.view_size({"crop_size": None}) == (augment.DEFAULT_INPUT_SIZE,) * 2
    assert augment.view_size({}, (20, 24)) == (20, 24)
    x = jnp.zeros((2, 20, 24, 3), jnp.uint8)
    for view in ({"crop_size": 8, "crop_scale": (0.5, 1.0)}, {"crop_size": (6, 10)}, {}):
        assert augment.apply(jax.random.key(0), x, view).shape[1:3] == augment.view_size(view, (20, 24))
