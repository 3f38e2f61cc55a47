"""SimSiam (Chen & He, 2021, arXiv:2011.10566): a predictor and a stop-gradient, no momentum encoder.

"Two augmented views of one image are processed by the same encoder network f (a backbone plus
a projection MLP). Then a prediction MLP h is applied on one side, and a stop-gradient
operation is applied on the other side" (Fig. 1). The loss (Eq. 3) is

    L = D(p1, stopgrad(z2)) / 2 + D(p2, stopgrad(z1)) / 2,   D = `losses.negative_cosine`,

averaged over the global batch. Each view is its own forward pass (BatchNorm statistics per
view), as the official code. No teacher, no extra state. The paper's `fix_pred_lr` (the
predictor keeps its initial learning rate, Sec. 4.2 and Table 1c) is an optimiser setting:
`config.optimizer.fixed_lr_paths = "^predictor/"` (see `jaxssl.train.optim`).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxssl import losses, monitors
from jaxssl.methods import base
from jaxssl.models import heads


def network(backbone: nn.Module, proj_hidden: Sequence[int], proj_dim: int, pred_hidden: Sequence[int],
            head_init: str, dtype=jnp.float32) -> nn.Module:
    """SimSiam's encoder f (backbone + projection MLP ending in BN) and prediction MLP h (also FastSiam's)."""
    mlp = lambda hidden, **kw: heads.MLP(tuple(hidden), proj_dim, dtype=dtype, kernel_init=head_init, **kw)
    return heads.BackboneWithHeads(backbone, projector=mlp(proj_hidden, last_norm=True), predictor=mlp(pred_hidden))


def make(*, backbone: nn.Module, proj_hidden: Sequence[int] = (2048, 2048), proj_dim: int = 2048,
         pred_hidden: Sequence[int] = (512,), head_init: str = "torch", dtype=jnp.float32) -> base.Method:
    """SimSiam with projection and prediction MLPs.

    Args:
      backbone: a module mapping images (B,H,W,3) -> features (B,F).
      proj_hidden, proj_dim: "The projection MLP (in f) has BN applied to each fully-connected
        (fc) layer, including its output fc. Its output fc has no ReLU. The hidden fc is 2048-d.
        This MLP has 3 layers" (Sec. 4): (2048, 2048) and 2048, with an affine-free BN on the
        output as the official code; 2 layers, `proj_hidden=(2048,)`, for CIFAR (Appendix D).
      pred_hidden: "The prediction MLP (h) has BN applied to its hidden fc layers. Its output fc
        does not have BN or ReLU. This MLP has 2 layers [...] h's hidden layer's dimension is 512".
      head_init: the heads' Linear init, `heads.MLP.kernel_init`: "torch" (the reference's
        `nn.Linear` default) or "lecun_normal" (flax's default).
      dtype: compute dtype of the heads.
    """
    net = network(backbone, proj_hidden, proj_dim, pred_hidden, head_init, dtype)

    def loss_fn(params, model_state, teacher, extra, views, rng, step):
        del teacher, rng, step
        base.check_two_views("SimSiam", views)
        (o1, o2), new_state = base.apply_each(net, {"params": params, **model_state}, views)
        # stop_gradient is the whole method: the target branch z is a constant, so the encoder
        # is trained only through the predictor side. Without it SimSiam collapses to a
        # constant output (Sec. 4.1, Fig. 2).
        z1, z2 = jax.lax.stop_gradient(o1["projection"]), jax.lax.stop_gradient(o2["projection"])
        p1, p2 = o1["prediction"], o2["prediction"]
        loss = 0.5 * (jnp.mean(losses.negative_cosine(p1, z2)) + jnp.mean(losses.negative_cosine(p2, z1)))
        # Sec. 4.1 monitors "the std of the l2-normalized output z": 0 means collapse.
        metrics = {"z_std": monitors.feature_std(z1), "p_std": monitors.feature_std(p1),
                   "h_std": monitors.feature_std(o1["features"])}
        return loss, (new_state, extra, metrics)

    return base.Method(net, loss_fn)
