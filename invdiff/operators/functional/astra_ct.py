"""2D CT geometry and ASTRA's CPU projectors, joined to autograd.

Coordinates (pixel units). Pixel ``(i, j)`` (row ``i``, column ``j``) of an ``H x W`` slice has its
centre at

.. math::

    x_j = j - \\frac{W - 1}{2}, \\qquad y_i = \\frac{H - 1}{2} - i ,

so the rotation axis passes through the centre of the slice and ``y`` points up. A view at angle
``theta`` (radians) has the detector axis ``e = (cos theta, sin theta)``; detector cell ``k`` of
``n`` lies at ``u_k = (k - (n - 1) / 2) d`` (``d`` the cell width).

* Parallel beam: cell ``k`` measures the line integral along ``{u_k e + t e_perp}``; a point ``p``
  falls on ``u = p . e``.
* Fan beam, flat detector: the source sits at ``-D_s n`` and the detector line at ``+D_d n``
  (``n = (-sin theta, cos theta)``); a point ``p`` falls on ``u = (D_s + D_d) (p . e) / (D_s + p . n)``.

With a volume window (``Geometry2D.window``, ASTRA's ``WindowMinX`` ...), pixel centres are
``x_j = min_x + (j + 1/2) p``, ``y_i = max_y - (i + 1/2) p`` and every length (detector cells,
distances) is in the window's units; ``Geometry2D.vectors`` holds ASTRA's ``parallel_vec`` /
``fanflat_vec`` rows (:mod:`invdiff.operators.functional.astra_geometry`).

This is ASTRA's ``parallel`` / ``fanflat`` convention (its volume ``y`` axis points up), which the
tests check against deepinv's ``Tomography`` (same ``theta`` in degrees for parallel beam,
``theta + 90`` degrees for its fan beam).

ASTRA's CPU projectors compute ``A`` (forward projection) and ``A^T`` (back-projection) with the
same weights, so they are exact adjoints of each other. CUDA tensors go to ASTRA's GPU projector
instead when ASTRA has CUDA (:mod:`invdiff.operators.functional.astra_cuda`; the CPU path is unchanged). :class:`AstraProject` and
:class:`AstraBackproject` are ``torch.autograd.Function`` s whose backward passes apply the other
one (``d/dx <g, A x> = A^T g``), so gradients of any order flow through them. Only ASTRA's 2D
calls are used here: its 3D calls need a GPU and abort the process without one; volumes are handled
slice by slice (true 3D geometries: :class:`invdiff.operators.CT3D`, CUDA only). Each call creates one projector and deletes it when done (about 1 ms, small against
the projection itself; nothing is left to free, and operators can be copied or pickled safely).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import astra
import numpy as np
import torch
from torch import Tensor

from invdiff.operators.functional.astra_cuda import astra_mode, cuda2d_apply

PROJECTORS = ("linear", "line", "strip")


@dataclass(frozen=True)
class Geometry2D:
    """A 2D CT acquisition: slice size, view angles, detector and (for fan beam) distances.

    Parameters
    ----------
    height, width : int
        Slice size ``H x W`` in pixels (pixel size 1).
    angles : tuple of float
        View angles in radians.
    n_detectors : int
        Detector cells per view.
    detector_spacing : float
        Cell width ``d`` in pixel units (on the detector, for fan beam).
    source_distance, detector_distance : float or None
        Fan beam: source-to-axis ``D_s`` and axis-to-detector ``D_d`` distances in pixel units;
        ``None`` for parallel beam.
    window : (min_x, max_x, min_y, max_y) or None
        The slice's extent in physical units (ASTRA's ``WindowMinX`` ...); ``None``: pixel units,
        centred (``-W/2 .. W/2``, ``-H/2 .. H/2``). All lengths above are then in the window's units.
    vectors : tuple of 6-tuples or None
        ASTRA's ``parallel_vec`` rows ``(ray_x, ray_y, d_x, d_y, u_x, u_y)`` or ``fanflat_vec`` rows
        ``(src_x, src_y, d_x, d_y, u_x, u_y)``, one per view. When given they define the acquisition
        and ``angles``, ``detector_spacing``, ``source_distance``, ``detector_distance`` are summaries
        (per-view angle of the detector axis, mean cell width and distances) for display.
    """

    height: int
    width: int
    angles: tuple[float, ...]
    n_detectors: int
    detector_spacing: float = 1.0
    source_distance: float | None = None
    detector_distance: float | None = None
    window: tuple[float, float, float, float] | None = None
    vectors: tuple[tuple[float, ...], ...] | None = None

    @property
    def is_fan(self) -> bool:
        return self.source_distance is not None

    @property
    def n_views(self) -> int:
        return len(self.angles)

    @property
    def image_shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def sino_shape(self) -> tuple[int, int]:
        return (self.n_views, self.n_detectors)

    @property
    def detector_positions(self) -> np.ndarray:
        """``u_k = (k - (n - 1) / 2) d`` for ``k = 0 .. n - 1`` (float64)."""
        return (np.arange(self.n_detectors) - (self.n_detectors - 1) / 2) * self.detector_spacing

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """``(min_x, max_x, min_y, max_y)`` of the slice (pixel units, centred, without a window)."""
        if self.window is not None:
            return self.window
        return (-self.width / 2, self.width / 2, -self.height / 2, self.height / 2)

    @property
    def pixel_size(self) -> tuple[float, float]:
        """``(size along y (rows), size along x (columns))`` in the window's units."""
        x0, x1, y0, y1 = self.extent
        return ((y1 - y0) / self.height, (x1 - x0) / self.width)


