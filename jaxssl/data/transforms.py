"""Host-side per-example image ops: decode, random-resized crop, multi-crop, eval crop.

NumPy + Pillow (+ OpenCV for ``resize="opencv"``), no JAX, so they run in grain worker
processes. Each view of a training example is decoded once and cropped on the host into a
fixed-size uint8 array, so that examples of any size stack into a batch; the photometric ops (flip,
colour jitter, grayscale, blur, solarize, normalise) stay batched on the device in
:mod:`jaxssl.augment` (the DeepMind BYOL split).

    views = Views([two_global_224, two_global_224, local_96, ...])   # view dicts
    ds = grain.MapDataset.source(src).seed(0).shuffle().repeat(epochs).random_map(views)
    # element: {"views": [uint8 (224, 224, 3), uint8 (224, 224, 3), uint8 (96, 96, 3), ...], "label": int}

A view dict is the one :data:`jaxssl.augment.DEFAULT_VIEW` describes; only its crop keys
(``crop_size``, ``crop_scale``, ``crop_ratio``) are read here, the others are left to
``augment.apply`` (which also rejects misspelled keys).

Resampling (``resize="pil"``, these functions' default): bilinear with antialiasing, Pillow's
``Image.Resampling.BILINEAR``. That is torchvision's
default for PIL input (``RandomResizedCrop``/``Resize`` default to
``InterpolationMode.BILINEAR``, which ``torchvision/transforms/_functional_pil.py``
``resize`` hands to ``PIL.Image.resize``; Pillow's resampling always widens the filter
support by the downscale factor, i.e. it antialiases). An image or crop box smaller than
the output is upsampled with the same filter. ``resize="opencv"`` (the trainer's default,
``config.data.resize``) decodes JPEGs with simplejpeg (same pixels) and resizes the same boxes with
OpenCV instead (``INTER_AREA`` from a 2x shrink, else ``INTER_LINEAR``), close to Pillow's pixels and
faster; see :mod:`jaxssl.data.resize`.

Decoding only what a crop needs (``draft``): a JPEG is decoded by libjpeg's scaled IDCT at
1/2, 1/4 or 1/8 resolution when *every* crop box of the example still keeps at least the
output resolution after that reduction (box height >= factor * output height and the
same for width); otherwise it is decoded at full size. The crop is then resized straight
from the (drafted) decoded image with ``Image.resize(size, box=...)``: no cropped copy is
materialised. Draft output differs from full decoding by a few grey levels (the scaled IDCT
is a box-like prefilter), see :func:`draft_factor`. Pillow's ``reduce`` / ``reducing_gap`` is
not used: its two-step resize differs from torchvision's single bilinear resize, and the draft
already takes the large factors out of the decode, where the time goes.
"""

from __future__ import annotations

import io
import math
from typing import Any, Mapping, Sequence

import grain
import numpy as np
from PIL import Image

from jaxssl.data import resize as resizing

CROP_KEYS = ("crop_size", "crop_scale", "crop_ratio")
# torchvision's RandomResizedCrop defaults, also jaxssl.augment.DEFAULT_VIEW's ratio.
DEFAULT_SCALE = (0.08, 1.0)
DEFAULT_RATIO = (3 / 4, 4 / 3)
EVAL_RESIZE_RATIO = 256 / 224  # Resize(256) then CenterCrop(224), scaled to other sizes.
_DRAFT_FACTORS = (8, 4, 2)  # The reductions libjpeg's scaled IDCT offers (besides 1).
FIX_HINT = ("Fix: re-encode or remove the file (e.g. `python -c \"from PIL import Image; "
        "Image.open('IN').convert('RGB').save('OUT.jpg')\"`), then prepare the dataset again.")


