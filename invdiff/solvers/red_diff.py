"""RED-Diff: variational posterior sampling with a diffusion prior as a regulariser.

Mardani, Song, Kautz, Vahdat, "A Variational Perspective on Solving Inverse Problems with Diffusion
Models", ICLR 2024. Official code: https://github.com/NVlabs/RED-diff (``algos/reddiff.py``).

The posterior is approximated by ``q(x0) = delta(mu)`` (the paper also allows a small Gaussian; the
official default ``sigma_x0 = 0`` is the point mass used here) and ``mu`` is fitted by Adam to the
measurement plus a score-matching regulariser, one noise level per step, descending the VP chain.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from invdiff.solvers.base import VPChainSolver
from invdiff.solvers.presets import resolve
from invdiff.validate import check_positive_float


class REDDiff(VPChainSolver):
    r"""RED-Diff: fit ``mu`` by Adam to the data term plus the denoiser's stop-gradient regulariser.

    One step at noise level ``sigma_t`` (descending over the VP chain respaced to ``steps``)::

        # 1. diffuse the iterate:  eps ~ N(0, I),  x = mu + sigma_t eps   (VP: x_t = sqrt(ab_t) mu + sqrt(1 - ab_t) eps)
        # 2. noise estimate, no gradient:  eps_hat = (x - D(x, sigma_t)) / sigma_t
        # 3. loss(mu) = v ||y - A mu||^2 / (2 m) + w_t <stopgrad(eps_hat - eps), mu> / n,   w_t = lam sigma_t
        # 4. one Adam step on mu (betas 0.9, 0.99)

    ``m`` and ``n`` are the numbers of measurement and image entries: the official code takes the
    mean of both terms. ``w_t = lam sqrt(1 - ab_t) / sqrt(ab_t)`` is the official "linear" (inverse
    SNR) weighting, which is ``lam sigma_t`` in sigma-space. The gradient of the regulariser is the
    stop-gradient score term ``w_t (eps_hat - eps) / n``; no back-propagation through the network.

    The official code sets the data weight ``v = obs_weight = 1`` and does not use the measurement
    noise level ``sigma_y`` in the loss (``noise_std=None``, the default here). Passing
    ``noise_std`` gives the paper's ``||y - A mu||^2 / (2 sigma_y^2)`` scaling of the data term
    (``v = 1 / noise_std^2``, with the same mean normalisation), which shifts the balance towards the
    measurement; Adam makes the overall scale of the loss irrelevant, only the balance matters.

    Each batch element is its own optimisation problem: the loss is summed over the batch (the
    official code averages it, which only rescales the gradient, and Adam is invariant to that).
    RED-Diff is mode-seeking: the samples of ``n_samples > 1`` differ only through the random ``eps``.

    Parameters
    ----------
    prior : deepinv.models.Denoiser
        ``D(x, sigma)``; its ``sigma_max`` caps the chain.
    steps : int, optional
        Number of Adam steps (one network call each, no backward pass through the network); preset 1000.
    lr : float, optional
        Adam learning rate (the paper uses 0.1-0.5 on [-1, 1] images); preset 0.1 (tuned at 1000 steps on
        16-view CT, :func:`invdiff.solvers.presets.preset` ``("reddiff", task)``).
    lam : float, optional
        ``lambda``, the regulariser's weight (official default 0.25; preset 16, tuned at 1000 steps on 16-view CT).
    noise_std : float, optional
        Measurement noise ``sigma_y``; see above. ``None`` follows the official code.
    T, beta_start, beta_end : int, float, float
        The VP chain (DDPM's linear betas), as for :class:`~invdiff.solvers.dps.DPS`.
    task : str
        Which preset fills the arguments left at ``None``: ``"default"`` (tuned on 16-view CT) or a task
        group of :data:`invdiff.solvers.presets.TASKS` (``"inpaint"``, ``"deblur"``, ...; a group without a
        preset of its own gets the default).

    Attributes
    ----------
    info : dict
        After a run: ``loss``, ``loss_obs``, ``loss_noise`` (tensors of shape ``(steps,)``, summed over
        the batch, the data term unweighted by ``v``), as ``Reconstruction.info``.

    Example
    -------
    >>> solver = REDDiff(prior, steps=500, lr=0.25, lam=0.25)  # doctest: +SKIP
    >>> x_hat = solver(y, op)  # doctest: +SKIP
    """

    def __init__(self, prior, steps: int | None = None, lr: float | None = None, lam: float | None = None,
                 noise_std: float | None = None, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 task: str = "default", device: str | torch.device | None = None):
        kw = resolve("reddiff", {"steps": steps, "lr": lr, "lam": lam}, task)
        self.task = task
        super().__init__(prior, kw["steps"], T, beta_start, beta_end, device=device)
        self.lr = check_positive_float("lr", kw["lr"])
        self.lam = check_positive_float("lam", kw["lam"], allow_zero=True)
        self.noise_std = None if noise_std is None else check_positive_float("noise_std", noise_std)

    def _sample(self, y: Tensor, op, generator: torch.Generator, progress: bool,
                callback: Callable[[dict], None] | None) -> Tensor:
        sig = self.sigmas().tolist()
        v = 1.0 if self.noise_std is None else 1.0 / self.noise_std**2
        m = y[0].numel()
        with torch.no_grad():
            mu = op.A_dagger(y).to(torch.float64).requires_grad_(True)
        n = mu[0].numel()
        opt = torch.optim.Adam([mu], lr=self.lr, betas=(0.9, 0.99))
        history = torch.empty(3, self.steps, dtype=torch.float64, device=y.device)
        for i in tqdm(range(self.steps), disable=not progress, desc="RED-Diff", leave=False):
            sigma = sig[i]
            # 1. diffuse the current iterate
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            x = mu.detach() + sigma * eps
            # 2. noise estimate, no gradient through the network
            with torch.no_grad():
                x0_hat = self.denoise(x, sigma)
                g = (x - x0_hat) / sigma - eps  # stopgrad(eps_hat - eps)
            # 3. loss: data term (official mean normalisation) + weighted regulariser
            with torch.enable_grad():
                loss_obs = (y - op.A(mu.to(y.dtype))).square().sum() / (2 * m)
                loss_noise = (g * mu).sum() / n
                loss = v * loss_obs + (self.lam * sigma) * loss_noise
                # 4. Adam step on mu
                opt.zero_grad(set_to_none=True)
                loss.backward()
            opt.step()
            history[:, i] = torch.stack([loss.detach(), loss_obs.detach(), loss_noise.detach()])
            self.check_iterate("mu", mu.detach(), i)
            if callback is not None:
                callback({"step": i, "sigma": sigma, "x": mu.detach(), "x0_hat": x0_hat, "loss": loss.detach()})
        self.info = {"loss": history[0], "loss_obs": history[1], "loss_noise": history[2]}
        return mu.detach().to(y.dtype)
