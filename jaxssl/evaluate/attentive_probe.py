"""Attentive probe: cross-attention pooling of frozen patch tokens with a learned query, then a linear layer.

V-JEPA (Bardes et al., 2024, arXiv:2404.08471, Sec. 4: "we use an attentive probe [...] a
cross-attention layer with a learnable query token. The output of the cross-attention layer is
then added back to the query token (residual connection), and then fed into [a] two-layer MLP
with a single GeLU activation, followed by a LayerNorm, and finally a linear classifier"). As
facebookresearch/jepa src/models/attentive_pooler.py `AttentiveClassifier` (depth 1):
q <- q + XAttn(q, LN(x)); q <- q + MLP(LN(q)); logits = Linear(q). Trained with AdamW and a
cosine schedule on frozen tokens (the JEPA family's evaluation, where average pooling discards
what the tokens hold). The tokens are the backbone's patch tokens: the final-normed sequence of a
`transformer.Model`, the patch tokens (no [CLS]) of a `vit.Model`.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

_init = nn.initializers.truncated_normal(0.02)


class AttentiveClassifier(nn.Module):
    """(B, T, D) tokens -> (B, C) logits through one learned-query cross-attention block."""

    num_classes: int
    num_heads: int = 4
    mlp_ratio: float = 4.0

    @nn.compact
    def __call__(self, x):
        b, _, d = x.shape
        q = jnp.broadcast_to(self.param("query", _init, (1, 1, d)), (b, 1, d))
        kv = nn.LayerNorm(epsilon=1e-6, name="norm1")(x)
        q = q + nn.MultiHeadDotProductAttention(self.num_heads, kernel_init=_init, name="xattn")(q, kv)
        y = nn.Dense(int(d * self.mlp_ratio), kernel_init=_init, name="fc1")(nn.LayerNorm(epsilon=1e-6,
                                                                                          name="norm2")(q))
        q = q + nn.Dense(d, kernel_init=_init, name="fc2")(nn.gelu(y, approximate=False))
        return nn.Dense(self.num_classes, kernel_init=_init, name="linear")(q[:, 0])


def patch_tokens(module, x, train: bool = False):
    """`net.apply(..., method=patch_tokens)`: the backbone's patch tokens (B, T, D) of a method's network."""
    from jaxssl.models import transformer  # pylint: disable=g-import-not-at-top
    backbone = getattr(module, "backbone", module)
    if isinstance(backbone, transformer.Model):  # no [CLS]
        return backbone(x, train=train, return_layers=True)["tokens"]
    return backbone(x, train=train, return_tokens=True)[:, 1:]  # vit.Model: drop [CLS]


@functools.lru_cache(maxsize=8)
def _fns(num_classes: int, num_heads: int, lr: float, weight_decay: float, total_steps: int, warmup_steps: int):
    model = AttentiveClassifier(num_classes, num_heads)
    tx = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps, max(total_steps, warmup_steps + 1)),
                     weight_decay=weight_decay)

    def loss(params, x, y):
        logits = model.apply({"params": params}, x)
        return jnp.mean(optax.losses.softmax_cross_entropy_with_integer_labels(logits, y))

    @jax.jit
    def step(params, opt_state, x, y):
        value, grads = jax.value_and_grad(loss)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    predict = jax.jit(lambda params, x: model.apply({"params": params}, x))
    return model, tx, step, predict


def attentive_probe(train_tokens: Any, train_labels: Any, test_tokens: Any, test_labels: Any, *,
                    num_classes: int | None = None, epochs: int = 20, batch_size: int = 256, lr: float = 1e-3,
                    weight_decay: float = 0.01, warmup_epochs: int = 1, num_heads: int = 4,
                    seed: int = 0) -> dict[str, float]:
    """Top-1 / top-5 accuracy of an attentive classifier trained on frozen tokens.

    Args:
      train_tokens: (N, T, D) frozen tokens; train_labels: (N,) int labels.
      test_tokens: (M, T, D); test_labels: (M,).
      num_classes: C; inferred as max label + 1 when None.
      epochs, batch_size: passes and mini-batch (V-JEPA's evaluation: 20 epochs).
      lr, weight_decay, warmup_epochs: AdamW peak lr (cosine to 0 after a linear warm-up) and decay.
      num_heads: heads of the cross-attention (D must be divisible by it).
      seed: initialisation and mini-batch order.

    Returns:
      {"top1", "top5", "train_loss"} (the mean training loss of the last epoch).

    Example:
      >>> x = np.random.default_rng(0).normal(size=(64, 4, 8)).astype(np.float32)
      >>> y = np.arange(64) % 2; x[:, 0, 0] += 4 * y
      >>> attentive_probe(x, y, x, y, epochs=30, batch_size=16, lr=1e-2)["top1"] > 0.9
      True
    """
    x, y = np.asarray(train_tokens, np.float32), np.asarray(train_labels, np.int32)
    xt, yt = np.asarray(test_tokens, np.float32), np.asarray(test_labels, np.int32)
    if x.ndim != 3 or xt.ndim != 3 or y.shape != x.shape[:1] or yt.shape != xt.shape[:1] or x.shape[2] != xt.shape[2]:
        raise ValueError(f"Expected tokens (N, T, D) / (M, T, D) and labels (N,) / (M,), got {x.shape}, {y.shape}, "
                         f"{xt.shape}, {yt.shape}.")
    num_classes = int(max(y.max(), yt.max())) + 1 if num_classes is None else num_classes
    batch_size = min(batch_size, len(x))
    steps = len(x) // batch_size
    model, tx, step, predict = _fns(num_classes, num_heads, float(lr), float(weight_decay), epochs * steps,
                                    warmup_epochs * steps)
    params = model.init(jax.random.key(seed), x[:1])["params"]
    opt_state = tx.init(params)
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(epochs):
        order = rng.permutation(len(x))[: steps * batch_size].reshape(steps, batch_size)
        epoch_losses = []
        for idx in order:
            params, opt_state, value = step(params, opt_state, x[idx], y[idx])
            epoch_losses.append(value)
        losses.append(float(np.mean(jax.device_get(epoch_losses))))
    logits = np.concatenate([np.asarray(predict(params, xt[i:i + batch_size])) for i in range(0, len(xt), batch_size)])
    top = np.argsort(-logits, axis=1)[:, :min(5, num_classes)]
    return {"top1": float(np.mean(top[:, 0] == yt)), "top5": float(np.mean(np.any(top == yt[:, None], axis=1))),
            "train_loss": losses[-1]}


class Evaluator:
    """The attentive probe on frozen patch tokens: train split -> test split (a `config.evals` block of this type).

    Reports `attentive_top1`, `attentive_top5`, `attentive_train_loss`. Options: the split keywords
    of the kNN / linear-probe evaluators, then those of `attentive_probe` (`probe_batch_size` is its
    mini-batch). Tokens of the whole train split are held in host memory: limit `train_examples`
    for large sets.
    """

    def __init__(self, net, mesh: Mesh, *, config, data_dir: str, train_split: str = "train",
                 test_split: str = "test", train_examples: int = -1, test_examples: int = -1, batch_size: int = 500,
                 view: dict | None = None, num_classes: int | None = None, epochs: int = 20,
                 probe_batch_size: int = 256, lr: float = 1e-3, weight_decay: float = 0.01, num_heads: int = 4):
        from jaxssl.evaluate import common  # pylint: disable=g-import-not-at-top
        self.features = common.SplitFeatures(net, mesh, config, data_dir, train_split=train_split,
                                             test_split=test_split, train_examples=train_examples,
                                             test_examples=test_examples, batch_size=batch_size, view=view,
                                             method=patch_tokens)
        self.kw = dict(num_classes=num_classes, epochs=epochs, batch_size=probe_batch_size, lr=lr,
                       weight_decay=weight_decay, num_heads=num_heads, seed=int(config["seed"]))

    def check(self) -> None:
        self.features.check()

    def evaluate_features(self, train_tokens, train_labels, test_tokens, test_labels) -> dict[str, float]:
        res = attentive_probe(train_tokens, train_labels, test_tokens, test_labels, **self.kw)
        return {f"attentive_{k}": v for k, v in res.items()}

    def run(self, variables) -> dict[str, float]:
        return self.evaluate_features(*self.features(variables))


__all__ = ["AttentiveClassifier", "Evaluator", "attentive_probe", "patch_tokens"]
