"""Cartesian k-space sampling masks for MRI: fastMRI-style line masks and 2D Poisson-disc masks.

All masks are drawn on the CPU from a NumPy generator seeded with ``seed``, so one seed gives one
mask whatever the device the operator later lives on. A mask is a boolean tensor in the centred
k-space layout of :func:`invdiff.operators.functional.fft.fft2c` (zero frequency at index
``n // 2``), ``True`` where k-space is sampled.

Line masks (``random_mask``, ``equispaced_mask``) select phase-encoding lines, i.e. columns of a
``(H, W)`` k-space, and return a ``(W,)`` mask. Both keep ``n_c = round(W * center_fraction)``
central lines (``[(W - n_c + 1) // 2, (W - n_c + 1) // 2 + n_c)``, as in fastMRI) and add outer
lines so that about ``W / acceleration`` lines are sampled in all:

* random: each outer line independently with probability
  ``p = (W / R - n_c) / (W - n_c)`` (fastMRI's ``RandomMaskFunc``);
* equispaced: every ``a``-th line from a random offset, with
  ``a = R (W - n_c) / (W - R n_c)`` so that the lines outside the centre bring the total
  to ``W / R`` (fastMRI's ``EquispacedMaskFunc``).

``poisson_mask`` samples the 2D ``(H, W)`` grid with variable-density Poisson-disc sampling (see
its docstring).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def _rng(seed: int | None) -> np.random.Generator:
    return np.random.default_rng(seed)


def _center_slice(n: int, center_fraction: float) -> slice:
    n_c = int(round(n * center_fraction))
    start = (n - n_c + 1) // 2
    return slice(start, start + n_c)


def random_mask(width: int, acceleration: float, center_fraction: float, seed: int | None = None) -> Tensor:
    """fastMRI random line mask of shape ``(width,)``.

    Parameters
    ----------
    width : int
        Number of phase-encoding lines ``W``.
    acceleration : float
        ``R >= 1``; about ``W / R`` lines are sampled (exactly all of them for ``R = 1``).
    center_fraction : float
        Fraction of the lines, in ``[0, 1)``, fully sampled around the zero frequency.
    seed : int or None
        Seed of the NumPy generator; ``None`` draws fresh entropy.
    """
    center = _center_slice(width, center_fraction)
    n_c = center.stop - center.start
    if acceleration == 1 or n_c >= width:
        return torch.ones(width, dtype=torch.bool)
    p = (width / acceleration - n_c) / (width - n_c)
    mask = _rng(seed).uniform(size=width) < p
    mask[center] = True
    return torch.from_numpy(mask)


def equispaced_mask(width: int, acceleration: float, center_fraction: float, seed: int | None = None) -> Tensor:
    """fastMRI equispaced line mask of shape ``(width,)``; the offset of the lattice is random.

    Parameters are those of :func:`random_mask`.
    """
    center = _center_slice(width, center_fraction)
    n_c = center.stop - center.start
    if acceleration == 1 or n_c >= width:
        return torch.ones(width, dtype=torch.bool)
    mask = np.zeros(width, dtype=bool)
    mask[center] = True
    if width / acceleration > n_c:
        a = acceleration * (width - n_c) / (width - acceleration * n_c)  # lattice spacing, > 1
        offset = int(_rng(seed).integers(0, max(1, int(round(a)))))
        lines = np.round(np.arange(offset, width, a)).astype(np.int64)
        mask[lines[lines < width]] = True
    return torch.from_numpy(mask)


def _disc(max_sq: int) -> np.ndarray:
    """Boolean disc ``{(i, j): i^2 + j^2 <= max_sq}`` centred in a ``(2R+1, 2R+1)`` array."""
    R = math.isqrt(max_sq)
    i = np.arange(-R, R + 1)
    return (i[:, None] ** 2 + i[None, :] ** 2) <= max_sq


def _dart_throw(radius: np.ndarray, order: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Random sequential Poisson-disc sampling on a pixel grid.

    Visits the pixels in ``order``; a pixel not yet covered is accepted and covers every pixel at a
    distance below its own radius. The result is maximal: every pixel is sampled or covered.
    ``covered`` is the initial cover (the fully sampled centre) and is not modified.
    """
    H, W = radius.shape
    covered = covered.copy()
    flat = covered.reshape(-1)
    picked = np.zeros(H * W, dtype=bool)
    discs: dict[int, np.ndarray] = {}
    # integer d^2 < r^2  <=>  d^2 <= ceil(r^2) - 1
    r2 = (np.ceil(radius.reshape(-1) ** 2).astype(np.int64) - 1).tolist()
    for idx in order.tolist():
        if flat[idx]:
            continue
        picked[idx] = True
        k = r2[idx]
        if k <= 0:
            flat[idx] = True
            continue
        d = discs.get(k)
        if d is None:
            d = discs[k] = _disc(k)
        R = d.shape[0] // 2
        i, j = divmod(idx, W)
        i0, i1, j0, j1 = max(i - R, 0), min(i + R + 1, H), max(j - R, 0), min(j + R + 1, W)
        covered[i0:i1, j0:j1] |= d[i0 - i + R : i1 - i + R, j0 - j + R : j1 - j + R]
    return picked.reshape(H, W)


