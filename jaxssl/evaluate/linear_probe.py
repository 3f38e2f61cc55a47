"""Linear probe: a linear classifier trained on frozen features, offline or online.

**Offline** (:func:`linear_probe`), the standard protocol of SimCLR (Chen et al., 2020,
arXiv:2002.05709, Sec. 4.2: "a linear classifier is trained on top of the frozen base network")
and MAE (He et al., 2021, arXiv:2111.06377, App. A.2: "we adopt an extra BatchNorm layer without
affine transformation" before the classifier). The features are computed once, outside this
module (e.g. ``jaxssl.evaluate.features``), optionally for several augmented passes of the training set:
``train_features`` of shape (A, N, D) holds A augmented copies and epoch ``e`` uses copy
``e % A``. Features are standardised with the training set's mean and variance (the eval-mode
affine-free BatchNorm of MAE), then ``logits = x W + b`` is fit with softmax cross-entropy,
SGD with momentum or LARS and a cosine learning-rate schedule. One jitted call runs a whole
epoch (a ``lax.scan`` over its mini-batches); with a ``mesh`` the mini-batches are sharded over
its ``"data"`` axis (jit on global arrays, like the train step), so the result equals the
unsharded one up to float reduction order.

**Online** (:func:`online_probe`), as solo-learn trains during pre-training: a linear
classifier on ``stop_gradient(backbone features)`` of the first augmented view, with its own
optimiser, updated inside the train step (``jaxssl.train.step.make_step_fn(..., probe=...)``).
Its state lives in ``TrainState.probe``. The backbone's gradient and update are exactly those
of the method alone (tested bitwise), so the probe costs one extra eval-mode forward pass and
changes no method.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

_MAX_TOPK = 5
_CALL_BYTES = 256 * 2**20
OPTIMIZERS = ("sgd", "lars")


# ----------------------------------------------------------------------------------------------
# The classifier: params {"kernel": (D, C), "bias": (C,)}; shared by the offline and online probe.
# ----------------------------------------------------------------------------------------------
def init_params(num_features: int, num_classes: int) -> dict[str, jax.Array]:
    """Zero weights: the problem is convex, so no random initialisation is needed."""
    return {"kernel": jnp.zeros((num_features, num_classes), jnp.float32),
            "bias": jnp.zeros((num_classes,), jnp.float32)}


def logits_fn(params, features: jax.Array) -> jax.Array:
    """(N, D) features -> (N, C) logits, in float32 at full precision."""
    x = features.astype(jnp.float32)
    return jnp.dot(x, params["kernel"], precision=jax.lax.Precision.HIGHEST) + params["bias"]


def _loss(params, features, labels):
    logits = logits_fn(params, features)
    loss = jnp.mean(optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels))
    return loss, logits


def _hits(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """bool (2, N): [top-1 hit, top-min(5, C) hit]."""
    _, top = jax.lax.top_k(logits, min(_MAX_TOPK, logits.shape[-1]))
    return jnp.stack([top[:, 0] == labels, jnp.any(top == labels[:, None], axis=1)])


def make_optimizer(name: str, lr: float | optax.Schedule, *, momentum: float = 0.9,
                   weight_decay: float = 0.0) -> optax.GradientTransformation:
    """SGD with momentum or LARS; weight decay on the kernel only (never the bias)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"Unknown probe optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}.")
    kernel_only = lambda p: {"kernel": True, "bias": False}
    if name == "lars":
        return optax.lars(lr, weight_decay=weight_decay, weight_decay_mask=kernel_only,
                          trust_ratio_mask=kernel_only, momentum=momentum)
    return optax.chain(optax.add_decayed_weights(weight_decay, mask=kernel_only),
                       optax.sgd(lr, momentum=momentum))


