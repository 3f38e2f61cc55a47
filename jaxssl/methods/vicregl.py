"""VICRegL (Bardes et al., 2022, arXiv:2210.01571): VICReg on global embeddings and on matched local features.

"VICRegL [...] learns good global and local features simultaneously [...] the VICReg criterion is
applied to pairs of global feature vectors. Simultaneously, the VICReg criterion is applied to
pairs of local feature vectors occurring before the last pooling layer" (abstract), matched by
location in the image and by distance in feature space. Following facebookresearch/VICRegL
(`main_vicregl.py`, `transforms.py`):

* Network: a ResNet backbone returning its pooled features and last feature map
  (`resnet.Model(return_map=True)`), the expander on the pooled features (`--mlp`), and the maps
  projector applied to every feature-map position (`--maps-mlp`). Each view is its own forward
  pass (`forward_networks` loops over the views; BatchNorm statistics per view).
* Crops and their locations: the loss needs where each feature-map cell lies in the original
  image (`RandomResizedCropWithLocation`, `_location_to_NxN_grid`: cell (k, l) of an N x N grid
  at (top + (k + 1/2) h / N, left + (l + 1/2) w / N)). The trainer's views do not report their
  crop boxes, so this method crops itself: the configured views are the photometric
  augmentations of the whole image (no crop, no flip), and the method takes `num_crops` random
  resized crops of `crop_sizes` with `crop_scales` (`augment.random_resized_crop_with_boxes`), a
  horizontal flip with probability `flip_p`, and computes the grids. Official default
  `--no-flip-grid 1`: the grid is NOT mirrored when the crop is flipped (`flip_grid=False`).
  Deviation: the photometric ops run on the whole image before the crop (officially after);
  they are per-pixel or per-image operations, so only the image statistics that contrast uses
  (the mean) and the blur scale differ.
* Loss: `losses.vicregl_terms` with the global views first, official
  matching (feature-based on all positions, location-based keeping `num_matches` = (20, 4)),
  weighted by alpha (0.75) and the VICReg coefficients (25, 25, 1); statistics over the global
  batch. No teacher, no extra state, no stop_gradient.
* The official online linear classifier on the detached representation is not part of the
  objective here (jaxssl evaluates with kNN / linear probes); nor is its lower learning rate for
  the maps projector (`--maps-lr-ratio 0.1`), which the optimiser here cannot express.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxssl import augment, losses, monitors
from jaxssl.methods import base
from jaxssl.models import heads


class Net(nn.Module):
    """backbone -> expander (pooled features) and maps projector (every feature-map position).

    `__call__(x, train)` -> {"features": (B, F), "projection": (B, D), "maps": (B, h, w, C)};
    `each(views)` one pass per view; `features(x)` the backbone's pooled features alone.
    """

    backbone: nn.Module
    projector: nn.Module
    maps_projector: nn.Module

    def __call__(self, x, train: bool = True):
        h, fmap = self.backbone(x, train=train, return_map=True)
        b, gh, gw, c = fmap.shape
        maps = self.maps_projector(fmap.reshape(b * gh * gw, c), train=train).reshape(b, gh, gw, -1)
        return {"features": h, "projection": self.projector(h, train=train), "maps": maps}

    def each(self, views, train: bool = True):
        return [self(v, train=train) for v in views]

    def features(self, x, train: bool = False):
        return self.backbone(x, train=train)


def location_grid(boxes: jax.Array, grid: tuple[int, int], flipped: jax.Array | None = None) -> jax.Array:
    """(B, 4) int boxes [top, left, h, w] -> (B, gh * gw, 2) (y, x) image coordinates of the grid cells' centres.

    The official `_location_to_NxN_grid`; `flipped` (B,) bool mirrors the columns of those rows
    (the official grid flip, off by default there: `--no-flip-grid 1`).
    """
    gh, gw = grid
    b = boxes.astype(jnp.float32)
    ys = b[:, 0:1] + (jnp.arange(gh) + 0.5)[None] * b[:, 2:3] / gh  # (B, gh)
    xs = b[:, 1:2] + (jnp.arange(gw) + 0.5)[None] * b[:, 3:4] / gw  # (B, gw)
    if flipped is not None:
        xs = jnp.where(flipped[:, None], xs[:, ::-1], xs)
    yy = jnp.broadcast_to(ys[:, :, None], (b.shape[0], gh, gw))
    xx = jnp.broadcast_to(xs[:, None, :], (b.shape[0], gh, gw))
    return jnp.stack([yy, xx], axis=-1).reshape(b.shape[0], gh * gw, 2)


def make(*, backbone: nn.Module, proj_hidden: Sequence[int] = (8192, 8192), proj_dim: int = 8192,
         maps_hidden: Sequence[int] = (512, 512), maps_dim: int = 512, crop_sizes: Sequence[int] = (224,),
         num_crops: Sequence[int] = (2,), crop_scales: Sequence[Sequence[float]] = ((0.08, 1.0),),
         flip_p: float = 0.5, flip_grid: bool = False, alpha: float = 0.75, inv_coeff: float = 25.0,
         var_coeff: float = 25.0, cov_coeff: float = 1.0, num_matches: Sequence[int] = (20, 4),
         l2_all_matches: bool = True, eps: float = 1e-4, dtype=jnp.float32) -> base.Method:
    """VICRegL.

    Args:
      backbone: a `jaxssl.models.resnet.Model` (it must accept `return_map=True`).
      proj_hidden, proj_dim: the expander (`--mlp 8192-8192-8192`).
      maps_hidden, maps_dim: the maps projector (`--maps-mlp 512-512-512`).
      crop_sizes, num_crops, crop_scales: groups of crops, the global group first; the config gives
        sum(num_crops) photometric views, in that order. Default: the README's ResNet-50 command,
        2 crops of 224 px with scale 0.08-1 (`--size-crops 224 --num-crops 2 --min_scale_crops 0.08
        --max_scale_crops 1.0`); `main_vicregl.py`'s own defaults (its ConvNeXt multi-crop) are
        (224, 96), (2, 6), ((0.4, 1), (0.08, 0.4)).
      flip_p: horizontal flip probability of every crop (0.5).
      flip_grid: mirror the location grid of flipped crops (official `--no-flip-grid 1`: False).
      alpha: weight of the global criterion (`--alpha 0.75`).
      inv_coeff, var_coeff, cov_coeff: `--inv-coeff 25`, `--var-coeff 25`, `--cov-coeff 1`.
      num_matches: location-matching pairs kept (`--num_matches 20 4`), capped at the positions.
      l2_all_matches: feature matching keeps every position (`--l2_all_matches 1`).
      eps: variance epsilon (1e-4).
      dtype: compute dtype of the heads.
    """
    if not len(crop_sizes) == len(num_crops) == len(crop_scales) >= 1 or num_crops[0] < 1 or sum(num_crops) < 2:
        raise ValueError(f"VICRegL takes crop groups (global first, >= 1 global crop, >= 2 crops) of equal-length "
                         f"crop_sizes, num_crops and crop_scales, got {crop_sizes}, {num_crops} and {crop_scales}.")
    net = Net(backbone, heads.MLP(tuple(proj_hidden), proj_dim, dtype=dtype),
              heads.MLP(tuple(maps_hidden), maps_dim, dtype=dtype))
    specs = [(size, tuple(scale)) for size, scale, n in zip(crop_sizes, crop_scales, num_crops) for _ in range(n)]

    def crops(views, rng):
        out, boxes, flips = [], [], []
        for i, (view, (size, scale)) in enumerate(zip(views, specs)):
            k_crop, k_flip = jax.random.split(jax.random.fold_in(rng, i))
            x, box = augment.random_resized_crop_with_boxes(k_crop, view, size=size, scale=scale)
            flip = jax.random.uniform(k_flip, (x.shape[0],)) < flip_p
            out.append(jnp.where(flip[:, None, None, None], x[:, :, ::-1], x))
            boxes.append(box)
            flips.append(flip)
        return out, boxes, flips

    def loss_fn(params, model_state, teacher, extra, views, rng, step):
        del teacher, step
        if len(views) != len(specs):
            raise ValueError(f"VICRegL expects sum(num_crops) = {len(specs)} photometric views (uncropped), got "
                             f"{len(views)}; set config.input.views.")
        images, boxes, flips = crops(views, rng)
        outs, new_state = base.apply_each(net, {"params": params, **model_state}, images)
        maps, locations = [], []
        for o, box, flip in zip(outs, boxes, flips):
            b, gh, gw, c = o["maps"].shape
            maps.append(o["maps"].reshape(b, gh * gw, c))
            locations.append(location_grid(box, (gh, gw), flip if flip_grid else None))
        terms = losses.vicregl_terms([o["projection"] for o in outs], maps, locations, global_views=num_crops[0],
                                     num_matches=tuple(num_matches), l2_all_matches=l2_all_matches, eps=eps)
        glob = inv_coeff * terms["invariance"] + var_coeff * terms["variance"] + cov_coeff * terms["covariance"]
        local = (inv_coeff * terms["local_invariance"] + var_coeff * terms["local_variance"]
                 + cov_coeff * terms["local_covariance"])
        loss = alpha * glob + (1.0 - alpha) * local
        metrics = {**terms, "global_loss": glob, "local_loss": local,
                   "z_std": monitors.feature_std(outs[0]["projection"]), "h_std": monitors.feature_std(outs[0]["features"])}
        return loss, (new_state, extra, metrics)

    return base.Method(net, loss_fn)
