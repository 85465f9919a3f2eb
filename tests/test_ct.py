"""CT operator: exact adjoints, FBP quality, backend agreement, gradients, volumes, noise, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from invdiff.data import ellipses, shepp_logan
from invdiff.operators import CT


def dot_test(op: CT, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """``(<A x, y> - <x, A^T y>) / (|A x| |y|)`` and ``<A x, y> / <x, A^T y>`` (inner products in float64)."""
    Ax, ATy = op.A(x).double(), op.A_adjoint(y).double()
    lhs, rhs = (Ax * y.double()).sum(), (x.double() * ATy).sum()
    return float((lhs - rhs) / (Ax.norm() * y.double().norm())), float(lhs / rhs)


def psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    """PSNR for data range 1: ``10 log10(1 / mse)``."""
    return 10 * math.log10(1.0 / float(((x - ref) ** 2).mean()))


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||a - b|| / ||a||``."""
    return float((a - b).norm() / a.norm())


DOT_CASES = {
    "astra-parallel": dict(img_size=(1, 32, 32), n_views=20),
    "astra-parallel-line": dict(img_size=(1, 32, 32), n_views=20, projector="line"),
    "astra-parallel-strip": dict(img_size=(1, 32, 32), n_views=20, projector="strip"),
    "astra-fan": dict(img_size=(1, 32, 32), n_views=24, geometry="fan"),
    "astra-fan-line": dict(img_size=(1, 32, 32), n_views=24, geometry="fan", projector="line"),
    "torch-parallel": dict(img_size=(1, 32, 32), n_views=20, backend="torch"),
    "torch-fan": dict(img_size=(1, 32, 32), n_views=24, geometry="fan", backend="torch"),
    "astra-limited-angle": dict(img_size=(1, 32, 32), n_views=15, limited_angle=90),
    "torch-limited-angle": dict(img_size=(1, 32, 32), n_views=15, limited_angle=90, backend="torch"),
    "astra-explicit-angles": dict(img_size=(1, 32, 32), angles=[0.3, 0.9, 1.4, 2.2, 2.8, 4.0, 5.5]),
    "astra-volume": dict(img_size=(1, 5, 24, 24), n_views=12),
    "torch-volume": dict(img_size=(1, 5, 24, 24), n_views=12, backend="torch"),
    "astra-fan-volume": dict(img_size=(1, 3, 24, 24), n_views=12, geometry="fan"),
    "astra-odd": dict(img_size=(1, 33, 33), n_views=17),
    "torch-odd": dict(img_size=(1, 33, 33), n_views=17, backend="torch"),
    "astra-fan-odd": dict(img_size=(1, 33, 33), n_views=17, geometry="fan"),
    "astra-nonsquare": dict(img_size=(1, 24, 40), n_views=16),
    "astra-nonsquare-odd-even": dict(img_size=(1, 25, 40), n_views=16),
    "torch-nonsquare": dict(img_size=(1, 24, 40), n_views=16, backend="torch"),
    "astra-fan-nonsquare": dict(img_size=(1, 25, 40), n_views=16, geometry="fan"),
    "astra-channels": dict(img_size=(3, 24, 24), n_views=10),
    "torch-channels": dict(img_size=(3, 24, 24), n_views=10, backend="torch"),
    "astra-few-detectors": dict(img_size=(1, 32, 32), n_views=10, n_detectors=21),
    "torch-more-detectors": dict(img_size=(1, 32, 32), n_views=10, n_detectors=60, backend="torch"),
}


@pytest.mark.parametrize("case", list(DOT_CASES))
def test_adjoint_dot_product(case):
    kw = dict(DOT_CASES[case])
    op = CT(kw.pop("img_size"), **kw)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, *op.img_size, generator=g)  # batch of 2
    y = torch.rand(2, *op.meas_size, generator=g)
    err, ratio = dot_test(op, x, y)
    print(f"{case}: normalised error {err:.2e}, <Ax,y>/<x,A^T y> = {ratio:.9f}")
    assert abs(err) < 1e-5
    assert abs(ratio - 1) < 1e-5


