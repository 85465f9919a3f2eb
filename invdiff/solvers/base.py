"""What every invdiff solver shares: the result type, argument checks, seeding, timing, NFE counting.

A solver subclasses :class:`Solver` and implements :meth:`Solver._sample`, which draws one batch of
reconstructions. :meth:`Solver.reconstruct` runs it (batched over ``n_samples`` where it can) and
returns a :class:`Reconstruction`; ``solver(y, op)`` returns the mean, as deepinv's reconstructors do.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import deepinv as dinv
import torch
from torch import Tensor

from invdiff.utils import check_finite


@dataclass
class Reconstruction:
    """A solver's output.

    Attributes
    ----------
    mean : Tensor
        The estimate, ``(B, C, H, W)`` or ``(B, C, D, H, W)`` (the posterior mean for samplers).
    samples : Tensor
        ``(n_samples, B, ...)`` reconstructions (posterior samples for samplers).
    std : Tensor or None
        Pixel-wise standard deviation across samples (``None`` with a single sample).
    nfe : int
        Number of calls of the prior's network (a batched call counts once).
    seconds : float
        Wall-clock time of the whole reconstruction.
    info : dict
        Solver-specific extras (ESS history for SMC, loss history for RED-Diff, ...).
    """

    mean: Tensor
    samples: Tensor
    std: Tensor | None
    nfe: int
    seconds: float
    info: dict = field(default_factory=dict)


def check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return value


def check_positive_float(name: str, value, allow_zero: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name}: expected a {'non-negative' if allow_zero else 'positive'} finite number, got {value!r}")
    return v


def check_prior(prior) -> torch.nn.Module:
    """A prior must be a denoiser module ``D(x, sigma)`` (deepinv ``Denoiser`` or any ``nn.Module``)."""
    if not isinstance(prior, torch.nn.Module) or not callable(prior):
        raise TypeError(f"prior: expected a denoiser (a deepinv.models.Denoiser or torch.nn.Module computing D(x, sigma)), "
                        f"got {type(prior).__name__}")
    return prior


def sigma_range(prior, sigma_min: float | None = None, sigma_max: float | None = None) -> tuple[float, float]:
    """The noise range to sample over: arguments first, then the prior's attributes, then EDM's defaults."""
    lo = sigma_min if sigma_min is not None else getattr(prior, "sigma_min", 0.002)
    hi = sigma_max if sigma_max is not None else getattr(prior, "sigma_max", 80.0)
    return float(lo), float(hi)


def make_generator(seed: int | torch.Generator | None, device: torch.device) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    g = torch.Generator(device=device)
    g.manual_seed(0 if seed is None else int(seed))
    return g


def check_measurement(y, op) -> None:
    """``y`` must be a finite tensor shaped like ``op.A`` of an image."""
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


class Solver(dinv.models.Reconstructor):
    """Base class: subclasses implement ``_sample(y, op, generator, progress, callback) -> Tensor``.

    ``_sample`` gets ``y`` already repeated ``n_samples`` times along the batch dimension (unless
    the subclass sets ``batch_samples = False``) and returns reconstructions of the same batch size.
    It calls the prior through :meth:`denoise` so that network calls are counted.
    """

    batch_samples = True  # repeat y along the batch to draw n_samples at once
    needs_prior = True  # False for the classical baselines (invdiff.reconstruct then passes no prior)

    def __init__(self, prior=None, device: str | torch.device = "cpu"):
        super().__init__()
        self.prior = check_prior(prior) if prior is not None else None
        self.nfe = 0
        self.info: dict = {}

    # -- helpers for subclasses
    def denoise(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``D(x, sigma)`` through the prior, counted in ``nfe``; the network runs in float32."""
        self.nfe += 1
        out = self.prior(x.to(torch.float32), sigma if isinstance(sigma, float) else sigma.to(torch.float32))
        return out.to(x.dtype)

    @staticmethod
    def check_iterate(name: str, x: Tensor, step: int) -> None:
        if not torch.isfinite(x).all():
            raise FloatingPointError(f"{name} became non-finite (NaN/Inf) at step {step}; the solver diverged "
                                     f"(try a smaller step size / learning rate or more steps)")

    def _sample(self, y: Tensor, op, generator: torch.Generator, progress: bool, callback: Callable | None) -> Tensor:
        raise NotImplementedError

    def _validate(self, y: Tensor, op) -> None:
        """Extra solver-specific checks (e.g. 3D only)."""

    # -- public API
    def reconstruct(self, y: Tensor, op, n_samples: int = 1, seed: int | torch.Generator | None = 0,
                    progress: bool = True, callback: Callable[[dict], None] | None = None) -> Reconstruction:
        """Reconstruct ``x`` from ``y = op(x)``.

        Parameters
        ----------
        y : Tensor
            The measurement, ``(B, ...)`` as ``op.A`` produces it.
        op : deepinv.physics.Physics
            The forward operator (any invdiff or deepinv linear operator).
        n_samples : int
            Number of reconstructions to draw per measurement.
        seed : int or torch.Generator
            Seed of every random draw; the same seed gives the same result on the same device.
        progress : bool
            Show a tqdm progress bar.
        callback : callable, optional
            Called with a dict (``step``, ``sigma``, ``x``, ``x0_hat``, ...) after every step.
        """
        check_positive_int("n_samples", n_samples)
        check_measurement(y, op)
        self._validate(y, op)
        g = make_generator(seed, y.device)
        self.nfe = 0
        self.info = {}
        t0 = time.perf_counter()
        B = y.shape[0]
        if self.batch_samples:
            y_rep = y.repeat(n_samples, *([1] * (y.ndim - 1)))
            x = self._sample(y_rep, op, g, progress, callback)
            samples = x.reshape(n_samples, B, *x.shape[1:])
        else:
            samples = torch.stack([self._sample(y, op, g, progress, callback) for _ in range(n_samples)])
        samples = samples.detach()
        seconds = time.perf_counter() - t0
        mean = samples.mean(0)
        std = samples.std(0) if n_samples > 1 else None
        return Reconstruction(mean=mean, samples=samples, std=std, nfe=self.nfe, seconds=seconds, info=dict(self.info))

    def forward(self, y: Tensor, physics, **kwargs) -> Tensor:
        kwargs.setdefault("progress", False)
        return self.reconstruct(y, physics, **kwargs).mean
