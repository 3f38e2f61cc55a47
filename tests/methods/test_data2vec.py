"""data2vec: targets vs NumPy, no gradient into the teacher, a short run per modality, 8 == 1 device, configs."""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxssl import methods
from jaxssl.methods import data2vec
from jaxssl.models import transformer
from jaxssl.train import step as step_lib
from tests import multidevice

TINY = dict(width=32, depth=2, num_heads=2, patch_size=4, img_size=16,
            conv_layers=((32, 10, 5), (32, 4, 4)), pos_conv_kernel=8, pos_conv_groups=4)


def _inputs(modality, b=8):
    rng = np.random.default_rng(0)
    if modality == "image":
        return jnp.asarray(rng.normal(size=(b, 16, 16, 3)), jnp.float32)
    if modality == "text":
        return jnp.asarray(rng.integers(0, 256, (b, 24)), jnp.int32)
    t = np.arange(2000) / 8000
    return jnp.asarray(np.sin(2 * np.pi * rng.uniform(100, 800, (b, 1)) * t) + 0.1 * rng.normal(size=(b, 2000)),
                       jnp.float32)


# Smaller still, for the 8-vs-1-device subprocess (compile time dominates there).
SMALL = dict(width=16, depth=1, num_heads=2, conv_layers=((16, 10, 5), (16, 4, 4)), pos_conv_groups=2)


def _method(modality, top_k=2, **kw):
    sizes = {**TINY, **{k: kw.pop(k) for k in list(kw) if k in TINY}}
    return data2vec.make(backbone=transformer.Model(modality=modality, **sizes), top_k=top_k, **kw)


@pytest.mark.parametrize("norm,final", [("instance", False), ("layer", True), ("none", False)])
def test_targets_match_numpy(norm, final):
    rng = np.random.default_rng(0)
    layers = [rng.normal(size=(3, 5, 4)).astype(np.float32) * (i + 1) + i for i in range(4)]

    def ref_norm(x, axis):
        return (x - x.mean(axis, keepdims=True)) / np.sqrt(x.var(axis, keepdims=True) + 1e-5)

    top = layers[-3:]
    if norm != "none":
        top = [ref_norm(l, 1 if norm == "instance" else -1) for l in top]
    want = np.mean(top, axis=0)
    if final:
        want = ref_norm(want, -1)
    got = data2vec.layer_targets([jnp.asarray(l) for l in layers], 3, norm, final)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_no_gradient_reaches_teacher():
    method = _method("speech", ema_transformer_only=True)
    x = _inputs("speech", 4)
    params = method.net.init(jax.random.key(0), x)["params"]
    teacher = {"params": jax.tree_util.tree_map(lambda p: p + 0.01, params)}

    def loss(p, t):
        return method.loss_fn(p, {}, t, {}, [x], jax.random.key(1), jnp.int32(0))[0]

    g_student, g_teacher = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, teacher)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree_util.tree_leaves(g_teacher))
    assert optax.tree.norm(g_student) > 0
    # The student's input encoder gets gradient only through its own (masked) pass.
    assert optax.tree.norm(g_student["backbone"]["embed"]) > 0


def test_with_count_and_scatter_visible():
    from jaxssl import masking
    rng = np.random.default_rng(0)
    mask = jnp.asarray(rng.uniform(size=(64, 20)) < rng.uniform(0.1, 0.9, (64, 1)))
    new, keep = masking.with_count(jax.random.key(0), mask, 9)
    new, keep, old = np.asarray(new), np.asarray(keep), np.asarray(mask)
    assert (new.sum(1) == 9).all() and keep.shape == (64, 11)
    for row_old, row_new, row_keep in zip(old, new, keep):
        assert row_keep.tolist() == np.flatnonzero(~row_new).tolist()  # visible ids, increasing
        if row_old.sum() <= 9:
            assert (row_new >= row_old).all()  # only added
        else:
            assert (row_new <= row_old).all()  # only removed
    visible = jnp.asarray(rng.normal(size=(64, 11, 3)), jnp.float32)
    full = np.asarray(masking.scatter_visible(visible, jnp.asarray(keep), jnp.full((3,), 7.0), 20))
    np.testing.assert_array_equal(full[~new], np.asarray(visible).reshape(-1, 3))
    assert (full[new] == 7.0).all()


def test_masked_loss_ignores_unmasked_positions():
    rng = np.random.default_rng(0)
    pred, target = (jnp.asarray(rng.normal(size=(2, 5, 3)), jnp.float32) for _ in range(2))
    mask = jnp.asarray([[1, 0, 1, 0, 0], [0, 0, 0, 1, 0]], bool)
    got = data2vec.masked_loss(pred, target, mask, 0.0)
    want = np.sum(((np.asarray(pred) - np.asarray(target)) ** 2)[np.asarray(mask)]) / 3  # beta 0: d^2, 3 positions
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    moved = jnp.where(mask[..., None], pred, pred + 100.0)
    assert float(data2vec.masked_loss(moved, target, mask, 0.0)) == pytest.approx(float(got))


