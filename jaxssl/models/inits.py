"""Weight initialisers of the transformer encoders, by reference (`weight_init` of `transformer.Model`,
`transformer.Body`, `encoders.PatchEmbed` and `methods.mae`).

The initial weight scale is part of a recipe: at the same architecture it changes both the
random-init features and how far a short run gets (benchmarks/RESULTS.md section 7). `INITS`:

* ``"trunc_normal"`` (jaxssl's default): a normal of std 0.02 (truncated at two std) for every
  Linear and for the patch projection, zero biases: timm's ViT ``init_weights`` as DINO, iBOT,
  I-JEPA and data2vec/BEiT initialise their transformers (``trunc_normal_(m.weight, std=.02)``).
* ``"xavier_uniform"``: MAE's (facebookresearch/mae models_mae.py ``initialize_weights`` and
  ``_init_weights``): every Linear xavier-uniform with a zero bias (``qkv`` as one (D, 3D) matrix,
  as timm's fused layer), and the patch projection xavier-uniform over its flattened
  (D, C p p) view (``xavier_uniform_(w.view([w.shape[0], -1]))``); the patch bias keeps PyTorch's
  Conv2d default, uniform in +-1/sqrt(C p p), which ``initialize_weights`` does not touch.

Position tables and mask tokens keep their own initialisers (normal 0.02 or fixed sin-cos) under both.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

INITS = ("trunc_normal", "xavier_uniform")

# timm's ViT `trunc_normal_(std=.02)`: the Linears, patch projections, position tables and tokens of
# every jaxssl transformer (`transformer`, `encoders`, `vit`).
TRUNC_NORMAL = nn.initializers.truncated_normal(0.02)


def torch_bias(fan_in: int):
    """PyTorch's default bias of `nn.Linear` and `nn.Conv2d` (`reset_parameters`): uniform in +-1/sqrt(fan_in)."""
    bound = 1.0 / float(fan_in) ** 0.5
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def check(name: str) -> str:
    if name not in INITS:
        raise ValueError(f"Unknown transformer init {name!r}; choose one of {INITS} "
                         f"(config.model.weight_init; MAE: config.method_kw.weight_init).")
    return name


def dense(name: str):
    """Kernel initialiser of a Linear layer, (in, out) kernels."""
    return TRUNC_NORMAL if check(name) == "trunc_normal" else nn.initializers.xavier_uniform()


def patch(name: str, fan_in: int) -> dict:
    """`nn.Conv` initialiser arguments of the (p, p, C, D) patch projection; `fan_in` = C p p."""
    if check(name) == "trunc_normal":
        return {"kernel_init": TRUNC_NORMAL}
    # fan_in = p p C (axes 0-2) and fan_out = D (axis 3): the fans of torch's (D, C p p) view.
    return {"kernel_init": nn.initializers.variance_scaling(1.0, "fan_avg", "uniform", in_axis=(0, 1, 2), out_axis=3),
            "bias_init": torch_bias(fan_in)}