# ----------------------------------------------------------------------------------------------
# Offline probe.
# ----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _make_fns(*, optimizer: str, peak_lr: float, momentum: float, weight_decay: float,
              total_steps: int, mesh: Mesh | None):
    """Jitted (train_epoch, evaluate) for one set of hyperparameters (cached across calls)."""
    schedule = optax.cosine_decay_schedule(peak_lr, max(total_steps, 1))
    tx = make_optimizer(optimizer, schedule, momentum=momentum, weight_decay=weight_decay)

    def train_epoch(params, opt_state, xs, ys):
        """xs (S, B, D), ys (S, B): S optimiser steps, one per mini-batch (an epoch or part of one)."""
        def step(carry, batch):
            params, opt_state = carry
            (loss, _), grads = jax.value_and_grad(_loss, has_aux=True)(params, *batch)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss
        (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), (xs, ys))
        return params, opt_state, losses

    def evaluate(params, x, y):
        return _hits(logits_fn(params, x), y)

    if mesh is None:
        return tx, jax.jit(train_epoch), jax.jit(evaluate)
    rep, batch = NamedSharding(mesh, P()), NamedSharding(mesh, P(None, "data"))
    rows = NamedSharding(mesh, P("data"))
    train_epoch = jax.jit(train_epoch, in_shardings=(rep, rep, batch, batch), out_shardings=(rep, rep, rep),
                          donate_argnums=(0, 1))
    evaluate = jax.jit(evaluate, in_shardings=(rep, rows, rows), out_shardings=NamedSharding(mesh, P(None, "data")))
    return tx, train_epoch, evaluate


def _as_copies(train_features) -> np.ndarray:
    x = np.asarray(train_features, np.float32)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"train_features must be (N, D) or (A, N, D) for A augmented copies, got {x.shape}.")
    return x