def _smooth_l1_np(d, beta):
    """torch.nn.functional.smooth_l1_loss (reduction none) in float64; beta 0 -> squared error (fairseq)."""
    if beta == 0:
        return d ** 2
    a = np.abs(d)
    return np.where(a < beta, 0.5 * d ** 2 / beta, a - 0.5 * beta)


def _student_and_perturbed_teacher(kind: str, batch: int | None = None):
    """(method, inputs, student params, teacher 1% off the student): a teacher that differs, so targets do."""
    method = _method(kind)
    x = _inputs(kind) if batch is None else _inputs(kind, batch)
    params = method.net.init(jax.random.key(0), x)["params"]
    return method, x, params, {"params": jax.tree_util.tree_map(lambda p: p * 1.01, params)}


def test_text_loss_is_fairseq_recipe():
    # fairseq data2vec_text.py: smooth-L1 beta 4, loss_scale 1, only where the student's input is <mask>.
    from jaxssl import masking
    method, x, params, teacher = _student_and_perturbed_teacher("text")
    rng = jax.random.key(3)
    loss, _ = method.loss_fn(params, {}, teacher, {}, [x], rng, jnp.int32(0))
    mask_rng, drop_rng = jax.random.split(rng)
    y = data2vec.layer_targets(method.net.apply(teacher, x, train=False)["layers"], 2, "layer")
    tokens, selected = masking.bert_mask(mask_rng, x, mask_id=259, vocab_size=256, prob=0.15)
    pred = method.net.apply({"params": params}, tokens, train=True, rngs={"dropout": drop_rng})["prediction"]
    at_mask = np.asarray(tokens) == 259
    assert at_mask.sum() < np.asarray(selected).sum()  # some selected tokens were kept or randomised
    d = np.asarray(pred, np.float64) - np.asarray(y, np.float64)
    want = _smooth_l1_np(d, 4.0).sum(-1)[at_mask].mean()
    np.testing.assert_allclose(float(loss), want, rtol=2e-5)
    # The BERT-style option regresses every selected token, scaled as asked.
    sel = _method("text", text_targets="selected", beta=0.0, loss_scale=0.5)
    loss_sel, _ = sel.loss_fn(params, {}, teacher, {}, [x], rng, jnp.int32(0))
    want_sel = 0.5 * _smooth_l1_np(d, 0.0).sum(-1)[np.asarray(selected)].mean()
    np.testing.assert_allclose(float(loss_sel), want_sel, rtol=2e-5)


def test_speech_default_is_squared_error():
    # fairseq audio/pretraining/base_librispeech.yaml: loss_beta 0, loss_scale null (1/sqrt(D)).
    from jaxssl import masking
    method, x, params, teacher = _student_and_perturbed_teacher("speech", 4)
    rng = jax.random.key(5)
    loss, _ = method.loss_fn(params, {}, teacher, {}, [x], rng, jnp.int32(0))
    mask_rng, drop_rng = jax.random.split(rng)
    y = data2vec.layer_targets(method.net.apply(teacher, x, train=False)["layers"], 2, "instance")
    mask, _ = data2vec.student_mask(mask_rng, method.net.backbone, x)
    pred = method.net.apply({"params": params}, x, train=True, mask=mask, rngs={"dropout": drop_rng})["prediction"]
    d = np.asarray(pred, np.float64) - np.asarray(y, np.float64)
    want = (d ** 2).sum(-1)[np.asarray(mask)].mean() / np.sqrt(d.shape[-1])
    np.testing.assert_allclose(float(loss), want, rtol=2e-5)


def test_student_mask_speech_same_count():
    backbone = transformer.Model(modality="speech", **TINY)
    x = _inputs("speech", 4)
    mask, keep = data2vec.student_mask(jax.random.key(0), backbone, x, mask_prob=0.65, mask_span=10,
                                       visible_only=True)
    t = backbone.num_tokens(x.shape)
    n_mask = round((1 - (1 - 0.065) ** 10) * t)  # the span masks' expected fraction
    assert (np.asarray(mask.sum(1)) == n_mask).all() and keep.shape == (4, t - n_mask)
    v1, none = data2vec.student_mask(jax.random.key(0), backbone, x, mask_prob=0.65, mask_span=10)
    assert none is None and 0 < float(v1.mean()) < 1


