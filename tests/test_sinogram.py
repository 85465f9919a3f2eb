"""Measured sinograms: the HDF5 format (invdiff layout and LoDoPaB), and `invdiff reconstruct SINO.h5`."""

from __future__ import annotations

import json
import math

import astra
import h5py
import numpy as np
import pytest
import torch

from invdiff import data, metrics
from invdiff.cli import main
from invdiff.data.sinogram import LODOPAB_SHAPE, lodopab_geometry, save_sinogram
from invdiff.operators import CT
from invdiff.recon.sinogram import reconstruct_sinogram
from test_ct_astra_geometry import astra_sino as astra_projection

PIXEL = 0.8  # mm


def geometry(n_views: int = 60, kind: str = "parallel"):
    vol = astra.create_vol_geom(64, 64, -25.6, 25.6, -25.6, 25.6)
    if kind == "parallel":
        proj = astra.create_proj_geom("parallel", PIXEL, 92, np.linspace(0, np.pi, n_views, endpoint=False))
    else:
        proj = astra.create_proj_geom("fanflat", 1.5 * PIXEL, 100, np.linspace(0, 2 * np.pi, n_views, endpoint=False),
                                      100.0, 50.0)
    return proj, vol


def astra_sino(x: np.ndarray, proj, vol) -> np.ndarray:
    return astra_projection(x, proj, vol, "linear" if proj["type"] == "parallel" else "strip")


def write_with_h5py(path, sino, proj, vol, noise_std=None):
    """A sinogram file made with astra and h5py only, as the format document says."""
    with h5py.File(path, "w") as f:
        f["sinogram"] = sino
        f.attrs["proj_geom"] = json.dumps(dict(proj, ProjectionAngles=list(proj["ProjectionAngles"])))
        f.attrs["vol_geom"] = json.dumps(vol)
        if noise_std is not None:
            f.attrs["noise_std"] = noise_std


def truth(seed: int = 3) -> np.ndarray:
    return (0.02 * data.ellipses(1, 64, seed=seed))[0, 0].numpy().astype(np.float32)  # 1/mm


# ------------------------------------------------------------------ the file format
@pytest.mark.parametrize("kind", ["parallel", "fanflat"])
def test_file_written_with_h5py_loads_with_its_geometry(tmp_path, kind):
    proj, vol = geometry(30, kind)
    x = truth()
    sino = astra_sino(x, proj, vol)
    write_with_h5py(tmp_path / "s.h5", sino, proj, vol, noise_std=0.003)
    y, meta = data.load(tmp_path / "s.h5")
    assert meta["format"] == "sinogram-h5" and meta["noise_std"] == 0.003
    assert y.shape == sino.shape and y.dtype == torch.float32
    op = CT.from_astra(meta["proj_geom"], meta["vol_geom"])
    torch.testing.assert_close(op.A(torch.from_numpy(x)[None, None])[0, 0], y, rtol=0, atol=1e-6 * float(y.abs().max()))


def test_save_load_round_trip_stack_and_overwrite(tmp_path):
    proj, vol = geometry(20, "fanflat")
    g = torch.Generator().manual_seed(0)
    stack = torch.rand(3, 20, 100, generator=g)
    p = data.save(tmp_path / "s.h5", stack, proj_geom=proj, vol_geom=vol, noise_std=0.5, units="1/mm")
    y, meta = data.load(p)
    torch.testing.assert_close(y, stack)
    assert meta["units"] == "1/mm" and meta["noise_std"] == 0.5
    a = CT.from_astra(proj, vol, slices=3)
    b = CT.from_astra(meta["proj_geom"], meta["vol_geom"], slices=3)
    assert a.geom == b.geom
    with pytest.raises(FileExistsError):
        save_sinogram(p, stack, proj, vol)
    save_sinogram(p, 2 * stack, proj, vol, overwrite=True)
    torch.testing.assert_close(data.load(p)[0], 2 * stack)