def train_linear(train_features, train_labels, *, num_classes: int, epochs: int = 100, batch_size: int = 256,
                 optimizer: str = "sgd", base_lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 0.0,
                 mesh: Mesh | None = None, seed: int = 0) -> tuple[dict, np.ndarray]:
    """Fit the linear classifier on (already standardised) features.

    Args: as :func:`linear_probe`. Returns (params, per-epoch mean training loss (epochs,)).
    """
    x = _as_copies(train_features)
    y = np.asarray(train_labels, np.int32)
    num_copies, n, dim = x.shape
    n_dev = 1 if mesh is None else mesh.shape["data"]
    # Full batches only (a fresh permutation each epoch, so no example is always left out); a
    # multiple of the device count so the batch splits evenly over the mesh.
    batch_size = min(batch_size, n) // n_dev * n_dev
    if batch_size < 1:
        raise ValueError(f"{n} training examples cannot fill one batch on {n_dev} devices.")
    steps = n // batch_size
    peak_lr = base_lr * batch_size / 256  # linear scaling rule (Goyal et al., 2017), as the pre-training
    tx, train_epoch, _ = _make_fns(optimizer=optimizer, peak_lr=float(peak_lr), momentum=float(momentum),
                                   weight_decay=float(weight_decay), total_steps=epochs * steps, mesh=mesh)
    params = init_params(dim, num_classes)
    opt_state = tx.init(params)
    if mesh is not None:
        params, opt_state = jax.device_put((params, opt_state), NamedSharding(mesh, P()))
    rng = np.random.default_rng(seed)
    # Each jitted call scans over at most `per_call` mini-batches (~256 MiB of features), so an
    # ImageNet-size epoch never has to sit on the devices at once.
    per_call = max(1, min(steps, _CALL_BYTES // (batch_size * dim * 4)))
    losses = []
    for epoch in range(epochs):
        idx = rng.permutation(n)[: steps * batch_size].reshape(steps, batch_size)
        for start in range(0, steps, per_call):
            chunk = idx[start:start + per_call]
            params, opt_state, loss = train_epoch(params, opt_state, x[epoch % num_copies][chunk], y[chunk])
            losses.append(loss)
    return params, np.concatenate(jax.device_get(losses)).reshape(epochs, steps).mean(axis=1)


def linear_probe(train_features: Any, train_labels: Any, test_features: Any, test_labels: Any, *,
                 num_classes: int | None = None, epochs: int = 100, batch_size: int = 256, optimizer: str = "sgd",
                 base_lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 0.0, standardize: bool = True,
                 mesh: Mesh | None = None, seed: int = 0) -> dict[str, float]:
    """Top-1 / top-5 accuracy of a linear classifier trained on frozen features.

    .. math::

        \\min_{W, b} \\frac{1}{N} \\sum_n -\\log \\mathrm{softmax}(W^\\top \\hat x_n + b)_{y_n}
        + \\frac{\\lambda}{2} \\lVert W \\rVert^2, \\qquad
        \\hat x = (x - \\mu_{\\text{train}}) / \\sqrt{\\sigma^2_{\\text{train}} + 10^{-6}}

    Args:
        train_features: (N, D) features, or (A, N, D) for A augmented passes of the training set
            (epoch e uses pass e % A).
        train_labels: (N,) int labels in [0, num_classes).
        test_features: (M, D) features (one deterministic pass).
        test_labels: (M,) int labels.
        num_classes: C; inferred as max label + 1 when None.
        epochs: passes over the training set (100 as solo-learn's CIFAR linear eval).
        batch_size: global mini-batch (rounded down to a multiple of the mesh size).
        optimizer: "sgd" (with momentum) or "lars"; cosine decay to 0 over all steps.
        base_lr: learning rate per 256 examples (0.1 as MoCo v3 / solo-learn SGD; MAE uses LARS 0.1).
        momentum: momentum of SGD / LARS.
        weight_decay: L2 on the kernel (not the bias).
        standardize: apply the affine-free BatchNorm of MAE (train-set statistics) first.
        mesh: optional ``Mesh`` with a ``"data"`` axis; mini-batches and test rows are sharded over it.
        seed: seed of the mini-batch order.

    Returns:
        ``{"top1", "top5", "train_loss"}``: test accuracies in [0, 1] (top-5 counts the true class
        among the min(5, C) highest logits) and the mean training loss of the last epoch.

    Example:
        >>> import numpy as np
        >>> x = np.eye(3, dtype=np.float32).repeat(8, axis=0); y = np.arange(3).repeat(8)
        >>> linear_probe(x, y, x, y, epochs=20)["top1"]
        1.0

    References:
        Chen et al., 2020, https://arxiv.org/abs/2002.05709; He et al., 2021,
        https://arxiv.org/abs/2111.06377.
    """
    x = _as_copies(train_features)
    y = np.asarray(train_labels)
    xt = np.asarray(test_features, np.float32)
    yt = np.asarray(test_labels)
    if y.shape != (x.shape[1],) or yt.shape != (xt.shape[0],) or xt.ndim != 2 or xt.shape[1] != x.shape[2]:
        raise ValueError(f"Shapes do not match: train_features {x.shape}, train_labels {y.shape}, "
                         f"test_features {xt.shape}, test_labels {yt.shape}; expected (A, N, D) or (N, D), (N,), "
                         f"(M, D), (M,).")
    if min(y.min(initial=0), yt.min(initial=0)) < 0 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError("Labels must be non-negative integers.")
    max_label = int(max(y.max(), yt.max()))
    num_classes = max_label + 1 if num_classes is None else num_classes
    if max_label >= num_classes:
        raise ValueError(f"Labels go up to {max_label} but num_classes={num_classes}.")
    if standardize:
        mean = x.mean(axis=(0, 1), dtype=np.float64)
        std = np.sqrt(x.var(axis=(0, 1), dtype=np.float64) + 1e-6)
        x = ((x - mean) / std).astype(np.float32)
        xt = ((xt - mean) / std).astype(np.float32)
    params, losses = train_linear(x, y, num_classes=num_classes, epochs=epochs, batch_size=batch_size,
                                  optimizer=optimizer, base_lr=base_lr, momentum=momentum, weight_decay=weight_decay,
                                  mesh=mesh, seed=seed)
    _, _, evaluate = _make_fns(optimizer=optimizer, peak_lr=0.0, momentum=0.0, weight_decay=0.0, total_steps=1,
                               mesh=mesh)
    n_dev = 1 if mesh is None else mesh.shape["data"]
    m = xt.shape[0]
    pad = -m % n_dev  # padded rows are evaluated and dropped
    hits = np.asarray(evaluate(params, np.pad(xt, ((0, pad), (0, 0))), np.pad(yt.astype(np.int32), (0, pad))))
    top1, top5 = hits[:, :m].mean(axis=1, dtype=np.float64)
    return {"top1": float(top1), "top5": float(top5), "train_loss": float(losses[-1])}


# ----------------------------------------------------------------------------------------------
# Online probe (trained inside the pre-training step).
# ----------------------------------------------------------------------------------------------
class OnlineProbe(NamedTuple):
    """A linear classifier trained alongside pre-training, as pure functions.

    Attributes:
      init: ``init(num_features) -> probe_state`` ({"params", "opt_state"}).
      update: ``update(probe_state, features (B, D), labels (B,)) -> (probe_state, metrics)``: one
        optimiser step on the cross-entropy of these (already stop-gradient) features;
        metrics ``probe_loss`` and ``probe_top1`` (accuracy on the batch, before the step).
    """

    init: Callable[[int], Any]
    update: Callable[[Any, jax.Array, jax.Array], tuple[Any, dict]]


def online_probe(num_classes: int, *, lr: float | optax.Schedule = 0.1, optimizer: str = "sgd",
                 momentum: float = 0.9, weight_decay: float = 0.0) -> OnlineProbe:
    """The online linear probe of solo-learn: its own optimiser, no gradient into the backbone.

    Args:
      num_classes: C.
      lr: learning rate or schedule of the probe (solo-learn: 0.1, SGD, no weight decay).
      optimizer: "sgd" or "lars".
      momentum: momentum of the optimiser.
      weight_decay: L2 on the kernel.
    """
    tx = make_optimizer(optimizer, lr, momentum=momentum, weight_decay=weight_decay)

    def init(num_features: int):
        params = init_params(num_features, num_classes)
        return {"params": params, "opt_state": tx.init(params)}

    def update(probe_state, features, labels):
        if labels is None:
            raise ValueError("The online linear probe needs labelled batches (batch['label']); remove "
                             "config.evals.online_probe (or set its enabled=False) for unlabelled data.")
        # The gradient is taken with respect to the probe's own parameters only and the
        # features arrive as a constant: nothing here can reach the backbone. The
        # stop_gradient is redundant for this function but makes the intent explicit to
        # any caller that would differentiate through it.
        features = jax.lax.stop_gradient(features)
        (loss, logits), grads = jax.value_and_grad(_loss, has_aux=True)(probe_state["params"], features, labels)
        updates, opt_state = tx.update(grads, probe_state["opt_state"], probe_state["params"])
        params = optax.apply_updates(probe_state["params"], updates)
        top1 = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
        return {"params": params, "opt_state": opt_state}, {"probe_loss": loss, "probe_top1": top1}

    return OnlineProbe(init, update)


def init_online_probe(cfg, net, variables, example: jax.Array) -> tuple[OnlineProbe | None, Any]:
    """(probe, initial probe state) from ``config.evals.online_probe``; (None, None) when it is off.

    ``cfg`` holds the keyword arguments of :func:`online_probe` (plus ``enabled``); the probe's
    width is that of ``net``'s eval-mode features on ``example``, found without running it.
    """
    if cfg is None or not cfg.get("enabled", True):
        return None, None
    probe = online_probe(**{k: v for k, v in dict(cfg).items() if k != "enabled"})
    shape = jax.eval_shape(lambda v: net.apply(v, example, train=False, method="features"), variables).shape
    return probe, probe.init(int(shape[-1]))


class Evaluator:
    """The offline linear probe (`linear_probe`) on frozen backbone features: train split -> test split.

    Reports `linear_top1`, `linear_top5` and `linear_train_loss`. Options (a `config.evals.linear_probe`
    block): the split/feature keywords as the kNN evaluator's, then those of `linear_probe`
    (`probe_batch_size` is its mini-batch).
    """

    def __init__(self, net, mesh: Mesh, *, config, data_dir: str, train_split: str = "train",
                 test_split: str = "test", train_examples: int = -1, test_examples: int = -1, batch_size: int = 500,
                 view: dict | None = None, num_classes: int | None = None, epochs: int = 100,
                 probe_batch_size: int = 256, optimizer: str = "sgd", base_lr: float = 0.1,
                 weight_decay: float = 0.0):
        from jaxssl.evaluate import common  # pylint: disable=g-import-not-at-top
        self.features = common.SplitFeatures(net, mesh, config, data_dir, train_split=train_split,
                                             test_split=test_split, train_examples=train_examples,
                                             test_examples=test_examples, batch_size=batch_size, view=view)
        self.kw = dict(num_classes=num_classes, epochs=epochs, batch_size=probe_batch_size, optimizer=optimizer,
                       base_lr=base_lr, weight_decay=weight_decay, seed=int(config["seed"]))

    def check(self) -> None:
        self.features.check()

    def evaluate_features(self, train_features, train_labels, test_features, test_labels) -> dict[str, float]:
        res = linear_probe(train_features, train_labels, test_features, test_labels, **self.kw)
        return {f"linear_{k}": v for k, v in res.items()}

    def run(self, variables) -> dict[str, float]:
        return self.evaluate_features(*self.features(variables))


__all__ = ["Evaluator", "OnlineProbe", "init_online_probe", "init_params", "linear_probe", "logits_fn", "make_optimizer",
           "online_probe", "train_linear"]
