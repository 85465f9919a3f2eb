"""Classical baselines (FBP / ZeroFilled, CG least squares, TV), the batched CG helper, and the method table."""

from __future__ import annotations

import re
import warnings

import deepinv as dinv
import pytest
import torch

import invdiff
from invdiff.data.phantoms import shepp_logan
from invdiff.solvers import CG, FBP, SOLVERS, TV, ZeroFilled, cg
from invdiff.solvers.api import get_solver


def psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / (x - ref).pow(2).mean()))


def test_cg_batched_solves_spd_systems():
    g = torch.Generator().manual_seed(0)
    B, d = 3, 20
    Q = torch.randn(B, d, d, generator=g, dtype=torch.float64)
    M = Q @ Q.transpose(1, 2) + 0.5 * torch.eye(d, dtype=torch.float64)  # a different SPD matrix per sample
    b = torch.randn(B, 1, 4, 5, generator=g, dtype=torch.float64)
    apply = lambda x: (M @ x.reshape(B, d, 1)).reshape(x.shape)
    x = cg(apply, b, iters=200, tol=1e-12)
    exact = torch.linalg.solve(M, b.reshape(B, d, 1)).reshape(b.shape)
    assert float((x - exact).norm() / exact.norm()) < 1e-5
    # a warm start at the solution stays there, and iters=0 returns the start
    assert torch.allclose(cg(apply, b, x0=exact, iters=3), exact, atol=1e-10)
    assert torch.equal(cg(apply, b, x0=exact, iters=0), exact)
    with pytest.raises(ValueError, match="iters"):
        cg(apply, b, iters=-1)


def test_cg_least_squares_recovers_a_well_posed_problem():
    """Overdetermined, noise-free compressed sensing: least squares recovers x exactly (float64 operator)."""
    g = torch.Generator().manual_seed(1)
    op = dinv.physics.CompressedSensing(m=64, img_size=(1, 4, 4), dtype=torch.float64,
                                        rng=torch.Generator().manual_seed(2))
    x = torch.rand(2, 1, 4, 4, generator=g, dtype=torch.float64)
    r = CG(iters=50).reconstruct(op.A(x), op)
    assert float((r.mean - x).abs().max()) < 1e-5
    assert r.nfe == 0 and r.std is None


def _sparse_view_ct(size=32, views=16, noise=0.02, seed=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        op = dinv.physics.Tomography(angles=views, img_width=size, circle=False, normalize=True)
    x = shepp_logan(size)
    y = op.A(x)
    y = y + noise * y.abs().max() * torch.randn(y.shape, generator=torch.Generator().manual_seed(seed))
    return op, x, y


def test_tv_beats_fbp_on_noisy_sparse_view_ct():
    op, x, y = _sparse_view_ct()
    pinv = FBP().reconstruct(y, op).mean  # deepinv's Tomography.A_dagger: least squares by CG
    fbp = op.A_dagger(y, fbp=True)  # filtered back-projection proper
    tv = TV(weight=1e-3, iters=300).reconstruct(y, op, progress=False).mean
    # measured: least squares 16.4 dB, FBP 17.1 dB, TV 21.4 dB (32x32 Shepp-Logan, 16 views, 2% noise)
    assert psnr(tv, x) > max(psnr(fbp, x), psnr(pinv, x)) + 3.0, (psnr(tv, x), psnr(fbp, x), psnr(pinv, x))
    assert torch.equal(pinv, op.A_dagger(y))


def test_tv_on_a_volume_fills_inpainting_holes():
    g = torch.Generator().manual_seed(3)
    z = torch.linspace(0, 1, 6)
    x = (z[:, None, None] + z[None, :, None] + z[None, None, :]).reshape(1, 1, 6, 6, 6) / 3  # smooth volume
    op = dinv.physics.Inpainting(img_size=(1, 6, 6, 6), mask=0.6, rng=g)
    y = op.A(x)
    tv = TV(weight=1e-2, iters=300).reconstruct(y, op, progress=False).mean
    assert tv.shape == x.shape
    assert psnr(tv, x) > psnr(op.A_dagger(y), x) + 10


def test_fbp_zerofilled_and_samples():
    op = dinv.physics.Inpainting(img_size=(1, 8, 8), mask=0.5, rng=torch.Generator().manual_seed(0))
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = op.A(x)
    for cls in (FBP, ZeroFilled):
        r = cls().reconstruct(y, op, n_samples=3)
        assert torch.equal(r.mean, op.A_dagger(y))
        assert r.samples.shape == (3, 2, 1, 8, 8) and torch.equal(r.std, torch.zeros_like(r.mean))
        assert r.nfe == 0
        assert torch.equal(cls()(y, op), op.A_dagger(y))


def test_baseline_bad_input():
    op = dinv.physics.Inpainting(img_size=(1, 8, 8), mask=0.5)
    y = op.A(torch.ones(1, 1, 8, 8))
    with pytest.raises(ValueError, match="weight"):
        TV(weight=-1.0)
    with pytest.raises(ValueError, match="iters"):
        TV(iters=0)
    with pytest.raises(ValueError, match="iters"):
        CG(iters=0)
    with pytest.raises(ValueError, match="damping"):
        CG(damping=-1)
    with pytest.raises(ValueError, match="n_samples"):
        FBP().reconstruct(y, op, n_samples=0)
    bad = y.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="y"):
        TV().reconstruct(bad, op)
    with pytest.raises(ValueError, match="y: shape"):
        CG().reconstruct(torch.zeros(1, 1, 4, 4), op)
    nonlinear = dinv.physics.Physics(A=lambda x: x**2)
    with pytest.raises(TypeError, match="op"):
        CG().reconstruct(y, nonlinear)