def test_vec_geometry_round_trip(tmp_path):
    proj, vol = geometry(12, "fanflat")
    pv = astra.geom_2vec(proj)
    sino = np.random.default_rng(0).random((12, 100)).astype(np.float32)
    save_sinogram(tmp_path / "v.h5", sino, pv, vol)
    with h5py.File(tmp_path / "v.h5") as f:
        stored = json.loads(f.attrs["proj_geom"])
    assert stored["type"] == "fanflat_vec" and np.allclose(stored["Vectors"], pv["Vectors"])
    y, meta = data.load(tmp_path / "v.h5")
    assert CT.from_astra(meta["proj_geom"], meta["vol_geom"]).geom == CT.from_astra(pv, vol).geom


@pytest.mark.parametrize("break_it, words", [
    (lambda f: f.attrs.__delitem__("proj_geom"), "'proj_geom'"),
    (lambda f: f.attrs.__setitem__("vol_geom", "{not json"), "JSON"),
    (lambda f: f.attrs.__setitem__("noise_std", -1.0), "noise_std"),
    (lambda f: (f.__delitem__("sinogram"), f.__setitem__("sinogram", np.zeros((30, 91), np.float32))), "91"),
])
def test_bad_sinogram_files(tmp_path, break_it, words):
    proj, vol = geometry(30)
    write_with_h5py(tmp_path / "s.h5", np.zeros((30, 92), np.float32), proj, vol)
    with h5py.File(tmp_path / "s.h5", "a") as f:
        break_it(f)
    with pytest.raises(ValueError) as err:
        data.load(tmp_path / "s.h5")
    assert words in str(err.value) and "s.h5" in str(err.value)


def test_save_refuses_a_sinogram_that_does_not_match_its_geometry(tmp_path):
    proj, vol = geometry(30)
    with pytest.raises(ValueError, match=r"\(\.\.\., 30, 92\)"):
        data.save(tmp_path / "s.h5", torch.zeros(30, 90), proj_geom=proj, vol_geom=vol)
    assert not (tmp_path / "s.h5").exists()


# ------------------------------------------------------------------ LoDoPaB-CT
def test_lodopab_observation_is_read_with_its_fixed_geometry(tmp_path):
    """A disc placed in ODL's coordinates (x0 along rows, x1 along columns, metres) and projected
    analytically with ODL's parallel-beam convention (detector axis (cos phi, sin phi), phi_k = (k + 1/2)
    pi / 1000, 513 cells over +-0.13 sqrt 2) comes back by FBP at the right pixel and with value 1."""
    c0, c1, r = 0.05, -0.03, 0.02  # m
    n_views, n_det = LODOPAB_SHAPE
    phi = (np.arange(n_views) + 0.5) * np.pi / n_views
    rho = 0.13 * math.sqrt(2)
    u = -rho + (np.arange(n_det) + 0.5) * 2 * rho / n_det
    uc = c0 * np.cos(phi) + c1 * np.sin(phi)
    obs = 2 * np.sqrt(np.clip(r**2 - (u[None, :] - uc[:, None]) ** 2, 0, None))  # chord lengths, value 1
    with h5py.File(tmp_path / "observation_test_000.hdf5", "w") as f:
        f["data"] = obs[None].astype(np.float32)
    y, meta = data.load(tmp_path / "observation_test_000.hdf5")
    assert meta["format"] == "lodopab-h5" and y.shape == (1, *LODOPAB_SHAPE)
    proj, vol = lodopab_geometry()
    assert meta["proj_geom"] == proj
    sub = dict(proj, ProjectionAngles=proj["ProjectionAngles"][::5])  # every 5th view: a faster FBP
    rec = CT.from_astra(sub, vol).A_dagger(y[:, None, ::5])[0, 0]
    p = 0.26 / 362
    i, j = (c0 + 0.13) / p - 0.5, (c1 + 0.13) / p - 0.5  # where ODL puts the disc centre
    w = (rec > 0.5).double()  # the disc (FBP about 1 inside, about 0 elsewhere)
    ii, jj = torch.meshgrid(torch.arange(362.0), torch.arange(362.0), indexing="ij")
    ci, cj = float((w * ii).sum() / w.sum()), float((w * jj).sum() / w.sum())
    assert abs(float(w.sum()) * p**2 - math.pi * r**2) < 0.05 * math.pi * r**2  # its area
    print(f"disc centre at ({ci:.2f}, {cj:.2f}), expected ({i:.2f}, {j:.2f}); value {float(rec[round(i), round(j)]):.3f}")
    assert abs(ci - i) < 1 and abs(cj - j) < 1
    assert abs(float(rec[round(i), round(j)]) - 1) < 0.05


