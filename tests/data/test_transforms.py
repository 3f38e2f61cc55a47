"""Tests for jaxssl.data.transforms: host-side decode, random-resized crop, eval crop, grain maps."""

from __future__ import annotations

import io
import math
import pathlib

import grain
import numpy as np
import pytest
from PIL import Image

from jaxssl.data import transforms as T


def _smooth_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A photo-like uint8 RGB image: random colours upsampled (smooth) plus mild noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(height // 40, 2), max(width // 40, 2), 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))
    noise = rng.normal(0, 4, smooth.shape)
    return np.clip(smooth + noise, 0, 255).astype(np.uint8)


def _encode(image: np.ndarray | Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    """Encodes with Pillow (JPEG quality 90 unless given)."""
    img = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    if fmt == "JPEG":
        kw.setdefault("quality", 90)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _reference_crop(data: bytes, box, out_hw) -> np.ndarray:
    """Independent reference: full decode, NumPy crop, then Pillow bilinear resize."""
    top, left, h, w = box
    full = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    crop = Image.fromarray(full[top:top + h, left:left + w])
    return np.asarray(crop.resize((out_hw[1], out_hw[0]), Image.Resampling.BILINEAR))


# ---------------------------------------------------------------- box sampler


@pytest.mark.parametrize("height, width, scale, ratio", [
    (375, 500, (0.08, 1.0), (3 / 4, 4 / 3)),
    (112, 149, (0.25, 1.0), (3 / 4, 4 / 3)),
    (600, 200, (0.05, 0.4), (0.5, 2.0)),
])
def test_box_sampler_ranges_and_bounds(height, width, scale, ratio):
    """Over many draws: inside the image; area and log-ratio in range up to 1 px of rounding."""
    rng = np.random.default_rng(0)
    area = height * width
    fractions, log_ratios = [], []
    for _ in range(2000):
        top, left, h, w = T.random_resized_crop_box(rng, height, width, scale, ratio)
        assert 0 <= top and 0 <= left and 0 < h and 0 < w
        assert top + h <= height and left + w <= width
        # w = round(sqrt(A s r)), h = round(sqrt(A s / r)): each within 0.5 px of the real value.
        assert (w + 0.5) * (h + 0.5) >= scale[0] * area - 1e-9
        assert (w - 0.5) * (h - 0.5) <= scale[1] * area + 1e-9
        assert (w + 0.5) / (h - 0.5) >= ratio[0] and (w - 0.5) / (h + 0.5) <= ratio[1]
        fractions.append(h * w / area)
        log_ratios.append(math.log(w / h))
    # The draws spread over the ranges (not stuck at the fallback).
    assert min(fractions) < scale[0] + 0.1 * (scale[1] - scale[0])
    assert np.ptp(log_ratios) > 0.6 * math.log(ratio[1] / ratio[0])


def test_box_sampler_fallback_is_clamped_centre_crop():
    """Unsatisfiable ranges hit torchvision's fallback: centre crop, ratio clamped into range."""
    rng = np.random.default_rng(0)
    # Too tall for ratio >= 2: full width, h = round(100 / 2).
    assert T.random_resized_crop_box(rng, 100, 100, (1.0, 1.0), (2.0, 3.0)) == (25, 0, 50, 100)
    # Too wide for ratio <= 0.5: full height, w = round(100 * 0.5).
    assert T.random_resized_crop_box(rng, 100, 100, (1.0, 1.0), (0.2, 0.5)) == (0, 25, 100, 50)
    # Ratio in range but the whole area can never be drawn with a matching ratio: whole image.
    assert T.random_resized_crop_box(rng, 90, 160, (1.0, 1.0), (0.5, 2.0)) == (0, 0, 90, 160)


def test_box_sampler_is_deterministic_and_validates():
    """A fixed seed gives the same boxes; reversed ranges raise."""
    boxes = [[T.random_resized_crop_box(np.random.default_rng(7), 240, 320) for _ in range(5)]
             for _ in range(2)]
    assert boxes[0] == boxes[1]
    with pytest.raises(ValueError, match="scale"):
        T.random_resized_crop_box(np.random.default_rng(0), 10, 10, (1.0, 0.5))


# ---------------------------------------------------------------- decode


def test_decode_modes_become_rgb_uint8():
    """Grayscale, palette, RGBA/LA (alpha dropped), CMYK and 16-bit inputs -> (H, W, 3) uint8."""
    rgb = _smooth_image(40, 60)
    gray = rgb[..., 0]
    alpha = np.linspace(0, 255, 40 * 60).reshape(40, 60).astype(np.uint8)

    def check(data, expected, tol=0):
        out = T.decode(data, name_for_errors="x")
        assert out.shape == (40, 60, 3) and out.dtype == np.uint8
        assert np.abs(out.astype(int) - expected).max() <= tol

    check(_encode(gray, "PNG"), np.repeat(gray[..., None], 3, -1))
    gray_jpeg = _encode(gray)
    check(gray_jpeg, np.repeat(np.asarray(Image.open(io.BytesIO(gray_jpeg)))[..., None], 3, -1))
    check(_encode(np.dstack([rgb, alpha]), "PNG"), rgb)  # Alpha dropped, stored colour kept.
    check(_encode(np.dstack([gray, alpha]), "PNG"), np.repeat(gray[..., None], 3, -1))
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE)
    check(_encode(pal, "PNG"), np.asarray(pal.convert("RGB")))
    check(_encode(pal, "PNG", transparency=0), np.asarray(pal.convert("RGB")))  # tRNS: dropped.
    cmyk = Image.fromarray(rgb).convert("CMYK")
    check(_encode(cmyk, "TIFF"), np.asarray(cmyk.convert("RGB")))  # Lossless CMYK.
    cmyk_jpeg = _encode(cmyk)
    assert Image.open(io.BytesIO(cmyk_jpeg)).mode == "CMYK"
    check(cmyk_jpeg, rgb, tol=60)  # Lossy CMYK JPEG: same picture.
    assert np.abs(T.decode(cmyk_jpeg).astype(int) - rgb).mean() < 4
    wide = (gray.astype(np.uint16) * 257 + 100).astype(np.uint16)  # 16-bit grayscale PNG.
    img16 = Image.fromarray(wide)
    assert Image.open(io.BytesIO(_encode(img16, "PNG"))).mode.startswith("I")
    check(_encode(img16, "PNG"), np.repeat((wide >> 8)[..., None], 3, -1))
    check(_encode(rgb, "PNG"), rgb)


@pytest.mark.parametrize("data, match", [
    (b"", "empty"),
    (b"this is not an image at all" * 10, "not a readable image"),
])
def test_unreadable_bytes_name_the_file(data, match):
    """Zero-byte and non-image inputs raise ValueError naming the file and the fix."""
    with pytest.raises(ValueError, match=match) as e:
        T.decode(data, name_for_errors="train/n01/broken.JPEG")
    assert "train/n01/broken.JPEG" in str(e.value) and "Fix:" in str(e.value)


def test_truncated_and_corrupt_jpeg_name_the_file():
    """A JPEG cut in half, or with a garbled header, raises on decode and in the grain map."""
    data = _encode(_smooth_image(200, 300))
    for bad in (data[:len(data) // 2], data[:2] + b"\x00" * 40 + data[42:]):
        with pytest.raises(ValueError, match="broken.JPEG.*Fix:"):
            T.decode(bad, name_for_errors="broken.JPEG")
    views = T.Views([{"crop_size": 32}])
    with pytest.raises(ValueError, match="cut.jpg"):
        views.random_map({"image": data[:len(data) // 2], "label": 0, "file_name": "cut.jpg"},
                         np.random.default_rng(0))


# ---------------------------------------------------------------- crops


def test_crop_matches_full_decode_crop_resize_reference():
    """Without draft, a view equals full decode -> NumPy crop -> bilinear resize, pixel for pixel."""
    for data in (_encode(_smooth_image(300, 400), "PNG"), _encode(_smooth_image(300, 400))):
        for out, scale in ((224, (0.08, 1.0)), (96, (0.05, 0.4)), (64, (0.5, 1.0))):
            view = {"crop_size": out, "crop_scale": scale}
            box = T.random_resized_crop_box(np.random.default_rng(3), 300, 400, scale)
            got = T.random_resized_crop(np.random.default_rng(3), data, view, use_draft=False)
            want = _reference_crop(data, box, (out, out))
            assert got.shape == (out, out, 3) and got.dtype == np.uint8
            # The box is cut out before resizing, as the reference (torchvision's resized_crop):
            # identical, border pixels included (resize(box=...) alone read past the box there).
            np.testing.assert_array_equal(got, want)


def test_draft_is_close_to_full_decode():
    """JPEG draft (DCT-domain 1/2-1/8 decode) stays within a few grey levels of full decoding.

    Tolerance: mean |diff| <= 1 and max <= 8 grey levels (measured: mean 0.5-0.6, max 4,
    on this 1024 x 768 quality-90 image at 1/2 to 1/4 draft). The scaled IDCT
    averages each 8x8 block's frequencies down (a box-like prefilter) where full decoding
    plus Pillow's antialiased bilinear uses a triangle filter; on photo-like content the
    two differ only in the highest frequencies the output cannot hold anyway.
    """
    data = _encode(_smooth_image(768, 1024))
    calls = []
    real = T._apply_draft  # pylint: disable=protected-access

    def spy(img, factor):
        calls.append(real(img, factor))
        return calls[-1]

    T._apply_draft = spy  # pylint: disable=protected-access
    try:
        views = [{"crop_size": 96, "crop_scale": (0.3, 1.0)}] * 2
        drafted = T.multi_crop(np.random.default_rng(1), data, views, use_draft=True)
        evals = T.center_crop(data, 96)
    finally:
        T._apply_draft = real  # pylint: disable=protected-access
    assert calls[0] >= 2 and calls[1] >= 4  # Draft really used (eval box 672 px -> 1/4).
    full = T.multi_crop(np.random.default_rng(1), data, views, use_draft=False)
    for a, b in list(zip(drafted, full)) + [(evals, T.center_crop(data, 96, use_draft=False))]:
        diff = np.abs(a.astype(int) - b)
        assert diff.mean() <= 1.0 and diff.max() <= 8, (diff.mean(), diff.max())


def test_draft_rule_keeps_the_output_resolution():
    """draft_factor: the largest of 8/4/2/1 with box >= factor * output on both axes."""
    assert T.draft_factor((224, 224), (224, 224)) == 1
    assert T.draft_factor((447, 900), (224, 224)) == 1
    assert T.draft_factor((448, 900), (224, 224)) == 2
    assert T.draft_factor((800, 800), (96, 96)) == 8
    assert T.draft_factor((100, 100), (224, 224)) == 1  # Upsampling: never drafted.


def test_multi_crop_sizes_and_small_image_upsampled():
    """2 global + 4 local views of a 112 x 149 JPEG: one array per view, upsampled as needed."""
    data = _encode(_smooth_image(112, 149))
    views = [{"crop_size": 224, "crop_scale": (0.4, 1.0)}] * 2 + \
            [{"crop_size": 96, "crop_scale": (0.05, 0.4)}] * 4
    out = T.multi_crop(np.random.default_rng(0), data, views)
    assert [v.shape for v in out] == [(224, 224, 3)] * 2 + [(96, 96, 3)] * 4
    assert all(v.dtype == np.uint8 for v in out)
    rect = T.random_resized_crop(np.random.default_rng(0), data, {"crop_size": (64, 80)})
    assert rect.shape == (64, 80, 3)
    with pytest.raises(ValueError, match="crop_size"):
        T.Views([{"crop_scale": (0.2, 1.0)}])


def test_eval_transform_geometry_matches_resize_then_centre_crop():
    """Shorter side -> round(size*256/224), centre crop: one resize(box) == the two steps."""
    assert T.eval_box(300, 400, 224) == pytest.approx((58 * 400 / 341, 16 * 300 / 256,
                                                       282 * 400 / 341, 240 * 300 / 256))
    for (h, w), size in (((300, 400), 224), ((500, 375), 96), ((112, 149), 64),
                         ((112, 149), 224)):
        image = _smooth_image(h, w)
        data = _encode(image, "PNG")
        short = round(size * 256 / 224)
        new_h, new_w = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
        resized = np.asarray(Image.fromarray(image).resize((new_w, new_h),
                                                           Image.Resampling.BILINEAR))
        top, left = int(round((new_h - size) / 2)), int(round((new_w - size) / 2))
        want = resized[top:top + size, left:left + size]
        got = T.center_crop(data, size)
        assert got.shape == (size, size, 3)
        assert np.abs(got.astype(int) - want).max() <= 1


def test_array_input_is_accepted():
    """Already-decoded uint8 arrays (CIFAR-style records) go through the same crop path."""
    image = _smooth_image(32, 32)
    out = T.random_resized_crop(np.random.default_rng(0), image,
                                {"crop_size": 32, "crop_scale": (1.0, 1.0)})
    np.testing.assert_array_equal(out, image)  # Whole image at its own size: unchanged.


# ---------------------------------------------------------------- grain maps


def _records(n: int) -> list[dict]:
    """n small JPEG records of unequal size with labels."""
    return [{"image": _encode(_smooth_image(60 + 7 * i, 80 + 3 * i, seed=i)), "label": i % 3}
            for i in range(n)]


def test_views_random_map_is_a_function_of_seed_and_index():
    """Same (seed, index): identical views; other index or seed: different; epochs differ."""
    records = _records(6)
    views = T.Views([{"crop_size": 32, "crop_scale": (0.2, 1.0)},
                     {"crop_size": 16, "crop_scale": (0.05, 0.3)}])

    def dataset(seed):
        return grain.MapDataset.source(records).seed(seed).random_map(views)

    a, b = dataset(0), dataset(0)
    for i in range(6):
        assert [v.shape for v in a[i]["views"]] == [(32, 32, 3), (16, 16, 3)]
        assert a[i]["label"] == i % 3
        for x, y in zip(a[i]["views"], b[i]["views"]):
            np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[1]["views"][0], a[2]["views"][0]) or \
        not np.array_equal(a[1]["views"][1], a[2]["views"][1])
    assert not np.array_equal(a[0]["views"][0], dataset(1)[0]["views"][0])
    # Mapped after repeat, epoch 1's element 0 is index 6: new crops of the same image.
    # (An explicit op seed: ds.seed(s) derives the op's seed from s and the op's depth.)
    rep = grain.MapDataset.source(records).repeat(2).random_map(views, seed=5)
    once = grain.MapDataset.source(records).random_map(views, seed=5)
    np.testing.assert_array_equal(rep[0]["views"][0], once[0]["views"][0])
    assert not np.array_equal(rep[6]["views"][0], rep[0]["views"][0])
    # Through a batched iterator too: views stack because every example has the view's size.
    batch = next(iter(dataset(0).batch(3)))
    assert batch["views"][0].shape == (3, 32, 32, 3) and batch["label"].tolist() == [0, 1, 2]


def test_eval_view_map():
    """EvalView: deterministic centre crop of every record, label passed through."""
    records = _records(3)
    ds = grain.MapDataset.source(records).map(T.EvalView(24))
    out = ds[2]
    assert out["image"].shape == (24, 24, 3) and out["label"] == 2
    np.testing.assert_array_equal(out["image"], T.center_crop(records[2]["image"], 24))


def test_real_grayscale_imagenette_jpeg_becomes_rgb():
    """A one-channel JPEG of the shared Imagenette archive (173 of them) decodes and crops as RGB."""
    import tarfile  # pylint: disable=g-import-not-at-top

    from jaxssl.data import find_source_dir  # pylint: disable=g-import-not-at-top

    tar_path = (find_source_dir() or pathlib.Path("../shared/data")) / "imagenette2-112_train.tar"
    if not tar_path.is_file():
        pytest.fail(f"{tar_path} is missing (see shared/data/README.md).")
    with tarfile.open(tar_path) as tar:
        for member in tar:
            data = tar.extractfile(member).read() if member.isfile() else b""
            if data and Image.open(io.BytesIO(data)).mode == "L":
                break
        else:
            pytest.fail("no grayscale JPEG in the archive")
    image = T.decode(data, name_for_errors=member.name)
    assert image.shape[-1] == 3 and min(image.shape[:2]) == 112
    assert (image[..., :1] == image).all()
    views = T.multi_crop(np.random.default_rng(0), data, [{"crop_size": 224}, {"crop_size": 96}])
    assert [v.shape for v in views] == [(224, 224, 3), (96, 96, 3)]
