"""Argument checks shared by the operators: each error names the argument, the value and what was expected."""

from __future__ import annotations

import math

import torch


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
