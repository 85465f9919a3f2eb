r"""MCMC rejuvenation for the Tweedie-tilted SMC: Langevin moves with the tilted target after resampling.

After resampling, an ensemble holds copies of few ancestors; its spread, and so its per-pixel intervals,
shrink. A Markov kernel that leaves the step's target invariant moves the copies apart without changing the
weights (resample-move, Gilks and Berzuini, JRSS-B 2001; Chopin, Biometrika 2002). The target of step ``k``
of :class:`invdiff.solvers.SMC` is (:mod:`invdiff.solvers.tweedie_smc`)::

    pi_k(x) ∝ p_{sigma_k}(x) y~_k(x),   log y~_k(x) = -1/2 r^T G_k^{-1} r,   r = y - A D(x, sigma_k),
    G_k = s^2 I + tau_k^2 A A^T

with gradient (Tweedie: ``grad log p_sigma = (D(x, sigma) - x) / sigma^2``; ``J = dD/dx``)::

    grad log pi_k(x) = (D(x, sigma_k) - x) / sigma_k^2 + J^T A^T G_k^{-1} r

The move is unadjusted Langevin (ULA), ``n_moves`` times::

    x <- x + eps grad log pi_k(x) + sqrt(2 eps) z,   eps = step sigma_k^2,   z ~ N(0, I)

A Metropolis test (MALA) would need ``log p_{sigma_k}(x)``, which a denoiser does not give, so the moves are
unadjusted: their stationary law is ``pi_k`` up to an error of order ``eps``. Step size: the curvature of
``-log pi_k`` is at most about ``1 / sigma^2`` from the prior part and ``tau^2 / sigma^4 <= 1 / sigma^2``
from the tilt (``J ≈ tau^2 / sigma^2``, ``G >= tau^2 A A^T``), so ``step < 1`` keeps ULA stable.
``jacobian="autograd"`` back-propagates through the network for ``J^T``; ``"isotropic"`` uses the
surrogate's ``J ≈ (tau_k^2 / sigma_k^2) I`` (no backward pass, the approximation the SMC's proposal makes).

Cost per move: one network call on the ensemble (plus its backward with ``"autograd"``), and one more to
re-evaluate ``D`` and the tilt at the moved particles; ``"isotropic"`` takes the first move's ``D`` from the
SMC's step (the particles have not moved yet), so ``n_moves`` calls in all instead of ``n_moves + 1``. The weights are left as they are (the kernel is
``pi_k``-invariant up to the ULA error), so a resampled ensemble keeps equal weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from invdiff.solvers.presets.smc import MOVES
from invdiff.solvers.smc_gauss import col
from invdiff.validate import check_positive_float, check_positive_int

__all__ = ["LangevinMoves", "with_moves"]

_JACOBIANS = ("autograd", "isotropic")


@dataclass(frozen=True)
class LangevinMoves:
    """ULA moves with the tilted target of the step, applied to the ensembles that were just resampled.

    Parameters
    ----------
    n_moves : int
        Langevin moves per rejuvenation.
    step : float
        ``eps = step * sigma_k^2``; in (0, 1) for a stable move (module docstring).
    jacobian : {"autograd", "isotropic"}
        ``J^T`` of the tilt's gradient: back-propagated through the network, or the surrogate's ``tau^2 / sigma^2``.
    max_sigma : float
        Only rejuvenate at ``sigma_k <= max_sigma`` (at large sigma the proposal mixes by itself).
    always : bool
        Move after every step, resampled or not (the weights stay valid: the move is ``pi_k``-invariant).
    """

    n_moves: int = 1
    step: float = 0.3
    jacobian: str = "autograd"
    max_sigma: float = math.inf
    always: bool = False

    def __post_init__(self):
        check_positive_int("n_moves", self.n_moves)
        check_positive_float("step", self.step)
        if not self.step < 1:
            raise ValueError(f"step: expected a number in (0, 1) (eps = step * sigma^2), got {self.step!r}")
        if self.jacobian not in _JACOBIANS:
            raise ValueError(f"jacobian: expected one of {_JACOBIANS}, got {self.jacobian!r}")
        if not (isinstance(self.max_sigma, (int, float)) and self.max_sigma > 0):
            raise ValueError(f"max_sigma: expected a positive number (inf: every step), got {self.max_sigma!r}")

    def __call__(self, smc, ctx, x: Tensor, x0_hat: Tensor, tau2: Tensor, log_tilt: Tensor, sigma: float,
                 resampled: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Move the particles of the ensembles flagged in ``resampled`` ``(B,)``; returns ``x``, ``D(x, sigma)``
        and ``log y~_k(x)`` at the moved particles (unchanged rows elsewhere)."""
        if sigma > self.max_sigma or not (self.always or bool(resampled.any())):
            return x, x0_hat, log_tilt
        N = x.shape[0] // resampled.shape[0]
        rows = (torch.ones_like(resampled) if self.always else resampled).repeat_interleave(N)
        eps = self.step * sigma**2
        x_new, x0 = x, x0_hat  # D(x, sigma) is known at the start: the isotropic gradient reuses it
        for _ in range(self.n_moves):
            grad = self._grad_log_target(smc, ctx, x_new, tau2, sigma, x0)
            x0 = None
            z = ctx.randn(x)  # the particles' own streams: the same draws whatever the number of ranks
            x_new = x_new + eps * grad + math.sqrt(2 * eps) * z
        # D and the tilt at the moved particles (what the next move and weight of the SMC need)
        x0_new = smc.denoise(x_new, sigma)
        r = ctx.yN - ctx.op.A(x0_new).to(x.dtype)
        q, _ = ctx.gs.quad(r, ctx.s2, tau2)
        keep = col(rows, x)
        return (torch.where(keep, x_new, x), torch.where(keep, x0_new, x0_hat),
                torch.where(rows, -0.5 * q, log_tilt))

    def _grad_log_target(self, smc, ctx, x: Tensor, tau2: Tensor, sigma: float, x0: Tensor | None = None) -> Tensor:
        """``(D(x, sigma) - x) / sigma^2 + J^T A^T G^{-1} (y - A D(x, sigma))``; ``x0``: ``D(x, sigma)`` if known
        (used by ``"isotropic"`` only: ``"autograd"`` needs the network's graph)."""
        exact = self.jacobian == "autograd"
        with torch.set_grad_enabled(exact):
            xg = x.detach().requires_grad_(exact)
            if exact or x0 is None:
                x0 = smc.denoise(xg, sigma, grad=exact)
            r = ctx.yN - ctx.op.A(x0).to(x.dtype)
            _, u = ctx.gs.quad(r.detach(), ctx.s2, tau2)  # u = G^{-1} r
            if exact:  # d/dx of -1/2 r^T G^{-1} r = J^T A^T u
                lik = torch.autograd.grad(-(r * u).sum(), xg)[0]
            else:
                lik = col(tau2 / sigma**2, x) * ctx.op.A_adjoint(u).to(x.dtype)
        return (x0.detach() - x) / sigma**2 + lik