def test_method_table_and_one_call_reconstruct():
    op = dinv.physics.Inpainting(img_size=(1, 8, 8), mask=0.5)
    y = op.A(torch.rand(1, 1, 8, 8))
    for name in ("dps", "reddiff", "fbp", "zerofilled", "tv", "cg"):
        assert name in SOLVERS and isinstance(SOLVERS[name], type)
    assert {"smc", "mbir", "dds"} <= set(SOLVERS)
    assert get_solver("RED-Diff") is SOLVERS["reddiff"] and get_solver("AFDPS") is SOLVERS["afdps"]
    r = invdiff.reconstruct(y, op, method="fbp")
    assert torch.equal(r.mean, op.A_dagger(y))
    r = invdiff.reconstruct(y, op, None, "cg", iters=5)
    assert r.nfe == 0
    with pytest.raises(ValueError, match="method"):
        invdiff.reconstruct(y, op, method="magic")
    with pytest.raises(ValueError, match="method"):
        get_solver("magic")
    with pytest.raises(TypeError, match="prior"):
        invdiff.reconstruct(y, op, method="dps")


def test_one_validator_module_for_operators_and_solvers():
    """The operators' checks are invdiff.validate's, and every error names the argument, the value given and
    what was expected."""
    from invdiff import validate
    from invdiff.operators import _checked, blur, ct, inpainting, mri, superres

    for module in (blur, ct, inpainting, mri, superres):
        assert module.check_noise_std is validate.check_noise_std and module.check_img_size is validate.check_img_size
    assert _checked.check_input is validate.check_input and ct.check_positive_int is validate.check_positive_int
    cases = [(lambda: validate.check_positive_int("steps", 0), ValueError, r"steps: expected a positive integer, got 0"),
             (lambda: validate.check_positive_float("lr", "fast"), TypeError, r"lr: expected a number, got 'fast'"),
             (lambda: validate.check_unit_interval("eta", 2), ValueError, r"eta: expected a number in \[0, 1\], got 2"),
             (lambda: validate.check_choice("mode", "x", ("pc", "dds")), ValueError,
              r"mode: expected one of \('pc', 'dds'\), got 'x'"),
             (lambda: validate.check_vp_chain(1000, 0.02, 1e-4), ValueError,
              r"beta_start, beta_end: expected 0 < beta_start < beta_end < 1, got 0.02, 0.0001"),
             (lambda: validate.check_tail_average(7, 5), ValueError, r"tail_average: expected an integer in \[1, steps=5\]"),
             (lambda: validate.check_noise_std(-1), ValueError, r"noise_std: expected a non-negative finite number, got -1"),
             (lambda: validate.check_prior("net"), TypeError, r"prior: expected a denoiser .* got str")]
    for call, err, msg in cases:
        with pytest.raises(err, match=msg):
            call()


def test_tv_same_seed_same_result_whatever_the_global_generator():
    """TV's step sizes come from deepinv's power method, which draws its start from the global generator;
    the solver's seed must fix it, so the global state must not change the result."""
    op = dinv.physics.Inpainting(img_size=(1, 8, 8), mask=0.5, rng=torch.Generator().manual_seed(0))
    y = op.A(torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(1)))
    out = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        out.append(TV(weight=0.01, iters=30).reconstruct(y, op, seed=0, progress=False).mean)
    assert torch.equal(out[0], out[1])


def test_check_interval_names_the_interval():
    from invdiff import validate

    assert validate.check_interval("a", 3, low=1.0) == 3.0
    assert validate.check_interval("cf", 0.0, 0.0, 1.0, high_open=True) == 0.0
    for value, exc, text in [(0.5, ValueError, "a: expected a finite number >= 1, got 0.5"),
                             (float("inf"), ValueError, "a: expected a finite number >= 1, got inf"),
                             ("x", TypeError, "a: expected a number >= 1, got 'x'"),
                             (True, TypeError, "a: expected a number >= 1, got True")]:
        with pytest.raises(exc, match=re.escape(text)):
            validate.check_interval("a", value, low=1.0)
    with pytest.raises(ValueError, match=re.escape("cf: expected a finite number in [0, 1), got 1.0")):
        validate.check_interval("cf", 1.0, 0.0, 1.0, high_open=True)
    with pytest.raises(ValueError, match=re.escape("t: expected a finite number in (0, 2], got 0")):
        validate.check_interval("t", 0, 0.0, 2.0, low_open=True)
