"""Adapters from public checkpoint families to invdiff's EDM denoiser convention.

Each ``load_*`` function reads a local checkpoint safely (safetensors or
``torch.load(weights_only=True)``), builds the network explicitly, and returns a
``deepinv.models.Denoiser`` ``D(x, sigma) = E[x0 | x = x0 + sigma n]`` with ``data_range``,
``sigma_min`` and ``sigma_max`` attributes, at any image size (reflect-padded around the network
to its downsampling factor, see :mod:`invdiff.priors.padding`). Nothing is downloaded.

One module per role: ``vp`` and ``ve`` wrap discrete VP (epsilon / v / x0) and VE (score) networks;
``adm``, ``ncsnpp`` (+ ``ncsnpp_net``), ``diffusers`` and ``monai`` build a family's network and load its
checkpoint; ``common`` holds what they share (config resolution, the network holder, input checks).
"""

from invdiff.priors.adapters.adm import ADM_CONFIGS, ADMConfig, ADMUNet, load_adm
from invdiff.priors.adapters.diffusers import load_diffusers
from invdiff.priors.adapters.monai import load_monai, monai_alphas_cumprod
from invdiff.priors.adapters.ncsnpp import load_ncsnpp
from invdiff.priors.adapters.ve import VEScoreDenoiser
from invdiff.priors.adapters.vp import VPEpsDenoiser, make_alphas_cumprod

__all__ = [
    "ADM_CONFIGS",
    "ADMConfig",
    "ADMUNet",
    "VEScoreDenoiser",
    "VPEpsDenoiser",
    "load_adm",
    "load_diffusers",
    "load_monai",
    "load_ncsnpp",
    "make_alphas_cumprod",
    "monai_alphas_cumprod",
]
