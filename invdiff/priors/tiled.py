"""Patch-wise denoising of images and volumes larger than a prior's training size: overlapping tiles, blended.

A network trained on patches of size ``p`` (e.g. the 32^3 crops behind ``"phantom-ct-3d"``) sees other
statistics on a whole volume (its group norms average over the whole input, its receptive field meets
no border where it used to). :class:`TiledDenoiser` cuts the input into tiles of size ``p`` along each
spatial axis, with neighbouring tiles overlapping by at least ``o`` samples, denoises every tile, and
blends the results with weights that sum to one at every sample::

    D_tiled(x, sigma) = sum_t  W_t * pad_t( D(x[T_t], sigma) ),      W_t = w_t / sum_s w_s

``T_t`` is tile ``t``'s box and ``pad_t`` puts its output back in place (zero outside ``T_t``). The
unnormalised weight ``w_t`` is a separable tent, ``w_t(i, j, k) = r(i) r(j) r(k)``: along each axis it
ramps linearly, ``r = (m + 1/2) / o`` at distance ``m < o`` from a tile side that lies inside the
volume, and is 1 elsewhere (also on a side that lies on the volume's border, so every sample has a
positive weight). Tile starts along an axis of size ``n > p`` are ``round(linspace(0, n - p, k))`` with
``k = ceil((n - p) / (p - o)) + 1`` tiles, evenly spread, so overlaps are between ``o`` and ``p - 1``.
An axis with ``n <= p`` is one tile of size ``n``; where one tile covers the whole input, ``D`` is called
once on ``x`` itself (bit for bit the plain denoiser). Everything is indexing and sums, so gradients flow.
"""

from __future__ import annotations

import itertools
import math

import deepinv as dinv
import torch
from torch import Tensor

from invdiff.utils import as_sigma


def tile_starts(n: int, patch: int, overlap: int) -> list[int]:
    """Start indices of tiles of size ``patch`` covering ``[0, n)`` with overlaps of at least ``overlap``."""
    if n <= patch:
        return [0]
    k = math.ceil((n - patch) / (patch - overlap)) + 1
    return sorted({round(i * (n - patch) / (k - 1)) for i in range(k)})


def ramp(size: int, overlap: int, left: bool, right: bool, dtype=torch.float64) -> Tensor:
    """1D tile weight: 1, ramping linearly to ``1 / (2 overlap)`` over ``overlap`` samples at each inner side."""
    r = torch.ones(size, dtype=dtype)
    if overlap > 0:
        m = torch.arange(size, dtype=dtype)
        if left:
            r = torch.minimum(r, (m + 0.5) / overlap)
        if right:
            r = torch.minimum(r, (size - m - 0.5) / overlap)
    return r


def _check_sizes(value, k: int, name: str, minimum: int) -> tuple[int, ...]:
    vals = (value,) * k if isinstance(value, int) and not isinstance(value, bool) else value
    try:
        vals = tuple(vals)
    except TypeError:
        vals = ()
    if len(vals) != k or any(isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in vals):
        raise ValueError(f"{name}: expected an int >= {minimum} or {k} of them, got {value!r}")
    return vals


