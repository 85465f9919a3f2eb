"""Read and write scientific images: NIfTI, fastMRI-layout HDF5 and NumPy ``.npy``.

``tensor, meta = load(path)`` returns a float32 tensor and a dict of what the file says about it;
``save(path, tensor, overwrite=False, **meta)`` writes it back in the format of ``path``'s
extension. Writes are atomic (a temporary file in the same folder, then a rename): an output is
written whole or not at all, and an existing one is refused unless ``overwrite=True``.

Axis conventions
----------------
NIfTI (``.nii``, ``.nii.gz``)
    nibabel gives the voxel array indexed ``(i, j, k)`` (``i`` varies fastest on disk). invdiff
    reverses the axis order, so a volume comes back as ``(D, H, W) = (k, j, i)``: ``D`` is the
    slice axis ``k``, ``H`` the row axis ``j``, ``W`` the column axis ``i``. A 2D file gives
    ``(H, W) = (j, i)``; a 4D one ``(T, D, H, W)``. ``save`` reverses the axes again, so
    ``load -> save -> load`` keeps shape, values and affine. ``meta`` holds ``affine`` (4x4 float64
    array mapping ``(i, j, k, 1)`` to scanner coordinates), ``axcodes`` (e.g. ``('R', 'A', 'S')``,
    the orientation of ``i, j, k``), ``zooms`` (header voxel sizes in ``(i, j, k)`` order),
    ``spacing`` (the same sizes in the tensor's axis order) and ``dtype`` (the on-disk type).
fastMRI HDF5 (``.h5``)
    ``kspace`` (complex, ``(slices, [coils,] H, W)``) comes back with deepinv's two real channels
    as ``(slices, 2, [coils,] H, W)`` (real, imaginary), i.e. DESIGN's ``(B, 2, [coils,] H, W)``
    with the slices as the batch. Real images (``reconstruction_rss``, ``reconstruction_esc``,
    ``(slices, H, W)``) come back as ``(slices, 1, H, W)``. ``load`` returns ``kspace`` when the
    file has it, else the first reconstruction; ``key=`` picks any dataset. ``meta`` holds the
    file's attributes (``acquisition``, ``max``, ``norm``, ``patient_id``, ...) as Python values,
    ``ismrmrd_header`` as bytes, every other dataset as a tensor in the layout above (so
    ``meta["reconstruction_rss"]`` is ``(slices, 1, H, W)``), and ``key`` (the dataset returned).
NumPy (``.npy``)
    The array as stored (read with ``allow_pickle=False``), as float32. A complex array gets its
    two channels at axis 1 (axis 0 for arrays of fewer than 3 dimensions); ``meta["complex_axis"]``
    says where, and ``save`` turns that axis back into complex64.

DICOM series (a folder)
    Read by :mod:`invdiff.data.dicom`: ``(D, H, W)`` sorted along the slice normal, modality LUT
    applied (CT in Hounsfield units), ``affine``/``axcodes``/``zooms``/``spacing`` as for NIfTI.

Sinogram HDF5 (``.h5`` with a ``sinogram`` dataset, or a LoDoPaB-CT observation file)
    See :mod:`invdiff.data.sinogram`: the sinogram as stored, ``meta["proj_geom"]`` and
    ``meta["vol_geom"]`` (ASTRA's dicts), ``noise_std`` if stated. ``save`` writes this layout
    when ``meta`` has ``proj_geom``.

Every format also reports ``meta["format"]`` (``"nifti"``, ``"fastmri-h5"`` or ``"npy"``).
``save`` ignores meta keys that its format cannot hold, so the meta of one format can be passed
to another (e.g. an HDF5 file's attributes to an ``.npy`` output).
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any

import h5py
import nibabel as nib
import numpy as np
import torch
from torch import Tensor

from invdiff.data import sinogram
from invdiff.utils import atomic_path

SUPPORTED = (".nii", ".nii.gz", ".h5", ".npy", ".hdf5")  # .hdf5: read as .h5 (LoDoPaB-CT's files)
_RECON_KEYS = ("reconstruction_rss", "reconstruction_esc", "reconstruction")
_INTERNAL_KEYS = {"format", "key", "dtype", "axcodes", "spacing", "complex_axis", "shape"}

__all__ = ["load", "save", "SUPPORTED"]


def _kind(path: Path) -> str:
    name = path.name.lower()
    for ext in sorted(SUPPORTED, key=len, reverse=True):
        if name.endswith(ext):
            return ".h5" if ext == ".hdf5" else ext
    raise ValueError(f"path: unsupported file extension in {str(path)!r}; expected one of {', '.join(SUPPORTED)}")


def _as_path(path) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
    return Path(path)


def _to_numpy(name: str, tensor) -> np.ndarray:
    if isinstance(tensor, np.ndarray):
        return tensor
    if not torch.is_tensor(tensor):
        raise TypeError(f"{name}: expected a torch.Tensor or numpy array, got {type(tensor).__name__}")
    return tensor.detach().cpu().numpy()


def _real_float32(arr: np.ndarray) -> np.ndarray:
    if np.iscomplexobj(arr):
        raise ValueError("expected a real array, got a complex one")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _complex_to_channels(arr: np.ndarray, axis: int) -> Tensor:
    """Complex ``(..., n, ...)`` -> real float32 with a new size-2 axis (real, imag) at ``axis``."""
    stacked = np.stack([arr.real, arr.imag], axis=axis).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(stacked))


def _channels_to_complex(name: str, arr: np.ndarray, axis: int) -> np.ndarray:
    if arr.ndim <= axis or arr.shape[axis] != 2:
        raise ValueError(f"{name}: expected 2 channels (real, imaginary) at axis {axis}, got shape {arr.shape}")
    re, im = np.take(arr, 0, axis=axis), np.take(arr, 1, axis=axis)
    return (re + 1j * im).astype(np.complex64)


def _python_value(v: Any) -> Any:
    """HDF5 attribute values as plain Python (numpy scalars -> int/float/str)."""
    if isinstance(v, bytes):
        try:
            return v.decode()
        except UnicodeDecodeError:
            return v
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


# ---------------------------------------------------------------- load
def load(path: str | os.PathLike, key: str | None = None) -> tuple[Tensor, dict]:
    """Read an image, volume or k-space file.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.nii``, ``.nii.gz``, ``.h5`` (fastMRI layout) or ``.npy`` file, or a folder holding one
        DICOM series (:func:`invdiff.data.dicom.load_series`: ``(D, H, W)``, NIfTI's affine convention).
    key : str, optional
        HDF5 only: the dataset to return (default: the first present of ``kspace``,
        ``reconstruction_rss``, ``reconstruction_esc``, ``reconstruction``).

    Returns
    -------
    tensor : Tensor
        float32, in the layout described in the module docstring (NIfTI volume ``(D, H, W)``,
        k-space ``(slices, 2, [coils,] H, W)``, reconstructions ``(slices, 1, H, W)``).
    meta : dict
        What the file says about the data (affine, orientation, attributes, ...).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        Unknown extension, an unreadable file, or a missing HDF5 ``key``.

    Example
    -------
    >>> vol, meta = load("case.nii.gz")           # doctest: +SKIP
    >>> save("out.nii.gz", vol, **meta)          # doctest: +SKIP
    """
    path = _as_path(path)
    if path.is_dir():  # a folder of DICOM slices of one series
        if key is not None:
            raise ValueError(f"key: only HDF5 files have datasets to choose from, got key={key!r} for {path}")
        from invdiff.data.dicom import load_series

        return load_series(path)
    kind = _kind(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise ValueError(f"{path}: is not a file")
    if key is not None and kind != ".h5":
        raise ValueError(f"key: only HDF5 files have datasets to choose from, got key={key!r} for {path}")
    try:
        if kind in (".nii", ".nii.gz"):
            return _load_nifti(path)
        if kind == ".h5":
            if key is None and sinogram.is_sinogram_h5(path):  # ASTRA-geometry sinogram or LoDoPaB observation
                return sinogram.load_sinogram(path)
            return _load_h5(path, key)
        return _load_npy(path)
    except ValueError as exc:
        if str(exc).startswith((str(path), "key:")):
            raise
        raise ValueError(f"{path}: could not read as {kind} file: {exc}") from exc
    except (OSError, EOFError, zlib.error) as exc:  # corrupt or truncated files (h5py, gzip, numpy)
        raise ValueError(f"{path}: could not read as {kind} file: {exc}") from exc


def _load_nifti(path: Path) -> tuple[Tensor, dict]:
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises its own ImageFileError (a ValueError) and others
        raise ValueError(f"{path}: could not read as NIfTI: {exc}") from exc
    dtype = np.dtype(img.get_data_dtype())
    if dtype.kind not in "biuf":
        raise ValueError(f"{path}: NIfTI data of type {dtype} is not supported; expected a real image")
    dtype = str(dtype)
    arr = np.asarray(img.get_fdata(dtype=np.float32))  # applies scl_slope / scl_inter
    axes = tuple(range(arr.ndim))[::-1]
    tensor = torch.from_numpy(np.ascontiguousarray(np.transpose(arr, axes)))
    zooms = tuple(float(z) for z in img.header.get_zooms())
    meta = {
        "format": "nifti",
        "affine": np.asarray(img.affine, dtype=np.float64),
        "axcodes": tuple(nib.aff2axcodes(img.affine)),
        "zooms": zooms,
        "spacing": zooms[: arr.ndim][::-1],
        "dtype": dtype,
    }
    return tensor, meta


def _load_h5(path: Path, key: str | None) -> tuple[Tensor, dict]:
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path}: could not read as HDF5: {exc}") from exc
    with f:
        names = list(f.keys())
        if key is None:
            key = next((k for k in ("kspace", *_RECON_KEYS) if k in f), None)
            if key is None:
                raise ValueError(f"{path}: no 'kspace', 'reconstruction_rss', 'reconstruction_esc' or 'reconstruction' dataset "
                                 f"(found {names}); pass key= to choose one")
        elif key not in f or not isinstance(f[key], h5py.Dataset):
            raise ValueError(f"key: {path} has no dataset {key!r}; datasets: {names}")
        meta: dict[str, Any] = {"format": "fastmri-h5", "key": key}
        meta.update({k: _python_value(v) for k, v in f.attrs.items()})
        tensor = None
        for name in names:
            obj = f[name]
            if not isinstance(obj, h5py.Dataset):
                continue
            value = obj[()]
            if name == "ismrmrd_header" or isinstance(value, bytes) or getattr(value, "dtype", None) == object:
                if isinstance(value, np.ndarray) and value.size == 1:
                    value = value.reshape(-1)[0]
                if isinstance(value, np.ndarray):  # an array of strings: not an image
                    value = value.tolist()
                t = value
            else:
                t = _h5_array_to_tensor(np.asarray(value))
            if name == key:
                if not torch.is_tensor(t):
                    raise ValueError(f"key: dataset {key!r} in {path} holds {type(t).__name__}, not an array")
                tensor = t
            else:
                meta[name] = t
    return tensor, meta


def _h5_array_to_tensor(arr: np.ndarray) -> Tensor:
    """Complex ``(S, ...)`` -> ``(S, 2, ...)``; real ``(S, H, W)`` -> ``(S, 1, H, W)``; others as stored."""
    if np.iscomplexobj(arr):
        return _complex_to_channels(arr, axis=1 if arr.ndim >= 2 else 0)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"unsupported HDF5 dtype {arr.dtype}")
    t = torch.from_numpy(_real_float32(arr))
    return t[:, None] if t.ndim == 3 else t


def _load_npy(path: Path) -> tuple[Tensor, dict]:
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{path}: could not read as .npy (object arrays are refused: allow_pickle=False): {exc}") from exc
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{path}: expected a single .npy array, got {type(arr).__name__}")
    meta: dict[str, Any] = {"format": "npy", "dtype": str(arr.dtype)}
    if np.iscomplexobj(arr):
        axis = 1 if arr.ndim >= 3 else 0
        meta["complex_axis"] = axis
        return _complex_to_channels(arr, axis), meta
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{path}: unsupported dtype {arr.dtype}; expected a numeric array")
    return torch.from_numpy(_real_float32(arr)), meta


# ---------------------------------------------------------------- save
def save(path: str | os.PathLike, tensor: Tensor, overwrite: bool = False, **meta: Any) -> Path:
    """Write ``tensor`` to ``path`` in the format of its extension, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Output file: ``.nii``, ``.nii.gz``, ``.h5`` or ``.npy``. Missing folders are created.
    tensor : Tensor
        Real data in the layout :func:`load` returns. NIfTI: ``(H, W)``, ``(D, H, W)`` or
        ``(T, D, H, W)``; leading singleton dimensions beyond three (``(1, 1, D, H, W)``) are
        dropped. HDF5: ``(slices, 2, [coils,] H, W)`` for k-space, ``(slices, 1, H, W)`` for images.
    overwrite : bool
        Replace an existing ``path``; otherwise an existing file raises ``FileExistsError``.
    **meta
        NIfTI: ``affine`` (4x4, default identity) and optionally ``zooms``. HDF5: ``key`` (the
        dataset name; default ``"kspace"`` for 2-channel data, ``"reconstruction_rss"`` for
        1-channel), further tensors/arrays become datasets, ``ismrmrd_header`` (bytes or str) a
        dataset, scalars and strings attributes. npy: ``complex_axis`` (write complex64). Keys a
        format cannot hold (and ``format``, ``dtype``, ``axcodes``, ``spacing``) are ignored.

    Returns
    -------
    Path
        The written file.
    """
    path = _as_path(path)
    kind = _kind(path)
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite: expected a bool, got {overwrite!r}")
    arr = _to_numpy("tensor", tensor)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"tensor: expected real numeric data, got dtype {arr.dtype}; complex data goes in as two "
                        f"real channels (deepinv convention)")
    if not np.isfinite(arr).all():
        raise ValueError(f"tensor: contains {int((~np.isfinite(arr)).sum())} non-finite value(s); refusing to write {path}")
    if kind in (".nii", ".nii.gz"):
        writer = _nifti_writer(path, arr, meta)
    elif kind == ".h5" and meta.get("proj_geom") is not None:  # a sinogram with ASTRA's geometry
        writer = sinogram.sinogram_writer(arr, meta)
    elif kind == ".h5":
        writer = _h5_writer(arr, meta)
    else:
        writer = _npy_writer(arr, meta)
    with atomic_path(path, overwrite=overwrite) as tmp:
        writer(tmp)
    return path


def _nifti_writer(path: Path, arr: np.ndarray, meta: dict):
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim not in (2, 3, 4):
        raise ValueError(f"tensor: NIfTI takes (H, W), (D, H, W) or (T, D, H, W) data, got shape {arr.shape}")
    affine = meta.get("affine")
    affine = np.eye(4) if affine is None else np.asarray(_to_numpy("affine", affine), dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise ValueError(f"affine: expected a finite 4x4 matrix, got shape {affine.shape}")
    data = np.ascontiguousarray(np.transpose(arr.astype(np.float32), tuple(range(arr.ndim))[::-1]))
    img = nib.Nifti1Image(data, affine)
    img.header.set_data_dtype(np.float32)
    zooms = meta.get("zooms")
    if zooms is not None:
        zooms = tuple(float(z) for z in zooms)
        if len(zooms) < data.ndim:
            raise ValueError(f"zooms: expected at least {data.ndim} voxel sizes for data of shape {data.shape}, got {zooms}")
        img.header.set_zooms(zooms[: data.ndim])

    def write(tmp: Path) -> None:
        nib.save(img, str(tmp))

    return write


def _h5_writer(arr: np.ndarray, meta: dict):
    key = meta.get("key")
    if key is None:
        if arr.ndim >= 3 and arr.shape[1] == 2:
            key = "kspace"
        elif arr.ndim == 4 and arr.shape[1] == 1:
            key = "reconstruction_rss"
        else:
            raise ValueError(f"tensor: cannot tell k-space (slices, 2, [coils,] H, W) from an image (slices, 1, H, W) "
                             f"in shape {arr.shape}; pass key=")
    if not isinstance(key, str) or not key:
        raise TypeError(f"key: expected a dataset name (str), got {key!r}")

    def to_dataset(name: str, a: np.ndarray) -> np.ndarray:
        if name == "kspace":
            return _channels_to_complex(name, a, axis=1)
        if a.ndim == 4 and a.shape[1] == 1:  # (S, 1, H, W) image -> (S, H, W) as fastMRI stores it
            return np.ascontiguousarray(a[:, 0], dtype=np.float32)
        return np.ascontiguousarray(a, dtype=np.float32)

    datasets = {key: to_dataset(key, arr)}
    attrs: dict[str, Any] = {}
    for name, value in meta.items():
        if name in _INTERNAL_KEYS or name == key or value is None:
            continue
        if torch.is_tensor(value) or isinstance(value, np.ndarray):
            v = _to_numpy(name, value)
            if v.dtype.kind in "biuf":
                datasets[name] = to_dataset(name, v) if v.ndim else v
            elif v.dtype.kind == "c":
                datasets[name] = v.astype(np.complex64)
            continue
        if name == "ismrmrd_header":
            datasets[name] = value.encode() if isinstance(value, str) else value
            continue
        if isinstance(value, (bool, int, float, str, bytes, np.generic)):
            attrs[name] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value):
            attrs[name] = np.asarray(value)
        # anything else (affine of a NIfTI, nested dicts) has no place in a fastMRI file

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            for name, value in datasets.items():
                f.create_dataset(name, data=value)
            for name, value in attrs.items():
                f.attrs[name] = value

    return write


def _npy_writer(arr: np.ndarray, meta: dict):
    axis = meta.get("complex_axis")
    if axis is not None:
        out = _channels_to_complex("tensor", arr, int(axis))
    else:
        out = np.ascontiguousarray(arr, dtype=np.float32)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, out, allow_pickle=False)

    return write
