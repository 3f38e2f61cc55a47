"""NNCLR, DCL, TiCo, MMCR, W-MSE and alignment-uniformity: what each method's loss and state update do.

A tiny Dense-BN backbone on 4x4 inputs (the methods are backbone-agnostic) keeps compilation to
seconds. 8 devices == 1 device for each method's CIFAR-10 `:cpu` config is
tests/methods/test_every_method.py; the losses themselves are tests/losses/test_methods_a.py.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import losses, methods

N = 16
STEP = jnp.int32(0)


class _DenseBN(nn.Module):
    """Flatten -> Dense(8) -> BatchNorm -> ReLU."""

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Dense(8)(x.reshape(x.shape[0], -1))
        return nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))


def _setup(name, views=2, **kw):
    method = methods.get(name, backbone=_DenseBN(), **kw)
    variables = method.net.init(jax.random.key(0), jnp.zeros((2, 4, 4, 3)), train=True)
    params = variables.pop("params")
    rng = np.random.default_rng(1)
    xs = [jnp.asarray(rng.normal(size=(N, 4, 4, 3)), jnp.float32) for _ in range(views)]
    return method, params, dict(variables), method.init_extra(jax.random.key(3)), xs


def _project(method, params, model_state, x):
    out, _ = method.net.apply({"params": params, **model_state}, x, train=True, mutable=list(model_state))
    return out


def test_nnclr_loss_uses_the_old_support_set_then_enqueues_normalised_view_1():
    method, params, state, extra, views = _setup("nnclr", queue_size=40, proj_hidden=(16, 16), proj_dim=8,
                                                 pred_hidden=(16,))
    extra = {"queue": extra["queue"], "ptr": jnp.int32(30)}
    loss, (_, new, metrics) = method.loss_fn(params, state, None, extra, views, None, STEP)
    o1, o2 = (_project(method, params, state, v) for v in views)
    q = extra["queue"]
    want = 0.5 * (losses.nnclr(o1["projection"], o2["prediction"], q, 0.1).mean()
                  + losses.nnclr(o2["projection"], o1["prediction"], q, 0.1).mean())
    np.testing.assert_allclose(loss, want, rtol=1e-6)
    rows = (30 + np.arange(N)) % 40  # the ring buffer wraps
    z1 = np.asarray(o1["projection"], np.float64)
    np.testing.assert_allclose(np.asarray(new["queue"])[rows], z1 / np.linalg.norm(z1, axis=1, keepdims=True),
                               atol=1e-6)
    assert int(new["ptr"]) == (30 + N) % 40 and {"align", "uniform"} <= set(metrics)
    with pytest.raises(ValueError, match="NNCLR queue_size"):
        _setup("nnclr", queue_size=8)[0].loss_fn(params, state, None, {"queue": q[:8], "ptr": jnp.int32(0)},
                                                 views, None, STEP)


@pytest.mark.parametrize("kind", ["dcl", "dclw"])
def test_dcl_objective_is_the_decoupled_loss_of_both_views(kind):
    method, params, state, extra, views = _setup("dcl", loss=kind, proj_hidden=(16,), proj_dim=8)
    loss, _ = method.loss_fn(params, state, None, extra, views, None, STEP)
    z1, z2 = (_project(method, params, state, v)["projection"] for v in views)
    np.testing.assert_allclose(loss, losses.dcl(z1, z2, 0.1, weighted=kind == "dclw").mean(), rtol=1e-6)


def test_tico_carries_the_running_covariance_without_gradient():
    method, params, state, extra, views = _setup("tico", total_steps=4, proj_hidden=(16,), proj_dim=8)
    assert not np.any(np.asarray(extra["cov"]))  # zeros at the start (Algorithm 1)
    teacher = {"params": jax.tree_util.tree_map(lambda p: 0.9 * p, params), **state}
    cov = extra["cov"]
    for step in range(2):
        loss, (_, extra, _) = method.loss_fn(params, state, teacher, extra, views, None, jnp.int32(step))
        z_a = _project(method, params, state, views[0])["projection"]
        z_b = _project(method, teacher["params"], state, views[1])["projection"]
        cov = losses.tico_covariance(cov, z_a, 0.9)
        np.testing.assert_allclose(extra["cov"], cov, atol=1e-6)
        np.testing.assert_allclose(loss, losses.tico(z_a, z_b, cov, 8.0).mean(), rtol=1e-5)
    # The teacher branch is a target: no gradient reaches it.
    g = jax.grad(lambda t: method.loss_fn(params, state, {"params": t, **state}, extra, views, None, STEP)[0])(
        teacher["params"])
    assert not any(np.any(np.asarray(x)) for x in jax.tree_util.tree_leaves(g))


def test_mmcr_groups_the_views_of_each_image():
    method, params, state, extra, views = _setup("mmcr", views=3, proj_hidden=(16,), proj_dim=8)
    loss, _ = method.loss_fn(params, state, None, extra, views, None, STEP)
    z = _project(method, params, state, jnp.concatenate(views))["projection"].reshape(3, N, 8)
    np.testing.assert_allclose(loss, losses.mmcr(jnp.transpose(z, (1, 0, 2))), rtol=1e-5)
    # K copies of one view: every centroid is that view's unit row, the loss -||U||_*.
    same, _ = method.loss_fn(params, state, None, extra, [views[0]] * 3, None, STEP)
    u = _project(method, params, state, jnp.concatenate([views[0]] * 3))["projection"][:N]
    np.testing.assert_allclose(same, -np.linalg.svd(np.asarray(u) / np.linalg.norm(u, axis=1, keepdims=True),
                                                    compute_uv=False).sum(), rtol=1e-5)


def test_wmse_whitens_random_sub_batches_drawn_from_the_step_rng():
    method, params, state, extra, views = _setup("wmse", w_size=8, proj_hidden=(16,), proj_dim=4)
    rng = jax.random.key(5)
    loss, _ = method.loss_fn(params, state, None, extra, views, rng, STEP)
    z = jnp.stack([_project(method, params, state, v)["projection"] for v in views])
    perm = jax.random.permutation(jax.random.split(rng, 1)[0], N)
    np.testing.assert_allclose(loss, losses.wmse(z, perm, 8), rtol=1e-5)
    other, _ = method.loss_fn(params, state, None, extra, views, jax.random.key(6), STEP)
    assert abs(float(other) - float(loss)) > 1e-4  # the sub-batches change with the rng
    with pytest.raises(ValueError, match="exceed proj_dim"):
        methods.get("wmse", backbone=_DenseBN(), w_size=8, proj_dim=8)


def test_align_uniform_objective_is_the_weighted_sum():
    method, params, state, extra, views = _setup("align_uniform", align_w=0.5, unif_w=2.0, proj_hidden=(16,),
                                                 proj_dim=8)
    loss, (_, _, m) = method.loss_fn(params, state, None, extra, views, None, STEP)
    z1, z2 = (_project(method, params, state, v)["projection"] for v in views)
    np.testing.assert_allclose(m["align"], losses.alignment(z1, z2).mean(), rtol=1e-6)
    np.testing.assert_allclose(m["uniform"], 0.5 * (losses.uniformity(z1) + losses.uniformity(z2)), rtol=1e-6)
    np.testing.assert_allclose(loss, 0.5 * m["align"] + 2.0 * m["uniform"], rtol=1e-6)
