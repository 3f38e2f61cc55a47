"""Projection / prediction heads shared by the joint-embedding methods.

`MLP(hidden=(2048,), out=128, norm="batch")` is the SimCLR projection head g(.) (Chen et al.,
2020, arXiv:2002.05709, Sec. 2.1: "we use a MLP with one hidden layer to obtain
z_i = g(h_i) = W(2) sigma(W(1) h_i)"); with BatchNorm after each hidden layer as in SimCLR v2
and the BYOL/MoCo v3 heads. `last_norm=True` adds a final BatchNorm after the bias-free output
layer: affine-free (SimSiam, MoCo v3 projector), or with a scale and no centring when
`last_norm_scale=True` (SimCLR: google-research/simclr tf2/model.py `ProjectionHead`, whose final
`LinearLayer(use_bias=False, use_bn=True)` builds `BatchNormRelu(relu=False, center=use_bias)`).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxssl import ops
from jaxssl.models import inits


def dense_init(name: str, fan_in: int) -> dict:
    """`nn.Dense` initialiser arguments: "lecun_normal" (flax's defaults: a truncated normal of
    variance 1/fan_in, zero bias) or "torch" (`torch.nn.Linear.reset_parameters`: kernel and bias
    uniform in +-1/sqrt(fan_in))."""
    if name == "lecun_normal":
        return {}
    if name == "torch":
        return {"kernel_init": nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform"),
                "bias_init": inits.torch_bias(fan_in)}
    raise ValueError(f"Unknown head kernel_init {name!r}; choose 'lecun_normal' or 'torch'.")


class MLP(nn.Module):
    """Linear -> [BN] -> ReLU, repeated for each hidden width, then Linear(out) [-> BN].

    Input (B, D_in) -> output (B, out), float32. `norm` is "batch", "layer" or "none";
    `activation` "relu" or "gelu" (exact GELU, torch's default; MSN's projection head).
    `kernel_init` is "lecun_normal" (flax's default; the TF/haiku references, SimCLR and BYOL) or
    "torch" (PyTorch's `nn.Linear` default, the heads of every PyTorch reference: kernel and bias
    uniform in +-1/sqrt(fan_in)). The init sets the weights' scale and with it, under BatchNorm
    and weight decay, the effective step size early in training (benchmarks/RESULTS.md section 7).
    """

    hidden: Sequence[int] = (2048,)
    out: int = 128
    norm: str = "batch"
    last_norm: bool = False
    last_norm_scale: bool = False
    dtype: Any = jnp.float32
    activation: str = "relu"
    kernel_init: str = "lecun_normal"

    @nn.compact
    def __call__(self, x, train: bool = True):
        if self.norm not in ("batch", "layer", "none"):
            raise ValueError(f"Unknown head norm {self.norm!r}; choose 'batch', 'layer' or 'none'.")
        if self.activation not in ("relu", "gelu"):
            raise ValueError(f"Unknown head activation {self.activation!r}; choose 'relu' or 'gelu'.")
        act = nn.relu if self.activation == "relu" else lambda y: nn.gelu(y, approximate=False)

        def normalize(y, name, affine=True, scale=None):
            scale = affine if scale is None else scale
            if self.norm == "batch":
                return nn.BatchNorm(use_running_average=not train, momentum=0.9, use_bias=affine,
                                    use_scale=scale, dtype=self.dtype, name=name)(y)
            if self.norm == "layer":
                return nn.LayerNorm(use_bias=affine, use_scale=scale, dtype=self.dtype, name=name)(y)
            return y

        dense = lambda n, bias, name, fan_in: nn.Dense(n, use_bias=bias, dtype=self.dtype, name=name,
                                                       **dense_init(self.kernel_init, fan_in))
        x = x.astype(self.dtype)
        for i, width in enumerate(self.hidden):
            # A bias before BatchNorm is redundant (BN removes the mean).
            x = dense(width, self.norm == "none", f"dense{i}", x.shape[-1])(x)
            x = act(normalize(x, f"norm{i}"))
        x = dense(self.out, not self.last_norm, "out", x.shape[-1])(x)
        if self.last_norm:
            x = normalize(x, "out_norm", affine=False, scale=self.last_norm_scale)
        return x.astype(jnp.float32)


class BackboneWithHeads(nn.Module):
    """backbone -> [projector] -> [predictor], the network of every joint-embedding method.

    `__call__(x, train)` returns a dict: "features" (B, F) backbone output (what evaluation
    uses), "projection" (B, P) and, when a predictor is set, "prediction" (B, P). The method
    `features(x, train=False)` runs the backbone alone (embedding export, kNN).
    """

    backbone: nn.Module
    projector: nn.Module | None = None
    predictor: nn.Module | None = None

    def __call__(self, x, train: bool = True):
        h = self.backbone(x, train=train)
        z = self.projector(h, train=train) if self.projector is not None else h
        out = {"features": h, "projection": z}
        if self.predictor is not None:
            out["prediction"] = self.predictor(z, train=train)
        return out

    def features(self, x, train: bool = False):
        return self.backbone(x, train=train)

    def each(self, views, train: bool = True):
        """`__call__` on each view separately: a list of output dicts, one per view.

        BatchNorm statistics are then per view (one forward pass per view, as the VICReg and
        Barlow Twins reference implementations run them), unlike one pass on the concatenation.
        """
        return [self(v, train=train) for v in views]


class WeightNormDense(nn.Module):
    """Bias-free linear layer with weight normalisation, w_k = g_k v_k / ||v_k|| (Salimans & Kingma, 2016).

    `v` is stored as "kernel" (D_in, out); each output unit k has the unit direction v_k / ||v_k||
    (the norm is over the input axis, torch `weight_norm(dim=0)`). With `trainable_scale=False`
    the gain g is fixed to one and not a parameter (DINO's `norm_last_layer=True`:
    `weight_g.data.fill_(1); weight_g.requires_grad = False`); otherwise g is the parameter "scale"
    initialised to one and shaped (1, out), a rank-2 tensor like torch's `weight_g` (out, 1): the
    references' optimisers decay it, since they exempt only biases and 1-D tensors
    (facebookresearch/dino utils.py `get_params_groups`: `name.endswith(".bias") or
    len(param.shape) == 1`; facebookresearch/ibot uses the same function), and so does jaxssl's
    rank mask (`jaxssl.train.optim.decay_mask`). Input (..., D_in) -> (..., out) float32.
    """

    features: int
    trainable_scale: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        # torch's default nn.Linear init; only the direction of each column matters.
        init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")
        v = self.param("kernel", init, (x.shape[-1], self.features))
        w = v / jnp.maximum(jnp.linalg.norm(v, axis=0, keepdims=True), 1e-12)
        if self.trainable_scale:
            # (1, out), not (out,): a weight, decayed as the reference's (out, 1) `weight_g` is.
            w = w * self.param("scale", nn.initializers.ones, (1, self.features))
        return (x.astype(self.dtype) @ w.astype(self.dtype)).astype(jnp.float32)


class Prototypes(nn.Module):
    """SwAV prototypes: scores of the L2-normalised input against K prototype vectors.

    SwAV (Caron et al., 2020, arXiv:2006.09882, Sec. 3.1): "z_t [...] is then mapped to a code
    q_t by mapping this feature to a set of K trainable prototypes vectors {c_1, ..., c_K}", with
    the features and prototypes on the unit sphere so the scores z^T c_k are cosines. The
    prototypes are the columns of "weights/kernel" (D, K).

    `normalize`: "in_place" (the reference): a plain bias-free linear layer; the method keeps the
    columns at unit norm by renormalising them after each update (`renormalize`, run by the train
    step through `Method.after_update`; facebookresearch/swav main_swav.py `train`: "normalize the
    prototypes" with `w = nn.functional.normalize(w, dim=1, p=2); prototypes.weight.copy_(w)` before
    each forward), so the gradient is the one w.r.t. the unit vectors and the optimiser (weight
    decay, LARS trust ratio) sees them. "forward": weight normalisation in the forward pass with the
    gain fixed to one (`WeightNormDense`): the scores also always use unit prototypes, but the
    gradient is projected onto each prototype's tangent space and scaled by 1 / ||v_k|| -- a
    different update and effective learning rate (a deviation kept as an option).

    `bias`: False (the reference: facebookresearch/swav src/resnet50.py `nn.Linear(output_dim,
    nmb_prototypes, bias=False)`). True adds a learned per-prototype offset to the scores, torch's
    default bias init, as lightly 1.6's `SwaVPrototypes` (lightly/models/modules/heads.py
    `nn.Linear(input_dim, prototypes)`, whose `normalize` rescales only the weight): the scores are
    then no longer cosines, and the Sinkhorn codes and the swapped prediction both see the offsets.
    A deviation kept as an option ("in_place" only; `renormalize` leaves the bias as it is).
    Input (..., D) -> (..., K).
    """

    num_prototypes: int = 3000
    normalize: str = "in_place"
    bias: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z, train: bool = True):
        del train
        z = ops.l2_normalize(z)
        if self.normalize not in ("in_place", "forward"):
            raise ValueError(f"Prototypes normalize must be 'in_place' or 'forward', got {self.normalize!r}.")
        if self.normalize == "forward":
            if self.bias:
                raise ValueError("Prototypes bias=True needs normalize='in_place' (lightly's bias sits beside an "
                                 "in-place renormalised weight); set prototype_norm='in_place' or prototype_bias=False.")
            return WeightNormDense(self.num_prototypes, dtype=self.dtype, name="weights")(z)
        # torch's default nn.Linear init, as WeightNormDense; the step renormalises before use.
        init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")
        return nn.Dense(self.num_prototypes, use_bias=self.bias, kernel_init=init,
                        bias_init=inits.torch_bias(z.shape[-1]), dtype=self.dtype, name="weights")(z).astype(jnp.float32)


def renormalize(kernel: jax.Array, eps: float = 1e-12) -> jax.Array:
    """Columns of a (D, K) prototype matrix scaled to unit L2 norm (torch `normalize(w, dim=1)` on (K, D))."""
    return kernel / jnp.maximum(jnp.linalg.norm(kernel, axis=0, keepdims=True), eps)


class DINOHead(nn.Module):
    """DINO projection head: MLP -> L2 normalisation -> weight-normalised linear layer.

    DINO (Caron et al., 2021, arXiv:2104.14294, Sec. 3.1 and App.): "The projection head consists
    of a 3-layer multi-layer perceptron (MLP) with hidden dimension 2048 followed by l2
    normalization and a weight normalized fully connected layer with K dimensions". The MLP is
    Linear -> [BN] -> GELU for each of the `num_layers - 1` hidden layers, then Linear to the
    `bottleneck_dim` (256), all truncated-normal(0.02) with zero biases. The last layer is
    `WeightNormDense` named "last_layer"; `norm_last_layer=True` fixes its gain to one. Works on
    any leading shape (B, D) or (B, T, D) (iBOT applies it to every token).
    """

    out_dim: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    num_layers: int = 3
    use_bn: bool = False
    norm_last_layer: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = True):
        if self.num_layers < 1:
            raise ValueError(f"DINOHead needs num_layers >= 1, got {self.num_layers}.")
        dense = lambda n, name: nn.Dense(n, kernel_init=nn.initializers.truncated_normal(0.02), dtype=self.dtype,
                                         name=name)
        x = x.astype(self.dtype)
        for i in range(self.num_layers - 1):
            x = dense(self.hidden_dim, f"dense{i}")(x)
            if self.use_bn:
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype, name=f"norm{i}")(x)
            x = nn.gelu(x, approximate=False)
        x = dense(self.bottleneck_dim, "bottleneck")(x)
        x = ops.l2_normalize(x.astype(jnp.float32))
        return WeightNormDense(self.out_dim, trainable_scale=not self.norm_last_layer, dtype=self.dtype,
                               name="last_layer")(x)


# How `MultiCrop` batches the views into backbone calls (see its docstring).
GROUPINGS = ("resolution", "view")


def check_grouping(grouping: str) -> None:
    """ValueError naming the valid choices for an unknown `MultiCrop.grouping`."""
    if grouping not in GROUPINGS:
        raise ValueError(f"crop_grouping must be one of {GROUPINGS}, got {grouping!r}.")


class MultiCrop(nn.Module):
    """backbone -> head [-> prototypes] over views of several resolutions (DINO's MultiCropWrapper).

    Multi-crop (SwAV Sec. 3.2; DINO Sec. 3.1): views of equal resolution are consecutive in the
    list (globals first). `grouping` (`GROUPINGS`) says how they reach the backbone:

    - "resolution" (default): each run of same-size views goes through the backbone in ONE call,
      concatenated along the batch, as the official DINO code (facebookresearch/dino utils.py
      `MultiCropWrapper.forward`: `torch.cumsum(torch.unique_consecutive(...))` over the crops'
      sizes, `self.backbone(torch.cat(x[start_idx: end_idx]))`; facebookresearch/swav
      src/resnet50.py `ResNet.forward` does the same). 2 x 224 + 6 x 96 crops: 2 backbone calls.
    - "view": one backbone call per view (lightly's DINO example and solo-learn's
      `multicrop_forward` loop over the crops); 8 calls for 2 + 6 crops. The same features, in
      the same order.

    Either way the head then runs once on all features. Without batch-coupled layers in the
    backbone (a ViT: LayerNorm is per token) both give the same outputs and gradients, up to float
    rounding (tests/methods/test_multicrop_grouping.py). With BatchNorm (ResNets) they differ, and
    "resolution" is the reference's: each call normalises with the statistics of the rows it sees,
    so "resolution" normalises a crop with those of all crops of its size (2B rows for the globals,
    6B for the locals) and "view" with its own B rows; the running averages move once per call
    (2 updates per step against 8). Stochastic depth draws its per-row masks per call, so the
    draws (not their distribution) depend on the grouping.

    `__call__(views, train, masks=None, patch_views=0, patch_index=None)`: `views` is one
    (B, H, W, 3) array or a list of them; `masks` an optional list (aligned with views, None for
    unmasked views) of (B, N) bool token masks for a ViT backbone; the first `patch_views` views
    also return the head applied to every patch token (iBOT), or, with `patch_index` (a list of
    `patch_views` (B, M) int arrays, e.g. `masking.masked_index`), to the M patch tokens each row
    names. Returns a dict: "features" (V*B, F) backbone features, "projection" (V*B, P) head
    outputs, "scores" (V*B, K) if `prototypes` is set, and "patch_projection": a list of (B, N, P)
    (or (B, M, P)), one per patch view. Rows are in view order.
    `features(x, train=False)` runs the backbone alone (evaluation).
    """

    backbone: nn.Module
    head: nn.Module
    prototypes: nn.Module | None = None
    grouping: str = "resolution"

    def __call__(self, views, train: bool = True, masks=None, patch_views: int = 0, patch_index=None):
        check_grouping(self.grouping)
        views = list(views) if isinstance(views, (list, tuple)) else [views]
        masks = list(masks) if masks is not None else [None] * len(views)
        if len(masks) != len(views):
            raise ValueError(f"Got {len(masks)} masks for {len(views)} views; pass None for unmasked views.")
        if patch_index is not None and len(patch_index) != patch_views:
            raise ValueError(f"Got {len(patch_index)} patch_index arrays for patch_views={patch_views}; pass one per patch view.")
        feats, patches = [], []
        start = 0
        while start < len(views):
            end = start + 1
            while self.grouping == "resolution" and end < len(views) and views[end].shape == views[start].shape:
                end += 1
            x = jnp.concatenate(views[start:end]) if end - start > 1 else views[start]
            given = [m for m in masks[start:end] if m is not None]
            mask = None
            if given:
                # Views of the group without a mask keep all their patches.
                blank = jnp.zeros(given[0].shape, bool)
                mask = jnp.concatenate([blank if m is None else m for m in masks[start:end]])
            if mask is not None or start < patch_views:
                tokens = self.backbone(x, train=train, mask=mask, return_tokens=True)
                feats.append(tokens[:, 0])
                if start < patch_views:
                    # The head sees the patch views of the group only (it is per token: no batch coupling).
                    n = min(end, patch_views) - start
                    p = tokens[: n * views[start].shape[0], 1:]
                    if patch_index is not None:
                        index = jnp.concatenate(patch_index[start:start + n])
                        p = jnp.take_along_axis(p, index[..., None], axis=1)
                    patches.extend(jnp.split(self.head(p, train=train), n))
            else:
                feats.append(self.backbone(x, train=train))
            start = end
        h = jnp.concatenate(feats) if len(feats) > 1 else feats[0]
        z = self.head(h, train=train)
        out = {"features": h, "projection": z}
        if self.prototypes is not None:
            out["scores"] = self.prototypes(z, train=train)
        if patch_views:
            out["patch_projection"] = patches
        return out

    def features(self, x, train: bool = False):
        return self.backbone(x, train=train)
