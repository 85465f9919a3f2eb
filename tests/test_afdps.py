"""AFDPS (the paper's particle-tilt scheme) against exact posteriors: Stage I, the weight update, the Gaussian
posterior mean, the Gaussian-mixture posterior (where its weights degenerate), and the "afdps" name."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import invdiff
from invdiff.bench.exact_posterior import make_problem, score
from invdiff.solvers import AFDPS, SMC, get_solver
from invdiff.solvers.ensemble import Context
from invdiff.solvers.smc_gauss import GaussianSteps

from test_smc import S_Y, dense_op, gaussian_problem


def test_afdps_name_resolves_to_the_paper_scheme():
    prior, op, y, _ = gaussian_problem("inpaint", B=1)
    assert get_solver("afdps") is AFDPS and get_solver("AFDPS") is AFDPS and get_solver("smc") is SMC
    a = invdiff.reconstruct(y, op, prior, method="afdps", particles=8, steps=6, n_samples=3, seed=2, progress=False)
    b = AFDPS(prior, particles=8, steps=6).reconstruct(y, op, n_samples=3, seed=2, progress=False)
    assert torch.equal(a.mean, b.mean) and torch.equal(a.samples, b.samples) and a.nfe == 6


def test_smc_particle_tilt_is_an_alias_that_warns():
    prior, op, y, _ = gaussian_problem("inpaint", B=1)
    with pytest.warns(FutureWarning, match="AFDPS"):
        old = SMC(prior, particles=8, steps=6, tilt="particle", ess_threshold=0.3)
    assert isinstance(old, AFDPS) and old.ess_threshold == 0.3
    new = AFDPS(prior, particles=8, steps=6, ess_threshold=0.3)
    assert torch.equal(old.reconstruct(y, op, seed=1, progress=False).mean, new.reconstruct(y, op, seed=1,
                                                                                             progress=False).mean)


def test_stage_one_is_the_exact_gaussian():
    """Stage I draws N(0, R^2 I) exp(-|y - A x|^2 / (2 s^2)), R^2 = sigma_max^2 + prior_std^2: mean and covariance
    of 4000 draws (the step-0 particles, no resampling) within Monte Carlo error of the closed form."""
    op, R2, n = dense_op(6, noise_std=0.3), 2.0**2 + 0.5**2, 4000
    prior = invdiff.priors.GaussianPrior(torch.zeros(1, 4, 4), 0.5)
    y = torch.randn(1, 6, generator=torch.Generator().manual_seed(3))
    got = []
    AFDPS(prior, particles=n, steps=3, ess_threshold=0.0, sigma_max=2.0).reconstruct(
        y, op, seed=0, progress=False, callback=lambda d: got.append(d["x"]) if d["step"] == 0 else None)
    X = got[0].reshape(n, 16)
    A = op.A(torch.eye(16, dtype=torch.float64).reshape(16, 1, 4, 4)).T  # (6, 16)
    C = torch.linalg.inv(torch.eye(16, dtype=torch.float64) / R2 + A.T @ A / 0.09)
    mu = C @ (A.T @ y[0].double()) / 0.09
    sd = C.diagonal().sqrt()
    assert ((X.mean(0) - mu).abs() / (sd / math.sqrt(n))).max() < 4.5
    cov = torch.cov(X.T)
    assert ((cov - C).abs() / (sd[:, None] * sd[None, :] * math.sqrt(2 / n))).max() < 5.5


def test_gaussian_weight_update_is_the_paper_weight_to_first_order():
    """The Gaussian proposal's log-weight increment agrees with the PDE's Euler increment
    ``h (|grad mu_y|^2 / 2 - score . grad mu_y)`` up to a constant per step, with a difference of order ``h^2``:
    the relative difference of the centred increments shrinks in proportion to ``h``."""
    pb = make_problem()
    ctx_s2 = 0.05**2
    x = pb.posterior.sample(64, generator=torch.Generator().manual_seed(0))[:, 0].double()
    x = x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    yN = pb.y.double().expand(64, *pb.y.shape[1:])
    ctx = Context(pb.op, yN, (1, 8, 8), ctx_s2, torch.Generator(), GaussianSteps(pb.op, 50, 1e-12), None)
    sigma = 0.3
    x0_hat = pb.prior(x, sigma).double()
    r = yN - pb.op.A(x).double()
    log_tilt = ctx.log_lik(x)
    errs = []
    for h in (1e-6, 1e-7):
        kappa = (sigma**2 - h) / sigma**2
        incs = []
        for proposal in ("gaussian", "euler"):
            solver = AFDPS(pb.prior, proposal=proposal)
            _, inc = solver._weight(ctx, x, x0_hat, r, log_tilt, sigma, h, kappa)
            incs.append(inc - inc.mean())
        errs.append(float((incs[0] - incs[1]).norm() / incs[1].norm()))
    print(f"relative difference Gaussian vs Euler increments: {errs}")
    assert errs[1] < 0.2 * errs[0], f"relative differences {errs} (expected to shrink 10x with h)"


def test_gaussian_posterior_mean():
    """Over R independent runs the average of AFDPS's weighted means deviates from the exact Gaussian posterior
    mean by Monte Carlo error only (t statistics as in tests/test_smc.py::test_variant_mean_...).

    The ancestral kernel lacks the Tweedie covariance, so the scheme is biased at few steps: measured over four
    groups of 10 seeds, mean ``t^2`` 18-46 at 10 steps, 2.2-4.2 at 40 (expected 1.29), 1.0-2.4 at 160; it is
    tested at 160 steps."""
    prior, op, y, post = gaussian_problem("inpaint", B=2)
    R, N = 10, 128
    means = torch.stack([AFDPS(prior, particles=N, steps=160).reconstruct(y, op, seed=seed, progress=False)
                         .mean.double() for seed in range(R)])
    t = (means.mean(0) - post.mean().double()) / (means.std(0) / math.sqrt(R))
    nu, n = R - 1, t.numel()
    mean_t2, var_t2 = nu / (nu - 2), 2 * nu**2 * (nu - 1) / ((nu - 2) ** 2 * (nu - 4))
    bound = mean_t2 + 4 * math.sqrt(var_t2 / n)
    assert float((t**2).mean()) < bound


def test_weights_degenerate_by_the_chi_square_of_the_tilt():
    """Why AFDPS collapses on sharp likelihoods: at ``sigma >> s`` its first increment is ``mu_y(x_0) + log Z`` with
    ``log Z`` nearly flat, and under Stage I ``mu_y(x_0) ~ rho Gamma(d_obs / 2)``, ``rho = R^2 / (R^2 + s^2)``, so
    the increments have sd ``rho sqrt(d_obs / 2)`` (4 for the 32 observed pixels). The weights ``exp(mu_y)`` then
    have no finite mean, and a handful of particles carries the weight after one step. Checked against the sd of
    ``n`` increments with 5 standard errors (``se = sd sqrt((2 + 6 / k) / (4 n))`` for a Gamma(k) sample)."""
    pb = make_problem()
    n, d_obs = 4096, int(pb.op.mask.sum())
    solver = AFDPS(pb.prior, particles=n, steps=100, ess_threshold=0.0)
    incs, orig = [], solver._weight

    class Stop(Exception):
        pass

    def weight(*args):  # record the first step's increments, then stop
        incs.append(orig(*args)[1])
        raise Stop

    solver._weight = weight
    with pytest.raises(Stop):
        solver.reconstruct(pb.y, pb.op, seed=0, progress=False)
    R2 = solver.sigma_max**2 + solver.prior_std**2
    expected = R2 / (R2 + S_Y**2) * math.sqrt(d_obs / 2)
    se = expected * math.sqrt((2 + 12 / d_obs) / (4 * n))
    got = float(incs[0].std())
    print(f"first increments: sd {got:.3f}, expected {expected:.3f} +- {se:.3f}")
    assert abs(got - expected) < 5 * se


@pytest.mark.xfail(strict=True, reason="measured: AFDPS collapses onto one or two of the three modes (ESS 1-11 of 512 "
                                       "at each of the 74 steps with sigma > 0.2; component TV 0.61-0.74 with 16-2048 "
                                       "particles, 100-400 steps; benchmarks/CALIBRATION.md)")
def test_gmm_multimodal_posterior():
    """The same bar as SMC's test (tests/test_smc.py): SW within 2x exact-vs-exact and component TV <= 0.1."""
    pb = make_problem()
    r = AFDPS(pb.prior, particles=512, steps=100).reconstruct(pb.y, pb.op, n_samples=512, seed=0, progress=False)
    s = score(r.samples, pb.posterior, reps=5, seed=100)
    assert s["sw"] < 2 * s["sw_exact"] and s["tv"] < 0.1, s


def test_literal_euler_diverges_with_a_named_step():
    """The paper's PDE by plain Euler-Maruyama is unstable for h ||A||^2 / s^2 > 2: it must say so, not return NaN."""
    pb = make_problem()
    with pytest.raises(FloatingPointError, match="step"):
        AFDPS(pb.prior, particles=8, steps=20, proposal="euler").reconstruct(pb.y, pb.op, progress=False)


def test_bad_input():
    prior, op, y, _ = gaussian_problem("inpaint", B=1)
    for kw, name in [({"particles": 0}, "particles"), ({"steps": 0}, "steps"), ({"proposal": "gradient"}, "proposal"),
                     ({"prior_std": -1.0}, "prior_std"), ({"prior_std": "guess"}, "prior_std"),
                     ({"ess_threshold": 1.5}, "ess_threshold")]:
        with pytest.raises(ValueError, match=name):
            AFDPS(prior, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AFDPS(prior)  # no warning from the class itself
    noiseless = invdiff.operators.Inpainting((1, 4, 4), mask=op.mask[0], noise_std=0.0)
    with pytest.raises(ValueError, match="noise_std"):
        AFDPS(prior, particles=4, steps=3).reconstruct(y, noiseless, progress=False)
