"""Attentive probe: learns where average pooling fails, the tokens it reads, and its evaluator wiring."""
import jax
import jax.numpy as jnp
import numpy as np

from jaxssl.evaluate import attentive_probe, common, linear_probe
from jaxssl.methods import ijepa
from jaxssl.models import transformer, vit


def _one_token_data(n, rng):
    """The class is the sign of channel 0 of the marked token; an unmarked token cancels it in the mean."""
    x = rng.normal(size=(n, 8, 16)).astype(np.float32)
    y = rng.integers(0, 2, n)
    pos = np.argsort(rng.random((n, 8)), axis=1)[:, :2]  # two distinct positions per example
    sign = np.where(y == 1, 3.0, -3.0)
    x[np.arange(n), pos[:, 0], 0] = sign
    x[np.arange(n), pos[:, 0], 1] = 5.0  # the marker the query can attend to
    x[np.arange(n), pos[:, 1], 0] = -sign  # the distractor: the mean over tokens loses the class
    return x, y


def test_attentive_probe_separates_what_mean_pooling_blurs():
    rng = np.random.default_rng(0)
    (x, y), (xt, yt) = _one_token_data(512, rng), _one_token_data(256, rng)
    res = attentive_probe.attentive_probe(x, y, xt, yt, epochs=60, batch_size=64, lr=3e-3, num_heads=2)
    assert res["top1"] > 0.95, res
    pooled = linear_probe.linear_probe(x.mean(1), y, xt.mean(1), yt, epochs=30)
    assert pooled["top1"] < 0.7, pooled  # near chance: the pooled features hold no class


def test_patch_tokens_of_transformer_and_vit_backbones():
    x = jnp.zeros((2, 16, 16, 3))
    method = ijepa.make(backbone=transformer.Model(modality="image", width=16, depth=1, num_heads=2, patch_size=4,
                                                   img_size=16), total_steps=1, predictor_dim=8, predictor_depth=1,
                        predictor_heads=2, min_keep=0)
    variables = method.net.init(jax.random.key(0), x)
    tokens = method.net.apply(variables, x, train=False, method=attentive_probe.patch_tokens)
    assert tokens.shape == (2, 16, 16)
    np.testing.assert_allclose(np.asarray(tokens.mean(1)), np.asarray(method.net.apply(variables, x,
                                                                                        method="features")), atol=1e-6)
    backbone = vit.Model(variant="Ti/4", width=16, depth=1, num_heads=2, img_size=16)
    v = backbone.init(jax.random.key(0), x)
    assert backbone.apply(v, x, method=attentive_probe.patch_tokens).shape == (2, 16, 16)


def test_attentive_probe_is_an_evaluator_type():
    assert "attentive_probe" in common.available()
    assert {"epochs", "lr", "num_heads", "probe_batch_size"} <= set(common.options("attentive_probe"))
