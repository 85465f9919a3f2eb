"""Readers and writers: NIfTI, fastMRI-layout HDF5, npy; atomic writes and overwrite protection."""

from __future__ import annotations

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch

from invdiff import data

# an oblique, anisotropic, permuted affine: a wrong axis mapping or a lost affine shows up
AFFINE = np.array([[0.0, 0.0, -2.0, 10.0],
                   [0.0, 1.5, 0.0, -3.0],
                   [0.75, 0.0, 0.0, 5.0],
                   [0.0, 0.0, 0.0, 1.0]])


def _write_nifti(path, arr, affine=AFFINE):
    nib.save(nib.Nifti1Image(arr, affine), str(path))


@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_nifti_axis_mapping_and_meta(tmp_path, ext):
    rng = np.random.default_rng(0)
    arr = rng.random((5, 6, 7)).astype(np.float32)  # (i, j, k)
    _write_nifti(tmp_path / f"v{ext}", arr)
    vol, meta = data.load(tmp_path / f"v{ext}")
    assert vol.dtype == torch.float32 and vol.shape == (7, 6, 5)  # (D, H, W) = (k, j, i)
    np.testing.assert_array_equal(vol.numpy(), arr.transpose(2, 1, 0))
    np.testing.assert_allclose(meta["affine"], AFFINE, atol=1e-6)
    assert meta["axcodes"] == tuple(nib.aff2axcodes(AFFINE)) == ("S", "A", "L")
    np.testing.assert_allclose(meta["zooms"], (0.75, 1.5, 2.0), rtol=1e-6)
    np.testing.assert_allclose(meta["spacing"], (2.0, 1.5, 0.75), rtol=1e-6)


@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_nifti_volume_through_operator_keeps_affine_and_shape(tmp_path, ext):
    operators = pytest.importorskip("invdiff.operators")
    vol = data.ellipsoids((6, 16, 16), seed=1)[0, 0]  # (D, H, W)
    _write_nifti(tmp_path / f"in{ext}", vol.numpy().transpose(2, 1, 0))
    x, meta = data.load(tmp_path / f"in{ext}")
    torch.testing.assert_close(x, vol)
    op = operators.CT((1, *x.shape), n_views=24)  # parallel beam, slice by slice
    rec = op.A_dagger(op.A(x[None, None]))[0, 0]
    assert rec.shape == x.shape
    out = data.save(tmp_path / f"out{ext}", rec, **meta)
    back, meta2 = data.load(out)
    assert back.shape == x.shape
    torch.testing.assert_close(back, rec)
    np.testing.assert_array_equal(meta2["affine"], meta["affine"])
    assert meta2["axcodes"] == meta["axcodes"] and meta2["zooms"] == meta["zooms"]
    # the file on disk has the input's (i, j, k) shape and affine
    img = nib.load(str(out))
    assert img.shape == (16, 16, 6)
    np.testing.assert_allclose(img.affine, AFFINE, atol=1e-6)


def test_nifti_round_trip_2d_4d_and_batch_dims(tmp_path):
    img2d = torch.rand(9, 11)
    data.save(tmp_path / "a.nii", img2d)
    back, meta = data.load(tmp_path / "a.nii")
    torch.testing.assert_close(back, img2d)
    np.testing.assert_array_equal(meta["affine"], np.eye(4))
    assert nib.load(str(tmp_path / "a.nii")).shape == (11, 9)
    vol = torch.rand(1, 1, 3, 4, 5)  # a (B, C, D, H, W) batch of one is written as the volume
    data.save(tmp_path / "b.nii.gz", vol, affine=AFFINE)
    back, _ = data.load(tmp_path / "b.nii.gz")
    torch.testing.assert_close(back, vol[0, 0])
    series = torch.rand(2, 3, 4, 5)  # (T, D, H, W)
    data.save(tmp_path / "c.nii.gz", series)
    back, _ = data.load(tmp_path / "c.nii.gz")
    torch.testing.assert_close(back, series)


