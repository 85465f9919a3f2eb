"""Convert a BraTS case (Menze et al. 2015; Baid et al. 2021) into a normalised NIfTI volume or npy slices.

BraTS is distributed after registration (Synapse / the challenge sites). A case folder holds
``<case>_t1.nii.gz``, ``_t1ce``, ``_t2``, ``_flair`` and ``_seg`` volumes of 240 x 240 x 155 voxels
(1 mm, skull-stripped, co-registered). DiffusionMBIR's MRI experiments use BraTS FLAIR slices.

    python data_scripts/convert_brats.py CASE_DIR --modality flair --out flair.nii.gz
    python data_scripts/convert_brats.py CASE_DIR --modality t1 --out t1_slices.npy --size 64

Intensities are divided by their 99.5th percentile inside the brain (non-zero voxels) and clipped
to [0, 1]. NIfTI output keeps the input affine; the npy output is ``(D, 1, H, W)`` axial slices
(``--size`` resamples in-plane, ``--min-brain`` drops slices with little brain).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

MODALITIES = ("t1", "t1ce", "t2", "flair")


def find_modality(case: str | Path, modality: str) -> Path:
    if modality not in MODALITIES:
        raise ValueError(f"--modality: expected one of {MODALITIES}, got {modality!r}")
    case = Path(case)
    if not case.is_dir():
        raise FileNotFoundError(f"{case}: no such case folder")
    hits = sorted(case.glob(f"*_{modality}.nii*"))
    if not hits:
        raise FileNotFoundError(f"{case}: no '*_{modality}.nii[.gz]' file")
    return hits[0]


def normalise(vol: torch.Tensor, percentile: float = 99.5) -> torch.Tensor:
    brain = vol[vol > 0]
    if brain.numel() == 0:
        raise ValueError("volume is empty (all voxels <= 0)")
    scale = torch.quantile(brain.float()[:: max(1, brain.numel() // 1_000_000)], percentile / 100)
    return (vol / scale).clamp(0, 1)


def convert(case, out, modality="flair", size: int | None = None, min_brain: float = 0.05, overwrite=False) -> Path:
    from invdiff import data

    vol, meta = data.load(find_modality(case, modality))
    vol = normalise(vol.float())
    out = Path(out)
    if out.suffix == ".npy":
        slices = vol[:, None]  # (D, 1, H, W), D the slice axis as data.load returns it
        keep = (slices > 0).flatten(1).float().mean(1) >= min_brain
        slices = slices[keep]
        if size is not None:
            slices = torch.nn.functional.interpolate(slices, size=(size, size), mode="bilinear", antialias=True,
                                                     align_corners=False).clamp(0, 1)
        data.save(out, slices.contiguous(), overwrite=overwrite)
    else:
        data.save(out, vol.contiguous(), overwrite=overwrite, **{k: v for k, v in meta.items() if k == "affine"})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("case", help="a BraTS case folder")
    p.add_argument("--modality", default="flair", choices=MODALITIES)
    p.add_argument("--out", required=True, help=".nii/.nii.gz volume or .npy slices")
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--min-brain", type=float, default=0.05, help="npy: keep slices with at least this brain fraction")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    try:
        print(f"wrote {convert(args.case, args.out, args.modality, args.size, args.min_brain, args.overwrite)}")
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
