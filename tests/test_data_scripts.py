"""The data converters in data_scripts/, each run on a tiny synthetic file in its source format."""

from __future__ import annotations

from pathlib import Path

import data_script
import h5py
import nibabel as nib
import numpy as np
import pytest
import torch

from invdiff import data



script = data_script.load


# ---------------------------------------------------------------- DICOM CT (AAPM, LIDC-IDRI)
def _write_dicom_series(folder: Path, hu: np.ndarray, spacing=(0.7, 0.8), dz=2.5):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir()
    order = [2, 0, 1] if len(hu) == 3 else list(range(len(hu)))  # write out of order on purpose
    for k in order:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality = "CT"
        ds.Rows, ds.Columns = hu.shape[1:]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelSpacing = list(spacing)
        ds.SliceThickness = dz
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-10.0, -20.0, 100.0 + k * dz]
        ds.InstanceNumber = k + 1
        ds.PixelData = (hu[k] + 1024).astype(np.int16).tobytes()
        ds.save_as(folder / f"slice{k:03d}.dcm", enforce_file_format=True)
    (folder / "README.txt").write_text("not a DICOM file")  # converters skip non-DICOM files


def test_dicom_ct_to_nifti_and_npy(tmp_path):
    rng = np.random.default_rng(0)
    hu = rng.uniform(-1000, 2000, size=(3, 8, 10)).round().astype(np.float32)
    _write_dicom_series(tmp_path / "series", hu)
    conv = script("convert_dicom_ct")
    out = conv.convert(tmp_path / "series", tmp_path / "ct.nii.gz")
    vol, meta = data.load(out)
    expected = (hu + 1000) / 3000
    assert vol.shape == (3, 8, 10)
    np.testing.assert_allclose(vol.numpy(), expected, atol=1e-6)  # sorted by slice position, HU -> [0, 1]
    # voxel sizes: columns 0.8 mm, rows 0.7 mm, slices 2.5 mm; LPS -> RAS flips x and y
    np.testing.assert_allclose(np.abs(np.diag(meta["affine"])[:3]), [0.8, 0.7, 2.5], atol=1e-6)
    assert meta["axcodes"] == ("L", "P", "S")  # DICOM's +x is patient-left, +y posterior
    out_npy = conv.convert(tmp_path / "series", tmp_path / "ct.npy", size=4)
    slices, _ = data.load(out_npy)
    assert slices.shape == (3, 1, 4, 4) and 0 <= slices.min() and slices.max() <= 1
    assert conv.main([str(tmp_path / "series"), "--out", str(tmp_path / "ct.npy")]) == 2  # no overwrite
    assert conv.main([str(tmp_path / "nope"), "--out", str(tmp_path / "x.npy")]) == 2


# ---------------------------------------------------------------- LoDoPaB-CT
def test_lodopab_ground_truth_and_observation(tmp_path):
    rng = np.random.default_rng(1)
    gt = rng.uniform(0, 1, size=(5, 32, 32)).astype(np.float32)
    obs = rng.normal(size=(5, 12, 9)).astype(np.float32)
    with h5py.File(tmp_path / "ground_truth_test_000.hdf5", "w") as f:
        f.create_dataset("data", data=gt)
    with h5py.File(tmp_path / "observation_test_000.hdf5", "w") as f:
        f.create_dataset("data", data=obs)
    conv = script("convert_lodopab")
    x, _ = data.load(conv.convert(tmp_path / "ground_truth_test_000.hdf5", tmp_path / "gt.npy", start=1, count=3))
    np.testing.assert_array_equal(x.numpy()[:, 0], gt[1:4])
    x16, _ = data.load(conv.convert(tmp_path / "ground_truth_test_000.hdf5", tmp_path / "gt16.npy", size=16))
    assert x16.shape == (5, 1, 16, 16)
    np.testing.assert_allclose(x16.mean().item(), gt.mean(), rtol=0.02)  # antialiased resampling keeps the mean
    y, _ = data.load(conv.convert(tmp_path / "observation_test_000.hdf5", tmp_path / "obs.npy"))
    np.testing.assert_array_equal(y.numpy()[:, 0], obs)  # (N, 1, n_views, n_detectors)
    with pytest.raises(ValueError, match="part"):
        conv.fetch("everything", tmp_path)
    with h5py.File(tmp_path / "other.hdf5", "w") as f:
        f.create_dataset("images", data=gt)
    with pytest.raises(ValueError, match="'data'"):
        conv.read(tmp_path / "other.hdf5")


