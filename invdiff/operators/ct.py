"""Computed tomography: parallel- and fan-beam projection of 2D slices, volumes slice by slice.

.. math::

    y = A x + n, \\qquad (A x)_{k, j} = \\int_{\\text{ray}(\\theta_k, u_j)} x \\, dl ,

line integrals in pixel units (pixel size 1, no normalisation). :meth:`CT.from_astra` builds the
operator from ASTRA's own geometry dictionaries instead, in their physical units (the volume window
sets the pixel size; detector width and distances in the same unit): ``A`` is then ASTRA's forward
projection for those dictionaries, and FBP returns the data's units (attenuation in 1/mm from a
dimensionless sinogram over a window in mm). With ``photon_count=I_0`` the noise
is log-Poisson instead of Gaussian: ``y = -log(max(N, 1) / I_0) / mu``,
``N ~ Poisson(I_0 exp(-mu A x))`` (:class:`invdiff.operators.noise.LogPoissonNoise`).

Layouts: images ``(B, C, H, W)`` or volumes ``(B, C, D, H, W)``; sinograms
``(B, C, [D,] n_views, n_detectors)`` for both backends. Each ``(H, W)`` slice is projected on its
own (for a volume: the same 2D geometry for every slice ``d``, a stack of fan or parallel beams).

Geometry (pixel units; see :mod:`invdiff.operators.functional.astra_ct`): the rotation axis is the
slice centre, ``y`` points up, the detector axis of view ``theta`` is ``(cos theta, sin theta)``.

* ``angles``: radians. Without them, ``n_views`` angles ``theta_k = k R / n_views`` evenly cover
  ``R = pi`` (parallel beam), ``R = 2 pi`` (fan beam, a full turn) or ``R = limited_angle`` degrees.
* ``n_detectors``: default, enough cells of width ``detector_spacing`` to see the whole slice:
  ``ceil(hypot(H, W) / d)`` for parallel beam, the shadow of the circumscribed circle for fan beam,
  rounded up to the parity of ``W`` (so that both backends centre the detector the same way).
* Fan beam (flat detector): ``source_distance = 2 max(H, W)`` from the axis,
  ``detector_distance = max(H, W)`` behind it (magnification 1.5, fan angle about 41 degrees for a
  square slice), cells of ``detector_spacing = (D_s + D_d) / D_s`` so one cell covers one pixel at
  the axis.

Backends:

* ``"astra"`` (default): ASTRA's CPU projectors (``linear`` (Joseph) for parallel beam,
  ``strip`` for fan beam; ``projector="line"`` is a faster fan-beam choice, 1-5 % away from the
  torch backend on small slices), exactly matched ``A`` / ``A^T``, joined to autograd by
  :class:`invdiff.operators.functional.astra_ct.AstraProject`, in float32 whatever the input's
  dtype; results come back on the input's device and dtype. CUDA tensors go to ASTRA's GPU
  projector (``cuda``, matched but not exactly transposed ``A^T``) when ASTRA was built with CUDA
  (:func:`invdiff.operators.functional.astra_cuda.astra_mode`), and through the CPU otherwise;
  CPU tensors always take the CPU projectors, so CPU results do not depend on a GPU being present.
  True 3D geometries (cone beam, ``parallel3d``) are :class:`invdiff.operators.CT3D` (CUDA only);
  :meth:`CT.from_astra` returns one for ASTRA's 3D dictionaries.
* ``"torch"``: deepinv's :class:`deepinv.physics.Tomography` (bilinear ray sampling, exact adjoint
  by autograd), on the input's device, in float32, differentiable to any order. The slice is
  zero-padded to a square so that its centre is the rotation axis; the fan-beam sinogram is weighted
  by ``sqrt(1 + u^2 / (D_s + D_d)^2)``, the ray length per sample, so that both backends compute line
  integrals. It needs ``H`` and ``W`` of the same parity, and for parallel beam unit detector
  spacing and ``n_detectors`` of ``W``'s parity. The two backends' sinograms differ by 1-2 %
  (parallel) and 0.5-1 % (fan, ``strip``) in relative norm on 33x33 to 64x64 phantoms, and less on
  larger slices: they discretise the same line integrals differently.

``A_dagger`` is filtered back-projection (:func:`invdiff.operators.functional.fbp.fbp`, in torch,
the same for both backends, differentiable), in the units of the geometry.

deepinv's ``Tomography`` emits no warning with the arguments given here (``normalize`` is explicit),
so none is filtered; its exact adjoint is built with deepinv's public ``adjoint_function`` and
cached per batch size and device in this module (``Tomography.A_adjoint`` caches one without a
device key, which the previous code had to reset through a private field).
"""