def poisson_mask(
    shape: tuple[int, int],
    acceleration: float,
    center_fraction: float,
    seed: int | None = None,
    alpha: float = 2.0,
    tol: float = 0.02,
    max_iter: int = 30,
) -> Tensor:
    """Variable-density Poisson-disc mask of shape ``(H, W)`` with a fully sampled centre.

    The sampled pixels keep a minimum distance from one another that grows with the distance to
    the k-space centre,

    .. math::

        r(k) = s\\,(1 + \\alpha\\,\\rho(k)), \\qquad
        \\rho(k) = \\sqrt{(k_y / (H/2))^2 + (k_x / (W/2))^2},

    so the sampling density falls off like ``1 / r^2``. The pixels are visited in one random order
    (drawn from ``seed``) and a pixel is taken unless it lies within the radius of a pixel already
    taken (random sequential adsorption, which gives a maximal Poisson-disc set). The
    ``round(H * cf) x round(W * cf)`` central block is always sampled. The scale ``s`` is found by
    bisection so that about ``H W / acceleration`` pixels are sampled; the count is discrete, so
    the acceleration reached is within about ``tol`` of the request for moderate accelerations
    (check ``1 / mask.float().mean()``). The search runs the sampler up to ``max_iter`` times in
    Python: about 0.05 s at 32x32 and 3 s at 320x320 on one CPU core, so build a mask once and pass
    it on as a tensor when you need it many times.

    Parameters
    ----------
    shape : (int, int)
        ``(H, W)``.
    acceleration : float
        ``R >= 1``; ``R = 1`` gives the full mask.
    center_fraction : float
        Fraction in ``[0, 1)`` of each axis sampled fully around the zero frequency.
    seed : int or None
        Seed of the NumPy generator.
    alpha : float
        Growth of the radius from the centre to the edge of k-space (``0``: uniform density).
    tol : float
        Relative tolerance on the number of sampled pixels at which the bisection stops.
    max_iter : int
        Bisection steps at most; the closest mask found is returned.
    """
    H, W = (int(s) for s in shape)
    if acceleration == 1:
        return torch.ones(H, W, dtype=torch.bool)
    covered = np.zeros((H, W), dtype=bool)
    covered[_center_slice(H, center_fraction), _center_slice(W, center_fraction)] = True
    target = H * W / acceleration
    if covered.sum() >= target:
        return torch.from_numpy(covered)
    ky = (np.arange(H) - H // 2) / (H / 2)
    kx = (np.arange(W) - W // 2) / (W / 2)
    rho = np.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
    order = _rng(seed).permutation(H * W)

    # bisection in log s: the count decreases (up to sampling noise) as s grows
    lo, hi = math.log(0.05), math.log(max(H, W))
    best, best_err = covered, math.inf
    for _ in range(max_iter):
        if hi - lo < 1e-4:
            break
        mid = 0.5 * (lo + hi)
        mask = _dart_throw(math.exp(mid) * (1.0 + alpha * rho), order, covered) | covered
        n = int(mask.sum())
        err = abs(n - target) / target
        if err < best_err:
            best, best_err = mask, err
        if err <= tol:
            break
        if n > target:
            lo = mid
        else:
            hi = mid
    return torch.from_numpy(best)
