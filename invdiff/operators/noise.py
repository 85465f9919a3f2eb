"""Noise models beyond deepinv's that the operators need.

Log-Poisson (photon-counting) CT noise: a detector cell behind a line integral ``z = A x`` counts
``N ~ Poisson(I_0 exp(-mu z))`` photons out of ``I_0``, and the measurement is

.. math::

    y = -\\frac{1}{\\mu} \\log \\frac{\\max(N, 1)}{I_0},

in the units of ``z``. ``mu`` converts the line integrals (pixel units) into attenuation; its
variance is about ``1 / (mu^2 I_0 exp(-mu z))``. This is deepinv's ``LogPoissonNoise``
(``N0 = I_0``) except that a cell counting no photons reads as one count, so ``y`` stays finite (at
most ``log(I_0) / mu``) instead of becoming ``inf``.
"""

from __future__ import annotations

import math

import deepinv as dinv
import torch
from torch import Tensor


class LogPoissonNoise(dinv.physics.LogPoissonNoise):
    """Log-Poisson CT noise with ``I_0 = photon_count`` photons per cell; zero counts read as one.

    Parameters
    ----------
    photon_count : float
        Mean photon count ``I_0`` of an unattenuated ray (positive).
    mu : float
        Attenuation per unit of line integral (positive).
    rng : torch.Generator, optional
        Generator for the Poisson draws (``op(x, seed=s)`` then reseeds it).

    Examples
    --------
    >>> import torch
    >>> noise = LogPoissonNoise(photon_count=1e4, mu=0.05, rng=torch.Generator().manual_seed(0))
    >>> y = noise(torch.full((1, 1, 4, 8), 10.0))
    >>> bool(torch.isfinite(y).all()) and abs(float(y.mean()) - 10.0) < 1.0
    True
    """

    def __init__(self, photon_count: float, mu: float = 1.0, rng: torch.Generator | None = None):
        for name, v in (("photon_count", photon_count), ("mu", mu)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name}: expected a positive finite number, got {v!r}")
        super().__init__(N0=float(photon_count), mu=float(mu), rng=rng)

    @property
    def photon_count(self) -> float:
        return float(self.N0)

    def forward(self, x: Tensor, seed: int | None = None, **kwargs) -> Tensor:
        self.rng_manual_seed(seed)
        N0, mu = self.N0.to(x.device, x.dtype), self.mu.to(x.device, x.dtype)
        counts = torch.poisson(N0 * torch.exp(-mu * x), generator=self.rng).clamp_min(1.0)
        return -torch.log(counts / N0) / mu
