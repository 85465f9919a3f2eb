"""Decomposed Diffusion Sampler (DDS).

Chung, Lee, Ye, "Decomposed Diffusion Sampler for Accelerating Large-Scale Inverse Problems",
ICLR 2024. Official code: https://github.com/HJ-harry/DDS (``solver_2d.py``, ``solver_3d.py``).

DDS runs DDIM and, at every step, corrects the Tweedie estimate by a few conjugate-gradient
iterations on the data term, started at the estimate itself (so the correction stays in a Krylov
subspace around the clean-image manifold; no backward pass through the network). On volumes the
correction is one ADMM iteration with total variation along z (:mod:`invdiff.solvers.tv_z`), the
3D solver of DDS and the fast mode of DiffusionMBIR.

In sigma-space (``x = x_t / sqrt(ab_t)``, ``sigma^2 = (1 - ab_t) / ab_t``) the official VP update
``x_{t-1} = sqrt(ab_{t-1}) x0' + sqrt(1 - ab_{t-1}) (eta z + sqrt(1 - eta^2) eps_hat)`` becomes
``x' = x0' + sigma' (eta z + sqrt(1 - eta^2) eps_hat)``, with no schedule constants left.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Callable

import deepinv as dinv
import torch
from torch import Tensor
from tqdm.auto import tqdm

from invdiff.distributed.context import SliceGroup
from invdiff.solvers.base import Solver, sigma_range
from invdiff.solvers.dds_slabs import dds_volume_loop
from invdiff.solvers.pigdm import pigdm_data_var, pigdm_estimate
from invdiff.solvers.presets import resolve
from invdiff.solvers.schedules import karras_sigmas, vp_chain_sigmas
from invdiff.solvers.tv_z import ADMMTVz
from invdiff.utils import measurement_noise_std
from invdiff.validate import (check_choice, check_positive_float, check_positive_int, check_prior, check_tail_average,
                              check_unit_interval)

SCHEDULES = ("vp", "karras")
TAIL_ESTIMATES = ("x0_dc", "x0_hat")


def normal_operator(op, dtype: torch.dtype) -> Callable[[Tensor], Tensor]:
    """``v -> A^T A v``; the operator runs in ``dtype`` (its measurement's), the result in ``v``'s dtype."""

    def AtA(v: Tensor) -> Tensor:
        return op.A_adjoint(op.A(v.to(dtype))).to(v.dtype)

    return AtA


@dataclass(frozen=True)
class DDSConfig:
    """Settings of the DDS loop (:class:`DDS`, ``DiffusionMBIR(mode="dds")``), checked once here.

    ``tail_average`` is stored as a step count (a fraction is converted); ``gamma = None`` or ``inf``
    means no proximity term. See :class:`DDS` for the meaning of each field.
    """

    steps: int
    eta: float = 0.85
    gamma: float = 1.0
    schedule: str = "vp"
    sigma_min: float | None = None
    lambda_: float | None = None
    noise_std: float | None = None
    tail_average: int | float = 1
    clip_x0: bool = False
    sigma_max: float | None = None
    sigma_hold: float | None = None
    tail_estimate: str = "x0_dc"
    pigdm: float = 0.0
    pigdm_below: float | None = None

    def __post_init__(self):
        put = partial(object.__setattr__, self)
        put("steps", check_positive_int("steps", self.steps))
        put("eta", check_unit_interval("eta", self.eta))
        g = self.gamma
        inf = g is None or (isinstance(g, (int, float)) and not isinstance(g, bool) and g == math.inf)
        put("gamma", math.inf if inf else check_positive_float("gamma", g))
        put("schedule", check_choice("schedule", self.schedule, SCHEDULES))
        for name in ("sigma_min", "lambda_", "noise_std", "sigma_max"):
            if getattr(self, name) is not None:
                put(name, check_positive_float(name, getattr(self, name)))
        put("tail_average", check_tail_average(self.tail_average, self.steps))
        put("clip_x0", bool(self.clip_x0))
        put("tail_estimate", check_choice("tail_estimate", self.tail_estimate, TAIL_ESTIMATES))
        if self.sigma_min is not None and self.schedule != "karras":
            raise ValueError(f"sigma_min: only the 'karras' schedule takes it, got schedule={self.schedule!r}")
        if self.sigma_min is not None and self.sigma_max is not None and not self.sigma_max > self.sigma_min:
            raise ValueError(f"sigma_max: expected a value above sigma_min={self.sigma_min!r}, got {self.sigma_max!r}")
        self._check_hold(put)
        put("pigdm", check_positive_float("pigdm", self.pigdm or 0.0, allow_zero=True))
        if self.pigdm_below is not None:
            put("pigdm_below", check_positive_float("pigdm_below", self.pigdm_below))

    def uses_pigdm(self, sigma: float) -> bool:
        """Whether the step at ``sigma`` corrects ``x0_hat`` by Pi-GDM (``pigdm > 0`` and ``sigma <= pigdm_below``)."""
        return self.pigdm > 0 and (self.pigdm_below is None or sigma <= self.pigdm_below)

    def _check_hold(self, put) -> None:
        """``sigma_hold``: ``None`` or ``0`` (no hold: stored as ``None``), else a level of the ``"karras"`` schedule
        below ``sigma_max``, with no ``sigma_min`` (the hold is where the schedule ends) and at least one step before
        the held tail."""
        h = self.sigma_hold
        if h is None or (isinstance(h, (int, float)) and not isinstance(h, bool) and h == 0):
            put("sigma_hold", None)
            return
        h = check_positive_float("sigma_hold", h)
        put("sigma_hold", h)
        if self.schedule != "karras":
            raise ValueError(f"sigma_hold: only the 'karras' schedule takes it, got schedule={self.schedule!r}")
        if self.sigma_min is not None:
            raise ValueError(f"sigma_min: the schedule ends at sigma_hold={h!r}; pass one of the two, got "
                             f"sigma_min={self.sigma_min!r}")
        if self.sigma_max is not None and not self.sigma_max > h:
            raise ValueError(f"sigma_hold: expected a value below sigma_max={self.sigma_max!r}, got {h!r}")
        if self.tail_average >= self.steps:
            raise ValueError(f"tail_average: with sigma_hold the held tail must leave at least one step of descent, "
                             f"got {self.tail_average} of steps={self.steps}")

    def sigmas(self, prior) -> tuple[list[float], float]:
        """Noise levels (decreasing, ending in 0) and the scale of the starting noise.

        ``"vp"``: DDPM's linear-beta chain respaced to ``steps`` (as the official code), capped at the
        prior's ``sigma_max`` (and at ``sigma_max`` when set); start ``sqrt(1 + sigma_0^2) n`` (the VP chain's
        ``N(0, I)``).
        ``"karras"``: EDM's schedule over ``[sigma_min, sigma_max]`` (each defaults to the prior's); start
        ``sigma_0 n``. The last step denoises at ``sigma_min``, so a larger ``sigma_min`` ends on a Tweedie
        estimate (a conditional mean) rather than on a near-noiseless sample. A ``sigma_max`` below the
        prior's starts the chain at that noise level from pure noise and spends every step below it: where the
        measurement fixes the coarse image (deblurring, limited-angle CT) the data step at the first levels
        overrides the start, and the steps the prior's full range would spend above it go to finer levels.

        With ``sigma_hold = h`` (``"karras"`` only) the first ``steps - k`` levels descend from ``sigma_max`` to ``h``
        (EDM's spacing) and the last ``k = tail_average`` steps stay at ``h``: the averaged tail is a run of
        re-noise / denoise / data-step sweeps at one noise level (see :class:`DDS`, ``sigma_hold``).
        """
        if self.schedule == "vp":
            cap = min((c for c in (getattr(prior, "sigma_max", None), self.sigma_max) if c is not None), default=None)
            sig = vp_chain_sigmas(self.steps, sigma_max=cap)
            return sig.tolist(), math.sqrt(1 + float(sig[0]) ** 2)
        if self.sigma_hold is not None:
            _, hi = sigma_range(prior, None, self.sigma_max)
            if not hi > self.sigma_hold:
                raise ValueError(f"sigma_hold: expected a value below the schedule's first level {hi!r}, got "
                                 f"{self.sigma_hold!r}")
            k = self.tail_average
            descent = karras_sigmas(self.steps - k, self.sigma_hold, hi).tolist()[:-1]
            sig = descent + [self.sigma_hold] * k + [0.0]
            return sig, float(sig[0])
        lo, hi = sigma_range(prior, self.sigma_min, self.sigma_max)
        sig = karras_sigmas(self.steps, lo, hi)
        return sig.tolist(), float(sig[0])

    def gamma_of(self, op, solver: str) -> Callable[[float], float]:
        """``sigma -> gamma_t``: ``gamma``, or with ``lambda_`` DiffPIR's ``sigma^2 / (lambda_ sigma_y^2)``.

        On an operator that states zero measurement noise (``noise_std = 0``, deepinv's ``ZeroNoise`` or a
        Gaussian of ``sigma = 0``) and no ``noise_std`` given, ``gamma_t`` is its limit ``sigma_y -> 0``,
        ``inf``: exact data consistency started at ``x0_hat`` (the official noiseless DDS step).
        """
        if self.lambda_ is None:
            return lambda _sigma: self.gamma
        if self.noise_std is None and _states_zero_noise(op):
            return lambda _sigma: math.inf
        c = self.lambda_ * measurement_noise_std(op, self.noise_std, solver) ** 2
        return lambda sigma: sigma * sigma / c


def _states_zero_noise(op) -> bool:
    """Whether ``op`` states a measurement noise of exactly zero (``noise_std``, or its deepinv noise model)."""
    s = getattr(op, "noise_std", None)
    if s is None:
        model = getattr(op, "noise_model", None)
        if isinstance(model, dinv.physics.ZeroNoise):
            return True
        s = getattr(model, "sigma", None)
    return s is not None and bool((s == 0).all() if torch.is_tensor(s) else s == 0)


def _from_config(name: str) -> property:
    return property(lambda self: getattr(self.config, name), doc=f"``config.{name}`` (read-only).")


class DDSLoop(Solver):
    """A solver that runs the DDS loop with its :class:`DDSConfig` ``config`` (DDS, DiffusionMBIR)."""

    config: DDSConfig
    steps = _from_config("steps")
    eta = _from_config("eta")
    gamma = _from_config("gamma")
    schedule = _from_config("schedule")
    lambda_ = _from_config("lambda_")
    noise_std = _from_config("noise_std")
    tail_average = _from_config("tail_average")
    clip_x0 = _from_config("clip_x0")
    sigma_hold = _from_config("sigma_hold")
    tail_estimate = _from_config("tail_estimate")
    pigdm = _from_config("pigdm")
    pigdm_below = _from_config("pigdm_below")
    group: SliceGroup | None = None  # the split of a volume over torch.distributed ranks (None: one process)
    image_dtype: torch.dtype = torch.float64  # the state's dtype on 2D images
    volume_dtype: torch.dtype = torch.float32  # the state's dtype on volumes (inner products in float64 either way)

    def distribute(self, group: SliceGroup | None) -> "DDSLoop":
        """Reconstruct only this rank's slices of a volume, in step with the other ranks of ``group``.

        ``reconstruct(y, op)`` is then called on every rank with the rank's block, ``y`` and ``op``
        holding slices ``group.start .. group.stop - 1`` (:func:`invdiff.distributed.context.reconstruct_split`
        does this and gathers the result). ``None``: back to one process. Returns the solver.
        """
        if group is not None and not isinstance(group, SliceGroup):
            raise TypeError(f"group: expected an invdiff.distributed.context.SliceGroup or None, got {type(group).__name__}")
        self.group = group
        return self

    def dds_loop(self, y: Tensor, op, admm: ADMMTVz, generator: torch.Generator, progress: bool,
                 callback: Callable[[dict], None] | None, desc: str = "DDS") -> Tensor:
        """The DDS sampling loop, one network call per step (per slice on volumes).

        The data update minimises ``1/2 |A x - y|^2 + |x - x0_hat|^2 / (2 gamma_t) [+ lam |D_z x|_1]``
        (``admm`` carries the TV settings); ``tail_average = k > 1`` returns the mean of the
        data-consistent estimates ``x0'`` of the last ``k`` steps instead of the last one (of the Tweedie
        estimates ``x0_hat`` with ``tail_estimate="x0_hat"``).

        Images run below with the state in float64. Volumes run in
        :func:`invdiff.solvers.dds_slabs.dds_volume_loop`: float32 state, streamed in slabs of ``chunk``
        slices (at most 8 float32 volumes of state), one random stream per slice, and split over the
        ranks of ``self.group`` when it is set (:meth:`distribute`).
        """
        img_size = getattr(op, "img_size", None)
        if (len(img_size) + 1 if img_size is not None else op.A_adjoint(y).ndim) == 5:
            if self.config.pigdm > 0:
                raise ValueError(f"pigdm: the Pi-GDM correction runs on 2D images only, got pigdm="
                                 f"{self.config.pigdm!r} on a volume")
            return dds_volume_loop(self, y, op, admm.lam, admm.rho, admm.cg_iters, generator, progress, callback, desc)
        if self.group is not None and self.group.distributed:
            raise ValueError(f"{type(self).__name__}: only volumes are split over ranks; this operator works on 2D images")
        cfg = self.config
        sigmas, start = cfg.sigmas(self.prior)
        gamma_of = cfg.gamma_of(op, type(self).__name__)
        clip = getattr(self.prior, "data_range", None) if cfg.clip_x0 else None
        shape = (y.shape[0], *img_size) if img_size is not None else tuple(op.A_adjoint(y).shape)
        dt = self.image_dtype
        AtA, ATy = normal_operator(op, y.dtype), op.A_adjoint(y).to(dt)
        c_noise, c_eps = cfg.eta, math.sqrt(max(1.0 - cfg.eta * cfg.eta, 0.0))
        x = start * torch.randn(shape, generator=generator, device=y.device, dtype=dt)
        steps, k_avg = cfg.steps, cfg.tail_average
        of_hat = cfg.tail_estimate == "x0_hat"
        acc = torch.zeros_like(x)
        if cfg.pigdm > 0:
            noiseless = cfg.noise_std is None and _states_zero_noise(op)
            sigma_y = 0.0 if noiseless else measurement_noise_std(op, cfg.noise_std, type(self).__name__)
            pigdm = partial(pigdm_estimate, self.denoise, y=y.to(dt), op=op, zeta=cfg.pigdm, cg_iters=self.cg_iters,
                            sigma_y=sigma_y, data_var=pigdm_data_var(self.prior))
        for i in tqdm(range(steps), disable=not progress, desc=desc, leave=False):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            # 1. Tweedie estimate (Pi-GDM-corrected where cfg.uses_pigdm) and the network's noise estimate
            x0_hat = pigdm(x, sigma)[0] if cfg.uses_pigdm(sigma) else self.denoise(x, sigma)
            if clip is not None:
                x0_hat = x0_hat.clamp(*clip)
            eps_hat = (x - x0_hat) / sigma
            # 2. data consistency started at x0_hat: CG on (A^T A + I/gamma [+ rho D_z^T D_z]) x = ...
            g = float(gamma_of(sigma))
            inv_gamma = 0.0 if math.isinf(g) else 1.0 / g
            M = (lambda v, c=inv_gamma: AtA(v) + c * v) if inv_gamma > 0 else AtA
            b = ATy + inv_gamma * x0_hat if inv_gamma > 0 else ATy
            x0_dc = admm.step(x0_hat, M, b)
            if i >= steps - k_avg:
                acc += x0_hat if of_hat else x0_dc
            # 3. DDIM step to sigma_next with the corrected estimate
            if sigma_next > 0:
                z = torch.randn(shape, generator=generator, device=y.device, dtype=dt)
                x = x0_dc + sigma_next * (c_noise * z + c_eps * eps_hat)
            else:
                x = x0_dc
            self.check_iterate("x", x, i)
            if callback is not None:
                callback({"step": i, "sigma": sigma, "sigma_next": sigma_next, "x": x, "x0_hat": x0_hat,
                          "x0_dc": x0_dc})
        if k_avg > 1 or of_hat:
            x = acc / k_avg
        return x.to(y.dtype)


class DDS(DDSLoop):
    r"""Decomposed Diffusion Sampler: DDIM with conjugate-gradient data consistency on the Tweedie estimate.

    One step from ``sigma`` to ``sigma'``::

        # 1. Tweedie:   x0_hat = D(x, sigma),   eps_hat = (x - x0_hat) / sigma
        #    (with pigdm = zeta at sigma <= pigdm_below: x0_hat += zeta sigma^2 J^T A^T (r^2 A A^T + sigma_y^2 I)^{-1}
        #     (y - A x0_hat), Pi-GDM through the network's Jacobian J; invdiff.solvers.pigdm)
        # 2. data consistency, cg_iters CG iterations started at x0_hat on
        #        (I + gamma A^T A) x0' = x0_hat + gamma A^T y                       (2D, or tv_weight = 0)
        #    on volumes with tv_weight > 0, one ADMM-TV_z iteration instead:
        #        (A^T A + I/gamma + rho D_z^T D_z) x0' = A^T y + x0_hat/gamma + rho D_z^T (z - u)
        #        z = soft(D_z x0' + u, tv_weight / rho),   u += D_z x0' - z
        # 3. DDIM:      x' = x0' + sigma' (eta n + sqrt(1 - eta^2) eps_hat)       (x' = x0' at the end)
        # output: x0' of the last step, or with tail_average = k the mean of x0' over the last k steps
        # with sigma_hold = h the last k steps all run at sigma = sigma' = h (a held tail, averaged)
        # with tail_estimate = "x0_hat" the mean is of the Tweedie estimates x0_hat instead of x0'

    ``gamma = inf`` is the official noiseless form (CG on ``A^T A x = A^T y`` from ``x0_hat``; the
    official 3D solver has no ``I/gamma`` term). The official code uses 5 CG iterations; its
    ablation found more iterations worse (they pull ``x0'`` off the data manifold).

    Defaults: an argument left at ``None`` takes the tuned preset
    (:func:`invdiff.solvers.presets.preset` ``("dds")``, tuned on 16-view CT; ``benchmarks/TUNING.md``):
    ``steps=100, schedule="karras", eta=0.85, lambda_=1.0, cg_iters=20, tail_average=0.2, sigma_max=1.0``. Passing
    ``gamma`` without ``lambda_`` switches the preset's ``lambda_`` off (the two set the same data
    weight). The official settings are ``DDS(prior, **invdiff.solvers.presets.PAPER["dds"])``;
    :meth:`settings` returns the resolved values.

    Parameters
    ----------
    prior : deepinv.models.Denoiser
        A 2D denoiser ``D(x, sigma)``. Volumes ``(B, C, D, H, W)`` are denoised slice by slice through
        :class:`invdiff.priors.SliceDenoiser` (``chunk`` slices per network call).
    steps : int, optional
        DDIM steps = network calls per slice (official: 50-100; preset 100).
    eta : float, optional
        Stochasticity in [0, 1] (official and preset 0.85).
    cg_iters : int, optional
        CG iterations of the data-consistency step (official 5, preset 20).
    gamma : float, optional
        Weight of the data term against proximity to the Tweedie estimate; ``inf`` drops the proximity
        term; unused while ``lambda_`` is set (the preset sets it). It is in the units of ``A^T A`` (see :mod:`invdiff.bench.mbir3d` for the value tuned on
        invdiff's CT operator).
    tv_weight : float
        ``lambda`` of TV along z on volumes (0: off; ignored on 2D images).
    rho : float
        ADMM penalty of the TV split (used only when ``tv_weight > 0``).
    schedule : {"vp", "karras"}, optional
        Noise levels (see :meth:`DDSConfig.sigmas`; official ``"vp"``, preset ``"karras"``).
    clip_x0 : bool, optional
        Clip ``x0_hat`` to the prior's ``data_range`` before the data step (the official code does not;
        ``None``: the preset's, on for ``task="ct-limited"`` and ``"deblur"``).
    chunk : int
        Slices per network call on volumes.
    sigma_min : float, optional
        Last noise level of the ``"karras"`` schedule (default: the prior's ``sigma_min``); the output
        is the data-consistent Tweedie estimate at this level.
    sigma_max : float, optional
        First noise level; the chain starts from pure noise there. Default: the task's preset (1.0; 0.5 for
        ``task="mri"``; the shipped prior's own 10 for ``"inpaint"``); ``DDSConfig(sigma_max=None)`` means the
        prior's ``sigma_max``. Not in the DDS paper (an invdiff option, :meth:`DDSConfig.sigmas`): below the
        prior's, the steps concentrate on the noise levels where the measurement leaves the image undecided.
    lambda_ : float, optional
        Noise-aware proximal weight after DiffPIR (Zhu et al., CVPR 2023): when given, ``gamma`` is
        replaced at every step by ``gamma_t = sigma_t^2 / (lambda_ sigma_y^2)`` (the data term
        ``|A x - y|^2 / (2 sigma_y^2)`` against a Gaussian of variance ``sigma_t^2 / lambda_`` around
        ``x0_hat``), so the data pull is weak at high noise and strong at the end. ``sigma_y`` is
        ``noise_std`` or the operator's. Use enough ``cg_iters`` (about 20) to solve this proximal
        problem rather than stop early. Preset 1.0. On an operator that states zero noise the
        proximal weight is its noiseless limit ``gamma_t = inf``.
    noise_std : float, optional
        ``sigma_y`` for ``lambda_``; defaults to ``op.noise_std`` (or ``op.noise_model.sigma``).
    task : str
        Which preset fills the arguments left at ``None``: ``"default"`` (tuned on 16-view CT) or a task
        group of :data:`invdiff.solvers.presets.TASKS` (``"ct-limited"``, ``"inpaint"``, ``"deblur"``, ...;
        a group without a preset of its own gets the default).
    sigma_hold : float, optional
        Not in the DDS paper (an invdiff option; preset: ``0.25`` for ``task="inpaint"``, none elsewhere; ``0``
        switches a preset's hold off). The schedule descends from ``sigma_max`` to ``sigma_hold`` in the first
        ``steps - tail_average`` steps and then stays there: the ``tail_average`` averaged steps are all taken at
        ``sigma = sigma' = sigma_hold``. Each held step re-noises the data-consistent estimate to ``sigma_hold``,
        denoises it and applies the data step again, a Markov chain at one noise level whose ``x0'`` (each a
        conditional mean given the chain's state) are averaged, an ergodic estimate of the posterior mean. At a
        level where the prior still mixes, this averages over more of the posterior's spread than a tail that
        descends to ``sigma_min``, where consecutive estimates hardly differ. The same idea, annealing the prior
        step's noise level down to a floor and sampling there, is PnP-DM's (Wu et al., "Principled probabilistic
        imaging using diffusion models as plug-and-play priors", NeurIPS 2024: ``rho_k = max(rho_min, decay^k
        rho_0)``). Only the ``"karras"`` schedule takes it, and not together with ``sigma_min``.
    tail_estimate : {"x0_dc", "x0_hat"}, optional
        Which estimate the tail average (or, with ``tail_average=1``, the output) is made of: the data-consistent
        ``x0'`` (``"x0_dc"``, the paper's output and the default) or the network's Tweedie estimate ``x0_hat`` of
        the same steps (preset: ``"x0_hat"`` for ``task="deblur"``). On a blur the data step amplifies the
        measurement noise at the frequencies the kernel attenuates; ``x0_hat`` of the next step has denoised that
        away, while the data is already in its input. Measured better on deblurring with a held tail (+0.8 dB),
        worse on inpainting, where ``x0'`` puts the observed pixels back (benchmarks/TUNING.md). Not in the DDS
        paper.
    pigdm : float, optional
        Not in the DDS paper (an invdiff option; preset: ``1.0`` for ``task="inpaint"``, ``0`` (off) elsewhere). The
        weight ``zeta`` of a Pi-GDM correction of the Tweedie estimate before the data step (Song et al., ICLR 2023;
        :mod:`invdiff.solvers.pigdm`): ``x0_hat + zeta sigma^2 J^T A^T (r^2 A A^T + sigma_y^2 I)^{-1} (y - A x0_hat)``
        with ``J`` the network's Jacobian (one backward pass per corrected step) and ``r^2 = sigma^2 v / (sigma^2 +
        v)``, ``v = prior.sigma_data ** 2`` (``0.5 ** 2`` for a prior that states none). ``1`` is the exact
        conditional mean ``E[x0 | x, y]`` for a Gaussian prior of variance ``v``. Through the Jacobian the residual at
        the observed pixels moves the unobserved ones, which DDS's isotropic data step leaves at ``x0_hat`` (+0.36 dB
        on inpaint70's tuning runs, +0.33 on its test images over 10 seeds; benchmarks/TUNING.md, "Pi-GDM in the held
        tail"). 2D images only; each corrected step keeps the graph for one backward pass (still one network call).
    pigdm_below : float, optional
        The correction runs only at steps with ``sigma <= pigdm_below`` (``None``: at every step; preset ``0.3`` for
        ``task="inpaint"``, the held tail and the last descent steps).
    tail_average : int or float, optional
        Not in the DDS paper (an invdiff option; preset 0.2, ``1`` is the paper's output). With ``eta`` near 1 the low-noise
        end of the chain re-draws fresh noise at every step, so the estimates ``x0'`` of the last
        steps behave like correlated draws around the posterior; averaging the last ``k`` of them (an
        ergodic, MCMC-style average) moves the output from one sample towards the posterior mean,
        which scores better in PSNR/SSIM at no extra network call (and looks smoother). ``1``: the
        plain DDS output; a float in ``(0, 1)``: that fraction of the steps (``0.2``: the last 20 %).
        For an ensemble (``n_samples > 1``) pass ``1``: the average narrows each chain towards the mean,
        and 16 chains with ``tail_average=1`` came close to calibrated 90 % intervals on in-distribution
        CT and MRI (benchmarks/CALIBRATION.md, last section; measured, not guaranteed).

    Example
    -------
    >>> solver = DDS(prior)  # the tuned preset  # doctest: +SKIP
    >>> r = solver.reconstruct(y, op, seed=0)  # doctest: +SKIP
    >>> DDS(prior, steps=50, cg_iters=5, gamma=1.0).settings()["lambda_"] is None  # doctest: +SKIP
    True
    """

    def __init__(self, prior, steps: int | None = None, eta: float | None = None, cg_iters: int | None = None,
                 gamma: float | None = None, tv_weight: float = 0.0, rho: float = 10.0, schedule: str | None = None,
                 clip_x0: bool | None = None, chunk: int = 16, sigma_min: float | None = None, lambda_: float | None = None,
                 noise_std: float | None = None, tail_average: int | float | None = None, task: str = "default",
                 device: str | torch.device | None = None, sigma_max: float | None = None,
                 sigma_hold: float | None = None, tail_estimate: str | None = None, pigdm: float | None = None,
                 pigdm_below: float | None = None):
        super().__init__(check_prior(prior), device=device)
        kw = resolve("dds", dict(steps=steps, eta=eta, cg_iters=cg_iters, schedule=schedule, lambda_=lambda_,
                                 tail_average=tail_average, sigma_min=sigma_min, clip_x0=clip_x0, sigma_max=sigma_max,
                                 sigma_hold=sigma_hold, tail_estimate=tail_estimate, pigdm=pigdm,
                                 pigdm_below=pigdm_below),
                     task)
        self.task = task
        if gamma is not None and lambda_ is None:  # an explicit constant data weight replaces the preset's lambda_
            kw["lambda_"] = None
        self.config = DDSConfig(kw["steps"], kw["eta"], gamma, kw["schedule"], kw["sigma_min"], kw["lambda_"], noise_std,
                                kw["tail_average"], bool(kw["clip_x0"]), kw["sigma_max"], kw["sigma_hold"],
                                kw["tail_estimate"] or "x0_dc", kw["pigdm"], kw["pigdm_below"])
        self.cg_iters = check_positive_int("cg_iters", kw["cg_iters"], minimum=0)
        self.tv_weight = check_positive_float("tv_weight", tv_weight, allow_zero=True)
        self.rho = check_positive_float("rho", rho)
        self.chunk = check_positive_int("chunk", chunk)

    sigma_min = _from_config("sigma_min")
    sigma_max = _from_config("sigma_max")

    def _sample(self, y: Tensor, op, generator: torch.Generator, progress: bool,
                callback: Callable[[dict], None] | None) -> Tensor:
        img_size = getattr(op, "img_size", None)
        volume = (len(img_size) == 4) if img_size is not None else (op.A_adjoint(y).ndim == 5)
        admm = ADMMTVz(self.tv_weight if volume else 0.0, self.rho, self.cg_iters)
        return self.dds_loop(y, op, admm, generator, progress, callback)
