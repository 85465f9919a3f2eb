"""Phantoms and scientific file formats (NIfTI, fastMRI HDF5, npy)."""

from invdiff.data.phantoms import ellipses, ellipsoids, shepp_logan

__all__ = ["shepp_logan", "ellipses", "ellipsoids"]

try:  # readers and writers (NIfTI, HDF5, npy)
    from invdiff.data.io import load, save  # noqa: F401

    __all__ += ["load", "save"]
except ImportError:  # pragma: no cover - io module under construction
    pass
