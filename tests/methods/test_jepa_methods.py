"""I-JEPA and LeJEPA: gradient flow, padding never matters, exact agreement with truncated masks, the loss terms."""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxssl import losses, masking
from jaxssl.methods import ijepa, lejepa
from jaxssl.models import transformer

# 16 px images: a 4x4 patch grid (min_keep 0: the smallest target block there is one patch).
TINY = dict(modality="image", width=32, depth=2, num_heads=2, patch_size=4, img_size=16)
GRID = (4, 4)


def _ijepa(**kw):
    return ijepa.make(backbone=transformer.Model(**TINY), total_steps=10, predictor_dim=16, predictor_depth=1,
                      predictor_heads=2, min_keep=0, **kw)


def _images(b=4, size=16):
    return jnp.asarray(np.random.default_rng(0).normal(size=(b, size, size, 3)), jnp.float32)


def test_ijepa_gradient_reaches_context_encoder_and_predictor_not_target_encoder():
    method, x = _ijepa(), _images()
    params = method.net.init(jax.random.key(0), x)["params"]
    teacher = {"params": jax.tree_util.tree_map(lambda p: p * 1.01, params)}

    def loss(p, t):
        return method.loss_fn(p, {}, t, {}, [x], jax.random.key(1), jnp.int32(0))[0]

    g_student, g_teacher = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, teacher)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree_util.tree_leaves(g_teacher))
    assert optax.tree.norm(g_student["backbone"]) > 0
    assert optax.tree.norm(g_student["predictor"]) > 0
    assert float(jnp.abs(g_student["predictor"]["mask_token"]).max()) > 0
    # The encoder's positions are the fixed sin-cos table (as the reference): no parameter.
    assert "pos_embedding" not in g_student["backbone"]["embed"]


def test_ijepa_padding_is_exactly_the_truncated_masks():
    """Padded ids + validity flags give the reference's computation on the common counts exactly."""
    method, x = _ijepa(), _images()
    variables = method.net.init(jax.random.key(0), x)
    m = masking.multiblock_mask(jax.random.key(3), x.shape[0], GRID, min_keep=0)
    k_c, k_t = int(m.context_valid[0].sum()), int(m.target_valid[0, 0].sum())
    assert k_c < m.context_ids.shape[1] or k_t < m.target_ids.shape[2]  # there is padding to ignore
    predict = jax.jit(lambda v, masks: method.net.apply(v, x, train=False, masks=masks)["prediction"])
    padded = predict(variables, m)
    # The official collator's tensors: every mask cut to the common count, nothing padded.
    cut = masking.MultiBlock(None, None, m.context_ids[:, :k_c], m.context_valid[:, :k_c],
                             m.target_ids[..., :k_t], m.target_valid[..., :k_t])
    truncated = predict(variables, cut)
    np.testing.assert_allclose(np.asarray(padded[:, :, :k_t]), np.asarray(truncated), rtol=2e-5, atol=2e-5)
    # Whatever the padding ids point at (here: target patches) changes nothing.
    a_target_patch = m.target_ids[:, 0, :1]  # (B, 1)
    scrambled = m._replace(context_ids=jnp.where(m.context_valid, m.context_ids, a_target_patch))
    again = predict(variables, scrambled)
    np.testing.assert_allclose(np.asarray(again[:, :, :k_t]), np.asarray(truncated), rtol=2e-5, atol=2e-5)


def test_ijepa_loss_is_the_smooth_l1_of_layer_normed_teacher_tokens():
    x = _images()
    for name, beta in (("smooth_l1", 1.0), ("mse", 0.0)):
        method = _ijepa(loss=name)
        variables = method.net.init(jax.random.key(0), x)
        teacher = {"params": jax.tree_util.tree_map(lambda p: p * 0.9, variables["params"])}
        rng = jax.random.key(5)
        value, (_, _, metrics) = method.loss_fn(variables["params"], {}, teacher, {}, [x], rng, jnp.int32(0))
        mask_rng, _ = jax.random.split(rng)
        m = masking.multiblock_mask(mask_rng, x.shape[0], GRID, min_keep=0)
        h = method.net.apply(teacher, x, method="tokens")
        pred = method.net.apply(variables, x, train=False, masks=m)["prediction"]
        want = jnp.mean(losses.ijepa(pred, losses.ijepa_targets(h, m.target_ids), m.target_valid, beta=beta))
        np.testing.assert_allclose(float(value), float(want), rtol=1e-5)
        assert float(metrics["context_patches"]) == float(m.context_valid[0].sum())


def test_ijepa_features_are_pooled_patch_tokens_and_evaluated_on_the_teacher():
    method, x = _ijepa(), _images()
    variables = method.net.init(jax.random.key(0), x)
    f = method.net.apply(variables, x, method="features")
    np.testing.assert_allclose(np.asarray(f), np.asarray(method.net.apply(variables, x, method="tokens").mean(1)),
                               rtol=1e-5, atol=1e-6)
    assert method.eval_teacher and method.teacher_momentum is not None
    assert float(method.teacher_momentum(0)) == np.float32(0.996) and float(method.teacher_momentum(10)) == 1.0


def test_lejepa_loss_is_lambda_sigreg_plus_invariance():
    method = lejepa.make(backbone=transformer.Model(**TINY), proj_hidden=(16,), proj_dim=8, num_slices=32,
                         lambda_=0.1, global_views=2)
    views = [_images(8), _images(8) * 0.5, _images(8, 8)]
    variables = method.net.init(jax.random.key(0), views)
    params, state = variables["params"], {k: v for k, v in variables.items() if k != "params"}
    rng = jax.random.key(2)
    loss = jax.jit(lambda p: method.loss_fn(p, state, None, {}, views, rng, jnp.int32(0)))
    value, (_, _, metrics) = loss(params)
    out, _ = jax.jit(lambda v: method.net.apply(v, views, train=True, mutable=list(state)))(variables)
    z = out["projection"].reshape(3, 8, 8)
    a = losses.slice_directions(jax.random.fold_in(rng, 1), 8, 32)
    sig = jnp.mean(losses.sigreg(z, a))
    inv = jnp.mean(((z[:2].mean(0) - z) ** 2))
    np.testing.assert_allclose(float(value), float(0.1 * sig + 0.9 * inv), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["sigreg"]), float(sig), rtol=1e-5)
    g = jax.jit(jax.grad(lambda p: loss(p)[0]))(params)
    assert optax.tree.norm(g["backbone"]) > 0 and optax.tree.norm(g["head"]) > 0


def test_ijepa_imagenette_cpu_size_sets_grid_and_needs_cpu():
    cfg = importlib.import_module("configs.ijepa_imagenette")
    default, big = cfg.get_config("cpu"), cfg.get_config("cpu,size=96")
    assert (default.model.img_size, default.input.views[0]["crop_size"]) == (64, 64)  # 8x8 grid of 8-px patches
    assert (big.model.img_size, big.input.views[0]["crop_size"]) == (96, 96)  # 12x12 grid
    assert big.model.patch_size == 8 and big.method_kw.min_keep == default.method_kw.min_keep
    with pytest.raises(ValueError, match=r"use `:cpu,size=96`"):
        cfg.get_config("size=96")
