"""MMCR (Yerxa et al., 2023, arXiv:2303.03307): maximum manifold capacity representations.

"MMCR [...] maximizes the nuclear norm of the matrix of centroids [of the augmentation manifolds]
[...] encouraging the centroids to be as spread out as possible [while] compressing each
manifold" (Sec. 3). K augmented views of each image go through one network; the loss is
`losses.mmcr` on the (N, K, D) projections: minus the nuclear norm of the (N, D) centroid matrix
of the **global** batch (the official code all-gathers before the SVD), plus an optional local
term. No teacher, no extra state, no stop_gradient: everything is trained through the SVD.

* Network: backbone -> projector, the official CIFAR/STL model's (ThomasYerxa/mmcr
  `mmcr/cifar_stl/models.py`: "Following exactly barlow twins official repo", Linear -> BN ->
  ReLU -> Linear, 512 hidden, 128 out); the last Linear here has a bias (heads.MLP), the official
  one has none.
* All K views in one forward pass (BatchNorm statistics over the N K images), as the official
  `model(rearrange(img_batch, "B N C H W -> (B N) C H W"))`.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxssl import losses, monitors
from jaxssl.methods import base
from jaxssl.models import heads


def make(*, backbone: nn.Module, lmbda: float = 0.0, proj_hidden: Sequence[int] = (512,), proj_dim: int = 128,
         dtype=jnp.float32) -> base.Method:
    """MMCR with an MLP projector over K >= 2 views.

    Args:
      backbone: a module mapping images (B,H,W,3) -> features (B,F).
      lmbda: weight of the local nuclear-norm term (0, official `pretrain_cifar_stl.py --lmbda 0.0`).
      proj_hidden, proj_dim: projector widths (official CIFAR/STL `projector_dims=[512, 128]`).
      dtype: compute dtype of the head.
    """
    if lmbda < 0:
        raise ValueError(f"MMCR lmbda must be >= 0, got {lmbda}.")
    net = heads.BackboneWithHeads(backbone, projector=heads.MLP(tuple(proj_hidden), proj_dim, dtype=dtype))

    def embed(params, model_state, teacher, extra, views, rng, step):
        del teacher, extra, rng, step
        if len(views) < 2 or len({v.shape for v in views}) != 1:
            raise ValueError(f"MMCR takes K >= 2 views of one size, got {[v.shape for v in views]}; set "
                             "config.input.views to K equal dicts.")
        n = views[0].shape[0]
        out, new_state = net.apply({"params": params, **model_state}, jnp.concatenate(views), train=True,
                                   mutable=list(model_state))
        # (K N, ...) in view-major order -> (N, K, D): image n's views side by side.
        z = out["projection"].reshape(len(views), n, -1).transpose(1, 0, 2)
        return {"z": z, "h1": out["features"][:n]}, new_state

    def objective(params, emb, extra, rng, step):
        del params, rng, step
        z = emb["z"]
        loss = losses.mmcr(z, lmbda)
        metrics = {"z_std": monitors.feature_std(z[:, 0]), "h_std": monitors.feature_std(emb["h1"]),
                   **monitors.alignment_uniformity(z[:, 0], z[:, 1])}
        return loss, (extra, metrics)

    return base.two_stage(net, embed, objective)
