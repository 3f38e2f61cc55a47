"""Tests for jaxssl.data.resize: the host crops' "pil" and "opencv" backends, and config.data.resize."""

from __future__ import annotations

import io
import re

import cv2
import grain
import numpy as np
import pytest
from PIL import Image

from jaxssl.data import resize as R
from jaxssl.data import transforms as T

GLOBAL = {"crop_size": 224, "crop_scale": (0.08, 1.0)}
LOCAL = {"crop_size": 96, "crop_scale": (0.05, 0.4)}


def _photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Photo-like uint8 RGB: smooth colour regions, edges at several scales and pixel noise."""
    rng = np.random.default_rng(seed)
    out = np.zeros((height, width, 3), np.float64)
    for cells in (4, 16, 64):  # Coarse to fine detail, bicubic-upsampled random colours.
        coarse = rng.integers(0, 256, (max(height // cells, 2), max(width // cells, 2), 3), dtype=np.uint8)
        out += np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)) / 3
    return np.clip(out + rng.normal(0, 6, out.shape), 0, 255).astype(np.uint8)


def _jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def test_same_boxes_shapes_and_dtype_for_both_backends(monkeypatch):
    """The backend changes only the resampling: the same regions are cut, same shapes, uint8."""
    regions = {}
    real = R.box

    def spy(src, region, out_hw, backend, **kw):
        regions.setdefault(backend, []).append(tuple(region))
        return real(src, region, out_hw, backend, **kw)

    monkeypatch.setattr(R, "box", spy)
    data = _jpeg(_photo(375, 500))
    views = [GLOBAL, GLOBAL] + [LOCAL] * 4 + [{"crop_size": (64, 80)}]
    out = {b: T.multi_crop(np.random.default_rng(7), data, views, resize=b) for b in R.BACKENDS}
    assert regions["pil"] == regions["opencv"] and len(regions["pil"]) == len(views)
    for a, b in zip(out["pil"], out["opencv"]):
        assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    assert [v.shape for v in out["opencv"]][-1] == (64, 80, 3)


def test_opencv_is_area_from_2x_shrink_else_linear():
    """No draft: the view equals NumPy crop + cv2.resize (INTER_AREA from 2x down, else INTER_LINEAR)."""
    image = _photo(300, 400)
    for size, scale in ((64, (0.3, 1.0)), (150, (0.5, 1.0)), (224, (0.05, 0.1))):  # >= 2x, < 2x, up.
        top, left, h, w = T.random_resized_crop_box(np.random.default_rng(3), 300, 400, scale)
        factor = max(h / size, w / size)
        assert {64: factor >= 2, 150: 1 < factor < 2, 224: factor < 1}[size], (size, h, w)
        got = T.random_resized_crop(np.random.default_rng(3), image, {"crop_size": size, "crop_scale": scale},
                                    resize="opencv")
        flag = cv2.INTER_AREA if size == 64 else cv2.INTER_LINEAR
        want = cv2.resize(image[top:top + h, left:left + w], (size, size), interpolation=flag)
        np.testing.assert_array_equal(got, want)
    assert cv2.getNumThreads() == 1  # One thread per grain worker process.


def test_opencv_decode_is_pillows_and_bad_files_keep_pillows_errors():
    """simplejpeg's decode (draft included) is bit-identical to Pillow's; what it refuses goes to Pillow."""
    image = _photo(301, 433)
    gray = Image.fromarray(image[..., 0])
    for data in (_jpeg(image), _jpeg(image, 75), _jpeg_of(gray)):
        for factor in (1, 2, 4):
            img = Image.open(io.BytesIO(data))
            T._apply_draft(img, factor)  # pylint: disable=protected-access
            np.testing.assert_array_equal(R.decode_jpeg(data, factor), np.asarray(img.convert("RGB")))
    views = [{"crop_size": 32}] * 2
    for data in (_jpeg(image)[:3000], b"\xff\xd8\xff\xe0" + b"\x00" * 200, b""):
        messages = []
        for r in R.BACKENDS:
            with pytest.raises(ValueError) as e:
                T.multi_crop(np.random.default_rng(0), data, views, resize=r, name_for_errors="bad.jpg")
            messages.append(str(e.value))
        # Pillow names the stream it could not read by its repr ("<_io.BytesIO object at 0x...>"):
        # each backend opens its own, so only the address may differ.
        messages = [re.sub(r" at 0x[0-9a-f]+>", " at ADDRESS>", m) for m in messages]
        assert messages[0] == messages[1] and "bad.jpg" in messages[0]
    # CMYK JPEG: Pillow's conversion for both backends (simplejpeg's would differ). The whole image
    # at its own size is an identity resize, so the view is the decoded image itself.
    cmyk = _jpeg_of(Image.fromarray(image).convert("CMYK"))
    whole = {"crop_size": (301, 433), "crop_scale": (1.0, 1.0), "crop_ratio": (433 / 301, 433 / 301)}
    for r in R.BACKENDS:
        np.testing.assert_array_equal(T.random_resized_crop(np.random.default_rng(0), cmyk, whole, resize=r),
                                      T.decode(cmyk))


def _jpeg_of(img: Image.Image) -> bytes:  # pylint: disable=invalid-name
    """A Pillow image (any mode JPEG takes) as JPEG bytes."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_mixed_axes_resize_in_two_passes_close_to_pillow():
    """A box that shrinks in height and grows in width: area down, then bilinear across."""
    crop = _photo(200, 60)
    got = R.box(R.source(Image.fromarray(crop), "opencv"), (0, 0, 60, 200), (100, 120), "opencv")
    assert got.shape == (100, 120, 3) and got.dtype == np.uint8
    area = cv2.resize(crop, (60, 100), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(got, cv2.resize(area, (120, 100), interpolation=cv2.INTER_LINEAR))
    pil = R.box(Image.fromarray(crop), (0, 0, 60, 200), (100, 120), "pil")
    assert np.abs(got.astype(int) - pil).mean() < 2.0


def test_upsampling_matches_pillow_bilinear():
    """Enlarging, both backends are plain bilinear (half-pixel centres): within 1 level inside."""
    image = _photo(60, 80)
    a, b = (R.box(R.source(Image.fromarray(image), r), (5, 3, 75, 57), (150, 190), r) for r in R.BACKENDS)
    assert np.abs(a.astype(int) - b)[2:-2, 2:-2].max() <= 1


def test_backends_close_over_many_crops():
    """Mean |pil - opencv| over 2 x 224 and DINO crops of photo-like JPEGs, with draft as in training.

    Pillow's antialiasing is a triangle filter twice as wide as OpenCV's INTER_AREA box (and its
    bilinear below 2x), so the OpenCV views are a little sharper; measured here on this noisy
    synthetic image: 1.26 levels on average over the 60 crops (0.22-1.87 per crop), bounded at 2.5.
    """
    diffs = []
    for seed in range(6):
        data = _jpeg(_photo(448 + 16 * seed, 560 - 24 * seed, seed))
        for views in ([GLOBAL] * 2, [{"crop_size": 224, "crop_scale": (0.4, 1.0)}] * 2 + [LOCAL] * 6):
            a, b = (T.multi_crop(np.random.default_rng(seed), data, views, resize=r) for r in R.BACKENDS)
            diffs += [np.abs(x.astype(int) - y).mean() for x, y in zip(a, b)]
    assert len(diffs) == 60 and float(np.mean(diffs)) < 2.5 and max(diffs) < 5.0, (np.mean(diffs), max(diffs))


def test_opencv_with_draft_stays_close_to_full_decode():
    """A drafted JPEG's fractional box is rounded to reduced pixels: still within a few levels.

    The image is blurred (sigma 1.5 px): a photo large enough for a draft has little energy at its
    pixel scale, while _photo's pixel noise would measure the filters (bilinear on the 1/2-1/4 image
    against area on the full one) rather than the draft.
    """
    data = _jpeg(cv2.GaussianBlur(_photo(768, 1024), (0, 0), 1.5))
    views = [{"crop_size": 96, "crop_scale": (0.3, 1.0)}] * 2
    drafted = T.multi_crop(np.random.default_rng(1), data, views, resize="opencv")
    full = T.multi_crop(np.random.default_rng(1), data, views, use_draft=False, resize="opencv")
    evals = (T.center_crop(data, 96, resize="opencv"), T.center_crop(data, 96, use_draft=False, resize="opencv"))
    for a, b in list(zip(drafted, full)) + [evals]:
        assert np.abs(a.astype(int) - b).mean() <= 3.0


def test_eval_crop_is_resize_then_centre_crop():
    """center_crop with OpenCV: torchvision's Resize + CenterCrop geometry, close to Pillow's pixels."""
    for (h, w), size in (((300, 400), 224), ((500, 375), 96), ((112, 149), 64)):
        image = _photo(h, w)
        short = round(size * 256 / 224)
        new_h, new_w = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
        flag = cv2.INTER_AREA if max(h / new_h, w / new_w) >= R.AREA_FROM else cv2.INTER_LINEAR
        top, left = int(round((new_h - size) / 2)), int(round((new_w - size) / 2))
        want = cv2.resize(image, (new_w, new_h), interpolation=flag)[top:top + size, left:left + size]
        got = T.center_crop(image, size, resize="opencv")
        assert got.shape == (size, size, 3) and got.dtype == np.uint8
        np.testing.assert_array_equal(got, want)
        data = _jpeg(image)
        a, b = (T.center_crop(data, size, resize=r) for r in R.BACKENDS)
        # Up to 4.3 levels (mean) here, at a 3.4x downscale (a 1/2 draft, then bilinear at 1.7x) of
        # this synthetic image with per-pixel noise, the worst case for the filters' different widths;
        # 0.4-2.4 levels on the benchmark's files and real 224 px photos (RESULTS.md section 5).
        assert np.abs(a.astype(int) - b).mean() < 5.0


def test_opencv_views_are_a_function_of_the_rng():
    """Same generator state: identical views (grain's per-element rng); another seed: other crops."""
    records = [{"image": _jpeg(_photo(120 + 9 * i, 160, i)), "label": i} for i in range(4)]
    views = T.Views([{"crop_size": 48, "crop_scale": (0.2, 1.0)}, {"crop_size": 24}], resize="opencv")
    a, b = (grain.MapDataset.source(records).seed(0).random_map(views) for _ in range(2))
    for i in range(4):
        for x, y in zip(a[i]["views"], b[i]["views"]):
            np.testing.assert_array_equal(x, y)
    other = grain.MapDataset.source(records).seed(1).random_map(views)
    assert not np.array_equal(a[0]["views"][0], other[0]["views"][0])
    eval_map = grain.MapDataset.source(records).map(T.EvalView(32, resize="opencv"))
    np.testing.assert_array_equal(eval_map[1]["image"], T.center_crop(records[1]["image"], 32, resize="opencv"))


def test_unknown_backend_names_the_allowed_values():
    with pytest.raises(ValueError, match=r"config\.data\.resize.*\['pil', 'opencv'\].*'cv2'"):
        T.multi_crop(np.random.default_rng(0), _photo(40, 40), [{"crop_size": 8}], resize="cv2")
    with pytest.raises(ValueError, match=r"\['pil', 'opencv'\]"):
        T.Views([{"crop_size": 8}], resize="bicubic")
    with pytest.raises(ValueError, match=r"\['pil', 'opencv'\]"):
        T.EvalView(8, resize="")


def test_config_default_and_validation():
    """config.data.resize defaults to "opencv"; a bad value is refused before anything compiles."""
    import configs.simclr_imagenette as cfg  # pylint: disable=g-import-not-at-top
    from jaxssl.train import validate  # pylint: disable=g-import-not-at-top
    config = cfg.get_config("cpu")
    assert config.data.resize == "opencv"
    validate.validate_config(config)
    config.data.resize = "pil"
    validate.validate_config(config)
    config.data.resize = "lanczos"
    with pytest.raises(ValueError, match=r"config\.data\.resize .*must be one of \['pil', 'opencv'\], got 'lanczos'"):
        validate.validate_config(config)
