"""Convert fastMRI knee/brain HDF5 files (Zbontar et al. 2018) into invdiff inputs.

fastMRI is distributed after registration (NYU Langone); each volume file ``file*.h5`` holds
``kspace`` (complex64, ``(slices, H, W)`` single-coil or ``(slices, coils, H, W)`` multi-coil),
``reconstruction_rss`` / ``reconstruction_esc`` (the 320x320 targets; absent in test sets),
the ``ismrmrd_header`` and attributes (``acquisition``, ``max``, ``norm``, ``patient_id``).

    python data_scripts/convert_fastmri.py file1000001.h5 --images knee.npy --size 64
    python data_scripts/convert_fastmri.py file1000001.h5 --kspace knee_small.h5 --slices 10 20
    python data_scripts/convert_fastmri.py file1000001.h5 --mask mask.npy --acceleration 4 --center-fraction 0.08

``--images`` writes root-sum-of-squares magnitude images, centre-cropped to ``--crop`` (320, as the
fastMRI targets), optionally resampled to ``--size`` and divided by the volume maximum, as
``(slices, 1, H, W)`` in [0, 1]. ``--kspace`` writes a smaller file in the same fastMRI layout (a
slice range, the targets and attributes kept) that ``invdiff.data.load`` and ``invdiff reconstruct``
read. ``--mask`` writes a fastMRI-style column mask ``(H, W)`` from ``invdiff.operators.MRI``.
The centred orthonormal FFT is fastMRI's: ``image = fftshift(ifft2(ifftshift(kspace), norm="ortho"))``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import h5py
import numpy as np
import torch


def centred_ifft2(k: np.ndarray) -> np.ndarray:
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def rss_images(kspace: np.ndarray) -> np.ndarray:
    """Root-sum-of-squares magnitude ``(slices, H, W)``; the coil axis is 1 when kspace is 4-D."""
    img = np.abs(centred_ifft2(kspace))
    return np.sqrt((img**2).sum(axis=1)) if kspace.ndim == 4 else img


def centre_crop(x: np.ndarray, crop: int | None) -> np.ndarray:
    if crop is None:
        return x
    h, w = x.shape[-2:]
    ch, cw = min(crop, h), min(crop, w)
    top, left = (h - ch) // 2, (w - cw) // 2
    return x[..., top:top + ch, left:left + cw]


def read(path: str | Path, slices: tuple[int, int] | None = None) -> tuple[np.ndarray, dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with h5py.File(path, "r") as f:
        if "kspace" not in f:
            raise ValueError(f"{path}: no 'kspace' dataset; it has {list(f)} (is this a fastMRI file?)")
        sl = slice(*slices) if slices else slice(None)
        k = np.asarray(f["kspace"][sl])
        extra = {key: np.asarray(f[key][sl]) for key in ("reconstruction_rss", "reconstruction_esc") if key in f}
        if "ismrmrd_header" in f:
            extra["ismrmrd_header"] = f["ismrmrd_header"][()]
        extra["attrs"] = dict(f.attrs)
    return k, extra


def to_images(path, out, crop: int | None = 320, size: int | None = None, slices=None, overwrite=False) -> Path:
    from invdiff import data

    k, _ = read(path, slices)
    img = centre_crop(rss_images(k), crop).astype(np.float32)
    t = torch.from_numpy(np.ascontiguousarray(img))[:, None]
    if size is not None:
        t = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    t = t / t.max().clamp_min(1e-12)
    data.save(out, t.clamp(0, 1).contiguous(), overwrite=overwrite)
    return Path(out)


def to_small_h5(path, out, slices=None, overwrite=False) -> Path:
    """Copy a slice range into a new fastMRI-layout file, written atomically."""
    from invdiff.utils import atomic_path

    k, extra = read(path, slices)
    with atomic_path(out, overwrite=overwrite) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("kspace", data=k)
            for key in ("reconstruction_rss", "reconstruction_esc", "ismrmrd_header"):
                if key in extra:
                    f.create_dataset(key, data=extra[key])
            for key, value in extra["attrs"].items():
                f.attrs[key] = value
    return Path(out)


def write_mask(path, out, acceleration=4.0, center_fraction=0.08, kind="random", seed=0, overwrite=False) -> Path:
    from invdiff import data, operators

    k, _ = read(path, (0, 1))
    h, w = k.shape[-2:]
    op = operators.MRI((1, h, w), acceleration=acceleration, center_fraction=center_fraction, mask=kind, seed=seed)
    mask = op.mask.detach().float().reshape(-1, *op.mask.shape[-2:])[0]
    data.save(out, mask.expand(h, w).contiguous(), overwrite=overwrite)
    return Path(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="a fastMRI .h5 volume")
    p.add_argument("--images", help="write RSS images (.npy or .nii.gz)")
    p.add_argument("--kspace", help="write a smaller fastMRI-layout .h5")
    p.add_argument("--mask", help="write a Cartesian mask (.npy)")
    p.add_argument("--slices", type=int, nargs=2, metavar=("START", "STOP"))
    p.add_argument("--crop", type=int, default=320)
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--acceleration", type=float, default=4.0)
    p.add_argument("--center-fraction", type=float, default=0.08)
    p.add_argument("--mask-kind", default="random", choices=["random", "equispaced", "poisson"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    if not (args.images or args.kspace or args.mask):
        p.error("nothing to do: give --images, --kspace and/or --mask")
    try:
        if args.images:
            print(f"wrote {to_images(args.input, args.images, args.crop, args.size, args.slices, args.overwrite)}")
        if args.kspace:
            print(f"wrote {to_small_h5(args.input, args.kspace, args.slices, args.overwrite)}")
        if args.mask:
            print(f"wrote {write_mask(args.input, args.mask, args.acceleration, args.center_fraction, args.mask_kind, args.seed, args.overwrite)}")
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
