"""DDS options beyond the paper's defaults: the noise-aware proximal weight (``lambda_``), the
``karras`` schedule's ``sigma_min`` and the tail average of the data-consistent estimates."""

from __future__ import annotations

import math

import deepinv as dinv
import pytest
import torch

from invdiff.operators import Inpainting
from invdiff.priors import GaussianPrior
from invdiff.solvers.dds import DDS


def gauss_prior(size=8, mean=0.3, std=0.3) -> GaussianPrior:
    return GaussianPrior(torch.full((1, size, size), mean), std)


def inpainting(size=8, noise_std=0.05):
    img = (1, size, size)
    op = dinv.physics.Inpainting(img_size=img, mask=0.5, rng=torch.Generator().manual_seed(0),
                                 noise_model=dinv.physics.GaussianNoise(sigma=noise_std))
    x = torch.rand(1, *img, generator=torch.Generator().manual_seed(1))
    return op, x, op.A(x), op.mask.bool().expand(1, *img)


def test_lambda_gives_the_noise_aware_proximal_step():
    """With a mask the proximal step has a closed form per pixel, at every step's own sigma:
    observed pixels ``(x0_hat / gamma_t + y) / (1 + 1 / gamma_t)``, ``gamma_t = sigma_t^2 / (lambda s^2)``."""
    op, x, y, mask = inpainting(noise_std=0.05)
    lam, s = 2.0, 0.05
    steps = []
    DDS(gauss_prior(), steps=6, schedule="karras", lambda_=lam, cg_iters=4).reconstruct(
        y, op, progress=False, callback=lambda d: steps.append({k: d[k] for k in ("sigma", "x0_hat", "x0_dc")}))
    assert len(steps) == 6
    for st in steps:
        inv_gamma = lam * s**2 / st["sigma"] ** 2
        expected = (inv_gamma * st["x0_hat"] + y.to(st["x0_hat"].dtype)) / (1 + inv_gamma)
        assert torch.allclose(st["x0_dc"][mask], expected[mask], atol=1e-6, rtol=1e-6)
        assert torch.allclose(st["x0_dc"][~mask], st["x0_hat"][~mask], atol=1e-7)
    # sigma falls from step to step, so the data pull 1 / (1 + 1/gamma_t) grows
    assert all(a["sigma"] > b["sigma"] for a, b in zip(steps, steps[1:]))


def test_explicit_noise_std_overrides_the_operator():
    op, x, y, mask = inpainting(noise_std=0.05)
    got = []
    DDS(gauss_prior(), steps=3, schedule="karras", lambda_=1.0, noise_std=0.5, cg_iters=4).reconstruct(
        y, op, progress=False, callback=lambda d: got.append(d))
    st = got[-1]
    inv_gamma = 0.25 / st["sigma"] ** 2
    expected = (inv_gamma * st["x0_hat"] + y.to(st["x0_hat"].dtype)) / (1 + inv_gamma)
    assert torch.allclose(st["x0_dc"][mask], expected[mask], atol=1e-6)


def test_lambda_on_a_noiseless_operator_is_exact_data_consistency():
    """sigma_y = 0 stated by the operator (deepinv's ZeroNoise, a zero Gaussian, noise_std = 0): gamma_t is its
    limit inf, so lambda_ gives the same chain as gamma = inf (the official noiseless step)."""
    img = (1, 8, 8)
    x = torch.rand(1, *img, generator=torch.Generator().manual_seed(1))
    kw = dict(steps=6, schedule="karras", cg_iters=4, tail_average=1)
    for noise_model in (None, dinv.physics.GaussianNoise(sigma=0.0)):
        extra = {} if noise_model is None else {"noise_model": noise_model}
        op = dinv.physics.Inpainting(img_size=img, mask=0.5, rng=torch.Generator().manual_seed(0), **extra)
        y = op.A(x)
        a = DDS(gauss_prior(), lambda_=1.0, **kw).reconstruct(y, op, seed=4, progress=False).mean
        b = DDS(gauss_prior(), gamma=math.inf, **kw).reconstruct(y, op, seed=4, progress=False).mean
        assert torch.equal(a, b)
        c = DDS(gauss_prior(), gamma=1.0, **kw).reconstruct(y, op, seed=4, progress=False).mean
        assert not torch.allclose(a, c)  # the limit is not some other finite gamma


