r"""What the two weighted-particle samplers share: the run's context, resampling, and the output.

:class:`invdiff.solvers.tweedie_smc.SMC` (Tweedie tilt) and :class:`invdiff.solvers.afdps.AFDPS` (the
paper's particle tilt) each run ``N`` weighted particles ``(x_i, w_i)`` per measurement down an EDM
schedule ``sigma_0 = sigma_max > ... > sigma_{K-1} = sigma_min > sigma_K = 0`` with one batched network
call per step. Each implements only its loop, :meth:`EnsembleSampler._loop`; this module holds the rest:

* the measurement repeated per particle (particle ``i`` of measurement ``b`` at row ``b * N + i``);
* resampling (step 3 of both loops): systematic, for the ensembles whose ``ESS = 1 / sum_i W_i^2``
  fell below ``ess_threshold N``; their log-weights are reset to 0;
* the output: the weighted mean ``sum_i W_i x_i``, the weighted pixel-wise std, and ``n_samples``
  posterior samples drawn from the final weighted ensemble by systematic resampling, in random order;
* randomness: every draw of particle slot ``j = b N + i`` (start, moves) comes from its own stream seeded from
  ``(seed, j)``; the ensemble-level draws (resampling uniforms, the output's samples) from one generator seeded
  with ``seed``;
* several ranks (:mod:`invdiff.distributed.particles`): when torch.distributed is initialised and
  ``split_particles`` is on, each rank holds ``N / W`` particles of every ensemble; log-weights are all-gathered
  for the resampling decision and the ancestors (the same on every rank), resampled particles are taken from
  the all-gathered ones, and the final ensemble is gathered on every rank. Same seed, same result (to round-off)
  whatever ``W``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from invdiff.distributed.particles import ParticleSplit, ParticleStreams, base_seed
from invdiff.solvers.base import Reconstruction, Solver, make_generator, sigma_range
from invdiff.solvers.schedules import karras_sigmas
from invdiff.solvers.smc_gauss import GaussianSteps, sqnorm
from invdiff.solvers.smc_utils import ess, flat_indices, systematic_resample, weighted_moments
from invdiff.utils import measurement_noise_std
from invdiff.validate import check_measurement, check_positive_float, check_positive_int, check_unit_interval


def prior_std_of(prior, prior_std: float | str) -> float:
    """The per-pixel prior std of the samplers' ``prior_std`` argument: a positive number, or ``"auto"``: the
    prior's ``sigma_data``, else 0.5."""
    if isinstance(prior_std, str):
        if prior_std != "auto":
            raise ValueError(f"prior_std: expected a positive number or 'auto', got {prior_std!r}")
        prior_std = getattr(prior, "sigma_data", 0.5)
    return check_positive_float("prior_std", prior_std)