def test_sinogram_layout_and_defaults():
    op = CT((2, 40, 40), n_views=30)
    assert op.meas_size == (2, 30, 58)  # ceil(40 sqrt 2) = 57 -> parity of W
    assert op.A(torch.rand(3, 2, 40, 40)).shape == (3, 2, 30, 58)
    torch.testing.assert_close(op.angles, torch.arange(30, dtype=torch.float64) * math.pi / 30)
    fan = CT((1, 40, 40), n_views=30, geometry="fan")
    torch.testing.assert_close(fan.angles, torch.arange(30, dtype=torch.float64) * 2 * math.pi / 30)
    assert (fan.source_distance, fan.detector_distance, fan.detector_spacing) == (80.0, 40.0, 1.5)
    lim = CT((1, 40, 40), n_views=30, limited_angle=90)
    torch.testing.assert_close(lim.angles, torch.arange(30, dtype=torch.float64) * (math.pi / 2) / 30)
    vol = CT((1, 4, 16, 16), n_views=8, backend="torch")
    assert vol.A(torch.rand(2, 1, 4, 16, 16)).shape == (2, 1, 4, 8, vol.n_detectors)


def test_fbp_shepp_logan_180_views_reaches_27_db():
    x = shepp_logan(128)
    for backend in ("astra", "torch"):
        op = CT((1, 128, 128), n_views=180, backend=backend)
        p = psnr(op.A_dagger(op.A(x)), x)
        print(f"FBP 180 views parallel {backend}: {p:.2f} dB")
        assert p >= 27.0


def test_fbp_fan_beam_shepp_logan():
    x = shepp_logan(128)
    op = CT((1, 128, 128), n_views=360, geometry="fan")
    p = psnr(op.A_dagger(op.A(x)), x)
    print(f"FBP 360 views fan beam: {p:.2f} dB")
    assert p >= 27.0


def test_fbp_limited_angle_and_sparse_views_are_worse_but_sane():
    x = shepp_logan(64)
    full = psnr(CT((1, 64, 64), n_views=90).A_dagger(CT((1, 64, 64), n_views=90).A(x)), x)
    lim_op = CT((1, 64, 64), n_views=45, limited_angle=90)
    lim = psnr(lim_op.A_dagger(lim_op.A(x)), x)
    sparse_op = CT((1, 64, 64), n_views=16)
    sparse = psnr(sparse_op.A_dagger(sparse_op.A(x)), x)
    print(f"64x64 FBP: 90 views {full:.1f} dB, 90-degree wedge {lim:.1f} dB, 16 views {sparse:.1f} dB")
    assert full > sparse > 12 and full > lim > 12


@pytest.mark.parametrize("geometry", ["parallel", "fan"])
@pytest.mark.parametrize("phantom,size", [("shepp-logan", 48), ("ellipses", 48), ("ellipses", 33), ("ellipses", 64)])
def test_astra_and_torch_backends_agree(geometry, phantom, size):
    x = shepp_logan(size) if phantom == "shepp-logan" else ellipses(2, size, seed=5)
    s1 = CT((1, size, size), n_views=40, geometry=geometry).A(x)
    s2 = CT((1, size, size), n_views=40, geometry=geometry, backend="torch").A(x)
    r = rel(s1, s2)
    print(f"{geometry} {phantom} {size}: ||s_astra - s_torch|| / ||s_astra|| = {r:.4f}")
    assert r < 0.03


def test_astra_and_torch_backends_agree_limited_angle_nonsquare_explicit_angles():
    x = ellipses(1, 64, seed=2)[..., 8:56, :]  # 48 x 64
    for kw in (dict(limited_angle=120, n_views=30), dict(angles=torch.tensor([0.1, 0.7, 2.0, 2.9]))):
        for geometry in ("parallel", "fan"):
            s1 = CT((1, 48, 64), geometry=geometry, **kw).A(x)
            s2 = CT((1, 48, 64), geometry=geometry, backend="torch", **kw).A(x)
            assert rel(s1, s2) < 0.03, (kw, geometry, rel(s1, s2))