def test_lambda_needs_a_gaussian_noise_level():
    """An operator that states no Gaussian noise level (Poisson noise) cannot weigh the data: the error says what to pass."""
    img = (1, 8, 8)
    op = dinv.physics.Inpainting(img_size=img, mask=0.5, rng=torch.Generator().manual_seed(0),
                                 noise_model=dinv.physics.PoissonNoise(gain=0.1))
    y = op.A(torch.rand(1, *img))
    with pytest.raises(ValueError, match="noise_std"):
        DDS(gauss_prior(), steps=2, lambda_=1.0).reconstruct(y, op, progress=False)


def test_tail_average_is_the_mean_of_the_last_estimates():
    op, x, y, mask = inpainting()
    hist = []
    kw = dict(steps=8, schedule="karras", eta=1.0, gamma=1.0, cg_iters=5)
    r = DDS(gauss_prior(), tail_average=3, **kw).reconstruct(
        y, op, seed=3, progress=False, callback=lambda d: hist.append(d["x0_dc"].clone()))
    expected = torch.stack(hist[-3:]).mean(0)
    assert torch.allclose(r.mean, expected.to(r.mean.dtype), atol=1e-6)
    plain = DDS(gauss_prior(), tail_average=1, **kw).reconstruct(y, op, seed=3, progress=False)
    assert torch.allclose(plain.mean, hist[-1].to(plain.mean.dtype), atol=1e-6)  # same chain, last estimate


def test_tail_average_lowers_the_error_of_a_gaussian_posterior_mean():
    """On a Gaussian problem the tail average is clearly closer to the exact posterior mean than the last sample."""
    size = 8
    prior = gauss_prior(size)
    op, x, y, mask = inpainting(size)
    mean = prior.posterior(op, y).mean().reshape(x.shape).to(torch.float64)
    err_last, err_avg = [], []
    for seed in range(4):
        # the prior's whole noise range (80 down to 0.002), as when this was measured; below sigma_max 1 (the
        # ct16 preset) the last 15 of 40 levels lie so close together that their estimates hardly differ
        kw = dict(steps=40, schedule="karras", eta=1.0, lambda_=1.0, cg_iters=4, sigma_max=prior.sigma_max)
        a = DDS(prior, tail_average=1, **kw).reconstruct(y, op, seed=seed, progress=False).mean
        b = DDS(prior, tail_average=15, **kw).reconstruct(y, op, seed=seed, progress=False).mean
        err_last.append(float((a.double() - mean).pow(2).mean()))
        err_avg.append(float((b.double() - mean).pow(2).mean()))
    assert sum(err_avg) < 0.7 * sum(err_last), (err_avg, err_last)  # measured: about 0.53


def test_tail_average_as_a_fraction_of_the_steps():
    assert DDS(gauss_prior(), steps=100, tail_average=0.2).tail_average == 20
    assert DDS(gauss_prior(), steps=3, tail_average=0.1).tail_average == 1
    with pytest.raises(TypeError, match="tail_average"):
        DDS(gauss_prior(), steps=10, tail_average="last")


def test_sigma_min_ends_the_karras_schedule():
    op, x, y, mask = inpainting()
    sig = []
    DDS(gauss_prior(), steps=5, schedule="karras", sigma_min=0.05).reconstruct(
        y, op, progress=False, callback=lambda d: sig.append(d["sigma"]))
    assert math.isclose(sig[-1], 0.05, rel_tol=1e-9) and sig[0] > sig[-1]