def astra_projector_type(geometry: Geometry2D, projector: str) -> str:
    """ASTRA's CPU projector name: ``linear`` | ``line`` | ``strip`` (``*_fanflat`` for fan beam)."""
    if projector not in PROJECTORS:
        raise ValueError(f"projector: expected one of {PROJECTORS}, got {projector!r}")
    if not geometry.is_fan:
        return projector
    if projector == "linear":
        raise ValueError("projector: ASTRA has no CPU 'linear' projector for fan beam; expected 'line' or 'strip'")
    if projector == "strip" and geometry.vectors is not None:
        raise ValueError("projector: ASTRA's CPU 'strip' projector does not take fanflat_vec geometries; expected 'line'")
    return f"{projector}_fanflat"


def astra_geometries(geometry: Geometry2D) -> tuple[dict, dict]:
    """ASTRA's 2D volume and projection geometries for ``geometry``."""
    if geometry.window is None:
        vol = astra.create_vol_geom(geometry.height, geometry.width)
    else:
        x0, x1, y0, y1 = geometry.window
        vol = astra.create_vol_geom(geometry.height, geometry.width, x0, x1, y0, y1)
    angles = np.asarray(geometry.angles, dtype=np.float64)
    if geometry.vectors is not None:
        kind = "fanflat_vec" if geometry.is_fan else "parallel_vec"
        proj = astra.create_proj_geom(kind, geometry.n_detectors, np.asarray(geometry.vectors, dtype=np.float64))
    elif geometry.is_fan:
        proj = astra.create_proj_geom("fanflat", geometry.detector_spacing, geometry.n_detectors, angles,
                                      geometry.source_distance, geometry.detector_distance)
    else:
        proj = astra.create_proj_geom("parallel", geometry.detector_spacing, geometry.n_detectors, angles)
    return vol, proj


