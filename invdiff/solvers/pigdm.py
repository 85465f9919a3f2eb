"""The pseudoinverse-guided Tweedie estimate (PiGDM): a data correction of ``x0_hat`` through the network's Jacobian.

Song, Vahdat, Mardani, Kautz, "Pseudoinverse-Guided Diffusion Models for Inverse Problems", ICLR 2023
(Pi-GDM). Given ``x = x0 + sigma n`` the network's Tweedie estimate ``x0_hat = D(x, sigma)`` is ``E[x0 | x]``, and
Tweedie's second-order formula gives ``Cov[x0 | x] = sigma^2 J`` with ``J = d x0_hat / d x``. Pi-GDM approximates
``p(x0 | x)`` by a Gaussian around ``x0_hat`` of covariance ``r^2 I`` inside the likelihood, so that
``p(y | x) ~ N(A x0_hat, r^2 A A^T + sigma_y^2 I)``, and moves the estimate along ``sigma^2 grad_x log p(y | x)``::

    u        = (r^2 A A^T + sigma_y^2 I)^{-1} (y - A x0_hat)            (CG in measurement space, no network call)
    x0_tilde = x0_hat + zeta sigma^2 J^T A^T u                            (one vector-Jacobian product)
    r^2      = sigma^2 v / (sigma^2 + v)                                  (v: the data variance, sigma_data^2)

``r^2`` is the paper's ``r_t^2 = sigma_t^2 / (1 + sigma_t^2)`` for data of variance ``v`` (the paper's data have
``v = 1``). For a Gaussian prior ``N(m, v I)``, ``sigma^2 J = r^2 I`` and ``x0_tilde`` with ``zeta = 1`` is the exact
conditional mean ``E[x0 | x, y]`` (Gaussian conditioning); for a learned prior the Jacobian carries the
observed pixels' residual to the pixels the operator does not see, which the isotropic data step of DDS
(a proximal step around ``x0_hat``) leaves where the network put them. The paper writes the step with the pseudoinverse
``A^+``; the CG solve above is the same Gaussian likelihood without assuming ``A A^T = I``.

Cost: the network call keeps its graph for one backward pass (about three times the time of a plain call; counted
as one network call, as DPS's).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from invdiff.solvers.cg import cg


def pigdm_variance(sigma: float, data_var: float) -> float:
    """``r^2 = sigma^2 v / (sigma^2 + v)``: the variance of ``x0 | x`` for data of variance ``v`` (isotropic)."""
    s2 = float(sigma) ** 2
    return s2 * data_var / (s2 + data_var)


def pigdm_data_var(prior) -> float:
    """``v`` of ``r^2``: the prior's ``sigma_data ** 2``, or EDM's ``0.5 ** 2`` (data in ``[0, 1]``) for a prior that
    states no ``sigma_data``."""
    s = getattr(prior, "sigma_data", None)
    return float(0.5 if s is None else s) ** 2


def pigdm_estimate(denoise: Callable[..., Tensor], x: Tensor, sigma: float, y: Tensor, op, sigma_y: float,
                   data_var: float, zeta: float = 1.0, cg_iters: int = 20) -> tuple[Tensor, Tensor]:
    """``(x0_tilde, x0_hat)``: the Pi-GDM-corrected Tweedie estimate and the network's own (module docstring).

    ``denoise(x, sigma, grad=True)`` must keep the graph (:meth:`invdiff.solvers.base.Solver.denoise`); ``op`` is a
    linear operator with ``A`` and ``A_adjoint`` (applied outside autograd, so it needs no backward of its own);
    ``sigma_y = 0`` (a noiseless operator) is allowed, since ``r^2 > 0``; ``cg_iters`` CG iterations solve the measurement-space system.
    """
    r2 = pigdm_variance(sigma, data_var)
    sy2 = float(sigma_y) ** 2
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        x0_graph = denoise(xg, sigma, grad=True)
    x0_hat = x0_graph.detach()
    # the operator stays outside the graph: J^T (A^T u) is the same product as the gradient of <A x0_hat, u>
    u = cg(lambda v: r2 * op.A(op.A_adjoint(v)) + sy2 * v, y - op.A(x0_hat), iters=cg_iters)
    (g,) = torch.autograd.grad(x0_graph, xg, grad_outputs=op.A_adjoint(u).to(x0_graph.dtype))
    return x0_hat + (zeta * float(sigma) ** 2) * g.to(x0_hat.dtype), x0_hat