from __future__ import annotations

import math
from typing import Mapping

import deepinv as dinv
import numpy as np
import torch
from torch import Tensor

from invdiff.device import place
from invdiff.validate import (check_img_size, check_input, check_noise_std, check_positive_float,
                              check_positive_int)
from invdiff.operators.functional.astra_ct import (
    PROJECTORS,
    Geometry2D,
    astra_backproject,
    astra_project,
    fan_detector_count,
)
from invdiff.operators.functional.fbp import fbp
from invdiff.operators.functional.torch_radon import TorchRadon
from invdiff.operators.noise import LogPoissonNoise
from invdiff.utils import check_finite

GEOMETRIES = ("parallel", "fan")
BACKENDS = ("astra", "torch")


def _check_angles(angles) -> tuple[float, ...]:
    try:
        a = torch.as_tensor(angles, dtype=torch.float64).cpu()
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"angles: expected a 1-D sequence or tensor of angles in radians, got {type(angles).__name__}") from None
    if a.ndim != 1 or a.numel() == 0 or not torch.isfinite(a).all():
        raise ValueError(f"angles: expected a non-empty 1-D array of finite angles in radians, got shape "
                         f"{tuple(a.shape)}{'' if a.ndim != 1 or torch.isfinite(a).all() else ' with non-finite values'}")
    return tuple(a.tolist())


def _even_angles(n_views: int, geometry: str, limited_angle) -> tuple[float, ...]:
    if limited_angle is None:
        span = math.pi if geometry == "parallel" else 2 * math.pi
    else:
        if isinstance(limited_angle, bool) or not isinstance(limited_angle, (int, float, np.integer, np.floating)):
            raise TypeError(f"limited_angle: expected a number of degrees in (0, 360], got {limited_angle!r}")
        if not (math.isfinite(limited_angle) and 0 < limited_angle <= 360):
            raise ValueError(f"limited_angle: expected a number of degrees in (0, 360], got {limited_angle!r}")
        span = math.radians(limited_angle)
    return tuple((np.arange(n_views) * span / n_views).tolist())


def _noise_model(noise_std: float, photon_count, mu: float, mu_given):
    """Gaussian noise of ``noise_std``, or log-Poisson noise of ``photon_count`` and ``mu``."""
    if photon_count is not None:
        if noise_std > 0:
            raise ValueError(f"photon_count: {photon_count!r} (log-Poisson noise) cannot be combined with "
                             f"noise_std={noise_std!r}; expected noise_std=0")
        return LogPoissonNoise(photon_count=photon_count, mu=mu)
    if mu_given is not None:
        raise ValueError(f"mu: only used with photon_count (log-Poisson noise), got mu={mu_given!r}")
    return dinv.physics.GaussianNoise(sigma=noise_std)


