"""The host crops' resampling backends: Pillow (torchvision's filter) or OpenCV (faster).

One call (:func:`box`) resizes one region of a decoded image to a view's size; ``backend`` is
``config.data.resize``:

* ``"pil"``: Pillow's ``Image.resize(..., BILINEAR, box=...)``, a triangle filter whose support grows
  with the downscale factor (antialiased), the filter torchvision applies to PIL images
  (``RandomResizedCrop`` / ``Resize`` default ``InterpolationMode.BILINEAR``, passed to
  ``PIL.Image.resize`` by ``torchvision/transforms/_functional_pil.py``). Identical to torchvision's
  pixels for the same box.
* ``"opencv"``: ``cv2.resize`` of the box cut out of the decoded array (a NumPy view, no copy):
  ``INTER_LINEAR`` (bilinear, 2 taps per axis) unless the box shrinks by :data:`AREA_FROM` (2x) or
  more on an axis, then ``INTER_AREA`` (each output pixel the area-weighted mean of the source pixels
  it covers: a box filter, antialiased). Enlarging, Pillow's filter is the same bilinear. Shrinking by
  less than 2x, a bilinear sample still reads every source pixel (its 2 taps per axis span the output
  pixel's footprint of < 2 source pixels), so little aliasing is left for Pillow's wider filter to
  remove, and OpenCV's ``INTER_AREA`` at such fractional scales is barely faster than Pillow (0.5-0.8 ms
  against 0.6-1.0 ms per 224 px crop here, ``INTER_LINEAR`` 0.1 ms). A box that shrinks by >= 2x on one
  axis and grows on the other is resized in two passes (area on the first, bilinear on the second).
  Both filters are narrower than Pillow's triangle (support 1x instead of 2x the scale), so a
  downscaled view is slightly sharper: the mean |difference| from Pillow's pixels is in
  benchmarks/RESULTS.md section 5 and bounded in tests/data/test_resize.py. RGB or grayscale JPEGs
  are also decoded with simplejpeg (libjpeg-turbo, the same scaled-IDCT draft;
  bit-identical to Pillow's decode, tested) straight into a NumPy array: Pillow's image-to-array copy
  costs about as much as a crop. Any other file, or a JPEG libjpeg complains about (truncated,
  corrupt), takes Pillow's decode, so errors name the file exactly as with "pil". OpenCV runs on one
  thread (``cv2.setNumThreads(1)``): grain's workers are processes, one per core, and OpenCV's own
  thread pool inside each would oversubscribe the cores.

The crop box is the same for both backends (sampled by ``transforms.random_resized_crop_box``, integer
pixels, torchvision's ``RandomResizedCrop.get_params``). Where the JPEG was decoded at a reduced size
(``draft``), the box in the reduced image has fractional edges: Pillow resamples them exactly (from
the reduced pixels the box touches, cut out first), OpenCV rounds each edge to the nearest reduced pixel, which moves the crop by at most half a reduced pixel
(half an output pixel at most, since a draft keeps the reduced box at least the output's size). The
evaluation crop (``transforms.center_crop``), whose region is fractional in any case, resizes the whole
image and slices the centre instead, torchvision's ``Resize`` + ``CenterCrop`` geometry exactly.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PIL import Image

BACKENDS = ("pil", "opencv")
# "opencv" shrinks with INTER_AREA from this factor on (either axis), else INTER_LINEAR (docstring).
AREA_FROM = 2.0


def check(backend: str) -> str:
    """Returns ``backend`` if it is one of :data:`BACKENDS`, else a ValueError naming them."""
    if backend not in BACKENDS:
        raise ValueError(f"config.data.resize (the host crops' resize backend) must be one of "
                         f"{list(BACKENDS)}, got {backend!r}.")
    return backend


_cv2_module = None  # Set on first use, per process.
_simplejpeg_module = None


def decode_jpeg(data: bytes, factor: int) -> np.ndarray | None:
    """A JPEG decoded by simplejpeg at 1/``factor`` (1, 2, 4, 8) to uint8 (H', W', 3); None if libjpeg complains.

    The scaled size is libjpeg's (``ceil(W / factor)``), as Pillow's ``draft``; the caller falls back
    to Pillow on None, whose error messages name the file.
    """
    global _simplejpeg_module
    if _simplejpeg_module is None:
        try:
            import simplejpeg  # pylint: disable=g-import-not-at-top
        except ImportError as e:
            raise ImportError("config.data.resize='opencv' decodes JPEGs with simplejpeg: `pip install "
                              "simplejpeg` (requirements.txt pins it), or set config.data.resize='pil'.") from e
        _simplejpeg_module = simplejpeg
    try:
        height, width = _simplejpeg_module.decode_jpeg_header(data)[:2]
        # strict: a libjpeg warning (e.g. "Premature end of JPEG file") is an error, left to Pillow.
        return _simplejpeg_module.decode_jpeg(data, colorspace="RGB", min_height=height // factor,
                                              min_width=width // factor, min_factor=factor, strict=True)
    except ValueError:
        return None


def _cv2():
    """``cv2`` on one thread, imported on first use (only the "opencv" backend needs it)."""
    global _cv2_module
    if _cv2_module is None:
        try:
            import cv2  # pylint: disable=g-import-not-at-top
        except ImportError as e:
            raise ImportError("config.data.resize='opencv' needs OpenCV: `pip install "
                              "opencv-python-headless` (requirements.txt pins it), or set "
                              "config.data.resize='pil'.") from e
        # Per process (grain workers are processes, one core each): no OpenCV thread pool on top.
        cv2.setNumThreads(1)
        _cv2_module = cv2
    return _cv2_module


def source(img: Image.Image, backend: str) -> Image.Image | np.ndarray:
    """What the backend resizes from: the Pillow image itself, or its pixels as uint8 (H, W, 3)."""
    return np.asarray(img) if check(backend) == "opencv" else img


def _cv2_resize(pixels: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """``INTER_AREA`` from a :data:`AREA_FROM` shrink on an axis, else ``INTER_LINEAR`` (module docstring)."""
    cv2 = _cv2()
    (h, w), (oh, ow) = pixels.shape[:2], out_hw
    if (h, w) == (oh, ow):
        return np.ascontiguousarray(pixels)
    fh, fw = h / oh, w / ow
    if max(fh, fw) < AREA_FROM:
        return cv2.resize(pixels, (ow, oh), interpolation=cv2.INTER_LINEAR)
    if fh >= 1 and fw >= 1:
        return cv2.resize(pixels, (ow, oh), interpolation=cv2.INTER_AREA)
    # One axis shrinks >= 2x, the other grows: INTER_AREA would not be bilinear on the growing axis,
    # so shrink first (fewer pixels for the second pass), then grow bilinearly.
    shrunk = cv2.resize(pixels, (w, oh) if fh > 1 else (ow, h), interpolation=cv2.INTER_AREA)
    return cv2.resize(shrunk, (ow, oh), interpolation=cv2.INTER_LINEAR)


def box(src: Image.Image | np.ndarray, region: Sequence[float], out_hw: tuple[int, int],
        backend: str, *, crop_first: bool = False) -> np.ndarray:
    """Resizes ``region`` = (left, top, right, bottom) of ``src`` (from :func:`source`) to uint8 (h, w, 3).

    Pillow resamples the region's exact (possibly fractional) edges; OpenCV rounds them to whole
    pixels (module docstring), keeping at least one pixel on each axis. ``crop_first`` (training
    crops): no output pixel reads the image outside the region's pixels, as torchvision's
    ``resized_crop`` (``img.crop(box).resize(size)``); Pillow's ``resize(box=...)`` alone lets the
    border pixels' filter reach past the box (right for an eval ``Resize`` + ``CenterCrop``, which
    resizes the whole image). OpenCV always cuts the region out first.
    """
    if check(backend) == "pil":
        if crop_first:  # cut out the whole pixels the region touches (all of them without a draft)
            left, top, right, bottom = region
            outer = (max(math.floor(left + 1e-6), 0), max(math.floor(top + 1e-6), 0),
                     min(math.ceil(right - 1e-6), src.size[0]), min(math.ceil(bottom - 1e-6), src.size[1]))
            src = src.crop(outer)
            region = (left - outer[0], top - outer[1], right - outer[0], bottom - outer[1])
        return np.asarray(src.resize((out_hw[1], out_hw[0]), Image.Resampling.BILINEAR, box=tuple(region)))
    height, width = src.shape[:2]
    left, top, right, bottom = (math.floor(v + 0.5) for v in region)
    top, left = min(max(top, 0), height - 1), min(max(left, 0), width - 1)
    bottom, right = min(max(bottom, top + 1), height), min(max(right, left + 1), width)
    return _cv2_resize(src[top:bottom, left:right], out_hw)

