"""Fetch and convert LoDoPaB-CT (Leuschner et al., Sci. Data 2021) to invdiff's npy layout.

LoDoPaB-CT is open (CC BY 4.0) on Zenodo, record 3384092: zip archives ``ground_truth_{part}.zip``
and ``observation_{part}.zip`` for part in train / validation / test. Each archive holds HDF5 files
``ground_truth_{part}_{nnn}.hdf5`` with a dataset ``data`` of shape (128, 362, 362) (attenuation,
already scaled to [0, 1]) and ``observation_{part}_{nnn}.hdf5`` with post-log low-dose sinograms
(128, 1000, 513) (1000 angles over [0, pi), 513 detector bins).

    python data_scripts/convert_lodopab.py --fetch test --download-dir ~/data/lodopab     # network needed
    python data_scripts/convert_lodopab.py ~/data/lodopab/ground_truth_test_000.hdf5 --out gt.npy --size 64

The output is ``(N, 1, H, W)`` float32 in [0, 1] (``--size`` resamples with antialiasing), or for
observations ``(N, 1, n_views, n_detectors)``, the invdiff sinogram layout.
"""

from __future__ import annotations

import argparse
import sys
import urllib.request
import zipfile
from pathlib import Path

import h5py
import numpy as np
import torch

ZENODO = "https://zenodo.org/record/3384092/files/{kind}_{part}.zip"


def fetch(part: str, download_dir: str | Path, kinds=("ground_truth", "observation")) -> list[Path]:
    """Download and unzip one part of LoDoPaB-CT (several GB for train). Needs network access."""
    if part not in ("train", "validation", "test"):
        raise ValueError(f"part: expected 'train', 'validation' or 'test', got {part!r}")
    out = Path(download_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for kind in kinds:
        url = ZENODO.format(kind=kind, part=part)
        archive = out / f"{kind}_{part}.zip"
        if not archive.exists():
            tmp = archive.with_suffix(".zip.part")
            print(f"downloading {url}")
            urllib.request.urlretrieve(url, tmp)
            tmp.rename(archive)
        with zipfile.ZipFile(archive) as z:
            z.extractall(out)
            files += [out / n for n in z.namelist()]
    return files


def read(path: str | Path, start: int = 0, count: int | None = None) -> np.ndarray:
    """Read the ``data`` dataset of one LoDoPaB HDF5 file: (N, 362, 362) or (N, 1000, 513)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with h5py.File(path, "r") as f:
        if "data" not in f:
            raise ValueError(f"{path}: no 'data' dataset; it has {list(f)} (is this a LoDoPaB-CT file?)")
        d = f["data"]
        stop = d.shape[0] if count is None else min(d.shape[0], start + count)
        return np.asarray(d[start:stop], dtype=np.float32)


def convert(path: str | Path, out: str | Path, size: int | None = None, start: int = 0, count: int | None = None,
            overwrite: bool = False) -> Path:
    from invdiff import data

    arr = torch.from_numpy(read(path, start, count))[:, None]
    if size is not None:
        if "observation" in Path(path).name:
            raise ValueError("--size: sinograms are not resampled; convert ground-truth files only with --size")
        arr = torch.nn.functional.interpolate(arr, size=(size, size), mode="bilinear", antialias=True,
                                              align_corners=False).clamp(0, 1)
    data.save(out, arr.contiguous(), overwrite=overwrite)
    return Path(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", nargs="?", help="a ground_truth_*.hdf5 or observation_*.hdf5 file")
    p.add_argument("--out", help=".npy output")
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--count", type=int, default=None)
    p.add_argument("--fetch", choices=["train", "validation", "test"], help="download this part first")
    p.add_argument("--download-dir", default="lodopab")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    try:
        if args.fetch:
            files = fetch(args.fetch, args.download_dir)
            print(f"fetched {len(files)} files into {args.download_dir}")
        if args.input:
            if not args.out:
                raise ValueError("--out: required with an input file")
            print(f"wrote {convert(args.input, args.out, args.size, args.start, args.count, args.overwrite)}")
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
