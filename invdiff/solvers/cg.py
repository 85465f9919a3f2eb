"""Batched conjugate gradients for symmetric positive (semi-)definite systems ``M x = b``.

Hestenes and Stiefel (1952). Each sample of the batch (first dimension) runs its own CG with its own
step lengths; ``M`` is given as a function ``apply_fn(x) -> M x`` acting on the whole batch::

    r_0 = b - M x_0,  p_0 = r_0
    alpha_k = <r_k, r_k> / <p_k, M p_k>
    x_{k+1} = x_k + alpha_k p_k,   r_{k+1} = r_k - alpha_k M p_k
    beta_k = <r_{k+1}, r_{k+1}> / <r_k, r_k>,   p_{k+1} = r_{k+1} + beta_k p_k

Used by the CG least-squares baseline (``M = A^T A + damping I``) and by the 3D solvers' data-consistency
and ADMM x-updates.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from invdiff.utils import append_dims


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample inner product ``<a_i, b_i>``, shape ``(B,)``."""
    return (a * b).flatten(1).sum(1)


def cg(apply_fn: Callable[[Tensor], Tensor], b: Tensor, x0: Tensor | None = None, iters: int = 50,
       tol: float = 0.0) -> Tensor:
    """Solve ``M x = b`` for symmetric positive (semi-)definite ``M`` by conjugate gradients, per sample.

    Parameters
    ----------
    apply_fn : callable
        ``x -> M x`` on a batch ``(B, ...)``; must not mix samples.
    b : Tensor
        Right-hand side ``(B, ...)``.
    x0 : Tensor, optional
        Starting point (zeros if omitted; from zeros, CG on the normal equations gives the
        minimum-norm least-squares solution).
    iters : int
        Maximum number of iterations (each costs one ``apply_fn``).
    tol : float
        Stop once every sample has ``||r|| <= tol ||b||``. ``0`` runs exactly ``iters`` iterations
        without synchronising (no per-iteration ``.item()``), which is what the diffusion solvers want.

    Returns
    -------
    Tensor
        The approximate solution, shaped like ``b``.

    Example
    -------
    >>> M = torch.tensor([[4.0, 1.0], [1.0, 3.0]])
    >>> b = torch.tensor([[1.0, 2.0]])
    >>> cg(lambda x: x @ M, b, iters=2)
    tensor([[0.0909, 0.6364]])
    """
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 0:
        raise ValueError(f"iters: expected an integer >= 0, got {iters!r}")
    if not tol >= 0:
        raise ValueError(f"tol: expected a non-negative number, got {tol!r}")
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    if iters == 0:
        return x
    r = b - apply_fn(x) if x0 is not None else b.clone()
    p = r.clone()
    rs = _dot(r, r)
    stop = (tol * tol) * _dot(b, b) if tol > 0 else None
    zero = rs.new_zeros(())
    for _ in range(iters):
        Mp = apply_fn(p)
        pMp = _dot(p, Mp)
        # a sample that has converged (r = 0, hence p = 0) keeps alpha = beta = 0
        alpha = torch.where(pMp > 0, rs / torch.where(pMp > 0, pMp, 1), zero)
        x = x + append_dims(alpha, x.ndim) * p
        r = r - append_dims(alpha, r.ndim) * Mp
        rs_new = _dot(r, r)
        if stop is not None and bool((rs_new <= stop).all()):
            break
        beta = torch.where(rs > 0, rs_new / torch.where(rs > 0, rs, 1), zero)
        p = r + append_dims(beta, p.ndim) * p
        rs = rs_new
    return x


def cg_(apply_into: Callable[[Tensor, Tensor], None], x: Tensor, r: Tensor, p: Tensor, Mp: Tensor, iters: int,
        dot: Callable[[Tensor, Tensor], Tensor] = _dot) -> Tensor:
    """:func:`cg` in place, with no volume-sized temporaries: the low-memory form for large volumes.

    ``x`` (the start, updated in place), ``r`` (on entry the residual ``b - M x``), ``p`` and ``Mp``
    are caller-owned buffers shaped like ``x``; ``apply_into(v, out)`` writes ``M v`` into ``out``.
    ``dot(a, b)`` returns the per-sample inner products ``(B,)``: a distributed caller passes one that
    sums over the ranks, so that every rank takes the same step lengths. Runs exactly ``iters``
    iterations (the recursions of :func:`cg`, with ``alpha`` and ``beta`` cast to ``x``'s dtype).
    """
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 0:
        raise ValueError(f"iters: expected an integer >= 0, got {iters!r}")
    if iters == 0:
        return x
    p.copy_(r)
    rs = dot(r, r)
    zero = rs.new_zeros(())
    for _ in range(iters):
        apply_into(p, Mp)
        pMp = dot(p, Mp)
        alpha = append_dims(torch.where(pMp > 0, rs / torch.where(pMp > 0, pMp, 1), zero), x.ndim).to(x.dtype)
        x.addcmul_(alpha, p)
        r.addcmul_(alpha, Mp, value=-1)
        rs_new = dot(r, r)
        beta = torch.where(rs > 0, rs_new / torch.where(rs > 0, rs, 1), zero)
        p.mul_(append_dims(beta, p.ndim).to(p.dtype)).add_(r)
        rs = rs_new
    return x