@pytest.mark.parametrize("kw,name", [
    ({"lambda_": -1.0}, "lambda_"), ({"lambda_": 0.0}, "lambda_"), ({"noise_std": -0.1}, "noise_std"),
    ({"tail_average": 0}, "tail_average"), ({"tail_average": 11}, "tail_average"), ({"tail_average": 1.5}, "tail_average"),
    ({"tail_average": -0.2}, "tail_average"),
    ({"sigma_min": 0.0, "schedule": "karras"}, "sigma_min"), ({"sigma_min": 0.01, "schedule": "vp"}, "sigma_min"),
])
def test_bad_arguments_name_the_argument(kw, name):
    with pytest.raises(ValueError, match=name):
        DDS(gauss_prior(), steps=10, **kw)


def test_mbir_dds_mode_takes_the_same_options_as_dds():
    """DiffusionMBIR(mode="dds", tv_weight=0) with lambda_ and tail_average is DDS on the volume, slice by slice."""
    from invdiff.operators import CT
    from invdiff.solvers.mbir3d import DiffusionMBIR

    x = torch.full((1, 1, 3, 16, 16), 0.3)
    x[..., 4:12, 5:11] = 0.8
    op = CT((1, 3, 16, 16), n_views=6, noise_std=0.05)
    y = op(x)
    kw = dict(steps=8, cg_iters=6, eta=0.85, schedule="karras", lambda_=1.0, tail_average=3, tv_weight=0.0, sigma_max=2.0)
    a = DiffusionMBIR(gauss_prior(16), mode="dds", **kw).reconstruct(y, op, seed=2, progress=False)
    b = DDS(gauss_prior(16), **kw).reconstruct(y, op, seed=2, progress=False)
    assert torch.equal(a.mean, b.mean)
    for bad in ({"lambda_": 1.0}, {"tail_average": 2}):
        with pytest.raises(ValueError, match="mode='dds'"):
            DiffusionMBIR(gauss_prior(16), mode="pc", steps=8, **bad)


def test_dds_settings_are_one_frozen_config_shared_with_diffusionmbir():
    """DDS and DiffusionMBIR(mode="dds") read one checked DDSConfig: the same check and message in both,
    the fraction of tail_average turned into a count, and the attributes are read-only views of it."""
    import dataclasses

    from invdiff.solvers.dds import DDSConfig
    from invdiff.solvers.mbir3d import DiffusionMBIR

    cfg = DDSConfig(steps=10, eta=0.5, gamma=None, tail_average=0.3)
    assert cfg.gamma == math.inf and cfg.tail_average == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.eta = 0.1
    for cls in (DDS, DiffusionMBIR):
        with pytest.raises(ValueError, match=r"eta: expected a number in \[0, 1\], got 1.5"):
            cls(gauss_prior(), eta=1.5)
        with pytest.raises(ValueError, match=r"schedule: expected one of \('vp', 'karras'\), got 'cosine'"):
            cls(gauss_prior(), schedule="cosine")
    solver = DDS(gauss_prior(), steps=10, eta=0.5, tail_average=0.3, gamma=1.0, schedule="vp")
    assert solver.config == DDSConfig(steps=10, eta=0.5, gamma=1.0, tail_average=3, sigma_max=1.0)  # the preset's
    assert (solver.steps, solver.eta, solver.tail_average) == (10, 0.5, 3)
    with pytest.raises(AttributeError):
        solver.eta = 0.1


def test_gamma_of_is_the_noise_aware_weight():
    """``gamma_t = sigma^2 / (lambda_ sigma_y^2)`` with ``sigma_y`` from the argument, else the operator."""
    from invdiff.solvers.dds import DDSConfig

    op = Inpainting((1, 4, 4), mask=0.5, noise_std=0.2, seed=0)
    assert DDSConfig(steps=3, gamma=2.5).gamma_of(op, "DDS")(7.0) == 2.5
    assert DDSConfig(steps=3, lambda_=4.0).gamma_of(op, "DDS")(3.0) == pytest.approx(9.0 / (4.0 * 0.04))
    assert DDSConfig(steps=3, lambda_=4.0, noise_std=0.5).gamma_of(op, "DDS")(3.0) == pytest.approx(9.0 / 1.0)


