"""The ``invdiff`` command: demo, reconstruct (files and measured k-space), bench delegation, errors."""

from __future__ import annotations

import importlib.machinery
import os
import re
import subprocess
import sys
import types

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch

from invdiff import data
from invdiff.cli import main

AFFINE = np.array([[0.0, 0.0, -2.0, 10.0], [0.0, 1.5, 0.0, -3.0], [0.75, 0.0, 0.0, 5.0], [0.0, 0.0, 0.0, 1.0]])


def _psnrs(text: str) -> list[float]:
    return [float(v) for v in re.findall(r"PSNR\s+(-?[\d.]+|inf) dB", text)]


def test_demo_ct_writes_png_and_prints_psnr(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--size", "48", "--views", "30", "--solver", "fbp"]) == 0
    out = capsys.readouterr().out
    png = tmp_path / "demo_ct_fbp.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (psnr,) = _psnrs(out)
    assert 15.0 < psnr < 60.0, out  # FBP of 30 views at 48x48 with 40 dB measurement SNR
    assert "SSIM" in out and "wrote" in out
    # the figure exists now: a second run refuses to overwrite it, with one line
    assert main(["demo", "--out", str(tmp_path), "--size", "48", "--views", "30", "--solver", "fbp"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0]
    assert main(["demo", "--out", str(tmp_path), "--size", "48", "--views", "30", "--solver", "fbp", "--overwrite"]) == 0


def test_demo_runs_a_diffusion_solver_by_default(tmp_path, capsys):
    """No --solver: DDS (tuned settings) on the embedded prior, beside FBP, and well above it."""
    assert main(["demo", "--out", str(tmp_path), "--steps", "30"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "demo_ct_dds.png").is_file()
    fbp, dds = _psnrs(out)
    assert re.search(r"dds\s+PSNR.*NFE\s+30\b", out), out
    assert dds > fbp + 3.0, out  # 16 views of the 64x64 Shepp-Logan phantom


def test_demo_more_views_give_better_fbp(tmp_path, capsys):
    psnr = {}
    for views in (8, 60):
        assert main(["demo", "--out", str(tmp_path / str(views)), "--size", "48", "--views", str(views),
                     "--noise", "0", "--solver", "fbp"]) == 0
        (psnr[views],) = _psnrs(capsys.readouterr().out)
    assert psnr[60] > psnr[8] + 3, psnr


@pytest.mark.parametrize("task", ["mri", "inpaint", "sr", "ct3d"])
def test_demo_other_tasks(tmp_path, capsys, task):
    args = ["demo", "--task", task, "--out", str(tmp_path), "--size", "32", "--solver", "fbp"]
    if task == "ct3d":
        args += ["--depth", "4"]
    assert main(args) == 0
    assert (tmp_path / f"demo_{task}_fbp.png").is_file()
    assert len(_psnrs(capsys.readouterr().out)) == 1


def test_demo_with_a_classical_solver_adds_a_panel(tmp_path, capsys):
    assert main(["demo", "--task", "mri", "--solver", "tv", "--steps", "30", "--out", str(tmp_path),
                 "--size", "32"]) == 0
    out = capsys.readouterr().out
    assert len(_psnrs(out)) == 2 and (tmp_path / "demo_mri_tv.png").is_file()


def test_unknown_or_unavailable_solver_is_one_line(tmp_path, capsys):
    assert main(["demo", "--solver", "nosuch", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nosuch" in err[0]
    assert not any(tmp_path.iterdir())


def _nifti_volume(path):
    vol = data.ellipsoids((4, 24, 24), seed=3)[0, 0]  # (D, H, W)
    nib.save(nib.Nifti1Image(vol.numpy().transpose(2, 1, 0), AFFINE), str(path))
    return vol


def test_reconstruct_nifti_volume_keeps_affine_and_shape(tmp_path, capsys):
    vol = _nifti_volume(tmp_path / "in.nii.gz")
    out = tmp_path / "sub" / "rec.nii.gz"
    assert main(["reconstruct", str(tmp_path / "in.nii.gz"), "--operator", "ct", "--views", "40",
                 "--out", str(out)]) == 0
    (psnr,) = _psnrs(capsys.readouterr().out)
    rec, meta = data.load(out)
    assert rec.shape == vol.shape
    np.testing.assert_allclose(meta["affine"], AFFINE, atol=1e-6)
    assert nib.load(str(out)).shape == (24, 24, 4)
    # the printed PSNR is the PSNR of the written volume against the input
    from invdiff import metrics

    assert psnr == pytest.approx(float(metrics.psnr(rec[None, None], vol[None, None])), abs=0.01)
    assert psnr > 15


def test_reconstruct_npy_image_with_mri(tmp_path, capsys):
    x = data.shepp_logan(32)[0, 0]
    np.save(tmp_path / "x.npy", x.numpy())
    assert main(["reconstruct", str(tmp_path / "x.npy"), "--operator", "mri", "--acceleration", "1",
                 "--noise", "0", "--out", str(tmp_path / "r.npy")]) == 0
    rec, _ = data.load(tmp_path / "r.npy")
    assert rec.shape == x.shape
    torch.testing.assert_close(rec, x, atol=1e-5, rtol=0)  # full sampling, no noise: exact


def _kspace_file(path, coils: int | None):
    """Synthetic fastMRI file: k-space of a phantom (through coil maps with sum |S_c|^2 = 1)."""
    from invdiff.operators.functional.fft import fft2c

    x = data.shepp_logan(32)[0, 0].to(torch.complex64)  # (H, W)
    if coils:
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
        S = torch.stack([torch.exp(-((xx - c) ** 2 + yy**2)) * torch.exp(1j * c) for c in
                         torch.linspace(-1, 1, coils)]).to(torch.complex64)
        S = S / (S.abs() ** 2).sum(0).sqrt()
        img = (S * x)[None].repeat(2, 1, 1, 1)  # (slices, coils, H, W)
    else:
        img = x[None].repeat(2, 1, 1)  # (slices, H, W)
    k = fft2c(img).numpy()
    rss = x.abs()[None].repeat(2, 1, 1)[:, 4:28, 4:28].numpy()  # a centre-cropped target, as fastMRI's
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=k)
        f.create_dataset("reconstruction_rss", data=rss)
        f.attrs["acquisition"] = "CORPD_FBK"
    return x.abs()


@pytest.mark.parametrize("coils", [None, 4])
def test_reconstruct_measured_kspace(tmp_path, capsys, coils):
    truth = _kspace_file(tmp_path / "k.h5", coils)
    assert main(["reconstruct", str(tmp_path / "k.h5"), "--acceleration", "1", "--out", str(tmp_path / "full.h5")]) == 0
    (psnr_full,) = _psnrs(capsys.readouterr().out)
    rec, meta = data.load(tmp_path / "full.h5")
    assert rec.shape == (2, 1, 32, 32) and meta["key"] == "reconstruction" and meta["acquisition"] == "CORPD_FBK"
    torch.testing.assert_close(rec[:, 0], truth.expand(2, 32, 32), atol=1e-5, rtol=0)
    assert main(["reconstruct", str(tmp_path / "k.h5"), "--acceleration", "4", "--out", str(tmp_path / "r.nii")]) == 0
    (psnr_4x,) = _psnrs(capsys.readouterr().out)
    vol, _ = data.load(tmp_path / "r.nii")
    assert vol.shape == (2, 32, 32)
    assert psnr_full > 60 and psnr_4x < psnr_full - 20


def test_reconstruct_refuses_existing_output(tmp_path, capsys):
    _nifti_volume(tmp_path / "in.nii")
    out = tmp_path / "out.npy"
    out.write_bytes(b"keep me")
    assert main(["reconstruct", str(tmp_path / "in.nii"), "--operator", "ct", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exists" in err[0] and "--overwrite" in err[0]
    assert out.read_bytes() == b"keep me"
    assert main(["reconstruct", str(tmp_path / "in.nii"), "--operator", "ct", "--out", str(out), "--overwrite"]) == 0
    assert data.load(out)[0].shape == (4, 24, 24)


def test_reconstruct_image_needs_an_operator(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((8, 8), np.float32))
    assert main(["reconstruct", str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npy")]) == 2
    assert "--operator" in capsys.readouterr().err


def test_missing_input_is_one_line_and_exit_2(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "invdiff.cli", "reconstruct", str(tmp_path / "missing.nii.gz"),
                           "--operator", "ct", "--out", str(tmp_path / "out.nii.gz")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing.nii.gz" in lines[0] and "not found" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out.nii.gz").exists()


def test_help_shows_defaults(capsys):
    assert main(["demo", "--help"]) == 0
    out = capsys.readouterr().out
    assert "(default: ct)" in out and "(default: 64)" in out
    assert main(["nosuchcommand"]) == 2


def test_bench_delegates_its_arguments(monkeypatch, capsys):
    seen = {}
    fake = types.ModuleType("invdiff.bench.__main__")
    fake.__spec__ = importlib.machinery.ModuleSpec("invdiff.bench.__main__", None)

    def fake_main(argv):
        seen["argv"] = argv
        return 0

    fake.main = fake_main
    monkeypatch.setitem(sys.modules, "invdiff.bench.__main__", fake)
    assert main(["bench", "--quick", "--out", "somewhere"]) == 0
    assert seen["argv"] == ["--quick", "--out", "somewhere"]
