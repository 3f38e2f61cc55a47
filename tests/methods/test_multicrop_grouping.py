"""`crop_grouping`: one backbone call per crop size ("resolution") or per view ("view").

For a ViT (no batch-coupled layer) both give the same DINO/iBOT/SwAV loss, gradients and new state,
up to float32 rounding. For a ResNet BatchNorm couples the rows of one call: each grouping must give
exactly the features of its own calls, eval mode (running averages) must agree, and the running
averages move once per call.

iBOT's `patch_head_tokens="masked"` (the student's patch head on the masked tokens only, padded per
image) gives the loss, gradients and new centres of "all" (the head on every token, the official code).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import methods, models
from jaxssl.models import heads

_VIT = dict(variant="S/4", width=32, depth=2, num_heads=2, img_size=16)
_HEAD = dict(out_dim=32, hidden_dim=32, bottleneck_dim=16)


def _views(sizes, b=4, seed=0):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.normal(size=(b, s, s, 3)), jnp.float32) for s in sizes]


def _loss_grads(method, views, seed=1):
    """(loss, grads, new model_state, new extra) of one loss evaluation at a fixed init and rng."""
    variables = method.net.init(jax.random.key(seed), views[0], train=True)
    params = variables.pop("params")
    state = dict(variables)
    teacher = {"params": params, **state}
    extra = method.init_extra(jax.random.key(0))

    def loss(p):
        value, (new_state, new_extra, _) = method.loss_fn(p, state, teacher, extra, views, jax.random.key(2),
                                                          jnp.int32(0))
        return value, (new_state, new_extra)

    (value, aux), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return value, grads, aux


def _assert_close(a, b, rtol=1e-5):
    """Leaf by leaf, within `rtol` of the tree's largest magnitude (float32 sums in another order;
    some gradients are 0 up to rounding, e.g. of a bias followed by a normalisation)."""
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb) and la
    scale = max(float(np.abs(np.asarray(y)).max()) for y in lb)
    for x, y in zip(la, lb):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("name", ["dino", "ibot", "swav"])
def test_vit_groupings_give_the_same_loss_and_gradients(name):
    kw = {"dino": dict(total_steps=10, **_HEAD), "ibot": dict(total_steps=10, **_HEAD),
          "swav": dict(proj_hidden=(32,), proj_dim=16, num_prototypes=20)}[name]
    vit = dict(_VIT, mask_token=True) if name == "ibot" else _VIT
    views = _views([16, 16, 8, 8, 8])  # 2 global + 3 local crops: 2 calls against 5
    out = {g: _loss_grads(methods.get(name, backbone=models.get("vit", **vit), crop_grouping=g, **kw), views)
           for g in ("resolution", "view")}
    (l_res, g_res, aux_res), (l_view, g_view, aux_view) = out["resolution"], out["view"]
    assert np.isfinite(float(l_res)) and max(float(jnp.abs(x).max()) for x in jax.tree_util.tree_leaves(g_res)) > 0
    np.testing.assert_allclose(float(l_view), float(l_res), rtol=1e-5)
    _assert_close(g_view, g_res)
    if jax.tree_util.tree_leaves(aux_res):  # the new centre (DINO/iBOT)
        _assert_close(aux_view, aux_res)


@pytest.mark.parametrize("centering,separate", [("ema", False), ("sinkhorn", True)])
def test_ibot_patch_head_on_masked_tokens_equals_head_on_all_tokens(centering, separate):
    backbone = models.get("vit", **_VIT, mask_token=True)  # 16 px / 4 = 16 patches: at most 8 masked
    views = _views([16, 16, 8], b=6)
    make = lambda tokens: methods.get("ibot", backbone=backbone, total_steps=10, centering=centering,
                                      separate_head=separate, mask_probability=0.5, patch_head_tokens=tokens,
                                      **_HEAD)
    (l_all, g_all, aux_all), (l_m, g_m, aux_m) = (_loss_grads(make(t), views) for t in ("all", "masked"))
    np.testing.assert_allclose(float(l_m), float(l_all), rtol=1e-6)
    _assert_close(g_m, g_all)
    if centering == "ema":
        _assert_close(aux_m, aux_all)  # the centres: the teacher's head still sees every token
    # The patch loss is not trivially zero: some images are masked (probability 0.5 of 6), and it moves the head.
    method = make("masked")
    params = method.net.init(jax.random.key(1), views[0], train=True)["params"]
    teacher = {"params": params}
    _, (_, _, metrics) = method.loss_fn(params, {}, teacher, method.init_extra(None), views, jax.random.key(2),
                                        jnp.int32(0))
    assert float(metrics["patch_loss"]) > 0 and 0 < float(metrics["mask_ratio"]) <= 0.5
    # And the heads run on fewer tokens: fewer FLOPs in the gradient (with a head as large against the
    # backbone as `:cpu`'s; the student's patch head sees 8 of 16 tokens, with Sinkhorn the teacher's too).
    flops = {}
    for t in ("all", "masked"):
        m = methods.get("ibot", backbone=backbone, total_steps=10, centering=centering, separate_head=separate,
                        patch_head_tokens=t, out_dim=1024, hidden_dim=128, bottleneck_dim=16)
        p = m.net.init(jax.random.key(1), views[0], train=True)["params"]
        grad = jax.grad(lambda p, m=m, p0=p: m.loss_fn(p, {}, {"params": p0}, m.init_extra(None), views,
                                                       jax.random.key(2), jnp.int32(0))[0])
        flops[t] = jax.jit(grad).lower(p).cost_analysis()["flops"]
    assert flops["masked"] < {"ema": 0.85, "sinkhorn": 0.8}[centering] * flops["all"], flops


def test_ibot_rejects_an_unknown_patch_head_tokens():
    with pytest.raises(ValueError, match="patch_head_tokens 'some'.*'masked', 'all'"):
        methods.get("ibot", backbone=models.get("vit", **_VIT, mask_token=True), total_steps=10,
                    patch_head_tokens="some", **_HEAD)


def test_resnet_batchnorm_follows_each_grouping():
    backbone = models.get("resnet", variant="18", width=0.0625, cifar_stem=True)
    views = _views([16, 16, 8, 8, 8], b=3)
    nets = {g: heads.MultiCrop(backbone, heads.MLP((8,), 4, norm="none"), grouping=g) for g in heads.GROUPINGS}
    variables = nets["resolution"].init(jax.random.key(0), views[0], train=True)
    feats, stats = {}, {}
    for g, net in nets.items():
        out, new = net.apply(variables, views, train=True, mutable=["batch_stats"])
        feats[g], stats[g] = out["features"], new["batch_stats"]
    def calls(groups):
        """Backbone features and batch_stats of the calls `groups`, each updating the running averages."""
        bb_vars = {"params": variables["params"]["backbone"], "batch_stats": variables["batch_stats"]["backbone"]}
        outs = []
        for x in groups:
            y, new = backbone.apply(bb_vars, x, train=True, mutable=["batch_stats"])
            outs.append(y)
            bb_vars = {**bb_vars, **new}
        return jnp.concatenate(outs), bb_vars["batch_stats"]

    # "resolution": the reference's calls (2 globals together, then 3 locals); "view": one per view.
    expected = {"resolution": calls([jnp.concatenate(views[:2]), jnp.concatenate(views[2:])]), "view": calls(views)}
    for g, (f, s) in expected.items():
        np.testing.assert_allclose(feats[g], f, rtol=1e-5, atol=1e-5)
        _assert_close(stats[g]["backbone"], s)  # the running averages move once per call: 2 against 5 times
    assert float(jnp.abs(feats["view"] - feats["resolution"]).max()) > 1e-3  # BatchNorm sees other rows
    # Eval mode normalises with the running averages: no batch coupling, the groupings agree.
    evals = [net.apply(variables, views, train=False)["features"] for net in nets.values()]
    np.testing.assert_allclose(evals[0], evals[1], rtol=1e-5, atol=1e-6)


def test_resnet_groupings_agree_when_every_size_has_one_view():
    # One view per resolution: the calls are the same, so DINO's loss, gradients and BN statistics too.
    backbone = models.get("resnet", variant="18", width=0.0625, cifar_stem=True)
    views = _views([16, 8], b=4)
    out = [_loss_grads(methods.get("dino", backbone=backbone, global_views=1, use_bn_in_head=True, crop_grouping=g,
                                   total_steps=10, **_HEAD), views) for g in heads.GROUPINGS]
    np.testing.assert_allclose(float(out[1][0]), float(out[0][0]), rtol=1e-6)
    _assert_close(out[1][1], out[0][1], rtol=1e-6)
    _assert_close(out[1][2], out[0][2], rtol=1e-6)


def test_unknown_grouping_is_refused():
    with pytest.raises(ValueError, match="crop_grouping must be one of"):
        methods.get("dino", backbone=models.get("vit", **_VIT), total_steps=10, crop_grouping="size")
    with pytest.raises(ValueError, match="crop_grouping must be one of"):
        methods.get("swav", backbone=models.get("vit", **_VIT), crop_grouping="crops")