def test_projection_conventions_point_source():
    """A single pixel lands at u = x cos(theta) + y sin(theta) (pixel units, y up) on the detector."""
    H = W = 33
    x = torch.zeros(1, 1, H, W)
    i, j = 6, 24  # row 6 from the top, column 24
    x[0, 0, i, j] = 1.0
    px, py = j - (W - 1) / 2, (H - 1) / 2 - i
    theta = torch.tensor([0.0, 0.5, math.pi / 2, 2.0, 3.0])
    for backend in ("astra", "torch"):
        op = CT((1, H, W), angles=theta, backend=backend)
        s = op.A(x)[0, 0]
        u = (torch.arange(op.n_detectors) - (op.n_detectors - 1) / 2).float()
        centroid = (s * u).sum(-1) / s.sum(-1)
        expected = px * torch.cos(theta) + py * torch.sin(theta)
        torch.testing.assert_close(centroid, expected.float(), atol=0.15, rtol=0)


@pytest.mark.parametrize("backend", ["astra", "torch"])
def test_gradient_equals_adjoint_of_residual(backend):
    op = CT((1, 32, 32), n_views=20, backend=backend)
    g = torch.Generator().manual_seed(3)
    x0 = torch.rand(2, 1, 32, 32, generator=g, dtype=torch.float64)
    y = torch.rand(2, *op.meas_size, generator=g, dtype=torch.float64) * 10
    x = x0.clone().requires_grad_(True)
    loss = 0.5 * ((op.A(x) - y) ** 2).sum()
    (grad,) = torch.autograd.grad(loss, x, create_graph=True)
    expected = op.A_adjoint(op.A(x0) - y)
    assert grad.dtype == torch.float64
    # both sides run the same float32 projector: equal to float32 round-off
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
    # independent of the backward wiring: for a quadratic, the central difference with step v is exact
    v = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    L = lambda z: 0.5 * float(((op.A(z) - y) ** 2).sum())  # noqa: E731
    fd = (L(x0 + v) - L(x0 - v)) / 2
    assert abs(fd - float((grad.detach() * v).sum())) < 1e-4 * abs(fd)
    # second order: the Hessian-vector product is A^T A v
    (hvp,) = torch.autograd.grad((grad * v).sum(), x)
    AtAv = op.A_adjoint(op.A(v))
    torch.testing.assert_close(hvp, AtAv, rtol=1e-5, atol=1e-5 * float(AtAv.abs().max()))


def test_gradient_through_adjoint_and_fbp():
    op = CT((1, 24, 24), n_views=12)
    y = torch.rand(1, *op.meas_size, dtype=torch.float64, requires_grad=True)
    x = torch.rand(1, *op.img_size, dtype=torch.float64)
    (gy,) = torch.autograd.grad((op.A_adjoint(y) * x).sum(), y)  # d<A^T y, x>/dy = A x
    torch.testing.assert_close(gy, op.A(x), rtol=1e-5, atol=1e-6)
    (gf,) = torch.autograd.grad(op.A_dagger(y).sum(), y)
    assert gf.shape == y.shape and torch.isfinite(gf).all() and gf.abs().sum() > 0


@pytest.mark.parametrize("kw", [dict(), dict(backend="torch"), dict(geometry="fan")])
def test_volume_equals_slice_by_slice(kw):
    D, H, W = 4, 24, 24
    op3 = CT((1, D, H, W), n_views=12, **kw)
    op2 = CT((1, H, W), n_views=12, **kw)
    v = torch.rand(2, 1, D, H, W, generator=torch.Generator().manual_seed(4))
    y3 = op3.A(v)
    assert y3.shape == (2, 1, D, 12, op2.n_detectors)
    y2 = torch.stack([op2.A(v[:, :, d]) for d in range(D)], dim=2)
    torch.testing.assert_close(y3, y2, rtol=0, atol=1e-6)
    x3 = op3.A_adjoint(y3)
    torch.testing.assert_close(x3, torch.stack([op2.A_adjoint(y3[:, :, d]) for d in range(D)], dim=2), rtol=0, atol=1e-6)
    f3 = op3.A_dagger(y3)
    torch.testing.assert_close(f3, torch.stack([op2.A_dagger(y3[:, :, d]) for d in range(D)], dim=2), rtol=0, atol=1e-5)