# ------------------------------------------------------------------ the pipeline and the command line
def noisy_file(tmp_path, seed=3, with_noise_attr=False):
    proj, vol = geometry(60)
    x = truth(seed)
    sino = astra_sino(x, proj, vol)
    sigma = 0.01 * float(np.sqrt((sino**2).mean()))
    sino = sino + sigma * np.random.default_rng(seed).standard_normal(sino.shape).astype(np.float32)
    path = tmp_path / "scan.h5"
    write_with_h5py(path, sino, proj, vol, noise_std=sigma if with_noise_attr else None)
    return path, torch.from_numpy(x)[None, None], sigma


def test_cli_reconstructs_a_measured_sinogram_dds_beats_fbp(tmp_path, capsys):
    """60 noisy parallel views of a 64x64 ellipse phantom in 1/mm on 0.8 mm pixels, written with astra and
    h5py; `invdiff reconstruct` with fbp and with dds (shipped prior phantom-ct-64, 10 steps)."""
    path, x, sigma = noisy_file(tmp_path)
    psnr = {}
    for solver, extra in (("fbp", []), ("dds", ["--prior", "phantom-ct-64", "--steps", "10"])):
        out = tmp_path / f"{solver}.npy"
        assert main(["reconstruct", str(path), "--solver", solver, "--out", str(out), *extra]) == 0
        rec = torch.from_numpy(np.load(out))
        assert rec.shape == (64, 64)
        psnr[solver] = float(metrics.psnr(rec[None, None], x, data_range=float(x.max())))
    text = capsys.readouterr().out
    print(text, psnr)
    assert "estimated on the data" in text and "scale:" in text and "0.995 quantile" in text
    assert psnr["dds"] > psnr["fbp"] + 3
    # the output is in the data's units (1/mm): the FBP file equals the operator's own FBP of the data
    y, meta = data.load(path)
    op = CT.from_astra(meta["proj_geom"], meta["vol_geom"])
    torch.testing.assert_close(torch.from_numpy(np.load(tmp_path / "fbp.npy")), op.A_dagger(y[None, None])[0, 0],
                               rtol=1e-4, atol=1e-6)


def test_noise_and_scale_sources_are_reported_and_used(tmp_path):
    path, x, sigma = noisy_file(tmp_path, with_noise_attr=True)
    y, meta = data.load(path)
    r = reconstruct_sinogram(y, meta)
    assert r.noise_std == pytest.approx(sigma) and "from the file" in r.noise_how
    r2 = reconstruct_sinogram(y, meta, noise_std=0.004, scale=0.05)
    assert r2.noise_std == 0.004 and "given (--noise-std)" in r2.noise_how
    assert r2.scale.scale == 0.05 and "given" in r2.scale.how
    torch.testing.assert_close(r2.reconstruction, r.reconstruction)  # FBP does not depend on the scale
    del meta["noise_std"]
    r3 = reconstruct_sinogram(y, meta)
    assert "estimated" in r3.noise_how
    # estimated in air: ~2000 cells give the MAD a relative s.d. of about 3 %; the global MAD was 2.1x too high
    assert "air cells" in r3.noise_how and r3.noise_std == pytest.approx(sigma, rel=0.15)


def test_cli_scale_and_noise_options_reach_the_solver(tmp_path, capsys):
    path, x, sigma = noisy_file(tmp_path)
    out = tmp_path / "tv.npy"
    assert main(["reconstruct", str(path), "--solver", "tv", "--steps", "5", "--scale", "0.04",
                 "--noise-std", "0.002", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "given: data = 0.04" in text and "std 0.002 " in text and "given (--noise-std)" in text
    assert "noise std 0.05," in text  # 0.002 / 0.04 in the prior's units
    assert main(["reconstruct", str(path), "--solver", "fbp", "--out", str(out)]) == 1  # exists
    assert main(["reconstruct", str(path), "--operator", "mri", "--out", str(tmp_path / "o.npy")]) == 2
