"""3D CT, parallel-beam (``parallel3d``) or cone-beam (``cone``), on ASTRA's CUDA projectors.

.. math::

    y = A x + n, \\qquad (A x)_{r, k, c} = \\int_{\\text{ray}(r, \\theta_k, c)} x \\, dl ,

line integrals through a volume ``x`` of ``(D, H, W)`` voxels (ASTRA's slices, rows, columns)
along the ray from the source (cone beam) or along the view direction (parallel beam) to detector
cell ``(r, c)`` of view ``k``. Unlike :class:`invdiff.operators.CT`, which projects each slice
on its own (a stack of 2D fan or parallel beams), a cone beam crosses slices, so the volume is
projected as one.

Default geometry (voxel units, volume centred on the rotation axis, which is the ``z`` axis, the
slice axis): ``n_views`` angles over ``pi`` (parallel3d) or ``2 pi`` (cone); cone beam with the
source ``D_s = 2 max(H, W)`` from the axis and the detector ``D_d = max(H, W)`` behind it, cells of
``(D_s + D_d) / D_s`` (one voxel at the axis), enough rows and columns to see the whole volume.
:meth:`CT3D.from_astra` takes ASTRA's own 3D dictionaries (``parallel3d``, ``cone``,
``parallel3d_vec``, ``cone_vec``) in their physical units instead.

Layouts: volumes ``(B, C, D, H, W)``; projections ``(B, C, rows, n_views, cols)`` (ASTRA's
detector-row-first layout).

Device: ASTRA has no CPU implementation of 3D projection, and its 3D calls abort the process
without CUDA. The operator can be built anywhere (its geometry, shapes and :meth:`CT3D.projector`
are plain Python), but ``A`` and ``A_adjoint`` raise a ``RuntimeError`` unless ASTRA has CUDA
(:func:`invdiff.operators.functional.astra_cuda.require_cuda3d`). Inputs may be CPU or CUDA tensors;
results come back on the input's device. ``A_adjoint`` is ASTRA's GPU back-projection (matched, not
the exact transpose, see :mod:`invdiff.operators.functional.astra_cuda`); ``A_dagger`` is deepinv's
least-squares solve (conjugate gradients on the normal equations, ``max_iter`` steps).
"""

from __future__ import annotations

import math
from typing import Mapping

import astra
import deepinv as dinv
import numpy as np
import torch
from torch import Tensor

from invdiff.device import place
from invdiff.operators.functional.astra_cuda import astra_has_cuda, cuda3d_apply, require_cuda3d
from invdiff.validate import check_img_size, check_input, check_noise_std, check_positive_float, check_positive_int

GEOMETRIES_3D = ("parallel3d", "cone", "parallel3d_vec", "cone_vec")


def _dims_3d(proj_geom: Mapping, vol_geom: Mapping) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """``((D, H, W), (rows, K, cols))`` of ASTRA's 3D dictionaries, checked."""
    for name, d in (("vol_geom", vol_geom), ("proj_geom", proj_geom)):
        if not isinstance(d, Mapping):
            raise TypeError(f"{name}: expected ASTRA's 3D geometry dict, got {type(d).__name__}")
    try:
        D, H, W = (int(vol_geom[k]) for k in ("GridSliceCount", "GridRowCount", "GridColCount"))
        kind = proj_geom["type"]
        rows, cols = int(proj_geom["DetectorRowCount"]), int(proj_geom["DetectorColCount"])
    except KeyError as exc:
        raise ValueError(f"vol_geom/proj_geom: missing key {exc} of ASTRA's 3D geometry") from None
    if kind not in GEOMETRIES_3D:
        raise ValueError(f"proj_geom['type']: expected one of {GEOMETRIES_3D}, got {kind!r}")
    if kind.endswith("_vec"):
        K = len(np.asarray(proj_geom["Vectors"]).reshape(-1, 12))
    else:
        K = len(np.asarray(proj_geom["ProjectionAngles"]).reshape(-1))
    if min(D, H, W, rows, cols, K) < 1:
        raise ValueError(f"vol_geom/proj_geom: expected positive sizes, got volume {(D, H, W)}, detector "
                         f"{rows}x{cols}, {K} views")
    return (D, H, W), (rows, K, cols)


