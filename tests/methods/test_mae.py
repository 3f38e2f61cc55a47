"""MAE: loss only on masked patches, patchify round trip, a short run lowers the loss, PNG, configs."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import mae_cifar10
from jaxssl import methods, models
from jaxssl.methods import mae
from jaxssl.models import transformer
from jaxssl.train import step as step_lib
from jaxssl.train.validate import validate_config


def _method(**kw):
    bb = transformer.Model(modality="image", width=32, depth=2, num_heads=2, patch_size=4, img_size=16)
    return mae.make(backbone=bb, decoder_dim=16, decoder_depth=1, decoder_heads=2, **kw)


def test_patchify_round_trip():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 12, 3)), jnp.float32)
    p = mae.patchify(x, 4)
    assert p.shape == (2, 6, 48)
    np.testing.assert_array_equal(np.asarray(p[0, 1]), np.asarray(x[0, :4, 4:8]).reshape(-1))
    np.testing.assert_array_equal(np.asarray(mae.unpatchify(p, 4, 8, 12)), np.asarray(x))


def test_loss_only_on_masked_patches():
    method = _method(mask_ratio=0.75, norm_pix_loss=False)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 16, 3)), jnp.float32)
    params = method.net.init(jax.random.key(0), x)["params"]
    rng = jax.random.key(3)
    mask, _ = mae.masking.random_mask(jax.random.split(rng)[0], 2, 16, 0.75)
    # Changing only visible pixels changes the encoder input but not the targets; changing a
    # masked patch's pixels changes the loss only through its target. Check the latter is exact:
    # the gradient of the loss w.r.t. the target pixels vanishes on visible patches.
    def loss_of_target(t):
        out = method.net.apply({"params": params}, x, train=True, keep=mae.masking.random_mask(
            jax.random.split(rng)[0], 2, 16, 0.75)[1])
        return jnp.mean(mae.losses.masked_mse(out["prediction"], mae.patchify(t, 4), mask))
    g = np.abs(np.asarray(mae.patchify(jax.jit(jax.grad(loss_of_target))(x), 4))).sum(-1)
    np.testing.assert_array_equal(g[~np.asarray(mask)], 0.0)
    assert np.all(g[np.asarray(mask)] > 0)
    # The method's loss equals the masked mean computed by hand with the same mask.
    loss, _ = jax.jit(method.loss_fn)(params, {}, None, {}, [x], rng, jnp.int32(0))
    np.testing.assert_allclose(float(loss), float(jax.jit(loss_of_target)(x)), rtol=1e-5)


def test_short_run_lowers_loss_and_png(tmp_path):
    method, tx = _method(), optax.adam(3e-3)
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(8, 16, 16, 3)), jnp.float32)
    state = step_lib.init_state(method, tx, jax.random.key(0), x)
    step = jax.jit(step_lib.make_step_fn(method, tx, ()))
    losses = []
    for _ in range(15):
        state, m = step(state, {"inputs": x}, jax.random.key(1))
        losses.append(float(m["loss"]))
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
    masked, recon = mae.reconstruct(method, {"params": state.params}, x, jax.random.key(2))
    path = mae.save_reconstructions(str(tmp_path / "mae.png"), x, masked, recon)
    from PIL import Image
    assert Image.open(path).size == (8 * 16, 3 * 16)


@pytest.mark.parametrize("arg", ["", "cpu", "runlocal"])
def test_config_constructs(arg):
    config = mae_cifar10.get_config(arg)
    validate_config(config)
    methods.get(config.method, backbone=models.get(**config.model), **config.method_kw)


def _mae_sincos_np(embed_dim, gs):
    """MAE util/pos_embed.py get_2d_sincos_pos_embed (no cls token), re-derived in float64."""
    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)
    grid = np.stack(np.meshgrid(np.arange(gs, dtype=np.float64), np.arange(gs, dtype=np.float64)), axis=0)
    return np.concatenate([one_d(embed_dim // 2, grid[0]), one_d(embed_dim // 2, grid[1])], axis=1)


def test_sincos_tables_are_maes():
    from jaxssl.models import encoders
    for dim, gs in ((16, 4), (32, 3), (768, 14)):
        np.testing.assert_allclose(encoders.sincos_2d(dim, gs, gs), _mae_sincos_np(dim, gs), rtol=1e-12, atol=1e-12)


def test_mae_position_embeddings_are_fixed_sincos():
    from jaxssl.models import encoders
    method = _method()
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 16, 3)), jnp.float32)
    params = method.net.init(jax.random.key(0), x)["params"]
    paths = [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    assert not [p for p in paths if "pos" in p], paths  # no trainable position table anywhere
    assert method.net.backbone.pos_embed == "sincos"
    # The encoder's input is the patch embedding plus MAE's table (grid 4x4, width 32).
    embed = encoders.PatchEmbed(32, 4, 16, pos_embed="sincos")
    zero = jax.tree_util.tree_map(jnp.zeros_like, params["backbone"]["embed"])
    pos_only = embed.apply({"params": zero}, x)
    np.testing.assert_allclose(np.asarray(pos_only[0]), _mae_sincos_np(32, 4), rtol=1e-6, atol=1e-6)
    lp = _method(pos_embed="learned").net.init(jax.random.key(0), x)["params"]
    assert "decoder_pos" in lp and "pos_embedding" in lp["backbone"]["embed"]


def _params(weight_init):
    bb = transformer.Model(modality="image", width=256, depth=1, num_heads=2, patch_size=8, img_size=16)
    method = mae.make(backbone=bb, decoder_dim=128, decoder_depth=1, decoder_heads=2, weight_init=weight_init)
    x = jnp.zeros((1, 16, 16, 3))
    return method.net.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, train=False)["params"]


def test_default_init_is_the_references_xavier_uniform():
    """facebookresearch/mae models_mae.py `initialize_weights`: every Linear of encoder and decoder
    xavier-uniform (variance 2 / (fan_in + fan_out), bound sqrt(6 / (fan_in + fan_out))) with a zero bias;
    the patch projection xavier-uniform over its (D, C p p) view, its bias torch's Conv2d default."""
    p = _params("xavier_uniform")
    f64 = lambda a: np.asarray(a, np.float64)
    kernels = {"qkv": p["backbone"]["body"]["block0"]["attn"]["qkv"], "fc1": p["backbone"]["body"]["block0"]["fc1"],
               "decoder fc2": p["decoder"]["block0"]["fc2"], "decoder_embed": p["decoder_embed"],
               "decoder_pred": p["decoder_pred"]}
    for name, layer in kernels.items():
        k = f64(layer["kernel"])
        fan_in, fan_out = k.shape
        bound = (6 / (fan_in + fan_out)) ** 0.5
        assert np.abs(k).max() <= bound, name
        np.testing.assert_allclose(k.var(), bound ** 2 / 3, rtol=0.06, err_msg=name)
        assert not f64(layer["bias"]).any(), name
    patch = p["backbone"]["embed"]["patch"]
    k, b = f64(patch["kernel"]), f64(patch["bias"])  # (8, 8, 3, 256): fan_in 192, fan_out 256 as torch's view
    bound = (6 / (192 + 256)) ** 0.5
    assert np.abs(k).max() <= bound
    np.testing.assert_allclose(k.var(), bound ** 2 / 3, rtol=0.03)
    assert np.abs(b).max() <= 1 / 192 ** 0.5 and b.std() > 0.5 / 192 ** 0.5 / 3 ** 0.5


def test_trunc_normal_init_is_an_option():
    """`weight_init="trunc_normal"`: timm's ViT init, std 0.02 everywhere, zero biases."""
    p = _params("trunc_normal")
    for k in (p["backbone"]["body"]["block0"]["attn"]["qkv"]["kernel"], p["decoder_pred"]["kernel"],
              p["backbone"]["embed"]["patch"]["kernel"]):
        k = np.asarray(k, np.float64)
        assert np.abs(k).max() <= 0.04 + 1e-6
        np.testing.assert_allclose(k.std(), 0.02 * 0.8796, rtol=0.1)  # truncated at 2 std
    assert not np.asarray(p["backbone"]["embed"]["patch"]["bias"]).any()
    with pytest.raises(ValueError, match="init 'xavier'.*trunc_normal.*xavier_uniform"):
        _params("xavier")
