"""BYOL (Grill et al., 2020, arXiv:2006.07733): predict the EMA target's projection of the other view.

"From an augmented view of an image, we train the online network to predict the target
network representation of the same image under a different augmented view. At the same time,
we update the target network with a slow-moving average of the online network" (abstract).

* Online network: backbone -> projector -> predictor (`heads.BackboneWithHeads`); target network: the
  EMA teacher `{"params", **model_state}` that the train step keeps with
  `optax.incremental_update` and the momentum `schedules.cosine_momentum(base_momentum,
  total_steps)` (Sec. 3.3: tau from 0.996 to 1).
* Loss (Eq. 2, symmetrised): the normalised MSE `||p/||p|| - z'/||z'||||^2 = 2 - 2 cos(p, z')`, i.e.
  `2 + 2 * losses.negative_cosine`, of view 1's prediction against view 2's target projection
  plus the symmetric term, averaged over the global batch (as `repr_loss` in DeepMind's code).
* Each view is its own forward pass (BatchNorm statistics per view), as DeepMind's
  `apply_once_fn`. The target network runs in training mode (batch statistics, as DeepMind's
  `is_training=True` target forward); its BatchNorm running averages are not written back: the
  step sets the teacher's to the EMA of the student's, and they are used only when the teacher
  is evaluated, never in training.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxssl import losses, monitors, schedules
from jaxssl.methods import base
from jaxssl.models import heads


def make(*, backbone: nn.Module, total_steps: int, proj_hidden: Sequence[int] = (4096,), proj_dim: int = 256,
         pred_hidden: Sequence[int] = (4096,), base_momentum: float = 0.996, dtype=jnp.float32) -> base.Method:
    """BYOL with MLP projector and predictor.

    Args:
      backbone: a module mapping images (B,H,W,3) -> features (B,F).
      total_steps: K of the momentum schedule (the run's number of steps).
      proj_hidden, proj_dim: projector widths: "a multi-layer perceptron (MLP) [...] a linear
        layer with output size 4096 followed by batch normalization, rectified linear units
        (ReLU), and a final linear layer with output dimension 256" (Sec. 3.3).
      pred_hidden: predictor hidden widths ("the same architecture as the projector").
      base_momentum: tau_base (0.996 for ImageNet, Sec. 3.3; 0.99 in solo-learn's CIFAR recipe).
      dtype: compute dtype of the heads.
    """
    net = heads.BackboneWithHeads(backbone, projector=heads.MLP(tuple(proj_hidden), proj_dim, dtype=dtype),
                                  predictor=heads.MLP(tuple(pred_hidden), proj_dim, dtype=dtype))

    def loss_fn(params, model_state, teacher, extra, views, rng, step):
        del rng, step
        base.check_two_views("BYOL", views)
        (o1, o2), new_state = base.apply_each(net, {"params": params, **model_state}, views)
        # The target forward's BatchNorm updates are discarded (see the module docstring).
        (t1, t2), _ = base.apply_each(net, teacher, views)
        # stop_gradient: the targets are constants of the online update. The step differentiates
        # `params` only, so no gradient could reach the teacher anyway; the call states the
        # intent and keeps it true if the loss is ever differentiated w.r.t. the teacher.
        z1, z2 = jax.lax.stop_gradient(t1["projection"]), jax.lax.stop_gradient(t2["projection"])
        p1, p2 = o1["prediction"], o2["prediction"]
        normalised_mse = lambda p, z: jnp.mean(2.0 + 2.0 * losses.negative_cosine(p, z))
        loss = normalised_mse(p1, z2) + normalised_mse(p2, z1)
        metrics = {"z_std": monitors.feature_std(o1["projection"]), "p_std": monitors.feature_std(p1),
                   "target_std": monitors.feature_std(z1), "h_std": monitors.feature_std(o1["features"])}
        return loss, (new_state, extra, metrics)

    return base.Method(net, loss_fn, teacher_momentum=schedules.cosine_momentum(base_momentum, total_steps))
