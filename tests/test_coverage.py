"""The in-distribution coverage benchmark: the closed-form reference for exact samples, and the coverage function."""

import math

import pytest
import torch

from invdiff.bench.coverage import interval_coverage, parse_spec, reference_coverage, run, table
from invdiff.metrics import coverage


def _mc_coverage(K: int, level: float, draw, trials: int, seed: int) -> float:
    """Monte Carlo: truth and ``K`` samples i.i.d. from ``draw`` (exact samples), coverage over ``trials`` pixels."""
    g = torch.Generator().manual_seed(seed)
    x = draw((K + 1, 1, trials), g)  # sample 0 plays the truth
    return float(interval_coverage(x[1:], x[0], levels=(level,))[0, 0])


def _tol(p: float, n: int) -> float:
    return 4.5 * math.sqrt(p * (1 - p) / n)  # independent pixels: binomial s.e., 4.5 sigma


@pytest.mark.parametrize("K,level", [(21, 0.9), (13, 0.5), (41, 0.95)])
def test_reference_exact_for_integer_ranks_any_distribution(K, level):
    """Both quantile ranks 1 + q (K - 1) are integers: (k - j) / (K + 1) holds for any continuous posterior.

    A skewed, heavy-tailed parent (log-normal) makes the interpolation irrelevant but would expose a wrong formula.
    """
    assert abs((1 - level) / 2 * (K - 1) - round((1 - level) / 2 * (K - 1))) < 1e-9
    n = 200_000
    got = _mc_coverage(K, level, lambda s, g: torch.randn(s, generator=g, dtype=torch.float64).mul(1.5).exp(), n, 1)
    ref = reference_coverage(K, level)
    assert abs(got - ref) < _tol(ref, n), (got, ref)


@pytest.mark.parametrize("K", [8, 16, 64])
def test_reference_exact_for_uniform_parent_fractional_ranks(K):
    """Fractional ranks (interpolated quantiles): p (K - 1) / (K + 1) is exact for a uniform posterior."""
    n = 100_000 if K < 64 else 50_000
    for level in (0.5, 0.9, 0.95):
        got = _mc_coverage(K, level, lambda s, g: torch.rand(s, generator=g, dtype=torch.float64), n, K)
        ref = reference_coverage(K, level)
        assert abs(got - ref) < _tol(ref, n), (K, level, got, ref)


def test_reference_is_not_nominal_and_too_narrow_samples_fail_it():
    """The finite-K reference sits well below the nominal level, and samples narrower than the posterior fall
    clearly below it (the check can fail)."""
    K, n = 16, 100_000
    assert reference_coverage(K, 0.9) < 0.9 - 0.1
    g = torch.Generator().manual_seed(3)
    truth = torch.randn(1, 1, n, generator=g, dtype=torch.float64)
    narrow = 0.6 * torch.randn(K, 1, n, generator=g, dtype=torch.float64)
    got = float(interval_coverage(narrow, truth[0], levels=(0.9,))[0, 0])
    assert got < reference_coverage(K, 0.9) - 0.1


def test_interval_coverage_known_answer():
    """Samples 0..10 at every pixel: the 90 % interval is [0.5, 9.5], the 50 % one [2.5, 7.5] (ends included)."""
    K = 11
    truth = torch.tensor([-1.0, 0.4, 0.5, 5.0, 9.5, 9.6, 11.0]).reshape(1, 1, 1, 7)
    samples = torch.arange(K, dtype=torch.float32)[:, None, None, None, None].expand(K, 1, 1, 1, 7)
    samples = samples[torch.randperm(K)]  # the order of the samples does not matter
    cov = interval_coverage(samples, truth, levels=(0.5, 0.9))
    assert cov.shape == (1, 2)
    assert cov[0].tolist() == pytest.approx([1 / 7, 3 / 7], abs=1e-12)
    mask = torch.tensor([False, False, True, True, True, False, False]).reshape(1, 1, 1, 7)
    assert interval_coverage(samples, truth, levels=(0.9,), mask=mask)[0, 0] == 1.0


