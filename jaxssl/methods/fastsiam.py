"""FastSiam (Pototzky et al., 2022, arXiv:2204.13631): SimSiam with the mean of several target views.

"FastSiam [...] averages the target representations of multiple augmented views [...] a more
stable target, which allows the network to be trained [...] with small batch sizes" (Sec. 3):
with V views of each image (the paper's K = 3 targets + 1 view, V = 4), each view's prediction is
compared with the stop-gradient mean of the other V - 1 views' projections, and every view takes
that role once (`losses.fastsiam`; lightly's FastSiam example). The network is SimSiam's (backbone,
projection MLP with BN on every layer, bottleneck prediction MLP), each view in its own forward
pass (BatchNorm statistics per view, as SimSiam and lightly's example). No teacher, no extra state.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxssl import losses, monitors
from jaxssl.methods import base, simsiam


def make(*, backbone: nn.Module, proj_hidden: Sequence[int] = (2048, 2048), proj_dim: int = 2048,
         pred_hidden: Sequence[int] = (512,), head_init: str = "torch", dtype=jnp.float32) -> base.Method:
    """FastSiam with SimSiam's heads.

    Args:
      backbone: a module mapping images (B,H,W,3) -> features (B,F).
      proj_hidden, proj_dim: the projection MLP (SimSiam: 3 layers of 2048 with BN on the output).
      pred_hidden: the prediction MLP's bottleneck (SimSiam: 512).
      head_init: the heads' Linear init, `heads.MLP.kernel_init`: "torch" (the reference's
        `nn.Linear` default) or "lecun_normal" (flax's default).
      dtype: compute dtype of the heads.
    """
    net = simsiam.network(backbone, proj_hidden, proj_dim, pred_hidden, head_init, dtype)

    def loss_fn(params, model_state, teacher, extra, views, rng, step):
        del teacher, rng, step
        if len(views) < 3:
            raise ValueError(f"FastSiam averages the targets of >= 2 other views: it needs >= 3 views (4 in the "
                             f"paper), got {len(views)}; set config.input.views.")
        outs, new_state = base.apply_each(net, {"params": params, **model_state}, views)
        p = jnp.stack([o["prediction"] for o in outs])
        z = jnp.stack([o["projection"] for o in outs])
        # The averaged targets are under stop_gradient inside `losses.fastsiam` (SimSiam's
        # stop-gradient, on the mean of the other views).
        loss = jnp.mean(losses.fastsiam(p, z))
        metrics = {"z_std": monitors.feature_std(z[0]), "p_std": monitors.feature_std(p[0]),
                   "h_std": monitors.feature_std(outs[0]["features"])}
        return loss, (new_state, extra, metrics)

    return base.Method(net, loss_fn)
