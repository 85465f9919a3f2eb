r"""What the two weighted-particle samplers share: the run's context, resampling, and the output.

:class:`invdiff.solvers.tweedie_smc.SMC` (Tweedie tilt) and :class:`invdiff.solvers.afdps.AFDPS` (the
paper's particle tilt) each run ``N`` weighted particles ``(x_i, w_i)`` per measurement down an EDM
schedule ``sigma_0 = sigma_max > ... > sigma_{K-1} = sigma_min > sigma_K = 0`` with one batched network
call per step. Each implements only its loop, :meth:`EnsembleSampler._loop`; this module holds the rest:

* the measurement repeated per particle (particle ``i`` of measurement ``b`` at row ``b * N + i``);
* resampling (step 3 of both loops): systematic, for the ensembles whose ``ESS = 1 / sum_i W_i^2``
  fell below ``ess_threshold N``; their log-weights are reset to 0;
* the output: the weighted mean ``sum_i W_i x_i``, the weighted pixel-wise std, and ``n_samples``
  posterior samples drawn from the final weighted ensemble by systematic resampling, in random order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from invdiff.solvers.base import Reconstruction, Solver, make_generator, sigma_range
from invdiff.solvers.schedules import karras_sigmas
from invdiff.solvers.smc_gauss import GaussianSteps, sqnorm
from invdiff.solvers.smc_utils import ess, flat_indices, systematic_resample, weighted_moments
from invdiff.utils import measurement_noise_std
from invdiff.validate import check_measurement, check_positive_float, check_positive_int, check_unit_interval


@dataclass
class Context:
    """What one run's loop shares: the operator, the measurement repeated per particle ``yN``, the image
    shape, ``s^2``, the generator, the Gaussian steps, the callback and the per-step history."""

    op: object
    yN: Tensor
    img: tuple[int, ...]
    s2: float
    g: torch.Generator
    gs: GaussianSteps
    callback: Callable[[dict], None] | None
    hist: dict = field(default_factory=lambda: {"ess": [], "resampled": [], "prior_std": []})

    def log_lik(self, x: Tensor) -> Tensor:
        """``-mu_y(x) = -|y - A x|^2 / (2 s^2)`` per particle."""
        return -0.5 * sqnorm(self.yN - self.op.A(x).to(torch.float64)) / self.s2

    def record(self, k, sigma, x, x0_hat, log_w, ess_k, do, c) -> None:
        B, N = log_w.shape
        self.hist["ess"].append(ess_k)
        self.hist["resampled"].append(do)
        self.hist["prior_std"].append(c)
        if self.callback is not None:
            self.callback({"step": k, "sigma": sigma, "x": x.reshape(B, N, *self.img),
                           "x0_hat": x0_hat.reshape(B, N, *self.img), "ess": ess_k, "log_w": log_w, "resampled": do})


class EnsembleSampler(Solver):
    """Base of the weighted-particle samplers: arguments shared by both, :meth:`reconstruct`, resampling."""

    batch_samples = False

    def __init__(self, prior, particles: int, steps: int, ess_threshold: float, noise_std: float | None,
                 sigma_min: float | None, sigma_max: float | None, rho: float, cg_iters: int, cg_tol: float,
                 device: str | torch.device | None = None):
        super().__init__(prior, device=device)
        self.particles = check_positive_int("particles", particles)
        self.steps = check_positive_int("steps", steps)
        self.ess_threshold = check_unit_interval("ess_threshold", ess_threshold)
        self.noise_std = None if noise_std is None else check_positive_float("noise_std", noise_std)
        self.sigma_min, self.sigma_max = sigma_range(prior, sigma_min, sigma_max)
        self.rho = check_positive_float("rho", rho)
        self.cg_iters = check_positive_int("cg_iters", cg_iters)
        self.cg_tol = check_positive_float("cg_tol", cg_tol, allow_zero=True)

    def reconstruct(self, y: Tensor, op, n_samples: int = 1, seed: int | torch.Generator | None = 0,
                    progress: bool = True, callback: Callable[[dict], None] | None = None) -> Reconstruction:
        """Run one ensemble of ``particles`` per measurement; see :meth:`Solver.reconstruct`.

        ``n_samples`` posterior samples per measurement are drawn from the final weighted ensemble
        (systematic resampling, in random order); ``mean`` and ``std`` are the weighted particle moments.
        ``info``: ``ess`` ``(steps, B)`` (before any resampling), ``resampled`` ``(steps, B)`` bool,
        ``weights`` ``(B, N)`` (final, normalised), ``log_w``, ``particles`` ``(B, N, ...)``,
        ``final_ess`` ``(B,)``, ``sigmas``, ``prior_std`` ``(steps, B)`` (the ``c`` used at each step).
        """
        check_positive_int("n_samples", n_samples)
        check_measurement(y, op)
        g = make_generator(seed, y.device)
        self.nfe, self.info = 0, {}
        t0 = time.perf_counter()
        s = measurement_noise_std(op, self.noise_std, type(self).__name__)
        x, log_w, info = self._run(y.to(torch.float64), op, s * s, g, progress, callback)
        B, N = log_w.shape
        xs = x.reshape(B, N, *x.shape[1:])
        mean, std = weighted_moments(xs, log_w)
        idx = systematic_resample(log_w, n_samples, g)
        perm = torch.stack([torch.randperm(n_samples, generator=g, device=y.device) for _ in range(B)])
        idx = torch.gather(idx, 1, perm)
        samples = xs[torch.arange(B, device=y.device)[:, None], idx].transpose(0, 1)
        info.update(weights=torch.softmax(log_w, -1), log_w=log_w, particles=xs.to(y.dtype))
        self.info = info
        return Reconstruction(mean=mean.to(y.dtype), samples=samples.to(y.dtype).contiguous(), std=std.to(y.dtype),
                              nfe=self.nfe, seconds=time.perf_counter() - t0, info=dict(info))

    def _resample(self, log_w: Tensor, g: torch.Generator, *tensors):
        """3. Systematic resampling of the ensembles whose ESS fell below ``ess_threshold * N``."""
        B, N = log_w.shape
        ess_k = ess(log_w)
        do = ess_k < self.ess_threshold * N
        if bool(do.any()):
            idx = systematic_resample(log_w, N, g)
            rows = flat_indices(torch.where(do[:, None], idx, torch.arange(N, device=log_w.device).expand(B, N)), N)
            tensors = tuple(t[rows] if t is not None else None for t in tensors)
            log_w = torch.where(do[:, None], torch.zeros_like(log_w), log_w)
        return log_w, ess_k, do, tensors

    def _run(self, y: Tensor, op, s2: float, g: torch.Generator, progress: bool,
             callback) -> tuple[Tensor, Tensor, dict]:
        B, N = y.shape[0], self.particles
        img = tuple(getattr(op, "img_size", None) or op.A_adjoint(y[:1]).shape[1:])
        ctx = Context(op, y.repeat_interleave(N, 0), img, s2, g, GaussianSteps(op, self.cg_iters, self.cg_tol), callback)
        sigmas = karras_sigmas(self.steps, self.sigma_min, self.sigma_max, self.rho)  # K levels, then 0
        x, log_w = self._loop(ctx, sigmas, progress, B, N)
        info = {k: torch.stack(v) for k, v in ctx.hist.items()}
        info.update(sigmas=sigmas, final_ess=ess(log_w))
        return x, log_w, info

    def _loop(self, ctx: Context, sigmas: Tensor, progress: bool, B: int, N: int) -> tuple[Tensor, Tensor]:
        """The sampler's loop: final particles ``(B * N, ...)`` and log-weights ``(B, N)``."""
        raise NotImplementedError
