"""SMC (Tweedie tilt) against exact posteriors (Gaussian and Gaussian-mixture priors), its Gaussian steps,
resampling, the exact-mass coverage measure, bad input."""

from __future__ import annotations

import math

import deepinv as dinv
import pytest
import torch

from invdiff.bench.exact_coverage import exact_mass_coverage
from invdiff.bench.exact_posterior import make_problem, score
from invdiff.operators import Inpainting
from invdiff.priors.analytic import GaussianPrior
from invdiff.solvers.smc import SMC
from invdiff.solvers.smc_gauss import GaussianSteps
from invdiff.solvers.smc_utils import ess, flat_indices, systematic_resample, weighted_moments

S_Y = 0.05


def dense_op(m: int, img=(1, 4, 4), noise_std: float = S_Y, seed: int = 0) -> dinv.physics.LinearPhysics:
    """``y = M x`` with a random dense ``(m, d)`` matrix (a deepinv LinearPhysics)."""
    d = math.prod(img)
    M = torch.randn(m, d, generator=torch.Generator().manual_seed(seed)) / math.sqrt(d)
    return dinv.physics.LinearPhysics(A=lambda x: (x.flatten(1) @ M.T.to(x.dtype)),
                                      A_adjoint=lambda y: (y @ M.to(y.dtype)).reshape(y.shape[0], *img),
                                      noise_model=dinv.physics.GaussianNoise(noise_std))


def gaussian_problem(kind: str, B: int = 2, seed: int = 0):
    img = (1, 4, 4)
    mean = torch.linspace(0.2, 0.8, 16).reshape(img)
    prior = GaussianPrior(mean, 0.2)
    if kind == "inpaint":
        mask = torch.zeros(img)
        mask.view(-1)[::2] = 1
        op = Inpainting(img, mask=mask, noise_std=S_Y)
    else:
        op = dense_op(8, img)
    g = torch.Generator().manual_seed(seed)
    x = prior.sample(B, generator=g).to(torch.float32)
    y = op.A(x) + S_Y * torch.randn(op.A(x).shape, generator=g)
    return prior, op, y, prior.posterior(op, y, S_Y)


# ----------------------------------------------------------------------------- helpers
def test_ess_and_systematic_resampling_counts():
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(ess(torch.zeros(2, 7, dtype=torch.float64)), torch.full((2,), 7.0, dtype=torch.float64))
    assert float(ess(torch.tensor([[0.0, -1e4, -1e4]]))) == pytest.approx(1.0)
    log_w = torch.randn(3, 10, generator=g, dtype=torch.float64) * 2
    W = torch.softmax(log_w, -1)
    for n in (10, 37):
        idx = systematic_resample(log_w, n, g)
        assert idx.shape == (3, n) and idx.min() >= 0 and idx.max() < 10
        counts = torch.stack([torch.bincount(row, minlength=10) for row in idx]).to(torch.float64)
        # systematic resampling picks particle i floor(n W_i) or ceil(n W_i) times
        assert ((counts >= torch.floor(n * W) - 1e-9) & (counts <= torch.ceil(n * W) + 1e-9)).all()
    assert flat_indices(torch.tensor([[1, 0], [1, 1]]), 2).tolist() == [1, 0, 3, 3]


def test_weighted_moments():
    x = torch.tensor([[[0.0], [2.0], [4.0]]], dtype=torch.float64)  # (B=1, N=3, 1)
    log_w = torch.log(torch.tensor([[0.5, 0.25, 0.25]], dtype=torch.float64))
    mean, std = weighted_moments(x, log_w)
    assert float(mean) == pytest.approx(1.5)
    assert float(std) ** 2 == pytest.approx(0.5 * 1.5**2 + 0.25 * 0.5**2 + 0.25 * 2.5**2)


