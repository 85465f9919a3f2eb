"""Conformal calibration of per-pixel intervals (invdiff.conformal)."""

import math

import pytest
import torch

from invdiff.conformal import Calibration, calibrate, calibrated_intervals, scores
from invdiff.metrics import central_intervals


def _problem(n, K=16, width=1.0, seed=0, shape=(1, 8, 8)):
    """``n`` images: truth ~ N(m, 1) per pixel around a random m; samples ~ N(m, width^2): exact at width 1."""
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(n, *shape, generator=g)
    truth = m + torch.randn(n, *shape, generator=g)
    samples = m + width * torch.randn(K, n, *shape, generator=g)
    return samples, truth


def test_scale_one_without_floor_gives_the_samples_central_intervals():
    samples, _ = _problem(3)
    lo, hi = calibrated_intervals(samples, 1.0, 0.9)
    qlo, qhi = central_intervals(samples, [0.9])
    mu = samples.double().mean(0)
    inside = (qlo[0] <= mu) & (mu <= qhi[0])  # the mean lies in the interval (nearly always for 16 samples)
    assert inside.float().mean() > 0.99
    torch.testing.assert_close(lo[inside], qlo[0][inside])
    torch.testing.assert_close(hi[inside], qhi[0][inside])


def test_a_pixel_is_inside_exactly_when_the_scale_reaches_its_score():
    samples, truth = _problem(2, width=0.3, seed=1)
    s = scores(samples, truth, 0.9)
    for lam in (0.5, 1.0, 2.0, 4.0):
        lo, hi = calibrated_intervals(samples, lam, 0.9)
        x = truth.double()
        inside = (lo <= x) & (x <= hi)
        # ties at lam == s aside (measure zero), inside <=> s <= lam
        assert torch.equal(inside, s <= lam)


def test_plug_in_restores_nominal_coverage_of_too_narrow_samples_on_further_images():
    """Samples 3x too narrow cover about 0.37 at 90 %; one scale fitted on 20 images covers 0.9 on 200 others."""
    samples, truth = _problem(220, width=1 / 3, seed=2)
    raw = ((central_intervals(samples[:, 20:], [0.9])[0][0] <= truth[20:])
           & (truth[20:] <= central_intervals(samples[:, 20:], [0.9])[1][0])).double().mean()
    assert raw < 0.5
    cal = calibrate(samples[:, :20], truth[:20], level=0.9, method="plug-in")
    assert isinstance(cal, Calibration) and cal.scale > 2
    assert abs(cal.calibration_coverage - 0.9) < 0.005
    assert abs(float(cal.coverage(samples[:, 20:], truth[20:]).mean()) - 0.9) < 0.02


def test_exact_samples_need_a_scale_above_one_for_the_nominal_level():
    """16 exact samples cover p (K - 1) / (K + 1) = 0.794 at 90 %; calibration widens them to 0.9."""
    samples, truth = _problem(200, seed=3)
    cal = calibrate(samples[:, :100], truth[:100], level=0.9, method="plug-in")
    assert 1.0 < cal.scale < 1.6
    assert abs(float(cal.coverage(samples[:, 100:], truth[100:]).mean()) - 0.9) < 0.02


def test_risk_control_bounds_the_expected_miss_rate():
    """Conformal risk control: over repeated draws of 9 calibration images and one further image, the mean
    fraction of the further image's pixels outside is at most alpha = 0.1 (Monte Carlo, 300 draws). With 9 images
    the aim is R <= (0.1 * 10 - 1) / 9 = 0, so it covers every calibration pixel and over-covers."""
    misses = []
    for t in range(300):
        samples, truth = _problem(10, K=8, width=0.5, seed=100 + t, shape=(1, 4, 4))
        cal = calibrate(samples[:, :9], truth[:9], level=0.9, method="risk-control")
        assert cal.calibration_coverage == 1.0
        misses.append(1 - float(cal.coverage(samples[:, 9:], truth[9:])))
    mean, se = sum(misses) / len(misses), torch.tensor(misses).std().item() / math.sqrt(len(misses))
    assert mean <= 0.1 + 2 * se
    assert mean < 0.05  # it over-covers at n = 9


def test_risk_control_with_more_images_aims_between():
    samples, truth = _problem(60, width=0.5, seed=4)
    cal = calibrate(samples[:, :40], truth[:40], level=0.9, method="risk-control")
    aim = (0.1 * 41 - 1) / 40  # 0.0775 of the calibration pixels may stay outside
    assert 1 - cal.calibration_coverage <= aim + 1e-12
    assert 1 - cal.calibration_coverage > aim - 0.01
    plug = calibrate(samples[:, :40], truth[:40], level=0.9, method="plug-in")
    assert cal.scale > plug.scale