def test_student_visible_only_image():
    """data2vec 2.0: the student encodes only visible tokens, the teacher the whole input.

    (Speech: `test_student_mask_speech_same_count`, and 8-vs-1 devices below runs it end to end.)
    """
    method = _method("image", student_visible_only=True, decoder=dict(dim=16, groups=4), top_k=1, **SMALL)
    backbone = method.net.backbone
    x = _inputs("image", 4)
    params = method.net.init(jax.random.key(0), x)["params"]
    teacher = {"params": jax.tree_util.tree_map(lambda p: p + 0.01, params)}
    rng = jax.random.key(1)
    mask, keep = data2vec.student_mask(jax.random.split(rng)[0], backbone, x, mask_ratio=0.6, mask_prob=0.65,
                                       visible_only=True)  # what loss_fn draws from this rng
    t = backbone.num_tokens(x.shape)
    n_mask = int(mask.sum(1)[0])
    assert (np.asarray(mask.sum(1)) == n_mask).all() and keep.shape == (4, t - n_mask)
    assert n_mask == round(0.6 * t)
    p = backbone.patch_size  # change the input at the masked patches only
    x2 = jnp.where(jnp.repeat(jnp.repeat(mask.reshape(4, 4, 4), p, 1), p, 2)[..., None], x + 1.0, x)

    @jax.jit
    def run(params, x, x2):
        loss = lambda p, v: method.loss_fn(p, {}, teacher, {}, [v], rng, jnp.int32(0))
        (l1, (_, _, metrics)), g = jax.value_and_grad(loss, has_aux=True)(params, x)
        student = lambda v: method.net.apply({"params": params}, v, train=False, keep=keep)["prediction"]
        return l1, loss(params, x2)[0], metrics, optax.tree.norm(g["mask_token"]), student(x), student(x2)

    l1, l2, metrics, g_token, s1, s2 = run(params, x, x2)
    assert float(metrics["student_tokens"]) == t - n_mask
    assert float(metrics["mask_ratio"]) == pytest.approx(n_mask / t)
    assert float(g_token) > 0  # the decoder's mask token is trained
    assert abs(float(l2) - float(l1)) > 1e-4  # the loss depends on the masked patches ...
    # ... but the student's prediction does not, so the change came through the targets: the
    # teacher saw the full input.
    np.testing.assert_allclose(np.asarray(s2), np.asarray(s1), atol=1e-6)


def test_student_visible_only_needs_decoder_and_no_text():
    with pytest.raises(ValueError, match="decoder"):
        _method("image", student_visible_only=True)
    with pytest.raises(ValueError, match="text"):
        _method("text", student_visible_only=True, decoder=dict(dim=32, groups=4))


@pytest.mark.parametrize("modality", ["image", "text", "speech"])
def test_short_run_lowers_loss(modality):
    kw = dict(clone_batch=2, decoder=dict(dim=32, groups=4)) if modality == "image" else {}
    method = _method(modality, ema_anneal_steps=10, **kw)
    tx = optax.adam(2e-3)
    x = _inputs(modality)
    state = step_lib.init_state(method, tx, jax.random.key(0), x)
    step = jax.jit(step_lib.make_step_fn(method, tx, ()))
    losses = []
    for _ in range(15):
        state, metrics = step(state, {"inputs": x}, jax.random.key(1))
        losses.append(float(metrics["loss"]))
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses
    assert 0.0 < float(metrics["mask_ratio"]) < 1.0
    assert float(metrics["teacher_momentum"]) == pytest.approx(0.9999, abs=1e-6)  # annealed after 10 steps


def test_sharded_equals_unsharded():
    # One subprocess for all modalities; a width-16 one-block model and XLA's backend optimisation
    # level 0 (`multidevice.run`) keep its six compilations cheap (both meshes compile under the same flags).
    code = """
    import json, jax, numpy as np, optax
    from jax.sharding import Mesh
    from tests.methods.test_data2vec import _inputs, _method, SMALL
    from jaxssl.train import sharding as shd, step as step_lib
    out = {}
    for modality in ("image", "text", "speech"):
        # Speech runs data2vec 2.0's visible-only student with its conv decoder.
        v2 = dict(student_visible_only=True, decoder=dict(dim=16, groups=4)) if modality == "speech" else {}
        method, tx = _method(modality, clone_batch=2, top_k=1, **SMALL, **v2), optax.adam(1e-3)
        x = _inputs(modality)
        res = []
        for devices in (jax.devices(), jax.devices()[:1]):
            mesh = Mesh(np.asarray(devices), ("data",))
            state = step_lib.init_state(method, tx, jax.random.key(0), x)
            # Fresh buffers: the teacher starts as the params' arrays, and the step donates its state.
            state = jax.tree_util.tree_map(lambda a: jax.numpy.array(a, copy=True), state)
            step = step_lib.make_train_step(method, tx, (), mesh)
            state, m = step(state, shd.to_global({"inputs": np.asarray(x)}, mesh), jax.random.key(1))
            leaf = jax.tree_util.tree_leaves(state.params)[0]
            res.append([float(m["loss"]), float(m["grad_norm"]), np.asarray(leaf).ravel()[:8].tolist()])
        out[modality] = res
    print("RESULT " + json.dumps(out))
    """
    out = multidevice.run(code, devices=8)
    for modality, (sharded, single) in out.items():
        np.testing.assert_allclose(sharded[0], single[0], rtol=1e-4, err_msg=modality)
        np.testing.assert_allclose(sharded[1], single[1], rtol=1e-4, err_msg=modality)
        np.testing.assert_allclose(sharded[2], single[2], rtol=1e-4, atol=1e-6, err_msg=modality)


