"""Diffusion Posterior Sampling (DPS).

Chung, Kim, Mccann, Klasky, Ye, "Diffusion Posterior Sampling for General Noisy Inverse Problems",
ICLR 2023. Official code: https://github.com/DPS2022/diffusion-posterior-sampling
(``guided_diffusion/condition_methods.py``, ``PosteriorSampling``; ``gaussian_diffusion.py``, ``p_sample_loop``).

The official sampler is ancestral DDPM on the linear-beta VP chain (``beta`` from 1e-4 to 0.02,
``T = 1000``): from ``x_t``, predict ``x0_hat``, draw ``x'_{t-1} ~ q(x_{t-1} | x_t, x0_hat)``, then
subtract ``zeta grad_{x_t} ||y - A x0_hat||`` (a non-squared norm; the paper's
``zeta / ||y - A x0_hat||`` times half the gradient of the squared norm is the same vector).
Here the same chain runs in sigma-space (``x = x_t / sqrt(ab_t)``, ``sigma_t^2 = (1 - ab_t) / ab_t``).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from invdiff.solvers.base import VPChainSolver
from invdiff.solvers.presets import resolve
from invdiff.validate import check_positive_float


class DPS(VPChainSolver):
    r"""Diffusion Posterior Sampling: ancestral DDPM steps plus a likelihood gradient through the denoiser.

    One step from ``sigma = sigma_t`` to ``sigma' = sigma_{t-1}`` (``r = sigma'^2 / sigma^2``)::

        # 1. Tweedie estimate (gradients on):  x0_hat = D(x, sigma), clipped to prior.data_range
        # 2. DDPM posterior q(x' | x, x0_hat) in sigma-space (forward increments of variance sigma^2 - sigma'^2):
        #        mean = r x + (1 - r) x0_hat,   var = sigma'^2 (1 - r)
        # 3. guidance:  x' = mean + sqrt(var) z - zeta sqrt((1 + sigma^2)(1 + sigma'^2)) grad_x ||y - A x0_hat||

    The factor in step 3 converts the official update, which takes the gradient with respect to the
    VP state ``x_t = sqrt(ab_t) x`` and subtracts it from the VP state ``x_{t-1} = sqrt(ab_{t-1}) x'``:
    ``grad_{x_t} = grad_x / sqrt(ab_t)`` and dividing by ``sqrt(ab_{t-1})`` gives
    ``1 / sqrt(ab_t ab_{t-1}) = sqrt((1 + sigma^2)(1 + sigma'^2))``. Every step is therefore the
    official step, point for point. The norm is taken per sample (the official code takes one norm
    over the batch, which is the same for a batch of one).

    Departures from the official code, forced by the sigma-space interface:

    * variance: the posterior variance ``beta~_t`` ("fixed small"); the official checkpoints learn
      their variance (``learned_range``), which a denoiser ``D(x, sigma)`` does not provide;
    * start: ``x_T = sqrt(1 + sigma_T^2) n``, the VP chain's ``N(0, I)`` in sigma-space. When the
      prior's ``sigma_max`` lies below the chain's top (157.4), the chain starts at ``sigma_max``
      and the ``steps`` noise levels are spaced evenly in the (fractional) timestep below it
      (:func:`~invdiff.solvers.schedules.vp_chain_sigmas`); otherwise the timesteps are
      guided-diffusion's respacing of 1000 steps to ``steps``.

    Parameters
    ----------
    prior : deepinv.models.Denoiser
        ``D(x, sigma) = E[x0 | x0 + sigma n]``. Its ``sigma_max`` caps the chain and its
        ``data_range`` is used to clip ``x0_hat`` (when ``clip_x0``).
    steps : int, optional
        Number of ancestral steps (one network call and one backward pass each). Official and preset: 1000.
    step_size : float, optional
        ``zeta``; preset 0.03 (tuned at 1000 steps on 16-view CT, :func:`invdiff.solvers.presets.preset`
        ``("dps", task)``).
        Official configurations: 1.0 (the code's default, phase retrieval), 0.3 for
        super-resolution and deblurring, 0.5 for inpainting, all for images in [-1, 1]; for data in
        [0, 1] the same residual has half the size, so larger values can be needed. Too large a value
        makes the iterate blow up, which is reported as a ``FloatingPointError`` naming the step.
    clip_x0 : bool
        Clip ``x0_hat`` to ``prior.data_range`` inside the solver, as the official code clips to
        [-1, 1] (gradients of clipped pixels are then zero, as there). Never done inside the denoiser.
    T, beta_start, beta_end : int, float, float
        The VP chain (DDPM's linear betas).
    task : str
        Which preset fills the arguments left at ``None``: ``"default"`` (tuned on 16-view CT) or a task
        group of :data:`invdiff.solvers.presets.TASKS` (``"inpaint"``, ``"deblur"``, ...; a group without a
        preset of its own gets the default).

    Example
    -------
    >>> from invdiff.priors import GaussianPrior  # doctest: +SKIP
    >>> solver = DPS(prior, steps=200, step_size=0.5)  # doctest: +SKIP
    >>> DPS(prior, task="inpaint").settings()["task"]  # doctest: +SKIP
    'inpaint'
    >>> r = solver.reconstruct(y, op, n_samples=8, seed=0)  # doctest: +SKIP
    >>> r.mean.shape, r.std.shape, r.nfe  # doctest: +SKIP
    """

    def __init__(self, prior, steps: int | None = None, step_size: float | None = None, clip_x0: bool = True,
                 T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02, task: str = "default",
                 device: str | torch.device | None = None):
        kw = resolve("dps", {"steps": steps, "step_size": step_size}, task)
        self.task = task
        super().__init__(prior, kw["steps"], T, beta_start, beta_end, device=device)
        self.step_size = check_positive_float("step_size", kw["step_size"], allow_zero=True)
        self.clip_x0 = bool(clip_x0)

    def _sample(self, y: Tensor, op, generator: torch.Generator, progress: bool,
                callback: Callable[[dict], None] | None) -> Tensor:
        sig = self.sigmas().tolist()
        img_size = getattr(op, "img_size", None)
        shape = (y.shape[0], *img_size) if img_size is not None else op.A_adjoint(y).shape
        data_range = getattr(self.prior, "data_range", None) if self.clip_x0 else None
        zeta = self.step_size
        x = math.sqrt(1 + sig[0] ** 2) * torch.randn(shape, generator=generator, device=y.device, dtype=torch.float64)
        for i in tqdm(range(self.steps), disable=not progress, desc="DPS", leave=False):
            sigma, sigma_next = sig[i], sig[i + 1]
            with torch.enable_grad():
                x_in = x.to(torch.float32).requires_grad_(True)
                # 1. Tweedie estimate
                x0_hat = self.denoise(x_in, sigma, grad=True)
                if data_range is not None:
                    x0_hat = x0_hat.clamp(*data_range)
                # 2. likelihood gradient: grad_x sum_b ||y_b - A x0_hat_b||
                residual = (y - op.A(x0_hat)).flatten(1).norm(dim=1)
                (grad,) = torch.autograd.grad(residual.sum(), x_in)
            x0_hat = x0_hat.detach().to(torch.float64)
            # 3. ancestral step q(x' | x, x0_hat) in sigma-space, then the guidance step
            r = sigma_next**2 / sigma**2
            x = r * x + (1 - r) * x0_hat
            if sigma_next > 0:
                x += sigma_next * math.sqrt(1 - r) * torch.randn(shape, generator=generator, device=y.device,
                                                                 dtype=torch.float64)
            x -= (zeta * math.sqrt((1 + sigma**2) * (1 + sigma_next**2))) * grad.to(torch.float64)
            self.check_iterate("x", x, i)
            if callback is not None:
                callback({"step": i, "sigma": sigma, "sigma_next": sigma_next, "x": x, "x0_hat": x0_hat,
                          "residual_norm": residual.detach()})
        return x.to(y.dtype)
