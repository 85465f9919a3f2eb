"""diffusers ``UNet2DModel`` folders (``unet/`` + ``scheduler/``) as EDM denoisers, offline.

Layout (as written by ``pipeline.save_pretrained(folder)``)::

    folder/unet/config.json                              UNet2DModel configuration
    folder/unet/diffusion_pytorch_model.safetensors      weights (or .bin, read with weights_only=True)
    folder/scheduler/scheduler_config.json               the training noise schedule

A discrete VP scheduler (DDPM, DDIM, PNDM, ... : ``beta_schedule``, ``beta_start``, ``beta_end``,
``num_train_timesteps``, ``prediction_type``, optional ``trained_betas``) gives a
:class:`~invdiff.priors.adapters.vp.VPEpsDenoiser` whose ``alphas_cumprod`` are computed here from
that configuration, in float32 as diffusers computes them; ``prediction_type`` ``epsilon``,
``v_prediction`` and ``sample`` are supported.
A ``ScoreSdeVeScheduler`` (``sigma_min``, ``sigma_max``; the NCSN++ ports such as
``google/ncsnpp-celebahq-256``, whose UNet takes ``sigma`` as its timestep and returns the score)
gives a :class:`~invdiff.priors.adapters.ve.VEScoreDenoiser`.

The network is built with ``UNet2DModel.from_config`` and the weights are loaded through
:func:`~invdiff.priors.checkpoint.load_state_dict_strict`, so a mismatch lists the keys. Nothing is
downloaded. Requires the optional ``diffusers`` package (``pip install "invdiff[diffusers]"``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from invdiff.priors.adapters.ve import VEScoreDenoiser
from invdiff.priors.adapters.vp import PREDICTION_TYPES, VPEpsDenoiser, make_alphas_cumprod
from invdiff.priors.checkpoint import load_state_dict_strict, read_state_dict

WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


class UNet2DOutput(nn.Module):
    """``UNet2DModel(x, t).sample`` as a plain ``f(x, t)`` (integer ``t`` for learned embeddings)."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet
        self.integer_t = unet.config.time_embedding_type == "learned"

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if self.integer_t:
            t = t.round().long()
        return self.unet(x, t).sample


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file ({what})")
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable {what} ({exc})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a JSON object ({what})")
    return cfg


def build_unet(unet_dir: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """``UNet2DModel`` from ``unet_dir/config.json`` with the weights of ``unet_dir``, strictly loaded."""
    try:
        from diffusers import UNet2DModel
    except ImportError as exc:
        raise ImportError("load_diffusers needs the 'diffusers' package: pip install 'invdiff[diffusers]'") from exc
    unet_dir = Path(unet_dir)
    config = _read_json(unet_dir / "config.json", "the UNet2DModel configuration")
    cls_name = config.get("_class_name", "UNet2DModel")
    if cls_name != "UNet2DModel":
        raise ValueError(f"{unet_dir / 'config.json'}: _class_name is {cls_name!r}; only 'UNet2DModel' "
                         "(unconditional pixel-space UNet) is supported")
    weights = next((unet_dir / n for n in WEIGHT_NAMES if (unet_dir / n).is_file()), None)
    if weights is None:
        raise FileNotFoundError(f"{unet_dir}: no weights file; expected one of {list(WEIGHT_NAMES)}")
    unet = UNet2DModel.from_config({k: v for k, v in config.items() if not k.startswith("_")})
    if getattr(unet, "class_embedding", None) is not None:
        raise ValueError(f"{unet_dir / 'config.json'}: class-conditional UNets are not supported")
    load_state_dict_strict(unet, read_state_dict(weights), source=str(weights))
    return unet.to(device).eval()


def load_diffusers(path: str | os.PathLike, device: str | torch.device = "cpu", *, timestep: str = "interp",
                   data_range: tuple[float, float] | None = None):
    """Load a local diffusers folder (``unet/`` + ``scheduler/``) as an EDM denoiser.

    Parameters
    ----------
    path : path-like
        The pipeline folder.
    device : str or torch.device
        Where the network goes.
    timestep : {"interp", "nearest"}
        sigma-to-timestep mapping of VP models (see :class:`VPEpsDenoiser`).
    data_range : tuple of float, optional
        Intensity range of the training data: default ``(-1, 1)`` for VP pipelines (diffusers
        normalises images so), ``(0, 1)`` for score_sde VE pipelines.

    Returns
    -------
    VPEpsDenoiser or VEScoreDenoiser
        In eval mode, with ``data_range``, ``sigma_min`` and ``sigma_max``. Any image size: inputs are
        reflect-padded to multiples of ``2^(len(block_out_channels) - 1)`` around the UNet and cropped back.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder (expected a diffusers folder with unet/ and scheduler/)")
    sched = _read_json(path / "scheduler" / "scheduler_config.json", "the scheduler configuration")
    unet = build_unet(path / "unet", device)
    net = UNet2DOutput(unet)
    name = path.name
    # every down block but the last halves the size: inputs are padded to multiples of 2^(blocks - 1)
    pad = 2 ** (len(unet.config.block_out_channels) - 1)
    if sched.get("_class_name") == "ScoreSdeVeScheduler" or ("sigma_max" in sched and "beta_schedule" not in sched):
        D = VEScoreDenoiser(net, sigma_min=float(sched.get("sigma_min", 0.01)),
                            sigma_max=float(sched.get("sigma_max", 1348.0)),
                            data_range=data_range or (0.0, 1.0), name=name, pad_multiple=pad)
        return D.to(device).eval()
    if sched.get("rescale_betas_zero_snr"):
        raise ValueError(f"{path / 'scheduler'}: rescale_betas_zero_snr=True (alpha_bar = 0 at the last timestep, "
                         "an infinite sigma) is not supported")
    prediction_type = sched.get("prediction_type", "epsilon")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"{path / 'scheduler'}: prediction_type {prediction_type!r}; "
                         f"expected one of {PREDICTION_TYPES}")
    T = int(sched.get("num_train_timesteps", 1000))
    # in float32, as diffusers' schedulers compute them (the numbers the network was trained with)
    if sched.get("trained_betas") is not None:
        betas = torch.as_tensor(sched["trained_betas"], dtype=torch.float32)
        ab = torch.cumprod(1 - betas, dim=0).to(torch.float64)
    else:
        ab = make_alphas_cumprod(sched.get("beta_schedule", "linear"), T, float(sched.get("beta_start", 1e-4)),
                                 float(sched.get("beta_end", 0.02)), compute_dtype=torch.float32)
    D = VPEpsDenoiser(net, ab, data_range=data_range or (-1.0, 1.0), prediction_type=prediction_type,
                      timestep=timestep, name=name, pad_multiple=pad)
    return D.to(device).eval()
