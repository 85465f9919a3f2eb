"""Read a folder holding one DICOM series (CT, MR, ...) into a volume.

``volume, meta = load_series(folder)`` (also reached through ``invdiff.data.load(folder)``) reads
every file directly in ``folder`` with pydicom, keeps the image files (those with pixel data) of
one series, sorts them along the slice normal and stacks them into a float32 ``(D, H, W)`` tensor
in the layout and affine convention of the NIfTI reader (:mod:`invdiff.data.io`).

Geometry (DICOM PS3.3 C.7.6.2.1.1)
----------------------------------
``ImageOrientationPatient`` holds two unit vectors in the patient frame (LPS: +x to the patient's
left, +y posterior, +z head): ``r``, the direction along a row (column index ``i`` grows), and
``c``, the direction down a column (row index ``j`` grows). ``PixelSpacing = (dy, dx)`` is the
distance between rows, then between columns. The centre of pixel ``(j, i)`` of slice ``k`` is::

    P_k(i, j) = IPP_k + i dx r + j dy c                     (IPP = ImagePositionPatient)

Slices are ordered by ``s_k = n . IPP_k`` with the slice normal ``n = r x c``, ascending (file
names and InstanceNumber are ignored). Their positions must lie on one line at even steps; the
slice step is ``t = (IPP_{D-1} - IPP_0) / (D - 1)`` (the measured positions, not SliceThickness;
it equals ``dz n`` unless the gantry was tilted). Then, with ``(i, j, k)`` the voxel index,::

    P = A_LPS (i, j, k, 1)^T,   A_LPS = [[dx r, dy c, t, IPP_0], [0, 0, 0, 1]]
    affine = diag(-1, -1, 1, 1) A_LPS                        (LPS -> nibabel's RAS+ world)

The tensor is indexed ``(k, j, i)``, as NIfTI volumes are, so ``data.save("x.nii.gz", vol, **meta)``
writes a NIfTI file that nibabel places where the DICOM series was. The spacing is
``(|t|, dy, dx)`` in the tensor's axis order; ``zooms`` the same in ``(i, j, k)`` order.

Intensities
-----------
Stored values go through the modality LUT (``pydicom.pixels.apply_modality_lut``: ``RescaleSlope``
and ``RescaleIntercept``, or a Modality LUT Sequence), slice by slice; CT comes back in Hounsfield
units.

Refused, each with an error that names the file(s): a folder with image files of more than one
series (the message lists every SeriesInstanceUID and its file count), uneven slice spacing (a
missing slice: the gap, the expected step and the two files around it), two slices at one
position, slices of different orientation, size or pixel spacing, missing geometry tags,
multi-frame or colour images, pixel data that pydicom cannot decode. Files that are not DICOM
(a README, ``.DS_Store``) and DICOM files without pixel data (DICOMDIR, structured reports) are
skipped and listed in ``meta["skipped"]``. Subfolders are not searched.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import torch
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut
from torch import Tensor

__all__ = ["load_series", "SPACING_RTOL"]

#: Largest accepted deviation of a slice gap from the median gap, relative to the median gap (also
#: the tolerance on positions off the line of slices and on differing pixel spacings).
SPACING_RTOL = 1e-2
_IOP_ATOL = 1e-3  # direction cosines of two slices of one series agree to this
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_DEFER = "512 KB"  # pixel data above this size is read only for the series that is kept


@dataclass(frozen=True)
class _Slice:
    path: Path
    ds: pydicom.Dataset


def _floats(sl: _Slice, tag: str, n: int) -> np.ndarray:
    value = sl.ds.get(tag)
    if value is None or value == "":
        raise ValueError(f"{sl.path}: DICOM image has no {tag}; it is needed to place the slice in space")
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) else [value]
    try:
        arr = np.asarray([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.empty(0)
    if arr.shape != (n,) or not np.isfinite(arr).all():
        raise ValueError(f"{sl.path}: {tag} = {values}; expected {n} finite numbers")
    return arr


def _scan(folder: Path) -> tuple[dict[str, list[_Slice]], list[str]]:
    """Image files of ``folder`` grouped by SeriesInstanceUID, and the names of skipped files."""
    series: dict[str, list[_Slice]] = defaultdict(list)
    skipped: list[str] = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            ds = pydicom.dcmread(path, defer_size=_DEFER)
        except InvalidDicomError:  # no DICOM preamble / prefix: a README, a .DS_Store, ...
            skipped.append(path.name)
            continue
        except Exception as exc:  # a DICOM file that pydicom cannot parse: truncated, corrupt
            raise ValueError(f"{path}: could not read as DICOM: {exc}") from exc
        if "PixelData" not in ds:  # DICOMDIR, structured report, presentation state
            skipped.append(path.name)
            continue
        series[str(ds.get("SeriesInstanceUID", "(no SeriesInstanceUID)"))].append(_Slice(path, ds))
    return dict(series), skipped


def _check_consistent(slices: list[_Slice]) -> tuple[np.ndarray, np.ndarray]:
    """Orientation ``(r, c)`` and ``PixelSpacing (dy, dx)`` shared by every slice, else an error."""
    first = slices[0]
    iop0, ps0 = _floats(first, "ImageOrientationPatient", 6), _floats(first, "PixelSpacing", 2)
    shape0 = (first.ds.get("Rows"), first.ds.get("Columns"))
    for sl in slices:
        frames = int(sl.ds.get("NumberOfFrames", 1) or 1)
        if frames != 1:
            raise ValueError(f"{sl.path}: multi-frame DICOM ({frames} frames) is not supported; expected one "
                             f"slice per file")
        if int(sl.ds.get("SamplesPerPixel", 1)) != 1:
            raise ValueError(f"{sl.path}: SamplesPerPixel = {sl.ds.SamplesPerPixel}; expected a grey-scale image (1)")
        shape = (sl.ds.get("Rows"), sl.ds.get("Columns"))
        if shape != shape0:
            raise ValueError(f"{sl.path}: image of {shape[0]}x{shape[1]} pixels, but {first.path.name} has "
                             f"{shape0[0]}x{shape0[1]}; expected one size within a series")
        iop, ps = _floats(sl, "ImageOrientationPatient", 6), _floats(sl, "PixelSpacing", 2)
        if not np.allclose(iop, iop0, atol=_IOP_ATOL):
            raise ValueError(f"{sl.path}: ImageOrientationPatient {iop.tolist()} differs from {first.path.name}'s "
                             f"{iop0.tolist()}; expected one orientation within a series (a localizer?)")
        if not np.allclose(ps, ps0, rtol=SPACING_RTOL, atol=0):
            raise ValueError(f"{sl.path}: PixelSpacing {ps.tolist()} differs from {first.path.name}'s {ps0.tolist()}")
    r, c = iop0[:3], iop0[3:]
    if abs(np.linalg.norm(r) - 1) > _IOP_ATOL or abs(np.linalg.norm(c) - 1) > _IOP_ATOL or abs(r @ c) > _IOP_ATOL:
        raise ValueError(f"{first.path}: ImageOrientationPatient {iop0.tolist()} is not two orthogonal unit vectors")
    if not (ps0 > 0).all():
        raise ValueError(f"{first.path}: PixelSpacing {ps0.tolist()}; expected two positive numbers (mm)")
    return iop0, ps0


def _sort_and_step(slices: list[_Slice], normal: np.ndarray) -> tuple[list[_Slice], np.ndarray]:
    """Slices sorted by ``n . IPP`` and the slice step ``t`` (mm, patient frame); uneven steps raise."""
    folder = slices[0].path.parent
    pos = np.stack([_floats(sl, "ImagePositionPatient", 3) for sl in slices])
    s = pos @ normal
    order = np.argsort(s, kind="stable")
    slices, pos, s = [slices[i] for i in order], pos[order], s[order]
    if len(slices) == 1:
        sl = slices[0]
        dz = float(sl.ds.get("SpacingBetweenSlices") or sl.ds.get("SliceThickness") or 1.0)
        return slices, normal * dz
    gaps = np.diff(s)
    ref = float(np.median(gaps))
    same = np.flatnonzero(gaps <= SPACING_RTOL * max(ref, 1e-6))
    if same.size:
        k = int(same[0])
        raise ValueError(f"{folder}: {slices[k].path.name} and {slices[k + 1].path.name} lie at the same position "
                         f"({s[k]:.4f} mm along the slice normal); expected one slice per position (a second "
                         f"echo, phase or acquisition in the same series?)")
    bad = np.flatnonzero(np.abs(gaps - ref) > SPACING_RTOL * ref)
    if bad.size:
        k = int(bad[np.argmax(np.abs(gaps[bad] - ref))])
        raise ValueError(f"{folder}: uneven slice spacing: gap of {gaps[k]:.4g} mm between {slices[k].path.name} "
                         f"({s[k]:.4f} mm) and {slices[k + 1].path.name} ({s[k + 1]:.4f} mm) along the slice normal, "
                         f"expected {ref:.4g} mm (the median gap); {bad.size} of {gaps.size} gaps differ: "
                         f"a missing slice?")
    step = (pos[-1] - pos[0]) / (len(slices) - 1)
    off = np.linalg.norm(pos - (pos[0] + np.arange(len(slices))[:, None] * step), axis=1)
    k = int(np.argmax(off))
    if off[k] > SPACING_RTOL * np.linalg.norm(step):
        raise ValueError(f"{slices[k].path}: ImagePositionPatient lies {off[k]:.4g} mm off the line through "
                         f"the other slices; expected one stack of evenly spaced slices")
    return slices, step


def _pixels(slices: list[_Slice]) -> tuple[np.ndarray, str, list[float], list[float]]:
    """Stacked values after the modality LUT, the stored dtype, and each slice's slope and intercept."""
    out, slopes, intercepts, dtype = [], [], [], ""
    for sl in slices:
        try:
            raw = sl.ds.pixel_array
        except Exception as exc:  # compressed data without a decoder, corrupt pixel data
            ts = getattr(getattr(sl.ds, "file_meta", None), "TransferSyntaxUID", "unknown")
            raise ValueError(f"{sl.path}: could not decode the pixel data (transfer syntax {ts}): {exc}") from exc
        dtype = dtype or str(raw.dtype)
        out.append(np.asarray(apply_modality_lut(raw, sl.ds), dtype=np.float32))
        slopes.append(float(sl.ds.get("RescaleSlope", 1.0) or 1.0))
        intercepts.append(float(sl.ds.get("RescaleIntercept", 0.0) or 0.0))
    return np.stack(out), dtype, slopes, intercepts


