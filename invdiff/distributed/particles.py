r"""Particles of an ensemble sampler split over torch.distributed ranks, and per-particle random streams.

:class:`invdiff.solvers.SMC` and :class:`invdiff.solvers.AFDPS` run ``B`` ensembles of ``N`` particles. When
torch.distributed is initialised (``torchrun``; Gloo on CPU, NCCL on GPU) with ``W`` ranks, rank ``r`` holds
particles ``[r n, (r + 1) n)`` of every ensemble, ``n = N / W``:

* the network, the tilts and the moves run on the local ``B n`` particles only;
* ensemble-wide numbers come from collectives: the log-weights ``(B, N)`` are all-gathered before each
  resampling decision, sums over an ensemble's particles are all-reduced;
* the resampling decision and the ancestor indices are computed from the gathered log-weights with a
  generator that is seeded identically on every rank, so every rank draws the same ancestors; each rank
  then takes its own slots' ancestors from the all-gathered particles (``W - 1`` shares of every resampled
  tensor arrive at every rank: for ``x`` and ``x0_hat`` in float64, ``16 B N d (W - 1) / W`` bytes per rank
  and resampling step, ``d`` the pixels of one image);
* random draws of particle slot ``j = b N + i`` come from its own generator, seeded from ``(seed, j)``, so
  the draws (and, up to summation order, the whole run) do not depend on ``W``.

In one process (torch.distributed not initialised, or ``split_particles=False``) the same code runs with ``W = 1``
and the collectives are identities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["ParticleSplit", "ParticleStreams", "base_seed", "distributed_world", "particle_seed"]


def distributed_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default torch.distributed group, or ``(0, 1)`` when it is not initialised."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@dataclass(frozen=True)
class ParticleSplit:
    """Which particles of each ensemble this rank holds, and the collectives over the ranks.

    Parameters
    ----------
    N : int
        Particles per ensemble (all ranks together); must be a multiple of ``world``.
    rank, world : int
        This rank and the number of ranks (``0, 1``: one process, collectives are identities).

    Examples
    --------
    >>> s = ParticleSplit.create(8)  # one process
    >>> s.n, s.start, s.stop
    (8, 0, 8)
    """

    N: int
    rank: int = 0
    world: int = 1

    @classmethod
    def create(cls, N: int, split: bool = True) -> "ParticleSplit":
        """The split over the default torch.distributed group (``split=False`` or no group: everything here)."""
        rank, world = distributed_world() if split else (0, 1)
        if N % world:
            raise ValueError(f"particles: {N} particles cannot be split evenly over {world} torch.distributed ranks; "
                             f"expected a multiple of {world}")
        return cls(N, rank, world)

    @property
    def n(self) -> int:
        """Particles of each ensemble held here."""
        return self.N // self.world

    @property
    def start(self) -> int:
        return self.rank * self.n

    @property
    def stop(self) -> int:
        return self.start + self.n

    def global_indices(self, B: int, device=None) -> Tensor:
        """Global slot ``b N + i`` of each local particle row (rows ``b n + i - start``), shape ``(B n,)``."""
        i = torch.arange(self.start, self.stop, device=device)
        return (i + self.N * torch.arange(B, device=device)[:, None]).reshape(-1)

    # -- collectives (identities for one rank)
    @staticmethod
    def _comm_device(t: Tensor) -> torch.device:
        import torch.distributed as dist

        if dist.get_backend() == "nccl" and t.device.type != "cuda":  # NCCL moves CUDA tensors only
            return torch.device("cuda", torch.cuda.current_device())
        return t.device

    def gather(self, t: Tensor) -> Tensor:
        """All-gather along the particle axis: ``(B, n, ...)`` here -> ``(B, N, ...)`` on every rank."""
        if self.world == 1:
            return t
        import torch.distributed as dist

        dev = self._comm_device(t)
        local = t.detach().to(dev).contiguous()
        parts = [torch.empty_like(local) for _ in range(self.world)]
        dist.all_gather(parts, local)
        return torch.cat(parts, 1).to(t.device)

    def gather_rows(self, t: Tensor, B: int) -> Tensor:
        """All-gather flat particle rows: ``(B n, ...)`` here -> ``(B, N, ...)`` on every rank."""
        return self.gather(t.reshape(B, self.n, *t.shape[1:]))

    def sum(self, t: Tensor) -> Tensor:
        """All-reduce (sum) of a per-ensemble partial sum over this rank's particles."""
        if self.world == 1:
            return t
        import torch.distributed as dist

        dev = self._comm_device(t)
        out = t.detach().to(dev).clone()
        dist.all_reduce(out)
        return out.to(t.device)

    def take(self, tensors: tuple, rows: Tensor, B: int) -> tuple:
        """Resampled local rows: ``rows`` ``(B, n)`` indexes each ensemble's ``N`` particles (all ranks); every
        tensor ``(B n, ...)`` (or ``None``) is all-gathered and its rows ``rows`` kept here."""
        b = torch.arange(B, device=rows.device)[:, None]
        out = []
        for t in tensors:
            if t is None:
                out.append(None)
                continue
            full = self.gather_rows(t, B)  # (B, N, ...)
            out.append(full[b, rows].reshape(B * self.n, *t.shape[1:]))
        return tuple(out)

    def check_same(self, name: str, t: Tensor) -> None:
        """Raise if ``t`` (e.g. the measurement, the seed) differs between ranks: a split ensemble needs one run's
        inputs on every rank. One all-gather of a few numbers."""
        if self.world == 1:
            return
        t = t.detach().to(torch.float64).flatten()
        finite = torch.nan_to_num(t)
        w = torch.arange(1, t.numel() + 1, dtype=torch.float64, device=t.device) / max(t.numel(), 1)
        stamp = torch.stack([finite.sum(), (finite * w).sum(), finite.abs().sum(),
                             torch.tensor(float(t.numel()), dtype=torch.float64, device=t.device)])
        got = self.gather(stamp[None, None])[0, :, 0]  # (world, 4)
        if not torch.equal(got, got[:1].expand_as(got)):
            raise ValueError(f"{name}: differs between the {self.world} torch.distributed ranks (rank {self.rank} of "
                             f"{self.world}); a split particle ensemble needs the same {name} on every rank. To run "
                             f"independent ensembles per rank, pass split_particles=False")