def test_sigma_max_starts_the_schedule_lower_with_the_same_number_of_steps():
    """``sigma_max`` is the first noise level of either schedule (karras: exactly; vp: a cap below the prior's),
    the chain starts from noise of that scale, and a bad value is refused with the argument named."""
    from invdiff.solvers.dds import DDSConfig

    prior = gauss_prior()
    full, start_full = DDSConfig(steps=12, schedule="karras").sigmas(prior)
    low, start = DDSConfig(steps=12, schedule="karras", sigma_max=0.5).sigmas(prior)
    assert len(low) == len(full) == 13 and low[0] == start == pytest.approx(0.5) and start_full == full[0] > 0.5
    assert low[-2] == pytest.approx(full[-2]) and all(a > b for a, b in zip(low, low[1:]))  # same sigma_min, decreasing
    vp, _ = DDSConfig(steps=12, schedule="vp", sigma_max=0.5).sigmas(prior)
    assert len(vp) == 13 and vp[0] == pytest.approx(0.5, rel=1e-6)
    assert DDS(prior, sigma_max=0.5).settings()["sigma_max"] == 0.5
    assert [DDS(prior, task=t).settings()["sigma_max"] for t in ("default", "mri", "inpaint")] == [1.0, 0.5, 10.0]
    for bad, msg in ((-1.0, "sigma_max: expected"), (0.0, "sigma_max: expected"), (0.01, "above sigma_min")):
        with pytest.raises(ValueError, match=msg):
            DDS(prior, sigma_min=0.02, sigma_max=bad)


def test_sigma_max_changes_the_reconstruction_not_the_budget():
    prior = gauss_prior()
    op, _, y, _ = inpainting()
    a = DDS(prior, steps=8, task="inpaint").reconstruct(y, op, seed=0, progress=False)
    b = DDS(prior, steps=8, task="inpaint", sigma_max=0.3).reconstruct(y, op, seed=0, progress=False)
    assert a.nfe == b.nfe == 8 and not torch.allclose(a.mean, b.mean)


def test_sigma_hold_runs_the_averaged_tail_at_one_level():
    """With ``sigma_hold`` the first ``steps - k`` levels descend from ``sigma_max`` to the hold and the last ``k``
    steps (the averaged tail) all run at it; the budget stays ``steps`` calls and the output is their mean."""
    op, _, y, _ = inpainting()
    sig, hist = [], []

    def record(d):
        sig.append(d["sigma"])
        hist.append(d["x0_dc"].clone())

    r = DDS(gauss_prior(), steps=10, tail_average=4, sigma_hold=0.2, sigma_max=2.0, eta=0.7).reconstruct(
        y, op, seed=0, progress=False, callback=record)
    assert r.nfe == 10 and len(sig) == 10
    assert sig[0] == pytest.approx(2.0) and all(a > b for a, b in zip(sig[:6], sig[1:6]))  # descends to the hold
    assert sig[5:] == pytest.approx([0.2] * 5)  # the descent's last level is the hold, then the 4 held steps
    assert torch.allclose(r.mean, torch.stack(hist[-4:]).mean(0).to(r.mean.dtype), atol=1e-6)


def test_sigma_hold_lowers_the_error_of_a_gaussian_posterior_mean():
    """On a Gaussian problem, 20 averaged steps held at a level where the prior still mixes (0.5, above the prior's
    std 0.3) land closer to the exact posterior mean than 20 averaged steps descending to ``sigma_min``."""
    size = 8
    prior = gauss_prior(size)
    op, x, y, _ = inpainting(size)
    mean = prior.posterior(op, y).mean().reshape(x.shape).to(torch.float64)
    kw = dict(steps=40, schedule="karras", eta=0.7, lambda_=1.0, cg_iters=4, sigma_max=prior.sigma_max, tail_average=20)
    err_desc, err_hold = 0.0, 0.0
    for seed in range(4):
        a = DDS(prior, **kw).reconstruct(y, op, seed=seed, progress=False).mean
        b = DDS(prior, sigma_hold=0.5, **kw).reconstruct(y, op, seed=seed, progress=False).mean
        err_desc += float((a.double() - mean).pow(2).mean())
        err_hold += float((b.double() - mean).pow(2).mean())
    assert err_hold < 0.5 * err_desc, (err_hold, err_desc)  # measured: 0.27 on these 4 seeds (0.24 over 8)