def test_floor_makes_empty_intervals_finite():
    truth = torch.rand(4, 1, 4, 4)
    samples = torch.zeros(8, 4, 1, 4, 4)  # every sample agrees: zero width everywhere
    s = scores(samples, truth)
    assert torch.isinf(s[truth != 0]).all()
    cal = calibrate(samples, truth, level=0.5, method="plug-in", floor=0.01)
    assert math.isfinite(cal.scale) and cal.calibration_coverage >= 0.5
    lo, hi = calibrated_intervals(samples, math.inf, 0.9)  # no floor: empty intervals stay empty, not NaN
    assert torch.equal(lo, torch.zeros_like(lo, dtype=torch.float64)) and torch.equal(hi, lo)
    with pytest.raises(ValueError, match="scale: expected a number >= 0"):
        calibrated_intervals(samples, -1.0)


def test_too_few_images_for_risk_control_is_a_clear_error():
    samples, truth = _problem(5)
    with pytest.raises(ValueError, match="needs at least 9 calibration images"):
        calibrate(samples, truth, level=0.9)
    assert calibrate(samples, truth, level=0.5).method == "risk-control"  # 1 / 0.5 - 1 = 1 image suffices


@pytest.mark.parametrize("kw, error, match", [
    ({"level": 1.0}, ValueError, r"level: expected a finite number in \(0, 1\), got 1.0"),
    ({"level": True}, TypeError, r"level: expected a number in \(0, 1\), got True"),
    ({"method": "bayes"}, ValueError, "method: expected one of"),
    ({"floor": -0.1}, ValueError, "floor: expected a non-negative finite number"),
    ({"floor": math.inf}, ValueError, "floor: expected a non-negative finite number"),
])
def test_bad_arguments_are_named(kw, error, match):
    samples, truth = _problem(10)
    with pytest.raises(error, match=match):
        calibrate(samples, truth, **{"method": "plug-in", **kw})


def test_bad_shapes_are_named():
    samples, truth = _problem(3)
    with pytest.raises(ValueError, match=r"truth: expected a tensor of shape \(3, 1, 8, 8\)"):
        calibrate(samples, truth[:2], method="plug-in")
    with pytest.raises(ValueError, match="K >= 2 samples"):
        calibrate(samples[:1], truth, method="plug-in")


def test_reconstruction_intervals_raw_and_calibrated_end_to_end():
    """SMC with an exact denoiser on a Gaussian inpainting problem: calibrate on 12 measurements, then a 13th
    measurement's Reconstruction.intervals(calibration=...) are the Calibration's intervals of its samples."""
    import deepinv as dinv

    from invdiff.solvers import SMC

    class Normal(torch.nn.Module):  # exact denoiser of the prior N(0, I)
        def forward(self, x, sigma):
            return x / (1 + sigma**2)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(13, 1, 4, 4, generator=g)
    op = dinv.physics.Inpainting(img_size=(1, 4, 4), mask=0.5, noise_model=dinv.physics.GaussianNoise(0.1))
    y = op(x)
    smc = SMC(Normal(), particles=16, steps=20, sigma_max=20.0)
    r = smc.reconstruct(y, op, n_samples=16, progress=False, seed=1)
    assert r.samples.shape == (16, 13, 1, 4, 4)
    cal = calibrate(r.samples[:, :12], x[:12], level=0.9, method="plug-in")
    assert 0.5 < cal.scale < 3  # a correct sampler on a Gaussian: near 1 (16 samples cover 0.79 unscaled)
    one = smc.reconstruct(y[12:], op, n_samples=16, progress=False, seed=2)
    lo, hi = one.intervals(calibration=cal)
    elo, ehi = cal.intervals(one.samples)
    assert torch.equal(lo, elo) and torch.equal(hi, ehi)
    rlo, rhi = one.intervals(0.8)  # raw: the samples' central 80 % interval
    qlo, qhi = central_intervals(one.samples, [0.8])
    assert torch.equal(rlo, qlo[0]) and torch.equal(rhi, qhi[0])
    with pytest.raises(TypeError, match="calibration: expected an invdiff.conformal.Calibration"):
        one.intervals(calibration=1.5)
    with pytest.raises(ValueError, match=r"level: expected a finite number in \(0, 1\)"):
        one.intervals(1.5)
