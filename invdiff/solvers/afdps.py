r"""AFDPS: the approximation-free ensemble sampler of Chen et al. (2025), as published (particle tilt).

Paper: H. Chen, Y. Ren, M. R. Min, L. Ying, Z. Izzo, "Solving Inverse Problems via Diffusion-Based
Priors: An Approximation-Free Ensemble Sampling Approach", arXiv:2506.03979 (2025). No official code
was found when this was written; the equations below are derived here from the paper's PDE and checked
against exact Gaussian and Gaussian-mixture posteriors (``tests/test_afdps.py``).

Setting (sigma-space, variance exploding): ``p_sigma = p_0 * N(0, sigma^2 I)``, Tweedie
``x0_hat = D(x, sigma)``, score ``(x0_hat - x) / sigma^2``; likelihood ``y = A x0 + s n`` with
``mu_y(x) = |y - A x|^2 / (2 s^2)``. ``N`` weighted particles per measurement run down a schedule
``sigma_0 = sigma_max > ... > sigma_K = 0``;
``h_k = sigma_k^2 - sigma_{k+1}^2``, ``kappa_k = sigma_{k+1}^2 / sigma_k^2``.

**Targets (the paper's particle tilt).** ``q_k(x) ∝ p_{sigma_k}(x) exp(-mu_y(x))``: the likelihood at the
particle itself, so ``q_K`` is the posterior. In reverse time, with ``H = (g^2 + v^2)/2 score`` and
``g^2 dtau = -d(sigma^2)``, ``q`` solves (derived here)::

    d_tau q = -div((H - v^2 grad mu_y) q) + v^2/2 Lap q + q [v^2/2 (|grad mu_y|^2 - Lap mu_y) - H . grad mu_y - c]

so particles move by ``dX = (H - v^2 grad mu_y) dtau + v dW`` and carry
``d log w = [v^2/2 (|grad mu_y|^2 - Lap mu_y) - H . grad mu_y] dtau``; ``Lap mu_y = tr(A^T A)/s^2`` is the
same for every particle and cancels on normalising. We take ``v = g`` (the paper's SDE variant).

**Stage I (exact start).** ``x_0 ~ p_{sigma_max}(x) exp(-mu_y(x))`` with ``p_{sigma_max} = N(0, R^2 I)``,
``R^2 = sigma_max^2 + prior_std^2`` (the prior's spread added to the diffusion's; the prior's mean is
neglected against ``sigma_max``). Its product with the linear-Gaussian likelihood is the Gaussian of
precision ``P = I / R^2 + A^T A / s^2``, drawn by perturb-and-solve with CG:
``P x_0 = A^T (y + s xi) / s^2 + zeta / R``, ``xi, zeta ~ N(0, I)``. Weights start equal.

**Stage II**, step ``k`` (one network call):

1. Tweedie estimate ``x0_hat = D(x_k, sigma_k)`` and the tilt ``-mu_y(x_k)``.
2. Weight of the coming move, a function of ``x_k`` only, so weights and resampling precede the move.
3. Systematic resampling when ``ESS < ess_threshold N``.
4. Move to ``sigma_{k+1}``.

* ``proposal="euler"``: the literal Euler-Maruyama discretisation of the two equations above,
  ``x' = x + h (score - grad mu_y) + sqrt(h) z``, ``log w += h (|grad mu_y|^2 / 2 - score . grad mu_y)``.
  It is unstable once ``h_k ||A||^2 / s^2 > 2`` (large sigma, small noise) and says so (the step is named).
* ``proposal="gaussian"`` (default): the same two equations with the linear-Gaussian ``mu_y`` part of each
  step integrated exactly instead of by Euler, i.e. the locally optimal proposal of the same targets. With the
  ancestral kernel ``p_a(x' | x) = N(x'; m_k, v_k^2 I)``, ``m_k = x0_hat + kappa_k (x - x0_hat)``,
  ``v_k^2 = kappa_k h_k`` (its mean is the Euler mean ``x + h_k score``), move by
  ``r_k(x' | x) ∝ p_a(x' | x) exp(-mu_y(x'))`` (Gaussian, precision ``P_k = I / v_k^2 + A^T A / s^2``, mean
  ``mu_k = P_k^{-1}(m_k / v_k^2 + A^T y / s^2)``, drawn by CG as in Stage I) and reweight by its normaliser
  over the tilt at the particle::

      log w_i += log ∫ p_a(x' | x_i) exp(-mu_y(x')) dx' + mu_y(x_i)
               = mu_y(x_i) - 1/2 [ |r_i|^2 / s^2 - <A^T r_i / s^2, mu_k,i - m_k,i> ],   r_i = y - A m_k,i

  (the bracket is ``r^T (s^2 I + v_k^2 A A^T)^{-1} r`` by Woodbury). Expanded to first order in ``h_k`` this is
  the PDE's drift ``h (score - grad mu_y)``, noise ``sqrt(h)`` and weight rate
  ``h (|grad mu_y|^2/2 - Lap mu_y/2 - score . grad mu_y)``: the same scheme in the limit, with the same
  targets ``q_k``. This is the one stabilisation used, and it is a choice of integrator, not of target:
  the paper's continuous-time scheme is unchanged, and it stays stable for ``h_k ||A||^2 / s^2 > 2``.

The last move (``sigma_K = 0``) is the deterministic Tweedie step ``x_K = x0_hat``, reweighted by
``exp(-mu_y(x_K)) / exp(-mu_y(x_{K-1}))``. Resampling and output: :mod:`invdiff.solvers.ensemble`.

What to expect (measured; ``benchmarks/CALIBRATION.md``): the ancestral kernel ``p_a`` propagates
``p_{sigma_k}`` only to first order in ``h_k`` (it lacks the Tweedie covariance), so the targets are met only
as ``steps`` grows; and while ``sigma >> s`` the tilt ``exp(-mu_y(x))`` at the particle is much sharper than
the prior's spread, so the weights degenerate and the ensemble can collapse onto fewer modes than the
posterior has. :class:`invdiff.solvers.SMC` (Tweedie tilt) avoids both. The paper's annealed variant
(``exp(-alpha_k mu_y)``, ``alpha_k = s^2 / (s^2 + sigma_k^2)``) was measured too and not adopted: it keeps the ESS
up but not the modes (``benchmarks/CALIBRATION.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from invdiff.solvers.ensemble import Context, EnsembleSampler, prior_std_of
from invdiff.solvers.smc_gauss import dot, sqnorm

__all__ = ["AFDPS"]

_PROPOSALS = ("gaussian", "euler")


@dataclass
class AFDPSState:
    """The ensemble between steps: particles ``(B * N, ...)`` at ``sigma_k`` and log-weights ``(B, N)``."""

    x: Tensor
    log_w: Tensor


class AFDPS(EnsembleSampler):
    r"""The paper's approximation-free ensemble sampler: particle tilt, exact Stage I, weights from the PDE.

    Parameters
    ----------
    prior : deepinv.models.Denoiser
        ``D(x, sigma)`` in sigma-space.
    particles : int
        Ensemble size ``N`` per measurement; all ``B * N`` particles go through the network together.
    steps : int
        Number of noise levels (= network calls).
    proposal : {"gaussian", "euler"}
        ``"gaussian"`` (default): each step's ``mu_y`` part integrated exactly (module docstring);
        ``"euler"``: the literal Euler-Maruyama discretisation (unstable for large steps and small noise).
    ess_threshold : float
        Resample when ``ESS < ess_threshold * N`` (0 never resamples, 1 always does).
    prior_std : float or "auto"
        Per-pixel prior standard deviation in the Stage-I variance ``R^2 = sigma_max^2 + prior_std^2``;
        ``"auto"``: the prior's ``sigma_data``, else 0.5.
    noise_std : float, optional
        Measurement-noise std ``s``; defaults to ``op.noise_std`` or ``op.noise_model.sigma``.
    sigma_min, sigma_max, rho : float, optional
        EDM (Karras) schedule; ``sigma_min``/``sigma_max`` default to the prior's attributes.
    cg_iters, cg_tol : int, float
        Conjugate-gradient budget of the Gaussian steps.

    split_particles : bool
        When torch.distributed is initialised (``torchrun``), split each ensemble's particles over the ranks
        (:mod:`invdiff.distributed.particles`; ``particles`` a multiple of the world size; every rank passes the
        same ``y`` and ``seed`` and gets the whole result). ``False``: each rank runs its own whole ensembles.

    Examples
    --------
    >>> import torch, deepinv as dinv
    >>> from invdiff.solvers import AFDPS
    >>> class Normal(torch.nn.Module):  # exact denoiser of the prior N(0, I)
    ...     def forward(self, x, sigma):
    ...         return x / (1 + sigma**2)
    >>> op = dinv.physics.Inpainting(img_size=(1, 4, 4), mask=0.5, noise_model=dinv.physics.GaussianNoise(0.1))
    >>> r = AFDPS(Normal(), particles=32, steps=20, sigma_max=20.0).reconstruct(op(torch.zeros(1, 1, 4, 4)), op,
    ...                                                                        n_samples=4, progress=False)
    >>> r.mean.shape, r.samples.shape, r.nfe
    (torch.Size([1, 1, 4, 4]), torch.Size([4, 1, 1, 4, 4]), 20)
    """

    def __init__(self, prior, particles: int = 16, steps: int = 200, proposal: str = "gaussian",
                 ess_threshold: float = 0.5, prior_std: float | str = "auto", noise_std: float | None = None,
                 sigma_min: float | None = None, sigma_max: float | None = None, rho: float = 7.0,
                 cg_iters: int = 50, cg_tol: float = 1e-10, device: str | torch.device | None = None,
                 split_particles: bool = True):
        super().__init__(prior, particles, steps, ess_threshold, noise_std, sigma_min, sigma_max, rho, cg_iters,
                         cg_tol, device, split_particles)
        if proposal not in _PROPOSALS:
            raise ValueError(f"proposal: expected one of {_PROPOSALS}, got {proposal!r}")
        self.proposal = proposal
        self.prior_std = prior_std_of(prior, prior_std)

    def _loop(self, ctx: Context, sigmas: Tensor, progress: bool, B: int, N: int) -> tuple[Tensor, Tensor]:
        """Stage I, then Stage II: 1. Tweedie estimate and tilt, 2. weight, 3. resample, 4. move."""
        dt, dev = torch.float64, ctx.yN.device
        zero = torch.zeros(B * N, *ctx.img, dtype=dt, device=dev)
        R2 = self.sigma_max**2 + self.prior_std**2
        st = AFDPSState(x=sum(ctx.gs.draw(zero, ctx.yN, ctx.yN, R2, 1.0, ctx.s2, ctx.rng)),  # Stage I: exact start
                        log_w=torch.zeros(B, N, dtype=dt, device=dev))
        c = torch.full((B,), self.prior_std**2, dtype=dt, device=dev).sqrt()
        for k in tqdm(range(self.steps), disable=not progress, desc="AFDPS"):
            sigma, sigma_next = float(sigmas[k]), float(sigmas[k + 1])
            h, kappa = sigma**2 - sigma_next**2, sigma_next**2 / sigma**2
            # 1. Tweedie estimate and the tilt at the particle
            x0_hat = self.denoise(st.x, sigma)
            r = ctx.yN - ctx.op.A(st.x).to(dt)  # y - A x_k: the tilt, and the Euler step's grad mu_y
            log_tilt = -0.5 * sqnorm(r) / ctx.s2  # ctx.log_lik(st.x)
            self.check_iterate("x0_hat", x0_hat, k)
            # 2. weight of the coming move, a function of x_k only (none before the last, deterministic, move)
            m_next = None
            if sigma_next > 0:
                m_next, inc = self._weight(ctx, st.x, x0_hat, r, log_tilt, sigma, h, kappa)
                st.log_w = st.log_w + inc.reshape(B, N)
            # 3. resample
            st.log_w, ess_k, do, (st.x, x0_hat, log_tilt, m_next) = self._resample(st.log_w, ctx.g, st.x, x0_hat,
                                                                                   log_tilt, m_next, split=ctx.split)
            ctx.record(k, sigma, st.x, x0_hat, st.log_w, ess_k, do, c)
            # 4. move; fresh noise after resampling, so that copies of a particle part ways
            if sigma_next == 0:  # deterministic Tweedie step, reweighted by the exact likelihood
                st.x = x0_hat
                st.log_w = st.log_w + (ctx.log_lik(st.x) - log_tilt).reshape(B, N)
            elif self.proposal == "gaussian":
                st.x = m_next + ctx.gs.noise(st.x, ctx.yN, kappa * h, 1.0, ctx.s2, ctx.rng)
            else:
                st.x = m_next + math.sqrt(h) * ctx.randn(st.x)
            self.check_iterate("x", st.x, k)
        return st.x, st.log_w

    def _weight(self, ctx: Context, x: Tensor, x0_hat: Tensor, r: Tensor, log_tilt: Tensor, sigma: float, h: float,
                kappa: float) -> tuple[Tensor, Tensor]:
        """2. Mean of the coming move and the log-weight increment (module docstring), per particle; ``r`` is
        ``y - A x``, ``log_tilt`` its ``-|r|^2 / (2 s^2)``."""
        op, yN, s2, dt = ctx.op, ctx.yN, ctx.s2, torch.float64
        if self.proposal == "gaussian":  # the mu_y part of the step integrated exactly
            m = x0_hat + kappa * (x - x0_hat)  # ancestral mean, variance kappa h
            m_next, log_Z = ctx.gs.mean(m, yN - op.A(m).to(dt), kappa * h, 1.0, s2)
            return m_next, log_Z - log_tilt
        score = (x0_hat - x) / sigma**2  # literal Euler-Maruyama of the PDE
        grad_mu = -op.A_adjoint(r).to(dt) / s2
        return x + h * (score - grad_mu), h * (0.5 * sqnorm(grad_mu) - dot(score, grad_mu))