def test_nifti_integer_data_and_scaling(tmp_path):
    arr = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    img = nib.Nifti1Image(arr, np.eye(4))
    img.header.set_slope_inter(0.5, 10.0)
    nib.save(img, str(tmp_path / "i.nii"))
    x, meta = data.load(tmp_path / "i.nii")
    assert meta["dtype"] == "int16" and x.dtype == torch.float32
    np.testing.assert_allclose(x.numpy(), (arr * 0.5 + 10.0).transpose(2, 1, 0))


def _fastmri_file(path, coils: int | None = 4, slices=3, h=8, w=6):
    rng = np.random.default_rng(1)
    shape = (slices, coils, h, w) if coils else (slices, h, w)
    k = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    rss = rng.random((slices, 5, 5)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=k)
        f.create_dataset("reconstruction_rss", data=rss)
        f.create_dataset("ismrmrd_header", data=b"<ismrmrdHeader>test</ismrmrdHeader>")
        f.attrs["acquisition"] = "CORPD_FBK"
        f.attrs["max"] = 0.000412
        f.attrs["norm"] = 0.12
        f.attrs["patient_id"] = "abc123"
    return k, rss


@pytest.mark.parametrize("coils", [None, 4])
def test_fastmri_h5_layout_and_round_trip(tmp_path, coils):
    k, rss = _fastmri_file(tmp_path / "f.h5", coils=coils)
    y, meta = data.load(tmp_path / "f.h5")
    expected = (3, 2, 4, 8, 6) if coils else (3, 2, 8, 6)
    assert y.shape == expected and y.dtype == torch.float32
    np.testing.assert_array_equal(y[:, 0].numpy(), k.real)
    np.testing.assert_array_equal(y[:, 1].numpy(), k.imag)
    assert meta["key"] == "kspace"
    assert meta["acquisition"] == "CORPD_FBK" and meta["patient_id"] == "abc123"
    assert meta["max"] == pytest.approx(0.000412) and meta["norm"] == pytest.approx(0.12)
    assert meta["ismrmrd_header"] == b"<ismrmrdHeader>test</ismrmrdHeader>"
    assert meta["reconstruction_rss"].shape == (3, 1, 5, 5)
    np.testing.assert_array_equal(meta["reconstruction_rss"][:, 0].numpy(), rss)

    img, meta_r = data.load(tmp_path / "f.h5", key="reconstruction_rss")
    torch.testing.assert_close(img, meta["reconstruction_rss"])
    assert meta_r["kspace"].shape == expected

    data.save(tmp_path / "g.h5", y, **meta)
    with h5py.File(tmp_path / "g.h5") as f:  # the fastMRI layout on disk
        np.testing.assert_array_equal(f["kspace"][()], k)
        assert f["kspace"].dtype == np.complex64
        np.testing.assert_array_equal(f["reconstruction_rss"][()], rss)
        assert f.attrs["acquisition"] == "CORPD_FBK" and f.attrs["patient_id"] == "abc123"
        assert f["ismrmrd_header"][()] == b"<ismrmrdHeader>test</ismrmrdHeader>"
    y2, meta2 = data.load(tmp_path / "g.h5")
    torch.testing.assert_close(y2, y)
    assert {k_: v for k_, v in meta2.items() if not torch.is_tensor(v)} == \
        {k_: v for k_, v in meta.items() if not torch.is_tensor(v)}


def test_h5_key_errors_and_image_only_file(tmp_path):
    _fastmri_file(tmp_path / "f.h5")
    with pytest.raises(ValueError, match="no dataset 'nope'"):
        data.load(tmp_path / "f.h5", key="nope")
    img = torch.rand(2, 1, 7, 7)
    data.save(tmp_path / "img.h5", img, acquisition="AXT2")  # 1 channel -> reconstruction_rss
    back, meta = data.load(tmp_path / "img.h5")
    assert meta["key"] == "reconstruction_rss" and meta["acquisition"] == "AXT2"
    torch.testing.assert_close(back, img)
    with pytest.raises(ValueError, match="pass key="):
        data.save(tmp_path / "amb.h5", torch.rand(2, 3, 7, 7))
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f.create_dataset("other", data=np.zeros(3))
    with pytest.raises(ValueError, match="no 'kspace'"):
        data.load(tmp_path / "empty.h5")