class _Apply3D(torch.autograd.Function):
    """``A z`` (``adjoint=False``) or ``A^T z`` of ``op``; the backward pass applies the other one."""

    @staticmethod
    def forward(ctx, z: Tensor, op: "CT3D", adjoint: bool) -> Tensor:
        ctx.op, ctx.adjoint = op, adjoint
        out_shape = op.volume_shape if adjoint else op.proj_shape
        return cuda3d_apply(z, op.vol_geom, op.proj_geom, out_shape, adjoint=adjoint)

    @staticmethod
    def backward(ctx, g: Tensor):
        return _Apply3D.apply(g, ctx.op, not ctx.adjoint), None, None


class CT3D(dinv.physics.LinearPhysics):
    """Parallel-beam (``parallel3d``) or cone-beam CT of ``(C, D, H, W)`` volumes on ASTRA's CUDA projectors.

    Parameters
    ----------
    img_size : tuple of int
        ``(C, D, H, W)``; ``D`` runs along the rotation axis.
    n_views : int
        Views evenly spread over ``[0, pi)`` (parallel3d) or ``[0, 2 pi)`` (cone); ignored with ``angles``.
    angles : sequence, optional
        View angles in radians.
    geometry : {"cone", "parallel3d"}
    det_rows, det_cols : int, optional
        Detector size (default: enough to see the whole volume).
    source_distance, detector_distance : float, optional
        Cone beam: source-to-axis and axis-to-detector distances in voxels (``2 max(H, W)``, ``max(H, W)``).
    noise_std : float
        Gaussian noise on the projections.
    device : str or torch.device, optional
        Where the operator's tensors live (it has none of its own: ASTRA follows the input's device).

    Examples
    --------
    >>> op = CT3D((1, 8, 16, 16), n_views=12, geometry="cone")
    >>> op.meas_size, op.projector(cuda=True)
    ((1, 13, 12, 25), 'cuda3d')
    """

    def __init__(self, img_size, n_views: int = 60, angles=None, geometry: str = "cone", det_rows: int | None = None,
                 det_cols: int | None = None, source_distance: float | None = None,
                 detector_distance: float | None = None, noise_std: float = 0.0,
                 device: str | torch.device | None = None):
        C, D, H, W = check_img_size(img_size, ndims=(4,))
        if geometry not in ("cone", "parallel3d"):
            raise ValueError(f"geometry: expected 'cone' or 'parallel3d', got {geometry!r}")
        if angles is None:
            span = math.pi if geometry == "parallel3d" else 2 * math.pi
            angles = np.arange(check_positive_int("n_views", n_views)) * span / n_views
        angles = np.asarray(angles, dtype=np.float64).reshape(-1)
        if angles.size == 0 or not np.isfinite(angles).all():
            raise ValueError(f"angles: expected a non-empty 1-D array of finite angles in radians, got {angles.size} values")
        N, R = max(H, W), math.hypot(H, W) / 2
        if geometry == "parallel3d":
            if source_distance is not None or detector_distance is not None:
                raise ValueError("source_distance/detector_distance: only for geometry='cone'")
            rows = D if det_rows is None else check_positive_int("det_rows", det_rows)
            cols = math.ceil(2 * R - 1e-9) if det_cols is None else check_positive_int("det_cols", det_cols)
            cols += (cols - W) % 2 if det_cols is None else 0
            proj = astra.create_proj_geom("parallel3d", 1.0, 1.0, rows, cols, angles)
        else:
            Ds = check_positive_float("source_distance", 2.0 * N if source_distance is None else source_distance)
            Dd = check_positive_float("detector_distance", 1.0 * N if detector_distance is None else detector_distance)
            if Ds <= R:
                raise ValueError(f"source_distance: expected more than {R:.4g} (the volume's radius), got {Ds!r}")
            d = (Ds + Dd) / Ds
            half_u = (Ds + Dd) * R / math.sqrt(Ds**2 - R**2)  # shadow of the circumscribed cylinder
            half_v = (Ds + Dd) * (D / 2) / (Ds - R)  # the top edge nearest the source magnifies most
            cols = math.ceil(2 * half_u / d) if det_cols is None else check_positive_int("det_cols", det_cols)
            rows = math.ceil(2 * half_v / d) if det_rows is None else check_positive_int("det_rows", det_rows)
            proj = astra.create_proj_geom("cone", d, d, rows, cols, angles, Ds, Dd)
        vol = astra.create_vol_geom(H, W, D)
        self._setup((C, D, H, W), proj, vol, noise_std)
        place(self, device)

    def _setup(self, size: tuple, proj_geom: Mapping, vol_geom: Mapping, noise_std: float) -> None:
        vol_dims, proj_dims = _dims_3d(proj_geom, vol_geom)
        if tuple(size[1:]) != vol_dims:
            raise ValueError(f"img_size: {size} does not match vol_geom's (slices, rows, cols) = {vol_dims}")
        super().__init__(img_size=size, noise_model=dinv.physics.GaussianNoise(sigma=check_noise_std(noise_std)),
                         max_iter=30)
        self.img_size = size
        self.proj_geom, self.vol_geom = dict(proj_geom), dict(vol_geom)
        self.geometry = proj_geom["type"]
        self.volume_shape, self.proj_shape = vol_dims, proj_dims
        self.meas_size = (size[0], *proj_dims)

    @classmethod
    def from_astra(cls, proj_geom: Mapping, vol_geom: Mapping, channels: int = 1, noise_std: float = 0.0,
                   device: str | torch.device | None = None) -> "CT3D":
        """The operator of ASTRA's own 3D dictionaries (``astra.create_vol_geom(H, W, D, ...)`` and a
        ``parallel3d``, ``cone``, ``parallel3d_vec`` or ``cone_vec`` projection geometry), in their units."""
        vol_dims, _ = _dims_3d(proj_geom, vol_geom)
        op = cls.__new__(cls)
        op._setup((check_positive_int("channels", channels), *vol_dims), proj_geom, vol_geom, noise_std)
        return place(op, device)

    def projector(self, cuda: bool | None = None) -> str:
        """ASTRA's projector for this geometry: ``"cuda3d"``; raises without CUDA (``cuda``: override the check)."""
        require_cuda3d(self.geometry, cuda)
        return "cuda3d"

    @property
    def noise_std(self) -> float:
        return float(self.noise_model.sigma)

    def extra_repr(self) -> str:
        return f"img_size={self.img_size}, geometry={self.geometry!r}, meas_size={self.meas_size}, cuda={astra_has_cuda()}"

    def A(self, x: Tensor, **kwargs) -> Tensor:
        """Projections ``(B, C, D, H, W) -> (B, C, rows, n_views, cols)``."""
        check_input("x", x, self.img_size)
        self.projector()
        y = _Apply3D.apply(x.reshape(-1, *self.volume_shape), self, False)
        return y.reshape(*x.shape[:2], *self.proj_shape)

    def A_adjoint(self, y: Tensor, **kwargs) -> Tensor:
        """Back-projection ``(B, C, rows, n_views, cols) -> (B, C, D, H, W)`` (ASTRA's matched GPU back-projector)."""
        check_input("y", y, self.meas_size)
        self.projector()
        x = _Apply3D.apply(y.reshape(-1, *self.proj_shape), self, True)
        return x.reshape(*y.shape[:2], *self.volume_shape)
