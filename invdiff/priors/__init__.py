"""Priors: denoisers ``D(x, sigma) = E[x0 | x0 + sigma n]`` (deepinv ``Denoiser`` subclasses)."""

from invdiff.priors.analytic import GaussianMixturePrior, GaussianPrior
from invdiff.priors.edm import EDMDenoiser
from invdiff.priors.registry import available, load
from invdiff.priors.slice import SliceDenoiser
from invdiff.priors.slice_residual import SliceResidualDenoiser
from invdiff.priors.tiled import TiledDenoiser
from invdiff.priors.unet import UNet, UNetConfig

__all__ = ["EDMDenoiser", "GaussianMixturePrior", "GaussianPrior", "SliceDenoiser", "SliceResidualDenoiser", "TiledDenoiser", "UNet", "UNetConfig", "available", "load"]
