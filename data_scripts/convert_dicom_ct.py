"""Convert a CT DICOM series (AAPM low-dose CT challenge, LIDC-IDRI) to a normalised NIfTI volume or npy slices.

Where the data come from (registration required, not downloaded by this script):
- AAPM Low Dose CT Grand Challenge (Mayo Clinic): full-dose 3 mm / 1 mm series, as used by
  DiffusionMBIR and DDS (their 256x256 AAPM checkpoints were trained on these slices).
- LIDC-IDRI (The Cancer Imaging Archive): chest CT series in DICOM.

    python data_scripts/convert_dicom_ct.py SERIES_DIR --out case.nii.gz [--size 256] [--hu-window -1000 2000]
    python data_scripts/convert_dicom_ct.py SERIES_DIR --out slices.npy --size 256

The series is read by ``invdiff.data.load(folder)`` (slices sorted along the slice normal,
Hounsfield units from RescaleSlope/RescaleIntercept, RAS affine from the DICOM geometry), then
clipped to the window and scaled to [0, 1]. The npy output is ``(D, 1, H, W)``, ready for ``invdiff.operators``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch


def read_series(folder: str | Path):
    """One DICOM series as a ``(D, H, W)`` HU array and its RAS affine, read by ``invdiff.data.load``.

    The package's reader sorts the slices along the slice normal, applies the modality LUT and
    refuses folders holding two series or slices with a gap.
    """
    from invdiff import data

    vol, meta = data.load(folder)
    return vol.numpy().astype(np.float32), np.asarray(meta["affine"], dtype=float)


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
