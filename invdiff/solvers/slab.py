"""A volume streamed through the slice-wise solvers in slabs (chunks of slices), on one rank or several.

The DDS loop on a volume ``(B, C, D, H, W)`` (:mod:`invdiff.solvers.dds_slabs`) keeps a few whole
float32 volumes (the iterate, the conjugate-gradient vectors, the TV state) and computes everything
else one slab of ``chunk`` slices at a time, so that its temporaries (the network's input and output,
sinograms, float64 partial sums) do not grow with ``D``. This module holds what that needs:

- :func:`slab_operator`: the operator of a slab, for operators that act slice by slice with one 2D
  geometry (invdiff's :class:`~invdiff.operators.CT` on volumes). Other operators are applied to the
  whole local volume at once (still correct, only their temporaries are not bounded).
- :class:`Slabs`: the local block of slices of a :class:`~invdiff.distributed.context.SliceGroup`,
  ``A^T A`` and the data residual ``A^T (y - A v)`` slab by slab, inner products accumulated in float64 and summed over the
  ranks, and the second difference along z with halo slices from the neighbouring ranks.
- :class:`SliceStreams`: one random generator per slice, seeded from ``(seed, global slice index)``,
  so that the draws of a slice do not depend on how the volume is split over ranks or slabs.

Second difference along z (``L = D_z^T D_z`` of :mod:`invdiff.solvers.tv_z`), with replicated
neighbours at the two ends of the volume (``x_{-1} = x_0``, ``x_D = x_{D-1}``)::

    (L x)_k = 2 x_k - x_{k-1} - x_{k+1}        (x_0 - x_1 at k = 0, x_{D-1} - x_{D-2} at k = D-1)
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from invdiff.distributed.context import SliceGroup

_Z = 2  # depth axis of (B, C, D, H, W)


def slab_operator(op, depth: int):
    """The operator ``op`` on a slab of ``depth`` slices, or ``None`` if ``op`` cannot be split.

    Splits invdiff's :class:`~invdiff.operators.CT` on volumes (every slice is projected on its own
    with the same 2D geometry; the sinogram is ``(B, C, D, n_views, n_detectors)``).
    """
    from invdiff.operators.ct import CT

    size = getattr(op, "img_size", None)
    if type(op) is not CT or size is None or len(size) != 4:
        return None
    if depth == size[1]:
        return op
    sub = CT.__new__(CT)
    sub._setup((size[0], depth, *size[2:]), op.geom, op.backend, op.projector, op.noise_model)
    return sub


def slice_seed(base: int, k: int) -> int:
    """A 63-bit seed for global slice ``k`` from the run's ``base`` (numpy's ``SeedSequence`` mixing)."""
    lo, hi = np.random.SeedSequence([base, k]).generate_state(2, np.uint32)
    return (int(hi) << 31) ^ int(lo)


class SliceStreams:
    """One ``torch.Generator`` per local slice, seeded from ``(base, global slice index)``.

    ``base`` is one draw from the solver's generator (the same on every rank for the same seed).
    """

    def __init__(self, generator: torch.Generator, start: int, stop: int, device: torch.device):
        base = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        self.gens = []
        for k in range(start, stop):
            g = torch.Generator(device=device)
            g.manual_seed(slice_seed(base, k))
            self.gens.append(g)

    def randn(self, k: int, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        """Standard normal draws ``(B, C, H, W)`` from local slice ``k``'s stream."""
        return torch.randn(shape, generator=self.gens[k], dtype=dtype, device=device)


def ranges(n: int, chunk: int) -> list[tuple[int, int]]:
    """``[(0, chunk), (chunk, 2 chunk), ..., (., n)]``."""
    return [(a, min(a + chunk, n)) for a in range(0, n, chunk)]


