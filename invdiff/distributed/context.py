"""One volume over the ranks of a torch.distributed process group: each rank owns a block of slices.

A volume of ``D`` slices is split into contiguous blocks, rank ``r`` of ``R`` holding the slices
``[floor(r D / R), floor((r + 1) D / R))``. The slice-wise solvers (DDS and DiffusionMBIR,
:mod:`invdiff.solvers.slab`) then need three collectives:

- an **all-reduce** of per-rank partial sums (the conjugate-gradient inner products
  ``<a, b> = sum_r <a_r, b_r>``, accumulated in float64);
- a **halo exchange** of boundary slices with the neighbouring ranks (TV along z couples slice
  ``k`` with ``k - 1`` and ``k + 1``: rank ``r`` sends its first slice to ``r - 1`` and its last to
  ``r + 1``);
- a **gather** of the blocks on rank 0, which writes the output.

The process group, the backend (NCCL when every process of a node has a GPU of its own, Gloo
otherwise) and the device come from deepinv's :class:`deepinv.distributed.DistributedContext`,
started by ``torchrun`` (the ``RANK``/``WORLD_SIZE`` variables). What deepinv does not have, and is
written here: contiguous blocks (its ``local_indices`` deals items round-robin, which would leave
every slice's z-neighbours on another rank), the point-to-point halo exchange, and the gather of
blocks of unequal depth.

Without ``torchrun`` (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) :meth:`SliceGroup.single` is one rank
holding every slice, and every collective is the identity.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.distributed as dist
from torch import Tensor

_Z = 2  # depth axis of (B, C, D, H, W)


def launched_world_size() -> int:
    """``WORLD_SIZE`` set by ``torchrun`` (1 when not launched by it)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"WORLD_SIZE: expected an integer number of processes, got {os.environ['WORLD_SIZE']!r}") \
            from None


def block(depth: int, rank: int, world: int) -> tuple[int, int]:
    """Slices ``[start, stop)`` of ``rank`` when ``depth`` slices are split over ``world`` ranks.

    >>> [block(10, r, 3) for r in range(3)]
    [(0, 3), (3, 6), (6, 10)]
    """
    if depth < world:
        raise ValueError(f"depth: a volume of {depth} slices cannot be split over {world} ranks "
                         f"(expected at least one slice per rank)")
    return rank * depth // world, (rank + 1) * depth // world


@dataclass
class SliceGroup:
    """This rank's share of a volume of ``depth`` slices, and the collectives over the ranks.

    Parameters
    ----------
    depth : int
        Slices of the whole volume.
    rank, world : int
        This process and the number of processes (``dist`` must be initialised when ``world > 1``).
    device : torch.device
        The device of this rank (NCCL needs CUDA tensors; Gloo takes CPU tensors).

    Example
    -------
    >>> g = SliceGroup.single(8)
    >>> g.start, g.stop, g.is_first, g.is_last
    (0, 8, True, True)
    """

    depth: int
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __post_init__(self):
        self.start, self.stop = block(self.depth, self.rank, self.world)

    @classmethod
    def single(cls, depth: int, device: str | torch.device = "cpu") -> "SliceGroup":
        """One process holding all ``depth`` slices."""
        return cls(depth, 0, 1, torch.device(device))

    @property
    def is_first(self) -> bool:
        return self.start == 0

    @property
    def is_last(self) -> bool:
        return self.stop == self.depth

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def local(self, t: Tensor, axis: int = _Z) -> Tensor:
        """This rank's slices of a whole-volume tensor (a view)."""
        if t.shape[axis] != self.depth:
            raise ValueError(f"t: expected {self.depth} slices along axis {axis}, got shape {tuple(t.shape)}")
        return t.narrow(axis, self.start, self.stop - self.start)

    # -- collectives
    def all_reduce_(self, t: Tensor) -> Tensor:
        """Sum ``t`` over the ranks, in place (the identity on one rank)."""
        if self.distributed:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank (one all-reduce)."""
        if not self.distributed:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        return bool(self.all_reduce_(t).item() > 0)

    def halo(self, first: Tensor, last: Tensor, need_prev: bool = True,
             need_next: bool = True) -> tuple[Tensor | None, Tensor | None]:
        """Exchange boundary slices: returns ``(previous rank's last slice, next rank's first slice)``.

        ``first``/``last`` are this rank's first and last slices ``(B, C, H, W)``; ``None`` comes back
        at the volume's ends (or for a side not asked for with ``need_prev``/``need_next``, on every rank).
        """
        if not self.distributed:
            return None, None
        ops, prev, nxt = [], None, None
        if need_prev:  # every rank receives its previous rank's last slice and sends its own last one on
            if not self.is_first:
                prev = torch.empty_like(last)
                ops.append(dist.P2POp(dist.irecv, prev, self.rank - 1))
            if not self.is_last:
                ops.append(dist.P2POp(dist.isend, last.contiguous(), self.rank + 1))
        if need_next:  # every rank receives its next rank's first slice and sends its own first one back
            if not self.is_last:
                nxt = torch.empty_like(first)
                ops.append(dist.P2POp(dist.irecv, nxt, self.rank + 1))
            if not self.is_first:
                ops.append(dist.P2POp(dist.isend, first.contiguous(), self.rank - 1))
        if ops:
            for req in dist.batch_isend_irecv(ops):
                req.wait()
        return prev, nxt

    def gather(self, x: Tensor) -> Tensor | None:
        """The whole volume on rank 0 from every rank's block ``(B, C, stop - start, H, W)``; ``None`` elsewhere."""
        if not self.distributed:
            return x
        most = max(block(self.depth, r, self.world)[1] - block(self.depth, r, self.world)[0] for r in range(self.world))
        pad = torch.zeros((*x.shape[:_Z], most, *x.shape[_Z + 1:]), dtype=x.dtype, device=x.device)
        pad.narrow(_Z, 0, x.shape[_Z]).copy_(x)
        parts = [torch.empty_like(pad) for _ in range(self.world)] if self.rank == 0 else None
        if dist.get_backend() == "nccl":  # NCCL has no gather: all-gather instead
            parts = [torch.empty_like(pad) for _ in range(self.world)]
            dist.all_gather(parts, pad)
        else:
            dist.gather(pad, parts, dst=0)
        if self.rank != 0:
            return None
        return torch.cat([p.narrow(_Z, 0, b - a) for p, (a, b) in
                          zip(parts, (block(self.depth, r, self.world) for r in range(self.world)))], _Z)


