"""The DDS loop on a volume in bounded memory, on one rank or over a torch.distributed group.

The same algorithm as :meth:`invdiff.solvers.dds.DDSLoop.dds_loop` on images (see :class:`DDS` for
the step), for volumes ``(B, C, D, H, W)``, with the state in float32 and arranged so that only a
fixed number of whole volumes exist at any time::

    x      the iterate; after the network call it holds eps_hat = (x - x0_hat) / sigma in place
    xc     x0_hat, then the conjugate-gradient iterate x0' (updated in place)
    r, p, Mp   conjugate-gradient vectors
    z, u   ADMM-TV_z split variable and dual (only with tv_weight > 0)
    acc    sum of the last k data-consistent estimates (only with tail_average = k > 1), or of the last k Tweedie
           estimates with tail_estimate = "x0_hat"

that is 5 to 8 float32 volumes, at most 32 bytes per voxel. The network, ``A^T A``, the data residual
``A^T (y - A x)`` (so ``A^T y`` is never stored), the DDIM update and the float64 partial sums of the
inner products run one slab of ``chunk`` slices at a time (:mod:`invdiff.solvers.slab`), so their
temporaries are bounded by the slab. The right-hand side ``b`` is never formed: the residual
``r = b - M x0_hat = A^T (y - A x0_hat) - rho L x0_hat [+ rho D_z^T (z - u)]`` is assembled slab by slab, one
``A`` and one ``A^T`` per slab.

Random draws come from one stream per slice, seeded from ``(seed, global slice index)``
(:class:`invdiff.solvers.slab.SliceStreams`), and inner products are summed over the ranks of the
solver's :class:`~invdiff.distributed.context.SliceGroup`, with TV along z exchanging one boundary
slice with each neighbouring rank: the result does not depend on the number of ranks (to float
round-off in the sums) or on ``chunk``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from invdiff.distributed.context import SliceGroup
from invdiff.solvers.cg import cg_
from invdiff.solvers.slab import Slabs, SliceStreams
from invdiff.solvers.tv_z import SlabTVz

_Z = 2


def dds_volume_loop(solver, y: Tensor, op, lam: float, rho: float, cg_iters: int, generator: torch.Generator,
                    progress: bool, callback: Callable[[dict], None] | None, desc: str = "DDS") -> Tensor:
    """The DDS loop of ``solver`` (a :class:`~invdiff.solvers.dds.DDSLoop`) on a volume, slab by slab.

    ``lam``, ``rho``: TV along z (``lam = 0``: off); ``cg_iters``: CG iterations per step. The solver's
    ``group`` (a :class:`SliceGroup`, default one rank) says which slices ``y`` and ``op`` hold.
    """
    cfg = solver.config
    sigmas, start = cfg.sigmas(solver.prior)
    gamma_of = cfg.gamma_of(op, type(solver).__name__)
    clip = getattr(solver.prior, "data_range", None) if cfg.clip_x0 else None
    S = _slabs(solver, y, op)
    group, dev, f32 = S.group, y.device, getattr(solver, "volume_dtype", torch.float32)
    B, C, _, H, W = S.shape
    streams = SliceStreams(generator, group.start, group.stop, dev)
    native3d = getattr(solver.prior, "spatial_dims", 2) == 3
    if native3d and group.distributed:
        raise ValueError("prior: a native 3D prior sees the whole volume; it cannot be split over ranks by slices")
    net_ranges = [(0, S.depth)] if native3d else list(S.chunks())
    tv = SlabTVz(lam, rho) if lam > 0 else None
    rho_eff = rho if tv is not None else 0.0
    c_noise, c_eps = cfg.eta, math.sqrt(max(1.0 - cfg.eta * cfg.eta, 0.0))
    steps, k_avg = cfg.steps, cfg.tail_average

    def draw_into(t: Tensor, scale: float, add: bool) -> None:  # t[:, :, k] (+)= scale * n_k, slice by slice
        for k in range(S.depth):
            n = streams.randn(k, (B, C, H, W), torch.float32, dev)  # float32 draws whatever the state dtype
            t.select(_Z, k).add_(n, alpha=scale) if add else t.select(_Z, k).copy_(n.mul_(scale))

    x = S.empty(f32)
    draw_into(x, start, add=False)
    xc, r, p, Mp = S.empty(f32), S.empty(f32), S.empty(f32), S.empty(f32)
    of_hat = cfg.tail_estimate == "x0_hat"  # average the Tweedie estimates instead of the data-consistent ones
    acc = torch.zeros_like(x) if k_avg > 1 or of_hat else None
    x0_hat = S.empty(f32) if callback is not None else None  # a copy for the callback only
    for i in tqdm(range(steps), disable=not progress, desc=desc, leave=False):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        # 1. Tweedie estimate into xc, slab by slab; x becomes eps_hat = (x - x0_hat) / sigma in place
        nfe = solver.nfe
        for a, b in net_ranges:
            est = solver.denoise(S.part(x, a, b), sigma)
            if clip is not None:
                est = est.clamp(*clip)
            S.part(xc, a, b).copy_(est)
            S.part(x, a, b).sub_(est).div_(sigma)
        solver.nfe = nfe + 1  # one network call per step (per slice), however many slabs
        if x0_hat is not None:
            x0_hat.copy_(xc)
        if of_hat and i >= steps - k_avg:
            acc.add_(xc)
        # 2. data consistency from x0_hat: CG on (A^T A + I/gamma [+ rho D_z^T D_z]) x = A^T y + x0_hat/gamma [+ ...]
        g = float(gamma_of(sigma))
        c = 0.0 if math.isinf(g) else 1.0 / g
        S.residual_into(xc, r, rho_eff)  # r = b - M x0_hat = A^T (y - A x0_hat) - rho L x0_hat (+ rho D_z^T (z - u) below)
        if tv is not None:
            tv.add_rhs_(r, S)
        cg_(lambda v, out: S.apply_into(v, out, c, rho_eff), xc, r, p, Mp, cg_iters, S.dot)
        if tv is not None:
            tv.update_(xc, S)
        if acc is not None and not of_hat and i >= steps - k_avg:
            acc.add_(xc)
        # 3. DDIM step to sigma_next with the corrected estimate: x = x0' + sigma' (eta n + sqrt(1 - eta^2) eps_hat)
        if sigma_next > 0:
            x.mul_(sigma_next * c_eps).add_(xc)
            draw_into(x, sigma_next * c_noise, add=True)
        else:
            x.copy_(xc)
        if group.any(not all(bool(torch.isfinite(S.part(x, a, b)).all()) for a, b in S.chunks())):
            solver.check_iterate("x", torch.tensor(float("nan")), i)
        if callback is not None:
            callback({"step": i, "sigma": sigma, "sigma_next": sigma_next, "x": x, "x0_hat": x0_hat, "x0_dc": xc})
    if acc is not None:
        x = acc.div_(k_avg)
    return x.to(y.dtype)


def _slabs(solver, y: Tensor, op) -> Slabs:
    group = getattr(solver, "group", None)
    if group is None:
        size = getattr(op, "img_size", None)
        depth = size[1] if size is not None else op.A_adjoint(y).shape[_Z]
        group = SliceGroup.single(depth, y.device)
    return Slabs(y, op, group, solver.chunk)
