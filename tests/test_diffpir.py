"""DiffPIR (invdiff.solvers.diffpir): the exact data proximal step against dense closed forms, the sampler against
the exact posterior of a Gaussian prior, the schedules, call budget, registry and bad input."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from invdiff import operators, solvers
from invdiff.solvers.diffpir import DiffPIR, data_prox, quad_sigmas
from invdiff.solvers.schedules import vp_alphas_cumprod

sys.path.insert(0, str(Path(__file__).parent))
from test_smc import S_Y, dense_op, gaussian_problem  # noqa: E402
from _counting import count_operator_calls

IMG = (1, 8, 8)


def _dense(op, img) -> torch.Tensor:
    """The matrix of ``op.A`` (rows: measurements, columns: pixels), float64."""
    d = math.prod(img)
    cols = op.A(torch.eye(d).reshape(d, *img)).reshape(d, -1).double()
    return cols.T


def _prox_exact(A: torch.Tensor, x0: torch.Tensor, y: torch.Tensor, rho: float) -> torch.Tensor:
    """``(A^T A + rho I)^-1 (A^T y + rho x0)`` by a dense solve."""
    d = A.shape[1]
    lhs = A.T @ A + rho * torch.eye(d, dtype=torch.float64)
    return torch.linalg.solve(lhs, A.T @ y.double().flatten() + rho * x0.double().flatten())


@pytest.mark.parametrize("kind", ["inpaint", "blur", "sr", "dense"])
@pytest.mark.parametrize("rho", [0.3, 4.0])
def test_data_prox_is_the_exact_proximal_point(kind, rho):
    """The data step equals the dense solve of (A^T A + rho I) x = A^T y + rho x0_hat: in closed form through the
    SVD (inpainting mask, circular blur by FFT, super-resolution) and by CG on a dense random operator."""
    g = torch.Generator().manual_seed(1)
    op = {"inpaint": lambda: operators.Inpainting(IMG, mask=0.4, noise_std=0.01, seed=0),
          "blur": lambda: operators.Blur(IMG, kernel_std=1.0, noise_std=0.01),
          "sr": lambda: operators.SuperResolution(IMG, factor=2, noise_std=0.01),
          "dense": lambda: dense_op(40, IMG)}[kind]()
    x0_hat = torch.rand(1, *IMG, generator=g, dtype=torch.float64)
    y = op.A(torch.rand(1, *IMG, generator=g)) + 0.01 * torch.randn(op.A(x0_hat.float()).shape, generator=g)
    A = _dense(op, IMG)
    exact = _prox_exact(A, x0_hat, y, rho)
    got = data_prox(x0_hat, y, op, rho, cg_iters=math.prod(IMG))
    assert got.dtype == torch.float64 and got.shape == x0_hat.shape
    err = float((got.flatten() - exact).abs().max())
    assert err < 1e-4 * float(exact.abs().max()), err
    # the proximal point is not x0_hat itself (the data step moved it), so the check above could fail
    assert float((exact - x0_hat.flatten()).abs().max()) > 1e-2


@pytest.mark.parametrize("kind", ["inpaint", "dense"])
def test_data_prox_without_noise_is_the_consistent_point_nearest_x0_hat(kind):
    """rho = 0: A x = y exactly where A can see, and x0_hat kept on the null space of A (the projection of
    x0_hat onto {A x = y})."""
    g = torch.Generator().manual_seed(2)
    op = operators.Inpainting(IMG, mask=0.4, noise_std=0.0, seed=0) if kind == "inpaint" else dense_op(20, IMG, 0.0)
    x0_hat = torch.rand(1, *IMG, generator=g, dtype=torch.float64)
    y = op.A(torch.rand(1, *IMG, generator=g))
    A = _dense(op, IMG)
    P = torch.linalg.pinv(A)
    exact = x0_hat.flatten() + P @ (y.double().flatten() - A @ x0_hat.flatten())
    got = data_prox(x0_hat, y, op, 0.0, cg_iters=math.prod(IMG))
    assert float((got.flatten() - exact).abs().max()) < 1e-4


def test_quad_schedule_is_diffpirs_timestep_spacing():
    """t_i = (T - 1)(1 - sqrt(i / (n - 1))) on DDPM's chain, as deepinv's DiffPIR spaces its timesteps
    (``T - 1 - int(sqrt(linspace(0, T^2, n)))``): each level lies between sigma at the two integer timesteps
    around t_i, and the cap at sigma_max starts the chain at that level."""
    ab = vp_alphas_cumprod()
    sig_t = ((1 - ab) / ab).sqrt()
    n = 7
    sig = quad_sigmas(n)
    seq = torch.sqrt(torch.linspace(0.0, 1000.0**2, n)).to(torch.int32)
    for i in range(n):
        t = 999 * (1 - math.sqrt(i / (n - 1)))
        assert abs(t - (999 - int(seq[i]))) <= 1  # deepinv's integer timesteps
        lo, hi = sig_t[math.floor(t)], sig_t[math.ceil(t)]
        assert float(lo) - 1e-12 <= float(sig[i]) <= float(hi) + 1e-12, (i, t)
    assert float(sig[0]) == pytest.approx(float(sig_t[999]), rel=1e-12)
    assert float(sig[-2]) == pytest.approx(float(sig_t[0]), rel=1e-12)
    assert float(sig[-1]) == 0 and bool((sig[:-1].diff() < 0).all())
    capped = quad_sigmas(50, sigma_max=10.0)
    assert float(capped[0]) == pytest.approx(10.0, rel=1e-6) and len(capped) == 51


def _exact_problem(kind: str):
    prior, op, y, post = gaussian_problem(kind)
    return prior, op, y, post.mean().double(), post.var().double()


@pytest.mark.parametrize("kind", ["inpaint", "dense"])
def test_gaussian_prior_tail_average_is_the_posterior_mean(kind):
    """A Gaussian prior N(m, 0.2^2 I) and a linear Gaussian measurement, whose posterior is exact. 64 runs of 60
    steps, each returning the mean of its last 30 data-consistent estimates: the runs' mean is the exact posterior
    mean within the Monte Carlo error of 64 runs plus the solver's bias, stated here as a mean squared z-score
    (z = error / sqrt(posterior variance / 64)) below 4 (1 for an unbiased estimator; measured 0.33 on inpainting
    and 0.36 on the dense operator, a bias of about 0.07 posterior sds); the prior mean, which ignores the data,
    scores above 25 (52 on the dense operator). Each run's average alone is within 0.5 posterior sds of the
    posterior mean (RMS; measured 0.27 / 0.31)."""
    prior, op, y, pm, pv = _exact_problem(kind)
    N = 64
    r = DiffPIR(prior, steps=60, tail_average=30, lambda_=1.0, zeta=1.0, clip_x0=False, cg_iters=16).reconstruct(
        y, op, n_samples=N, seed=0, progress=False)
    z2 = float((((r.mean.double() - pm) / (pv / N).sqrt()) ** 2).mean())
    assert z2 < 4, f"mean z^2 {z2:.2f}"
    prior_z2 = float((((prior.mean.double() - pm) / (pv / N).sqrt()) ** 2).mean())
    assert prior_z2 > 25, prior_z2
    per_run = float((((r.samples.double() - pm) ** 2) / pv).mean().sqrt())
    assert per_run < 0.5, f"per-run RMS error {per_run:.3f} posterior sds"
    assert r.nfe == 60 and r.samples.shape == (N, 2, 1, 4, 4)


def test_last_estimate_spreads_like_the_posterior_and_averaging_narrows_it():
    """tail_average = 1 returns one run's last data-consistent estimate, which with zeta = 1 is a draw whose spread
    is of the posterior's order (variance ratio between 0.3 and 1.5 on the dense operator; measured 0.43: the draws are
    narrower than the posterior, DiffPIR is not an exact sampler); the tail average of the
    same runs is nearer the exact posterior mean than that draw (a property that fails for an average that adds no
    information)."""
    prior, op, y, pm, pv = _exact_problem("dense")
    kw = dict(steps=60, lambda_=1.0, zeta=1.0, clip_x0=False, cg_iters=16)
    one = DiffPIR(prior, tail_average=1, **kw).reconstruct(y, op, n_samples=64, seed=0, progress=False)
    avg = DiffPIR(prior, tail_average=30, **kw).reconstruct(y, op, n_samples=64, seed=0, progress=False)
    ratio = float((one.std.double() ** 2 / pv).mean())
    assert 0.3 < ratio < 1.5, f"variance ratio {ratio:.3f}"
    err = lambda r: float(((r.samples.double() - pm) ** 2).mean())  # noqa: E731
    assert err(avg) < 0.7 * err(one), (err(avg), err(one))


def test_operator_calls_per_step(monkeypatch):
    """On an operator without an SVD: per step, A once for the residual and once per CG iteration; A^T the same."""
    from invdiff.priors import GaussianPrior

    op = dense_op(8, (1, 4, 4))
    calls = count_operator_calls(monkeypatch, op)
    seen = []
    DiffPIR(GaussianPrior(torch.full((1, 4, 4), 0.5), 0.3), steps=4, cg_iters=3).reconstruct(
        torch.zeros(1, 8), op, seed=0, progress=False, callback=lambda d: seen.append(dict(calls)))
    for before, after in zip(seen[:-1], seen[1:]):
        assert {k: after[k] - before[k] for k in calls} == {"A": 1 + 3, "A_adjoint": 1 + 3}


def test_registry_presets_lambda_schedule_and_same_seed():
    prior, op, y, _, _ = _exact_problem("inpaint")
    assert solvers.get_solver("diffpir") is DiffPIR and solvers.DiffPIR is DiffPIR
    s = DiffPIR(prior).settings()
    assert s["task"] == "default" and s["steps"] == 100 and s["schedule"] in ("karras", "quad")
    a = DiffPIR(prior, steps=8).reconstruct(y, op, seed=4, progress=False).mean
    b = solvers.reconstruct(y, op, prior, method="diffpir", steps=8, seed=4, progress=False).mean
    assert torch.equal(a, b) and a.shape == y.shape
    c = DiffPIR(prior, steps=8).reconstruct(y, op, seed=5, progress=False).mean
    assert not torch.equal(a, c)
    lam = DiffPIR(prior, steps=5, lambda_=1.0, lambda_end=16.0).lambdas()
    assert lam[0] == pytest.approx(1.0) and lam[-1] == pytest.approx(16.0) and lam[2] == pytest.approx(4.0)
    for task in ("ct-limited", "inpaint", "deblur", "mri"):
        assert DiffPIR(prior, task=task).settings()["task"] == task


def test_bad_input_names_the_argument():
    prior, op, y, _, _ = _exact_problem("inpaint")
    with pytest.raises(ValueError, match="lambda_"):
        DiffPIR(prior, lambda_=-1.0)
    with pytest.raises(ValueError, match="zeta"):
        DiffPIR(prior, zeta=1.5)
    with pytest.raises(ValueError, match="steps"):
        DiffPIR(prior, steps=0)
    with pytest.raises(ValueError, match="schedule"):
        DiffPIR(prior, schedule="linear")
    with pytest.raises(ValueError, match="sigma_min: only the 'karras'"):
        DiffPIR(prior, schedule="quad", sigma_min=0.01)
    with pytest.raises(TypeError, match="clip_x0"):
        DiffPIR(prior, clip_x0="yes")
    with pytest.raises(ValueError, match="task: unknown task group 'painting'"):
        DiffPIR(prior, task="painting")
    with pytest.raises(TypeError, match="prior"):
        DiffPIR("phantom")
    with pytest.raises(ValueError, match="noise_std"):
        DiffPIR(prior, noise_std=-0.1)


def test_noiseless_operator_runs_with_exact_data_consistency():
    """noise_std = 0: rho_t = 0, every data-consistent estimate fits the measured pixels exactly."""
    prior, _, _, _, _ = _exact_problem("inpaint")
    mask = torch.zeros(1, 4, 4)
    mask.view(-1)[::2] = 1
    op = operators.Inpainting((1, 4, 4), mask=mask, noise_std=0.0)
    x = prior.sample(1, generator=torch.Generator().manual_seed(0)).float()
    y = op.A(x)
    seen = []
    DiffPIR(prior, steps=6, tail_average=1).reconstruct(y, op, seed=0, progress=False,
                                                        callback=lambda d: seen.append(d["x0_dc"]))
    assert all(float((op.A(v.float()) - y).abs().max()) < 1e-6 for v in seen)
