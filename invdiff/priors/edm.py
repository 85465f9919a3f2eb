"""EDM-preconditioned denoiser around invdiff's UNet, and its on-disk format.

Karras et al., "Elucidating the Design Space of Diffusion-Based Generative Models", NeurIPS 2022
(github.com/NVlabs/edm, ``EDMPrecond``)::

    D(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma))
    c_skip = s_d^2 / (sigma^2 + s_d^2)      c_out = sigma s_d / sqrt(sigma^2 + s_d^2)
    c_in   = 1 / sqrt(sigma^2 + s_d^2)      c_noise = log(sigma) / 4

The format (``arch="invdiff"``) is a safetensors file with the network's state dict plus a JSON
file of the same stem holding the UNet config and the prior's metadata. Nothing is pickled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import deepinv as dinv
import torch
from torch import Tensor

from invdiff.priors.checkpoint import load_state_dict_strict
from invdiff.priors.padding import call_padded
from invdiff.priors.unet import UNet, UNetConfig
from invdiff.utils import append_dims, as_sigma, atomic_path


class EDMDenoiser(dinv.models.Denoiser):
    """``D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)`` with invdiff's :class:`UNet` as ``F``.

    Parameters
    ----------
    net : UNet
        The raw network ``F``.
    sigma_data : float
        Standard deviation of the training data (EDM's ``sigma_data``).
    sigma_min, sigma_max : float
        Noise range the network was trained on; solvers start at ``sigma_max``.
    data_range : tuple of float
        Intensity range of the training data, ``(0.0, 1.0)`` for the shipped CT phantom prior.

    Any image size: the UNet halves the spatial size ``len(channels) - 1`` times, so inputs are
    reflect-padded to multiples of :attr:`pad_multiple` ``= 2^(len(channels) - 1)`` (4 for
    ``"phantom-ct-64"``; every spatial axis, also depth for ``dims=3``) and ``F`` is cropped back
    (:func:`invdiff.priors.padding.call_padded`); sizes already valid are not padded.

    Example
    -------
    >>> D = EDMDenoiser(UNet(UNetConfig(channels=(16, 32))))
    >>> D(torch.zeros(2, 1, 16, 16), 0.1).shape
    torch.Size([2, 1, 16, 16])
    >>> D(torch.zeros(1, 1, 57, 67), 0.1).shape   # padded to 58 x 68 inside, cropped back
    torch.Size([1, 1, 57, 67])
    """

    def __init__(self, net: UNet, sigma_data: float = 0.5, sigma_min: float = 0.002, sigma_max: float = 10.0,
                 data_range: tuple[float, float] = (0.0, 1.0), name: str | None = None):
        super().__init__()
        self.net = net
        self.sigma_data = float(sigma_data)
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self.data_range = tuple(float(v) for v in data_range)
        self.name = name

    @property
    def pad_multiple(self) -> int:
        """Spatial sizes the network accepts are multiples of this (``2^(len(channels) - 1)``)."""
        return 2 ** (len(self.net.config.channels) - 1)

    @property
    def spatial_dims(self) -> int:
        """Spatial axes of the inputs the network takes: 2 for ``(B, C, H, W)``, 3 for ``(B, C, D, H, W)``."""
        return self.net.config.dims

    def forward(self, x: Tensor, sigma: Tensor | float, *args, **kwargs) -> Tensor:
        sigma = as_sigma(sigma, x).to(torch.float32)
        s = append_dims(sigma, x.ndim)
        sd2 = self.sigma_data**2
        c_skip = sd2 / (s**2 + sd2)
        c_out = s * self.sigma_data / (s**2 + sd2).sqrt()
        c_in = 1 / (s**2 + sd2).sqrt()
        c_noise = sigma.clamp_min(1e-20).log() / 4
        F = call_padded(self.net, (c_in * x).to(torch.float32), self.pad_multiple, c_noise)
        return (c_skip * x + c_out * F).to(x.dtype)

    # ---------------------------------------------------------------- on-disk format
    def metadata(self) -> dict:
        return {
            "arch": "invdiff",
            "format_version": 1,
            "name": self.name,
            "unet": self.net.config.to_dict(),
            "sigma_data": self.sigma_data,
            "sigma_min": self.sigma_min,
            "sigma_max": self.sigma_max,
            "data_range": list(self.data_range),
        }

    def save(self, path: str | os.PathLike, overwrite: bool = False, extra: dict | None = None) -> Path:
        """Write ``path`` (``.safetensors``) and ``path.with_suffix('.json')``, each atomically."""
        from safetensors.torch import save_file

        path = Path(path)
        if path.suffix != ".safetensors":
            raise ValueError(f"path: expected a '.safetensors' file name, got {str(path)!r}")
        meta = self.metadata() | (extra or {})
        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        with atomic_path(path, overwrite=overwrite) as tmp:
            save_file(state, str(tmp), metadata={"invdiff": json.dumps({"arch": "invdiff"})})
        with atomic_path(path.with_suffix(".json"), overwrite=overwrite) as tmp:
            tmp.write_text(json.dumps(meta, indent=2) + "\n")
        return path

    @classmethod
    def from_file(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "EDMDenoiser":
        """Load a prior saved by :meth:`save` (safetensors + JSON; no pickle)."""
        from safetensors.torch import load_file

        path = Path(path)
        if path.suffix == ".json":
            path = path.with_suffix(".safetensors")
        cfg_path = path.with_suffix(".json")
        for p in (path, cfg_path):
            if not p.is_file():
                raise FileNotFoundError(f"{p}: no such file (an invdiff prior is a .safetensors file plus a .json config)")
        meta = json.loads(cfg_path.read_text())
        net = UNet(UNetConfig.from_dict(meta["unet"]))
        state = load_file(str(path), device=str(device))
        load_state_dict_strict(net, state, source=str(path))
        model = cls(net, sigma_data=meta["sigma_data"], sigma_min=meta["sigma_min"], sigma_max=meta["sigma_max"],
                    data_range=tuple(meta["data_range"]), name=meta.get("name"))
        return model.to(device).eval()
