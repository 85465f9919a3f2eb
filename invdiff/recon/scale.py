"""Measured data in a prior's intensity range, and the noise level of a measurement.

A prior is trained on images in its ``data_range = (lo, hi)``; a measured scan comes in its own
units (attenuation in 1/mm, Hounsfield units, an arbitrary k-space scale). For a linear measurement

    y = A x + n,   x = s x',   so   y / s = A x' + n / s,

the solver reconstructs ``x'`` (in the prior's range) from ``y / s`` with noise level
``noise_std / s``, and the result is ``x = s x'`` in the data's own units. The scale ``s`` is chosen
so that a high quantile (default 0.995) of a classical reconstruction (FBP, a SENSE/CG image)
lands on the prior's upper bound ``hi``; ``lo`` is taken to be 0, which is where the background of
an attenuation or magnitude image lies. A user who knows better passes the scale (``--scale``).

The noise level of a measurement, when the file does not state it, is estimated robustly from the
data itself by the median absolute deviation (MAD) of a high-pass residual in which the signal
cancels: ``std = 1.4826 * median(|r - median(r)|) / gain``, with ``gain`` the residual filter's
noise gain (for instance ``sqrt(6)`` for the second difference ``y[i-1] - 2 y[i] + y[i+1]`` of
white noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

MAD_TO_STD = 1.4826  # 1 / Phi^-1(3/4): the MAD of a Gaussian times this is its standard deviation


@dataclass(frozen=True)
class IntensityScale:
    """``data = scale * prior_units``; ``how`` says in words how ``scale`` was chosen."""

    scale: float
    how: str

    def to_prior(self, t: Tensor) -> Tensor:
        return t / self.scale

    def from_prior(self, t: Tensor) -> Tensor:
        return t * self.scale


def prior_upper(prior, default: float = 1.0) -> float:
    """The upper end of ``prior.data_range`` (``default`` if the prior does not state one)."""
    rng = getattr(prior, "data_range", None)
    if rng is None:
        return float(default)
    hi = float(rng[1]) if isinstance(rng, (tuple, list)) else float(rng)
    if not math.isfinite(hi) or hi <= 0:
        raise ValueError(f"prior.data_range: expected an upper bound > 0 to map measured data onto, got {rng!r}")
    return hi


def match_data_range(reference: Tensor, upper: float = 1.0, quantile: float = 0.995,
                     what: str = "the classical reconstruction", units: str = "") -> IntensityScale:
    """Scale that maps the ``quantile`` of ``|reference|`` onto ``upper`` (the prior's ``data_range[1]``).

    ``reference`` is a classical reconstruction in the data's units (FBP, zero-filled or CG).
    """
    if not torch.is_tensor(reference) or reference.numel() == 0:
        raise ValueError("reference: expected a non-empty tensor (a classical reconstruction of the data)")
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile: expected a number in (0, 1], got {quantile!r}")
    flat = reference.detach().abs().reshape(-1).double()
    if flat.numel() > 2_000_000:  # torch.quantile's limit is 16 M; a strided subset is plenty
        flat = flat[:: flat.numel() // 1_000_000 + 1]
    q = float(torch.quantile(flat, quantile))
    if not math.isfinite(q) or q <= 0:
        raise ValueError(f"cannot map the data onto the prior's range: the {quantile} quantile of {what} is {q}; "
                         f"pass the scale explicitly (--scale)")
    scale = q / upper
    unit = f" {units}" if units else ""
    how = (f"the {quantile:g} quantile of |{what}| ({q:.4g}{unit}) is mapped to the prior's {upper:g}: "
           f"data = {scale:.4g}{unit} x prior units")
    return IntensityScale(scale, how)


def given_scale(scale: float, units: str = "") -> IntensityScale:
    """A scale the user chose (``--scale``)."""
    s = float(scale)
    if not math.isfinite(s) or s <= 0:
        raise ValueError(f"scale: expected a positive finite number, got {scale!r}")
    unit = f" {units}" if units else ""
    return IntensityScale(s, f"given: data = {s:.4g}{unit} x prior units")


def mad_std(r: Tensor) -> float:
    """Robust standard deviation of the entries of ``r``: 1.4826 x median absolute deviation."""
    r = r.detach().reshape(-1).double()
    if r.numel() < 2:
        raise ValueError(f"mad_std: need at least 2 values, got {r.numel()}")
    return MAD_TO_STD * float((r - r.median()).abs().median())


def second_difference_noise_std(y: Tensor, dim: int = -1) -> float:
    """Noise std of ``y`` from the MAD of its second difference along ``dim`` (a smooth signal cancels).

    For white noise of std ``s``, ``y[i-1] - 2 y[i] + y[i+1]`` has std ``sqrt(6) s``. Suited to
    sinograms along the detector axis, whose signal is smooth at the detector pitch.
    """
    y = y.detach().double()
    n = y.shape[dim]
    if n < 3:
        raise ValueError(f"y: need at least 3 samples along dim {dim} to estimate the noise, got {n}")
    d = y.narrow(dim, 0, n - 2) - 2 * y.narrow(dim, 1, n - 2) + y.narrow(dim, 2, n - 2)
    return mad_std(d) / math.sqrt(6.0)


def sinogram_noise_std(y: Tensor, air_fraction: float = 0.02, min_samples: int = 256) -> tuple[float, str]:
    """Noise std of a sinogram ``(..., n_views, n_det)`` and a sentence saying how it was estimated.

    Line integrals through air are zero, so detector cells whose smoothed value is below
    ``air_fraction`` of the largest one hold noise only; the second difference along the detector
    is taken where it and both neighbours are air (``1.4826 MAD / sqrt 6``). A sharp-edged object
    leaks into the second difference elsewhere (on piecewise-constant phantoms the global MAD came
    out about twice the true level), so the global estimate is only the fall-back, used when fewer
    than ``min_samples`` air cells are found (an object that fills the field of view).
    """
    y = y.detach().double()
    n = y.shape[-1]
    if n < 7:
        raise ValueError(f"y: need at least 7 detector cells to estimate the noise, got {n}")
    flat = y.reshape(-1, 1, n)
    smooth = torch.nn.functional.avg_pool1d(flat, 5, stride=1, padding=2, count_include_pad=False).abs()
    peak = float(smooth.max())
    air = smooth <= air_fraction * peak if peak > 0 else torch.ones_like(smooth, dtype=torch.bool)
    # the second difference at cell i uses i-1, i, i+1: all three must be air
    ok = (air[..., :-2] & air[..., 1:-1] & air[..., 2:]).reshape(-1)
    d = (flat[..., :-2] - 2 * flat[..., 1:-1] + flat[..., 2:]).reshape(-1)
    if int(ok.sum()) >= min_samples:
        return mad_std(d[ok]) / math.sqrt(6.0), (
            f"estimated on the data: 1.4826 x MAD of the second difference along the detector / sqrt 6, "
            f"on the {int(ok.sum())} air cells (below {air_fraction:g} of the peak)")
    return mad_std(d) / math.sqrt(6.0), (
        "estimated on the data: 1.4826 x MAD of the second difference along the detector / sqrt 6, over all "
        f"cells (only {int(ok.sum())} air cells found; object edges can inflate this estimate)")
