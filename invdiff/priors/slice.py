"""A 2D prior applied to 3D volumes slice by slice (the prior of DiffusionMBIR and DDS).

``(B, C, D, H, W) -> (B*D, C, H, W)``, the 2D denoiser on chunks of slices, and back::

    D3(x, sigma)[b, :, z] = D2(x[b, :, z], sigma_b)      for every slice z
"""

from __future__ import annotations

import deepinv as dinv
import torch
from torch import Tensor

from invdiff.utils import as_sigma


class SliceDenoiser(dinv.models.Denoiser):
    """Apply a 2D denoiser to every axial slice (along ``D``) of ``(B, C, D, H, W)`` volumes.

    Parameters
    ----------
    denoiser2d : torch.nn.Module
        A 2D prior ``D(x, sigma)`` for ``(N, C, H, W)`` images.
    chunk : int
        Number of slices per call of ``denoiser2d`` (bounds memory); the last call may be smaller.

    ``sigma`` is a float or a ``(B,)`` tensor; each volume's noise level is used for all its slices.
    ``(B, C, H, W)`` images go straight to ``denoiser2d``. ``data_range``, ``sigma_min`` and
    ``sigma_max`` are those of ``denoiser2d``. Any slice size (e.g. 57x67): no padding here, the
    2D prior pads each slice itself (invdiff's network priors reflect-pad to their network's
    multiple and crop back, see :mod:`invdiff.priors.padding`), so depth is never padded.

    Example
    -------
    >>> from invdiff.priors import GaussianPrior
    >>> D3 = SliceDenoiser(GaussianPrior(torch.zeros(1, 8, 8), 1.0), chunk=4)
    >>> D3(torch.ones(2, 1, 6, 8, 8), 1.0).shape
    torch.Size([2, 1, 6, 8, 8])
    """

    def __init__(self, denoiser2d: torch.nn.Module, chunk: int = 16):
        super().__init__()
        if not isinstance(denoiser2d, torch.nn.Module) or not callable(denoiser2d):
            raise TypeError(f"denoiser2d: expected a 2D denoiser module D(x, sigma), got {type(denoiser2d).__name__}")
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk: expected a positive integer number of slices, got {chunk!r}")
        self.denoiser2d = denoiser2d
        self.chunk = chunk
        self.data_range = getattr(denoiser2d, "data_range", None)
        self.sigma_min = getattr(denoiser2d, "sigma_min", None)
        self.sigma_max = getattr(denoiser2d, "sigma_max", None)

    def forward(self, x: Tensor, sigma: Tensor | float, *args, **kwargs) -> Tensor:
        if not torch.is_tensor(x):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        if x.ndim == 4:
            return self.denoiser2d(x, sigma, *args, **kwargs)
        if x.ndim != 5:
            raise ValueError(f"x: expected a volume (B, C, D, H, W) or an image (B, C, H, W), got shape {tuple(x.shape)}")
        B, C, D, H, W = x.shape
        s = as_sigma(sigma, x).repeat_interleave(D)  # (B*D,): volume b's sigma for each of its slices
        slices = x.permute(0, 2, 1, 3, 4).reshape(B * D, C, H, W)
        out = torch.cat([self.denoiser2d(slices[i : i + self.chunk], s[i : i + self.chunk], *args, **kwargs)
                         for i in range(0, B * D, self.chunk)])
        return out.reshape(B, D, C, H, W).permute(0, 2, 1, 3, 4)
