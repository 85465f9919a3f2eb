"""Measured CT sinograms in HDF5, with ASTRA's geometry: invdiff's own layout and LoDoPaB-CT.

invdiff sinogram file (``docs/sinogram_format.md``)
    * dataset ``sinogram``: float, ``(n_views, n_det)`` or ``(slices, n_views, n_det)``: line integrals
      (post-log), in the length units of the geometry times the image's units (for instance a
      dimensionless sinogram of attenuation in 1/mm over a window in mm);
    * attribute ``proj_geom``: JSON text of ASTRA's projection geometry dict (``parallel``,
      ``fanflat``, ``parallel_vec``, ``fanflat_vec``; ``ProjectionAngles`` a list, ``Vectors`` a nested
      list);
    * attribute ``vol_geom``: JSON text of ASTRA's 2D volume geometry dict (``GridRowCount``,
      ``GridColCount``, ``option`` with ``WindowMinX/MaxX/MinY/MaxY``);
    * optional attribute ``noise_std``: the standard deviation of the (Gaussian) noise on ``sinogram``;
    * optional attribute ``units``: the image's units (for instance ``"1/mm"``), reported back.

LoDoPaB-CT observation files (Leuschner et al., Sci. Data 2021; ``data_scripts/convert_lodopab.py``)
    ``observation_*.hdf5``: dataset ``data`` ``(N, 1000, 513)``, post-log low-dose sinograms, no
    attributes. Their geometry is fixed (dival's ``LoDoPaBDataset``, built with ODL): a 362x362 slice
    covering ``[-0.13, 0.13]^2`` m, parallel beam, 1000 angles ``phi_k = (k + 1/2) pi / 1000``, 513 cells
    over ``[-0.13 sqrt 2, 0.13 sqrt 2]`` m. ODL's first image axis is ``x_0`` and its detector axis at
    angle ``phi`` is ``(cos phi, sin phi)`` in ``(x_0, x_1)``; read as rows and columns with ``y`` up
    (invdiff and ASTRA), that is ASTRA's ``parallel`` geometry at ``theta_k = phi_k - pi / 2``. The
    values are line integrals (in m) of the attenuation divided by ``MU_MAX = 81.35858 / m``
    (3071 HU), so the image comes back in ``[0, 1]`` as the ground-truth files hold it. (The
    geometry is derived from dival's and ODL's documented conventions; no LoDoPaB file was at hand
    to check the orientation against its ground truth.)

:func:`load_sinogram` returns ``(tensor, meta)`` as :func:`invdiff.data.load` does (``tensor`` as
stored, float32; ``meta["proj_geom"]``, ``meta["vol_geom"]`` dicts, ``noise_std`` and ``units`` if
known, ``format``); :func:`save_sinogram` writes the invdiff layout atomically.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np
import torch
from torch import Tensor

from invdiff.operators.functional.astra_geometry import from_json, geometry_from_astra, to_json
from invdiff.utils import atomic_path

LODOPAB_SHAPE = (1000, 513)
LODOPAB_MU_MAX = 3071 * (20.0 - 0.02) / 1000 + 20.0  # 1/m: dival.util.constants.MU_MAX (water 20/m, air 0.02/m)
LODOPAB_UNITS = f"mu / {LODOPAB_MU_MAX:.5f} per m (LoDoPaB's normalised attenuation)"


def lodopab_geometry() -> tuple[dict, dict]:
    """ASTRA ``(proj_geom, vol_geom)`` of LoDoPaB-CT, lengths in metres (see the module docstring)."""
    half = 0.13
    rho = half * math.sqrt(2.0)
    n_views, n_det = LODOPAB_SHAPE
    phi = (np.arange(n_views) + 0.5) * math.pi / n_views
    proj = {"type": "parallel", "DetectorWidth": 2 * rho / n_det, "DetectorCount": n_det,
            "ProjectionAngles": (phi - math.pi / 2).tolist()}
    vol = {"GridRowCount": 362, "GridColCount": 362,
           "option": {"WindowMinX": -half, "WindowMaxX": half, "WindowMinY": -half, "WindowMaxY": half}}
    return proj, vol


def is_sinogram_h5(path: str | os.PathLike) -> bool:
    """Whether an HDF5 file holds an invdiff sinogram (``sinogram`` dataset) or a LoDoPaB observation."""
    try:
        with h5py.File(path, "r") as f:
            if isinstance(f.get("sinogram"), h5py.Dataset):
                return True
            d = f.get("data")
            return isinstance(d, h5py.Dataset) and d.ndim == 3 and tuple(d.shape[1:]) == LODOPAB_SHAPE
    except OSError:
        return False


def _attr(f: h5py.File, name: str, path: Path):
    if name not in f.attrs:
        raise ValueError(f"{path}: the sinogram file has no attribute {name!r} (the JSON text of ASTRA's "
                         f"{'projection' if name == 'proj_geom' else 'volume'} geometry dict); attributes: "
                         f"{sorted(f.attrs)}")
    return from_json(f.attrs[name], f"{path}: attribute {name!r}")


def load_sinogram(path: str | os.PathLike) -> tuple[Tensor, dict]:
    """Read an invdiff sinogram file or a LoDoPaB-CT observation file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with h5py.File(path, "r") as f:
        if "sinogram" in f:
            arr = np.asarray(f["sinogram"][()])
            proj, vol = _attr(f, "proj_geom", path), _attr(f, "vol_geom", path)
            meta: dict[str, Any] = {"format": "sinogram-h5", "key": "sinogram", "proj_geom": proj, "vol_geom": vol}
            for name in ("noise_std", "units"):
                if name in f.attrs:
                    v = f.attrs[name]
                    meta[name] = v.decode() if isinstance(v, bytes) else v.item() if isinstance(v, np.generic) else v
        else:
            arr = np.asarray(f["data"][()])
            proj, vol = lodopab_geometry()
            meta = {"format": "lodopab-h5", "key": "data", "proj_geom": proj, "vol_geom": vol,
                    "units": LODOPAB_UNITS}
    if arr.dtype.kind not in "iuf" or arr.ndim not in (2, 3):
        raise ValueError(f"{path}: dataset {meta['key']!r}: expected a real (n_views, n_det) or (slices, n_views, "
                         f"n_det) array, got dtype {arr.dtype} and shape {arr.shape}")
    if "noise_std" in meta:
        s = meta["noise_std"]
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s < 0:
            raise ValueError(f"{path}: attribute 'noise_std': expected a non-negative number, got {s!r}")
        meta["noise_std"] = float(s)
    g = geometry_from_astra(meta["proj_geom"], meta["vol_geom"])
    if tuple(arr.shape[-2:]) != g.sino_shape:
        raise ValueError(f"{path}: dataset {meta['key']!r} has shape {arr.shape}, but proj_geom describes "
                         f"{g.n_views} views x {g.n_detectors} detector cells: expected (..., {g.n_views}, "
                         f"{g.n_detectors})")
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)), meta


