"""Phantoms and scientific file formats (NIfTI, fastMRI HDF5, npy)."""

from invdiff.data.io import load, save
from invdiff.data.phantoms import ellipses, ellipsoids, shepp_logan

__all__ = ["shepp_logan", "ellipses", "ellipsoids", "load", "save"]
