"""Total variation along z and its ADMM step, shared by DiffusionMBIR and DDS on volumes.

Chung, Ryu, McCann, Klasky, Ye, "Solving 3D Inverse Problems using Pre-trained 2D Diffusion Models",
CVPR 2023 (github.com/HJ-harry/DiffusionMBIR, ``controllable_generation_TV.py``). The 2D prior covers
the in-plane directions; the volume is tied together across slices by an anisotropic TV term along the
depth axis only. With a data term ``F(x) = 1/2 x^T M x - b^T x`` (``M = A^T A``, ``b = A^T y`` for plain
least squares; DDS adds ``|x - x0_hat|^2 / (2 gamma)``) the problem

    min_x  F(x) + lam |D_z x|_1,        split as   D_z x = z,

is solved by scaled ADMM, one iteration per diffusion step, with ``z`` and the scaled dual ``u``
carried over from step to step::

    x <- argmin F(x) + rho/2 |D_z x - z + u|^2    i.e.  (M + rho D_z^T D_z) x = b + rho D_z^T (z - u)
                                                   (a few conjugate-gradient iterations from the iterate)
    z <- soft(D_z x + u, lam / rho)
    u <- u + D_z x - z

``D_z`` is the forward difference between neighbouring slices, ``(D_z x)_k = x_{k+1} - x_k`` for
``k = 0 .. D-2`` (``D - 1`` differences). The official code uses a circular difference, which also
couples the last slice to the first; a volume has no such neighbour, so the wrap-around is dropped here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from invdiff.solvers.cg import cg

_Z = -3  # depth axis of (B, C, D, H, W)


def _check_volume(name: str, x: Tensor) -> None:
    if x.ndim != 5:
        raise ValueError(f"{name}: expected a volume (B, C, D, H, W), got shape {tuple(x.shape)}")


def D_z(x: Tensor) -> Tensor:
    """Forward difference along depth: ``(D_z x)_k = x_{k+1} - x_k``, ``(B, C, D, H, W) -> (B, C, D-1, H, W)``.

    >>> D_z(torch.arange(3.0).reshape(1, 1, 3, 1, 1)).flatten().tolist()
    [1.0, 1.0]
    """
    _check_volume("x", x)
    return x.narrow(_Z, 1, x.shape[_Z] - 1) - x.narrow(_Z, 0, x.shape[_Z] - 1)


def D_zT(v: Tensor) -> Tensor:
    """The exact adjoint of :func:`D_z`: ``(D_z^T v)_k = v_{k-1} - v_k`` with ``v_{-1} = v_{D-1} = 0``.

    ``(B, C, D-1, H, W) -> (B, C, D, H, W)``.
    """
    _check_volume("v", v)
    pad = torch.zeros_like(v.narrow(_Z, 0, 1))
    return torch.cat([pad, v], _Z) - torch.cat([v, pad], _Z)


def soft_threshold(v: Tensor, tau: float | Tensor) -> Tensor:
    """``soft(v, tau) = sign(v) max(|v| - tau, 0)``: the proximal map of ``tau |.|_1``.

    >>> soft_threshold(torch.tensor([-2.0, -0.5, 0.5, 3.0]), 1.0).tolist()
    [-1.0, -0.0, 0.0, 2.0]
    """
    if not torch.is_tensor(tau) and tau < 0:
        raise ValueError(f"tau: expected a non-negative threshold, got {tau!r}")
    return torch.sign(v) * (v.abs() - tau).clamp_min(0)


@dataclass
class ADMMTVz:
    """State and step of the ADMM-TV_z iteration (``z`` and ``u`` persist across calls).

    Parameters
    ----------
    lam : float
        TV weight ``lambda`` (the official CT setting is 0.04 with their projector's scaling).
        ``0`` switches the TV term off: :meth:`step` then runs the conjugate-gradient data update alone,
        on ``M x = b`` (no ``rho D_z^T D_z`` term, no ``z``/``u``).
    rho : float
        ADMM penalty ``rho`` (official CT: 10).
    cg_iters : int
        Conjugate-gradient iterations of the x-update (official: 1 for DiffusionMBIR, 5 for DDS).
    z, u : Tensor or None
        Split variable and scaled dual, ``(B, C, D-1, H, W)``; zeros on the first step.
    """

    lam: float
    rho: float
    cg_iters: int = 1
    z: Tensor | None = None
    u: Tensor | None = None

    @property
    def active(self) -> bool:
        return self.lam > 0

    def x_update(self, x: Tensor, M: Callable[[Tensor], Tensor], b: Tensor) -> Tensor:
        """``cg_iters`` CG iterations from ``x`` on ``(M + rho D_z^T D_z) x = b + rho D_z^T (z - u)``."""
        if not self.active:
            return cg(M, b, x0=x, iters=self.cg_iters)
        if self.z is None:
            self.z = torch.zeros_like(D_z(x))
            self.u = torch.zeros_like(self.z)
        rho = self.rho
        rhs = b + rho * D_zT(self.z - self.u)
        return cg(lambda v: M(v) + rho * D_zT(D_z(v)), rhs, x0=x, iters=self.cg_iters)

    def zu_update(self, x: Tensor) -> None:
        """``z <- soft(D_z x + u, lam / rho)``, ``u <- u + D_z x - z``."""
        if not self.active:
            return
        dz = D_z(x)
        self.z = soft_threshold(dz + self.u, self.lam / self.rho)
        self.u = self.u + dz - self.z

    def step(self, x: Tensor, M: Callable[[Tensor], Tensor], b: Tensor) -> Tensor:
        """One ADMM iteration (x-update, z-update, dual update) started at ``x``; returns the new ``x``."""
        x = self.x_update(x, M, b)
        self.zu_update(x)
        return x


@dataclass
class SlabTVz:
    """The ADMM-TV_z state of a volume streamed in slabs (:class:`invdiff.solvers.slab.Slabs`), float32.

    ``z`` and ``u`` hold one difference per local slice, ``(D_z x)_k = x_{k+1} - x_k``, with the
    volume's last slice carrying a zero difference (so ``z = u = 0`` there): the same ``D - 1``
    differences as :class:`ADMMTVz`, stored as ``D`` slices so that every rank holds the differences
    of its own slices. Neighbouring ranks exchange one boundary slice per operation.
    """

    lam: float
    rho: float
    z: Tensor | None = None
    u: Tensor | None = None

    def _ensure(self, like: Tensor) -> None:
        if self.z is None:
            self.z = torch.zeros_like(like)
            self.u = torch.zeros_like(like)

    def add_rhs_(self, r: Tensor, slabs) -> None:
        """``r += rho D_z^T (z - u)``: ``(D_z^T w)_k = w_{k-1} - w_k`` with ``w_{-1} = 0``."""
        self._ensure(r)
        last = slabs.depth - 1
        w_last = self.z.select(_Z, last) - self.u.select(_Z, last)
        prev, _ = slabs.group.halo(w_last, w_last, need_prev=True, need_next=False)
        for a, b in slabs.chunks():
            w = slabs.part(self.z, a, b) - slabs.part(self.u, a, b)
            if a > 0:
                left = self.z.select(_Z, a - 1) - self.u.select(_Z, a - 1)
            else:
                left = prev if prev is not None else torch.zeros_like(w_last)
            w_prev = torch.cat([left.unsqueeze(_Z), w.narrow(_Z, 0, b - a - 1)], _Z)
            slabs.part(r, a, b).add_(w_prev - w, alpha=self.rho)

    def update_(self, x: Tensor, slabs) -> None:
        """``z <- soft(D_z x + u, lam / rho)``, ``u <- u + D_z x - z``, slab by slab."""
        self._ensure(x)
        prev, nxt = slabs.halo(x, need_prev=False, need_next=True)
        for a, b in slabs.chunks():
            dz = slabs.diff_z(slabs.extended(x, a, b, prev, nxt))
            z, u = slabs.part(self.z, a, b), slabs.part(self.u, a, b)
            z.copy_(soft_threshold(dz + u, self.lam / self.rho))
            u.add_(dz).sub_(z)
