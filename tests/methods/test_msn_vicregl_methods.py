"""Pieces of the MSN / PMSN, VICRegL, FastSiam and DirectCLR methods that the every-method test does not check:
the ViT's token dropping, VICRegL's crop boxes and location grids, and MSN's stopped target branch."""
import jax
import jax.numpy as jnp
import numpy as np

from configs import msn_cifar10
from jaxssl import augment, methods
from jaxssl.methods import vicregl
from jaxssl.models import vit


def test_vit_keep_all_tokens_is_the_identity_and_dropping_changes_the_output():
    model = vit.Model(variant="Ti/4", width=16, depth=1, num_heads=2, img_size=8)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    variables = model.init(jax.random.key(1), x, train=False)
    full = model.apply(variables, x, train=False)
    apply = jax.jit(lambda keep: model.apply(variables, x, train=False, keep=keep, return_tokens=True))
    every = apply(jnp.broadcast_to(jnp.arange(4), (2, 4)))[:, 0]
    np.testing.assert_allclose(every, full, rtol=1e-6, atol=1e-6)
    tokens = apply(jnp.array([[0, 2], [1, 3]]))
    assert tokens.shape == (2, 3, 16)  # CLS + 2 kept patches
    assert not np.allclose(tokens[:, 0], full)


def test_crop_boxes_and_location_grid():
    images = jax.random.uniform(jax.random.key(0), (3, 32, 32, 3))
    crops, boxes = augment.random_resized_crop_with_boxes(jax.random.key(5), images, size=16, scale=(0.2, 1.0))
    np.testing.assert_array_equal(crops, augment.random_resized_crop(jax.random.key(5), images, size=16,
                                                                     scale=(0.2, 1.0)))
    assert boxes.shape == (3, 4) and bool(jnp.all(boxes[:, :2] + boxes[:, 2:] <= 32))
    # Official `_location_to_NxN_grid`: cell (k, l) at (top + (k + 1/2) h / N, left + (l + 1/2) w / N).
    grid = vicregl.location_grid(jnp.array([[2, 4, 8, 16]]), (2, 2))
    np.testing.assert_allclose(grid[0], [[4, 8], [4, 16], [8, 8], [8, 16]])
    flipped = vicregl.location_grid(jnp.array([[2, 4, 8, 16]]), (2, 2), jnp.array([True]))
    np.testing.assert_allclose(flipped[0], [[4, 16], [4, 8], [8, 16], [8, 8]])


def test_msn_target_branch_gets_no_gradient_and_pmsn_argument():
    config = msn_cifar10.get_config("runlocal")
    assert msn_cifar10.get_config("pmsn,runlocal").method_kw.prior == "power_law"
    method = methods.build(config)
    # The target and the random (patch-dropped) anchor view (the runlocal tiny ViT).
    views = [jax.random.normal(jax.random.key(i), (4, v["crop_size"], v["crop_size"], 3))
             for i, v in enumerate(config.input.views[:2])]
    variables = method.net.init(jax.random.key(0), views[0], train=True)
    params, state = variables["params"], {k: v for k, v in variables.items() if k != "params"}

    def loss(p, teacher_params):
        return method.loss_fn(p, state, {"params": teacher_params, **state}, {}, views, jax.random.key(1),
                              jnp.int32(0))[0]

    g_student, g_teacher = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, params)
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(g_teacher)) == 0.0
    assert float(jnp.max(jnp.abs(g_student["prototypes"]))) > 0