@dataclass
class Context:
    """What one run's loop shares: the operator, the measurement repeated per local particle ``yN``, the image
    shape, ``s^2``, the ensemble-level generator ``g`` (the same on every rank), the Gaussian steps, the
    callback, the per-step history, the per-particle streams (``None``: draw particles from ``g`` too) and the
    split of the particles over ranks."""

    op: object
    yN: Tensor
    img: tuple[int, ...]
    s2: float
    g: torch.Generator
    gs: GaussianSteps
    callback: Callable[[dict], None] | None
    hist: dict = field(default_factory=lambda: {"ess": [], "resampled": [], "prior_std": []})
    streams: ParticleStreams | None = None
    split: ParticleSplit | None = None

    @property
    def rng(self):
        """Source of the per-particle draws: the streams, or ``g``."""
        return self.g if self.streams is None else self.streams

    def randn(self, like: Tensor) -> Tensor:
        """Standard normal draws shaped like the local particles ``like`` (row ``k`` from slot ``k``'s stream)."""
        if self.streams is None:
            return torch.randn(like.shape, generator=self.g, dtype=like.dtype, device=like.device)
        return self.streams.randn(like.shape, dtype=like.dtype, device=like.device)

    def ensemble_sum(self, t: Tensor, B: int) -> Tensor:
        """Sum over each ensemble's particles (all ranks) of per-particle values ``(B * n,)`` -> ``(B,)``."""
        part = t.reshape(B, -1).sum(1)
        return part if self.split is None else self.split.sum(part)

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
                 device: str | torch.device | None = None, split_particles: bool = True):
        super().__init__(prior, device=device)
        if not isinstance(split_particles, bool):
            raise ValueError(f"split_particles: expected True or False, got {split_particles!r}")
        self.split_particles = split_particles
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

        Under torch.distributed (``split_particles=True``) every rank must call this with the same ``y``, ``op``
        and ``seed`` (checked for ``y`` and ``seed``); each rank then runs ``particles / world_size`` particles
        of every ensemble and every rank returns the whole result. The callback gets this rank's particles.
        """
        check_positive_int("n_samples", n_samples)
        check_measurement(y, op)
        split = ParticleSplit.create(self.particles, self.split_particles)
        seed0 = base_seed(seed)  # first: a generator passed as seed is also the ensemble-level generator below
        split.check_same("y", y)
        split.check_same("seed", torch.tensor([seed0 >> 32, seed0 & 0xFFFFFFFF], dtype=torch.float64, device=y.device))
        g = make_generator(seed, y.device)
        self.nfe, self.info = 0, {}
        t0 = time.perf_counter()
        s = measurement_noise_std(op, self.noise_std, type(self).__name__)
        B = y.shape[0]
        streams = ParticleStreams(seed0, split.global_indices(B), device=y.device)
        x, log_w, info = self._run(y.to(torch.float64), op, s * s, g, progress and split.rank == 0, callback,
                                   split, streams)
        xs, log_w = split.gather_rows(x, B), split.gather(log_w)  # the whole ensembles, on every rank
        N = log_w.shape[1]
        mean, std = weighted_moments(xs, log_w)
        idx = systematic_resample(log_w, n_samples, g)
        perm = torch.stack([torch.randperm(n_samples, generator=g, device=y.device) for _ in range(B)])
        idx = torch.gather(idx, 1, perm)
        samples = xs[torch.arange(B, device=y.device)[:, None], idx].transpose(0, 1)
        info.update(weights=torch.softmax(log_w, -1), log_w=log_w, particles=xs.to(y.dtype))
        self.info = info
        return Reconstruction(mean=mean.to(y.dtype), samples=samples.to(y.dtype).contiguous(), std=std.to(y.dtype),
                              nfe=self.nfe, seconds=time.perf_counter() - t0, info=dict(info))

    def _resample(self, log_w: Tensor, g: torch.Generator, *tensors, split: ParticleSplit | None = None):
        """3. Systematic resampling of the ensembles whose ESS fell below ``ess_threshold * N``.

        ``log_w`` ``(B, n)`` and ``tensors`` ``(B * n, ...)`` are this rank's particles (``split``; all of them
        without one). The ESS, the decision and the ancestors come from the all-gathered log-weights and ``g``,
        hence are the same on every rank; returns the local log-weights and tensors and the ensembles' ESS."""
        split = ParticleSplit(log_w.shape[1]) if split is None else split
        B, n = log_w.shape
        N = split.N
        log_w_all = split.gather(log_w)  # (B, N)
        ess_k = ess(log_w_all)
        do = ess_k < self.ess_threshold * N
        if bool(do.any()):
            idx = systematic_resample(log_w_all, N, g)[:, split.start:split.stop]  # ancestors of the local slots
            own = torch.arange(split.start, split.stop, device=log_w.device).expand(B, n)
            rows = torch.where(do[:, None], idx, own)
            if split.world == 1:
                tensors = tuple(t[flat_indices(rows, N)] if t is not None else None for t in tensors)
            else:
                tensors = split.take(tensors, rows, B)
            log_w = torch.where(do[:, None], torch.zeros_like(log_w), log_w)
        return log_w, ess_k, do, tensors

    def _run(self, y: Tensor, op, s2: float, g: torch.Generator, progress: bool, callback,
             split: ParticleSplit | None = None, streams: ParticleStreams | None = None) -> tuple[Tensor, Tensor, dict]:
        B = y.shape[0]
        split = ParticleSplit(self.particles) if split is None else split
        img = tuple(getattr(op, "img_size", None) or op.A_adjoint(y[:1]).shape[1:])
        ctx = Context(op, y.repeat_interleave(split.n, 0), img, s2, g, GaussianSteps(op, self.cg_iters, self.cg_tol),
                      callback, streams=streams, split=split)
        sigmas = karras_sigmas(self.steps, self.sigma_min, self.sigma_max, self.rho)  # K levels, then 0
        x, log_w = self._loop(ctx, sigmas, progress, B, split.n)
        info = {k: torch.stack(v) for k, v in ctx.hist.items()}
        info.update(sigmas=sigmas, final_ess=ess(split.gather(log_w)))
        return x, log_w, info

    def _loop(self, ctx: Context, sigmas: Tensor, progress: bool, B: int, N: int) -> tuple[Tensor, Tensor]:
        """The sampler's loop over this rank's ``N`` particles per ensemble (all of them in one process): final
        particles ``(B * N, ...)`` and log-weights ``(B, N)``."""
        raise NotImplementedError
