r"""Adaptive tempering of the likelihood for the Tweedie-tilted SMC (:class:`invdiff.solvers.SMC`).

Why: on 64x64 CT and MRI the tilt ``y~_k`` is sharp (noise ``s`` of 1 % of the data) while the Gaussian surrogate
behind the proposal is isotropic, so the incremental log-weights ``log y~_{k+1}(x') - log y~lin(x')`` spread over
several units and the ensemble resamples at nearly every step (``python -m invdiff.bench.smc_weights``).

What: an annealed likelihood. With an exponent ``beta in (0, 1]`` the measurement is taken as if its noise variance
were ``s^2 / beta`` (``N(y; A x0, s^2 I)^beta`` up to a constant), so the intermediate targets of the SMC become::

    pi_k^beta(x) ∝ p_{sigma_k}(x) y~_k^beta(x),
    log y~_k^beta(x) = -1/2 r^T G_beta^{-1} r,   G_beta = (s^2 / beta) I + tau_k^2 A A^T,   r = y - A D(x, sigma_k)

and every piece of the sampler (tilt, Gaussian proposal, surrogate weight, Langevin moves) runs with ``s^2 / beta``
in place of ``s^2``. Each ensemble carries its own ``beta``. At step ``k``, after the weight of the move into
``x_k`` (exact for ``pi_k^beta``), the exponent is raised to ``beta'`` with the tempering weight (Neal's AIS /
Del Moral, Doucet, Jasra 2006, SMC samplers with ``pi_k^beta -> pi_k^beta'`` at fixed ``x_k``)::

    log w_i += delta_i = log y~_k^beta'(x_k,i) - log y~_k^beta(x_k,i) = -1/2 (r_i^T G_beta'^{-1} r_i - r_i^T G_beta^{-1} r_i)

which leaves the weighted ensemble a proper importance sample of ``pi_k^beta'``. ``beta'`` is the largest value in
``[beta, 1]`` whose conditional ESS (Zhou, Johansen, Aston, JCGS 2016) stays at ``cess`` or above::

    CESS(beta') = (sum_i W_i exp(delta_i))^2 / sum_i W_i exp(2 delta_i)   (W the normalised weights)

found by bisection on ``log beta'``. At the last step (``sigma_{k+1} = 0``) ``beta' = 1`` whatever the CESS, so the
final reweighting ``exp(-mu_y(x_K)) / y~_{K-1}^1(x_{K-1})`` and hence the target ``p_0(x) N(y; A x, s^2 I)`` are the
exact ones; ``ramp`` adds a floor ``beta' >= ((k + 1) / (ramp K))`` so that the exponent is 1 from step ``ramp K`` on
(``ramp=None``: no floor); ``growth`` caps ``beta' <= growth beta`` (a geometric anneal at most that fast).

How ``delta`` is cheap for every candidate ``beta'``: ``r^T (c I + tau^2 M)^{-1} r`` for all shifts ``c`` comes from one
Lanczos run of ``m`` steps on ``M = A A^T`` started at ``r`` (Golub and Meurant, Gauss quadrature): with the
tridiagonal ``T_m``, ``r^T (c I + tau^2 M)^{-1} r ≈ |r|^2 e_1^T (c I + tau^2 T_m)^{-1} e_1``, which is what ``m``
iterations of CG give for each shift. Cost: ``m`` products with ``A A^T`` per particle and step (``m = cg_iters``),
no network call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from invdiff.solvers.smc_gauss import dot, sqnorm
from invdiff.validate import check_positive_float, check_unit_interval

__all__ = ["Tempering", "as_tempering", "lanczos", "shifted_quad"]


def lanczos(op, r: Tensor, m: int) -> tuple[Tensor, Tensor, Tensor]:
    """``m`` Lanczos steps of ``M = A A^T`` from each row of ``r`` (measurements, ``(n, ...)``).

    Returns ``alpha (n, m)``, ``beta (n, m - 1)`` (the tridiagonal ``T_m``) and ``|r|^2 (n,)``. A row whose Krylov
    space is exhausted (``beta_j ~ 0``, e.g. a mask, where ``M`` is a projection) gets ``alpha = beta = 0`` from there
    on, a block that decouples from ``e_1``.
    """
    dt = r.dtype
    n = r.shape[0]
    nr2 = sqnorm(r)
    v = r / nr2.clamp_min(1e-300).sqrt().reshape(-1, *([1] * (r.ndim - 1)))
    v_prev = torch.zeros_like(v)
    alive = nr2 > 0
    alphas, betas = [], []
    b_prev = torch.zeros(n, dtype=dt, device=r.device)
    scale = None
    for j in range(m):
        w = op.A(op.A_adjoint(v)).to(dt) - b_prev.reshape(-1, *([1] * (r.ndim - 1))) * v_prev
        a = dot(w, v)
        w = w - a.reshape(-1, *([1] * (r.ndim - 1))) * v
        alphas.append(torch.where(alive, a, torch.zeros_like(a)))
        if j == m - 1:
            break
        b = sqnorm(w).sqrt()
        scale = a.abs() if scale is None else torch.maximum(scale, a.abs())
        alive = alive & (b > 1e-10 * scale.clamp_min(1e-300))
        b = torch.where(alive, b, torch.zeros_like(b))
        betas.append(b)
        v_prev, v = v, torch.where(alive.reshape(-1, *([1] * (r.ndim - 1))),
                                   w / b.clamp_min(1e-300).reshape(-1, *([1] * (r.ndim - 1))), torch.zeros_like(w))
        b_prev = b
    alpha = torch.stack(alphas, 1)
    beta = torch.stack(betas, 1) if betas else alpha.new_zeros(n, 0)
    return alpha, beta, nr2


def shifted_quad(alpha: Tensor, beta: Tensor, nr2: Tensor, c: Tensor, t2: Tensor) -> Tensor:
    """``|r|^2 e_1^T (c I + t2 T)^{-1} e_1`` per row and candidate: ``c`` ``(n, J)``, ``t2`` ``(n,)`` -> ``(n, J)``.

    By the continued fraction of the tridiagonal matrix ``J = c I + t2 T`` (diagonal ``d_j = c + t2 alpha_j``,
    off-diagonal ``t2 beta_j``): ``f_m = d_m``, ``f_j = d_j - (t2 beta_j)^2 / f_{j+1}``, ``e_1^T J^{-1} e_1 = 1 / f_1``
    (all ``f_j > 0`` for a positive definite ``J``).
    """
    m = alpha.shape[1]
    t = t2[:, None]
    f = c + t * alpha[:, m - 1:m]
    for j in range(m - 2, -1, -1):
        f = c + t * alpha[:, j:j + 1] - (t * beta[:, j:j + 1]) ** 2 / f
    return nr2[:, None] / f


@dataclass(frozen=True)
class Tempering:
    """Adaptive likelihood tempering (module docstring): options of :class:`invdiff.solvers.SMC`.

    Parameters
    ----------
    cess : float
        Conditional ESS fraction in (0, 1) each raise of the exponent keeps.
    beta_start : float
        Exponent of the first target (``> 0``; small: nearly the prior).
    ramp : float or None
        Floor ``beta >= (k + 1) / (ramp K)``: the exponent reaches 1 by step ``ramp K`` (``None``: only the CESS and
        the last step decide).
    growth : float or None
        Cap ``beta' <= growth beta`` per step (``None``: no cap): a slower, fixed-rate anneal where the CESS would
        allow a jump.
    bisections : int
        Bisection steps on ``log beta``.
    """

    cess: float = 0.5
    beta_start: float = 1e-3
    ramp: float | None = None
    growth: float | None = None
    bisections: int = 20

    def __post_init__(self):
        check_unit_interval("cess", self.cess)
        check_positive_float("beta_start", self.beta_start)
        if not self.beta_start <= 1:
            raise ValueError(f"beta_start: expected a number in (0, 1], got {self.beta_start!r}")
        if self.ramp is not None and not (isinstance(self.ramp, (int, float)) and 0 < self.ramp <= 1):
            raise ValueError(f"ramp: expected None or a number in (0, 1], got {self.ramp!r}")
        if self.growth is not None and not (isinstance(self.growth, (int, float)) and self.growth > 1):
            raise ValueError(f"growth: expected None or a number > 1, got {self.growth!r}")
        if isinstance(self.bisections, bool) or not isinstance(self.bisections, int) or self.bisections < 1:
            raise ValueError(f"bisections: expected a positive integer, got {self.bisections!r}")

    def advance(self, ctx, log_w: Tensor, beta: Tensor, r: Tensor, tau2: Tensor, s2: float, iters: int,
                k: int, steps: int, last: bool) -> tuple[Tensor, Tensor, Tensor]:
        """Raise each ensemble's exponent ``beta`` ``(B,)`` at the particles whose residuals are ``r``; returns the
        new ``beta``, ``log_w + delta`` and ``delta`` (per particle ``(B * n,)``, to add to ``log y~_k``)."""
        B, n = log_w.shape
        if last:
            target = torch.ones_like(beta)
        else:
            target = None
        alpha, tri, nr2 = lanczos(ctx.op, r, iters)
        row = lambda t: t.repeat_interleave(n)  # noqa: E731  per ensemble -> per local particle

        def q_of(b: Tensor) -> Tensor:  # r^T G_b^{-1} r per particle, b (B, J)
            return shifted_quad(alpha, tri, nr2, s2 / b.repeat_interleave(n, 0), tau2)

        q_now = q_of(beta[:, None])[:, 0]

        def delta_of(b: Tensor) -> Tensor:  # (B * n,)
            return -0.5 * (q_of(b[:, None])[:, 0] - q_now)

        if target is None:
            floor = beta.clone()
            if self.ramp is not None:
                floor = torch.maximum(floor, torch.full_like(beta, min(1.0, (k + 1) / (self.ramp * steps))))
            top = torch.ones_like(beta) if self.growth is None else (beta * self.growth).clamp(max=1.0)
            top = torch.maximum(top, floor)
            ok1 = self._cess(log_w, delta_of(top), ctx) >= self.cess
            lo, hi = floor.log(), top.log()
            for _ in range(self.bisections):
                mid = 0.5 * (lo + hi)
                good = self._cess(log_w, delta_of(mid.exp()), ctx) >= self.cess
                lo, hi = torch.where(good, mid, lo), torch.where(good, hi, mid)
            target = torch.where(ok1, top, torch.maximum(lo.exp(), floor))
        delta = delta_of(target)
        return target, log_w + delta.reshape(B, n), delta

    @staticmethod
    def _cess(log_w: Tensor, delta: Tensor, ctx) -> Tensor:
        """Conditional ESS fraction per ensemble (all ranks' particles)."""
        B = log_w.shape[0]
        lw = log_w if ctx.split is None else ctx.split.gather(log_w)
        d = delta.reshape(B, -1) if ctx.split is None else ctx.split.gather(delta.reshape(B, -1))
        W = torch.softmax(lw, -1)
        dm = d.max(-1, keepdim=True).values
        u = (d - dm).exp()
        return (W * u).sum(-1) ** 2 / (W * u * u).sum(-1).clamp_min(1e-300)


def as_tempering(value) -> Tempering | None:
    """The ``tempering`` argument of :class:`invdiff.solvers.SMC`: ``None``, a :class:`Tempering`, its keyword
    arguments, or a number (its ``cess``)."""
    if value is None or isinstance(value, Tempering):
        return value
    if isinstance(value, dict):
        return Tempering(**value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Tempering(cess=float(value))
    raise TypeError(f"tempering: expected None, a Tempering, a dict of its arguments or a number (its cess), "
                    f"got {value!r}")
