"""DICOM series: ``data.load(FOLDER)`` sorts slices along the normal, applies the rescale, builds the affine.

Each test writes a tiny series with pydicom (8x10 pixels, a few slices, files named in an order
unrelated to the slice order) from a known HU volume and a known geometry, and checks the reader
against them: values exactly, voxel positions from the DICOM definition ``IPP_k + i dx r + j dy c``,
and nibabel's own DICOM geometry (``nibabel.nicom.dicomwrappers``) for the in-plane axes.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MediaStorageDirectoryStorage, generate_uid

from invdiff import data
from invdiff.cli import main
from invdiff.data.dicom import load_series

AXIAL = (np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]))
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _oblique(seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Two orthonormal directions of a random rotation (QR of a Gaussian matrix)."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q[:, 0], q[:, 1]


def _hu(shape=(5, 8, 10), dtype="int16", slope=2.0, intercept=-1024.0, seed=0):
    """Stored integers and the HU they stand for (``slope * stored + intercept``)."""
    lo, hi = (-1000, 1500) if dtype == "int16" else (0, 3000)
    stored = np.random.default_rng(seed).integers(lo, hi, size=shape).astype(dtype)
    return stored, slope * stored.astype(np.float64) + intercept


def _dataset(stored: np.ndarray, position, orient, spacing, *, series_uid, slope, intercept, number, modality="CT"):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesDescription = modality, series_uid, "test series"
    ds.Rows, ds.Columns = stored.shape
    signed = stored.dtype == np.int16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, int(signed)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelSpacing = [float(v) for v in spacing]
    ds.SliceThickness = 1.0  # deliberately wrong: the spacing must come from the positions
    ds.ImageOrientationPatient = [float(v) for v in (*orient[0], *orient[1])]
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.InstanceNumber = number
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    return ds


def write_series(folder: Path, stored: np.ndarray, *, orient=AXIAL, spacing=(0.7, 0.8), dz=2.5,
                 origin=(-10.0, -20.0, 100.0), direction=1.0, slope=2.0, intercept=-1024.0,
                 series_uid=None, prefix="IM", seed=1) -> dict:
    """Slice k of ``stored`` at ``origin + direction * k * dz * (r x c)``, under a shuffled file name.

    Returns the series UID, the file name of each slice k and the positions (LPS, mm).
    """
    folder.mkdir(exist_ok=True)
    series_uid = series_uid or generate_uid()
    normal = np.cross(*orient)
    n = len(stored)
    names = [f"{prefix}{v:04d}.dcm" for v in np.random.default_rng(seed).permutation(n)]
    positions = [np.asarray(origin) + direction * k * dz * normal for k in range(n)]
    for k in np.random.default_rng(seed + 1).permutation(n):  # written in shuffled order too
        ds = _dataset(stored[k], positions[k], orient, spacing, series_uid=series_uid, slope=slope,
                      intercept=intercept, number=int(k) + 1)
        ds.save_as(folder / names[k], enforce_file_format=True)
    return {"uid": series_uid, "names": names, "positions": positions}


# ---------------------------------------------------------------- order, values, spacing
@pytest.mark.parametrize("dtype", ["int16", "uint16"])
def test_shuffled_series_loads_in_slice_order_in_hu(tmp_path, dtype):
    stored, hu = _hu(dtype=dtype)
    info = write_series(tmp_path / "s", stored)
    assert sorted(info["names"]) != info["names"]  # the file names do not give the slice order
    vol, meta = data.load(tmp_path / "s")
    assert vol.shape == (5, 8, 10) and vol.dtype.is_floating_point
    np.testing.assert_array_equal(vol.numpy(), hu.astype(np.float32))  # sorted, slope 2, intercept -1024
    assert meta["files"] == info["names"]
    assert meta["spacing"] == pytest.approx((2.5, 0.7, 0.8), abs=1e-9)  # (dz, dy, dx), dz not SliceThickness
    assert meta["zooms"] == pytest.approx((0.8, 0.7, 2.5), abs=1e-9)
    assert meta["format"] == "dicom" and meta["modality"] == "CT" and meta["series_uid"] == info["uid"]
    assert meta["dtype"] == dtype and meta["rescale_type"] == "HU"
    assert (meta["rescale_slope"], meta["rescale_intercept"]) == (2.0, -1024.0)
    # axial: DICOM +x (patient left) and +y (posterior) become RAS -x, -y
    assert meta["axcodes"] == ("L", "P", "S")
    np.testing.assert_allclose(meta["affine"], np.array([[-0.8, 0, 0, 10.0], [0, -0.7, 0, 20.0],
                                                         [0, 0, 2.5, 100.0], [0, 0, 0, 1]]), atol=1e-9)


@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_oblique_affine_maps_voxels_to_their_patient_positions(tmp_path, direction):
    orient = _oblique()
    stored, hu = _hu(shape=(4, 8, 10))
    info = write_series(tmp_path / "s", stored, orient=orient, spacing=(0.6, 0.9), dz=1.7, origin=(3.0, -4.0, 50.0),
                        direction=direction)
    vol, meta = data.load(tmp_path / "s")
    # slices ascend along the normal r x c: written against it, they come back reversed
    order = list(range(4)) if direction > 0 else list(range(4))[::-1]
    np.testing.assert_array_equal(vol.numpy(), hu[order].astype(np.float32))
    assert meta["files"] == [info["names"][k] for k in order]
    assert meta["spacing"] == pytest.approx((1.7, 0.6, 0.9), abs=1e-9)
    r, c = orient
    for i, j, k in [(0, 0, 0), (9, 0, 0), (0, 7, 0), (9, 7, 3), (4, 2, 1)]:
        lps = info["positions"][order[k]] + i * 0.9 * r + j * 0.6 * c  # DICOM PS3.3 C.7.6.2.1.1
        ras = meta["affine"] @ [i, j, k, 1.0]
        np.testing.assert_allclose(ras[:3], LPS_TO_RAS[:3, :3] @ lps, atol=1e-9)
    # nibabel's DICOM wrapper (LPS, array indexed (row j, column i)) agrees on the in-plane axes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from nibabel.nicom.dicomwrappers import wrapper_from_file

        ref = wrapper_from_file(str(tmp_path / "s" / meta["files"][0])).affine
    ours = LPS_TO_RAS @ meta["affine"]
    np.testing.assert_allclose(ours[:3, [1, 0, 3]], ref[:3, [0, 1, 3]], atol=1e-9)
    # the slice axis is along the normal (either sign in nibabel's single-slice view), 1.7 mm long
    np.testing.assert_allclose(np.abs(ours[:3, 2] @ ref[:3, 2]) / np.linalg.norm(ref[:3, 2]), 1.7, atol=1e-9)


def test_nifti_round_trip_keeps_the_series_geometry(tmp_path):
    stored, hu = _hu(shape=(3, 8, 10))
    write_series(tmp_path / "s", stored, orient=_oblique(2), spacing=(0.5, 1.25), dz=3.0)
    vol, meta = data.load(tmp_path / "s")
    out = data.save(tmp_path / "ct.nii.gz", vol, **meta)
    back, meta2 = data.load(out)
    np.testing.assert_array_equal(back.numpy(), vol.numpy())
    np.testing.assert_allclose(meta2["affine"], meta["affine"], atol=1e-5)  # NIfTI stores float32
    assert meta2["axcodes"] == meta["axcodes"]
    assert meta2["spacing"] == pytest.approx(meta["spacing"], abs=1e-5)
    img = nib.load(str(out))
    assert img.shape == (10, 8, 3)  # nibabel's (i, j, k)
    # nibabel's world position of a voxel equals the series' patient position (RAS)
    np.testing.assert_allclose(nib.affines.apply_affine(img.affine, [9, 7, 2]),
                               (meta["affine"] @ [9, 7, 2, 1.0])[:3], atol=1e-4)


def test_skips_files_that_are_not_dicom_images(tmp_path):
    stored, hu = _hu(shape=(3, 8, 10))
    write_series(tmp_path / "s", stored)
    (tmp_path / "s" / "README").write_text("series exported by hand")
    meta = FileMetaDataset()  # a DICOMDIR-like file: DICOM, but no pixel data
    meta.MediaStorageSOPClassUID = MediaStorageDirectoryStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MediaStorageDirectoryStorage, meta.MediaStorageSOPInstanceUID
    ds.save_as(tmp_path / "s" / "DICOMDIR", enforce_file_format=True)
    (tmp_path / "s" / "sub").mkdir()
    vol, meta = data.load(tmp_path / "s")
    np.testing.assert_array_equal(vol.numpy(), hu.astype(np.float32))
    assert sorted(meta["skipped"]) == ["DICOMDIR", "README"]


def test_rescale_may_differ_from_slice_to_slice(tmp_path):
    stored, hu = _hu(shape=(3, 8, 10))
    info = write_series(tmp_path / "s", stored)
    ds = pydicom.dcmread(tmp_path / "s" / info["names"][1])
    ds.RescaleIntercept = -1000.0  # same HU: stored values 12 lower
    ds.PixelData = (stored[1] - 12).astype(np.int16).tobytes()
    ds.save_as(tmp_path / "s" / info["names"][1])
    vol, meta = data.load(tmp_path / "s")
    np.testing.assert_array_equal(vol.numpy(), hu.astype(np.float32))
    assert meta["rescale_intercept"] == [-1024.0, -1000.0, -1024.0] and meta["rescale_slope"] == 2.0


def test_single_slice_takes_its_thickness_along_the_normal(tmp_path):
    stored, hu = _hu(shape=(1, 8, 10))
    orient = _oblique(4)
    write_series(tmp_path / "s", stored, orient=orient)
    ds_path = next((tmp_path / "s").iterdir())
    ds = pydicom.dcmread(ds_path)
    ds.SliceThickness = 3.0
    ds.save_as(ds_path)
    vol, meta = data.load(tmp_path / "s")
    assert vol.shape == (1, 8, 10) and meta["spacing"] == pytest.approx((3.0, 0.7, 0.8), abs=1e-9)
    np.testing.assert_allclose(meta["affine"][:3, 2], LPS_TO_RAS[:3, :3] @ (3.0 * np.cross(*orient)), atol=1e-9)


# ---------------------------------------------------------------- refused
def test_two_series_in_one_folder_are_refused(tmp_path):
    a = write_series(tmp_path / "s", _hu(shape=(4, 8, 10))[0], prefix="A")
    b = write_series(tmp_path / "s", _hu(shape=(3, 8, 10), seed=1)[0], prefix="B", origin=(0.0, 0.0, 0.0))
    with pytest.raises(ValueError) as err:
        data.load(tmp_path / "s")
    msg = str(err.value)
    assert "2 DICOM series" in msg and f"{a['uid']} (4 files)" in msg and f"{b['uid']} (3 files)" in msg


def test_missing_slice_is_refused_naming_the_gap_and_its_files(tmp_path):
    info = write_series(tmp_path / "s", _hu(shape=(6, 8, 10))[0])
    (tmp_path / "s" / info["names"][3]).unlink()
    with pytest.raises(ValueError) as err:
        data.load(tmp_path / "s")
    msg = str(err.value)
    assert "uneven slice spacing" in msg and "gap of 5 mm" in msg and "expected 2.5 mm" in msg
    assert info["names"][2] in msg and info["names"][4] in msg


def test_two_slices_at_one_position_are_refused(tmp_path):
    info = write_series(tmp_path / "s", _hu(shape=(4, 8, 10))[0])
    ds = pydicom.dcmread(tmp_path / "s" / info["names"][1])
    ds.ImagePositionPatient = [float(v) for v in info["positions"][2]]
    ds.save_as(tmp_path / "s" / info["names"][1])
    with pytest.raises(ValueError, match="same position") as err:
        data.load(tmp_path / "s")
    assert info["names"][1] in str(err.value) and info["names"][2] in str(err.value)


def test_missing_geometry_is_refused_naming_the_tag(tmp_path):
    info = write_series(tmp_path / "s", _hu(shape=(3, 8, 10))[0])
    ds = pydicom.dcmread(tmp_path / "s" / info["names"][0])
    del ds.ImagePositionPatient
    ds.save_as(tmp_path / "s" / info["names"][0])
    with pytest.raises(ValueError, match="ImagePositionPatient") as err:
        data.load(tmp_path / "s")
    assert info["names"][0] in str(err.value)


def test_empty_or_missing_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no DICOM image files"):
        data.load(tmp_path / "empty")
    (tmp_path / "empty" / "notes.txt").write_text("nothing here")
    with pytest.raises(ValueError, match=r"1 file\(s\) skipped"):
        load_series(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="nope"):
        load_series(tmp_path / "nope")
    with pytest.raises(ValueError, match="key"):
        data.load(tmp_path / "empty", key="kspace")


# ---------------------------------------------------------------- command line
def test_cli_reconstructs_a_dicom_folder_keeping_its_affine(tmp_path, capsys):
    write_series(tmp_path / "s", _hu(shape=(4, 8, 10))[0], orient=_oblique(3), spacing=(0.7, 0.8), dz=2.0)
    _, meta = data.load(tmp_path / "s")
    out = tmp_path / "rec.nii.gz"
    assert main(["reconstruct", str(tmp_path / "s"), "--operator", "ct", "--views", "20", "--solver", "fbp",
                 "--out", str(out)]) == 0
    rec, out_meta = data.load(out)
    assert rec.shape == (4, 8, 10)
    np.testing.assert_allclose(out_meta["affine"], meta["affine"], atol=1e-5)
    assert "wrote" in capsys.readouterr().out
