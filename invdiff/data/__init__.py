"""Phantoms and scientific file formats (NIfTI, fastMRI HDF5, DICOM series, npy)."""

from invdiff.data.dicom import load_series
from invdiff.data.io import load, save
from invdiff.data.phantoms import clutter, ellipses, ellipsoids, shapes, shepp_logan

__all__ = ["shepp_logan", "ellipses", "ellipsoids", "shapes", "clutter", "load", "save", "load_series"]
