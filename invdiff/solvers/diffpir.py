r"""DiffPIR: plug-and-play restoration by half-quadratic splitting inside a diffusion sampler.

Zhu, Zhang, Liang, Cao, Wen, Timofte, Van Gool, "Denoising Diffusion Models for Plug-and-Play Image
Restoration", CVPR Workshops (NTIRE) 2023. Official code: https://github.com/yuanzhi-zhu/DiffPIR.

HQS splits ``min_x |y - A x|^2 / (2 sigma_y^2) + R(x)`` into a prior step (a denoiser at the noise level
``sigma_t``: the diffusion model's Tweedie estimate) and a data step, the proximal operator of the data term
with the penalty ``rho_t = lambda sigma_y^2 / sigma_t^2`` (the paper's eq. 13, written here in the prior's own
units: ``sigma_t`` is the diffusion noise level of the EDM view ``x = x0 + sigma_t n``). One step from
``sigma_t`` to ``sigma_{t-1}``:

.. math::

    \hat x_0 &= D(x_t, \sigma_t) \quad (\text{clipped to the prior's data range with } \texttt{clip\_x0})\\
    \tilde x_0 &= \arg\min_x \tfrac12 |A x - y|^2 + \tfrac{\rho_t}{2} |x - \hat x_0|^2
               = (A^\top A + \rho_t I)^{-1} (A^\top y + \rho_t \hat x_0),
               \qquad \rho_t = \lambda_t \sigma_y^2 / \sigma_t^2 \\
    \hat\epsilon &= (x_t - \tilde x_0) / \sigma_t \\
    x_{t-1} &= \tilde x_0 + \sigma_{t-1} \bigl(\sqrt{1 - \zeta}\, \hat\epsilon + \sqrt{\zeta}\, z\bigr),
               \qquad z \sim \mathcal N(0, I)

(in the paper's VP form ``x_{t-1} = sqrt(ab_{t-1}) x0~ + sqrt(1 - ab_{t-1}) (sqrt(1 - zeta) eps^ + sqrt(zeta)
z)``, the same point in sigma-space). The data step is solved exactly where the operator allows
(:func:`data_prox`): in closed form through the SVD of a ``deepinv.physics.DecomposablePhysics`` (a pixel mask
for inpainting, the FFT for circular blur, super-resolution), by conjugate gradients started at ``x0_hat``
otherwise (CT, MRI). Zero measurement noise gives ``rho_t = 0``: the point of ``{A x = y}`` (least squares)
nearest ``x0_hat``.

Departures from the paper, all options (``zeta = 1, tail_average = 1, clip_x0 = False, schedule = "quad",
lambda_end = None`` is the paper's sampler):

* ``schedule``: ``"quad"`` is the paper's (DDPM's linear-beta chain, timesteps spaced quadratically, so the
  steps shorten towards ``t = 0``: ``t_i = t_max (1 - sqrt(i / (n - 1)))``), started at the prior's
  ``sigma_max``; ``"karras"`` is EDM's (Karras et al. 2022), over ``[sigma_min, sigma_max]``;
* ``lambda_end``: a ``rho`` schedule. ``lambda_t`` goes geometrically from ``lambda_`` (first step) to
  ``lambda_end`` (last step), so the data pull can be loosened or tightened towards the end;
* ``clip_x0`` clips the Tweedie estimate to the prior's ``data_range`` (deepinv's DiffPIR always does);
* ``tail_average = k`` returns the mean of the data-consistent estimates ``x0~`` of the last ``k`` steps
  (an ergodic average towards the posterior mean; the paper returns the last one);
* the paper's last step returns ``x0~``; so does this one (deepinv's returns the state ``x_1`` and skips the
  last data step).

One network call per step and no backward pass; the data step costs nothing (masks), two FFTs (blur) or
``cg_iters`` products with ``A^T A`` (CT).
"""

from __future__ import annotations

import math
from typing import Callable

import deepinv as dinv
import torch
from torch import Tensor
from tqdm.auto import tqdm

from invdiff.solvers.base import Solver, sigma_range
from invdiff.solvers.cg import cg
from invdiff.solvers.presets import resolve
from invdiff.solvers.schedules import karras_sigmas, vp_alphas_cumprod
from invdiff.validate import (check_choice, check_positive_float, check_positive_int, check_prior, check_tail_average,
                              check_unit_interval)

