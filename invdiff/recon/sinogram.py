"""A measured CT sinogram with ASTRA geometry -> a reconstruction in the data's own units.

The work behind ``invdiff reconstruct SINO.h5 --solver NAME``; the data are reconstructed as they
are, nothing is simulated:

1. the operator comes from the file's geometry, in its physical units
   (:meth:`invdiff.operators.CT.from_astra`); FBP of the sinogram is the data's classical
   reconstruction (in the image's units, for instance 1/mm);
2. scale: measured data do not come in the prior's intensity range. With ``x = s x'``,

   .. math::  y = A x + n \\;\\Longleftrightarrow\\; y / s = A x' + n / s ,

   so the solver reconstructs ``x'`` in the prior's range from ``y / s`` with noise ``sigma / s``, and
   the output is ``s x'``. ``s`` is chosen so that the 0.995 quantile of ``|FBP(y)|`` lands on the
   prior's ``data_range[1]`` (:func:`invdiff.recon.scale.match_data_range`; 1 for solvers without
   a prior) unless the caller gives it (``--scale``);
3. noise: the std ``sigma`` of the measurement noise is taken from the caller (``--noise-std``), else
   from the file (``noise_std``), else estimated on the data by the MAD of the sinogram's second
   difference along the detector in air (:func:`invdiff.recon.scale.sinogram_noise_std`);
4. the solver runs on the slices as a batch; the result ``(slices, 1, H, W)`` is multiplied back
   by ``s``.

:func:`reconstruct_sinogram` returns the reconstruction and the lines the command line prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from invdiff.operators import CT
from invdiff.operators.functional.astra_geometry import to_json
from invdiff.recon.scale import (IntensityScale, given_scale, match_data_range, prior_upper,
                                 sinogram_noise_std)
from invdiff.utils import check_finite


@dataclass
class SinogramReconstruction:
    """What :func:`reconstruct_sinogram` did.

    ``reconstruction`` and ``fbp`` are ``(slices, 1, H, W)`` in the data's units; ``scale`` maps prior
    units to data units; ``noise_std`` is in the sinogram's units and ``noise_how`` says where it came
    from; ``lines`` are the messages to print.
    """

    reconstruction: Tensor
    fbp: Tensor
    operator: CT
    scale: IntensityScale
    noise_std: float
    noise_how: str
    nfe: int
    seconds: float
    units: str
    lines: list[str] = field(default_factory=list)

    def output_meta(self, out: str | Path) -> dict[str, Any]:
        """Meta for :func:`invdiff.data.save`: pixel size, units, scale, noise (NIfTI: an affine in mm)."""
        g = self.operator.geom
        _, vol = self.operator_dicts()
        meta: dict[str, Any] = {"key": "reconstruction", "vol_geom": to_json(vol), "pixel_size": g.pixel_size[1],
                                "scale": self.scale.scale, "noise_std": self.noise_std}
        if self.units:
            meta["units"] = self.units
        if str(out).lower().endswith((".nii", ".nii.gz")):
            py, px = g.pixel_size
            meta["affine"] = np.diag([px, py, 1.0, 1.0])
        return meta

    def operator_dicts(self) -> tuple[dict, dict]:
        from invdiff.operators.functional.astra_geometry import astra_dicts

        return astra_dicts(self.operator.geom)


def _as_batch(sino: Tensor, K: int, n: int) -> Tensor:
    """``(K, n)`` or ``(S, K, n)`` (or ``(S, 1, K, n)``) -> ``(S, 1, K, n)``."""
    if sino.ndim == 2:
        return sino[None, None]
    if sino.ndim == 3:
        return sino[:, None]
    if sino.ndim == 4 and sino.shape[1] == 1:
        return sino
    raise ValueError(f"sinogram: expected (n_views, n_det) or (slices, n_views, n_det) = (..., {K}, {n}), "
                     f"got shape {tuple(sino.shape)}")


def _describe(op: CT, S: int, units: str) -> str:
    g = op.geom
    kind = ("fanflat" if g.is_fan else "parallel") + ("_vec" if g.vectors is not None else "")
    H, W = g.image_shape
    dist = (f", source {g.source_distance:.4g} / detector {g.detector_distance:.4g} from the axis"
            if g.is_fan else "")
    return (f"{S} slice(s) x {g.n_views} views x {g.n_detectors} cells, {kind} geometry ({op.projector} projector), "
            f"{H}x{W} pixels of {g.pixel_size[1]:.4g} (window units), cells of {g.detector_spacing:.4g}{dist}"
            + (f"; image units {units}" if units else ""))


def reconstruct_sinogram(sinogram: Tensor, meta: dict, solver=None, scale: float | None = None,
                         noise_std: float | None = None, seed: int = 0, device: str | torch.device = "cpu",
                         progress: bool = False, quantile: float = 0.995) -> SinogramReconstruction:
    """Reconstruct a measured sinogram as it is (see the module docstring).

    Parameters
    ----------
    sinogram : Tensor
        ``(n_views, n_det)`` or ``(slices, n_views, n_det)``, as :func:`invdiff.data.load` returns it.
    meta : dict
        Its ``proj_geom`` and ``vol_geom`` (ASTRA dicts), optional ``noise_std`` and ``units``.
    solver : invdiff solver, optional
        Anything with ``reconstruct(y, op, seed=, progress=)``; its ``prior.data_range`` sets the
        working range. ``None``: filtered back-projection.
    scale : float, optional
        Data units per prior unit (default: matched on the FBP, see the module docstring).
    noise_std : float, optional
        Noise std of the sinogram, in its units (default: the file's, else an estimate).

    Returns
    -------
    SinogramReconstruction
    """
    for name in ("proj_geom", "vol_geom"):
        if meta.get(name) is None:
            raise ValueError(f"meta: a measured sinogram needs its geometry: no {name!r} (ASTRA's dict) in the meta")
    units = str(meta.get("units") or "")
    op = CT.from_astra(meta["proj_geom"], meta["vol_geom"]).to(device)
    y = _as_batch(torch.as_tensor(sinogram), op.n_views, op.n_detectors).to(device, torch.float32)
    if tuple(y.shape[-2:]) != (op.n_views, op.n_detectors):
        raise ValueError(f"sinogram: shape {tuple(sinogram.shape)} does not match proj_geom's {op.n_views} views x "
                         f"{op.n_detectors} detector cells")
    check_finite("sinogram", y)
    lines = [_describe(op, y.shape[0], units)]
    with torch.no_grad():
        fbp = op.A_dagger(y)

    # noise level, in the sinogram's units
    if noise_std is not None:
        sigma, how = float(noise_std), "given (--noise-std)"
    elif meta.get("noise_std") is not None:
        sigma, how = float(meta["noise_std"]), "from the file's noise_std attribute"
    else:
        sigma, how = sinogram_noise_std(y)
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"noise_std: expected a non-negative finite number, got {sigma!r}")
    lines.append(f"noise: std {sigma:.4g} (sinogram units), {how}")

    # intensity scale: data = s x prior units
    prior = getattr(solver, "prior", None)
    upper = prior_upper(prior)
    what = "FBP of the sinogram"
    sc = given_scale(scale, units) if scale is not None else match_data_range(fbp, upper, quantile, what, units)
    if prior is None:
        lines.append(f"scale: {sc.how} (no prior: the working range is [0, {upper:g}])")
    else:
        lines.append(f"scale: {sc.how}; the prior's data_range is {tuple(getattr(prior, 'data_range', (0, upper)))}")

    if solver is None:
        rec, nfe, seconds = fbp, 0, 0.0
        lines.append("solver: FBP (A_dagger), in the data's units")
    else:
        op_s = CT.from_astra(meta["proj_geom"], meta["vol_geom"], noise_std=sigma / sc.scale).to(device)
        r = solver.reconstruct(sc.to_prior(y), op_s, seed=seed, progress=progress)
        rec, nfe, seconds = sc.from_prior(r.mean), r.nfe, r.seconds
        lines.append(f"solver: {type(solver).__name__} on y / {sc.scale:.4g} with noise std {sigma / sc.scale:.4g}, "
                     f"output x {sc.scale:.4g}: NFE {nfe}, {seconds:.2f} s")
    lines.append(f"output in the data's units{f' ({units})' if units else ''}: shape {tuple(rec.shape)}")
    return SinogramReconstruction(rec.detach(), fbp.detach(), op, sc, sigma, how, nfe, seconds, units, lines)
