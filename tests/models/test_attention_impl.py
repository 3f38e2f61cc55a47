"""Fused attention (`jax.nn.dot_product_attention`) == the explicit einsum path, and remat changes nothing.

Both in float32: outputs and parameter gradients of the fused and explicit paths agree to float32
rounding for every ViT size of `vit.VARIANTS` (one block at each size's width and heads keeps
ViT-L cheap; a whole ViT once), with token masks (iBOT, data2vec), visible-token subsets (MAE's `keep`) and
drop-path. `remat` (per-block `jax.checkpoint`) gives the same loss and gradients under every policy.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import models
from jaxssl.models import transformer, vit

_TOL = dict(rtol=2e-5, atol=2e-6)


def _loss_and_grads(model, variables, x, **kw):
    """A scalar that depends on every output token (random weights), and its parameter gradients."""
    def loss(params):
        out = model.apply({**variables, "params": params}, x, **kw)
        out = out["tokens"] if isinstance(out, dict) else out
        out = out[0] if isinstance(out, tuple) else out  # a Block: (output, MLP output)
        w = jax.random.normal(jax.random.key(7), out.shape)
        return jnp.sum(out * w)
    params = variables["params"]
    return jax.jit(jax.value_and_grad(loss)).lower(params).compile()(params)


def _assert_same(a, b, scale_tol: bool = False):
    (la, ga), (lb, gb) = a, b
    np.testing.assert_allclose(la, lb, **_TOL)
    flat_a, flat_b = jax.tree_util.tree_leaves_with_path(ga), jax.tree_util.tree_leaves(gb)
    assert len(flat_a) == len(flat_b)
    for (path, x), y in zip(flat_a, flat_b):
        # Relative to each gradient's scale: tiny entries of a large tensor carry absolute rounding.
        atol = 1e-5 * float(np.max(np.abs(x))) + 1e-7
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=atol, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("size", sorted(vit.VARIANTS))
def test_fused_attention_equals_einsum_for_every_vit_size(size):
    # One block at the variant's width and heads on 17 tokens (a 4x4 grid + CLS): the attention
    # shapes of that ViT; its depth only repeats the block.
    width, _, heads = vit.VARIANTS[size]
    x = jax.random.normal(jax.random.key(1), (2, 17, width))
    fused, explicit = (transformer.Block(heads, 4 * width, attention_impl=impl) for impl in (None, "einsum"))
    variables = fused.init(jax.random.key(0), x, train=False)
    assert variables["params"]["attn"]["qkv"]["kernel"].shape == (width, 3 * width)
    _assert_same(_loss_and_grads(fused, variables, x, train=False),
                 _loss_and_grads(explicit, variables, x, train=False))


def test_fused_attention_in_the_vit_keeps_the_parameters():
    x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
    kw = dict(variant="Ti/8", depth=2, img_size=32)
    fused, explicit = models.get("vit", **kw), models.get("vit", **kw, attention_impl="einsum")
    variables = fused.init(jax.random.key(0), x, train=False)
    assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(
        explicit.init(jax.random.key(0), x, train=False))  # same parameters, same names
    _assert_same(_loss_and_grads(fused, variables, x, train=False, return_tokens=True),
                 _loss_and_grads(explicit, variables, x, train=False, return_tokens=True))


def test_fused_attention_with_token_mask_and_drop_path():
    # iBOT / data2vec-style masked patches, training mode with drop-path (same dropout key).
    kw = dict(variant="S/8", width=48, depth=3, num_heads=3, img_size=32, mask_token=True, drop_path_rate=0.3)
    fused, explicit = models.get("vit", **kw), models.get("vit", **kw, attention_impl="einsum")
    x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
    mask = jax.random.bernoulli(jax.random.key(2), 0.4, (4, 16))
    variables = fused.init(jax.random.key(0), x, train=False)
    call = dict(train=True, mask=mask, return_tokens=True, rngs={"dropout": jax.random.key(3)})
    _assert_same(_loss_and_grads(fused, variables, x, **call), _loss_and_grads(explicit, variables, x, **call))


@pytest.mark.parametrize("mode", ["keep", "keep_valid", "mask", "post_norm_text"])
def test_fused_attention_in_the_transformer_body(mode):
    # MAE's encoder on visible tokens (`keep`), I-JEPA's padded visible tokens (`keep_valid`: a key
    # mask on the attention), data2vec's masked image input, the post-norm text encoder.
    kw = dict(width=48, depth=2, num_heads=4, patch_size=8, img_size=32)
    call = dict(train=True, return_layers=True, rngs={"dropout": jax.random.key(3)})
    if mode == "post_norm_text":
        kw = dict(modality="text", width=48, depth=2, num_heads=4, vocab_size=50, max_len=16, norm_first=False)
        x = jax.random.randint(jax.random.key(1), (3, 16), 0, 50)
    else:
        x = jax.random.normal(jax.random.key(1), (3, 32, 32, 3))
        if mode.startswith("keep"):
            call["keep"] = jnp.sort(jax.random.permutation(jax.random.key(2), 16)[:4])[None].repeat(3, 0)
            if mode == "keep_valid":  # the last kept token of rows 0 and 2 is padding
                call["keep_valid"] = jnp.array([[True, True, True, False], [True] * 4, [True, True, True, False]])
        else:
            call["mask"] = jax.random.bernoulli(jax.random.key(2), 0.5, (3, 16))
    fused = models.get("transformer", **kw, drop_path_rate=0.2)
    explicit = models.get("transformer", **kw, drop_path_rate=0.2, attention_impl="einsum")
    variables = fused.init(jax.random.key(0), x, train=False)
    _assert_same(_loss_and_grads(fused, variables, x, **call), _loss_and_grads(explicit, variables, x, **call))


def test_fused_attention_bfloat16_is_close_to_float32():
    # bfloat16 compute (float32 QK^T accumulation and softmax): within bfloat16 rounding of float32.
    kw = dict(variant="S/8", width=64, depth=2, num_heads=2, img_size=32)
    x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
    f32, bf16 = models.get("vit", **kw), models.get("vit", **kw, dtype=jnp.bfloat16)
    bf16_einsum = models.get("vit", **kw, dtype=jnp.bfloat16, attention_impl="einsum")
    variables = f32.init(jax.random.key(0), x, train=False)
    ref = f32.apply(variables, x, train=False)
    for model in (bf16, bf16_einsum):
        out = model.apply(variables, x, train=False)
        assert out.dtype == jnp.float32
        np.testing.assert_allclose(out, ref, atol=0.08)
    np.testing.assert_allclose(bf16.apply(variables, x, train=False), bf16_einsum.apply(variables, x, train=False),
                               atol=0.03)


def test_attention_maps_use_the_explicit_path_under_the_fused_default():
    model = models.get("vit", variant="S/8", width=32, depth=2, num_heads=2, img_size=16)
    x = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
    variables = model.init(jax.random.key(0), x, train=False)
    out = vit.intermediates(model, variables, x)
    assert [w.shape for w in out["attention"]] == [(2, 2, 5, 5)] * 2
    # The block outputs sown beside the weights equal the fused forward's (same network).
    final = model.apply(variables, x, train=False, return_tokens=True)
    np.testing.assert_allclose(
        model.apply(variables, x, train=False, return_tokens=True, mutable=["intermediates"])[0], final, **_TOL)


def test_remat_gives_identical_loss_and_gradients():
    kw = dict(variant="S/8", width=32, depth=2, num_heads=2, img_size=16, drop_path_rate=0.3, mask_token=True)
    x = jax.random.normal(jax.random.key(1), (3, 16, 16, 3))
    mask = jax.random.bernoulli(jax.random.key(2), 0.4, (3, 4))
    plain = models.get("vit", **kw)
    variables = plain.init(jax.random.key(0), x, train=False)
    call = dict(train=True, mask=mask, return_tokens=True, rngs={"dropout": jax.random.key(3)})
    ref = _loss_and_grads(plain, variables, x, **call)
    for policy in transformer.REMAT_POLICIES:
        remat = models.get("vit", **kw, remat=policy)
        assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(
            remat.init(jax.random.key(0), x, train=False))
        _assert_same(ref, _loss_and_grads(remat, variables, x, **call))
    # The transformer body (MAE, data2vec) takes the same option.
    kw = dict(width=32, depth=2, num_heads=2, patch_size=8, img_size=16)
    plain, remat = models.get("transformer", **kw), models.get("transformer", **kw, remat="block")
    variables = plain.init(jax.random.key(0), x, train=False)
    _assert_same(_loss_and_grads(plain, variables, x, train=True, return_layers=True),
                 _loss_and_grads(remat, variables, x, train=True, return_layers=True))


def test_unknown_options_name_the_choices():
    x = jnp.zeros((1, 16, 16, 3))
    with pytest.raises(ValueError, match="remat must be one of"):
        models.get("vit", variant="S/8", depth=1, img_size=16, remat="all").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="attention_impl must be one of"):
        models.get("vit", variant="S/8", depth=1, img_size=16, attention_impl="flash").init(jax.random.key(0), x)


def test_bfloat16_policy_float32_parameters_attention_weights_and_outputs():
    # README "precision policy": parameters float32, attention softmax float32, outputs float32.
    kw = dict(variant="S/8", width=32, depth=1, num_heads=2, img_size=16, dtype=jnp.bfloat16)
    x = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
    for name, model in (("vit", models.get("vit", **kw)),
                        ("transformer", models.get("transformer", width=32, depth=1, num_heads=2, patch_size=8,
                                                   img_size=16, dtype=jnp.bfloat16))):
        variables = model.init(jax.random.key(0), x, train=False)
        assert {p.dtype for p in jax.tree_util.tree_leaves(variables)} == {jnp.dtype(jnp.float32)}, name
        out = model.apply(variables, x, train=False)
        assert out.dtype == jnp.float32, name
    model = models.get("vit", **kw)
    weights = vit.intermediates(model, model.init(jax.random.key(0), x, train=False), x)["attention"][0]
    assert weights.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(weights).sum(-1), 1.0, atol=1e-6)  # float32, not bfloat16, rounding
