"""Autoencoders: VAE ELBO by hand, short runs, the encoder is config.model (not ignored), configs."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import ae_cifar10
from jaxssl import losses, methods, models
from jaxssl.methods import ae
from jaxssl.train import step as step_lib
from jaxssl.train.validate import validate_config


def test_vae_elbo_hand_computed():
    x_hat, x = jnp.array([[1.0, 2.0]]), jnp.array([[0.0, 0.0]])
    mean, logvar = jnp.array([[1.0, 0.0]]), jnp.array([[0.0, np.log(2.0)]])
    # recon 0.5 * (1 + 4) = 2.5; KL 0.5 * [(1 + 1 - 0 - 1) + (0 + 2 - log 2 - 1)] = 0.5 * (2 - log 2)
    want = 2.5 + 0.5 * (2.0 - np.log(2.0))
    np.testing.assert_allclose(np.asarray(losses.vae_elbo(x_hat, x, mean, logvar)), [want], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(losses.vae_elbo(x_hat, x, mean, logvar, beta=0.0)), [2.5], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(losses.reconstruction(x_hat, x)), [5.0])


@pytest.mark.parametrize("variant", ae.VARIANTS)
def test_short_run_lowers_loss(variant):
    # beta = 0.1 for the VAE: with a full-weight KL a 16x16 toy is fit by the prior in 20 steps.
    backbone = models.get("conv_ae", channels=(8, 16))
    method, tx = ae.make(backbone=backbone, variant=variant, channels=(8, 16), latent=8, beta=0.1), optax.adam(1e-2)
    # Learnable structure: a colour per image times a horizontal ramp (pure noise is incompressible).
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(8, 1, 1, 3)) * np.linspace(-1, 1, 16)[None, None, :, None]
                    * np.ones((1, 16, 1, 1)), jnp.float32)
    state = step_lib.init_state(method, tx, jax.random.key(0), x)
    step = jax.jit(step_lib.make_step_fn(method, tx, ()))
    out = []
    for _ in range(20):
        state, m = step(state, {"inputs": x}, jax.random.key(1))
        out.append(float(m["loss"]))
    # The VAE's KL term and sampled code slow it down; it must still go down clearly.
    assert np.mean(out[-3:]) < (0.9 if variant == "vae" else 0.8) * np.mean(out[:3]), out
    feats = method.net.apply({"params": state.params}, x, method="features")
    assert feats.shape == (8, 8)


@pytest.mark.parametrize("arg", ["variant=vae", "cpu,variant=dae", "runlocal"])
def test_config_constructs(arg):
    config = ae_cifar10.get_config(arg)
    validate_config(config)
    methods.build(config)


def test_encoder_is_the_configured_backbone():
    """The backbone is not ignored: its parameters (and BatchNorm statistics) are the encoder's."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 16, 16, 3)), jnp.float32)
    conv = ae.make(backbone=models.get("conv_ae", channels=(8, 16)), channels=(8, 16), latent=8)
    params = conv.net.init(jax.random.key(0), x)["params"]
    assert params["backbone"]["conv1"]["kernel"].shape == (3, 3, 8, 16)
    assert params["code"]["kernel"].shape == (4 * 4 * 16, 8)  # 16x16 -> 4x4x16 features -> code
    resnet = models.get("resnet", variant="18", width=0.0625, cifar_stem=True)
    method = ae.make(backbone=resnet, variant="vae", channels=(8, 16), latent=8)
    variables = method.net.init(jax.random.key(0), x)
    assert set(variables) == {"params", "batch_stats"} and "backbone" in variables["batch_stats"]
    state = {"batch_stats": variables["batch_stats"]}
    _, (new_state, _, _) = method.loss_fn(variables["params"], state, None, {}, [x], jax.random.key(1), jnp.int32(0))
    assert not np.allclose(jax.tree_util.tree_leaves(new_state)[0], jax.tree_util.tree_leaves(state)[0])
    assert method.net.apply(variables, x, method="features").shape == (4, 8)


def test_a_missing_or_unfit_backbone_names_config_model():
    with pytest.raises(ValueError, match="config.model"):
        ae.make(backbone=None)

    class Tokens(nn.Module):  # (B, T, D) tokens, not (B, F) features
        @nn.compact
        def __call__(self, x, train=True):
            return nn.Dense(4)(x.reshape(x.shape[0], -1, 3))

    method = ae.make(backbone=Tokens(), channels=(8,), latent=4)
    with pytest.raises(ValueError, match="config.model"):
        method.net.init(jax.random.key(0), jnp.zeros((2, 8, 8, 3)))
