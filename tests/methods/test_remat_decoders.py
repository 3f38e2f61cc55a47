"""`config.remat` reaches the MAE decoder and the I-JEPA predictor, not only the encoder blocks.

The method's transformer blocks take the backbone's `remat`: the loss and gradients are those without
remat (float32 rounding), and the activations the backward pass keeps (`saved_residuals`) grow by only
a block's input per extra decoder/predictor block under remat="block" (every intermediate without).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src import ad_checkpoint  # saved_residuals: no public equivalent (as benchmarks/vit_step.py)

from jaxssl.methods import ijepa, mae
from jaxssl.models import transformer

_ENCODER = dict(modality="image", width=32, depth=1, num_heads=2, patch_size=4, img_size=16)
_B, _N, _DIM = 2, 16, 16  # batch, patches of a 16 px image at patch 4, decoder / predictor width


def _make(name: str, remat: str, depth: int):
    backbone = transformer.Model(**_ENCODER, remat=remat)
    if name == "mae":
        return mae.make(backbone=backbone, decoder_dim=_DIM, decoder_depth=depth, decoder_heads=2)
    return ijepa.make(backbone=backbone, total_steps=10, predictor_dim=_DIM, predictor_depth=depth, predictor_heads=2,
                      min_keep=0)


def _loss(method, variables, x):
    """The loss as a function of the params, at fixed masks and rng (the teacher: the initial variables)."""
    teacher = variables if method.teacher_momentum is not None else None
    return lambda p: method.loss_fn(p, {}, teacher, {}, [x], jax.random.key(1), jnp.int32(0))[0]


def _saved_bytes(loss, params) -> int:
    """Bytes of the forward values the backward pass keeps, leaving out the inputs (params)."""
    return sum(int(np.prod(a.shape)) * a.dtype.itemsize for a, why in ad_checkpoint.saved_residuals(loss, params)
               if not why.startswith("from the argument"))


@pytest.mark.parametrize("name", ["mae", "ijepa"])
def test_remat_covers_the_decoder_blocks(name):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(_B, 16, 16, 3)), jnp.float32)
    # remat changes no parameter: one set of variables per depth serves every policy.
    variables = {d: jax.jit(_make(name, "none", d).net.init)(jax.random.key(0), x) for d in (2, 3)}
    loss = lambda policy, d: _loss(_make(name, policy, d), variables[d], x)
    ref_value, ref_grads = jax.jit(jax.value_and_grad(loss("none", 2)))(variables[2]["params"])
    scale = max(float(jnp.abs(g).max()) for g in jax.tree_util.tree_leaves(ref_grads))
    for policy in ("block", "dots_saveable"):
        value, grads = jax.jit(jax.value_and_grad(loss(policy, 2)))(variables[2]["params"])
        np.testing.assert_allclose(float(value), float(ref_value), rtol=1e-6)
        for g, r in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref_grads)):
            np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6 * scale)
    # One more decoder/predictor block: + its input only under "block", + all its intermediates without.
    extra = {policy: _saved_bytes(loss(policy, 3), variables[3]["params"])
             - _saved_bytes(loss(policy, 2), variables[2]["params"]) for policy in ("none", "block")}
    if name == "mae":  # the decoder runs on all N tokens: its block input is (B, N, dim) float32
        assert extra["block"] == _B * _N * _DIM * 4, extra
    assert 0 < 10 * extra["block"] < extra["none"], extra
