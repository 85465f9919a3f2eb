"""Convert a CT DICOM series (AAPM low-dose CT challenge, LIDC-IDRI) to a normalised NIfTI volume or npy slices.

Where the data come from (registration required, not downloaded by this script):
- AAPM Low Dose CT Grand Challenge (Mayo Clinic): full-dose 3 mm / 1 mm series, as used by
  DiffusionMBIR and DDS (their 256x256 AAPM checkpoints were trained on these slices).
- LIDC-IDRI (The Cancer Imaging Archive): chest CT series in DICOM.

    python data_scripts/convert_dicom_ct.py SERIES_DIR --out case.nii.gz [--size 256] [--hu-window -1000 2000]
    python data_scripts/convert_dicom_ct.py SERIES_DIR --out slices.npy --size 256

Slices are sorted along the patient axis (ImagePositionPatient, then InstanceNumber), converted to
Hounsfield units with RescaleSlope/RescaleIntercept, clipped to the window and scaled to [0, 1].
The NIfTI affine is built from PixelSpacing, the slice spacing and ImageOrientationPatient, in
RAS (NIfTI) orientation. The npy output is ``(D, 1, H, W)``, ready for ``invdiff.operators``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch


def read_series(folder: str | Path):
    """Read every DICOM file under ``folder`` into a ``(D, H, W)`` HU array and its affine (RAS)."""
    import pydicom

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (expected a folder of DICOM slices)")
    slices = []
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            try:
                ds = pydicom.dcmread(str(f))
            except Exception:  # not a DICOM file: skip (series folders often hold other files)
                continue
            if "PixelData" in ds:
                slices.append(ds)
    if not slices:
        raise ValueError(f"{folder}: no DICOM slices with pixel data found")
    slices.sort(key=lambda d: (float(d.ImagePositionPatient[2]) if "ImagePositionPatient" in d else 0.0,
                               int(getattr(d, "InstanceNumber", 0))))
    hu = np.stack([d.pixel_array.astype(np.float32) * float(getattr(d, "RescaleSlope", 1))
                   + float(getattr(d, "RescaleIntercept", 0)) for d in slices])
    return hu, dicom_affine(slices)


def dicom_affine(slices) -> np.ndarray:
    """Voxel (i=column, j=row, k=slice) to RAS millimetres, from the DICOM (LPS) geometry."""
    d0 = slices[0]
    if "ImageOrientationPatient" not in d0 or "ImagePositionPatient" not in d0:
        sp = [float(v) for v in getattr(d0, "PixelSpacing", (1.0, 1.0))]
        return np.diag([sp[1], sp[0], float(getattr(d0, "SliceThickness", 1.0)), 1.0])
    row_dir, col_dir = np.array(d0.ImageOrientationPatient[:3], float), np.array(d0.ImageOrientationPatient[3:], float)
    dr, dc = (float(v) for v in d0.PixelSpacing)  # spacing between rows, between columns
    p0 = np.array(d0.ImagePositionPatient, float)
    if len(slices) > 1:
        step = (np.array(slices[-1].ImagePositionPatient, float) - p0) / (len(slices) - 1)
    else:
        step = np.cross(row_dir, col_dir) * float(getattr(d0, "SliceThickness", 1.0))
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row_dir * dc, col_dir * dr, step, p0
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # LPS -> RAS


def normalise(hu: np.ndarray, window=(-1000.0, 2000.0)) -> np.ndarray:
    lo, hi = window
    if not hi > lo:
        raise ValueError(f"--hu-window: expected LOW < HIGH, got {window}")
    return ((np.clip(hu, lo, hi) - lo) / (hi - lo)).astype(np.float32)


def resize(vol: np.ndarray, size: int | None) -> np.ndarray:
    """Resize each slice to ``size x size`` (antialiased bilinear); ``None`` keeps the size."""
    if size is None:
        return vol
    t = torch.from_numpy(vol)[:, None]
    return torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", antialias=True,
                                           align_corners=False)[:, 0].numpy()


def convert(series: str | Path, out: str | Path, size: int | None = None, window=(-1000.0, 2000.0),
            overwrite: bool = False) -> Path:
    from invdiff import data

    hu, affine = read_series(series)
    vol = resize(normalise(hu, window), size)
    if size is not None:  # the in-plane voxel size grows with the resampling
        affine = affine.copy()
        affine[:3, 0] *= hu.shape[2] / size
        affine[:3, 1] *= hu.shape[1] / size
    out = Path(out)
    if out.suffix == ".npy":
        data.save(out, torch.from_numpy(vol)[:, None], overwrite=overwrite)
    else:
        data.save(out, torch.from_numpy(vol), overwrite=overwrite, affine=affine)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("series", help="folder holding one DICOM series")
    p.add_argument("--out", required=True, help=".nii/.nii.gz volume or .npy slices (D, 1, H, W)")
    p.add_argument("--size", type=int, default=None, help="resample slices to SIZE x SIZE (default: keep)")
    p.add_argument("--hu-window", type=float, nargs=2, default=(-1000.0, 2000.0), metavar=("LOW", "HIGH"))
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    try:
        out = convert(args.series, args.out, args.size, tuple(args.hu_window), args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