SCHEDULES = ("karras", "quad")


def quad_sigmas(n: int, sigma_max: float | None = None, T: int = 1000, beta_start: float = 1e-4,
                beta_end: float = 0.02) -> Tensor:
    """DiffPIR's schedule: DDPM's linear-beta chain at timesteps ``t_i = t_max (1 - sqrt(i / (n - 1)))``, then 0.

    ``sigma_t = sqrt((1 - ab_t) / ab_t)``; ``t_max = T - 1``, or the fractional timestep where ``sigma_t =
    sigma_max`` when ``sigma_max`` is lower (``log ab_t`` interpolated linearly between integer timesteps).
    Returns ``n + 1`` values (float64), decreasing, ending in 0.
    """
    n = check_positive_int("n", n)
    log_ab = vp_alphas_cumprod(T, beta_start, beta_end).log()
    sig = (1 / log_ab.exp() - 1).sqrt()
    t_max = float(T - 1)
    if sigma_max is not None and sigma_max < sig[-1]:
        if sigma_max <= sig[0]:
            raise ValueError(f"sigma_max: {sigma_max!r} is below the chain's smallest noise level {float(sig[0]):.4g}")
        target = -math.log1p(sigma_max**2)  # log ab at sigma_max
        k = int(torch.searchsorted(sig, torch.tensor(sigma_max, dtype=sig.dtype)))
        t_max = (k - 1) + float((target - log_ab[k - 1]) / (log_ab[k] - log_ab[k - 1]))
    ramp = torch.linspace(0, 1, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    t = t_max * (1 - ramp.sqrt())
    lo = t.floor().long().clamp(max=T - 2)
    la = log_ab[lo] * (1 - (t - lo)) + log_ab[lo + 1] * (t - lo)
    sigmas = (1 / la.exp() - 1).sqrt()
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def data_prox(x0_hat: Tensor, y: Tensor, op, rho: float, cg_iters: int = 20, cg_tol: float = 0.0) -> Tensor:
    r"""``argmin_x 1/2 |A x - y|^2 + rho/2 |x - x0_hat|^2`` (float64, shaped like ``x0_hat``).

    Written as a correction ``x = x0_hat + d`` with ``(A^T A + rho I) d = A^T (y - A x0_hat)``:

    * a ``deepinv.physics.DecomposablePhysics`` (``A = U diag(s) V^T``: inpainting, circular blur,
      super-resolution): ``d = V [V^T A^T r / (|s|^2 + rho)]`` exactly, with ``0 / 0 = 0`` (at ``rho = 0``
      the components of the null space stay those of ``x0_hat``);
    * any other linear operator: ``cg_iters`` CG iterations from ``d = 0`` (the same iterates as CG on the
      whole system started at ``x0_hat``), stopping early at a relative residual ``cg_tol`` if it is > 0
      (``1e-6`` at ``rho = 0`` when none is given).
      From 0, CG stays in the range of ``A^T``, so at ``rho = 0`` the null space of ``A`` is also left as
      ``x0_hat`` has it.
    """
    dt = torch.float64
    x0_hat = x0_hat.to(dt)
    r = op.A_adjoint(y - op.A(x0_hat.to(y.dtype))).to(dt)
    if isinstance(op, dinv.physics.DecomposablePhysics):
        s = op.mask
        s2 = s * s if isinstance(s, (int, float)) else (s.conj() * s).real.to(dt)
        denom = s2 + rho
        coef = op.V_adjoint(r)
        if torch.is_tensor(denom):
            coef = torch.where(denom > 0, coef / torch.where(denom > 0, denom, 1), 0)
        else:
            coef = coef / denom if denom > 0 else coef * 0
        return x0_hat + op.V(coef).to(dt).reshape(x0_hat.shape)

    def normal(v: Tensor) -> Tensor:  # (A^T A + rho I) v
        return op.A_adjoint(op.A(v.to(y.dtype))).to(dt) + rho * v

    # at rho = 0 the system is only semi-definite: CG run past convergence would divide rounding noise by
    # rounding noise, so it stops at a relative residual of 1e-6 (float32 operators reach no lower) unless a
    # tolerance is given
    tol = cg_tol if cg_tol > 0 or rho > 0 else 1e-6
    return x0_hat + cg(normal, r, iters=cg_iters, tol=tol)


class DiffPIR(Solver):
    r"""DiffPIR: denoise (Tweedie), take the exact proximal step of the data term, re-noise.

    See the module docstring for the update equations and the departures from the paper (each an option).

    Defaults: an argument left at ``None`` takes the preset (:func:`invdiff.solvers.presets.preset`
    ``("diffpir", task)``; ``benchmarks/TUNING.md``); :meth:`settings` returns the resolved values. The paper's
    sampler is ``DiffPIR(prior, schedule="quad", zeta=1.0, clip_x0=False, tail_average=1, lambda_=...)``.

    Parameters
    ----------
    prior : deepinv.models.Denoiser
        A denoiser ``D(x, sigma)`` (2D, or a native 3D prior on volumes).
    steps : int, optional
        Noise levels = network calls.
    lambda_ : float, optional
        ``rho_t = lambda_ sigma_y^2 / sigma_t^2``: the weight of the proximity to ``x0_hat`` against the data
        (the paper's ``lambda``, in the prior's units; deepinv's ``DiffPIR(lambda_=2 l)`` on a [0, 1] prior
        is ``l`` here, as deepinv divides its noise level by 2 but not ``sigma_y``).
    zeta : float, optional
        Share of fresh noise in the re-noising step, in [0, 1] (paper: 1 for most tasks; ``eta^2`` of DDIM).
    schedule : {"karras", "quad"}, optional
        The noise levels (see the module docstring; ``"quad"`` is the paper's).
    sigma_min : float, optional
        Last level of the ``"karras"`` schedule (default: the prior's ``sigma_min``).
    clip_x0 : bool, optional
        Clip ``x0_hat`` to the prior's ``data_range`` before the data step.
    tail_average : int or float, optional
        Average the data-consistent estimates of the last ``k`` steps (a float in (0, 1): that fraction of
        the steps); ``1``: the last one.
    lambda_end : float, optional
        ``lambda_`` of the last step; the steps between go geometrically (``None``: constant ``lambda_``).
    cg_iters : int, optional
        CG iterations of the data step on operators without an SVD (CT, MRI); unused on masks and blurs.
    cg_tol : float, optional
        Stop CG at this relative residual (0: always ``cg_iters`` iterations).
    noise_std : float, optional
        ``sigma_y``; defaults to the operator's (``op.noise_std`` or ``op.noise_model.sigma``). 0 is allowed
        (then ``rho_t = 0``: exact data consistency nearest ``x0_hat``).
    task : str
        Which preset fills the arguments left at ``None`` (:data:`invdiff.solvers.presets.TASKS`).

    Example
    -------
    >>> solver = DiffPIR(prior, task="ct-limited")  # doctest: +SKIP
    >>> r = solver.reconstruct(y, op, seed=0)  # doctest: +SKIP
    """

    def __init__(self, prior, steps: int | None = None, lambda_: float | None = None, zeta: float | None = None,
                 schedule: str | None = None, sigma_min: float | None = None, clip_x0: bool | None = None,
                 tail_average: int | float | None = None, lambda_end: float | None = None,
                 cg_iters: int | None = None, cg_tol: float | None = None, noise_std: float | None = None,
                 task: str = "default", device: str | torch.device | None = None):
        super().__init__(check_prior(prior), device=device)
        kw = resolve("diffpir", dict(steps=steps, lambda_=lambda_, zeta=zeta, schedule=schedule, sigma_min=sigma_min,
                                     clip_x0=clip_x0, tail_average=tail_average, lambda_end=lambda_end,
                                     cg_iters=cg_iters, cg_tol=cg_tol), task)
        self.task = task
        self.steps = check_positive_int("steps", kw["steps"])
        self.lambda_ = check_positive_float("lambda_", kw["lambda_"])
        self.zeta = check_unit_interval("zeta", kw["zeta"])
        self.schedule = check_choice("schedule", kw["schedule"], SCHEDULES)
        self.sigma_min = None if kw["sigma_min"] is None else check_positive_float("sigma_min", kw["sigma_min"])
        if self.sigma_min is not None and self.schedule != "karras":
            raise ValueError(f"sigma_min: only the 'karras' schedule takes it, got schedule={self.schedule!r}")
        if not isinstance(kw["clip_x0"], bool):
            raise TypeError(f"clip_x0: expected True or False, got {kw['clip_x0']!r}")
        self.clip_x0 = kw["clip_x0"]
        self.tail_average = check_tail_average(kw["tail_average"], self.steps)
        self.lambda_end = None if kw["lambda_end"] is None else check_positive_float("lambda_end", kw["lambda_end"])
        self.cg_iters = check_positive_int("cg_iters", kw["cg_iters"])
        self.cg_tol = check_positive_float("cg_tol", kw["cg_tol"], allow_zero=True)
        self.noise_std = None if noise_std is None else check_positive_float("noise_std", noise_std, allow_zero=True)

    def sigmas(self) -> list[float]:
        """The ``steps`` noise levels (decreasing), then 0."""
        lo, hi = sigma_range(self.prior, self.sigma_min)
        if self.schedule == "karras":
            return karras_sigmas(self.steps, lo, hi).tolist()
        return quad_sigmas(self.steps, sigma_max=hi).tolist()

    def lambdas(self) -> list[float]:
        """``lambda_t`` of each step: constant, or geometric from ``lambda_`` to ``lambda_end``."""
        if self.lambda_end is None or self.steps == 1:
            return [self.lambda_] * self.steps
        ratio = math.log(self.lambda_end / self.lambda_) / (self.steps - 1)
        return [self.lambda_ * math.exp(i * ratio) for i in range(self.steps)]

    def _noise_std(self, op) -> float:
        if self.noise_std is not None:
            return self.noise_std
        s = getattr(op, "noise_std", None)
        if s is None:
            s = getattr(getattr(op, "noise_model", None), "sigma", None)
        if s is None:
            raise ValueError("noise_std: DiffPIR weighs the data by the measurement noise, but the operator states "
                             "none (op.noise_std or op.noise_model.sigma); pass DiffPIR(..., noise_std=s)")
        s = float(s.reshape(-1)[0]) if torch.is_tensor(s) else float(s)
        if not math.isfinite(s) or s < 0:
            raise ValueError(f"noise_std: expected the operator's noise level to be a finite number >= 0, got {s!r}")
        return s

    def _sample(self, y: Tensor, op, generator: torch.Generator, progress: bool,
                callback: Callable[[dict], None] | None) -> Tensor:
        s_y = self._noise_std(op)
        sigmas, lambdas = self.sigmas(), self.lambdas()
        clip = getattr(self.prior, "data_range", None) if self.clip_x0 else None
        img_size = getattr(op, "img_size", None)
        shape = (y.shape[0], *img_size) if img_size is not None else tuple(op.A_adjoint(y).shape)
        dt = torch.float64
        c_eps, c_z = math.sqrt(1.0 - self.zeta), math.sqrt(self.zeta)
        k_avg, acc = self.tail_average, torch.zeros(shape, device=y.device, dtype=dt)
        x = sigmas[0] * torch.randn(shape, generator=generator, device=y.device, dtype=dt)
        for i in tqdm(range(self.steps), disable=not progress, desc="DiffPIR", leave=False):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            # 1. prior step: the Tweedie estimate (clipped to the data range with clip_x0)
            x0_hat = self.denoise(x, sigma)
            if clip is not None:
                x0_hat = x0_hat.clamp(*clip)
            # 2. data step: the proximal operator of |A x - y|^2 / 2 with penalty rho_t around x0_hat
            rho = lambdas[i] * s_y * s_y / (sigma * sigma)
            x0_dc = data_prox(x0_hat, y, op, rho, self.cg_iters, self.cg_tol)
            if i >= self.steps - k_avg:
                acc += x0_dc
            # 3. re-noise to sigma_next: the effective noise of x0_dc, mixed with fresh noise by zeta
            if sigma_next > 0:
                eps_hat = (x - x0_dc) / sigma
                z = torch.randn(shape, generator=generator, device=y.device, dtype=dt)
                x = x0_dc + sigma_next * (c_eps * eps_hat + c_z * z)
            else:
                x = x0_dc
            self.check_iterate("x", x, i)
            if callback is not None:
                callback({"step": i, "sigma": sigma, "sigma_next": sigma_next, "rho": rho, "x": x, "x0_hat": x0_hat,
                          "x0_dc": x0_dc})
        if k_avg > 1:
            x = acc / k_avg
        return x.to(y.dtype)
