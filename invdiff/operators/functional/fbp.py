"""Filtered back-projection (parallel and flat-detector fan beam) in torch, for any CT backend.

Parallel beam (Kak and Slaney, *Principles of Computerized Tomographic Imaging*, ch. 3):

.. math::

    \\hat f(p) = \\sum_k w_k \\, q_k(p \\cdot e_k), \\qquad q_k = \\frac{1}{d} (y_k \\ast h),

with the discrete Ram-Lak kernel ``h[0] = 1/4``, ``h[m] = -1 / (pi m)^2`` for odd ``m`` and ``0`` for
even ``m != 0`` (a linear convolution along the detector), ``d`` the detector spacing and ``w_k``
the angular width of view ``k`` (``pi / K`` for ``K`` views evenly over ``[0, pi)``).

Fan beam with a flat detector (equispaced cells), rescaled to a virtual detector through the axis
(``t = u D_s / (D_s + D_d)``, spacing ``d_v = d D_s / (D_s + D_d)``):

.. math::

    \\hat f(p) = \\sum_k \\frac{w_k}{2} \\frac{1}{U_k(p)^2}\\, q_k(t_k(p)), \\qquad
    q_k = \\frac{1}{d_v} \\Big( y_k \\frac{D_s}{\\sqrt{D_s^2 + t^2}} \\Big) \\ast h, \\qquad
    U_k(p) = \\frac{D_s + p \\cdot n_k}{D_s}, \\quad t_k(p) = \\frac{p \\cdot e_k}{U_k(p)},

(the factor ``1/2``: over a full turn every ray is measured twice). The back-projection is
pixel-driven: the filtered projections are interpolated (band-limited, by zero-padding their
spectrum) onto ``oversample`` points per cell, then linearly between those points
(``torch.nn.functional.grid_sample``), so it is differentiable and runs on the sinogram's device. Geometry conventions: see
:mod:`invdiff.operators.functional.astra_ct`; per view, the formulas use the frames of
:mod:`invdiff.operators.functional.astra_geometry` (detector axis, cell width ``d_k``, detector offset
``o_k``, distances), so ASTRA's ``_vec`` forms (untilted detectors) and physical units (a volume
window in mm) are reconstructed with the same code: every length is in the window's units.

View weights ``w_k``: half the angular gap to each neighbour (angles taken modulo ``pi`` for
parallel beam and ``2 pi`` for fan beam), each gap capped at the median gap, so that a limited-angle
scan is not weighted as if its missing wedge were covered by its two end views. A fan-beam scan of
less than a full turn gets no Parker (short-scan) weights, so its FBP is only approximate.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from invdiff.operators.functional.astra_ct import Geometry2D
from invdiff.operators.functional.astra_geometry import view_frames


def ramp_filter(y: Tensor, spacing: float = 1.0, oversample: int = 1) -> Tensor:
    """Filter along the last axis with the discrete Ram-Lak kernel, ``(y * h) / spacing`` (linear convolution).

    ``oversample=m > 1`` also interpolates the filtered signal (band-limited, by zero-padding its
    spectrum) onto ``m`` points per cell: the result has ``(n - 1) m + 1`` samples, sample ``i``
    at cell position ``i / m``. Back-projecting from this finer grid with linear interpolation
    blurs far less than linear interpolation between cells (on a 128x128 Shepp-Logan with 180
    views: 25.7 dB for ``m = 1``, 27.3 dB for ``m = 4``, 27.4 dB for ``m = 8``).
    """
    n = y.shape[-1]
    L = 1 << max(6, math.ceil(math.log2(2 * n - 1)))  # zero padding >= 2n - 1: no wrap-around
    m = torch.arange(L, device="cpu")  # the filter is built on the host, then moved to y's device
    m = torch.minimum(m, L - m).to(torch.float64)  # |offset| of each tap in circular order
    h = torch.where(m % 2 == 1, -1.0 / (math.pi * m).clamp_min(1e-30) ** 2, torch.zeros_like(m))
    h[0] = 0.25
    H = torch.fft.rfft(h).real.to(y.device, y.dtype)  # h is even: real spectrum (built in float64 on the CPU)
    Q = torch.fft.rfft(y, n=L, dim=-1) * H
    if oversample == 1:
        return torch.fft.irfft(Q, n=L, dim=-1)[..., :n] / spacing
    Q[..., -1] = Q[..., -1] / 2  # split the Nyquist bin between +-f_N, as the real interpolant does
    q = torch.fft.irfft(Q, n=L * oversample, dim=-1)[..., : (n - 1) * oversample + 1]
    return q * (oversample / spacing)


def view_weights(angles: Tensor, period: float) -> Tensor:
    """Angular width of each view: half the (capped) gaps to its neighbours on a circle of length ``period``."""
    a = torch.remainder(angles.to(torch.float64), period)
    order = torch.argsort(a)
    s = a[order]
    gaps = torch.diff(torch.cat([s, s[:1] + period]))  # gap after each sorted view
    positive = gaps[gaps > 1e-9 * period]
    cap = positive.median() if positive.numel() else torch.tensor(period, dtype=torch.float64, device=a.device)
    g = torch.minimum(gaps, cap)
    w_sorted = 0.5 * (g + torch.roll(g, 1))
    w = torch.empty_like(w_sorted)
    w[order] = w_sorted
    return w


def fbp(y: Tensor, geometry: Geometry2D, oversample: int = 8, chunk: int = 1 << 24) -> Tensor:
    """Filtered back-projection ``(..., K, n) -> (..., H, W)`` (see the module docstring).

    Works per view in the frames of :func:`invdiff.operators.functional.astra_geometry.view_frames`
    (detector axis ``e_k``, cell width ``d_k``, detector offset ``o_k``, fan-beam distances), in the
    units of the geometry's window: a sinogram of line integrals in mm x (1/mm) comes back in 1/mm.
    ``oversample``: points per detector cell the filtered projections are interpolated onto before
    the back-projection (:func:`ramp_filter`). ``chunk`` bounds the number of values held at once
    (slices x views x pixels, and slices x views x padded detector samples).
    """
    g = geometry
    H, W = g.image_shape
    K, n = g.sino_shape
    dtype = y.dtype if y.dtype in (torch.float32, torch.float64) else torch.float32
    dev = y.device
    z = y.reshape(-1, K, n).to(dtype)
    N = z.shape[0]
    f = view_frames(g)

    def col(a) -> Tensor:  # per-view values as a (K, 1) column
        return torch.as_tensor(a, dtype=torch.float64, device=dev)[:, None].to(dtype)

    ex, ey, d, o = col(f.ex), col(f.ey), col(f.spacing), col(f.offset)
    cell = torch.arange(n, device=dev, dtype=dtype) - (n - 1) / 2
    angles = torch.as_tensor(f.view_angle, dtype=torch.float64, device="cpu")  # view weights: host-side
    if g.is_fan:
        nx, ny, Ds, Dd = col(f.nx), col(f.ny), col(f.source_distance), col(f.detector_distance)
        mag = (Ds + Dd) / Ds
        t_cell = (o + cell * d) / mag  # cell positions on the virtual detector through the axis
        pre = Ds / torch.sqrt(Ds**2 + t_cell**2)  # (K, n)
        spacing = d / mag
        w = view_weights(angles, 2 * math.pi) / 2
    else:
        pre, spacing = None, d
        w = view_weights(angles, math.pi)
    w = w.to(dev, dtype)[:, None] / spacing  # angular weight and the ramp's 1 / spacing, per view
    n_up = (n - 1) * oversample + 1

    # pixel centres in the window's units, y up
    x0, x1, y0, y1 = g.extent
    py_size, px_size = g.pixel_size
    xs = x0 + (torch.arange(W, device=dev, dtype=torch.float64) + 0.5) * px_size
    ys = y1 - (torch.arange(H, device=dev, dtype=torch.float64) + 0.5) * py_size
    py, px = torch.meshgrid(ys.to(dtype), xs.to(dtype), indexing="ij")
    px, py = px.reshape(-1), py.reshape(-1)

    out = torch.empty(N, H * W, device=dev, dtype=dtype)
    pad = 1 << max(6, math.ceil(math.log2(2 * n - 1)))
    n_step = max(1, chunk // max(1, K * max(H * W, pad * oversample)))
    k_step = max(1, chunk // max(1, min(n_step, N) * H * W))
    for i0 in range(0, N, n_step):
        zi = z[i0:i0 + n_step]
        if pre is not None:
            zi = zi * pre
        q = ramp_filter(zi, 1.0, oversample) * w  # (Nc, K, n_up), sample j at cell j / oversample
        acc = torch.zeros(q.shape[0], H * W, device=dev, dtype=dtype)
        for k0 in range(0, K, k_step):
            k1 = min(K, k0 + k_step)
            a = px * ex[k0:k1] + py * ey[k0:k1]  # p . e_k   (Kc, HW)
            if g.is_fan:
                U = (Ds[k0:k1] + px * nx[k0:k1] + py * ny[k0:k1]) / Ds[k0:k1]  # (D_s + p . n_k) / D_s
                u_p, weight = a / U * mag[k0:k1], U**-2  # detector coordinate of p
            else:
                u_p, weight = a, None
            idx = ((u_p - o[k0:k1]) / d[k0:k1] + (n - 1) / 2) * oversample  # fractional index on the fine grid
            gx = 2 * idx / max(n_up - 1, 1) - 1
            rows = torch.arange(k1 - k0, device=dev, dtype=dtype)
            gy = (2 * rows / max(k1 - k0 - 1, 1) - 1)[:, None].expand_as(gx)
            grid = torch.stack([gx, gy], dim=-1)[None]  # (1, Kc, HW, 2)
            # slices as channels share one grid: (1, Nc, Kc, n_up) -> (1, Nc, Kc, HW)
            vals = F.grid_sample(q[None, :, k0:k1], grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
            if weight is not None:
                vals = vals * weight
            acc = acc + vals.sum(1)
        out[i0:i0 + n_step] = acc
    return out.reshape(*y.shape[:-2], H, W).to(y.dtype)
