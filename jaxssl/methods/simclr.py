"""SimCLR (Chen et al., 2020, arXiv:2002.05709): contrast two augmented views of each image.

"A stochastic data augmentation module [...] transforms any given data example randomly
resulting in two correlated views of the same example [...] A neural network base encoder f(.)
[...] A small neural network projection head g(.) [...] A contrastive loss function" (Sec. 2.1).
The loss is `jaxssl.losses.nt_xent` over the global batch; no teacher, no extra state.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxssl import losses, monitors
from jaxssl.methods import base
from jaxssl.models import heads


def make(*, backbone: nn.Module, temperature: float = 0.5, proj_hidden: Sequence[int] = (2048,),
         proj_dim: int = 128, proj_last_bn: bool = True, dtype=jnp.float32) -> base.Method:
    """SimCLR with an MLP projection head.

    Args:
      backbone: a module mapping images (B,H,W,3) -> features (B,F).
      temperature: NT-Xent tau (0.5 for CIFAR-10, SimCLR Sec. B.9).
      proj_hidden: widths of the projector's hidden layers (one 2048 layer, SimCLR).
      proj_dim: projection output size (128, SimCLR Sec. B.1).
      proj_last_bn: the reference's output layer: bias-free Linear -> BatchNorm with a scale and no
        centring (google-research/simclr tf2/model.py `ProjectionHead`: the last
        `LinearLayer(use_bias=False, use_bn=True)`, whose BN is `center=use_bias` = False). False:
        a plain Linear with a bias, the paper's g(h) = W2 relu(W1 h) (Sec. 2.1).
      dtype: compute dtype of the head.
    """
    if not temperature > 0:
        raise ValueError(f"SimCLR temperature must be > 0, got {temperature}.")
    projector = heads.MLP(tuple(proj_hidden), proj_dim, last_norm=proj_last_bn, last_norm_scale=proj_last_bn,
                          dtype=dtype)
    net = heads.BackboneWithHeads(backbone, projector=projector)

    def embed(params, model_state, teacher, extra, views, rng, step):
        del teacher, extra, rng, step
        base.check_two_views("SimCLR", views)
        # Both views in one forward pass: BatchNorm statistics cover the 2N images, as one
        # concatenated batch does in the reference implementation.
        n = views[0].shape[0]
        out, new_state = net.apply({"params": params, **model_state}, jnp.concatenate(views), train=True,
                                   mutable=list(model_state))
        z = out["projection"]
        return {"z1": z[:n], "z2": z[n:], "h1": out["features"][:n]}, new_state

    def objective(params, emb, extra, rng, step):
        del params, rng, step
        # NT-Xent over the whole (global, or accumulated) batch: every other view is a negative.
        loss = jnp.mean(losses.nt_xent(emb["z1"], emb["z2"], temperature))
        metrics = {"z_std": monitors.feature_std(emb["z1"]), "h_std": monitors.feature_std(emb["h1"])}
        return loss, (extra, metrics)

    return base.two_stage(net, embed, objective)
