"""Noise schedules as plain functions returning a decreasing sigma tensor that ends in 0.

Sigma-space (EDM / variance-exploding view): ``x = x0 + sigma n``. A VP state
``x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps`` is the same point as ``x = x_t / sqrt(ab_t)`` with
``sigma_t = sqrt((1 - ab_t) / ab_t)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from invdiff.solvers.presets import SIGMA_MAX, SIGMA_MIN


def karras_sigmas(n: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = 7.0,
                  dtype: torch.dtype = torch.float64) -> Tensor:
    """EDM schedule ``sigma_i = (s_max^(1/rho) + i/(n-1) (s_min^(1/rho) - s_max^(1/rho)))^rho``, then 0.

    Returns ``n + 1`` values: ``n`` noise levels from ``sigma_max`` down to ``sigma_min``, then 0.
    """
    if n < 1:
        raise ValueError(f"n: expected at least 1 step, got {n!r}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"sigma_min, sigma_max: expected 0 < sigma_min < sigma_max, got {sigma_min!r}, {sigma_max!r}")
    ramp = torch.linspace(0, 1, n, dtype=dtype, device="cpu") if n > 1 else torch.zeros(1, dtype=dtype, device="cpu")
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def vp_alphas_cumprod(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                      dtype: torch.dtype = torch.float64) -> Tensor:
    """``alpha_bar_t`` of DDPM's linear beta schedule (Ho et al. 2020), ``t = 0 .. T-1``."""
    betas = torch.linspace(beta_start, beta_end, T, dtype=dtype, device="cpu")
    return torch.cumprod(1 - betas, dim=0)


def vp_sigmas(n: int, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
              sigma_max: float | None = None, dtype: torch.dtype = torch.float64) -> Tensor:
    """DDPM's linear-beta schedule in sigma-space: ``sigma_t = sqrt((1 - ab_t) / ab_t)``.

    ``n`` timesteps spaced evenly over ``T`` (DDIM-style respacing), from large to small, then 0.
    ``sigma_max`` (e.g. a prior's trained maximum) drops the timesteps above it.
    """
    if n < 1:
        raise ValueError(f"n: expected at least 1 step, got {n!r}")
    ab = vp_alphas_cumprod(T, beta_start, beta_end, dtype)
    sig = ((1 - ab) / ab).sqrt()
    if sigma_max is not None:
        sig = sig[sig <= sigma_max]
    idx = torch.linspace(len(sig) - 1, 0, n, dtype=dtype, device="cpu").round().long()
    return torch.cat([sig[idx], sig.new_zeros(1)])


def sigma_to_alpha_bar(sigma: Tensor) -> Tensor:
    """``ab = 1 / (1 + sigma^2)``: the VP ``alpha_bar`` of a sigma-space noise level."""
    return 1 / (1 + sigma**2)


def vp_chain_sigmas(n: int, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                    sigma_max: float | None = None, dtype: torch.dtype = torch.float64) -> Tensor:
    """``n`` noise levels of DDPM's linear-beta chain, spaced evenly in the timestep, then 0.

    Without truncation (``sigma_max`` unset or above ``sigma_{T-1}``) the timesteps are
    ``round(i (T - 1) / (n - 1))``, as guided-diffusion's ``space_timesteps(T, [n])`` picks them,
    so ``n = T`` is the full DDPM chain. When ``sigma_max`` is below ``sigma_{T-1}`` (a prior
    trained up to ``sigma_max`` only), the chain starts at the fractional timestep ``t_max`` where
    ``sigma_t = sigma_max`` and the ``n`` timesteps are spaced evenly over ``[0, t_max]``, with
    ``log alpha_bar_t`` interpolated linearly between integer timesteps; unlike dropping timesteps,
    this keeps ``n`` distinct noise levels for any ``n``.

    Returns ``n + 1`` values, decreasing, ending in 0 (``alpha_bar = 1`` after the last step).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected at least 1 step, got {n!r}")
    log_ab = vp_alphas_cumprod(T, beta_start, beta_end, dtype).log()
    sig = (1 / log_ab.exp() - 1).sqrt()
    t_max = float(T - 1)
    if sigma_max is not None and sigma_max < sig[-1]:
        if sigma_max <= sig[0]:
            raise ValueError(f"sigma_max: {sigma_max!r} is below the chain's smallest noise level {float(sig[0]):.4g}")
        k = int(torch.searchsorted(sig, torch.tensor(sigma_max, dtype=dtype, device="cpu")))  # sig[k-1] < sigma_max <= sig[k]
        target = -math.log1p(sigma_max**2)  # log alpha_bar at sigma_max
        t_max = (k - 1) + float((target - log_ab[k - 1]) / (log_ab[k] - log_ab[k - 1]))
    t = torch.linspace(t_max, 0, n, dtype=dtype, device="cpu") if n > 1 else torch.full((1,), t_max, dtype=dtype, device="cpu")
    if t_max == T - 1:
        t = t.round()
    lo = t.floor().long().clamp(max=T - 2)
    frac = t - lo
    la = log_ab[lo] * (1 - frac) + log_ab[lo + 1] * frac
    sigmas = (1 / la.exp() - 1).sqrt()
    return torch.cat([sigmas, sigmas.new_zeros(1)])