class CT(dinv.physics.LinearPhysics):
    """Parallel- or fan-beam CT of ``(C, H, W)`` images or ``(C, D, H, W)`` volumes (slice by slice).

    Parameters
    ----------
    img_size : tuple of int
        ``(C, H, W)`` or ``(C, D, H, W)``.
    n_views : int
        Number of views, evenly spread over ``[0, pi)`` (parallel), ``[0, 2 pi)`` (fan) or
        ``limited_angle`` degrees; ignored when ``angles`` is given.
    angles : sequence or Tensor, optional
        Explicit 1-D view angles in radians.
    geometry : {"parallel", "fan"}
        Parallel beam, or fan beam with a flat detector.
    limited_angle : float, optional
        Angular range in degrees, in ``(0, 360]``, covered by the ``n_views`` views
        (``theta_k = k * limited_angle / n_views``).
    n_detectors : int, optional
        Detector cells per view (default: enough to see the whole slice, see the module docstring).
    backend : {"astra", "torch"}
        ASTRA CPU projectors (exact adjoint pair) or deepinv's ``Tomography`` (input's device).
    noise_std : float
        Standard deviation of Gaussian noise added to the sinogram (line-integral units).
    photon_count : float, optional
        Mean photon count ``I_0`` per unattenuated ray: log-Poisson noise instead of Gaussian
        (cannot be combined with ``noise_std > 0``).
    mu : float, optional
        Attenuation per unit line integral for the log-Poisson model; default ``1 / max(H, W)``
        (an object of value 1 across the whole slice transmits ``exp(-1)``).
    source_distance, detector_distance : float, optional
        Fan beam only: source-to-axis and axis-to-detector distances in pixels (defaults
        ``2 max(H, W)`` and ``max(H, W)``).
    detector_spacing : float, optional
        Cell width in pixels on the detector (default 1 for parallel beam, the magnification
        ``(D_s + D_d) / D_s`` for fan beam).
    projector : {"linear", "line", "strip"}, optional
        ASTRA projector (default ``"linear"`` for parallel, ``"strip"`` for fan beam); astra backend only.
        On CUDA tensors with an ASTRA built with CUDA, ASTRA's GPU projector ``cuda`` runs instead
        (:mod:`invdiff.operators.functional.astra_cuda`); CPU tensors always take this one.
    device : str or torch.device, optional
        Where the operator's tensors live (``None``: the CPU; ``.to(device)`` later does the same).

    Examples
    --------
    >>> import torch
    >>> from invdiff.data import shepp_logan
    >>> op = CT((1, 64, 64), n_views=90)
    >>> x = shepp_logan(64)
    >>> y = op(x)
    >>> y.shape
    torch.Size([1, 1, 90, 92])
    >>> op.A_dagger(y).shape
    torch.Size([1, 1, 64, 64])
    """

    def __init__(
        self,
        img_size,
        n_views: int = 60,
        angles: Tensor | np.ndarray | list[float] | None = None,
        geometry: str = "parallel",
        limited_angle: float | None = None,
        n_detectors: int | None = None,
        backend: str = "astra",
        noise_std: float = 0.0,
        photon_count: float | None = None,
        mu: float | None = None,
        source_distance: float | None = None,
        detector_distance: float | None = None,
        detector_spacing: float | None = None,
        projector: str | None = None,
        device: str | torch.device | None = None,
    ):
        size = check_img_size(img_size)
        H, W = size[-2:]
        if geometry not in GEOMETRIES:
            raise ValueError(f"geometry: expected one of {GEOMETRIES}, got {geometry!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
        if angles is None:
            theta = _even_angles(check_positive_int("n_views", n_views), geometry, limited_angle)
        else:
            if limited_angle is not None:
                raise ValueError(f"limited_angle: {limited_angle!r} cannot be combined with explicit angles; "
                                 f"expected limited_angle=None")
            theta = _check_angles(angles)
        noise_std = check_noise_std(noise_std)

        Ds = Dd = None
        if geometry == "fan":
            N = max(H, W)
            Ds = check_positive_float("source_distance", 2.0 * N if source_distance is None else source_distance)
            Dd = check_positive_float("detector_distance", 1.0 * N if detector_distance is None else detector_distance)
            R = math.hypot(H, W) / 2
            if Ds <= R:
                raise ValueError(f"source_distance: expected more than {R:.4g} (the radius of the circle around a "
                                 f"{H}x{W} slice: the source must lie outside the object), got {source_distance!r}")
        elif source_distance is not None or detector_distance is not None:
            raise ValueError(f"source_distance/detector_distance: only for geometry='fan', got "
                             f"{source_distance!r}/{detector_distance!r} with geometry='parallel'")
        if detector_spacing is None:
            d = 1.0 if geometry == "parallel" else (Ds + Dd) / Ds
        else:
            d = check_positive_float("detector_spacing", detector_spacing)
        if n_detectors is None:
            n = math.ceil(math.hypot(H, W) / d - 1e-9) if geometry == "parallel" else fan_detector_count(H, W, Ds, Dd, d)
            n += (n - W) % 2
        else:
            n = check_positive_int("n_detectors", n_detectors)

        if backend == "astra":
            projector = ("linear" if geometry == "parallel" else "strip") if projector is None else projector
            if projector not in PROJECTORS or (geometry == "fan" and projector == "linear"):
                want = PROJECTORS if geometry == "parallel" else ("line", "strip")
                raise ValueError(f"projector: expected one of {want} for geometry={geometry!r}, got {projector!r}")
        elif projector is not None:
            raise ValueError(f"projector: only for backend='astra', got {projector!r} with backend='torch'")

        noise_model = _noise_model(noise_std, photon_count, 1.0 / max(H, W) if mu is None else mu, mu)
        self._setup(size, Geometry2D(H, W, theta, n, d, Ds, Dd), backend, projector, noise_model)
        place(self, device)

    def _setup(self, size: tuple, geom: Geometry2D, backend: str, projector: str | None, noise_model) -> None:
        super().__init__(img_size=size, noise_model=noise_model)
        self.img_size = size
        self.geometry = "fan" if geom.is_fan else "parallel"
        self.backend = backend
        self.projector = projector
        self.geom = geom
        self.angles = torch.tensor(geom.angles, dtype=torch.float64)
        self.meas_size = (*size[:-2], geom.n_views, geom.n_detectors)
        self.radon = TorchRadon(geom) if backend == "torch" else None

    @classmethod
    def from_astra(cls, proj_geom: Mapping, vol_geom: Mapping, slices: int | None = None, channels: int = 1,
                   noise_std: float = 0.0, photon_count: float | None = None, mu: float | None = None,
                   projector: str | None = None, device: str | torch.device | None = None) -> "CT":
        """The operator of ASTRA's own 2D geometry dictionaries, in their physical units.

        ``vol_geom`` (``astra.create_vol_geom(H, W, min_x, max_x, min_y, max_y)``) sets the slice and
        its extent, so the pixel size is ``(max_x - min_x) / W`` (square pixels); ``proj_geom`` is
        ``parallel``, ``fanflat``, ``parallel_vec`` or ``fanflat_vec``
        (:mod:`invdiff.operators.functional.astra_geometry`), with ``DetectorWidth`` and the source
        and detector distances in the same units. ``A`` is ASTRA's forward projection for exactly
        these dictionaries (line integrals in those units: attenuation in 1/mm and a window in mm give
        a dimensionless sinogram), ``A_adjoint`` its exact adjoint, and ``A_dagger`` (FBP) returns
        the data's own units. Always the ``"astra"`` backend.

        Parameters
        ----------
        proj_geom, vol_geom : dict
            ASTRA's dictionaries (numpy arrays or lists for ``ProjectionAngles`` / ``Vectors``).
        slices : int, optional
            A stack of ``slices`` such slices: ``img_size = (channels, slices, H, W)``.
        channels : int
            Channels ``C`` of ``img_size``.
        noise_std, photon_count, mu : see :class:`CT` (``mu`` defaults to ``1 / max(H, W)`` pixel
            sizes, per unit of line integral in the window's units).
        projector : {"linear", "line", "strip"}, optional
            ASTRA CPU projector: default ``"linear"`` (parallel), ``"strip"`` (fanflat), ``"line"``
            (fanflat_vec, the only one ASTRA accepts for it).

        Examples
        --------
        >>> import astra, numpy as np
        >>> vol = astra.create_vol_geom(64, 64, -25.6, 25.6, -25.6, 25.6)        # 0.8 mm pixels
        >>> proj = astra.create_proj_geom("fanflat", 1.2, 96, np.linspace(0, 2 * np.pi, 90, endpoint=False),
        ...                               100.0, 50.0)                          # mm
        >>> op = CT.from_astra(proj, vol)
        >>> op.meas_size
        (1, 90, 96)
        """
        from invdiff.operators.functional.astra_geometry import geometry_from_astra

        if isinstance(vol_geom, Mapping) and "GridSliceCount" in vol_geom:  # a true 3D geometry: CUDA only
            from invdiff.operators.ct3d import CT3D

            if slices is not None or photon_count is not None or mu is not None or projector is not None:
                raise ValueError("vol_geom: a 3D geometry (GridSliceCount) takes no slices, photon_count, mu or "
                                 "projector; expected only channels, noise_std and device")
            return CT3D.from_astra(proj_geom, vol_geom, channels=channels, noise_std=noise_std, device=device)
        geom = geometry_from_astra(proj_geom, vol_geom)
        H, W = geom.image_shape
        size = (check_positive_int("channels", channels), H, W) if slices is None else \
            (check_positive_int("channels", channels), check_positive_int("slices", slices), H, W)
        if projector is None:
            projector = "linear" if not geom.is_fan else ("line" if geom.vectors is not None else "strip")
        kind = proj_geom["type"]
        want = PROJECTORS if not geom.is_fan else ("line",) if geom.vectors is not None else ("line", "strip")
        if projector not in want:
            raise ValueError(f"projector: expected one of {want} for a {kind!r} geometry, got {projector!r}")
        default_mu = 1.0 / (max(H, W) * geom.pixel_size[1])
        noise_model = _noise_model(check_noise_std(noise_std), photon_count, default_mu if mu is None else mu, mu)
        op = cls.__new__(cls)
        op._setup(size, geom, "astra", projector, noise_model)
        return place(op, device)

    # -- geometry --------------------------------------------------------------------------------
    @property
    def n_views(self) -> int:
        return self.geom.n_views

    @property
    def n_detectors(self) -> int:
        return self.geom.n_detectors

    @property
    def detector_spacing(self) -> float:
        return self.geom.detector_spacing

    @property
    def source_distance(self) -> float | None:
        return self.geom.source_distance

    @property
    def detector_distance(self) -> float | None:
        return self.geom.detector_distance

    @property
    def noise_std(self) -> float | None:
        """Gaussian noise std; ``None`` under log-Poisson noise (no single Gaussian level)."""
        sigma = getattr(self.noise_model, "sigma", None)
        return None if sigma is None else float(sigma)

    def extra_repr(self) -> str:
        return (f"img_size={self.img_size}, n_views={self.n_views}, n_detectors={self.n_detectors}, "
                f"geometry={self.geometry!r}, backend={self.backend!r}")

    # -- operator --------------------------------------------------------------------------------
    def A(self, x: Tensor, **kwargs) -> Tensor:
        """Sinogram ``A x``: ``(B, C, [D,] H, W) -> (B, C, [D,] n_views, n_detectors)``."""
        check_input("x", x, self.img_size)
        if self.backend == "astra":
            return astra_project(x, self.geom, self.projector)
        y = self.radon(x.reshape(-1, *self.geom.image_shape))
        return y.reshape(*x.shape[:-2], *self.geom.sino_shape).to(x.dtype)

    def A_adjoint(self, y: Tensor, **kwargs) -> Tensor:
        """Back-projection ``A^T y``, the exact adjoint of :meth:`A`."""
        check_input("y", y, self.meas_size)
        if self.backend == "astra":
            return astra_backproject(y, self.geom, self.projector)
        x = self.radon.adjoint(y.reshape(-1, *self.geom.sino_shape))
        return x.reshape(*y.shape[:-2], *self.geom.image_shape).to(y.dtype)

    def A_dagger(self, y: Tensor, **kwargs) -> Tensor:
        """Filtered back-projection (Ram-Lak filter; fan beam with distance weights), in torch.

        A 128x128 Shepp-Logan phantom projected on 180 parallel-beam views comes back at 27.4 dB
        PSNR (27.1 dB with ``backend="torch"``; 27.8 dB from 360 fan-beam views).
        """
        check_input("y", y, self.meas_size)
        check_finite("y", y)
        return fbp(y, self.geom)