def test_sigma_hold_off_and_errors():
    """Only the inpaint and deblur presets hold (their values: test_presets.py); 0 switches a preset's hold off."""
    prior = gauss_prior()
    assert DDS(prior).sigma_hold is None and DDS(prior).tail_estimate == "x0_dc"
    off = DDS(prior, task="inpaint", sigma_hold=0, sigma_min=0.01)  # 0 switches the preset's hold off
    assert off.sigma_hold is None and off.sigma_min == 0.01
    for kw, msg in (({"sigma_hold": -0.1}, "sigma_hold: expected"), ({"sigma_hold": 0.2, "sigma_min": 0.01}, "sigma_min"),
                    ({"sigma_hold": 0.2, "schedule": "vp"}, "sigma_hold: only"),
                    ({"sigma_hold": 2.0, "sigma_max": 1.0}, "sigma_hold: expected a value below"),
                    ({"sigma_hold": 0.2, "tail_average": 10}, "tail_average: with sigma_hold")):
        with pytest.raises(ValueError, match=msg):
            DDS(prior, steps=10, **kw)


def test_tail_estimate_x0_hat_averages_the_tweedie_estimates():
    """``tail_estimate="x0_hat"`` returns the mean of the network's estimates of the last ``k`` steps (the same chain:
    the choice changes only what is averaged); with ``k = 1`` the last one."""
    op, _, y, _ = inpainting()
    hist = []
    kw = dict(steps=8, schedule="karras", eta=0.7, lambda_=1.0, cg_iters=5, sigma_max=2.0)
    r = DDS(gauss_prior(), tail_average=3, tail_estimate="x0_hat", **kw).reconstruct(
        y, op, seed=1, progress=False, callback=lambda d: hist.append((d["x0_hat"].clone(), d["x0_dc"].clone())))
    assert torch.allclose(r.mean, torch.stack([h for h, _ in hist[-3:]]).mean(0).to(r.mean.dtype), atol=1e-6)
    dc = DDS(gauss_prior(), tail_average=3, **kw).reconstruct(y, op, seed=1, progress=False)
    assert torch.allclose(dc.mean, torch.stack([d for _, d in hist[-3:]]).mean(0).to(dc.mean.dtype), atol=1e-6)
    last = DDS(gauss_prior(), tail_average=1, tail_estimate="x0_hat", **kw).reconstruct(y, op, seed=1, progress=False)
    assert torch.allclose(last.mean, hist[-1][0].to(last.mean.dtype), atol=1e-6)
    with pytest.raises(ValueError, match="tail_estimate"):
        DDS(gauss_prior(), tail_estimate="x0")


def test_tail_estimate_on_volumes_matches_the_slab_callback():
    """The slab loop of volumes averages the same estimate: the mean of the callback's ``x0_hat`` of the last k."""
    from invdiff.operators import CT

    prior = gauss_prior(8)
    op = CT((1, 3, 8, 8), n_views=6, noise_std=0.01)
    y = op.A(torch.rand(1, 1, 3, 8, 8, generator=torch.Generator().manual_seed(0)))
    hats = []
    r = DDS(prior, steps=6, tail_average=2, tail_estimate="x0_hat", cg_iters=3, gamma=1.0, chunk=2).reconstruct(
        y, op, seed=0, progress=False, callback=lambda d: hats.append(d["x0_hat"].clone()))
    assert torch.allclose(r.mean.float(), torch.stack(hats[-2:]).mean(0).float(), atol=1e-5)
