r"""Conformal calibration of a sampler's per-pixel intervals on held-out images.

A posterior sampler's central intervals hold the truth at their level only if its samples are exact. The
diffusion samplers here are not (``benchmarks/CALIBRATION.md``: SMC's 90 % intervals hold the truth for 0.38 of
the pixels on in-distribution MRI). This module widens the intervals by one factor ``lambda``, chosen on
calibration images with known truth, so that they hold it at the nominal rate on further images of the same kind.
After Angelopoulos, Kohli, Bates, Jordan, Malik, Alshaabi, Upadhyayula, Romano, "Image-to-Image Regression with
Distribution-Free Uncertainty Quantification and Applications in Imaging", ICML 2022, and Angelopoulos, Bates,
Fisch, Lei, Schuster, "Conformal Risk Control", ICLR 2024.

Intervals
---------
From ``K`` samples of one image: the mean ``mu``, and the central quantiles ``q_lo, q_hi`` at level ``p``
(:func:`invdiff.metrics.central_intervals`). The calibrated family is::

    T_lambda = [mu - lambda (l + delta),  mu + lambda (u + delta)],   l = (mu - q_lo)_+,  u = (q_hi - mu)_+

``delta`` (``floor``, in image units) keeps an interval from staying empty where all samples agree. Pixel ``j``
is inside ``T_lambda`` exactly when ``lambda >= s_j``, its score::

    s_j = (mu_j - x_j) / (l_j + delta)  if x_j < mu_j,   (x_j - mu_j) / (u_j + delta)  otherwise  (0 / 0 = 0)

Choosing lambda
---------------
The loss of image ``i`` is the fraction of its pixels outside: ``L_i(lambda) = mean_j [s_ij > lambda]``, which
falls with ``lambda`` and lies in ``[0, 1]``. With ``n`` calibration images and ``alpha = 1 - p``:

* ``method="risk-control"`` (conformal risk control): the smallest ``lambda`` with
  ``(n R(lambda) + 1) / (n + 1) <= alpha``, ``R`` the mean loss over the calibration images. For a further image
  exchangeable with them, ``E[L] <= alpha``: the expected fraction of its pixels outside is at most ``alpha``.
  Feasible only when ``n >= 1 / alpha - 1`` (9 images at ``p = 0.9``); it then aims at ``R <= (alpha (n + 1) - 1)
  / n``, below ``alpha``, so it over-covers when ``n`` is small.
* ``method="plug-in"``: the smallest ``lambda`` with ``R(lambda) <= alpha``, the empirical calibration. No
  finite-sample guarantee (pixels of one image are not exchangeable with each other); unbiased aim, for when
  there are too few calibration images for the guarantee.

Example
-------
>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> truth = torch.randn(20, 1, 8, 8, generator=g)
>>> narrow = truth + 0.5 * torch.randn(16, 20, 1, 8, 8, generator=g)  # samples 2x too narrow around a noisy mean
>>> narrow = narrow + torch.randn(1, 20, 1, 8, 8, generator=g)
>>> cal = calibrate(narrow[:, :10], truth[:10], level=0.9, method="plug-in")
>>> cal.scale > 1.5, abs(cal.coverage(narrow[:, 10:], truth[10:]).mean().item() - 0.9) < 0.05
(True, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from invdiff.metrics import central_intervals
from invdiff.validate import check_choice, check_interval, check_positive_float

__all__ = ["Calibration", "calibrate", "scores", "calibrated_intervals", "METHODS"]

METHODS = ("risk-control", "plug-in")


def _check(samples: Tensor, truth: Tensor | None = None) -> None:
    if not torch.is_tensor(samples) or samples.ndim < 2 or samples.shape[0] < 2:
        raise ValueError(f"samples: expected a tensor (K, B, ...) with K >= 2 samples per image, got "
                         f"{tuple(samples.shape) if torch.is_tensor(samples) else type(samples).__name__}")
    if truth is not None and (not torch.is_tensor(truth) or tuple(truth.shape) != tuple(samples.shape[1:])):
        raise ValueError(f"truth: expected a tensor of shape {tuple(samples.shape[1:])} (samples.shape[1:]), got "
                         f"{tuple(truth.shape) if torch.is_tensor(truth) else type(truth).__name__}")


def _check_level(level: float) -> float:
    return check_interval("level", level, 0.0, 1.0, low_open=True, high_open=True)


def _sides(samples: Tensor, level: float, floor: float) -> tuple[Tensor, Tensor, Tensor]:
    """``mu``, ``l + delta``, ``u + delta`` (float64)."""
    lo, hi = central_intervals(samples, [level])
    mu = samples.detach().to(torch.float64).mean(0)
    return mu, (mu - lo[0]).clamp_min(0) + floor, (hi[0] - mu).clamp_min(0) + floor


def scores(samples: Tensor, truth: Tensor, level: float = 0.9, floor: float = 0.0) -> Tensor:
    """Per-pixel scores ``s_j`` (module docstring): the smallest ``lambda`` whose interval holds the truth;
    shape ``truth.shape``, float64 (``inf`` where the interval is empty and the truth is off the mean)."""
    _check(samples, truth)
    mu, lw, up = _sides(samples, _check_level(level), floor)
    x = truth.detach().to(torch.float64)
    gap = torch.where(x < mu, mu - x, x - mu)
    width = torch.where(x < mu, lw, up)
    return torch.where(gap == 0, torch.zeros_like(gap), gap / width)  # gap > 0, width 0: inf


def calibrated_intervals(samples: Tensor, scale: float, level: float = 0.9, floor: float = 0.0
                         ) -> tuple[Tensor, Tensor]:
    """``T_lambda`` with ``lambda = scale``: ``(lower, upper)``, each ``samples.shape[1:]``, float64."""
    _check(samples)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale >= 0:  # inf allowed
        raise ValueError(f"scale: expected a number >= 0 (lambda of a Calibration), got {scale!r}")
    mu, lw, up = _sides(samples, _check_level(level), floor)
    # an empty side stays empty at any scale (inf * 0 would be NaN)
    return torch.where(lw > 0, mu - scale * lw, mu), torch.where(up > 0, mu + scale * up, mu)


def _pick(s: Tensor, target: float) -> float:
    """The smallest ``lambda`` with ``R(lambda) = mean_i mean_j [s_ij > lambda] <= target``; ``s``: ``(n, m)``
    (every image has ``m`` pixels, so ``R`` counts pixels over all images). ``R`` falls in steps at the scores,
    so the answer is the score with at most ``floor(target n m)`` scores above it (0 if that allows all)."""
    v = s.reshape(-1).sort().values
    N = v.numel()
    allowed = math.floor(target * N + 1e-9)  # pixels that may stay outside
    return 0.0 if allowed >= N else float(v[N - allowed - 1])


@dataclass(frozen=True)
class Calibration:
    """A fitted scale: ``T_lambda`` of the module docstring with ``lambda = scale``.

    Attributes
    ----------
    scale : float
        ``lambda`` (1: the sampler's own intervals, plus ``floor``).
    level : float
        Nominal level ``p`` of the intervals.
    method : str
        ``"risk-control"`` or ``"plug-in"``.
    floor : float
        ``delta`` added to both half-widths.
    n_images : int
        Calibration images.
    calibration_coverage : float
        Mean fraction of the calibration images' pixels inside ``T_lambda``.
    """

    scale: float
    level: float
    method: str
    floor: float
    n_images: int
    calibration_coverage: float

    def intervals(self, samples: Tensor) -> tuple[Tensor, Tensor]:
        """``(lower, upper)`` of further images' samples ``(K, B, ...)``."""
        return calibrated_intervals(samples, self.scale, self.level, self.floor)

    def coverage(self, samples: Tensor, truth: Tensor) -> Tensor:
        """Per image, the fraction of pixels whose truth lies in the calibrated interval; ``(B,)``."""
        s = scores(samples, truth, self.level, self.floor)
        return (s <= self.scale).flatten(1).to(torch.float64).mean(1)


def calibrate(samples: Tensor, truth: Tensor, level: float = 0.9, method: str = "risk-control",
              floor: float = 0.0) -> Calibration:
    """Fit ``lambda`` on calibration images: ``samples`` ``(K, n, ...)`` and their ``truth`` ``(n, ...)``.

    Parameters
    ----------
    samples : Tensor
        ``K`` samples of each of the ``n`` calibration images, drawn as the images to be calibrated will be
        (same sampler, settings, operator and noise).
    truth : Tensor
        The calibration images.
    level : float
        Nominal level ``p`` in ``(0, 1)``.
    method : {"risk-control", "plug-in"}
        Module docstring. ``"risk-control"`` needs ``n >= 1 / (1 - level) - 1`` images.
    floor : float
        ``delta >= 0`` added to both half-widths, in image units.
    """
    _check(samples, truth)
    level = _check_level(level)
    check_choice("method", method, METHODS)
    floor = check_positive_float("floor", floor, allow_zero=True)
    n, alpha = truth.shape[0], 1 - level
    if method == "risk-control":
        target = (alpha * (n + 1) - 1) / n
        if target < -1e-12:  # (1 - 0.9) * 10 - 1 is -2e-16 in floating point
            need = math.ceil(1 / alpha - 1 - 1e-9)
            raise ValueError(f"samples: method='risk-control' at level {level} needs at least {need} calibration "
                             f"images (n >= 1 / (1 - level) - 1), got {n}; add images or use method='plug-in'")
    else:
        target = alpha
    s = scores(samples, truth, level, floor).reshape(n, -1)
    lam = _pick(s, max(target, 0.0))
    cov = float((s <= lam).to(torch.float64).mean())
    return Calibration(scale=lam, level=level, method=method, floor=floor, n_images=n,
                       calibration_coverage=cov)