def test_dtype_and_device_follow_the_input():
    op = CT((1, 24, 24), n_views=10)
    x = torch.rand(1, 1, 24, 24, dtype=torch.float64)
    y = op.A(x)
    assert y.dtype == torch.float64 and op.A_adjoint(y).dtype == torch.float64 and op.A_dagger(y).dtype == torch.float64
    torch.testing.assert_close(y, op.A(x.float()).double(), rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["astra", "torch"])
def test_cuda_inputs(backend):
    op = CT((1, 32, 32), n_views=16, backend=backend)
    x = torch.rand(1, 1, 32, 32)
    y_cpu = op.A(x)
    y = op.A(x.cuda())
    assert y.device.type == "cuda" and op.A_adjoint(y).device.type == "cuda" and op.A_dagger(y).device.type == "cuda"
    torch.testing.assert_close(y.cpu(), y_cpu, rtol=1e-4, atol=1e-4)
    err, ratio = dot_test(op, x.cuda(), torch.rand(1, *op.meas_size, device="cuda"))
    assert abs(err) < 1e-5 and abs(ratio - 1) < 1e-5


def test_no_astra_objects_left_behind(capfd):
    import astra

    def count():
        capfd.readouterr()
        astra.projector.info()
        astra.data2d.info()
        astra.algorithm.info()
        out = capfd.readouterr().out
        return sum(1 for line in out.splitlines() if line.strip()[:1].isdigit())

    before = count()
    for geometry in ("parallel", "fan"):
        op = CT((1, 2, 16, 16), n_views=8, geometry=geometry)
        x = torch.rand(2, 1, 2, 16, 16, requires_grad=True)
        loss = (op.A(x) ** 2).sum() + op.A_adjoint(op.A(x)).sum()
        loss.backward()
    assert count() == before


def test_gaussian_noise():
    op = CT((1, 32, 32), n_views=30, noise_std=0.5)
    x = ellipses(1, 32, seed=0)
    torch.manual_seed(0)
    y = op(x)
    r = y - op.A(x)
    assert abs(float(r.std()) - 0.5) < 0.05 and abs(float(r.mean())) < 0.05
    assert op.noise_std == 0.5
    torch.manual_seed(0)
    torch.testing.assert_close(op(x), y)


def test_log_poisson_noise():
    I0 = 1e5
    op = CT((1, 32, 32), n_views=30, photon_count=I0)
    assert op.noise_std is None
    x = ellipses(4, 32, seed=0)
    z = op.A(x)
    mu = 1 / 32
    torch.manual_seed(0)
    y = op(x)
    assert torch.isfinite(y).all()
    # y = -log(N / I0) / mu with N ~ Poisson(I0 exp(-mu z)): std about 1 / (mu sqrt(I0 exp(-mu z)))
    std_model = 1 / (mu * torch.sqrt(I0 * torch.exp(-mu * z)))
    t = (y - z) / std_model
    assert abs(float(t.mean())) < 0.05 and abs(float(t.std()) - 1) < 0.05
    # no photons: finite, the largest measurable line integral log(I0) / mu
    dark = CT((1, 16, 16), n_views=4, photon_count=10.0, mu=1.0)
    yd = dark(torch.full((1, 1, 16, 16), 10.0))
    assert torch.isfinite(yd).all() and float(yd.max()) <= math.log(10.0) + 1e-6


