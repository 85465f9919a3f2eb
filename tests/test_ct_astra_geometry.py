"""CT.from_astra: ASTRA's own geometry dicts in physical units (window in mm, distances in mm)."""

from __future__ import annotations

import json
import math

import astra
import numpy as np
import pytest
import torch

from invdiff.data import shepp_logan
from invdiff.operators import CT

PIXEL = 0.8  # mm
N = 48


def vol_geom(n: int = N, pixel: float = PIXEL, shift=(0.0, 0.0)):
    h = n * pixel / 2
    return astra.create_vol_geom(n, n, -h + shift[0], h + shift[0], -h + shift[1], h + shift[1])


def proj_geoms(n_views: int = 40):
    par = astra.create_proj_geom("parallel", 1.1 * PIXEL, 64, np.linspace(0, np.pi, n_views, endpoint=False))
    fan = astra.create_proj_geom("fanflat", 1.3 * PIXEL, 80, np.linspace(0, 2 * np.pi, n_views, endpoint=False),
                                 70.0, 35.0)
    return {"parallel": (par, "linear"), "fanflat": (fan, "strip"),
            "parallel_vec": (astra.geom_2vec(par), "linear"), "fanflat_vec": (astra.geom_2vec(fan), "line")}


def astra_sino(x: np.ndarray, proj, vol, projector: str) -> np.ndarray:
    kind = projector + ("_fanflat" if proj["type"].startswith("fanflat") else "")
    pid = astra.create_projector(kind, proj, vol)
    try:
        sid, sino = astra.create_sino(x, pid)
        astra.data2d.delete(sid)
    finally:
        astra.projector.delete(pid)
    return sino


def rel(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("kind", ["parallel", "fanflat", "parallel_vec", "fanflat_vec"])
def test_A_equals_astra_create_sino(kind):
    proj, projector = proj_geoms()[kind]
    vol = vol_geom(shift=(1.6, -0.8))  # an off-centre window in mm
    x = (0.02 * shepp_logan(N)[0, 0]).numpy().astype(np.float32)  # attenuation-like, 1/mm
    op = CT.from_astra(proj, vol)
    assert op.projector == projector
    y = op.A(torch.from_numpy(x)[None, None])[0, 0].numpy()
    ref = astra_sino(x, proj, vol, projector)
    print(f"{kind}: relative difference {rel(y, ref):.2e}")
    assert y.shape == ref.shape
    assert rel(y, ref) <= 1e-4


def test_line_integrals_are_in_window_units():
    """A disc of attenuation mu and radius r (mm) has central line integral 2 r mu, whatever the pixel size."""
    mu, r = 0.02, 15.0
    out = []
    for n, pix in ((48, 0.8), (96, 0.4)):
        c = (np.arange(n) - (n - 1) / 2) * pix
        X, Y = np.meshgrid(c, c)
        x = torch.from_numpy(((X**2 + Y**2) <= r**2).astype(np.float32) * mu)[None, None]
        proj = astra.create_proj_geom("parallel", pix, n + 8, np.array([0.0, 0.7]))
        op = CT.from_astra(proj, vol_geom(n, pix))
        out.append(float(op.A(x).max()))
    print(f"central line integral {out} vs 2 r mu = {2 * r * mu}")
    assert all(abs(v - 2 * r * mu) < 0.03 * 2 * r * mu for v in out)


@pytest.mark.parametrize("kind", ["parallel", "fanflat", "parallel_vec", "fanflat_vec"])
def test_adjoint_dot_product_physical_units(kind):
    proj, _ = proj_geoms(24)[kind]
    op = CT.from_astra(proj, vol_geom(), slices=2)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, *op.img_size, generator=g)
    y = torch.rand(2, *op.meas_size, generator=g)
    Ax, ATy = op.A(x).double(), op.A_adjoint(y).double()
    lhs, rhs = (Ax * y.double()).sum(), (x.double() * ATy).sum()
    err, ratio = float((lhs - rhs) / (Ax.norm() * y.double().norm())), float(lhs / rhs)
    print(f"{kind}: normalised error {err:.2e}, ratio {ratio:.9f}")
    assert abs(err) < 1e-5 and abs(ratio - 1) < 1e-5