def sinogram_writer(arr: np.ndarray, meta: Mapping):
    """A function ``write(tmp_path)`` for :func:`invdiff.data.save`: the invdiff layout from ``meta``."""
    proj, vol = meta.get("proj_geom"), meta.get("vol_geom")
    proj = from_json(proj, "proj_geom") if isinstance(proj, (str, bytes)) else proj
    vol = from_json(vol, "vol_geom") if isinstance(vol, (str, bytes)) else vol
    if proj is None or vol is None:
        raise ValueError("proj_geom/vol_geom: a sinogram file needs both of ASTRA's geometry dicts")
    g = geometry_from_astra(proj, vol)
    a = np.asarray(arr)
    while a.ndim > 3 and a.shape[0] == 1:  # (1, 1, K, n) and the like
        a = a[0]
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim not in (2, 3) or tuple(a.shape[-2:]) != g.sino_shape:
        raise ValueError(f"tensor: expected a sinogram (n_views, n_det) or (slices, n_views, n_det) = (..., "
                         f"{g.n_views}, {g.n_detectors}) for proj_geom, got shape {tuple(np.shape(arr))}")
    attrs: dict[str, Any] = {"proj_geom": to_json(proj), "vol_geom": to_json(vol)}
    noise = meta.get("noise_std")
    if noise is not None:
        noise = float(noise)
        if not math.isfinite(noise) or noise < 0:
            raise ValueError(f"noise_std: expected a non-negative number, got {meta.get('noise_std')!r}")
        attrs["noise_std"] = noise
    if meta.get("units") is not None:
        attrs["units"] = str(meta["units"])
    data = np.ascontiguousarray(a, dtype=np.float32)

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("sinogram", data=data)
            for k, v in attrs.items():
                f.attrs[k] = v

    return write


def save_sinogram(path: str | os.PathLike, sinogram: Tensor | np.ndarray, proj_geom: Mapping, vol_geom: Mapping,
                  noise_std: float | None = None, units: str | None = None, overwrite: bool = False) -> Path:
    """Write ``sinogram`` and ASTRA's geometry dicts as an invdiff sinogram file, atomically."""
    path = Path(path)
    arr = sinogram.detach().cpu().numpy() if torch.is_tensor(sinogram) else np.asarray(sinogram)
    if not np.isfinite(arr).all():
        raise ValueError(f"sinogram: contains {int((~np.isfinite(arr)).sum())} non-finite value(s); refusing to "
                         f"write {path}")
    write = sinogram_writer(arr, {"proj_geom": proj_geom, "vol_geom": vol_geom, "noise_std": noise_std,
                                  "units": units})
    with atomic_path(path, overwrite=overwrite) as tmp:
        write(tmp)
    return path