def test_npy_round_trip_real_and_complex(tmp_path):
    x = torch.rand(4, 1, 6, 5)
    data.save(tmp_path / "x.npy", x)
    back, meta = data.load(tmp_path / "x.npy")
    torch.testing.assert_close(back, x)
    assert meta["format"] == "npy" and meta["dtype"] == "float32"
    np.save(tmp_path / "b.npy", np.array([[True, False], [False, True]]))
    m, meta = data.load(tmp_path / "b.npy")
    assert m.dtype == torch.float32 and meta["dtype"] == "bool" and m.sum() == 2
    z = (np.arange(24) + 1j * np.arange(24)[::-1]).reshape(2, 3, 4).astype(np.complex64)
    np.save(tmp_path / "z.npy", z)
    zt, meta = data.load(tmp_path / "z.npy")
    assert zt.shape == (2, 2, 3, 4) and meta["complex_axis"] == 1
    data.save(tmp_path / "z2.npy", zt, **meta)
    np.testing.assert_array_equal(np.load(tmp_path / "z2.npy"), z)


def test_npy_refuses_pickles(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="o.npy"):
        data.load(tmp_path / "o.npy")


@pytest.mark.parametrize("name", ["x.npy", "x.nii.gz", "x.h5"])
def test_existing_output_is_not_overwritten(tmp_path, name):
    x = torch.rand(2, 1, 4, 4)
    path = tmp_path / name
    data.save(path, x)
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite"):
        data.save(path, x + 1)
    assert path.read_bytes() == before
    data.save(path, x + 1, overwrite=True)
    back, _ = data.load(path)
    torch.testing.assert_close(back.reshape(x.shape), x + 1)


@pytest.mark.parametrize("name", ["x.npy", "x.nii.gz", "x.h5"])
def test_failed_write_leaves_nothing_and_keeps_old_file(tmp_path, name, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full (simulated)")

    # each writer fails after its temporary file exists (for HDF5 inside create_dataset)
    target = {"x.npy": (np, "save"), "x.nii.gz": (nib, "save"), "x.h5": (h5py.Group, "create_dataset")}[name]
    path = tmp_path / name
    monkeypatch.setattr(*target, boom)
    with pytest.raises(RuntimeError, match="simulated"):
        data.save(path, torch.rand(2, 1, 4, 4))
    assert list(tmp_path.iterdir()) == []  # no output, no temporary file
    monkeypatch.undo()
    data.save(path, torch.zeros(2, 1, 4, 4))
    old = path.read_bytes()
    monkeypatch.setattr(*target, boom)
    with pytest.raises(RuntimeError):
        data.save(path, torch.ones(2, 1, 4, 4), overwrite=True)
    assert path.read_bytes() == old and sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_missing_file_unknown_extension_and_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.nii.gz"):
        data.load(tmp_path / "nothere.nii.gz")
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"\.nii, \.nii\.gz, \.h5, \.npy"):
        data.load(tmp_path / "a.txt")
    with pytest.raises(ValueError, match="unsupported file extension"):
        data.save(tmp_path / "out.png", torch.rand(4, 4))
    (tmp_path / "bad.nii.gz").write_bytes(b"not a nifti file at all")
    with pytest.raises(ValueError, match="bad.nii.gz"):
        data.load(tmp_path / "bad.nii.gz")
    data.save(tmp_path / "cut.nii.gz", torch.rand(8, 16, 16))
    whole = (tmp_path / "cut.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(whole[: len(whole) // 2])  # truncated download
    with pytest.raises(ValueError, match="cut.nii.gz"):
        data.load(tmp_path / "cut.nii.gz")
    (tmp_path / "bad.h5").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.h5"):
        data.load(tmp_path / "bad.h5")
    with pytest.raises(ValueError, match="non-finite"):
        data.save(tmp_path / "nan.npy", torch.tensor([1.0, float("nan")]))
    with pytest.raises(TypeError, match="tensor"):
        data.save(tmp_path / "z.npy", torch.zeros(3, dtype=torch.complex64))
    with pytest.raises(ValueError, match="affine"):
        data.save(tmp_path / "a.nii", torch.rand(3, 3, 3), affine=np.eye(3))
    np.save(tmp_path / "k.npy", np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="key: only HDF5"):
        data.load(tmp_path / "k.npy", key="kspace")