def _one_or_list(values: list[float]) -> float | list[float]:
    return values[0] if all(v == values[0] for v in values) else values


def load_series(folder: str | os.PathLike) -> tuple[Tensor, dict]:
    """Read the DICOM series in ``folder`` into a ``(D, H, W)`` float32 volume.

    Parameters
    ----------
    folder : str or os.PathLike
        A folder whose files are the slices of one series (other, non-image files are skipped).

    Returns
    -------
    volume : Tensor
        ``(D, H, W)`` float32, indexed ``(slice k, row j, column i)``, slices sorted along the slice
        normal; values after the modality LUT (Hounsfield units for CT).
    meta : dict
        ``format`` ("dicom"), ``affine`` (4x4, voxel ``(i, j, k, 1)`` to RAS+ mm, as NIfTI),
        ``axcodes``, ``zooms`` ``(dx, dy, dz)``, ``spacing`` ``(dz, dy, dx)``, ``dtype`` (stored
        pixel type), ``modality``, ``series_uid``, ``series_description``, ``rescale_slope``,
        ``rescale_intercept`` (a number, or one per slice where they differ), ``rescale_type``
        (``"HU"`` for CT unless the file says otherwise), ``files`` (names in slice order) and
        ``skipped`` (names of files that are not DICOM images).

    Raises
    ------
    FileNotFoundError
        ``folder`` does not exist.
    ValueError
        Not a folder, no DICOM image in it, more than one series, uneven or duplicated slice
        positions, inconsistent or missing geometry, undecodable pixel data.

    Example
    -------
    >>> vol, meta = load_series("CT_SERIES/")                 # doctest: +SKIP
    >>> invdiff.data.save("ct.nii.gz", vol, **meta)          # doctest: +SKIP
    """
    if not isinstance(folder, (str, os.PathLike)):
        raise TypeError(f"folder: expected a str or os.PathLike, got {type(folder).__name__}")
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise ValueError(f"{folder}: is not a folder; expected a folder of DICOM slices")
    series, skipped = _scan(folder)
    if not series:
        subdirs = sum(p.is_dir() for p in folder.iterdir())
        raise ValueError(f"{folder}: no DICOM image files found ({len(skipped)} file(s) skipped as not DICOM or "
                         f"without pixel data{f', {subdirs} subfolder(s) not searched' if subdirs else ''}); "
                         f"expected the slices of one series directly in the folder")
    if len(series) > 1:
        listing = ", ".join(f"{uid} ({len(v)} files)" for uid, v in sorted(series.items(), key=lambda kv: -len(kv[1])))
        raise ValueError(f"{folder}: holds {len(series)} DICOM series: {listing}; expected one series per folder")
    (uid, slices), = series.items()
    iop, (dy, dx) = _check_consistent(slices)
    r, c = iop[:3], iop[3:]
    normal = np.cross(r, c)
    slices, step = _sort_and_step(slices, normal / np.linalg.norm(normal))
    vol, dtype, slopes, intercepts = _pixels(slices)

    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2] = dx * r, dy * c, step
    lps[:3, 3] = _floats(slices[0], "ImagePositionPatient", 3)
    affine = _LPS_TO_RAS @ lps
    dz = float(np.linalg.norm(step))
    first = slices[0].ds
    modality = str(first.get("Modality", ""))
    meta = {
        "format": "dicom",
        "affine": affine,
        "axcodes": tuple(nib.aff2axcodes(affine)),
        "zooms": (float(dx), float(dy), dz),
        "spacing": (dz, float(dy), float(dx)),
        "dtype": dtype,
        "modality": modality,
        "series_uid": uid,
        "series_description": str(first.get("SeriesDescription", "")),
        "rescale_slope": _one_or_list(slopes),
        "rescale_intercept": _one_or_list(intercepts),
        "rescale_type": str(first.get("RescaleType", "") or ("HU" if modality == "CT" else "")),
        "files": [sl.path.name for sl in slices],
        "skipped": skipped,
    }
    return torch.from_numpy(np.ascontiguousarray(vol)), meta