def test_interval_coverage_per_image_matches_metrics_coverage():
    g = torch.Generator().manual_seed(0)
    samples, truth = torch.randn(9, 3, 1, 8, 8, generator=g), torch.randn(3, 1, 8, 8, generator=g)
    cov = interval_coverage(samples, truth, levels=(0.5, 0.9))
    for b in range(3):
        assert cov[b].tolist() == [coverage(samples[:, b], truth[b], 0.5), coverage(samples[:, b], truth[b], 0.9)]
    mask = torch.rand(3, 1, 8, 8, generator=g) < 0.5  # a different subset per image; image 2 has none
    mask[2] = False
    cov = interval_coverage(samples, truth, levels=(0.5, 0.9), mask=mask)
    for b in range(2):
        s, t = samples[:, b][:, mask[b]], truth[b][mask[b]]
        assert cov[b].tolist() == pytest.approx([coverage(s, t, 0.5), coverage(s, t, 0.9)], abs=1e-15)
    assert cov[2].isnan().all()


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="K: expected"):
        reference_coverage(1, 0.9)
    with pytest.raises(ValueError, match="level: expected"):
        reference_coverage(8, 90)
    with pytest.raises(ValueError, match="truth: expected shape"):
        interval_coverage(torch.zeros(4, 2, 1, 3, 3), torch.zeros(1, 1, 3, 3))
    with pytest.raises(ValueError, match="samples: expected"):
        interval_coverage(torch.zeros(1, 2, 1, 3, 3), torch.zeros(2, 1, 3, 3))
    with pytest.raises(ValueError, match="unknown sampler 'foo'"):
        parse_spec("foo:particles=4")
    with pytest.raises(ValueError, match="expected key=value"):
        parse_spec("smc:particles")
    assert parse_spec("smc:particles=16,proposal=gaussian").kw == {"particles": 16, "proposal": "gaussian"}
    assert parse_spec("smc:moves=1,move_step=0.5,move_jacobian=isotropic").kw == {
        "moves": 1, "move_step": 0.5, "move_jacobian": "isotropic"}


def test_run_table_on_mri_with_an_analytic_prior():
    """End to end on one mri4 image with a cheap exact Gaussian prior: the table carries each row's reference
    for its own K, and DiffusionMBIR is reported as not applicable."""
    from invdiff.priors import GaussianPrior

    prior = GaussianPrior(torch.full((1, 64, 64), 0.3), 0.3)
    rows = run(["mri4-random"], ["smc:particles=4,steps=4", "dds:n_samples=3,steps=4", "mbir"], n_images=1,
               prior=prior)
    assert [r["K"] for r in rows[:2]] == [4, 3]
    for r in rows[:2]:
        assert r["ref"] == [reference_coverage(r["K"], p) for p in (0.5, 0.9, 0.95)]
        assert all(0.0 <= c <= 1.0 for c in r["cov"] + r["cov_inner"])
        assert r["calls"] == 4 and r["seconds"] > 0
    assert rows[2]["skipped"].startswith("needs a volume")
    moved = run(["mri4-random"], ["smc:particles=4,steps=4,ess_threshold=1.0,moves=1,move_jacobian=isotropic"],
                n_images=1, prior=prior)[0]
    # one call per resampling: the isotropic move reuses the step's D, then one re-evaluation at the moved particles
    assert moved["resamplings"] == 4 and moved["calls"] == 4 + 1 * 4
    md = table(rows)
    assert "0.540" in md and "not run" in md  # reference_coverage(4, 0.9) = 0.9 * 3 / 5
    assert "nan" not in md and "(1 image)" in md  # one image has no standard error; the table says so


def test_volume_task_runs_diffusion_mbir_over_the_held_out_slab():
    """On ct3d8 each "image" is one held-out ellipsoid slab: DiffusionMBIR and DDS give K samples of the whole volume
    (every slice of every sample through the prior at each step), SMC is skipped as a 2D sampler; a volume task has
    no tuning volumes."""
    from invdiff.bench.tasks import test_volumes
    from invdiff.priors import GaussianPrior

    prior = GaussianPrior(torch.full((1, 64, 64), 0.3), 0.3)
    rows = run(["ct3d8"], ["mbir:n_samples=2,steps=2", "dds:n_samples=2,steps=2", "smc", "afdps"], n_images=1,
               prior=prior)
    for r in rows[:2]:
        assert r["K"] == 2 and r["ref"] == [reference_coverage(2, p) for p in (0.5, 0.9, 0.95)]
        assert all(0.0 <= c <= 1.0 for c in r["cov"]) and math.isfinite(r["psnr"])
        assert r["evals"] == 2 * 2 * test_volumes(1).shape[2]  # steps x samples x slices
    assert rows[2]["skipped"] == rows[3]["skipped"] == "a 2D sampler"
    with pytest.raises(ValueError, match="test volumes only"):
        run(["ct3d8"], ["mbir:n_samples=2,steps=2"], n_images=1, prior=prior, image_set="tuning")


