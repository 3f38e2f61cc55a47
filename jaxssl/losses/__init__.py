"""Self-supervised losses: pure functions of arrays returning per-example values.

Implementations live in private family modules; this is the only import path users see.
"""
from jaxssl.losses._contrastive import dcl, directclr, infonce, nearest_neighbour, nnclr, nt_xent
from jaxssl.losses._regression import fastsiam, masked_mse, negative_cosine, smooth_l1
from jaxssl.losses._autoencoding import reconstruction, vae_elbo
from jaxssl.losses._redundancy import barlow_twins, barlow_twins_terms, vicreg, vicreg_terms, vicregl, vicregl_terms
from jaxssl.losses._distillation import centered_softmax, dino, ibot_patch, koleo, koleo_per_device, update_center
from jaxssl.losses._clustering import msn, msn_terms, power_law_prior, swav
from jaxssl.losses._predictive import ijepa, ijepa_targets, lejepa_invariance, sigreg, slice_directions
from jaxssl.losses._covariance import mmcr, tico, tico_covariance, whiten, wmse
from jaxssl.losses._hypersphere import alignment, uniformity

__all__ = ["nt_xent", "infonce", "negative_cosine", "vicreg", "vicreg_terms", "barlow_twins", "barlow_twins_terms",
           "centered_softmax", "dino", "ibot_patch", "koleo", "koleo_per_device", "update_center", "swav",
           "smooth_l1", "masked_mse", "reconstruction", "vae_elbo", "ijepa", "ijepa_targets", "lejepa_invariance",
           "sigreg", "slice_directions", "nearest_neighbour", "nnclr", "dcl", "tico", "tico_covariance", "mmcr",
           "whiten", "wmse", "alignment", "uniformity", "msn", "msn_terms", "power_law_prior", "vicregl",
           "vicregl_terms", "fastsiam", "directclr"]
