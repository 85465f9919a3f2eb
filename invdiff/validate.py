"""Argument checks shared by operators and solvers.

Every check either returns the value in its normal form (``int``, ``float``, a tuple) or raises one
error whose message names the argument, the value given and what was expected, e.g.
``steps: expected an integer >= 1, got 0``. ``TypeError`` for a value of the wrong kind,
``ValueError`` for one of the right kind outside its range.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import deepinv as dinv
import torch
from torch import Tensor

__all__ = ["check_interval", "check_positive_int", "check_positive_float", "check_unit_interval", "check_choice", "check_finite",
           "check_prior", "check_measurement", "check_img_size", "check_noise_std", "check_input",
           "check_vp_chain", "check_tail_average"]


# -- numbers
def check_positive_int(name: str, value, minimum: int = 1) -> int:
    """An integer (``int`` or NumPy integer, not a bool) ``>= minimum``, returned as ``int``.

    A non-integer is a ``TypeError``, an integer below ``minimum`` a ``ValueError``.
    """
    want = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected {want}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected {want}, got {value!r}")
    return int(value)


def check_positive_float(name: str, value, allow_zero: bool = False) -> float:
    """A finite number ``> 0`` (``>= 0`` with ``allow_zero``), returned as ``float``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name}: expected a {'non-negative' if allow_zero else 'positive'} finite number, got {value!r}")
    return v


def check_interval(name: str, value, low: float = -math.inf, high: float = math.inf,
                   low_open: bool = False, high_open: bool = False) -> float:
    """A finite number (not a bool) in the interval from ``low`` to ``high``, returned as ``float``.

    ``low_open`` / ``high_open`` exclude the ends; the message writes the interval as ``in [0, 1)``,
    ``>= 1`` or ``< 0``.
    """
    if math.isinf(high):
        span = f"{'>' if low_open else '>='} {low:g}"
    elif math.isinf(low):
        span = f"{'<' if high_open else '<='} {high:g}"
    else:
        span = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if isinstance(value, bool):
        raise TypeError(f"{name}: expected a number {span}, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a number {span}, got {value!r}") from None
    outside = v < low or v > high or (low_open and v == low) or (high_open and v == high)
    if not math.isfinite(v) or outside:
        raise ValueError(f"{name}: expected a finite number {span}, got {value!r}")
    return v


def check_unit_interval(name: str, value) -> float:
    """A number in ``[0, 1]`` (``eta``, ``ess_threshold``)."""
    v = check_positive_float(name, value, allow_zero=True)
    if v > 1:
        raise ValueError(f"{name}: expected a number in [0, 1], got {value!r}")
    return v


def check_choice(name: str, value, choices: Sequence[str]) -> str:
    """One of ``choices`` (a schedule, a mode, a tilt)."""
    if value not in choices:
        raise ValueError(f"{name}: expected one of {tuple(choices)}, got {value!r}")
    return value


def check_tail_average(tail_average, steps: int) -> int:
    """Steps to average: an integer in ``[1, steps]``, or a fraction in ``(0, 1)`` of ``steps`` (at least 1)."""
    if isinstance(tail_average, bool) or not isinstance(tail_average, (int, float)):
        raise TypeError(f"tail_average: expected an integer count or a fraction of the steps, got {tail_average!r}")
    if isinstance(tail_average, float) and 0 < tail_average < 1:
        return max(1, round(tail_average * steps))
    if tail_average != int(tail_average) or not 1 <= tail_average <= steps:
        raise ValueError(f"tail_average: expected an integer in [1, steps={steps}] or a fraction in (0, 1), "
                         f"got {tail_average!r}")
    return int(tail_average)


def check_vp_chain(T, beta_start, beta_end) -> tuple[int, float, float]:
    """DDPM's linear-beta chain: ``T >= 2`` steps and ``0 < beta_start < beta_end < 1``."""
    T = check_positive_int("T", T, minimum=2)
    b0 = check_positive_float("beta_start", beta_start)
    b1 = check_positive_float("beta_end", beta_end)
    if not (b0 < b1 < 1):
        raise ValueError(f"beta_start, beta_end: expected 0 < beta_start < beta_end < 1, got {beta_start!r}, {beta_end!r}")
    return T, b0, b1


# -- tensors
def check_finite(name: str, x: Tensor) -> None:
    """Raise ``ValueError`` naming ``name`` if ``x`` holds NaN or Inf."""
    if not torch.is_tensor(x):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if not torch.isfinite(x).all():
        n_bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name}: contains {n_bad} non-finite value(s) (NaN or Inf); expected finite numbers")


def check_img_size(img_size, ndims: tuple[int, ...] = (3, 4)) -> tuple[int, ...]:
    """``img_size`` is ``(C, H, W)`` or ``(C, D, H, W)`` of positive ints."""
    try:
        size = tuple(int(s) for s in img_size)
    except TypeError:
        raise TypeError(f"img_size: expected a tuple (C, H, W) or (C, D, H, W), got {img_size!r}") from None
    if len(size) not in ndims or any(s < 1 for s in size) or any(s != v for s, v in zip(size, img_size)):
        want = " or ".join({3: "(C, H, W)", 4: "(C, D, H, W)"}[n] for n in ndims)
        raise ValueError(f"img_size: expected {want} of positive ints, got {img_size!r}")
    return size


def check_noise_std(noise_std) -> float:
    """A non-negative finite measurement-noise level."""
    try:
        v = float(noise_std)
    except (TypeError, ValueError):
        raise TypeError(f"noise_std: expected a non-negative number, got {noise_std!r}") from None
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"noise_std: expected a non-negative finite number, got {noise_std!r}")
    return v


def check_input(name: str, x, img_size: tuple[int, ...]) -> None:
    """``x`` must be a tensor of shape ``(B, *img_size)``."""
    if not torch.is_tensor(x):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if tuple(x.shape[1:]) != tuple(img_size) or x.ndim != len(img_size) + 1:
        raise ValueError(f"{name}: shape {tuple(x.shape)} does not fit the operator; expected (B, {', '.join(map(str, img_size))})")


# -- solver arguments
def check_prior(prior) -> torch.nn.Module:
    """A prior must be a denoiser module ``D(x, sigma)`` (deepinv ``Denoiser`` or any ``nn.Module``)."""
    if not isinstance(prior, torch.nn.Module) or not callable(prior):
        raise TypeError(f"prior: expected a denoiser (a deepinv.models.Denoiser or torch.nn.Module computing D(x, sigma)), "
                        f"got {type(prior).__name__}")
    return prior


def check_measurement(y, op) -> None:
    """``y`` must be a finite tensor shaped like ``op.A`` of an image; ``op`` a deepinv ``Physics``."""
    if not torch.is_tensor(y):
        raise TypeError(f"y: expected a torch.Tensor measurement, got {type(y).__name__}")
    check_finite("y", y)
    if not isinstance(op, dinv.physics.Physics):
        raise TypeError(f"op: expected a deepinv.physics.Physics operator (e.g. invdiff.operators.CT), got {type(op).__name__}")
    img_size = getattr(op, "img_size", None)
    if img_size is not None:
        probe = torch.zeros((1, *img_size), device=y.device, dtype=y.dtype)
        with torch.no_grad():
            expected = tuple(op.A(probe).shape[1:])
        if tuple(y.shape[1:]) != expected:
            raise ValueError(f"y: shape {tuple(y.shape)} does not fit the operator; expected (B, {', '.join(map(str, expected))})")
