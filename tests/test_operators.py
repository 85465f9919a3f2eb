"""Inpainting, Blur, SuperResolution and MRI: adjoints, pseudo-inverses, noise, masks, argument checks.

(CT has its own tests.) The dot-product test runs over one registry of operator constructions,
in the manner of deepinv's ``tests/test_physics.py``.
"""

from __future__ import annotations

import math

import deepinv as dinv
import pytest
import torch

from invdiff.operators import MRI, Blur, Inpainting, SuperResolution
from invdiff.operators.functional.fft import fft2c, ifft2c
from invdiff.operators.functional.mri_masks import equispaced_mask, poisson_mask, random_mask


def _coil_maps(n: int, *spatial: int, seed: int = 0) -> torch.Tensor:
    """Smooth-ish random complex coil maps ``(n, *spatial)``."""
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.rand(n, *spatial, generator=g) + 0.2, torch.randn(n, *spatial, generator=g) * 0.5)


def _line_mask(W: int) -> torch.Tensor:
    m = torch.zeros(W, dtype=torch.bool)
    m[::3] = True
    return m


# name -> constructor; every variant asked for by issue 2
OPERATORS = {
    "inpaint-ratio": lambda: Inpainting((3, 16, 12), mask=0.4, seed=0),
    "inpaint-tensor": lambda: Inpainting((2, 9, 11), mask=torch.rand(2, 9, 11, generator=torch.Generator().manual_seed(1)) > 0.5),
    "inpaint-volume": lambda: Inpainting((1, 5, 8, 7), mask=0.3, seed=1),
    "blur-gaussian": lambda: Blur((3, 24, 20), kernel="gaussian", kernel_std=1.5),
    "blur-odd": lambda: Blur((1, 17, 23), kernel_std=2.0),
    "blur-kernel": lambda: Blur((2, 16, 16), kernel=torch.rand(5, 3, generator=torch.Generator().manual_seed(2))),
    "sr-2": lambda: SuperResolution((3, 16, 12), factor=2),
    "sr-4": lambda: SuperResolution((1, 16, 24), factor=4),
    "mri-random-real": lambda: MRI((1, 16, 16), acceleration=4, mask="random", seed=0),
    "mri-equispaced-real": lambda: MRI((1, 16, 20), acceleration=4, mask="equispaced", seed=0),
    "mri-poisson-real": lambda: MRI((1, 20, 16), acceleration=3, mask="poisson", seed=0),
    "mri-random-complex": lambda: MRI((2, 16, 16), mask="random", seed=1),
    "mri-poisson-complex": lambda: MRI((2, 15, 18), acceleration=4, mask="poisson", seed=1),
    "mri-odd-nonsquare": lambda: MRI((2, 15, 9), acceleration=2, mask="equispaced", seed=2),
    "mri-tensor-mask": lambda: MRI((1, 12, 10), mask=_line_mask(10)),
    "mri-multicoil-real": lambda: MRI((1, 13, 16), coil_maps=_coil_maps(4, 13, 16), seed=3),
    "mri-multicoil-complex": lambda: MRI((2, 16, 11), mask="poisson", coil_maps=_coil_maps(3, 16, 11), seed=3),
    "mri-volume-real": lambda: MRI((1, 3, 12, 9), seed=4),
    "mri-volume-complex-multicoil": lambda: MRI((2, 3, 10, 12), coil_maps=_coil_maps(2, 10, 12), seed=4),
    "mri-volume-coilmaps-per-slice": lambda: MRI((2, 3, 10, 12), coil_maps=_coil_maps(2, 3, 10, 12), seed=5),
}


@pytest.fixture(params=sorted(OPERATORS), name="op_name")
def _op_name(request):
    return request.param


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adjoint_dot_product(op_name, dtype):
    """<A x, y> = <x, A^T y>, error normalised by |A x| |y|, and the ratio of the two sides is 1.

    ``y = A x + r`` with random ``r`` of the same norm as ``A x``: the sides are then of the order of
    ``|A x|^2`` (two independent random vectors would give sides near 0 and a meaningless ratio), and
    ``r`` is nonzero outside the range of ``A`` too (e.g. unsampled k-space).
    """
    op = OPERATORS[op_name]()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, *op.img_size, generator=g, dtype=dtype)
    Ax = op.A(x)
    r = torch.randn(Ax.shape, generator=g, dtype=dtype)
    y = Ax + r * (Ax.norm() / r.norm())
    ATy = op.A_adjoint(y)
    assert ATy.shape == x.shape and ATy.dtype == dtype and Ax.dtype == dtype
    lhs = (Ax.double() * y.double()).sum()
    rhs = (x.double() * ATy.double()).sum()
    err = (lhs - rhs).abs() / (Ax.double().norm() * y.double().norm())
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert err < tol, f"{op_name}: normalised adjoint error {err:.2e}"
    assert lhs.abs() > 0.1 * Ax.double().norm() * y.double().norm(), "degenerate test: <Ax, y> ~ 0"
    assert abs(float(lhs / rhs) - 1) < 10 * tol, f"{op_name}: <Ax,y>/<x,A^T y> = {float(lhs / rhs)}"


