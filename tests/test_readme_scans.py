"""The README's "Reconstruct your own scan" commands run as written, on small files this test makes.

Each command is read from README.md (so the two cannot drift apart) and run through ``invdiff.cli.main``
with ``--steps 10`` appended, to keep the test short; the outputs are checked against the truth.
"""

import re
import shlex
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from invdiff import data, metrics
from invdiff.cli import main
from invdiff.operators import CT

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands() -> list[list[str]]:
    text = README.read_text()
    section = text.split("## Reconstruct your own scan", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    cmds = [shlex.split(line) for b in blocks for line in b.splitlines() if line.strip()]
    assert len(cmds) == 3 and all(c[:2] == ["invdiff", "reconstruct"] for c in cmds), cmds
    return cmds


def run(cmd: list[str], cwd: Path) -> None:
    import os

    old = os.getcwd()
    os.chdir(cwd)
    try:
        assert main([*cmd[1:], "--steps", "10"]) == 0
    finally:
        os.chdir(old)


def psnr(x, ref) -> float:
    return float(metrics.psnr(torch.as_tensor(x).reshape(ref.shape), ref, data_range=float(ref.max())).mean())


def test_readme_sinogram_command(tmp_path):
    from test_sinogram import astra_sino, geometry, truth, write_with_h5py

    cmd = readme_commands()[0]
    proj, vol = geometry(60)
    x = truth(3)
    sino = astra_sino(x, proj, vol)
    sino = sino + 0.01 * float(np.sqrt((sino ** 2).mean())) * np.random.default_rng(0).standard_normal(
        sino.shape).astype(np.float32)
    write_with_h5py(tmp_path / cmd[2], sino, proj, vol)
    run(cmd, tmp_path)
    rec, _ = data.load(tmp_path / cmd[cmd.index("--out") + 1])
    truth_t = torch.from_numpy(x)[None, None]
    fbp = CT.from_astra(proj, vol).A_dagger(torch.from_numpy(sino)[None, None])
    assert psnr(rec, truth_t) > psnr(fbp, truth_t) + 3


def test_readme_kspace_command(tmp_path):
    from test_kspace_recon import write_file

    cmd = readme_commands()[1]
    truth, _, _ = write_file(tmp_path / cmd[2], "test")
    run(cmd, tmp_path)
    rec, _ = data.load(tmp_path / cmd[cmd.index("--out") + 1])
    k, meta = data.load(tmp_path / cmd[2])
    kc = torch.complex(k[:, 0], k[:, 1])  # (S, coils, H, W)
    img = torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(kc, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))
    zero_filled_rss = img.abs().pow(2).sum(1).sqrt()[:, None]
    scale = float((zero_filled_rss * truth).sum() / zero_filled_rss.pow(2).sum())  # best scale for the baseline
    assert psnr(rec, truth) > psnr(scale * zero_filled_rss, truth) + 3


def test_readme_dicom_command(tmp_path):
    from test_dicom import write_series

    cmd = readme_commands()[2]
    x = data.ellipsoids((3, 64, 64), seed=5)[0, 0]  # [0, 1]
    hu = x * 1400.0 - 1000.0  # air -1000 HU, soft tissue and bone above
    write_series(tmp_path / cmd[2].rstrip("/"), np.round((hu.numpy() + 1024.0) / 2.0).astype(np.int16),
                        slope=2.0, intercept=-1024.0)
    vol, meta = data.load(tmp_path / cmd[2])
    run(cmd, tmp_path)
    out = tmp_path / cmd[cmd.index("--out") + 1]
    rec, rmeta = data.load(out)
    assert rec.shape == vol.shape and torch.isfinite(rec).all()
    np.testing.assert_allclose(rmeta["affine"], meta["affine"], atol=1e-4)
    # the same command with FBP: DDS, in Hounsfield units like its input, must beat it clearly
    fbp_cmd = [*cmd[:cmd.index("--solver") + 1], "fbp", "--out", "ct_fbp.nii.gz"]
    run(fbp_cmd, tmp_path)
    fbp, _ = data.load(tmp_path / "ct_fbp.nii.gz")
    assert psnr(rec, vol) > psnr(fbp, vol) + 3
