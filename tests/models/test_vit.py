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
    # The native size uses the stored grid as it is; a 2x2 grid sees DINO's bicubic (A = -0.75, no
    # antialiasing) resampling of the 4x4 embedding.
    pos = variables["params"]["pos_embedding"]
    g = jax.grad(lambda p: model.apply({"params": p}, small, train=False).sum())(variables["params"])
    assert float(jnp.abs(g["pos_embedding"]).min()) > 0  # every stored position is used
    # Interpolating in the model equals feeding the pre-resized embedding as a native 8 px model.
    native = models.get("vit", **{**TINY, "img_size": 8}, mask_token=True)
    want = _torch_bicubic_np(np.asarray(pos[0], np.float64), 2, 2)[None]
    resized = {**variables["params"], "pos_embedding": jnp.asarray(want, jnp.float32)}
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


def _torch_bicubic_np(img, out_h, out_w, offset=0.1):
    """float64 re-derivation of PyTorch's upsample_bicubic2d (align_corners=False, given scale_factor):
    per output pixel, 4x4 taps clamped to the border, cubic_convolution1/2 with A = -0.75."""
    a = -0.75
    conv1 = lambda x: ((a + 2) * x - (a + 3)) * x * x + 1       # |x| <= 1
    conv2 = lambda x: ((a * x - 5 * a) * x + 8 * a) * x - 4 * a  # 1 < |x| < 2

    def coeffs(t):
        return [conv2(t + 1), conv1(t), conv1(1 - t), conv2(2 - t)]

    in_h, in_w = img.shape[:2]
    sh, sw = in_h / (out_h + offset), in_w / (out_w + offset)  # 1 / scale_factor
    out = np.zeros((out_h, out_w) + img.shape[2:])
    for i in range(out_h):
        ry = sh * (i + 0.5) - 0.5
        y0 = int(np.floor(ry))
        cy = coeffs(ry - y0)
        for j in range(out_w):
            rx = sw * (j + 0.5) - 0.5
            x0 = int(np.floor(rx))
            cx = coeffs(rx - x0)
            for m in range(4):
                for n in range(4):
                    yy = min(max(y0 - 1 + m, 0), in_h - 1)
                    xx = min(max(x0 - 1 + n, 0), in_w - 1)
                    out[i, j] += cy[m] * cx[n] * img[yy, xx]
    return out


@pytest.mark.parametrize("src,dst", [(4, 2), (4, 7), (14, 6), (5, 3)])
def test_pos_embed_interpolation_is_dinos_bicubic(src, dst):
    from jaxssl.models import encoders
    pos = np.random.default_rng(src * dst).normal(size=(1, src, src, 3))
    got = encoders.interpolate_pos_embed(jnp.asarray(pos, jnp.float32), (dst, dst + 1))
    want = _torch_bicubic_np(pos[0], dst, dst + 1)
    np.testing.assert_allclose(np.asarray(got[0]), want, rtol=1e-5, atol=1e-5)
    if dst < src:  # jax.image.resize antialiases when shrinking: a different function
        other = jax.image.resize(jnp.asarray(pos), (1, dst, dst + 1, 3), method="bicubic")
        assert np.abs(np.asarray(other[0]) - want).max() > 1e-2