# ---------------------------------------------------------------- fastMRI
def _centred_fft2(x):
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def test_fastmri_images_kspace_and_mask(tmp_path):
    rng = np.random.default_rng(2)
    S, C, H, W = 3, 4, 24, 20
    img = rng.uniform(0, 1, size=(S, 1, H, W))
    maps = rng.normal(size=(1, C, H, W)) + 1j * rng.normal(size=(1, C, H, W))
    kspace = _centred_fft2(img * maps).astype(np.complex64)
    with h5py.File(tmp_path / "file1000001.h5", "w") as f:
        f.create_dataset("kspace", data=kspace)
        f.create_dataset("reconstruction_rss", data=np.zeros((S, 8, 8), np.float32))
        f.attrs["acquisition"] = "CORPD_FBK"
        f.attrs["max"] = 1.5
    conv = script("convert_fastmri")
    x, _ = data.load(conv.to_images(tmp_path / "file1000001.h5", tmp_path / "rss.npy", crop=None))
    rss = img[:, 0] * np.sqrt((np.abs(maps[:, :]) ** 2).sum(1))
    np.testing.assert_allclose(x.numpy()[:, 0], rss / rss.max(), atol=1e-5)
    xc, _ = data.load(conv.to_images(tmp_path / "file1000001.h5", tmp_path / "rss_c.npy", crop=16, size=8))
    assert xc.shape == (S, 1, 8, 8)
    small = conv.to_small_h5(tmp_path / "file1000001.h5", tmp_path / "small.h5", slices=(1, 3))
    k, meta = data.load(small)
    assert k.shape == (2, 2, C, H, W) and meta["acquisition"] == "CORPD_FBK"
    np.testing.assert_allclose(k[:, 0].numpy() + 1j * k[:, 1].numpy(), kspace[1:3], atol=1e-6)
    m, _ = data.load(conv.write_mask(tmp_path / "file1000001.h5", tmp_path / "mask.npy", acceleration=4, center_fraction=0.1))
    assert m.shape == (H, W)
    assert torch.all(m == m[:1])  # Cartesian: the same columns in every row
    assert 0.15 < m.mean().item() < 0.45
    assert conv.main([str(tmp_path / "missing.h5"), "--images", str(tmp_path / "a.npy")]) == 2


# ---------------------------------------------------------------- BraTS
def test_brats_case_to_nifti_and_slices(tmp_path):
    rng = np.random.default_rng(3)
    case = tmp_path / "BraTS2021_00000"
    case.mkdir()
    vol = np.zeros((12, 10, 8), np.float32)  # (i, j, k) on disk
    vol[2:10, 2:8, 1:7] = rng.uniform(10, 500, size=(8, 6, 6))
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[:3, 3] = [5, 6, 7]
    nib.save(nib.Nifti1Image(vol, affine), case / "BraTS2021_00000_flair.nii.gz")
    conv = script("convert_brats")
    out = conv.convert(case, tmp_path / "flair.nii.gz")
    x, meta = data.load(out)
    np.testing.assert_allclose(meta["affine"], affine)
    assert x.shape == (8, 10, 12) and float(x.max()) == 1.0 and float(x.min()) == 0.0
    s, _ = data.load(conv.convert(case, tmp_path / "flair.npy", size=4, min_brain=0.1))
    assert s.shape[1:] == (1, 4, 4) and s.shape[0] == 6  # the 6 slices holding brain
    with pytest.raises(FileNotFoundError, match="t1ce"):
        conv.find_modality(case, "t1ce")
    with pytest.raises(ValueError, match="modality"):
        conv.find_modality(case, "dwi")
