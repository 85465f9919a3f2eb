"""PSNR, SSIM, sliced Wasserstein and coverage against values known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from invdiff import metrics


def test_psnr_known_values_per_image():
    ref = torch.zeros(2, 1, 8, 8)
    ref[:, :, ::2] = 1.0
    ref[:, :, 1::2] = -1.0  # range L = 2 in both images
    sign = torch.ones(8, 8)
    sign[::2, ::2] = -1
    x = ref.clone()
    x[0, 0] += 0.2 * sign  # MSE 0.04 -> 10 log10(4 / 0.04) = 20 dB
    x[1, 0] += 0.02 * sign  # MSE 4e-4 -> 40 dB
    p = metrics.psnr(x, ref)
    assert p.shape == (2,) and p.dtype == torch.float64
    torch.testing.assert_close(p, torch.tensor([20.0, 40.0], dtype=torch.float64), rtol=0, atol=1e-5)
    # an explicit data range: L = 1 lowers both by 20 log10(2)
    torch.testing.assert_close(metrics.psnr(x, ref, data_range=1.0), p - 20 * math.log10(2), rtol=0, atol=1e-5)
    assert torch.isinf(metrics.psnr(ref, ref)).all()


def test_psnr_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        metrics.psnr(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 5))
    with pytest.raises(ValueError, match="data_range"):
        metrics.psnr(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4), data_range=-1.0)
    with pytest.raises(ValueError, match="data_range"):
        metrics.psnr(torch.rand(1, 1, 4, 4), torch.ones(1, 1, 4, 4))  # constant reference: no range


def _ssim_reference(x: np.ndarray, y: np.ndarray, L: float, win=11, sigma=1.5) -> float:
    """Direct (non-separable) 2D Gaussian-window SSIM with scipy, for one image."""
    r = np.arange(win) - (win - 1) / 2
    g = np.exp(-r**2 / (2 * sigma**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    h = win // 2

    def filt(a):
        return ndimage.correlate(a, w, mode="constant")[h:-h, h:-h]  # 'valid' part

    mx, my = filt(x), filt(y)
    vx, vy, cxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    s = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


def test_ssim_matches_direct_computation_and_decreases_with_noise():
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(1, 1, 32, 40, generator=g, dtype=torch.float64)
    values = []
    for noise in (0.0, 0.05, 0.1, 0.3):
        x = ref + noise * torch.randn(ref.shape, generator=g, dtype=torch.float64)
        s = metrics.ssim(x, ref)
        L = float(ref.max() - ref.min())
        assert float(s) == pytest.approx(_ssim_reference(x[0, 0].numpy(), ref[0, 0].numpy(), L), abs=1e-10)
        values.append(float(s))
    assert values[0] == pytest.approx(1.0, abs=1e-12)
    assert all(a > b for a, b in zip(values, values[1:])), values


def test_ssim_of_constant_images_is_the_luminance_term():
    # sigma_x = sigma_y = sigma_xy = 0: SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    a, b, L = 0.3, 0.5, 1.0
    x, ref = torch.full((1, 2, 16, 16), a), torch.full((1, 2, 16, 16), b)
    c1 = (0.01 * L) ** 2
    assert float(metrics.ssim(x, ref, data_range=L)) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-6)


def test_ssim_3d_and_small_images():
    g = torch.Generator().manual_seed(1)
    vol = torch.rand(2, 1, 6, 20, 20, generator=g)
    assert torch.allclose(metrics.ssim(vol, vol), torch.ones(2, dtype=torch.float64))
    noisy = vol + 0.2 * torch.randn(vol.shape, generator=g)
    s = metrics.ssim(noisy, vol)
    assert s.shape == (2,) and (s < 0.9).all()  # window shrinks to 5 along D = 6
    with pytest.raises(ValueError, match="too small"):
        metrics.ssim(torch.rand(1, 1, 2, 8), torch.rand(1, 1, 2, 8))


def test_sliced_wasserstein_one_dimensional_gaussians():
    # in 1D SW_2 = W_2 = |m| between N(0, 1) and N(m, 1); with N = 4000 the estimate's error is
    # dominated by the difference of sample means, sd sqrt(2 / N) = 0.022: tolerance 0.1 (4.5 sd)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 1, generator=g)
    for m in (0.5, 1.5):
        b = torch.randn(4000, 1, generator=g) + m
        assert metrics.sliced_wasserstein(a, b) == pytest.approx(m, abs=0.1)


def test_sliced_wasserstein_isotropic_shift_is_norm_over_sqrt_d():
    # W_2 along theta is |<theta, m>|, and E[<theta, m>^2] = |m|^2 / d on the sphere, so
    # SW_2 = |m| / sqrt(d) = 0.707 for |m| = 2, d = 8 (E|<theta, m>| would give 0.58, |m| would give 2).
    # Errors: 500 directions, sd of <theta, m>^2 is 0.59 -> 0.026 on SW^2 = 0.5, 0.019 on SW;
    # sample means (N = 4000) about 0.01. Tolerance 0.05.
    d, N = 8, 4000
    g = torch.Generator().manual_seed(2)
    m = torch.full((d,), 2 / math.sqrt(d))
    a = torch.randn(N, d, generator=g)
    b = torch.randn(N, d, generator=g) + m
    sw = metrics.sliced_wasserstein(a, b, n_projections=500, seed=3)
    assert sw == pytest.approx(2 / math.sqrt(d), abs=0.05)
    same = metrics.sliced_wasserstein(a, torch.randn(3000, d, generator=g), n_projections=500, seed=3)
    assert same < 0.08 < sw  # the same law, unequal sample sizes: only finite-sample error
    # images are flattened to vectors
    flat = metrics.sliced_wasserstein(a[:500], b[:500], n_projections=50, seed=3)
    assert metrics.sliced_wasserstein(a[:500].reshape(500, 2, 2, 2), b[:500].reshape(500, 2, 2, 2),
                                      n_projections=50, seed=3) == flat


def test_sliced_wasserstein_unequal_sizes_exact():
    a = torch.tensor([[0.0], [1.0]])
    b = torch.tensor([[0.0], [1.0], [2.0]])
    # quantile functions differ by 1 on [1/3, 1/2) and [2/3, 1): W_2^2 = 1/6 + 1/3
    assert metrics.sliced_wasserstein(a, b) == pytest.approx(math.sqrt(0.5), rel=1e-12)
    x = torch.randn(50, 3)
    assert metrics.sliced_wasserstein(x, torch.cat([x, x[torch.randperm(50)]])) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="features"):
        metrics.sliced_wasserstein(torch.randn(5, 3), torch.randn(5, 4))


def test_coverage_of_exact_posterior_samples():
    # S samples and the truth drawn from the same law; linear-interpolation quantiles sit at
    # 1-based ranks r = 1 + q (S - 1), so the expected coverage is (r_hi - r_lo) / (S + 1).
    # 20000 independent pixels: sd sqrt(p (1 - p) / 20000) <= 0.0035; tolerance 4 sd.
    S, P = 199, 20000
    g = torch.Generator().manual_seed(4)
    samples = torch.randn(S, 2, P // 2, generator=g)
    truth = torch.randn(2, P // 2, generator=g)
    for level in (0.5, 0.9):
        lo, hi = 1 + (1 - level) / 2 * (S - 1), 1 + (1 + level) / 2 * (S - 1)
        expected = (hi - lo) / (S + 1)
        sd = math.sqrt(expected * (1 - expected) / P)
        assert metrics.coverage(samples, truth, level) == pytest.approx(expected, abs=4 * sd)
    # overconfident (too narrow) or biased samples cover far less
    assert metrics.coverage(0.3 * samples, truth, 0.9) < 0.5
    assert metrics.coverage(samples + 2.0, truth, 0.9) < 0.5
    with pytest.raises(ValueError, match="level"):
        metrics.coverage(samples, truth, 1.5)
    with pytest.raises(ValueError, match="truth"):
        metrics.coverage(samples, truth[0], 0.9)