def test_gaussian_steps_exact():
    """The CG-based Gaussian step draws N(m, v2 I) exp(-|r - a A (x - m)|^2 / (2 S)) and its log-normaliser exactly."""
    op = dense_op(6, noise_std=0.1)
    gs = GaussianSteps(op, iters=50, tol=1e-10)
    v2, a, S, n = 0.3, 0.7, 0.02, 20000
    g = torch.Generator().manual_seed(1)
    y = torch.randn(1, 6, generator=g, dtype=torch.float64)
    m = torch.randn(1, 1, 4, 4, generator=g, dtype=torch.float64)
    A = op.A(torch.eye(16, dtype=torch.float64).reshape(16, 1, 4, 4)).T  # (6, 16)
    P = torch.eye(16, dtype=torch.float64) / v2 + a * a * A.T @ A / S
    C = torch.linalg.inv(P)
    r = y - a * op.A(m)
    mu_true = m.flatten() + C @ (a * A.T @ r.flatten() / S)
    mu, log_Z = gs.mean(m, r, v2, a, S)
    assert torch.allclose(mu.flatten(), mu_true, atol=1e-8)
    # log Z = log N(r; 0, S I + a^2 v2 A A^T) up to a constant independent of r
    G = S * torch.eye(6, dtype=torch.float64) + a * a * v2 * A @ A.T
    r2 = r + 0.3
    _, log_Z2 = gs.mean(m, r2, v2, a, S)
    ref = lambda q: -0.5 * q.flatten() @ torch.linalg.solve(G, q.flatten())
    assert float(log_Z2 - log_Z) == pytest.approx(float(ref(r2) - ref(r)), rel=1e-8)
    eps = gs.noise(m.expand(n, 1, 4, 4), y.expand(n, 6), v2, a, S, g).reshape(n, 16)
    assert eps.mean(0).abs().max() < 5 * C.diagonal().max().sqrt() / math.sqrt(n)
    cov = eps.T @ eps / n
    assert (cov - C).abs().max() < 6 * C.diagonal().max() * math.sqrt(2 / n)


# ----------------------------------------------------------------------------- exact posteriors
@pytest.mark.parametrize("kind", ["inpaint", "dense"])
def test_gaussian_prior_mean_and_variance(kind):
    """Gaussian prior, two measurements (two ensembles): weighted mean and variance within Monte Carlo error."""
    prior, op, y, post = gaussian_problem(kind)
    N = 400
    r = SMC(prior, particles=N, steps=60).reconstruct(y, op, n_samples=8, seed=0, progress=False)
    ess_b = r.info["final_ess"]  # (B,)
    assert ess_b.min() > 0.5 * N
    pm, pv = post.mean().to(torch.float64), post.var().to(torch.float64)
    for b in range(2):
        z_mean = (r.mean[b].double() - pm[b]) / (pv[b] / ess_b[b]).sqrt()
        worst = float(z_mean.abs().max())
        assert worst < 4.5, f"ensemble {b}: worst mean error {worst:.2f} Monte Carlo sds"
        ratio = r.std[b].double() ** 2 / pv[b]
        if kind == "inpaint":  # independent pixels: the average ratio has sd sqrt(2 / (ESS d))
            tol = 4 * math.sqrt(2 / (float(ess_b[b]) * ratio.numel()))
            assert abs(float(ratio.mean()) - 1) < tol, f"variance ratio {float(ratio.mean()):.3f}, tolerance {tol:.3f}"
        else:  # correlated pixels: each ratio has sd sqrt(2 / ESS)
            tol = 4.5 * math.sqrt(2 / float(ess_b[b]))
            assert (ratio - 1).abs().max() < tol, f"variance ratios {ratio.flatten().tolist()}"
    assert r.samples.shape == (8, 2, 1, 4, 4) and r.nfe == 60


