r"""The Gaussian steps of the SMC sampler, by conjugate gradients on batches of particles.

Each step is a Gaussian ``N(x'; m, v2 I)`` times a linear-Gaussian likelihood ``exp(-|b - a A x'|^2 / (2 S))``,
given through the residual ``r = b - a A m``. Its precision and mean are::

    P = I / v2 + a^2 A^T A / S,        mu = m + P^{-1} a A^T r / S

and its log-normaliser, up to a constant that is the same for all particles, is (Woodbury)::

    log Z = -1/2 r^T (S I + a^2 v2 A A^T)^{-1} r = -1/2 [|r|^2 - a <A^T r, mu - m>] / S

``v2``, ``a``, ``S`` are floats or per-particle ``(n,)`` tensors. Draws use perturb-and-solve:
``P eps = zeta / sqrt(v2) + a A^T xi / sqrt(S)`` with ``zeta, xi ~ N(0, I)`` gives ``eps ~ N(0, P^{-1})``;
``g`` is a ``torch.Generator`` or per-particle streams (:func:`randn`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from invdiff.solvers.cg import cg
from invdiff.utils import append_dims


def sqnorm(x: Tensor) -> Tensor:
    """Per-row ``|x_i|^2``, shape ``(n,)``."""
    return (x * x).flatten(1).sum(1)


def dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-row ``<a_i, b_i>``, shape ``(n,)``."""
    return (a * b).flatten(1).sum(1)


def col(v: Tensor | float, like: Tensor) -> Tensor | float:
    """A per-row ``(n,)`` tensor as ``(n, 1, ..., 1)`` to broadcast against ``like``; a float as is."""
    return append_dims(v, like.ndim) if torch.is_tensor(v) else v


def _sqrt(v: Tensor | float) -> Tensor | float:
    return v.sqrt() if torch.is_tensor(v) else math.sqrt(v)


def randn(shape, g, like: Tensor) -> Tensor:
    """Standard normal draws of ``like``'s dtype and device from ``g``: a ``torch.Generator``, or per-row streams
    (an object with ``randn(shape, dtype, device)``, e.g. :class:`invdiff.distributed.particles.ParticleStreams`)."""
    if isinstance(g, torch.Generator):
        return torch.randn(shape, generator=g, dtype=like.dtype, device=like.device)
    return g.randn(shape, dtype=like.dtype, device=like.device)


@dataclass(frozen=True)
class GaussianSteps:
    """The Gaussian steps for operator ``op``, each solve by ``iters`` CG iterations (tolerance ``tol``)."""

    op: object
    iters: int
    tol: float

    def _cg(self, apply_fn: Callable[[Tensor], Tensor], b: Tensor) -> Tensor:
        return cg(apply_fn, b, None, iters=self.iters, tol=self.tol)

    def precision(self, v2, a, S) -> Callable[[Tensor], Tensor]:
        """``u -> P u`` with ``P = I / v2 + a^2 A^T A / S``."""
        op = self.op
        return lambda u: u / col(v2, u) + col(a * a / S, u) * op.A_adjoint(op.A(u)).to(u.dtype)

    def mean(self, m: Tensor, r: Tensor, v2, a, S) -> tuple[Tensor, Tensor]:
        """Mean ``mu`` and ``log Z`` (module docstring)."""
        Atr = self.op.A_adjoint(r).to(m.dtype)
        mu = m + self._cg(self.precision(v2, a, S), col(a / S, m) * Atr)
        log_Z = -0.5 * (sqnorm(r) - a * dot(Atr, mu - m)) / S
        return mu, log_Z

    def noise(self, like: Tensor, y: Tensor, v2, a, S, g: torch.Generator) -> Tensor:
        """``eps ~ N(0, P^{-1})`` shaped like ``like`` (``y``: a measurement-shaped tensor)."""
        zeta, xi = randn(like.shape, g, like), randn(y.shape, g, like)
        b = zeta / col(_sqrt(v2), like) + col(a / _sqrt(S), like) * self.op.A_adjoint(xi).to(like.dtype)
        return self._cg(self.precision(v2, a, S), b)

    def draw(self, m: Tensor, r: Tensor, y: Tensor, v2, a, S, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """Mean and a zero-mean draw of the same step (:meth:`mean`, :meth:`noise`) in one CG."""
        op = self.op
        zeta, xi = randn(m.shape, g, m), randn(y.shape, g, m)
        b_mean = col(a / S, m) * op.A_adjoint(r).to(m.dtype)
        b_noise = zeta / col(_sqrt(v2), m) + col(a / _sqrt(S), m) * op.A_adjoint(xi).to(m.dtype)
        two = (lambda v: torch.cat([v, v]) if torch.is_tensor(v) else v)
        d_mean, eps = self._cg(self.precision(two(v2), two(a), two(S)), torch.cat([b_mean, b_noise])).chunk(2)
        return m + d_mean, eps

    def quad(self, r: Tensor, s2: float, t2: Tensor) -> tuple[Tensor, Tensor]:
        """``q = r^T G^{-1} r`` and ``u = G^{-1} r``, ``G = s2 I + t2 A A^T`` (per-row ``t2``; ``s2`` a float or
        per-row, as the tempered SMC passes it), CG on measurements."""
        op = self.op
        u = self._cg(lambda v: col(s2, v) * v + col(t2, v) * op.A(op.A_adjoint(v)).to(v.dtype), r)
        return dot(r, u), u