def _open(data: bytes, name_for_errors: str) -> Image.Image:
    """``Image.open`` on bytes; reads the header only. ValueError naming the file on failure."""
    if len(data) == 0:
        raise ValueError(f"{name_for_errors}: the file is empty (0 bytes), not an image. {FIX_HINT}")
    try:
        return Image.open(io.BytesIO(data))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"{name_for_errors}: not a readable image ({len(data)} bytes, "
                         f"starts with {data[:8]!r}): {e}. {FIX_HINT}") from e


def _to_rgb(img: Image.Image, name_for_errors: str) -> Image.Image:
    """Loads ``img`` (decoding it) and returns an 8-bit RGB image.

    Grayscale (``L``, ``1``) is repeated over the three channels; palette (``P``), ``CMYK``
    and ``YCbCr`` go through Pillow's ``convert("RGB")``. Alpha (``RGBA``, ``LA``, ``PA``,
    palette transparency) is **dropped**: the stored colour of each pixel is kept, as
    torchvision's ``ImageFolder`` loader (``img.convert("RGB")``), timm and TFDS
    (``decode_image(channels=3)``) do, so a file gives the same pixels here as in those
    pipelines; fully transparent pixels keep whatever colour the file stores. 16-bit
    grayscale (``I;16*``, ``I``) keeps its high byte (``v >> 8``), the rule Pillow itself
    applies when it opens 16-bit RGB PNGs as 8-bit ``RGB``. EXIF orientation is not applied
    (nor is it by torchvision or TFDS).
    """
    try:
        img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"{name_for_errors}: corrupt or truncated {img.format or 'image'} file "
                         f"({e}). {FIX_HINT}") from e
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        high = (np.asarray(img).astype(np.uint32) >> 8).clip(0, 255).astype(np.uint8)
        return Image.fromarray(high, "L").convert("RGB")
    try:
        if mode == "P" and "transparency" in img.info:  # Pillow wants RGBA first here.
            img = img.convert("RGBA")
        return img.convert("RGB")
    except (ValueError, OSError) as e:
        raise ValueError(f"{name_for_errors}: unsupported image mode {mode!r} ({e}). {FIX_HINT}") from e


def decode(data: bytes, *, name_for_errors: str = "<image bytes>") -> np.ndarray:
    """Decodes an encoded image (JPEG, PNG, anything Pillow reads) to uint8 (H, W, 3).

    Modes are converted as :func:`_to_rgb` documents (grayscale repeated, alpha dropped,
    16-bit -> high byte). Raises ``ValueError`` naming ``name_for_errors`` and the fix
    for a zero-byte, unidentifiable, corrupt or truncated file.
    """
    return np.asarray(_to_rgb(_open(data, name_for_errors), name_for_errors))


