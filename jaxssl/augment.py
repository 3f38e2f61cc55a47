"""On-device image augmentation for SimCLR/BYOL views: pure, batched, jittable JAX.

Every random op has the signature ``op(rng, images, *, hyperparameters...)`` and works on a batch of
float32 images in [0, 1] of shape (B, H, W, 3). ``rng`` is split into one key per image
(``jax.random.split(rng, B)``) and each image draws all the uniforms it needs from its own key in
one ``jax.vmap``-ed call (fewer threefry calls compile and run faster), so image ``i`` depends only
on its key. An op with probability ``p`` applies itself to each image independently (a Bernoulli
draw per image); ``p=0`` returns the input unchanged (bitwise) and ``p=1`` always applies.
Hyperparameters are static Python values; every op is jittable, with no Python loop over images.

The recipe follows SimCLR (Chen et al., 2020, arXiv:2002.05709, appendix A: random crop with
resize and flip, colour distortion, Gaussian blur) and BYOL (Grill et al., 2020,
arXiv:2006.07733, table 6: adds solarisation and asymmetric blur/solarise probabilities). The
colour ops follow torchvision semantics (``ColorJitter``, ``RandomGrayscale``, ``GaussianBlur``,
``RandomResizedCrop``).

A view is described by a plain dict (solo-learn style) and applied with :func:`apply`::

    views = [dict(crop_size=32, crop_scale=(0.08, 1.0), flip_p=0.5, jitter_p=0.8,
                  saturation=0.4, grayscale_p=0.2)] * 2
    v1, v2 = make_views(rng, uint8_batch, views)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# ITU-R 601-2 luma weights, as torchvision's rgb_to_grayscale.
_GRAY_WEIGHTS = (0.299, 0.587, 0.114)

# Defaults for every key `apply` accepts. Probabilities default to 0 (op off) and the crop to the
# full image at the input size, so `apply(rng, x, {})` only converts to float32.
DEFAULT_VIEW: dict[str, Any] = {
    # random_resized_crop; crop_size is an int or (h, w), None = the input size.
    "crop_size": None, "crop_scale": (1.0, 1.0), "crop_ratio": (3 / 4, 4 / 3),
    "flip_p": 0.0,
    # color_jitter (torchvision/BYOL ranges; on only if jitter_p > 0).
    "brightness": 0.4, "contrast": 0.4, "saturation": 0.2, "hue": 0.1, "jitter_p": 0.0,
    "grayscale_p": 0.0,
    # gaussian_blur; kernel_size None = SimCLR's 10% of the image height, made odd.
    "blur_p": 0.0, "blur_sigma": (0.1, 2.0), "blur_kernel_size": None,
    "solarize_p": 0.0, "solarize_threshold": 0.5,
    # normalize, only if both are given (per-channel tuples).
    "mean": None, "std": None,
}
# The type of every `DEFAULT_VIEW` key, as an annotation string (the config checks in
# jaxssl/train/validate.py read it). Colour-jitter strengths may also be (low, high) ranges.
VIEW_TYPES: dict[str, str] = {
    "crop_size": "int | tuple[int, int] | None", "crop_scale": "tuple[float, float]",
    "crop_ratio": "tuple[float, float]", "flip_p": "float",
    **{k: "float | tuple[float, float]" for k in ("brightness", "contrast", "saturation", "hue")},
    "jitter_p": "float", "grayscale_p": "float",
    "blur_p": "float", "blur_sigma": "tuple[float, float]", "blur_kernel_size": "int | None",
    "solarize_p": "float", "solarize_threshold": "float",
    "mean": "tuple[float, float, float] | None", "std": "tuple[float, float, float] | None",
}
# The input size assumed where a view leaves crop_size unset and no images are at hand (a model
# built before the data arrives): CIFAR-10's 32x32, the default dataset of configs/.
DEFAULT_INPUT_SIZE = 32

Array = jax.Array


def to_float(images: Array) -> Array:
    """uint8 images in [0, 255] -> float32 in [0, 1]; float input is cast to float32 unchanged."""
    images = jnp.asarray(images)
    return images.astype(jnp.float32) / (255.0 if images.dtype == jnp.uint8 else 1.0)


def normalize(images: Array, mean: Sequence[float] | Array, std: Sequence[float] | Array) -> Array:
    """``(x - mean) / std`` with per-channel ``mean`` and ``std`` of shape (C,) on the last axis."""
    return (images - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def _grayscale(images: Array) -> Array:
    """Luma ``0.299 R + 0.587 G + 0.114 B`` of (..., 3) images, shape (..., 1)."""
    r, g, b = images[..., 0:1], images[..., 1:2], images[..., 2:3]
    return _GRAY_WEIGHTS[0] * r + _GRAY_WEIGHTS[1] * g + _GRAY_WEIGHTS[2] * b


def _per_image_uniforms(rng: Array, batch: int, num: int) -> Array:
    """(batch, num) U[0, 1) numbers; row ``i`` comes from key ``split(rng, batch)[i]``."""
    keys = jax.random.split(rng, batch)
    return jax.vmap(lambda key: jax.random.uniform(key, (num,)))(keys)


def _apply_with_prob(rng: Array, images: Array, p: float, fn, num_params: int = 0) -> Array:
    """``where(u_i0 < p, fn(u[:, 1:], images)[i], images[i])`` with per-image uniforms ``u``.

    ``fn(u, images)`` gets ``num_params`` uniforms per image. ``p == 0`` skips ``fn`` entirely.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"Probability p must be in [0, 1], got {p}.")
    if p == 0:
        return images
    u = _per_image_uniforms(rng, images.shape[0], 1 + num_params)
    applied = u[:, 0] < p  # Bernoulli(p); p = 1 always applies since u < 1.
    return jnp.where(applied[:, None, None, None], fn(u[:, 1:], images), images)