def particle_seed(seed: int, index: int) -> int:
    """The seed of particle slot ``index``'s stream: 64 bits from numpy's ``SeedSequence((seed, index))``, so that
    nearby seeds and indices give unrelated streams."""
    state = np.random.SeedSequence([int(seed) % 2**64, int(index)]).generate_state(2, np.uint32)
    return int(state[0]) | (int(state[1]) << 32)


class ParticleStreams:
    """One ``torch.Generator`` per particle slot, seeded by :func:`particle_seed` from ``(seed, global index)``.

    ``randn(shape)`` draws row ``k`` (``shape[0]`` rows = the local particles) from slot ``k``'s generator, so a
    particle slot sees the same numbers whichever rank holds it. After resampling a slot holds a copy of its
    ancestor but keeps its own stream, so copies part ways.

    Examples
    --------
    >>> a = ParticleStreams(0, torch.arange(4)).randn((4, 3))
    >>> b = ParticleStreams(0, torch.arange(2, 4)).randn((2, 3))
    >>> torch.equal(a[2:], b)
    True
    """

    def __init__(self, seed: int, indices: Tensor, device: str | torch.device = "cpu"):
        self.indices = [int(i) for i in indices.tolist()]
        self.device = torch.device(device)
        self.gens = []
        for i in self.indices:
            g = torch.Generator(device=self.device)
            g.manual_seed(particle_seed(seed, i))
            self.gens.append(g)

    def __len__(self) -> int:
        return len(self.gens)

    def randn(self, shape, dtype: torch.dtype = torch.float64, device: str | torch.device | None = None) -> Tensor:
        """Standard normal draws ``shape`` ``(rows, ...)``; ``rows`` must equal the number of streams."""
        shape = tuple(shape)
        if shape[0] != len(self.gens):
            raise ValueError(f"shape: expected {len(self.gens)} rows (one per particle stream), got {shape}")
        dev = self.device if device is None else torch.device(device)
        out = torch.empty(shape, dtype=dtype, device=self.device)
        for row, g in zip(out, self.gens):  # in place, row by row: 1.6x faster than stacking randn calls
            row.normal_(generator=g)
        return out.to(dev)


def base_seed(seed: int | torch.Generator | None) -> int:
    """The integer behind the per-particle streams: ``seed`` itself, 0 for ``None``, or a draw from a generator
    (which then must be in the same state on every rank)."""
    if isinstance(seed, torch.Generator):
        return int(torch.randint(0, 2**62, (1,), generator=seed, device=seed.device).item())
    return 0 if seed is None else int(seed)