def random_resized_crop_box(rng: np.random.Generator, height: int, width: int,
                            scale: Sequence[float] = DEFAULT_SCALE,
                            ratio: Sequence[float] = DEFAULT_RATIO) -> tuple[int, int, int, int]:
    """Samples a random-resized-crop box ``(top, left, h, w)`` inside a ``height x width`` image.

    The semantics of torchvision's ``RandomResizedCrop.get_params``
    (``torchvision/transforms/transforms.py``), which is also what big_vision's
    ``inception_crop`` (``big_vision/pp/ops_image.py``, via TF's
    ``sample_distorted_bounding_box``) approximates: up to 10 attempts draw an area
    fraction ``s ~ U(scale)`` and an aspect ratio ``r = exp(U(log ratio))`` (w / h), and
    give ``w = round(sqrt(s * H * W * r))``, ``h = round(sqrt(s * H * W / r))``; the
    first box that fits (``0 < h <= H``, ``0 < w <= W``) is placed uniformly. If none
    fits, the fallback is a centre crop of the whole image with its aspect ratio clamped
    into ``ratio`` (full width if the image is too tall, full height if too wide).
    Rounding makes the realised area fraction and ratio leave the ranges by at most
    about one pixel.

    Args:
      rng: NumPy generator (grain passes one per element).
      height, width: image size in pixels.
      scale: (min, max) fraction of the image area.
      ratio: (min, max) aspect ratio w / h.

    Returns:
      ``(top, left, h, w)`` ints with ``0 <= top``, ``top + h <= height`` (same for width).
    """
    lo_s, hi_s = (float(v) for v in scale)
    lo_r, hi_r = (float(v) for v in ratio)
    if not (0 < lo_s <= hi_s and 0 < lo_r <= hi_r):
        raise ValueError(f"Need 0 < scale[0] <= scale[1] and 0 < ratio[0] <= ratio[1], got "
                         f"scale={tuple(scale)}, ratio={tuple(ratio)}.")
    if height < 1 or width < 1:
        raise ValueError(f"Cannot crop an empty image of size {height}x{width}.")
    area = height * width
    log_lo, log_hi = math.log(lo_r), math.log(hi_r)
    for _ in range(10):
        target = area * rng.uniform(lo_s, hi_s)
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < lo_r:  # Too tall for the range: full width, height from the smallest ratio.
        w, h = width, round(width / lo_r)
    elif in_ratio > hi_r:  # Too wide: full height.
        w, h = round(height * hi_r), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def draft_factor(box_hw: tuple[int, int], out_hw: tuple[int, int]) -> int:
    """Largest JPEG draft reduction (1, 2, 4 or 8) that keeps ``box_hw`` >= ``out_hw``.

    ``box_hw / factor >= out_hw`` on both axes, so the decoded crop never has fewer pixels
    than the output: draft only replaces the first part of a downscale (by a box-like DCT
    filter) and is never used when the crop box is upsampled or shrunk by less than 2x.
    """
    for f in _DRAFT_FACTORS:
        if box_hw[0] >= f * out_hw[0] and box_hw[1] >= f * out_hw[1]:
            return f
    return 1


