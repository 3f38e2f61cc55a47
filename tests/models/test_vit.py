"""ViT backbone: shapes, parameter counts, attention weights, drop-path, token masks, position embeddings."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import models
from jaxssl.models import vit

TINY = dict(variant="S/4", width=32, depth=2, num_heads=2, img_size=16)


def _init(model, x, **kw):
    return model.init(jax.random.key(0), x, train=False, **kw)


@pytest.fixture(scope="module")
def tiny():
    model = models.get("vit", **TINY, drop_path_rate=0.5, mask_token=True)
    x = jax.random.normal(jax.random.key(1), (3, 16, 16, 3))
    return model, _init(model, x), x


def test_output_shapes(tiny):
    model, variables, x = tiny
    assert model.apply(variables, x, train=False).shape == (3, 32)
    assert model.apply(variables, x, train=False, return_tokens=True).shape == (3, 1 + 16, 32)
    # The CLS feature is token 0 of the normalised tokens.
    np.testing.assert_allclose(model.apply(variables, x, train=False),
                               model.apply(variables, x, train=False, return_tokens=True)[:, 0], rtol=1e-6)


@pytest.mark.parametrize("variant,count", [("Ti/16", 5_524_224), ("S/16", 21_665_280), ("B/16", 85_797_888)])
def test_parameter_counts_match_timm(variant, count):
    # timm vit_{tiny,small,base}_patch16_224 without the classifier: 5,524,416 / 21,665,664 /
    # 85,798,656 parameters; they store a position embedding for the CLS token too (D fewer here).
    model = models.get("vit", variant=variant)
    shapes = jax.eval_shape(lambda: _init(model, jnp.ones((1, 224, 224, 3))))
    width = vit.VARIANTS[variant.split("/")[0]][0]
    assert sum(p.size for p in jax.tree_util.tree_leaves(shapes)) == count
    assert shapes["params"]["pos_embedding"].shape == (1, 14, 14, width)


def test_attention_weights_sum_to_one_and_layers_are_returned(tiny):
    model, variables, x = tiny
    out = vit.intermediates(model, variables, x)
    assert len(out["attention"]) == len(out["layers"]) == 2
    for w in out["attention"]:
        assert w.shape == (3, 2, 17, 17)
        np.testing.assert_allclose(np.asarray(w).sum(-1), 1.0, rtol=1e-5)
        assert float(w.min()) >= 0.0
    assert out["layers"][-1].shape == (3, 17, 32)
    # Without a mutable "intermediates" collection nothing is stored.
    assert set(variables) == {"params"}


def test_drop_path_is_off_in_eval_and_random_in_training(tiny):
    model, variables, x = tiny
    a = model.apply(variables, x, train=False, rngs={"dropout": jax.random.key(1)})
    b = model.apply(variables, x, train=False, rngs={"dropout": jax.random.key(2)})
    np.testing.assert_array_equal(a, b)
    c = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})
    d = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)})
    assert not np.allclose(c, d)
    # Without drop-path, training mode is deterministic and equals eval (no BatchNorm in a ViT).
    plain = models.get("vit", **TINY, mask_token=True)
    np.testing.assert_allclose(plain.apply(variables, x, train=True), a, rtol=1e-6)


def test_masked_tokens_use_the_mask_token(tiny):
    model, variables, x = tiny
    none = jnp.zeros((3, 16), bool)
    np.testing.assert_allclose(model.apply(variables, x, train=False, mask=none),
                               model.apply(variables, x, train=False), rtol=1e-6)
    mask = jnp.zeros((3, 16), bool).at[:, :8].set(True)  # the top half of the 4x4 patch grid
    # Masked patches no longer see the pixels: changing the top half of the image changes nothing.
    y = x.at[:, :8].set(jax.random.normal(jax.random.key(5), (3, 8, 16, 3)))
    np.testing.assert_allclose(model.apply(variables, x, train=False, mask=mask),
                               model.apply(variables, y, train=False, mask=mask), rtol=1e-5, atol=1e-6)
    assert not np.allclose(model.apply(variables, x, train=False), model.apply(variables, y, train=False))
    # The mask token is a parameter that receives gradient only through masked positions.
    g = jax.grad(lambda p: model.apply({"params": p}, x, train=False, mask=mask).sum())(variables["params"])
    assert float(jnp.abs(g["mask_embedding"]).sum()) > 0
    with pytest.raises(ValueError, match="mask_token=True"):
        plain = models.get("vit", **TINY)
        plain.apply(_init(plain, x), x, mask=mask, train=False)
    with pytest.raises(ValueError, match="shape"):
        model.apply(variables, x, train=False, mask=jnp.zeros((3, 15), bool))


def test_position_embedding_interpolates_to_other_sizes(tiny):
    model, variables, x = tiny
    small = jax.random.normal(jax.random.key(2), (3, 8, 8, 3))
    assert model.apply(variables, small, train=False, return_tokens=True).shape == (3, 5, 32)
    assert model.apply(variables, jnp.ones((1, 32, 24, 3)), train=False, return_tokens=True).shape == (1, 1 + 48, 32)
    # Resizing the stored grid to its own size is the identity, so the native size is unchanged,
    # and a 2x2 grid sees the bicubic (antialiased) downsampling of the 4x4 embedding.
    pos = variables["params"]["pos_embedding"]
    np.testing.assert_allclose(jax.image.resize(pos, pos.shape, "bicubic"), pos, rtol=1e-6)
    g = jax.grad(lambda p: model.apply({"params": p}, small, train=False).sum())(variables["params"])
    assert float(jnp.abs(g["pos_embedding"]).min()) > 0  # every stored position is used
    # Interpolating in the model equals feeding the pre-resized embedding as a native 8 px model.
    native = models.get("vit", **{**TINY, "img_size": 8}, mask_token=True)
    resized = {**variables["params"], "pos_embedding": jax.image.resize(pos, (1, 2, 2, 32), "bicubic")}
    np.testing.assert_allclose(native.apply({"params": resized}, small, train=False),
                               model.apply(variables, small, train=False), rtol=1e-5, atol=1e-6)


def test_bfloat16_compute_keeps_float32_params_and_outputs():
    model = models.get("vit", **TINY, dtype=jnp.bfloat16)
    x = jnp.ones((2, 16, 16, 3))
    variables = _init(model, x)
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(variables))
    assert model.apply(variables, x, train=False).dtype == jnp.float32


def test_unknown_variant():
    with pytest.raises(ValueError, match="Unknown ViT variant"):
        vit.parse_variant("XL/16")
    with pytest.raises(ValueError, match="Unknown ViT variant"):
        vit.parse_variant("S")