@pytest.mark.parametrize("kind", ["parallel", "fanflat", "parallel_vec", "fanflat_vec"])
def test_fbp_returns_the_datas_units_at_non_unit_pixel_size(kind):
    """FBP(A x) ~ x for x in 1/mm on 0.8 mm pixels: the same quality as the pixel-unit operator."""
    x = 0.02 * shepp_logan(64)
    proj, _ = proj_geoms(180)[kind]
    op = CT.from_astra(proj, vol_geom(64))
    rec = op.A_dagger(op.A(x))
    p = 10 * math.log10(0.02**2 / float(((rec - x) ** 2).mean()))
    # the same scan in pixel units (every length divided by the pixel size), values in [0, 1]
    unit = {k: v for k, v in proj.items()}
    if "Vectors" in unit:
        unit["Vectors"] = proj["Vectors"] / PIXEL
    else:
        unit["DetectorWidth"] = proj["DetectorWidth"] / PIXEL
        if kind == "fanflat":
            unit["DistanceOriginSource"] = proj["DistanceOriginSource"] / PIXEL
            unit["DistanceOriginDetector"] = proj["DistanceOriginDetector"] / PIXEL
    op1 = CT.from_astra(unit, astra.create_vol_geom(64, 64))
    rec1 = op1.A_dagger(op1.A(x / 0.02))
    p1 = 10 * math.log10(1.0 / float(((rec1 - x / 0.02) ** 2).mean()))
    # the scale itself, on a smooth blob (0.02/mm at the centre, std 8 mm) that FBP resolves fully
    c = (torch.arange(64) - 31.5) * PIXEL
    blob = (0.02 * torch.exp(-(c[:, None] ** 2 + c[None, :] ** 2) / (2 * 8.0**2)))[None, None]
    rb = op.A_dagger(op.A(blob))
    gain = float((rb * blob).sum() / (blob * blob).sum())  # least-squares gain of the reconstruction
    print(f"{kind}: FBP {p:.2f} dB in 1/mm, {p1:.2f} dB in pixel units, gain on a blob {gain:.4f}")
    assert abs(p - p1) < 0.05
    assert abs(gain - 1) < 0.01
    assert p > 20


def test_vec_form_equals_standard_form():
    for kind in ("parallel", "fanflat"):
        proj, projector = proj_geoms(30)[kind]
        x = 0.02 * shepp_logan(N)
        a = CT.from_astra(proj, vol_geom(), projector="line")
        b = CT.from_astra(astra.geom_2vec(proj), vol_geom(), projector="line")
        assert rel(b.A(x).numpy(), a.A(x).numpy()) < 1e-5
        torch.testing.assert_close(b.A_dagger(a.A(x)), a.A_dagger(a.A(x)), rtol=0, atol=1e-5)
        assert b.n_views == a.n_views and abs(b.detector_spacing - a.detector_spacing) < 1e-9


def test_json_round_trip_of_the_dicts():
    """The dicts as a sinogram file holds them (JSON, lists) give the same operator."""
    for proj, _ in proj_geoms(12).values():
        text = json.dumps({k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in proj.items()})
        a, b = CT.from_astra(proj, vol_geom()), CT.from_astra(json.loads(text), json.loads(json.dumps(vol_geom())))
        x = torch.rand(1, 1, N, N)
        torch.testing.assert_close(a.A(x), b.A(x))


