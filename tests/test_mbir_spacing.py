"""Spacing-aware DiffusionMBIR: the voxel spacing sets the TV-along-z weight, and files pass their spacing on.

The rule (:mod:`invdiff.solvers.spacing`): ``tv_weight_z = tv_weight * sqrt(dy dx) / dz``. The tests check
the rule's properties (it falls with ``dz``, is 1 at isotropic voxels, does not depend on the unit), that
the solver really runs with the scaled weight (a run with ``spacing`` equals a run given the scaled
weight directly, and differs from the unscaled one), that NIfTI zooms and a DICOM series' geometry reach
the solver through ``invdiff reconstruct``, and that bad spacings are refused by name.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from invdiff import data, operators, priors
from invdiff.recon.file import reconstruct_file
from invdiff.solvers import DiffusionMBIR
from invdiff.solvers.presets import preset
from invdiff.solvers.spacing import check_spacing, spacing_from_affine, tv_z_weight, z_ratio


# ---------------------------------------------------------------- the rule
def test_weight_falls_with_slice_thickness_as_one_over_dz():
    dzs = [0.5, 1.0, 2.0, 3.0, 4.0, 8.0]
    w = [tv_z_weight(0.2, (dz, 1.0, 1.0)) for dz in dzs]
    assert all(a > b for a, b in zip(w, w[1:]))  # strictly falling
    for dz, wi in zip(dzs, w):
        assert wi == pytest.approx(0.2 / dz, rel=1e-12)
    assert tv_z_weight(0.2, (1.0, 1.0, 1.0)) == 0.2 == tv_z_weight(0.2, None)


def test_weight_depends_on_the_ratio_only_not_on_the_unit():
    # mm against cm, and an anisotropic pixel: the in-plane size is the geometric mean sqrt(dy dx)
    assert z_ratio((3.0, 0.75, 0.75)) == pytest.approx(z_ratio((0.3, 0.075, 0.075)), rel=1e-12)
    assert z_ratio((2.0, 0.5, 2.0)) == pytest.approx(0.5, rel=1e-12)
    assert z_ratio((4.0, 1.0, 1.0)) == 0.25


def test_spacing_from_a_rotated_flipped_affine():
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
    sizes = np.array([0.7, 0.8, 2.5])  # (dx, dy, dz): columns i, j, k
    a = np.eye(4)
    a[:3, :3] = q @ np.diag(sizes * [-1, 1, 1])
    a[:3, 3] = [10.0, -3.0, 7.0]
    assert spacing_from_affine(a) == pytest.approx((2.5, 0.8, 0.7), rel=1e-12)


# ---------------------------------------------------------------- the solver runs with it
def _tiny_problem():
    torch.manual_seed(0)
    mean = data.shepp_logan(16)[0]  # (1, 16, 16)
    prior = priors.GaussianPrior(mean, 0.3)
    x = mean[None, :, None].repeat(1, 1, 4, 1, 1) * torch.linspace(0.6, 1.0, 4).reshape(1, 1, 4, 1, 1)
    op = operators.CT((1, 4, 16, 16), n_views=6, noise_std=0.05)
    g = torch.Generator().manual_seed(1)
    y = op.A(x) + 0.05 * torch.randn(op.A(x).shape, generator=g)
    return prior, op, y


def test_solver_uses_the_scaled_weight():
    prior, op, y = _tiny_problem()
    kw = dict(steps=4, rho=10.0)
    thick = DiffusionMBIR(prior, tv_weight=0.2, spacing=(4.0, 1.0, 1.0), **kw)
    assert thick.tv_weight_z == 0.05 and thick.tv_weight == 0.2 and thick.settings()["spacing"] == (4.0, 1.0, 1.0)
    a = thick.reconstruct(y, op, seed=3, progress=False).mean
    b = DiffusionMBIR(prior, tv_weight=0.05, **kw).reconstruct(y, op, seed=3, progress=False).mean
    c = DiffusionMBIR(prior, tv_weight=0.2, **kw).reconstruct(y, op, seed=3, progress=False).mean
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - c).abs().max() > 1e-4  # the spacing changed the result: the weight is not ignored


def test_default_weight_is_the_preset_at_isotropic_spacing():
    prior = priors.GaussianPrior(torch.zeros(1, 8, 8), 1.0)
    iso = preset("mbir").params["tv_weight"]
    assert DiffusionMBIR(prior).tv_weight_z == iso
    assert DiffusionMBIR(prior, spacing=(1.5, 1.5, 1.5)).tv_weight_z == pytest.approx(iso, rel=1e-12)
    assert DiffusionMBIR(prior, spacing=(4.0, 1.0, 1.0)).tv_weight_z == pytest.approx(iso / 4, rel=1e-12)


# ---------------------------------------------------------------- files pass their spacing to the solver
@pytest.fixture
def seen(monkeypatch):
    """Record the spacing and weight of the DiffusionMBIR that ``reconstruct_file`` builds; skip the sampling."""
    record = {}

    def fake_sample(self, y, op, generator, progress, callback):
        record.update(spacing=self.spacing, tv_weight_z=self.tv_weight_z, tv_weight=self.tv_weight)
        return op.A_dagger(y)

    monkeypatch.setattr(DiffusionMBIR, "_sample", fake_sample)
    return record


def test_nifti_zooms_reach_the_solver_as_spacing(tmp_path, seen):
    vol = data.ellipsoids((4, 16, 16), seed=3)[0, 0]
    data.save(tmp_path / "v.nii.gz", vol, zooms=(1.0, 1.0, 4.0))  # (i, j, k) = (x, y, z): 4x-thick slices
    lines = []
    reconstruct_file(tmp_path / "v.nii.gz", tmp_path / "r.nii.gz", solver="mbir", operator="ct", views=8,
                     steps=2, echo=lines.append)
    assert seen["spacing"] == (4.0, 1.0, 1.0)
    assert seen["tv_weight_z"] == pytest.approx(seen["tv_weight"] / 4, rel=1e-12)
    assert any("spacing=(4.0, 1.0, 1.0)" in line for line in lines)  # the settings line shows it


def test_nifti_affine_without_zooms_gives_the_same_spacing(tmp_path, seen):
    vol = data.ellipsoids((4, 16, 16), seed=3)[0, 0]
    data.save(tmp_path / "v.nii", vol, affine=np.diag([-0.5, 0.5, 2.0, 1.0]))  # nibabel sets zooms from it
    reconstruct_file(tmp_path / "v.nii", tmp_path / "r.npy", solver="mbir", operator="ct", views=8, steps=2,
                     echo=lambda s: None)
    assert seen["spacing"] == pytest.approx((2.0, 0.5, 0.5), rel=1e-6)


def test_dicom_series_geometry_reaches_the_solver_as_spacing(tmp_path, seen):
    from test_dicom import _hu, write_series

    write_series(tmp_path / "s", _hu(shape=(4, 8, 10))[0], spacing=(0.7, 0.8), dz=2.5)  # PixelSpacing (dy, dx)
    reconstruct_file(tmp_path / "s", tmp_path / "r.npy", solver="mbir", operator="ct", views=8, steps=2,
                     echo=lambda s: None)
    assert seen["spacing"] == pytest.approx((2.5, 0.7, 0.8), rel=1e-6)
    assert seen["tv_weight_z"] == pytest.approx(seen["tv_weight"] * math.sqrt(0.7 * 0.8) / 2.5, rel=1e-6)


def test_other_solvers_ignore_the_spacing(tmp_path):
    vol = data.ellipsoids((4, 16, 16), seed=3)[0, 0]
    data.save(tmp_path / "v.nii.gz", vol, zooms=(1.0, 1.0, 4.0))
    out = reconstruct_file(tmp_path / "v.nii.gz", tmp_path / "r.npy", solver="fbp", operator="ct", views=8,
                           echo=lambda s: None)
    assert out.exists()


# ---------------------------------------------------------------- bad spacings
@pytest.mark.parametrize("bad", [(0.0, 1.0, 1.0), (-1.0, 1.0, 1.0), (1.0, float("nan"), 1.0),
                                 (1.0, 1.0, float("inf")), (1.0, 1.0), (1.0, 1.0, 1.0, 1.0), (True, 1.0, 1.0)])
def test_bad_spacing_is_refused_naming_it(bad):
    prior = priors.GaussianPrior(torch.zeros(1, 8, 8), 1.0)
    with pytest.raises(ValueError, match=r"spacing: expected .*\(dz, dy, dx\)") as err:
        DiffusionMBIR(prior, spacing=bad)
    assert str(list(bad))[:6] in str(err.value)  # the value given is in the message


@pytest.mark.parametrize("bad", ["1,1,4", 4.0])
def test_spacing_of_the_wrong_type_is_refused(bad):
    with pytest.raises(TypeError, match="spacing: expected three voxel sizes"):
        check_spacing(bad)


def test_bad_affine_is_refused():
    with pytest.raises(ValueError, match="affine: expected a finite 4x4"):
        spacing_from_affine(np.eye(3))
    with pytest.raises(ValueError, match="voxel sizes"):
        spacing_from_affine(np.diag([1.0, 1.0, 0.0, 1.0]))


# ---------------------------------------------------------------- the benchmark (python -m invdiff.bench.mbir3d_spacing)
def test_thick_slab_is_the_mean_of_thin_slices():
    from invdiff.bench.mbir3d_spacing import iso_slab, thick_slab

    thin = data.ellipsoids((64, 64, 64), seed=5)
    thick = thick_slab(5, 8)  # the central 32 thin slices (16 .. 47) in groups of 4
    assert thick.shape == (1, 1, 8, 64, 64)
    torch.testing.assert_close(thick[:, :, 2], thin[:, :, 24:28].mean(2))
    torch.testing.assert_close(iso_slab(5, 8), thin[:, :, 28:36])
    with pytest.raises(ValueError, match="depth, factor"):
        thick_slab(5, 32)


def test_benchmark_command_writes_report_figure_and_json(tmp_path, monkeypatch):
    from invdiff.bench import mbir3d_spacing as bench

    small = {"isotropic": (bench.iso_slab(777003, 4, size=32), (1.0, 1.0, 1.0)),
             "thick": (bench.thick_slab(777003, 4, size=32), (4.0, 1.0, 1.0))}
    monkeypatch.setattr(bench, "test_cases", lambda: small)
    md, fig, js = tmp_path / "MBIR3D.md", tmp_path / "f.png", tmp_path / "r.json"
    argv = ["--steps", "1", "--md", str(md), "--out", str(fig), "--json", str(js)]
    rc = bench.main(argv)  # 1 step cannot meet the claim; the exit code must still say whether it did
    text = md.read_text()
    assert "python -m invdiff.bench.mbir3d_spacing --steps 1" in text and "![central planes](f.png)" in text
    for name in bench.NAMES.values():
        assert f"| {name} |" in text
    res = json.loads(js.read_text())
    assert rc == (0 if res["passed"] else 1), (rc, res["passed"])
    assert res["cases"]["thick"]["methods"]["mbir"]["tv_weight_z"] == pytest.approx(
        res["cases"]["thick"]["methods"]["mbir_iso"]["tv_weight_z"] / 4)
    assert fig.stat().st_size > 1000
    with pytest.raises(FileExistsError, match="--overwrite"):
        bench.main(argv)


def test_spacing_from_arrays_and_tensors():
    assert check_spacing(np.array([4, 1, 1])) == (4.0, 1.0, 1.0)
    assert check_spacing(torch.tensor([2.5, 0.7, 0.8], dtype=torch.float64)) == (2.5, 0.7, 0.8)
    assert check_spacing((np.int64(3), np.float32(1.0), 1)) == (3.0, 1.0, 1.0)
    with pytest.raises(TypeError, match="spacing: expected three voxel sizes"):
        check_spacing(np.float64(4.0))
