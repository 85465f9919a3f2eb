"""``invdiff.recon.file.reconstruct_file``: the pipeline of ``invdiff reconstruct``, callable from a script.

The command line and the function must give the same file: checked bit for bit on an image input
(simulated CT measurement, DDS on the embedded prior with the tuned settings) and on a measured
sinogram (HDF5 with ASTRA geometry, TV), with the same printed report (timings aside).
"""

from __future__ import annotations

import re

import astra
import numpy as np
import pytest
import torch

from invdiff import data
from invdiff.cli import main
from invdiff.recon.file import make_solver, reconstruct_file


def _same_report(cli_out: str, lines: list[str]) -> None:
    strip = lambda t: re.sub(r"\d+\.\d+ s\b", "_ s", t).replace("\n  ", "\n").strip()  # noqa: E731 - timings
    assert strip(cli_out) == strip("\n".join(lines))


def _identical(a, b) -> None:
    (ta, ma), (tb, mb) = data.load(a), data.load(b)
    torch.testing.assert_close(ta, tb, rtol=0, atol=0)
    assert {k: v for k, v in ma.items() if not torch.is_tensor(v)} == {k: v for k, v in mb.items()
                                                                       if not torch.is_tensor(v)}


def test_image_input_function_equals_command(tmp_path, capsys):
    np.save(tmp_path / "x.npy", data.ellipses(1, 32, seed=5)[0, 0].numpy())
    args = dict(operator="ct", views=10, solver="dds", steps=3, noise=0.02, seed=7)
    assert main(["reconstruct", str(tmp_path / "x.npy"), "--out", str(tmp_path / "cli.npy"), "--operator", "ct",
                 "--views", "10", "--solver", "dds", "--steps", "3", "--noise", "0.02", "--seed", "7"]) == 0
    lines: list[str] = []
    out = reconstruct_file(tmp_path / "x.npy", tmp_path / "fn.npy", **args, echo=lines.append)
    assert out == tmp_path / "fn.npy"
    _identical(tmp_path / "cli.npy", out)
    _same_report(capsys.readouterr().out.replace(str(tmp_path / "cli.npy"), "OUT"),
                 [s.replace(str(out), "OUT") for s in lines])
    assert "DDS settings:" in lines[1] and "NFE     3" in lines[2]  # the solver ran its 3 steps
    # another seed gives another measurement and reconstruction: the equality above is not vacuous
    other = reconstruct_file(tmp_path / "x.npy", tmp_path / "seed8.npy", **{**args, "seed": 8}, echo=lambda s: None)
    assert not torch.equal(data.load(other)[0], data.load(out)[0])


def test_sinogram_input_function_equals_command(tmp_path, capsys):
    vol = astra.create_vol_geom(32, 32, -16.0, 16.0, -16.0, 16.0)
    proj = astra.create_proj_geom("parallel", 1.0, 48, np.linspace(0, np.pi, 20, endpoint=False))
    x = (0.02 * data.ellipses(1, 32, seed=2))[0, 0].numpy().astype(np.float32)
    pid = astra.create_projector("linear", proj, vol)
    sid, sino = astra.create_sino(x, pid)
    astra.data2d.delete(sid)
    astra.projector.delete(pid)
    sino = sino + np.random.default_rng(0).normal(0, 0.002, sino.shape).astype(np.float32)
    data.save(tmp_path / "s.h5", torch.from_numpy(sino), proj_geom=proj, vol_geom=vol, noise_std=0.002)
    assert main(["reconstruct", str(tmp_path / "s.h5"), "--solver", "tv", "--steps", "5",
                 "--out", str(tmp_path / "cli.h5")]) == 0
    lines: list[str] = []
    out = reconstruct_file(tmp_path / "s.h5", tmp_path / "fn.h5", solver="tv", steps=5, echo=lines.append)
    _identical(tmp_path / "cli.h5", out)
    _same_report(capsys.readouterr().out.replace(str(tmp_path / "cli.h5"), "OUT"),
                 [s.replace(str(out), "OUT") for s in lines])
    fbp = reconstruct_file(tmp_path / "s.h5", tmp_path / "fbp.h5", solver="fbp", echo=lambda s: None)
    assert not torch.equal(data.load(fbp)[0], data.load(out)[0])


def test_user_errors_are_plain_exceptions_naming_the_argument(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((8, 8), np.float32))
    quiet = dict(echo=lambda s: None)
    with pytest.raises(FileNotFoundError, match="missing.npy.*not found"):
        reconstruct_file(tmp_path / "missing.npy", tmp_path / "o.npy", operator="ct", **quiet)
    with pytest.raises(ValueError, match="operator: required"):
        reconstruct_file(tmp_path / "x.npy", tmp_path / "o.npy", **quiet)
    with pytest.raises(ValueError, match="operator: expected 'ct' or 'mri', got 'pet'"):
        reconstruct_file(tmp_path / "x.npy", tmp_path / "o.npy", operator="pet", **quiet)
    with pytest.raises(ValueError, match="noise: expected a non-negative number.*-1"):
        reconstruct_file(tmp_path / "x.npy", tmp_path / "o.npy", operator="ct", views=4, noise=-1.0, **quiet)
    with pytest.raises(ValueError, match="steps: expected a positive integer, got 0"):
        make_solver("tv", steps=0)
    assert not (tmp_path / "o.npy").exists()
    (tmp_path / "o.npy").write_bytes(b"keep")
    with pytest.raises(FileExistsError, match="o.npy: output exists"):
        reconstruct_file(tmp_path / "x.npy", tmp_path / "o.npy", operator="ct", views=4, **quiet)
    assert (tmp_path / "o.npy").read_bytes() == b"keep"


def test_a_blank_image_is_reconstructed_without_a_score(tmp_path):
    """PSNR needs a non-constant reference: a blank input is still written, its line has no PSNR."""
    np.save(tmp_path / "x.npy", np.zeros((16, 16), np.float32))
    lines: list[str] = []
    out = reconstruct_file(tmp_path / "x.npy", tmp_path / "o.npy", operator="ct", views=8, noise=0.0,
                           echo=lines.append)
    assert "PSNR" not in lines[1] and "NFE" in lines[1]
    assert float(data.load(out)[0].abs().max()) == 0.0  # FBP of a zero sinogram


def test_preset_dds_settings_reach_the_solver_and_are_printed(tmp_path):
    from invdiff.solvers.presets import preset

    s = make_solver("dds", steps=10)
    tuned = preset("dds").params
    for k, v in tuned.items():
        if k in ("steps",):
            continue
        got = s.settings()[k]
        if k == "tail_average":  # stored as a count of steps: 20 % of 10
            assert got == 2
        else:
            assert got == v, (k, got, v)
    np.save(tmp_path / "x.npy", np.eye(16, dtype=np.float32))
    lines: list[str] = []
    reconstruct_file(tmp_path / "x.npy", tmp_path / "o.npy", operator="ct", views=8, solver="dds", steps=3,
                     echo=lines.append)
    printed = [line for line in lines if "DDS settings:" in line]
    assert len(printed) == 1 and "schedule=karras" in printed[0] and "steps=3" in printed[0]
