r"""Decoupled Annealing Posterior Sampling (DAPS), with the exact Gaussian x0-step of a linear operator.

Zhang, Zheng, Chen, Lim, Yue, Bouman, Anandkumar, Yang, Zhong, "Improving Diffusion Inverse Problem Solving
with Decoupled Noise Annealing", CVPR 2025. Official code: https://github.com/zhangbingliang2019/DAPS.

DAPS anneals the noise level ``sigma_t`` down a schedule and, at each level, *decouples* consecutive
iterates: it draws a clean image from an approximation of ``p(x0 | x_t, y)`` and then re-noises it
with fresh noise, ``x_{t-1} = x0 + sigma_{t-1} n``, instead of taking a step along the reverse ODE/SDE.
The approximation is ``p(x0 | x_t) ~ N(x0_hat, r_t^2 I)`` around the Tweedie estimate
``x0_hat = D(x_t, sigma_t)``, so with a linear operator and Gaussian noise
``y = A x0 + sigma_y n``

.. math::

    p(x_0 \mid x_t, y) \approx \mathcal N(m_t, \Sigma_t), \qquad
    \Sigma_t = \Bigl(\frac{I}{r_t^2} + \frac{A^\top A}{\sigma_y^2}\Bigr)^{-1}, \qquad
    m_t = \Sigma_t \Bigl(\frac{\hat x_0}{r_t^2} + \frac{A^\top y}{\sigma_y^2}\Bigr),
    \qquad r_t = \sigma_t / \sqrt{\lambda}.

One step from ``sigma_t`` to ``sigma_{t-1}``::

    # 1. Tweedie:        x0_hat = D(x_t, sigma_t)
    # 2. x0-step:        m_t = argmin |x - x0_hat|^2 / (2 r_t^2) + |A x - y|^2 / (2 sigma_y^2)     (CG from x0_hat)
    #                    x0  = m_t + Sigma_t^{1/2} n  via  Sigma_t (z1 / r_t + A^T z2 / sigma_y)   (CG from 0)
    # 3. re-noise:       x_{t-1} = x0 + sigma_{t-1} n'                    (the last step returns m_t)
    # output: m_t of the last step, or with tail_average = k the mean of m_t over the last k steps

Departures from the paper, both exact for the linear-Gaussian case that this class is restricted to:

* the paper draws ``x0`` by a few Langevin steps on ``-log p(x0 | x_t, y)``; here the Gaussian is
  sampled exactly by perturb-and-solve (the mean of ``N(x0_hat + r_t z1, .)`` and
  ``N(y + sigma_y z2, .)`` solved by CG has covariance ``Sigma_t``), which is what the Langevin
  chain converges to;
* the output. At a fixed level the two draws are a Gibbs sampler of ``p(x0, x_t | y)``: ``x_t | x0``
  is exact and ``x0 | x_t, y`` is the Gaussian above. Averaging the conditional means ``m_t`` over the
  chain (Rao-Blackwellisation) estimates ``E[x0 | y] = E[ E[x0 | x_t, y] | y ]`` with less variance
  than averaging the draws ``x0``; ``tail_average = k`` averages ``m_t`` over the last ``k`` levels.
  ``tail_average = 1`` returns the last level's ``m_t`` (the paper returns its last ``x0``).

``r_t = sigma_t`` (``lambda_ = 1``) is the paper's choice; ``lambda_`` rescales it as DiffPIR's
``lambda`` does (Zhu et al., CVPR 2023). One network call per level, no backward pass.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from invdiff.solvers.base import Solver, sigma_range
from invdiff.solvers.cg import cg
from invdiff.solvers.presets import resolve
from invdiff.solvers.schedules import karras_sigmas
from invdiff.utils import measurement_noise_std
from invdiff.validate import check_positive_float, check_positive_int, check_prior, check_tail_average


class DAPS(Solver):
    r"""DAPS: anneal ``sigma_t``; at each level draw ``x0 ~ p(x0 | x_t, y)`` (Gaussian around Tweedie), re-noise.

    See the module docstring for the update and the two departures from the paper. Linear operators
    with Gaussian measurement noise of known, positive ``sigma_y`` only.

    Defaults: an argument left at ``None`` takes the preset (:func:`invdiff.solvers.presets.preset`
    ``("daps", task)``; ``benchmarks/TUNING.md``); :meth:`settings` returns the resolved values.

    Parameters
    ----------
    prior : deepinv.models.Denoiser
        A denoiser ``D(x, sigma)``.
    steps : int, optional
        Annealing levels = network calls (EDM's schedule from the prior's ``sigma_max`` to ``sigma_min``).
    lambda_ : float, optional
        ``r_t = sigma_t / sqrt(lambda_)``: the assumed spread of ``x0`` around the Tweedie estimate
        (paper: ``lambda_ = 1``).
    cg_iters : int, optional
        CG iterations of each of the two solves of the x0-step (one iteration is exact for
        inpainting, whose ``A^T A`` is a mask).
    tail_average : int or float, optional
        Average the conditional means ``m_t`` of the last ``k`` levels (a float in (0, 1): that fraction
        of the steps); ``1``: the last one.
    sigma_min : float, optional
        Last level of the schedule (default: the prior's).
    noise_std : float, optional
        ``sigma_y``; defaults to the operator's (``op.noise_std`` or ``op.noise_model.sigma``); must be > 0.
    task : str
        Which preset fills the arguments left at ``None`` (:data:`invdiff.solvers.presets.TASKS`).

    Example
    -------
    >>> solver = DAPS(prior, task="inpaint")  # doctest: +SKIP
    >>> r = solver.reconstruct(y, op, seed=0)  # doctest: +SKIP
    """

    def __init__(self, prior, steps: int | None = None, lambda_: float | None = None, cg_iters: int | None = None,
                 tail_average: int | float | None = None, sigma_min: float | None = None,
                 noise_std: float | None = None, task: str = "default", device: str | torch.device | None = None):
        super().__init__(check_prior(prior), device=device)
        kw = resolve("daps", dict(steps=steps, lambda_=lambda_, cg_iters=cg_iters, tail_average=tail_average,
                                  sigma_min=sigma_min), task)
        self.task = task
        self.steps = check_positive_int("steps", kw["steps"])
        self.lambda_ = check_positive_float("lambda_", kw["lambda_"])
        self.cg_iters = check_positive_int("cg_iters", kw["cg_iters"])
        self.tail_average = check_tail_average(kw["tail_average"], self.steps)
        self.sigma_min = None if kw["sigma_min"] is None else check_positive_float("sigma_min", kw["sigma_min"])
        self.noise_std = None if noise_std is None else check_positive_float("noise_std", noise_std)

    def _sample(self, y: Tensor, op, generator: torch.Generator, progress: bool,
                callback: Callable[[dict], None] | None) -> Tensor:
        s_y = measurement_noise_std(op, self.noise_std, "DAPS")
        lo, hi = sigma_range(self.prior, self.sigma_min)
        sigmas = karras_sigmas(self.steps, lo, hi).tolist()
        img_size = getattr(op, "img_size", None)
        shape = (y.shape[0], *img_size) if img_size is not None else tuple(op.A_adjoint(y).shape)
        k_avg, acc = self.tail_average, torch.zeros(shape, device=y.device, dtype=torch.float64)
        x = sigmas[0] * torch.randn(shape, generator=generator, device=y.device, dtype=torch.float64)
        for i in tqdm(range(self.steps), disable=not progress, desc="DAPS", leave=False):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            # 1. Tweedie estimate
            x0_hat = self.denoise(x, sigma)
            # 2. x0 | x_t, y ~ N(m, Sigma): its mean, and (before the last level) a draw
            last = sigma_next == 0
            m, x0 = gaussian_x0_step(x0_hat, y, op, sigma / math.sqrt(self.lambda_), s_y, self.cg_iters,
                                     None if last else generator)
            if i >= self.steps - k_avg:
                acc += m
            # 3. re-noise to the next level with fresh noise (the last level returns m)
            x = m if last else x0 + sigma_next * torch.randn(shape, generator=generator, device=y.device,
                                                             dtype=torch.float64)
            self.check_iterate("x", x, i)
            if callback is not None:
                callback({"step": i, "sigma": sigma, "sigma_next": sigma_next, "x": x, "x0_hat": x0_hat, "m": m})
        if k_avg > 1:
            x = acc / k_avg
        return x.to(y.dtype)


def gaussian_x0_step(x0_hat: Tensor, y: Tensor, op, r: float, s_y: float, cg_iters: int,
                     generator: torch.Generator | None) -> tuple[Tensor, Tensor | None]:
    r"""Mean and one draw of ``N(m, Sigma) ~ N(x0_hat, r^2 I) N(y; A x0, s_y^2 I)`` (float64).

    ``Sigma^{-1} = I / r^2 + A^T A / s_y^2``, ``m = Sigma (x0_hat / r^2 + A^T y / s_y^2)``, by ``cg_iters``
    CG iterations from ``x0_hat`` (run as CG from 0 on the correction, ``Sigma^{-1} (m - x0_hat) = A^T (y - A x0_hat)
    / s_y^2``: the same iterates, with no ``A^T y``). The draw is perturb-and-solve: ``m + Sigma (z1 / r + A^T z2 / s_y)``
    with ``z1, z2 ~ N(0, I)``, whose covariance is ``Sigma (I / r^2 + A^T A / s_y^2) Sigma = Sigma``
    (exact once CG has converged); ``generator=None`` skips it (returns ``(m, None)``).
    """
    dt = torch.float64

    def normal(v: Tensor) -> Tensor:  # (I / r^2 + A^T A / s_y^2) v
        return v / r**2 + op.A_adjoint(op.A(v.to(y.dtype))).to(dt) / s_y**2

    x0_hat = x0_hat.to(dt)
    m = x0_hat + cg(normal, op.A_adjoint(y - op.A(x0_hat.to(y.dtype))).to(dt) / s_y**2, iters=cg_iters)
    if generator is None:
        return m, None
    z1 = torch.randn(x0_hat.shape, generator=generator, device=y.device, dtype=dt)
    z2 = torch.randn(y.shape, generator=generator, device=y.device, dtype=dt)
    delta = cg(normal, z1 / r + op.A_adjoint(z2.to(y.dtype)).to(dt) / s_y, iters=cg_iters)
    return m, m + delta