@contextlib.contextmanager
def process_group(device: str | torch.device = "cpu") -> Iterator["object"]:
    """The process group of a ``torchrun`` launch, through deepinv's ``DistributedContext``.

    Yields the context (``.rank``, ``.world_size``, ``.device``, ``.use_dist``). On ``device="cpu"``
    the backend is Gloo and every rank runs on the CPU; on ``"cuda"`` NCCL, one GPU per local rank
    (``cuda:LOCAL_RANK``). Without ``torchrun`` it is a one-process context and nothing is started.
    The group is destroyed on exit (after a barrier).
    """
    from deepinv.distributed import DistributedContext

    kind = torch.device(device).type
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"device: torch.distributed runs here on 'cpu' (Gloo) or 'cuda' (NCCL), got {device!r}")
    with DistributedContext(backend="gloo" if kind == "cpu" else "nccl",
                            device_mode="cpu" if kind == "cpu" else "gpu") as ctx:
        yield ctx


def launched_rank() -> int:
    """``RANK`` set by ``torchrun`` (0 when not launched by it)."""
    return int(os.environ.get("RANK", "0")) if launched_world_size() > 1 else 0


def reconstruct_split(solver, y: Tensor, op, *, seed: int = 0, progress: bool = False):
    """``solver.reconstruct(y, op, seed=seed)`` with the volume's slices split over the ``torchrun`` ranks.

    Every rank calls this with the whole measurement ``y`` and operator ``op``. Launched by
    ``torchrun`` with ``N > 1`` processes, a slice-wise solver (DDS, DiffusionMBIR with ``mode="dds"``)
    on a volume that :func:`invdiff.solvers.slab.slab_operator` can split runs on each rank's block
    of slices (:meth:`~invdiff.solvers.dds.DDSLoop.distribute`) in a process group started here
    (Gloo on the CPU, NCCL on CUDA; :func:`process_group`); the blocks are gathered on rank 0. Anything
    else runs whole on rank 0 alone. Returns the :class:`~invdiff.solvers.base.Reconstruction` (one
    sample) on rank 0 and ``None`` on the other ranks. Without ``torchrun`` it is ``solver.reconstruct``.
    """
    from invdiff.solvers.base import Reconstruction
    from invdiff.solvers.dds import DDSLoop
    from invdiff.solvers.slab import slab_operator

    world = launched_world_size()
    if world <= 1:
        return solver.reconstruct(y, op, seed=seed, progress=progress)
    size = getattr(op, "img_size", None)
    split = (isinstance(solver, DDSLoop) and size is not None and len(size) == 4 and size[1] >= world
             and slab_operator(op, size[1]) is not None and getattr(solver, "mode", "dds") == "dds"
             and getattr(solver.prior, "spatial_dims", 2) != 3)
    if not split:
        return solver.reconstruct(y, op, seed=seed, progress=progress) if launched_rank() == 0 else None
    with process_group(y.device) as ctx:
        group = SliceGroup(size[1], ctx.rank, ctx.world_size, y.device)
        op_local = slab_operator(op, group.stop - group.start)
        solver.distribute(group)
        try:
            r = solver.reconstruct(group.local(y), op_local, seed=seed, progress=progress and group.rank == 0)
        finally:
            solver.distribute(None)
        mean = group.gather(r.mean.contiguous())
    if group.rank != 0:
        return None
    info = {**r.info, "ranks": world}
    if "slice_evals" in info:  # rank 0 counted its own slices; one network call per slice and step in all
        info["slice_evals"] = r.nfe * y.shape[0] * size[1]
    return Reconstruction(mean=mean, samples=mean[None], std=None, nfe=r.nfe, seconds=r.seconds, info=info)
