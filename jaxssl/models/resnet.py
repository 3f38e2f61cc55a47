"""ResNet backbones (He et al., 2016, arXiv:1512.03385) in flax.linen.

`Model(variant="18")` returns the globally average-pooled features of shape (B, C_out).
`cifar_stem=True` replaces the 7x7/2 conv + 3x3/2 max-pool stem with one 3x3/1 conv, the
standard change for 32x32 inputs used by SimCLR's CIFAR experiments (arXiv:2002.05709, B.9)
and solo-learn. `width` scales every stage's channels (64 * width at the first stage), so a
CPU-sized model is `Model(variant="18", width=0.25)`.

BatchNorm statistics are computed over whatever batch the module sees. Under `jax.jit` on a
global array sharded over the mesh's "data" axis that is the **global** batch: XLA inserts the
cross-device reductions, so this is synchronised BatchNorm without an `axis_name`
(tested in tests/methods/test_every_method.py: 8 devices == 1 device).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

STAGES = {
    "18": ("basic", (2, 2, 2, 2)),
    "34": ("basic", (3, 4, 6, 3)),
    "50": ("bottleneck", (3, 4, 6, 3)),
    "101": ("bottleneck", (3, 4, 23, 3)),
}


def _pad(kernel: int) -> list[tuple[int, int]]:
    """PyTorch's symmetric `padding=kernel // 2`. "SAME" differs for stride 2 on even sizes: XLA
    pads (0, 1) there, so a strided 3x3 conv would sample a pixel later than torchvision's and
    exported weights (jaxssl.models.pytorch_layout) would not give the same features."""
    return [(kernel // 2, kernel // 2)] * 2


# The convolutions' kernel init (`Model.conv_init`). BatchNorm follows every conv, so the init's
# scale does not change the forward pass, but it sets the weights' norm and with it the effective
# step size of SGD with weight decay (lr / |w|^2 for a scale-invariant weight): learning at a few
# hundred steps depends on it (benchmarks/RESULTS.md section 7).
CONV_INITS = {
    # torchvision/models/resnet.py `ResNet.__init__`: kaiming_normal_(mode="fan_out",
    # nonlinearity="relu"), a normal of variance 2 / fan_out. The ResNet of every PyTorch
    # reference (MoCo, SimSiam, SwAV, DINO, Barlow Twins, VICReg: `torchvision.models.resnet50`).
    "torchvision": nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
    # flax's default, a truncated normal of variance 1 / fan_in: the `tf.variance_scaling_initializer()`
    # of google-research/simclr resnet.py and haiku's Conv2D default in deepmind byol.
    "lecun_normal": nn.initializers.lecun_normal(),
}


def _conv_init(name: str):
    if name not in CONV_INITS:
        raise ValueError(f"Unknown conv_init {name!r}; choose one of {sorted(CONV_INITS)}.")
    return CONV_INITS[name]


def _last_scale_init(zero: bool):
    """The scale init of a block's last BatchNorm: zeros (`zero_init_residual`) or ones (torchvision's default)."""
    return nn.initializers.zeros if zero else nn.initializers.ones


def _conv_norm(dtype: Any, train: bool, conv_init: str):
    """The blocks' layer factories: a bias-free conv with PyTorch's padding, and BatchNorm (momentum 0.9)."""
    conv = lambda f, k, s, name: nn.Conv(f, (k, k), (s, s), padding=_pad(k), use_bias=False, dtype=dtype, name=name,
                                         kernel_init=_conv_init(conv_init))
    norm = lambda name, **kw: nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=dtype, name=name, **kw)
    return conv, norm


def _add_shortcut(x, y, strides: int, conv, norm):
    """relu(shortcut(x) + y): identity, or a strided 1x1 conv + BN where the shape changes (`proj`, `proj_bn`)."""
    if x.shape[-1] != y.shape[-1] or strides != 1:
        x = norm("proj_bn")(conv(y.shape[-1], 1, strides, "proj")(x))
    return nn.relu(x + y)


class _Block(nn.Module):
    """A residual block's fields: width, stride of its first strided conv, compute dtype, last-BN init,
    conv kernel init (`CONV_INITS`)."""

    filters: int
    strides: int
    dtype: Any
    zero_init_residual: bool = True
    conv_init: str = "lecun_normal"


class _BasicBlock(_Block):
    """Two 3x3 convs with an identity (or 1x1 projection) shortcut. Output channels: `filters`."""

    @nn.compact
    def __call__(self, x, train: bool):
        conv, norm = _conv_norm(self.dtype, train, self.conv_init)
        y = nn.relu(norm("bn1")(conv(self.filters, 3, self.strides, "conv1")(x)))
        # Zero-init of the last BN scale in each block (Goyal et al., 2017) as in torchvision's
        # `zero_init_residual`: every block starts as the identity. Optional (`Model`).
        y = norm("bn2", scale_init=_last_scale_init(self.zero_init_residual))(conv(self.filters, 3, 1, "conv2")(y))
        return _add_shortcut(x, y, self.strides, conv, norm)


class _Bottleneck(_Block):
    """1x1 -> 3x3 (strided, as torchvision "ResNet v1.5") -> 1x1 with 4x expansion."""

    @nn.compact
    def __call__(self, x, train: bool):
        conv, norm = _conv_norm(self.dtype, train, self.conv_init)
        y = nn.relu(norm("bn1")(conv(self.filters, 1, 1, "conv1")(x)))
        y = nn.relu(norm("bn2")(conv(self.filters, 3, self.strides, "conv2")(y)))
        y = norm("bn3", scale_init=_last_scale_init(self.zero_init_residual))(conv(4 * self.filters, 1, 1, "conv3")(y))
        return _add_shortcut(x, y, self.strides, conv, norm)


class Model(nn.Module):
    """ResNet backbone.

    Attributes:
      variant: "18", "34", "50" or "101".
      width: channel multiplier (1.0 = the paper's 64-128-256-512 stages).
      cifar_stem: 3x3/1 stem without max-pool (32x32 inputs).
      zero_init_residual: zero-init the scale of the last BatchNorm of every residual block
        (Goyal et al., 2017), so each block starts as the identity. True here and in the recipes
        that use it (SimSiam `zero_init_residual=True` in facebookresearch/simsiam main_simsiam.py;
        MoCo v3 main_moco.py; SimCLR's `init_zero` BN in google-research/simclr resnet.py). MoCo v2
        (facebookresearch/moco main_moco.py: `models.__dict__[args.arch]`), SwAV
        (facebookresearch/swav src/resnet50.py: `zero_init_residual=False`) and DINO's ResNet
        (facebookresearch/dino main_dino.py: `torchvision_models.__dict__[args.arch]()`) build
        torchvision's default, False: their configs set it.
      conv_init: the convolutions' kernel init, a key of `CONV_INITS`: "torchvision" (the
        PyTorch references' `torchvision.models` ResNet: kaiming normal, fan_out) or
        "lecun_normal" (flax's default and the TF/haiku references': SimCLR, BYOL). The method
        configs set their reference's; the default keeps flax's.
      dtype: compute dtype (e.g. jnp.bfloat16); parameters stay float32.

    Call: `model.apply(variables, images (B,H,W,3) float, train=bool)` -> features (B, C_out)
    in float32, C_out = 512*width (basic) or 2048*width (bottleneck); with `return_map=True` the pair
    (features, last feature map (B, h, w, C_out)). Pass
    `mutable=["batch_stats"]` when `train=True`.
    """

    variant: str = "18"
    width: float = 1.0
    cifar_stem: bool = False
    zero_init_residual: bool = True
    conv_init: str = "lecun_normal"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = True, return_map: bool = False):
        if self.variant not in STAGES:
            raise ValueError(f"Unknown ResNet variant {self.variant!r}; choose one of {sorted(STAGES)}.")
        kind, depths = STAGES[self.variant]
        block = _BasicBlock if kind == "basic" else _Bottleneck
        base = max(1, int(round(64 * self.width)))
        x = x.astype(self.dtype)
        if self.cifar_stem:
            x = nn.Conv(base, (3, 3), padding="SAME", use_bias=False, dtype=self.dtype, name="stem",
                        kernel_init=_conv_init(self.conv_init))(x)
        else:
            x = nn.Conv(base, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], use_bias=False,
                        dtype=self.dtype, name="stem", kernel_init=_conv_init(self.conv_init))(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype,
                         name="stem_bn")(x)
        x = nn.relu(x)
        if not self.cifar_stem:
            x = nn.max_pool(x, (3, 3), (2, 2), padding=[(1, 1), (1, 1)])
        for i, depth in enumerate(depths):
            for j in range(depth):
                strides = 2 if (i > 0 and j == 0) else 1
                x = block(base * 2**i, strides, self.dtype, self.zero_init_residual, self.conv_init,
                          name=f"stage{i + 1}_block{j + 1}")(x, train)
        pooled = jnp.mean(x, axis=(1, 2)).astype(jnp.float32)
        # return_map: also the last stage's feature map (B, h, w, C_out) (VICRegL's local features).
        return (pooled, x.astype(jnp.float32)) if return_map else pooled