@pytest.mark.parametrize("name", ["data2vec_image_cifar10", "data2vec_text_shakespeare", "data2vec_speech_fsdd"])
@pytest.mark.parametrize("arg", ["", "cpu", "runlocal"])
def test_configs_construct(name, arg):
    config = importlib.import_module(f"configs.{name}").get_config(arg)
    from jaxssl import models
    backbone = models.get(**config.model)
    method = methods.get(config.method, backbone=backbone, **config.method_kw)
    assert method.teacher_momentum(0) == pytest.approx(0.999)
    if name == "data2vec_image_cifar10":
        from jaxssl.train.validate import validate_config
        validate_config(config)


def test_post_norm_block_matches_numpy():
    """fairseq TransformerSentenceEncoderLayer (layer_norm_first=False): x = LN(x + Attn(x)); x = LN(x + FFN(x))."""
    from jaxssl.models.transformer import Block
    from scipy.special import erf
    blk = Block(num_heads=2, mlp_dim=12, norm_first=False)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 8)), jnp.float32)
    v = blk.init(jax.random.key(0), x, train=False)
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64) + 0.1 * np.random.default_rng(1).normal(size=a.shape),
                               v["params"])
    out, ffn = blk.apply({"params": jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), p)}, x, train=False)
    f = np.asarray(x, np.float64)

    def ln(y, q):
        return (y - y.mean(-1, keepdims=True)) / np.sqrt(y.var(-1, keepdims=True) + 1e-5) * q["scale"] + q["bias"]

    dense = lambda y, q: y @ q["kernel"] + q["bias"]
    qkv = dense(f, p["attn"]["qkv"]).reshape(2, 5, 3, 2, 4)
    q, k, val = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    logits = np.einsum("bqhc,bkhc->bhqk", q, k) / 2.0
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    att = dense(np.einsum("bhqk,bkhc->bqhc", w, val).reshape(2, 5, 8), p["attn"]["proj"])
    h = ln(f + att, p["norm1"])
    u = dense(h, p["fc1"])
    want_ffn = dense(0.5 * u * (1 + erf(u / np.sqrt(2))), p["fc2"])
    np.testing.assert_allclose(np.asarray(ffn), want_ffn, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out), ln(h + want_ffn, p["norm2"]), rtol=1e-4, atol=1e-5)


def test_text_head_has_two_layers_and_configs_are_post_norm():
    import importlib
    method = _method("text")
    params = method.net.init(jax.random.key(0), _inputs("text", 2))["params"]
    assert params["head_hidden0"]["kernel"].shape == (32, 64) and params["head"]["kernel"].shape == (64, 32)
    assert "head_hidden0" not in _method("speech").net.init(jax.random.key(0), _inputs("speech", 2))["params"]
    for name in ("data2vec_text_shakespeare", "data2vec_speech_fsdd"):
        assert importlib.import_module(f"configs.{name}").get_config("cpu").model.norm_first is False


def test_data2vec_audio_front_end():
    """base_librispeech.yaml: extractor_mode layer_norm (LN after every conv), pos_conv_depth 5 of kernel 95 // 5."""
    from jaxssl.models import encoders
    enc = encoders.ConvFeatureEncoder(16, ((16, 10, 5), (16, 4, 4)), pos_conv_kernel=95, pos_conv_groups=4,
                                      extractor_mode="layer_norm", pos_conv_depth=5)
    x = _inputs("speech", 2)
    v = enc.init(jax.random.key(0), x)["params"]
    assert {"conv0_norm", "conv1_norm"} <= set(v) and "scale" in v["conv1_norm"]
    assert [v[f"pos_conv{i}"]["kernel"].shape for i in range(5)] == [(19, 4, 16)] * 5
    y = enc.apply({"params": v}, x)
    assert y.shape == (2, encoders.num_frames(2000, ((16, 10, 5), (16, 4, 4))), 16) and np.isfinite(np.asarray(y)).all()