@pytest.mark.parametrize("proposal", ["gradient", "prior"])
def test_variant_mean_is_the_exact_gaussian_posterior_mean(proposal):
    """The other proposals are consistent: over R independent runs (seeds), the average of the weighted means
    deviates from the exact posterior mean only by Monte Carlo error (40 steps).

    These variants resample often, so their particles are correlated and the ESS says little about the
    error; the standard error is measured instead, from the spread between runs. Per pixel and ensemble
    ``t = (mean of runs - exact) / (sd between runs / sqrt(R))`` follows Student's t with ``R - 1`` degrees
    of freedom, so ``E[t^2] = (R - 1) / (R - 3)``, ``Var[t^2] = 2 nu^2 (nu - 1) / ((nu - 2)^2 (nu - 4))``
    (``nu = R - 1``); the test bounds the average of ``t^2`` over the ``n`` pixels by its expectation plus
    4 standard deviations (taken as if the pixels were independent). A bias of half the between-run spread
    in every pixel adds about ``R / 4 = 2.5`` to the average of ``t^2``, more than the margin of 1.6.
    The paper's particle tilt has the same test in tests/test_afdps.py.
    """
    prior, op, y, post = gaussian_problem("inpaint", B=2)
    R, N = 10, 128
    means = torch.stack([SMC(prior, particles=N, steps=40, proposal=proposal).reconstruct(y, op, seed=seed,
                                                                                        progress=False)
                         .mean.double() for seed in range(R)])
    assert means.shape == (R, 2, 1, 4, 4)
    t = (means.mean(0) - post.mean().double()) / (means.std(0) / math.sqrt(R))
    nu, n = R - 1, t.numel()
    mean_t2, var_t2 = nu / (nu - 2), 2 * nu**2 * (nu - 1) / ((nu - 2) ** 2 * (nu - 4))
    bound = mean_t2 + 4 * math.sqrt(var_t2 / n)
    avg_t2 = float((t**2).mean())
    assert avg_t2 < bound, f"{proposal}: mean t^2 {avg_t2:.2f} over {n} pixels, bound {bound:.2f} (expected {mean_t2:.2f})"


def test_gmm_multimodal_posterior():
    """Multimodal GMM posterior (invdiff.bench.exact_posterior): SW within 2x exact-vs-exact, component TV <= 0.1."""
    pb = make_problem()
    w = pb.posterior.weights[0]
    assert (w > 0.2).all(), "the test problem must be clearly multimodal"
    N, scores = 512, []
    for seed in (0, 1):
        r = SMC(pb.prior, particles=N, steps=100).reconstruct(pb.y, pb.op, n_samples=N, seed=seed, progress=False)
        scores.append(score(r.samples, pb.posterior, reps=5, seed=100 + seed))
    sw = sum(s["sw"] for s in scores) / 2
    sw_exact = sum(s["sw_exact"] for s in scores) / 2
    tv = sum(s["tv"] for s in scores) / 2
    print(f"SMC GMM: SW {sw:.4f} vs exact-vs-exact {sw_exact:.4f} (ratio {sw / sw_exact:.2f}), component TV {tv:.3f}, "
          f"shares {[s['shares'] for s in scores]}, exact weights {w.tolist()}")
    assert sw < 2 * sw_exact
    assert tv < 0.1


# ----------------------------------------------------------------------------- API, seeds, errors
def test_same_seed_same_result_and_info():
    prior, op, y, _ = gaussian_problem("inpaint", B=1)
    calls = []
    smc = SMC(prior, particles=16, steps=12)
    a = smc.reconstruct(y, op, n_samples=5, seed=3, progress=False, callback=calls.append)
    b = smc.reconstruct(y, op, n_samples=5, seed=3, progress=False)
    c = smc.reconstruct(y, op, n_samples=5, seed=4, progress=False)
    assert torch.equal(a.mean, b.mean) and torch.equal(a.samples, b.samples)
    assert not torch.equal(a.mean, c.mean)
    assert a.nfe == 12 and len(calls) == 12 and calls[0]["x"].shape == (1, 16, 1, 4, 4)
    assert a.info["ess"].shape == (12, 1) and a.info["resampled"].dtype == torch.bool
    assert a.info["weights"].shape == (1, 16) and float(a.info["weights"].sum()) == pytest.approx(1.0)
    assert torch.isfinite(a.std).all() and a.mean.dtype == y.dtype
    assert torch.equal(smc(y, op, seed=3), a.mean)  # deepinv-style call returns the mean