@pytest.mark.parametrize("proj, vol, words", [
    ({"type": "cone"}, None, "proj_geom['type']"),
    ({"type": "parallel", "DetectorCount": 10, "ProjectionAngles": [0.0]}, None, "DetectorWidth"),
    ({"type": "parallel", "DetectorWidth": -1.0, "DetectorCount": 10, "ProjectionAngles": [0.0]}, None, "positive"),
    ({"type": "parallel", "DetectorWidth": 1.0, "DetectorCount": 10, "ProjectionAngles": []}, None, "ProjectionAngles"),
    ({"type": "fanflat", "DetectorWidth": 1.0, "DetectorCount": 10, "ProjectionAngles": [0.0],
      "DistanceOriginSource": 5.0, "DistanceOriginDetector": 5.0}, None, "source must lie outside"),
    ({"type": "parallel_vec", "DetectorCount": 10, "Vectors": [[0, 1, 0, 0]]}, None, "(n_views, 6)"),
    ({"type": "parallel", "DetectorWidth": 1.0, "DetectorCount": 10, "ProjectionAngles": [0.0]},
     {"GridRowCount": 8, "GridColCount": 8, "option": {"WindowMinX": -4, "WindowMaxX": 4, "WindowMinY": -8,
                                                       "WindowMaxY": 8}}, "square pixels"),
    ({"type": "parallel", "DetectorWidth": 1.0, "DetectorCount": 10, "ProjectionAngles": [0.0]},
     {"GridColCount": 8}, "GridRowCount"),
])
def test_bad_geometry_dicts(proj, vol, words):
    with pytest.raises((ValueError, TypeError)) as err:
        CT.from_astra(proj, vol if vol is not None else vol_geom())
    assert words in str(err.value)


def test_tilted_fan_detector_has_no_fbp_but_a_and_adjoint_work():
    proj = astra.geom_2vec(proj_geoms(12)["fanflat"][0])
    v = proj["Vectors"].copy()
    c, s = math.cos(0.2), math.sin(0.2)
    v[:, 4], v[:, 5] = c * v[:, 4] - s * v[:, 5], s * v[:, 4] + c * v[:, 5]  # tilt the detector by 0.2 rad
    proj["Vectors"] = v
    op = CT.from_astra(proj, vol_geom())
    x = torch.rand(1, 1, N, N)
    ref = astra_sino(x[0, 0].numpy(), proj, vol_geom(), "line")
    assert rel(op.A(x)[0, 0].numpy(), ref) <= 1e-4
    with pytest.raises(ValueError, match="tilted"):
        op.A_dagger(op.A(x))


def test_fbp_of_a_real_ct_slice_in_physical_units_reaches_30_db():
    """pydicom's CT_small (128x128, 0.66 mm pixels): HU -> attenuation in 1/mm, a 360-view fan-beam
    sinogram made by ASTRA in mm, FBP by CT.from_astra; PSNR with data range = the slice's max attenuation."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    from invdiff import metrics

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    mu = np.clip(0.0192 * (1 + hu / 1000), 0, None).astype(np.float32)  # mu_water = 0.0192 / mm
    dy, dx = (float(v) for v in ds.PixelSpacing)  # mm (row spacing, column spacing)
    H, W = mu.shape
    vol = astra.create_vol_geom(H, W, -W * dx / 2, W * dx / 2, -H * dy / 2, H * dy / 2)
    Ds, Dd = 2 * W * dx, W * dx  # mm; magnification 1.5
    proj = astra.create_proj_geom("fanflat", 1.5 * dx, 2 * W + 32, np.linspace(0, 2 * np.pi, 360, endpoint=False),
                                  Ds, Dd)
    y = torch.from_numpy(astra_sino(mu, proj, vol, "strip"))[None, None]
    op = CT.from_astra(proj, vol)
    x = torch.from_numpy(mu)[None, None]
    rec = op.A_dagger(y)
    p = float(metrics.psnr(rec, x, data_range=float(x.max())))
    print(f"CT_small: {H}x{W} at {dx:.4g} mm, max attenuation {float(x.max()):.4g} /mm, FBP {p:.2f} dB")
    assert p >= 30