def _sample_crop_box(rng: Array, height: int, width: int, scale: tuple[float, float] = (0.08, 1.0),
                     ratio: tuple[float, float] = (3 / 4, 4 / 3), num_tries: int = 10) -> Array:
    """One torchvision ``RandomResizedCrop.get_params`` box: int32 ``[top, left, h, w]``.

    Area fraction ~ U(scale), aspect ratio ``w/h`` ~ exp(U(log ratio)); ``w = round(sqrt(A r))``,
    ``h = round(sqrt(A / r))``. torchvision retries 10 times; here the ``num_tries`` candidates are
    drawn at once and the first with ``0 < w <= W, 0 < h <= H`` wins, else the centre crop clipped
    to the ratio range. The offset is uniform over the valid positions.
    """
    u = jax.random.uniform(rng, (2 * num_tries + 2,))
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u[:num_tries])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = jnp.exp(log_lo + (log_hi - log_lo) * u[num_tries:2 * num_tries])
    w = jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32)
    h = jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32)
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = jnp.argmax(valid)
    # Static fallback, as torchvision: the centre crop, narrowed to the nearest ratio bound.
    in_ratio = width / height
    fw = width if in_ratio <= max(ratio) else int(round(height * max(ratio)))
    fh = height if in_ratio >= min(ratio) else int(round(width / min(ratio)))
    any_valid = jnp.any(valid)
    hw = jnp.where(any_valid, jnp.stack([h[first], w[first]]), jnp.array([fh, fw]))
    # torch.randint(0, H - h + 1) as floor(u * (H - h + 1)); the minimum guards u -> 1 rounding.
    room = jnp.array([height, width]) - hw
    offset = jnp.floor(u[-2:] * (room + 1)).astype(jnp.int32)
    offset = jnp.where(any_valid, jnp.minimum(offset, room), room // 2)
    return jnp.concatenate([offset, hw]).astype(jnp.int32)


def _crop_resize(image: Array, box: Array, size: tuple[int, int]) -> Array:
    """Crop ``box = [top, left, h, w]`` of one (H, W, C) image and resize it bilinearly to ``size``.

    One ``jax.image.scale_and_translate``: output pixel centre ``o + 0.5`` samples the input at
    ``(o + 0.5) / s + top`` with ``s = size / h`` (likewise for columns), i.e. two small dense
    (H x size) and (W x size) weight matrices, no gather. Antialiased when downsampling (as
    torchvision's default); for upsampling this is plain bilinear interpolation. Unlike
    torchvision, which crops first, a border output pixel may blend in the image pixel just
    outside the box (at most half a pixel's weight); samples never leave the image.
    """
    box = box.astype(jnp.float32)
    scale = jnp.stack([size[0] / box[2], size[1] / box[3]])
    translation = -box[:2] * scale
    shape = (*size, image.shape[-1])
    return jax.image.scale_and_translate(image, shape, (0, 1), scale, translation, "linear")


def random_resized_crop(rng: Array, images: Array, *, size: int | tuple[int, int],
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Array:
    """torchvision ``RandomResizedCrop``: a random box per image, resized bilinearly to ``size``.

    ``images`` (B, H, W, C) float (uint8 is cast to float32 in [0, 255]) -> float32
    (B, s_h, s_w, C) in the input's value range, for ``size = s`` (square) or ``(s_h, s_w)``.
    ``scale`` bounds the crop area as a fraction of ``H * W``; ``ratio`` bounds ``w / h``.
    """
    return random_resized_crop_with_boxes(rng, images, size=size, scale=scale, ratio=ratio)[0]


def random_resized_crop_with_boxes(rng: Array, images: Array, *, size: int | tuple[int, int],
                                   scale: tuple[float, float] = (0.08, 1.0),
                                   ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[Array, Array]:
    """:func:`random_resized_crop` that also returns the boxes: (crops, int32 (B, 4) ``[top, left, h, w]``).

    For methods that need where each crop came from (VICRegL's location-based matching).
    """
    size = (size, size) if isinstance(size, int) else tuple(size)
    if not (0 < scale[0] <= scale[1] and 0 < ratio[0] <= ratio[1]):
        raise ValueError(f"Need 0 < scale[0] <= scale[1] and 0 < ratio[0] <= ratio[1] (ordered (low, high) "
                         f"pairs), got scale={tuple(scale)}, ratio={tuple(ratio)}.")
    _, height, width, _ = images.shape
    images = images.astype(jnp.float32)
    keys = jax.random.split(rng, images.shape[0])
    boxes = jax.vmap(lambda k: _sample_crop_box(k, height, width, tuple(scale), tuple(ratio)))(keys)
    return jax.vmap(lambda im, b: _crop_resize(im, b, size))(images, boxes), boxes


def random_flip(rng: Array, images: Array, *, p: float = 0.5) -> Array:
    """Horizontal flip (reverse the W axis) of each image with probability ``p``. (B, H, W, C)."""
    return _apply_with_prob(rng, images, p, lambda u, x: x[:, :, ::-1, :])


def rgb_to_hsv(rgb: Array) -> Array:
    """RGB in [0, 1] -> HSV with H, S, V in [0, 1), over the last axis (size 3); as ``colorsys``.

    ``V = max``, ``S = (max - min) / max`` (0 if max == 0), ``H = sector / 6 mod 1`` where the
    sector is ``(G - B) / d``, ``2 + (B - R) / d`` or ``4 + (R - G) / d`` for max = R, G, B and
    ``d = max - min``; grey pixels get H = S = 0. This is torchvision's ``_rgb2hsv``.
    """
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    maxc = jnp.maximum(jnp.maximum(r, g), b)
    minc = jnp.minimum(jnp.minimum(r, g), b)
    grey = maxc == minc
    delta = maxc - minc
    s = delta / jnp.where(grey, 1.0, maxc)  # maxc > 0 whenever not grey: no 0/0.
    d = jnp.where(grey, 1.0, delta)
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    h = jnp.where(maxc == r, bc - gc, jnp.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = jnp.mod(jnp.where(grey, 0.0, h) / 6.0 + 1.0, 1.0)
    return jnp.stack([h, s, maxc], axis=-1)


def hsv_to_rgb(hsv: Array) -> Array:
    """HSV -> RGB over the last axis; the inverse of :func:`rgb_to_hsv` (torchvision ``_hsv2rgb``).

    With ``i = floor(6 H) mod 6``, ``f = 6 H - floor(6 H)``, ``p = V(1 - S)``, ``q = V(1 - S f)``,
    ``t = V(1 - S (1 - f))``, (R, G, B) is (V,t,p), (q,V,p), (p,V,t), (p,q,V), (t,p,V), (V,p,q)
    for ``i = 0..5``.
    """
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    i6 = jnp.floor(h * 6.0)
    f = h * 6.0 - i6
    i = jnp.mod(i6.astype(jnp.int32), 6)
    p = jnp.clip(v * (1.0 - s), 0.0, 1.0)
    q = jnp.clip(v * (1.0 - s * f), 0.0, 1.0)
    t = jnp.clip(v * (1.0 - s * (1.0 - f)), 0.0, 1.0)
    sector = [i == k for k in range(5)]
    r = jnp.select(sector, [v, q, p, p, t], v)
    g = jnp.select(sector, [t, v, v, q, p], p)
    b = jnp.select(sector, [p, p, t, v, v], q)
    return jnp.stack([r, g, b], axis=-1)


def _adjust_hue(image: Array, hue_factor: Array) -> Array:
    """torchvision ``adjust_hue``: ``H <- (H + hue_factor) mod 1`` in HSV space."""
    hsv = rgb_to_hsv(image)
    h = jnp.mod(hsv[..., 0] + hue_factor, 1.0)
    return hsv_to_rgb(jnp.stack([h, hsv[..., 1], hsv[..., 2]], axis=-1))


def _jitter_one(image: Array, factors: Array, order: Array, use_hue: bool = True) -> Array:
    """torchvision ``ColorJitter`` on one (H, W, 3) image with given factors, applied in ``order``.

    ``factors = [brightness, contrast, saturation, hue]``; ``order`` is a permutation of 0..3
    (0 brightness, 1 contrast, 2 saturation, 3 hue). The first three are the blend
    ``x <- clip(a x + (1 - a) y, 0, 1)`` with ``y = 0`` (brightness), ``y = mean(gray(x))``
    (contrast) or ``y = gray(x)`` (saturation); hue is :func:`_adjust_hue`.

    Under ``vmap`` a ``lax.switch`` over the order would evaluate every op at every step (16
    evaluations, 4 of them the costly HSV round trip). Instead the three blends share one
    formula whose target ``y`` is selected per step, and hue runs exactly once: the blends before
    it in ``order`` (positions 0..2), then hue, then the blends after it (positions 1..3). A blend
    outside its pass uses ``a = 1``, the identity. ``use_hue=False`` (static) skips the hue op.
    """
    hue_pos = jnp.argmax(order == 3)

    def blend(x: Array, step: Array, active: Array) -> Array:
        op = order[step]
        gray = _grayscale(x)
        target = jnp.where(op == 1, jnp.mean(gray), jnp.where(op == 2, gray, 0.0))
        a = jnp.where(active & (op != 3), factors[op], 1.0)
        return jnp.clip(a * x + (1.0 - a) * target, 0.0, 1.0)

    # fori_loop, not a Python loop: the loop carry makes XLA materialise each step. Unrolled, the
    # CPU fuser recomputes the whole chain inside every later consumer (3-6x slower).
    image = jax.lax.fori_loop(0, 3, lambda step, x: blend(x, step, step < hue_pos), image)
    if use_hue:
        image = _adjust_hue(image, factors[3])
    return jax.lax.fori_loop(1, 4, lambda step, x: blend(x, step, step > hue_pos), image)


def _factor_range(value: float | tuple[float, float], name: str) -> tuple[float, float]:
    """torchvision ColorJitter range check: ``v -> [max(0, 1 - v), 1 + v]``; hue: ``[-v, v]``."""
    is_hue = name == "hue"
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"{name} must be non-negative, got {value}.")
        lo, hi = (-value, value) if is_hue else (max(1.0 - value, 0.0), 1.0 + value)
    else:
        lo, hi = (float(v) for v in value)
    if lo > hi or (is_hue and not -0.5 <= lo <= hi <= 0.5) or (not is_hue and lo < 0):
        bounds = "within [-0.5, 0.5]" if is_hue else "non-negative"
        raise ValueError(f"{name} range must be ordered and {bounds}, got {value}.")
    return float(lo), float(hi)


def color_jitter(rng: Array, images: Array, *, brightness: float | tuple[float, float] = 0.4,
                 contrast: float | tuple[float, float] = 0.4,
                 saturation: float | tuple[float, float] = 0.2,
                 hue: float | tuple[float, float] = 0.1, p: float = 0.8) -> Array:
    """torchvision ``ColorJitter`` in a random order per image, applied with probability ``p``.

    Factors per image: brightness, contrast, saturation ~ U[max(0, 1 - v), 1 + v] and the hue
    shift ~ U[-h, h] (h <= 0.5); a tuple gives the range directly. Brightness scales ``x``,
    contrast blends with the mean of the grayscale image, saturation blends with the grayscale
    image, hue rotates H in HSV (see :func:`_jitter_one`). The four ops run in a random
    permutation per image (SimCLR appendix A, BYOL table 6: b=0.4, c=0.4, s=0.2, h=0.1, p=0.8).
    ``images``: float32 (B, H, W, 3) in [0, 1] -> same shape, in [0, 1].
    """
    names = ("brightness", "contrast", "saturation", "hue")
    ranges = [_factor_range(v, n) for v, n in zip((brightness, contrast, saturation, hue), names)]
    lo, hi = (jnp.asarray(v, jnp.float32) for v in zip(*ranges))
    use_hue = ranges[3] != (0.0, 0.0)

    def jitter(uniforms: Array, x: Array) -> Array:
        def one(u: Array, image: Array) -> Array:
            factors = lo + (hi - lo) * u[:4]
            order = jnp.argsort(u[4:])  # argsort of iid uniforms: a uniform random permutation.
            # hue = 0 statically skips the HSV round trip (a zero shift is a no-op anyway).
            return _jitter_one(image, factors, order, use_hue)

        return jax.vmap(one)(uniforms, x)

    return _apply_with_prob(rng, images, p, jitter, num_params=8)


def random_grayscale(rng: Array, images: Array, *, p: float = 0.2) -> Array:
    """torchvision ``RandomGrayscale``: each image becomes its luma (kept as 3 channels) w.p. ``p``.

    ``y = 0.299 R + 0.587 G + 0.114 B`` (ITU-R 601-2). (B, H, W, 3) -> (B, H, W, 3).
    """
    return _apply_with_prob(rng, images, p, lambda u, x: jnp.broadcast_to(_grayscale(x), x.shape))


def _blur_matrix(weights: Array, n: int) -> Array:
    """(B, n, n) matrices ``M_b = sum_t w_bt P_t``, ``(P_t x)_i = x[reflect(i + t - k // 2)]``.

    ``M_b @ x`` is the 1-D correlation of ``x`` with ``weights[b]`` under reflect padding
    (torchvision ``GaussianBlur``). A batched GEMM applies a different kernel per image and is a
    fusion boundary: written as k shifted slices, XLA recomputed the whole producer chain (crop,
    jitter, ...) once per tap, 2-4x slower in a full view on CPU.
    """
    k = weights.shape[1]
    src = np.abs(np.arange(n)[:, None] + np.arange(k) - k // 2)  # (n, k); reflect at 0.
    src = np.where(src > n - 1, 2 * (n - 1) - src, src)  # Reflect at n - 1.
    onehot = (jnp.asarray(src)[:, :, None] == jnp.arange(n)).astype(weights.dtype)  # (n, k, n)
    return jnp.einsum("bt,itj->bij", weights, onehot, precision="highest")


def gaussian_blur(rng: Array, images: Array, *, p: float = 0.5,
                  sigma: tuple[float, float] = (0.1, 2.0), kernel_size: int | None = None) -> Array:
    """Separable Gaussian blur with ``sigma ~ U(sigma)`` per image, applied with probability ``p``.

    Kernel ``w_t = exp(-t^2 / (2 sigma^2)) / sum_t(...)`` for ``t = -k//2 .. k//2``, applied along
    H then W with reflect padding (torchvision ``GaussianBlur``) as two matmuls. SimCLR appendix
    A: p = 0.5, sigma in [0.1, 2.0], kernel 10% of the image height; BYOL table 6: p = 1.0 / 0.1.
    Default odd ``kernel_size``: SimCLR's ``2 * (H // 10 // 2) + 1``, at least 3 (224 -> 23, as
    BYOL; 96 -> 9; 32 -> 3). (B, H, W, C) -> (B, H, W, C).
    """
    k = max(3, images.shape[1] // 10 // 2 * 2 + 1) if kernel_size is None else int(kernel_size)
    if k < 1 or k % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size}.")
    if k // 2 >= min(images.shape[1:3]):
        raise ValueError(f"kernel_size {k} too large for reflect padding of images {images.shape}.")
    offsets = jnp.arange(k, dtype=jnp.float32) - k // 2

    def blur(u: Array, x: Array) -> Array:
        sigmas = sigma[0] + (sigma[1] - sigma[0]) * u[:, 0]
        w = jnp.exp(-0.5 * jnp.square(offsets / sigmas[:, None]))
        w = w / jnp.sum(w, axis=1, keepdims=True)
        rows = _blur_matrix(w, x.shape[1])
        cols = rows if x.shape[2] == x.shape[1] else _blur_matrix(w, x.shape[2])
        x = jnp.einsum("bij,bjwc->biwc", rows, x, precision="highest")
        return jnp.einsum("bij,bhjc->bhic", cols, x, precision="highest")

    return _apply_with_prob(rng, images, p, blur, num_params=1)


def solarize(rng: Array, images: Array, *, p: float = 0.2, threshold: float = 0.5) -> Array:
    """BYOL solarisation ``x -> 1 - x where x >= threshold``, per image w.p. ``p``. (B, H, W, C)."""
    return _apply_with_prob(rng, images, p, lambda u, x: jnp.where(x >= threshold, 1.0 - x, x))


def _check_images(images: Array) -> None:
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"Expected images of shape (B, H, W, 3), got shape {tuple(images.shape)}.")
    if not (images.dtype == jnp.uint8 or jnp.issubdtype(images.dtype, jnp.floating)):
        raise ValueError(f"Expected uint8 images in [0, 255] or float images in [0, 1], "
                         f"got dtype {images.dtype}.")
    if jnp.issubdtype(images.dtype, jnp.floating) and not isinstance(images, jax.core.Tracer) and images.size:
        # Concrete floats only (under jit the values are unknown): [0, 255] floats would saturate silently.
        lo, hi = (float(v) for v in jax.device_get(_min_max(images)))
        if not (lo >= 0.0 and hi <= 1.0):
            raise ValueError(f"Float images must be in [0, 1], got values in [{lo:g}, {hi:g}]: pass uint8 images "
                             f"in [0, 255] as they are, or divide float images in [0, 255] by 255.")


@jax.jit
def _min_max(images: Array) -> Array:
    return jnp.stack([jnp.min(images), jnp.max(images)]).astype(jnp.float32)


def view_size(view: Mapping[str, Any], input_size: int | tuple[int, int] = DEFAULT_INPUT_SIZE) -> tuple[int, int]:
    """(height, width) of the images :func:`apply` makes from ``view`` for inputs of ``input_size``.

    ``view["crop_size"]`` as an int (square) or an (h, w) pair; unset or None: the input size,
    which is ``DEFAULT_INPUT_SIZE`` (32) where the caller does not know it, e.g. the example batch
    that initialises a model: ``jnp.zeros((2, *view_size(config.input.views[0]), 3))``.
    """
    size = view.get("crop_size") or input_size
    return (size, size) if isinstance(size, int) else tuple(size)


def apply(rng: Array, images: Array, view: Mapping[str, Any]) -> Array:
    """One augmented view of a batch from a view dict (keys and defaults: :data:`DEFAULT_VIEW`).

    Order: to_float -> random_resized_crop -> flip -> color_jitter -> grayscale -> blur -> solarize
    -> normalize (if ``mean``/``std`` are given). Each op gets its own key from ``rng``. The crop is
    skipped (statically) when it is the whole image at the input size, so ``apply(rng, x, {})``
    equals ``to_float(x)`` exactly. The view dict is static: ``jax.jit(partial(apply, view=v))``.

    ``images``: uint8 (B, H, W, 3) in [0, 255] or float in [0, 1] -> float32 (B, s_h, s_w, 3),
    in [0, 1] unless normalised. Unknown keys and malformed images raise ``ValueError``.
    """
    unknown = sorted(set(view) - set(DEFAULT_VIEW))
    if unknown:
        raise ValueError(f"Unknown augmentation key(s) {unknown}. "
                         f"Valid keys are: {sorted(DEFAULT_VIEW)}.")
    cfg = {**DEFAULT_VIEW, **view}
    if (cfg["mean"] is None) != (cfg["std"] is None):
        raise ValueError(f"Give both mean and std to normalise, got mean={cfg['mean']}, "
                         f"std={cfg['std']}.")
    images = jnp.asarray(images)
    _check_images(images)
    x = to_float(images)
    _, height, width, _ = x.shape
    size = view_size(cfg, (height, width))
    scale, ratio = tuple(cfg["crop_scale"]), tuple(cfg["crop_ratio"])
    k_crop, k_flip, k_jitter, k_gray, k_blur, k_solarize = jax.random.split(rng, 6)

    full_image = scale == (1.0, 1.0) and ratio[0] <= width / height <= ratio[1]
    if not (full_image and size == (height, width)):
        x = random_resized_crop(k_crop, x, size=size, scale=scale, ratio=ratio)
    x = random_flip(k_flip, x, p=cfg["flip_p"])
    x = color_jitter(k_jitter, x, brightness=cfg["brightness"], contrast=cfg["contrast"],
                     saturation=cfg["saturation"], hue=cfg["hue"], p=cfg["jitter_p"])
    x = random_grayscale(k_gray, x, p=cfg["grayscale_p"])
    x = gaussian_blur(k_blur, x, p=cfg["blur_p"], sigma=tuple(cfg["blur_sigma"]),
                      kernel_size=cfg["blur_kernel_size"])
    x = solarize(k_solarize, x, p=cfg["solarize_p"], threshold=cfg["solarize_threshold"])
    if cfg["mean"] is not None:
        x = normalize(x, cfg["mean"], cfg["std"])
    return x


def make_views(rng: Array, images: Array | Sequence[Array], views: Sequence[Mapping[str, Any]], *,
               cropped: bool = False) -> list[Array]:
    """``[apply(fold_in(rng, i), images, view_i)]``: one independently augmented batch per view.

    ``cropped=True``: ``images`` is a list with one batch per view, already random-resized-cropped to
    the view's size on the host (``jaxssl.data.encoded``); only the photometric ops run here (the crop
    keys of the view are dropped, so nothing is cropped a second time).
    """
    if not cropped:
        return [apply(jax.random.fold_in(rng, i), images, view) for i, view in enumerate(views)]
    if len(images) != len(views):
        raise ValueError(f"Got {len(images)} host-cropped view batches for {len(views)} views.")
    no_crop = lambda v: {k: val for k, val in v.items() if k not in ("crop_size", "crop_scale", "crop_ratio")}
    # Without crop keys `apply` keeps the input size and, with scale (1, 1), crops nothing; the ratio
    # range is widened so a non-square host crop is never taken for one to crop again.
    return [apply(jax.random.fold_in(rng, i), x, {**no_crop(view), "crop_ratio": (1e-6, 1e6)})
            for i, (x, view) in enumerate(zip(images, views))]