def with_moves(solver, moves: LangevinMoves | int | dict | str):
    """``solver`` (an :class:`invdiff.solvers.SMC`) with MCMC rejuvenation: ``moves`` is a
    :class:`LangevinMoves`, a number of moves, its keyword arguments, or ``"calibrated"``: the preset
    :data:`invdiff.solvers.presets.smc.MOVES` (3 isotropic-Jacobian moves at step 0.9, chosen for calibrated
    intervals on in-distribution CT and MRI; its provenance is ``MOVES.provenance``). Returns the same object, with
    its ensemble size unchanged: the constructor's ``SMC(prior, moves="calibrated")`` also takes the 32 particles
    those intervals were measured with (:data:`invdiff.solvers.presets.smc.CALIBRATED`)."""
    if isinstance(moves, str):
        if moves != "calibrated":
            raise ValueError(f"moves: expected 'calibrated' (the preset), a LangevinMoves, an int or a dict, "
                             f"got {moves!r}")
        moves = dict(MOVES.params)
    if isinstance(moves, bool) or not isinstance(moves, (LangevinMoves, int, dict)):
        raise TypeError(f"moves: expected a LangevinMoves, an int or a dict of its arguments, got {moves!r}")
    if getattr(solver, "proposal", None) == "gradient":
        raise ValueError("moves: the rejuvenation re-evaluates D and the tilt but not the gradient proposal's "
                         "gradient; use proposal='gaussian' or 'prior'")
    if isinstance(moves, int):
        moves = LangevinMoves(n_moves=moves)
    elif isinstance(moves, dict):
        moves = LangevinMoves(**moves)
    solver.moves = moves
    return solver