def test_autograd_gradient_is_adjoint(op_name):
    """Solvers differentiate ||A x - y||^2 / 2 with autograd; its gradient must be A^T (A x - y)."""
    op = OPERATORS[op_name]()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, *op.img_size, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(op.A(x).shape, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad(0.5 * (op.A(x) - y).pow(2).sum(), x)
    torch.testing.assert_close(grad, op.A_adjoint(op.A(x.detach()) - y), atol=1e-6, rtol=1e-6)


def test_operators_are_deepinv_linear_physics(op_name):
    op = OPERATORS[op_name]()
    assert isinstance(op, dinv.physics.LinearPhysics)
    x = torch.rand(1, *op.img_size)
    assert op(x).shape == op.A(x).shape  # forward = noise(A x)
    assert op.A_dagger(op.A(x)).shape == x.shape


def test_decomposable_operators_run_ddrm_structure():
    """Inpainting, Blur and SR are deepinv DecomposablePhysics: A = U diag(s) V^T with V^T V = I."""
    for op in (OPERATORS["inpaint-ratio"](), OPERATORS["blur-gaussian"](), OPERATORS["sr-4"]()):
        assert isinstance(op, dinv.physics.DecomposablePhysics)
        x = torch.randn(2, *op.img_size)
        torch.testing.assert_close(op.V(op.V_adjoint(x)), x, atol=1e-5, rtol=0)
        torch.testing.assert_close(op.U(op.mask * op.V_adjoint(x)), op.A(x), atol=1e-5, rtol=0)


def test_ddrm_runs_on_superresolution():
    """deepinv's DDRM needs a mask shaped like U^T y; a short run on SR must give a finite image."""
    op = SuperResolution((1, 8, 8), factor=2, noise_std=0.05)
    x = torch.rand(1, 1, 8, 8)
    ddrm = dinv.sampling.DDRM(denoiser=lambda z, s: z / (1 + s**2), sigmas=torch.linspace(1, 0, 5).numpy(), verbose=False)
    out = ddrm(op(x), op)
    assert out.shape == x.shape and torch.isfinite(out).all()


# ---------------------------------------------------------------- pseudo-inverses


@pytest.mark.parametrize(
    "make",
    [
        lambda: MRI((1, 16, 16), acceleration=1),
        lambda: MRI((2, 15, 9), acceleration=1, mask="equispaced"),
        lambda: MRI((2, 12, 10), acceleration=1, mask="poisson"),
        lambda: MRI((1, 12, 10), mask=torch.ones(12, 10)),
        lambda: MRI((2, 3, 10, 12), acceleration=1, coil_maps=_coil_maps(3, 10, 12)),
        lambda: MRI((1, 13, 16), acceleration=1, coil_maps=_coil_maps(4, 13, 16)),
    ],
)
def test_mri_full_sampling_round_trip(make):
    op = make()
    assert op.mask.min() == 1
    x = torch.rand(2, *op.img_size)
    torch.testing.assert_close(op.A_dagger(op.A(x)), x, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["inpaint-ratio", "inpaint-tensor", "inpaint-volume", "sr-2", "sr-4"])
def test_a_of_a_dagger_is_identity_on_measurements(name):
    op = OPERATORS[name]()
    y = op.A(torch.randn(3, *op.img_size))
    torch.testing.assert_close(op.A(op.A_dagger(y)), y, atol=1e-6, rtol=0)
    if isinstance(op, SuperResolution):  # any y is in the range of a box downsampling
        y = torch.randn_like(y)
        torch.testing.assert_close(op.A(op.A_dagger(y)), y, atol=1e-6, rtol=0)
        torch.testing.assert_close(op.A_dagger(y), op.factor**2 * op.A_adjoint(y), atol=1e-6, rtol=0)


def test_superresolution_is_box_average():
    op = SuperResolution((2, 8, 12), factor=4)
    x = torch.randn(3, 2, 8, 12)
    torch.testing.assert_close(op.A(x), torch.nn.functional.avg_pool2d(x, 4), atol=1e-6, rtol=0)


def test_blur_matches_circular_convolution_and_dagger_inverts():
    k = torch.rand(3, 3)
    op = Blur((1, 10, 12), kernel=k)
    x = torch.randn(2, 1, 10, 12)
    ref = torch.zeros_like(x)
    for a in range(3):  # y[i, j] = sum_ab k[a, b] x[i - (a - 1), j - (b - 1)], periodic
        for b in range(3):
            ref += k[a, b] * torch.roll(x, shifts=(a - 1, b - 1), dims=(-2, -1))
    torch.testing.assert_close(op.A(x), ref, atol=1e-5, rtol=0)
    g = Blur((1, 32, 32), kernel_std=1.0)
    assert tuple(g.filter.shape[-2:]) == (7, 7) and abs(float(g.filter.sum()) - 1) < 1e-6  # +-3 std
    x = torch.randn(1, 1, 32, 32)
    torch.testing.assert_close(g.A_dagger(g.A(x)), x, atol=1e-3, rtol=0)  # noise-free: pseudo-inverse
    noisy = Blur((1, 32, 32), kernel_std=1.0, noise_std=0.1)
    y = noisy(x)
    # the regularised inverse does not blow the noise up the way the pseudo-inverse does
    assert (noisy.A_dagger(y) - x).norm() < 0.1 * (noisy.A_dagger(y, reg=0) - x).norm()


def test_mri_fft_matches_fastmri_convention_and_deepinv():
    x = torch.randn(2, 7, 10, dtype=torch.complex128)
    ref = torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))
    torch.testing.assert_close(fft2c(x), ref)
    torch.testing.assert_close(ifft2c(fft2c(x)), x)
    torch.testing.assert_close(fft2c(x), dinv.physics.MRI.fft(x))
    op = MRI((2, 12, 10), mask="random", seed=0)
    xr = torch.randn(1, 2, 12, 10)
    torch.testing.assert_close(op.A(xr), op.to_deepinv().A(xr), atol=1e-6, rtol=0)


