"""Autoencoder objectives: reconstruction error (AE, denoising AE) and the VAE evidence bound."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def reconstruction(x_hat: jax.Array, x: jax.Array) -> jax.Array:
    r"""Squared reconstruction error per example, summed over all non-batch axes.

    The AE / denoising-AE objective (Vincent et al., 2008: the denoising AE reconstructs the
    clean `x` from a corrupted input; the corruption is the caller's). It is also the Gaussian
    negative log-likelihood of a unit-variance decoder up to a constant and a factor 1/2.

    .. math:: \ell_n = \sum_i (\hat x_{ni} - x_{ni})^2

    Args:
      x_hat: (N, ...) reconstructions.
      x: (N, ...) targets of the same shape.

    Returns:
      (N,) float32 losses.

    Example:
      >>> reconstruction(jnp.ones((1, 2, 2)), jnp.zeros((1, 2, 2))).tolist()
      [4.0]

    References:
      Vincent et al., Extracting and Composing Robust Features with Denoising Autoencoders, ICML 2008.
    """
    if x_hat.shape != x.shape:
        raise ValueError(f"reconstruction expects equal shapes, got {x_hat.shape} and {x.shape}.")
    d = (x_hat.astype(jnp.float32) - x.astype(jnp.float32)).reshape(x.shape[0], -1)
    return jnp.sum(d * d, axis=1)


def vae_elbo(x_hat: jax.Array, x: jax.Array, mean: jax.Array, logvar: jax.Array, *,
             beta: float = 1.0) -> jax.Array:
    r"""Negative ELBO of a VAE with a diagonal Gaussian posterior and a standard normal prior.

    Kingma & Welling (2013, arXiv:1312.6114, Eq. 10 and Appendix B): with
    :math:`q(z|x) = \mathcal N(\mu, \mathrm{diag}\,\sigma^2)`, the KL term is analytic; the
    decoder is a unit-variance Gaussian, so the reconstruction term is half the squared error
    (constants dropped). `beta` weights the KL term (beta-VAE, Higgins et al., 2017).

    .. math::
        \ell_n = \tfrac12 \sum_i (\hat x_{ni} - x_{ni})^2
                 + \beta \cdot \tfrac12 \sum_j \left(\mu_{nj}^2 + e^{\log\sigma^2_{nj}} - \log\sigma^2_{nj} - 1\right)

    Args:
      x_hat: (N, ...) decoder means for one sample z ~ q(z|x) (reparameterised by the caller).
      x: (N, ...) inputs.
      mean: (N, Z) posterior means.
      logvar: (N, Z) posterior log-variances.
      beta: weight of the KL term (1 = the ELBO).

    Returns:
      (N,) float32 negative ELBO per example.

    Example:
      >>> vae_elbo(jnp.ones((1, 1)), jnp.zeros((1, 1)), jnp.ones((1, 1)), jnp.zeros((1, 1))).tolist()
      [1.0]

    References:
      Kingma & Welling, Auto-Encoding Variational Bayes, https://arxiv.org/abs/1312.6114.
    """
    if mean.shape != logvar.shape or mean.ndim != 2:
        raise ValueError(f"vae_elbo expects (N, Z) mean and logvar, got {mean.shape} and {logvar.shape}.")
    mean, logvar = mean.astype(jnp.float32), logvar.astype(jnp.float32)
    kl = 0.5 * jnp.sum(mean * mean + jnp.exp(logvar) - logvar - 1.0, axis=1)
    return 0.5 * reconstruction(x_hat, x) + beta * kl
