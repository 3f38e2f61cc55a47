"""ResNet backbones and heads: shapes, parameter counts, BatchNorm statistics, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import models
from jaxssl.models import heads


def _count(tree):
    return sum(x.size for x in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize("variant,out", [("18", 512), ("50", 2048)])
def test_resnet_feature_shape(variant, out):
    m = models.get("resnet", variant=variant, width=0.125, cifar_stem=True)
    x = jnp.ones((2, 16, 16, 3))
    v = m.init(jax.random.key(0), x, train=False)
    assert m.apply(v, x, train=False).shape == (2, out // 8)


def test_resnet18_parameter_count_matches_torchvision():
    # torchvision resnet18 has 11,689,512 parameters, of which 513,000 in the fc layer.
    # Counted here: conv/BN weights only (the same 11,176,512), ImageNet stem.
    m = models.get("resnet", variant="18")
    v = jax.eval_shape(lambda: m.init(jax.random.key(0), jnp.ones((1, 64, 64, 3)), train=False))
    assert _count(v["params"]) == 11_689_512 - 513_000


def test_batchnorm_updates_running_statistics_in_training():
    m = models.get("resnet", variant="18", width=0.0625, cifar_stem=True)
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3)) * 3 + 1
    v = m.init(jax.random.key(0), x, train=True)
    _, new = m.apply(v, x, train=True, mutable=["batch_stats"])
    before = v["batch_stats"]["stem_bn"]["mean"]
    after = new["batch_stats"]["stem_bn"]["mean"]
    assert not np.allclose(before, after)


def test_unknown_variant_and_keyword():
    with pytest.raises(ValueError, match="Unknown ResNet variant"):
        m = models.get("resnet", variant="19")
        m.init(jax.random.key(0), jnp.ones((1, 8, 8, 3)))
    with pytest.raises(ValueError, match="valid keys"):
        models.get("resnet", depth=18)
    with pytest.raises(ValueError, match="Available models"):
        models.get("vgg")


def test_mlp_head_and_encoder():
    enc = heads.BackboneWithHeads(models.get("resnet", variant="18", width=0.0625, cifar_stem=True),
                                  projector=heads.MLP((16,), 8), predictor=heads.MLP((16,), 8, norm="none"))
    x = jnp.ones((3, 8, 8, 3))
    v = enc.init(jax.random.key(0), x, train=False)
    out = enc.apply(v, x, train=False)
    assert out["features"].shape == (3, 32) and out["projection"].shape == (3, 8) and out["prediction"].shape == (3, 8)
    np.testing.assert_array_equal(enc.apply(v, x, method="features"), out["features"])


@pytest.mark.parametrize("variant,last", [("18", "bn2"), ("50", "bn3")])
def test_zero_init_residual_is_an_option(variant, last):
    """zero_init_residual (torchvision's flag): the last BN scale of each block is 0, else 1 (torchvision default)."""
    x = jnp.ones((1, 16, 16, 3))
    for zero in (True, False):
        m = models.get("resnet", variant=variant, width=0.0625, cifar_stem=True, zero_init_residual=zero)
        p = m.init(jax.random.key(0), x, train=False)["params"]
        for name, block in p.items():
            if name.startswith("stage"):
                np.testing.assert_array_equal(np.asarray(block[last]["scale"]), 0.0 if zero else 1.0)
                assert float(np.asarray(block["bn1"]["scale"]).min()) == 1.0


@pytest.mark.parametrize("name,zero", [("moco_v2_cifar10", False), ("swav_cifar10", False), ("dino_cifar10", False),
                                       ("simsiam_cifar10", True), ("simclr_cifar10", True)])
def test_recipes_choose_zero_init_residual(name, zero):
    import importlib
    config = importlib.import_module(f"configs.{name}").get_config("")
    assert models.get(**config.model).zero_init_residual is zero


def test_simclr_projector_last_bn_scale_no_centre_matches_numpy():
    """SimCLR tf2/model.py ProjectionHead: Linear(no bias) -> BN -> relu, then Linear(no bias) -> BN(scale, center=False)."""
    from jaxssl.methods import simclr
    backbone = models.get("resnet", variant="18", width=0.0625, cifar_stem=True)
    net = simclr.make(backbone=backbone, proj_hidden=(6,), proj_dim=4).net
    proj = net.projector
    h = jax.random.normal(jax.random.key(0), (8, 5))
    v = proj.init(jax.random.key(1), h)
    p = v["params"]
    assert set(p["out_norm"]) == {"scale"} and "bias" not in p["out"]  # no centring, no output bias
    p = jax.tree_util.tree_map(lambda a: a + 0.3 * jax.random.normal(jax.random.key(2), a.shape), p)
    z, _ = proj.apply({**v, "params": p}, h, train=True, mutable=["batch_stats"])

    def bn(x, scale, bias=0.0):  # train-mode BN, biased variance, eps 1e-5
        return (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5) * scale + bias

    f = lambda a: np.asarray(a, np.float64)
    y = np.maximum(bn(f(h) @ f(p["dense0"]["kernel"]), f(p["norm0"]["scale"]), f(p["norm0"]["bias"])), 0)
    want = bn(y @ f(p["out"]["kernel"]), f(p["out_norm"]["scale"]))
    np.testing.assert_allclose(np.asarray(z), want, rtol=1e-4, atol=1e-5)
    plain = simclr.make(backbone=backbone, proj_hidden=(6,), proj_dim=4, proj_last_bn=False).net.projector
    assert "out_norm" not in plain.init(jax.random.key(1), h)["params"]


@pytest.mark.parametrize("conv_init,variance,truncated", [("torchvision", lambda fi, fo: 2.0 / fo, False),
                                                          ("lecun_normal", lambda fi, fo: 1.0 / fi, True)])
def test_conv_init_matches_its_reference_distribution(conv_init, variance, truncated):
    """torchvision's kaiming_normal_(mode="fan_out") is an untruncated normal of variance 2/fan_out;
    flax's lecun_normal a normal of variance 1/fan_in truncated at 2 std."""
    m = models.get("resnet", variant="18", width=1.0, cifar_stem=True, conv_init=conv_init)
    p = m.init(jax.random.key(0), jnp.ones((1, 8, 8, 3)), train=False)["params"]
    w = np.asarray(p["stage4_block2"]["conv1"]["kernel"], np.float64)  # 3x3x512x512: 2.4M draws
    kh, kw, cin, cout = w.shape
    want = variance(kh * kw * cin, kh * kw * cout)
    np.testing.assert_allclose(w.var(), want, rtol=0.01)
    assert (np.abs(w).max() <= 2 * want ** 0.5 / 0.8796 + 1e-6) == truncated


def test_unknown_conv_init_names_the_choices():
    m = models.get("resnet", variant="18", width=0.0625, cifar_stem=True, conv_init="kaiming")
    with pytest.raises(ValueError, match="conv_init 'kaiming'.*lecun_normal.*torchvision"):
        m.init(jax.random.key(0), jnp.ones((1, 8, 8, 3)), train=False)


@pytest.mark.parametrize("name,conv_init", [("simsiam_cifar10", "torchvision"), ("moco_v2_cifar10", "torchvision"),
                                            ("barlow_twins_cifar10", "torchvision"), ("dino_cifar10", "torchvision"),
                                            ("simclr_cifar10", "lecun_normal"), ("byol_cifar10", "lecun_normal")])
def test_recipes_choose_their_references_conv_init(name, conv_init):
    import importlib
    config = importlib.import_module(f"configs.{name}").get_config("cpu")
    assert models.get(**config.model).conv_init == conv_init


def test_mlp_torch_init_is_nn_linear_default():
    """`kernel_init="torch"`: kernel and bias uniform in +-1/sqrt(fan_in) (torch.nn.Linear.reset_parameters);
    "lecun_normal": flax's truncated normal of variance 1/fan_in and a zero bias."""
    x = jnp.ones((2, 256))
    for init in ("torch", "lecun_normal"):
        p = heads.MLP((512,), 1024, kernel_init=init).init(jax.random.key(0), x, train=False)["params"]
        k, b = np.asarray(p["out"]["kernel"], np.float64), np.asarray(p["out"]["bias"], np.float64)
        bound = 1 / 512 ** 0.5
        if init == "torch":
            assert np.abs(k).max() <= bound and np.abs(b).max() <= bound
            np.testing.assert_allclose(k.var(), bound ** 2 / 3, rtol=0.02)
            np.testing.assert_allclose(b.var(), bound ** 2 / 3, rtol=0.25)  # 1024 draws
        else:
            np.testing.assert_allclose(k.var(), 1 / 512, rtol=0.02)
            assert not b.any()
    with pytest.raises(ValueError, match="kernel_init 'xavier'"):
        heads.MLP((8,), 4, kernel_init="xavier").init(jax.random.key(0), x, train=False)