class TiledDenoiser(dinv.models.Denoiser):
    """Run ``denoiser`` on overlapping tiles of size ``patch`` and blend them (see the module docstring).

    Parameters
    ----------
    denoiser : torch.nn.Module
        A prior ``D(x, sigma)`` for ``(B, C, *spatial)`` inputs, 2D or 3D.
    patch : int or tuple of int
        Tile size per spatial axis (an int is used for every axis), e.g. the network's training size.
    overlap : int or tuple of int, optional
        Minimum overlap of neighbouring tiles per axis, ``0 <= overlap < patch``; default ``patch // 4``.
    tiles_per_call : int
        Number of tiles (times the batch size) passed to ``denoiser`` in one call; bounds memory.

    ``data_range``, ``sigma_min``, ``sigma_max`` and ``spatial_dims`` are those of ``denoiser``.

    Example
    -------
    >>> from invdiff.priors import GaussianPrior
    >>> D = TiledDenoiser(GaussianPrior(torch.zeros(1, 8, 8, 8), 1.0), patch=8, overlap=2)
    >>> D(torch.ones(2, 1, 12, 8, 20), 0.5).shape
    torch.Size([2, 1, 12, 8, 20])
    """

    def __init__(self, denoiser: torch.nn.Module, patch: int | tuple[int, ...], overlap: int | tuple[int, ...] | None = None,
                 tiles_per_call: int = 8):
        super().__init__()
        if not isinstance(denoiser, torch.nn.Module) or not callable(denoiser):
            raise TypeError(f"denoiser: expected a denoiser module D(x, sigma), got {type(denoiser).__name__}")
        if isinstance(tiles_per_call, bool) or not isinstance(tiles_per_call, int) or tiles_per_call < 1:
            raise ValueError(f"tiles_per_call: expected a positive int, got {tiles_per_call!r}")
        self.denoiser = denoiser
        self.patch, self.overlap, self.tiles_per_call = patch, overlap, tiles_per_call
        k = len(patch) if isinstance(patch, (tuple, list)) else len(overlap) if isinstance(overlap, (tuple, list)) else 1
        self._sizes(k)  # fail now on bad sizes; an int is later used for every axis of the input
        self.data_range = getattr(denoiser, "data_range", None)
        self.sigma_min = getattr(denoiser, "sigma_min", None)
        self.sigma_max = getattr(denoiser, "sigma_max", None)
        self.spatial_dims = getattr(denoiser, "spatial_dims", None)
        self._cache: dict = {}  # (shape, device, dtype) -> tiles with weights there: built once, not every step

    def _sizes(self, k: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        patch = _check_sizes(self.patch, k, "patch", 1)
        overlap = tuple(p // 4 for p in patch) if self.overlap is None else _check_sizes(self.overlap, k, "overlap", 0)
        bad = [(o, p) for o, p in zip(overlap, patch) if o >= p]
        if bad:
            raise ValueError(f"overlap: expected overlap < patch on every axis, got overlap {overlap} for patch {patch}")
        return patch, overlap

    def tiles(self, shape: tuple[int, ...]) -> list[tuple[tuple[slice, ...], Tensor]]:
        """``(box, W_t)`` for every tile of a spatial ``shape``: the tile's slices and its normalised weight.

        The weights ``W_t`` (float64, each of the tile's size) sum to one at every sample of ``shape``.
        """
        patch, overlap = self._sizes(len(shape))
        axes = []
        for n, p, o in zip(shape, patch, overlap):
            starts = tile_starts(n, p, o)
            size = min(n, p)
            axes.append([(slice(s, s + size), ramp(size, o, s > 0, s + size < n)) for s in starts])
        boxes, weights = [], []
        total = torch.zeros(shape, dtype=torch.float64)
        for combo in itertools.product(*axes):
            box = tuple(c[0] for c in combo)
            w = combo[0][1]
            for _, r in combo[1:]:
                w = w[..., None] * r
            total[box] += w
            boxes.append(box)
            weights.append(w)
        return [(box, w / total[box]) for box, w in zip(boxes, weights)]

    def forward(self, x: Tensor, sigma: Tensor | float, *args, **kwargs) -> Tensor:
        if not torch.is_tensor(x):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        if x.ndim < 3:
            raise ValueError(f"x: expected (B, C, *spatial), got shape {tuple(x.shape)}")
        shape = tuple(x.shape[2:])
        key = (shape, x.device, x.dtype)
        if key not in self._cache:
            self._cache[key] = [(box, w.to(device=x.device, dtype=x.dtype)) for box, w in self.tiles(shape)]
        tiles = self._cache[key]
        if len(tiles) == 1:
            return self.denoiser(x, sigma, *args, **kwargs)
        B = x.shape[0]
        s = as_sigma(sigma, x)
        out = torch.zeros_like(x)
        for i in range(0, len(tiles), self.tiles_per_call):
            group = tiles[i : i + self.tiles_per_call]
            # tiles along one axis of size n <= patch all have the same size, so one group stacks
            xs = torch.cat([x[(..., *box)] for box, _ in group])
            ds = self.denoiser(xs, s.repeat(len(group)), *args, **kwargs)
            for j, (box, w) in enumerate(group):
                out[(..., *box)] += w * ds[j * B : (j + 1) * B]
        return out