class Slabs:
    """The local block of a volume problem: ``y``, ``op`` and the slab-wise linear algebra.

    Parameters
    ----------
    y : Tensor
        This rank's measurement (slices ``group.start .. group.stop`` of the volume's).
    op : deepinv.physics.LinearPhysics
        The operator of this rank's block (``img_size = (C, stop - start, H, W)``).
    group : SliceGroup
        The split of the volume over the ranks.
    chunk : int
        Slices per slab.
    """

    def __init__(self, y: Tensor, op, group: SliceGroup, chunk: int):
        self.y, self.op, self.group, self.chunk = y, op, group, chunk
        size = getattr(op, "img_size", None)
        self.shape = (y.shape[0], *size) if size is not None else tuple(op.A_adjoint(y).shape)
        depth = self.shape[_Z]
        if depth != group.stop - group.start:
            raise ValueError(f"op: its volume has {depth} slices, but this rank holds slices {group.start}.."
                             f"{group.stop - 1} of {group.depth} ({group.stop - group.start} slices)")
        self.depth = depth
        self.split = slab_operator(op, min(chunk, depth)) is not None
        if group.distributed and not self.split:
            raise ValueError(f"op: {type(op).__name__} cannot be split into slabs of slices, so a volume cannot be "
                             f"spread over {group.world} ranks with it (supported: invdiff.operators.CT)")
        self.op_ranges = ranges(depth, chunk) if self.split else [(0, depth)]
        self._ops: dict[int, object] = {}

    def empty(self, dtype: torch.dtype = torch.float32) -> Tensor:
        return torch.empty(self.shape, dtype=dtype, device=self.y.device)

    @staticmethod
    def part(t: Tensor, a: int, b: int) -> Tensor:
        return t.narrow(_Z, a, b - a)

    def _op(self, a: int, b: int):
        if not self.split:
            return self.op
        d = b - a
        if d not in self._ops:
            self._ops[d] = slab_operator(self.op, d)
        return self._ops[d]

    def AtA(self, v: Tensor, a: int, b: int) -> Tensor:
        """``A^T A v`` on slices ``a .. b - 1`` of ``v``; the operator runs in ``y``'s dtype."""
        op = self._op(a, b)
        return op.A_adjoint(op.A(self.part(v, a, b).to(self.y.dtype))).to(v.dtype)

    def dot(self, a: Tensor, b: Tensor) -> Tensor:
        """``<a_i, b_i>`` per sample, ``(B,)`` float64: float64 sums over slabs, then over the ranks."""
        out = torch.zeros(a.shape[0], dtype=torch.float64, device=a.device)
        for s, e in ranges(self.depth, self.chunk):
            out += (self.part(a, s, e).double() * self.part(b, s, e)).flatten(1).sum(1)
        return self.group.all_reduce_(out)

    # -- along z, with halo slices from the neighbouring ranks
    def halo(self, v: Tensor, need_prev: bool = True, need_next: bool = True):
        """``(slice before this block, slice after it)``: the neighbours' or ``None`` at the volume's ends."""
        return self.group.halo(v.select(_Z, 0), v.select(_Z, self.depth - 1), need_prev, need_next)

    def extended(self, v: Tensor, a: int, b: int, prev: Tensor | None, nxt: Tensor | None) -> Tensor:
        """Slices ``a - 1 .. b`` of ``v`` (``b - a + 2``), neighbours from the halo, replicated at the volume's ends."""
        left = v.select(_Z, a - 1) if a > 0 else prev if prev is not None else v.select(_Z, a)
        right = v.select(_Z, b) if b < self.depth else nxt if nxt is not None else v.select(_Z, b - 1)
        return torch.cat([left.unsqueeze(_Z), self.part(v, a, b), right.unsqueeze(_Z)], _Z)

    def laplacian_z(self, ext: Tensor) -> Tensor:
        """``(L v)_k = 2 v_k - v_{k-1} - v_{k+1}`` on the slab of an :meth:`extended` tensor."""
        n = ext.shape[_Z]
        mid = ext.narrow(_Z, 1, n - 2)
        return 2 * mid - ext.narrow(_Z, 0, n - 2) - ext.narrow(_Z, 2, n - 2)

    def diff_z(self, ext: Tensor) -> Tensor:
        """``(D_z v)_k = v_{k+1} - v_k`` on the slab of an :meth:`extended` tensor (0 at the volume's last slice)."""
        n = ext.shape[_Z]
        return ext.narrow(_Z, 2, n - 2) - ext.narrow(_Z, 1, n - 2)

    def apply_into(self, v: Tensor, out: Tensor, c: float, rho: float) -> None:
        """``out = (A^T A + c I + rho L) v``, slab by slab (``rho = 0``: no z-coupling, no halo)."""
        prev, nxt = self.halo(v) if rho > 0 else (None, None)
        for a, b in self.op_ranges:
            o = self.part(out, a, b)
            o.copy_(self.AtA(v, a, b))
            if c > 0:
                o.add_(self.part(v, a, b), alpha=c)
            self._add_laplacian(v, o, a, b, prev, nxt, rho)

    def residual_into(self, v: Tensor, out: Tensor, rho: float) -> None:
        """``out = A^T (y - A v) - rho L v``, slab by slab: the residual ``b - M v`` of the DDS data step with
        ``M = A^T A + c I + rho L``, ``b = A^T y + c v`` (the ``c`` terms cancel), with one adjoint per slab
        (``A^T y`` is neither stored nor recomputed)."""
        prev, nxt = self.halo(v) if rho > 0 else (None, None)
        for a, b in self.op_ranges:
            op, o = self._op(a, b), self.part(out, a, b)
            o.copy_(op.A_adjoint(self.part(self.y, a, b) - op.A(self.part(v, a, b).to(self.y.dtype))))
            self._add_laplacian(v, o, a, b, prev, nxt, -rho)

    def _add_laplacian(self, v: Tensor, o: Tensor, a: int, b: int, prev, nxt, alpha: float) -> None:
        """``o += alpha (L v)`` on slices ``a .. b - 1`` (``o`` is that slab of the output); nothing for ``alpha = 0``."""
        if alpha == 0:
            return
        for s, e in ranges(b - a, self.chunk):  # op_ranges may be the whole block: keep L's temporaries small
            self.part(o, s, e).add_(self.laplacian_z(self.extended(v, a + s, a + e, prev, nxt)), alpha=alpha)

    def chunks(self) -> Iterator[tuple[int, int]]:
        """Slabs of ``chunk`` slices for element-wise work (the network, the DDIM update)."""
        return iter(ranges(self.depth, self.chunk))