def _astra_apply(z: Tensor, geometry: Geometry2D, projector: str, adjoint: bool) -> Tensor:
    """``A z`` (``(N, H, W) -> (N, K, n)``) or ``A^T z`` (``(N, K, n) -> (N, H, W)``) with ASTRA.

    A CUDA tensor goes to ASTRA's GPU projector when ASTRA has CUDA
    (:func:`invdiff.operators.functional.astra_cuda.astra_mode`); otherwise this CPU path computes
    in float32 (ASTRA's precision) on contiguous CPU tensors, which ASTRA reads and writes in place
    (DLPack, no copies); the result goes back to ``z``'s device and dtype.
    """
    out_shape = geometry.image_shape if adjoint else geometry.sino_shape
    if astra_mode(z.device) == "cuda":  # a CUDA tensor and an ASTRA with CUDA: the GPU projector, in place
        vol_geom, proj_geom = astra_geometries(geometry)
        return cuda2d_apply(z, vol_geom, proj_geom, out_shape, adjoint)
    src = z.detach().to("cpu", torch.float32).contiguous()
    out = torch.empty((src.shape[0], *out_shape), dtype=torch.float32, device="cpu")
    vol_geom, proj_geom = astra_geometries(geometry)
    pid = astra.create_projector(astra_projector_type(geometry, projector), proj_geom, vol_geom)
    try:
        run = astra.projector.direct_BP if adjoint else astra.projector.direct_FP
        for i in range(src.shape[0]):  # ASTRA 2D works slice by slice (and threads within a slice)
            run(pid, src[i], out=out[i])
    finally:
        astra.projector.delete(pid)
    return out.to(z.device, z.dtype)


class AstraProject(torch.autograd.Function):
    """``y = A x`` for ``x`` of shape ``(N, H, W)``; backward applies ``A^T``."""

    @staticmethod
    def forward(ctx, x: Tensor, geometry: Geometry2D, projector: str) -> Tensor:
        ctx.geometry, ctx.projector = geometry, projector
        return _astra_apply(x, geometry, projector, adjoint=False)

    @staticmethod
    def backward(ctx, grad_y: Tensor):
        return AstraBackproject.apply(grad_y, ctx.geometry, ctx.projector), None, None


class AstraBackproject(torch.autograd.Function):
    """``x = A^T y`` for ``y`` of shape ``(N, K, n)``; backward applies ``A``."""

    @staticmethod
    def forward(ctx, y: Tensor, geometry: Geometry2D, projector: str) -> Tensor:
        ctx.geometry, ctx.projector = geometry, projector
        return _astra_apply(y, geometry, projector, adjoint=True)

    @staticmethod
    def backward(ctx, grad_x: Tensor):
        return AstraProject.apply(grad_x, ctx.geometry, ctx.projector), None, None


def astra_project(x: Tensor, geometry: Geometry2D, projector: str = "linear") -> Tensor:
    """Forward projection ``(..., H, W) -> (..., K, n)``, slice by slice, differentiable."""
    lead = x.shape[:-2]
    y = AstraProject.apply(x.reshape(-1, *geometry.image_shape), geometry, projector)
    return y.reshape(*lead, *geometry.sino_shape)


def astra_backproject(y: Tensor, geometry: Geometry2D, projector: str = "linear") -> Tensor:
    """Exact adjoint of :func:`astra_project`: ``(..., K, n) -> (..., H, W)``, differentiable."""
    lead = y.shape[:-2]
    x = AstraBackproject.apply(y.reshape(-1, *geometry.sino_shape), geometry, projector)
    return x.reshape(*lead, *geometry.image_shape)


def fan_detector_count(height: int, width: int, source_distance: float, detector_distance: float,
                       detector_spacing: float) -> int:
    """Cells a flat detector needs to see the circle circumscribing an ``H x W`` slice from the source.

    The tangent rays to the circle of radius ``R = hypot(H, W) / 2`` hit the detector at
    ``u = +-(D_s + D_d) R / sqrt(D_s^2 - R^2)``.
    """
    R = math.hypot(height, width) / 2
    half = (source_distance + detector_distance) * R / math.sqrt(source_distance**2 - R**2)
    return math.ceil(2 * half / detector_spacing)