def test_bad_input():
    prior, op, y, _ = gaussian_problem("inpaint", B=1)
    for kw, name in [({"particles": 0}, "particles"), ({"steps": 0}, "steps"), ({"tilt": "exact"}, "tilt"),
                     ({"proposal": "euler"}, "proposal"), ({"prior_std": -1.0}, "prior_std"),
                     ({"prior_std": "guess"}, "prior_std"), ({"ess_threshold": 1.5}, "ess_threshold"),
                     ]:
        with pytest.raises(ValueError, match=name):
            SMC(prior, **kw)
    with pytest.raises(TypeError, match="particles: expected a positive integer, got 2.5"):
        SMC(prior, particles=2.5)
    smc = SMC(prior, particles=4, steps=3)
    with pytest.raises(ValueError, match="n_samples"):
        smc.reconstruct(y, op, n_samples=0, progress=False)
    with pytest.raises(ValueError, match="y"):
        smc.reconstruct(y * float("nan"), op, progress=False)
    with pytest.raises(ValueError, match="y"):
        smc.reconstruct(y[..., :2], op, progress=False)
    with pytest.raises(ValueError, match="proposal"):
        SMC(prior, proposal="euler")  # the paper's literal Euler step belongs to AFDPS
    noiseless = Inpainting((1, 4, 4), mask=op.mask[0], noise_std=0.0)
    with pytest.raises(ValueError, match="noise_std"):
        smc.reconstruct(y, noiseless, progress=False)
    with pytest.raises(TypeError, match="prior"):
        SMC("not a denoiser")


def test_exact_mass_coverage_of_exact_samples():
    """The coverage measure of benchmarks/CALIBRATION.md: with S = 21 exact samples as the ensemble, the quantiles at
    50 % and 90 % are order statistics (ranks 6, 16 and 2, 20), so the expected exact mass inside is exactly
    (16 - 6) / 22 and (20 - 2) / 22. The mean over R draws is within 4.5 standard errors (from their spread)."""
    pb = make_problem()
    S, R = 21, 30
    g = torch.Generator().manual_seed(5)
    cov = torch.tensor([exact_mass_coverage(pb.posterior.sample(S, generator=g), pb.posterior, levels=(0.5, 0.9),
                                            n_exact=2000, seed=r) for r in range(R)], dtype=torch.float64)
    expected = torch.tensor([10 / 22, 18 / 22], dtype=torch.float64)
    z = (cov.mean(0) - expected) / (cov.std(0) / math.sqrt(R))
    assert z.abs().max() < 4.5, (cov.mean(0).tolist(), expected.tolist())


def test_exact_coverage_only_runs_the_named_methods():
    """``exact_coverage --only`` keeps the methods whose label starts with a prefix (DiffPIR and DAPS are rows
    now), adds the exact reference for their S, and refuses a prefix that matches nothing."""
    from invdiff.bench.exact_coverage import _rows, run

    labels = [r[0] for r in _rows(quick=True)]
    assert any(lab.startswith("DiffPIR") for lab in labels) and any(lab.startswith("DAPS") for lab in labels)
    rows, _ = run(quick=True, only=["DiffPIR"])  # 32 runs of 100 steps on the 64-pixel problem: about a second
    assert [r["method"] for r in rows] == ["DiffPIR, 32 independent runs", "exact samples, S=32 (reference, mean of 5)"]
    assert rows[0]["nfe"] == 100 and all(0.0 <= c <= 1.0 for c in rows[0]["cov"])
    with pytest.raises(ValueError, match="only: no method label starts with"):
        run(quick=True, only=["NoSuchSampler"])