def test_mri_real_model_is_complex_model_on_real_images():
    c = MRI((2, 12, 10), mask="equispaced", seed=0)
    r = MRI((1, 12, 10), mask="equispaced", seed=0)
    x = torch.randn(2, 1, 12, 10)
    torch.testing.assert_close(r.A(x), c.A(torch.cat([x, torch.zeros_like(x)], 1)))
    y = r.A(x)
    torch.testing.assert_close(r.A_adjoint(y), c.A_adjoint(y)[:, :1])


def test_mri_multicoil_dagger_normalises_by_coil_power():
    S = _coil_maps(3, 12, 10)
    op = MRI((2, 12, 10), acceleration=1, coil_maps=S)
    x = torch.randn(1, 2, 12, 10)
    y = op.A(x)
    assert y.shape == (1, 2, 3, 12, 10)
    # A^T A x = sum_c |S_c|^2 x at full sampling
    torch.testing.assert_close(op.A_adjoint(y), x * (S.abs() ** 2).sum(0), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- masks


@pytest.mark.parametrize("kind", ["random", "equispaced"])
def test_line_masks_have_center_and_rate(kind):
    fn = {"random": random_mask, "equispaced": equispaced_mask}[kind]
    W, R, cf = 320, 4, 0.08
    rates = [fn(W, R, cf, seed=s).float().mean().item() for s in range(20)]
    m = fn(W, R, cf, seed=0)
    n_c = round(W * cf)
    start = (W - n_c + 1) // 2
    assert m[start : start + n_c].all()
    # random: each outer line is Bernoulli(p), so the mean rate over 20 masks is 1/R within ~4 std
    std = math.sqrt((1 / R) * (1 - 1 / R) / (W * 20))
    assert abs(sum(rates) / len(rates) - 1 / R) < 4 * std + (2 / W if kind == "equispaced" else 0)
    assert fn(W, 1, cf, seed=0).all()


def test_mri_line_masks_are_columns():
    op = MRI((1, 14, 20), mask="random", seed=0)
    assert (op.mask == op.mask[:1]).all()  # same for every row
    assert 0 < op.mask.mean() < 1


@pytest.mark.parametrize("R", [2, 4, 8])
def test_poisson_mask_reaches_acceleration(R):
    m = poisson_mask((48, 40), R, 0.08, seed=0)
    assert m.shape == (48, 40)
    assert abs(1 / m.float().mean().item() - R) / R < 0.05
    cy, cx = round(48 * 0.08), round(40 * 0.08)
    assert m[(48 - cy + 1) // 2 : (48 - cy + 1) // 2 + cy, (40 - cx + 1) // 2 : (40 - cx + 1) // 2 + cx].all()
    # variable density: the central quarter is sampled more densely than the outside
    inner = m[12:36, 10:30].float().mean()
    outer = (m.float().sum() - m[12:36, 10:30].float().sum()) / (48 * 40 - 24 * 20)
    assert inner > 1.5 * outer


@pytest.mark.parametrize("kind", ["random", "equispaced", "poisson"])
def test_mask_seed_reproducible(kind):
    a = MRI((1, 24, 20), mask=kind, seed=7).mask
    b = MRI((1, 24, 20), mask=kind, seed=7).mask
    assert torch.equal(a, b)
    others = [MRI((1, 24, 20), mask=kind, seed=s).mask for s in range(8, 12)]
    assert any(not torch.equal(a, o) for o in others)


def test_inpainting_mask_seed_ratio_and_channels():
    a = Inpainting((3, 10, 10), mask=0.3, seed=5).mask
    b = Inpainting((3, 10, 10), mask=0.3, seed=5).mask
    c = Inpainting((3, 10, 10), mask=0.3, seed=6).mask
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (1, 3, 10, 10)
    assert int(a[0, 0].sum()) == 30  # exact keep count
    assert (a == a[:, :1]).all()  # shared across channels
    assert Inpainting((1, 4, 4), mask=0.0).mask.sum() == 0 and Inpainting((1, 4, 4), mask=1.0).mask.min() == 1


# ---------------------------------------------------------------- noise


@pytest.mark.parametrize(
    "make",
    [
        lambda s: Inpainting((1, 32, 32), mask=0.5, noise_std=s, seed=0),
        lambda s: Blur((1, 32, 32), noise_std=s),
        lambda s: SuperResolution((1, 64, 64), factor=2, noise_std=s),
        lambda s: MRI((1, 32, 32), acceleration=2, noise_std=s, seed=0),
        lambda s: MRI((2, 32, 32), coil_maps=_coil_maps(2, 32, 32), noise_std=s, seed=0),
    ],
)
def test_noise_std(make):
    sigma = 0.1
    op = make(sigma)
    assert op.noise_std == pytest.approx(sigma)
    torch.manual_seed(0)
    x = torch.rand(4, *op.img_size)
    e = op(x) - op.A(x)
    # noise lives on the measured entries (Inpainting and MRI leave unmeasured entries at 0)
    measured = torch.ones_like(e, dtype=torch.bool)
    if isinstance(op, (Inpainting, MRI)):
        measured = (op.mask > 0).expand(e.shape)
        assert (e[~measured] == 0).all()
    n = int(measured.sum())
    std = e[measured].std().item()
    assert abs(std - sigma) < 5 * sigma / math.sqrt(2 * n), f"std {std} vs {sigma} (n={n})"
    assert torch.equal(make(0.0)(x), make(0.0).A(x))


# ---------------------------------------------------------------- errors


# (constructor, exception, argument named first, fragments the message must hold: value, expectation)
BAD_ARGUMENTS = [
    (lambda: MRI((1, 16, 16), acceleration=0.5), ValueError, "acceleration", ["0.5", ">= 1"]),
    (lambda: MRI((1, 16, 16), acceleration="fast"), TypeError, "acceleration", ["'fast'", ">= 1"]),
    (lambda: MRI((1, 16, 16), center_fraction=1.0), ValueError, "center_fraction", ["1.0", "[0, 1)"]),
    (lambda: MRI((1, 16, 16), center_fraction=-0.1), ValueError, "center_fraction", ["-0.1", "[0, 1)"]),
    (lambda: MRI((1, 16, 16), mask="radial"), ValueError, "mask", ["'radial'", "'random', 'equispaced', 'poisson'"]),
    (lambda: MRI((1, 16, 16), mask=torch.ones(5)), ValueError, "mask", ["(5,)", "(16,)", "(16, 16)"]),
    (lambda: MRI((1, 16, 16), mask=torch.full((16,), 0.5)), ValueError, "mask", ["0s and 1s"]),
    (lambda: MRI((3, 16, 16)), ValueError, "img_size", ["3 channels", "1 (real image)", "2 (complex"]),
    (lambda: MRI((1, 16, 16), coil_maps=torch.ones(2, 16, 16)), TypeError, "coil_maps", ["complex", "real tensor"]),
    (lambda: MRI((1, 16, 16), coil_maps=torch.ones(2, 8, 16, dtype=torch.complex64)), ValueError, "coil_maps", ["(2, 8, 16)", "(N_coils, 16, 16)"]),
    (lambda: MRI((1, 16, 16), noise_std=-0.1), ValueError, "noise_std", ["-0.1", "non-negative"]),
    (lambda: Inpainting((1, 8, 8), mask=1.5), ValueError, "mask", ["1.5", "keep-ratio", "[0, 1]"]),
    (lambda: Inpainting((1, 8, 8), mask=-0.2), ValueError, "mask", ["-0.2", "[0, 1]"]),
    (lambda: Inpainting((1, 8, 8), mask=torch.ones(7, 8)), ValueError, "mask", ["(7, 8)", "(8, 8)"]),
    (lambda: Inpainting((1, 8, 8), noise_std=-1), ValueError, "noise_std", ["-1", "non-negative"]),
    (lambda: Inpainting((8, 8), mask=0.5), ValueError, "img_size", ["(8, 8)", "(C, H, W)"]),
    (lambda: Blur((1, 16, 16), kernel_std=-1.0), ValueError, "kernel_std", ["-1.0", "positive"]),
    (lambda: Blur((1, 16, 16), kernel_std=0), ValueError, "kernel_std", ["got 0", "positive"]),
    (lambda: Blur((1, 16, 16), kernel_std=4.0), ValueError, "kernel_std", ["4.0", "larger than the image"]),
    (lambda: Blur((1, 16, 16), kernel="box"), ValueError, "kernel", ["'box'", "'gaussian'"]),
    (lambda: Blur((1, 16, 16), kernel=torch.ones(20, 3)), ValueError, "kernel", ["(20, 3)", "h <= 16"]),
    (lambda: Blur((1, 4, 16, 16)), ValueError, "img_size", ["(1, 4, 16, 16)", "(C, H, W)"]),
    (lambda: Blur((1, 16, 16), noise_std=-0.5), ValueError, "noise_std", ["-0.5", "non-negative"]),
    (lambda: SuperResolution((1, 16, 18), factor=4), ValueError, "factor", ["4", "16 x 18", "divide"]),
    (lambda: SuperResolution((1, 16, 16), factor=0), ValueError, "factor", ["got 0", "positive integer"]),
    (lambda: SuperResolution((1, 16, 16), factor=2.5), TypeError, "factor", ["2.5", "integer"]),
    (lambda: SuperResolution((1, 16, 16), noise_std=-1e-3), ValueError, "noise_std", ["-0.001", "non-negative"]),
]


@pytest.mark.parametrize("make, exc, arg, fragments", BAD_ARGUMENTS)
def test_bad_arguments(make, exc, arg, fragments):
    with pytest.raises(exc, match=rf"^{arg}: ") as info:
        make()
    msg = str(info.value)
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"


def test_wrong_shapes(op_name):
    op = OPERATORS[op_name]()
    x = torch.rand(1, *op.img_size)
    y = op.A(x)
    bad_x = torch.rand(1, *op.img_size[:-1], op.img_size[-1] + 1)
    with pytest.raises(ValueError, match=r"x: shape .*expected \(B, "):
        op.A(bad_x)
    with pytest.raises(ValueError, match=r"x: shape"):
        op.A(x[0])  # batch dimension missing
    bad_y = torch.rand(*y.shape[:-1], y.shape[-1] + 1)
    with pytest.raises(ValueError, match=r"y: shape .*expected \(B, "):
        op.A_adjoint(bad_y)
    with pytest.raises(ValueError, match=r"y: shape"):
        op.A_dagger(bad_y)


def test_mri_k_space_layout():
    assert MRI((1, 12, 10)).A(torch.rand(2, 1, 12, 10)).shape == (2, 2, 12, 10)
    assert MRI((2, 4, 12, 10)).A(torch.rand(2, 2, 4, 12, 10)).shape == (2, 2, 4, 12, 10)
    op = MRI((1, 4, 12, 10), coil_maps=_coil_maps(3, 12, 10))
    assert op.A(torch.rand(2, 1, 4, 12, 10)).shape == (2, 2, 3, 4, 12, 10)
    # a volume is transformed slice by slice with the same mask
    v = torch.rand(1, 2, 4, 12, 10)
    vol = MRI((2, 4, 12, 10), seed=0)
    sl = MRI((2, 12, 10), seed=0)
    torch.testing.assert_close(vol.A(v)[:, :, 2], sl.A(v[:, :, 2]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_operators_on_gpu(op_name):
    op = OPERATORS[op_name]().to("cuda")
    x = torch.rand(1, *op.img_size, device="cuda")
    y = op(x)
    assert y.device.type == "cuda" and op.A_adjoint(y).device.type == "cuda" and op.A_dagger(y).device.type == "cuda"