def test_first_image_extends_a_row_and_tempering_specs_parse():
    """--first-image 1 reproduces image 1 of a 2-image run (same image and measurement noise, seed + 1), on test
    and tuning images; temper_* keys reach the SMC's tempering; the SMC spec without keys is the class default (the preset)."""
    from invdiff.bench.coverage import build_smc
    from invdiff.priors import GaussianPrior
    from invdiff.solvers.smc_temper import Tempering

    prior = GaussianPrior(torch.full((1, 64, 64), 0.3), 0.3)
    for image_set in ("test", "tuning"):
        both = run(["mri4-random"], ["smc:particles=3,steps=3"], n_images=2, prior=prior, image_set=image_set)[0]
        second = run(["mri4-random"], ["smc:particles=3,steps=3"], n_images=1, prior=prior, image_set=image_set,
                     first=1)[0]
        assert second["cov_images"][0] == both["cov_images"][1]
        assert both["cov"] == [sum(c) / 2 for c in zip(*both["cov_images"])]
    smc = build_smc(prior, {"temper_cess": 0.4, "temper_growth": 1.5, "particles": 2})
    assert smc.tempering == Tempering(cess=0.4, growth=1.5)
    assert build_smc(prior, {}).settings() == __import__("invdiff").solvers.SMC(prior).settings()
    # moves=calibrated is the class's preset, with its 32 particles unless the spec gives particles
    calibrated = build_smc(prior, {"moves": "calibrated"})
    assert calibrated.particles == 32 and calibrated.moves.n_moves == 3
    assert build_smc(prior, {"moves": "calibrated", "particles": 16}).particles == 16
    assert build_smc(prior, {"moves": 2, "move_step": 0.5}).moves.n_moves == 2


def test_diffpir_and_daps_give_coverage_rows():
    """DiffPIR and DAPS are samplers of the coverage table too: K independent runs each, with their own
    reference; an unknown sampler is refused with the known names."""
    from invdiff.priors import GaussianPrior

    prior = GaussianPrior(torch.full((1, 64, 64), 0.3), 0.3)
    rows = run(["mri4-random"], ["diffpir:n_samples=3,steps=4", "daps:n_samples=2,steps=4"], n_images=1, prior=prior)
    assert [r["K"] for r in rows] == [3, 2]
    for r in rows:
        assert r["ref"] == [reference_coverage(r["K"], p) for p in (0.5, 0.9, 0.95)]
        assert all(0.0 <= c <= 1.0 for c in r["cov"]) and math.isfinite(r["psnr"])
        assert r["calls"] == 4
    with pytest.raises(ValueError, match="unknown sampler 'ddpm'.*'diffpir', 'daps'"):
        parse_spec("ddpm:n_samples=2")


def test_afdps_gives_a_coverage_row_of_its_particles():
    """The paper's AFDPS is a sampler of the coverage table: its K samples are its particles, one batched network
    call per step for all of them (evaluations = steps x particles), and the spec's keys reach the class."""
    from invdiff.priors import GaussianPrior

    prior = GaussianPrior(torch.full((1, 64, 64), 0.3), 0.3)
    row = run(["mri4-random"], ["afdps:particles=3,steps=4,cg_iters=5"], n_images=1, prior=prior)[0]
    assert row["K"] == 3 and row["ref"] == [reference_coverage(3, p) for p in (0.5, 0.9, 0.95)]
    assert row["calls"] == 4 and row["evals"] == 4 * 3
    assert all(0.0 <= c <= 1.0 for c in row["cov"]) and math.isfinite(row["psnr"])
    assert parse_spec("afdps:particles=4").kw == {"particles": 4}