def _apply_draft(img: Image.Image, factor: int) -> float:
    """Asks a JPEG for a 1/``factor`` decode; returns the reduction actually set (1.0 if none)."""
    if factor <= 1 or img.format != "JPEG":
        return 1.0
    width, height = img.size
    # JpegImageFile.draft picks the largest of 8/4/2/1 <= min(W // req_w, H // req_h).
    got = img.draft(img.mode, (width // factor, height // factor))
    return 1.0 if got is None else width / got[1][2]


def _size_hw(size: int | Sequence[int]) -> tuple[int, int]:
    """``crop_size`` (int or (h, w)) -> (h, w); rejects None."""
    if size is None:
        raise ValueError("A host-side view needs crop_size (int or (h, w)): images of unequal "
                         "size cannot be batched at their input size.")
    h, w = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    return int(h), int(w)


def _image(data: bytes | np.ndarray, name_for_errors: str) -> Image.Image:
    """An unloaded Pillow image from encoded bytes, or a loaded one from a uint8 array."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8 or data.ndim not in (2, 3):
            raise ValueError(f"{name_for_errors}: expected uint8 (H, W[, C]), got {data.dtype} "
                             f"{data.shape}.")
        return Image.fromarray(data[..., 0] if data.ndim == 3 and data.shape[-1] == 1 else data)
    return _open(bytes(data), name_for_errors)


def _decode_for(img: Image.Image, data: Any, factor: int, resize: str,
                name_for_errors: str) -> tuple[Image.Image | np.ndarray, float]:
    """Decodes ``img`` at 1/``factor`` for the ``resize`` backend: (what it resizes from, reduction).

    "opencv": an RGB or grayscale JPEG through simplejpeg (bit-identical to Pillow's decode, draft
    included) straight into an array; anything else, or a JPEG libjpeg complains about, through
    Pillow, whose errors name the file.
    """
    if resize == "opencv" and img.format == "JPEG" and img.mode in ("RGB", "L") and \
            isinstance(data, (bytes, bytearray, memoryview)):
        pixels = resizing.decode_jpeg(data, factor)
        if pixels is not None:
            return pixels, img.size[0] / pixels.shape[1]
    reduction = _apply_draft(img, factor)
    return resizing.source(_to_rgb(img, name_for_errors), resize), reduction


def multi_crop(rng: np.random.Generator, data: bytes | np.ndarray,
               views: Sequence[Mapping[str, Any]], *, use_draft: bool = True, resize: str = "pil",
               name_for_errors: str = "<image bytes>") -> list[np.ndarray]:
    """Decodes once and returns one random-resized crop per view, uint8 (h_v, w_v, 3) each.

    Each view dict gives ``crop_size`` (int or (h, w), required), ``crop_scale`` and
    ``crop_ratio`` (torchvision defaults (0.08, 1) and (3/4, 4/3) when absent); other keys
    are ignored here. All boxes are sampled first from the header's size (in view order,
    from ``rng``), then the JPEG is drafted by the smallest :func:`draft_factor` over the
    views (if ``use_draft``), decoded, and each box is resized from it by the ``resize`` backend
    ("pil" or "opencv", :mod:`jaxssl.data.resize`; the boxes do not depend on it).
    """
    resizing.check(resize)
    img = _image(data, name_for_errors)
    width, height = img.size
    sizes = [_size_hw(v.get("crop_size")) for v in views]
    boxes = [random_resized_crop_box(rng, height, width, v.get("crop_scale", DEFAULT_SCALE),
                                     v.get("crop_ratio", DEFAULT_RATIO)) for v in views]
    factor = min((draft_factor((h, w), out) for (_, _, h, w), out in zip(boxes, sizes)),
                 default=1)
    src, reduction = _decode_for(img, data, factor if use_draft else 1, resize, name_for_errors)
    return [resizing.box(src, (left / reduction, top / reduction, (left + w) / reduction,
                               (top + h) / reduction), out, resize, crop_first=True)
            for (top, left, h, w), out in zip(boxes, sizes)]


def random_resized_crop(rng: np.random.Generator, data: bytes | np.ndarray,
                        view: Mapping[str, Any], **kw: Any) -> np.ndarray:
    """One view: :func:`multi_crop` with a single view dict -> uint8 (h, w, 3)."""
    return multi_crop(rng, data, [view], **kw)[0]


def _eval_resized(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """torchvision's ``Resize(round(size * 256 / 224))`` + ``CenterCrop(size)``: (new_h, new_w, top, left).

    Shorter side to ``r``, longer side ``int(r * long / short)`` (``_compute_resized_output_size``),
    crop offset ``int(round((new - size) / 2))``.
    """
    short_side = round(size * EVAL_RESIZE_RATIO)
    if height <= width:
        new_h, new_w = short_side, int(short_side * width / height)
    else:
        new_h, new_w = int(short_side * height / width), short_side
    return new_h, new_w, int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))


def eval_box(height: int, width: int, size: int) -> tuple[float, float, float, float]:
    """The source region (left, top, right, bottom) that the eval transform maps to the output.

    torchvision ``Resize(round(size * 256 / 224))`` followed by ``CenterCrop(size)``
    (:func:`_eval_resized`), expressed in the original image's pixel coordinates so that one
    ``resize(box=...)`` does both.
    """
    new_h, new_w, top, left = _eval_resized(height, width, size)
    sy, sx = height / new_h, width / new_w
    return left * sx, top * sy, (left + size) * sx, (top + size) * sy


def center_crop(data: bytes | np.ndarray, size: int, *, use_draft: bool = True, resize: str = "pil",
                name_for_errors: str = "<image bytes>") -> np.ndarray:
    """Eval transform: shorter side to ``round(size * 256 / 224)``, centre ``size x size`` crop.

    Done as one bilinear resize of :func:`eval_box` (same filter centres and scale as
    resizing then cropping, so it matches torchvision's ``Resize`` + ``CenterCrop`` on PIL),
    with a JPEG draft when the box is at least 2x the output. ``resize="opencv"`` (no fractional
    boxes) takes torchvision's two steps instead: the whole (drafted) image resized to the
    ``Resize`` size with OpenCV (:mod:`jaxssl.data.resize`), then the centre crop sliced out.
    Returns uint8 (size, size, 3).
    """
    resizing.check(resize)
    img = _image(data, name_for_errors)
    width, height = img.size
    left, top, right, bottom = eval_box(height, width, size)
    factor = draft_factor((int(bottom - top), int(right - left)), (size, size))
    src, reduction = _decode_for(img, data, factor if use_draft else 1, resize, name_for_errors)
    if resize == "pil":
        return resizing.box(src, (left / reduction, top / reduction, right / reduction,
                                  bottom / reduction), (size, size), resize)
    new_h, new_w, top, left = _eval_resized(height, width, size)
    scaled = resizing.box(src, (0, 0, src.shape[1], src.shape[0]), (new_h, new_w), resize)
    return np.ascontiguousarray(scaled[top:top + size, left:left + size])


def _record_name(element: Mapping[str, Any]) -> str:
    """What an error should call this record: its TFDS id / file name if it has one."""
    for key in ("id", "file_name", "filename", "path"):
        if key in element:
            value = element[key]
            return value.decode() if isinstance(value, bytes) else str(value)
    return "<record without id or file name>"


class Views(grain.transforms.RandomMap):
    """grain ``RandomMap``: ``{"image": bytes, "label"}`` -> ``{"views": [uint8 ...], "label"}``.

    ``views`` is the list of view dicts (2 global + N local for multi-crop); the output
    holds one uint8 (h_v, w_v, 3) array per view, in that order. ``"label"`` is passed
    through when present (an unlabelled folder has none); other keys are dropped.

    Randomness: grain's ``MapDataset.random_map`` gives each element a fresh
    ``np.random.Generator(Philox(seed))`` whose counter is set to the element's **index in
    the dataset the map is applied to**, so a view depends on (seed, index) only: identical
    across runs, resumes, processes and worker counts. ``seed`` is ``random_map(...,
    seed=s)`` if given, else derived by grain from ``ds.seed(s)`` and the number of ops
    between the two, so changing the pipeline's shape changes the crops. Apply it *after* ``.repeat()``:
    the index of epoch ``e``'s ``i``-th element is then ``e * len(ds) + i``, so every epoch
    gets new crops. Mapped before ``repeat()``, every epoch would see the same crops.
    """

    def __init__(self, views: Sequence[Mapping[str, Any]], *, use_draft: bool = True, resize: str = "pil"):
        """Checks every view has a crop_size and the resize backend; keeps copies of the view dicts."""
        if not views:
            raise ValueError("Views needs at least one view dict.")
        self.views = [dict(v) for v in views]
        for v in self.views:
            _size_hw(v.get("crop_size"))
        self.use_draft = use_draft
        self.resize = resizing.check(resize)

    def random_map(self, element: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        """Decodes ``element["image"]`` once and crops every view from it."""
        out = {"views": multi_crop(rng, element["image"], self.views, use_draft=self.use_draft,
                                   resize=self.resize, name_for_errors=_record_name(element))}
        if "label" in element:
            out["label"] = element["label"]
        return out


class EvalView(grain.transforms.Map):
    """grain ``Map``: ``{"image": bytes, "label"}`` -> ``{"image": uint8 (size, size, 3), "label"}``.

    Applies :func:`center_crop` (the deterministic eval transform).
    """

    def __init__(self, size: int, *, use_draft: bool = True, resize: str = "pil"):
        """``size``: output side in pixels; ``resize``: "pil" or "opencv" (:mod:`jaxssl.data.resize`)."""
        self.size = int(size)
        self.use_draft = use_draft
        self.resize = resizing.check(resize)

    def map(self, element: Mapping[str, Any]) -> dict[str, Any]:
        """Decodes and centre-crops ``element["image"]``."""
        out = {"image": center_crop(element["image"], self.size, use_draft=self.use_draft,
                                    resize=self.resize, name_for_errors=_record_name(element))}
        if "label" in element:
            out["label"] = element["label"]
        return out