@pytest.mark.parametrize(
    "kwargs,exc,words",
    [
        (dict(n_views=0), ValueError, ["n_views", "0", "positive integer"]),
        (dict(n_views=-4), ValueError, ["n_views", "-4"]),
        (dict(n_views=2.5), TypeError, ["n_views", "2.5"]),
        (dict(geometry="cone"), ValueError, ["geometry", "'cone'", "parallel"]),
        (dict(backend="cuda"), ValueError, ["backend", "'cuda'", "astra"]),
        (dict(limited_angle=0), ValueError, ["limited_angle", "0", "(0, 360]"]),
        (dict(limited_angle=400), ValueError, ["limited_angle", "400", "(0, 360]"]),
        (dict(limited_angle=-30), ValueError, ["limited_angle", "-30"]),
        (dict(limited_angle="90"), TypeError, ["limited_angle", "'90'"]),
        (dict(angles=torch.zeros(3, 2)), ValueError, ["angles", "(3, 2)", "1-D"]),
        (dict(angles=[0.0, float("nan")]), ValueError, ["angles", "finite"]),
        (dict(angles=[]), ValueError, ["angles", "non-empty"]),
        (dict(angles="abc"), TypeError, ["angles"]),
        (dict(angles=[0.0, 1.0], limited_angle=90), ValueError, ["limited_angle", "90"]),
        (dict(noise_std=-0.1), ValueError, ["noise_std", "-0.1", "non-negative"]),
        (dict(n_detectors=0), ValueError, ["n_detectors", "0"]),
        (dict(photon_count=-5.0), ValueError, ["photon_count", "-5.0", "positive"]),
        (dict(photon_count=1e4, noise_std=0.1), ValueError, ["photon_count", "noise_std"]),
        (dict(geometry="fan", source_distance=10.0), ValueError, ["source_distance", "10.0", "outside"]),
        (dict(source_distance=100.0), ValueError, ["source_distance", "geometry='fan'"]),
        (dict(geometry="fan", projector="linear"), ValueError, ["projector", "'linear'", "fan"]),
        (dict(projector="siddon"), ValueError, ["projector", "'siddon'"]),
        (dict(backend="torch", projector="strip"), ValueError, ["projector", "backend='torch'"]),
        (dict(backend="torch", n_detectors=45), ValueError, ["n_detectors", "45", "parity"]),
        (dict(backend="torch", detector_spacing=0.5), ValueError, ["detector_spacing", "0.5"]),
        (dict(detector_spacing=0.0), ValueError, ["detector_spacing", "0.0", "positive"]),
        (dict(img_size=(1, 32)), ValueError, ["img_size", "(1, 32)"]),
        (dict(img_size=(1, 31, 32), backend="torch"), ValueError, ["img_size", "parity", "H=31", "W=32"]),
    ],
)
def test_bad_arguments(kwargs, exc, words):
    kwargs = dict(kwargs)
    img_size = kwargs.pop("img_size", (1, 32, 32))
    with pytest.raises(exc) as info:
        CT(img_size, **kwargs)
    msg = str(info.value)
    for w in words:
        assert w in msg, (w, msg)


def test_bad_image_and_sinogram_shapes():
    op = CT((1, 32, 32), n_views=10)
    with pytest.raises(ValueError, match=r"x: shape \(1, 1, 32, 31\).*expected \(B, 1, 32, 32\)"):
        op.A(torch.rand(1, 1, 32, 31))
    with pytest.raises(ValueError, match=r"x: shape \(1, 32, 32\)"):
        op.A(torch.rand(1, 32, 32))
    with pytest.raises(TypeError, match="x: expected a torch.Tensor"):
        op.A(torch.rand(1, 1, 32, 32).numpy())
    n = op.n_detectors
    with pytest.raises(ValueError, match=rf"y: shape \(1, 1, 11, {n}\).*expected \(B, 1, 10, {n}\)"):
        op.A_adjoint(torch.rand(1, 1, 11, n))
    with pytest.raises(ValueError, match=rf"y: shape \(1, 1, {n}, 10\)"):
        op.A_dagger(torch.rand(1, 1, n, 10))  # deepinv's (n_detectors, n_views) layout is refused
    bad = torch.rand(1, 1, 10, n)
    bad[0, 0, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="y: contains 1 non-finite"):
        op.A_dagger(bad)


@pytest.mark.parametrize("geometry", ["parallel", "fan"])
def test_torch_backend_raises_no_warning_and_its_copies_keep_exact_adjoints(geometry):
    """Issue 8: nothing is silenced (any warning fails here) and no private deepinv state is reset; a deep
    copy builds its own adjoint and still passes the dot test."""
    import copy
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        op = CT((1, 24, 24), n_views=10, geometry=geometry, backend="torch")
        g = torch.Generator().manual_seed(5)
        x, y = torch.rand(2, *op.img_size, generator=g), torch.rand(2, *op.meas_size, generator=g)
        op.A_adjoint(y)
        for o in (op, copy.deepcopy(op)):
            err, ratio = dot_test(o, x, y)
            assert abs(err) < 1e-5 and abs(ratio - 1) < 1e-5
