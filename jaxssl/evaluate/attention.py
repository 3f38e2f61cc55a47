"""Self-attention maps of a ViT's CLS token, as in DINO (Caron et al., 2021, arXiv:2104.14294).

DINO Sec. 4.2.1 / Fig. 3: "we look at the self-attention of the [CLS] token on the heads of the
last layer". Its ``visualize_attention.py`` takes the last block's attention weights, keeps the
row of the CLS query and the columns of the patches, thresholds each head's map to "keep 60% of
the mass" and upsamples both with nearest-neighbour interpolation by the patch size.

The interface is deliberately small, so that any backbone that can give attention weights works:

* :func:`cls_to_patch` takes the softmax weights of one block, (B, heads, T, T) with the CLS
  token (and optionally register tokens) first, and returns the CLS-to-patch attention
  (B, heads, N) renormalised to sum to one over the N patches (the CLS-to-CLS weight is
  dropped, as DINO does).
* :func:`attention_maps` takes those (B, heads, N) weights and the patch grid (gh, gw) and
  returns per-head maps (B, heads, gh, gw), optionally upsampled to the image size; every map
  sums to one (over patches, or over pixels after upsampling).
* :func:`threshold_masks` gives DINO's masks: the smallest set of highest-attention positions
  holding at least ``mass`` of each map.
* :func:`vit_cls_attention` runs ``jaxssl.models.vit`` and returns the last block's
  CLS-to-patch attention with its grid.

``jaxssl.viz.save_attention_grid`` writes the images, maps and masks as one PNG grid.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp


def cls_to_patch(weights: jax.Array, *, num_prefix_tokens: int = 1) -> jax.Array:
    """CLS-query attention over the patch tokens, renormalised per head.

    .. math::

        a_{bhn} = \\frac{A_{bh,0,p+n}}{\\sum_{m=1}^{N} A_{bh,0,p+m}}, \\qquad n = 1..N

    with :math:`p` = ``num_prefix_tokens`` (CLS and register tokens, which are not patches).

    Args:
        weights: (B, heads, T, T) softmax attention weights (rows: queries, columns: keys) with
            the CLS token at index 0 and the patch tokens last, T = num_prefix_tokens + N.
        num_prefix_tokens: tokens before the patches (1: CLS only).

    Returns:
        float32 (B, heads, N), each (b, h) row summing to one.
    """
    weights = jnp.asarray(weights, jnp.float32)
    if weights.ndim != 4 or weights.shape[-1] != weights.shape[-2]:
        raise ValueError(f"weights must be (B, heads, T, T) attention weights, got shape {weights.shape}.")
    if not 0 < num_prefix_tokens < weights.shape[-1]:
        raise ValueError(f"num_prefix_tokens={num_prefix_tokens} must be in [1, T={weights.shape[-1]}).")
    return _normalize(weights[:, :, 0, num_prefix_tokens:])


def _normalize(a: jax.Array) -> jax.Array:
    """Divide the last axis by its sum (a uniform map where the sum is 0)."""
    total = jnp.sum(a, axis=-1, keepdims=True)
    return jnp.where(total > 0, a / jnp.where(total > 0, total, 1.0), 1.0 / a.shape[-1])


def attention_maps(cls_attention: jax.Array, grid_size: tuple[int, int], *,
                   image_size: tuple[int, int] | None = None, method: str = "nearest") -> jax.Array:
    """Per-head CLS attention maps over the patch grid, optionally upsampled over the image.

    Args:
        cls_attention: (B, heads, N) non-negative CLS-to-patch weights (e.g. from
            :func:`cls_to_patch`), N = gh * gw in row-major patch order.
        grid_size: (gh, gw), the patch grid (image size // patch size).
        image_size: (H, W) to upsample to, or None for the patch grid.
        method: ``jax.image.resize`` method: "nearest" (DINO: each patch covers its pixels) or
            "linear"/"cubic" for smooth maps.

    Returns:
        float32 (B, heads, gh, gw), or (B, heads, H, W) with ``image_size``; each map sums to one.
    """
    a = jnp.asarray(cls_attention, jnp.float32)
    gh, gw = grid_size
    if a.ndim != 3 or a.shape[-1] != gh * gw:
        raise ValueError(f"cls_attention must be (B, heads, N) with N = {gh}*{gw} = {gh * gw} patches, "
                         f"got shape {a.shape}.")
    maps = _normalize(a).reshape(*a.shape[:2], gh, gw)
    if image_size is None:
        return maps
    up = jax.image.resize(maps, (*a.shape[:2], *image_size), method=method)
    # Bicubic overshoot can go negative; the map stays a distribution over pixels.
    up = jnp.maximum(up, 0.0)
    return _normalize(up.reshape(*a.shape[:2], -1)).reshape(up.shape)


def threshold_masks(maps: jax.Array, mass: float = 0.6) -> jax.Array:
    """DINO's thresholded masks: the top positions that hold at least ``mass`` of each map.

    Following DINO's ``visualize_attention.py``: sort a map's values ascending, normalise, take
    the cumulative sum and keep the positions where it exceeds ``1 - mass``, i.e. drop the lowest
    positions while the dropped mass stays at most ``1 - mass``.

    Args:
        maps: (..., h, w) non-negative maps (any leading axes, e.g. (B, heads)).
        mass: fraction in (0, 1] of each map's mass to keep (0.6 in DINO Fig. 3).

    Returns:
        bool (..., h, w): True at the kept positions; their values sum to >= ``mass`` of the map.
    """
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"mass must be in (0, 1], got {mass}.")
    maps = jnp.asarray(maps, jnp.float32)
    flat = _normalize(maps.reshape(*maps.shape[:-2], -1))
    order = jnp.argsort(flat, axis=-1)
    cum = jnp.cumsum(jnp.take_along_axis(flat, order, axis=-1), axis=-1)
    keep_sorted = cum > 1.0 - mass
    # Scatter the kept flags back from sorted order to position order.
    keep = jnp.take_along_axis(keep_sorted, jnp.argsort(order, axis=-1), axis=-1)
    return keep.reshape(maps.shape)


def vit_cls_attention(model: Any, variables: Any, images: jax.Array, *, block: int = -1) -> tuple[jax.Array,
                                                                                                    tuple[int, int]]:
    """CLS-to-patch attention of one block (the last by default) of a ``jaxssl.models.vit.Model``.

    Args:
        model: the ViT backbone (``jaxssl.models.vit.Model``), not a method's network (pass
            ``variables["params"]["backbone"]``-style variables of the backbone).
        variables: its variables, ``{"params": ...}``.
        images: (B, H, W, 3) float images, preprocessed as in training.
        block: which block's attention (-1: the last, as DINO).

    Returns:
        ((B, heads, N) weights summing to one over patches, (gh, gw) patch grid).
    """
    patch = model.dims()[3]
    grid = (images.shape[1] // patch, images.shape[2] // patch)
    return _vit_cls_attention(model, variables, jnp.asarray(images), block=block, grid=grid), grid


@functools.partial(jax.jit, static_argnames=("model", "block", "grid"))
def _vit_cls_attention(model, variables, images, *, block: int, grid: tuple[int, int]) -> jax.Array:
    from jaxssl.models import vit  # pylint: disable=g-import-not-at-top  (only ViTs have attention)

    weights = vit.intermediates(model, variables, images)["attention"][block]
    return cls_to_patch(weights, num_prefix_tokens=weights.shape[-1] - grid[0] * grid[1])
