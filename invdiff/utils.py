"""Small tensor helpers shared by operators, priors and solvers."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor

from invdiff.validate import check_finite  # noqa: F401  (kept importable from here)


def append_dims(x: Tensor | float, target_ndim: int) -> Tensor:
    """Append trailing singleton dimensions to ``x`` until it has ``target_ndim`` dimensions.

    ``append_dims(sigma, x.ndim)`` turns a ``(B,)`` noise level into ``(B, 1, 1, 1)`` for images
    and ``(B, 1, 1, 1, 1)`` for volumes, so the same solver code runs on both.
    """
    if not torch.is_tensor(x):  # a number: a host tensor (pass sigma as a tensor on x's device for devices)
        x = torch.as_tensor(x, device="cpu")
    if x.ndim > target_ndim:
        raise ValueError(f"append_dims: input has {x.ndim} dims, more than target_ndim={target_ndim}")
    return x.reshape(*x.shape, *([1] * (target_ndim - x.ndim)))


def as_sigma(sigma: Tensor | float, x: Tensor) -> Tensor:
    """Return ``sigma`` as a ``(B,)`` tensor on ``x``'s device and dtype (a float is broadcast)."""
    s = torch.as_tensor(sigma, device=x.device, dtype=x.dtype)
    if s.ndim == 0:
        s = s.expand(x.shape[0])
    s = s.reshape(-1)
    if s.shape[0] == 1 and x.shape[0] != 1:
        s = s.expand(x.shape[0])
    if s.shape[0] != x.shape[0]:
        raise ValueError(f"sigma: expected a float or a tensor of shape ({x.shape[0]},), got shape {tuple(s.shape)}")
    return s


@contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False):
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    The output is written whole or not at all. An existing ``path`` raises ``FileExistsError``
    unless ``overwrite=True``.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: output exists; pass overwrite=True (or --overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    # keep the suffix so that libraries which dispatch on it (nibabel) still work
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def measurement_noise_std(op, noise_std: float | None = None, solver: str = "the solver") -> float:
    """Positive Gaussian measurement-noise std: ``noise_std``, else ``op.noise_std``, else ``op.noise_model.sigma``.

    ``solver`` names the caller in the error (``"SMC"``, ``"DDS"``), so the message says what to pass.
    """
    import math

    s = noise_std
    if s is None:
        s = getattr(op, "noise_std", None)
    if s is None:
        s = getattr(getattr(op, "noise_model", None), "sigma", None)
    if s is None:
        raise ValueError(f"noise_std: {solver} weighs the data by the measurement noise, but the operator states "
                         f"none (op.noise_std or op.noise_model.sigma); pass {solver}(..., noise_std=s)")
    s = float(s.reshape(-1)[0]) if torch.is_tensor(s) else float(s)
    if not math.isfinite(s) or s <= 0:
        raise ValueError(f"noise_std: {solver} needs a positive measurement noise level, got {s!r}; "
                         f"pass {solver}(..., noise_std=s) with s > 0")
    return s
