"""DAPS (invdiff.solvers.daps): the x0-step against the exact Gaussian posterior of a linear measurement, the whole
sampler against the exact posterior of a Gaussian prior, presets, registry and bad input."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from invdiff import solvers
from invdiff.solvers.daps import DAPS, gaussian_x0_step

sys.path.insert(0, str(Path(__file__).parent))
from test_smc import S_Y, dense_op, gaussian_problem  # noqa: E402
from _counting import count_operator_calls


def test_x0_step_is_the_exact_gaussian_posterior():
    """N(x0_hat, r^2 I) times N(y; A x0, s_y^2 I) with a dense random A: the mean equals the closed form, and the
    draws' covariance equals Sigma = (I / r^2 + A^T A / s_y^2)^-1 within its sampling error."""
    img, r, n = (1, 4, 4), 0.3, 20000
    op = dense_op(8, img)
    d = math.prod(img)
    M = op.A(torch.eye(d).reshape(d, *img)).double()  # (d, m): row j is A e_j
    g = torch.Generator().manual_seed(3)
    x0_hat = torch.rand(1, *img, generator=g).double()
    y = torch.randn(1, 8, generator=g)
    prec = torch.eye(d, dtype=torch.float64) / r**2 + M @ M.T / S_Y**2
    C = torch.linalg.inv(prec)
    m_exact = C @ (x0_hat.flatten() / r**2 + M @ y.double().flatten() / S_Y**2)
    x0b, yb = x0_hat.expand(n, *img), y.expand(n, 8)
    m, draws = gaussian_x0_step(x0b, yb, op, r, S_Y, cg_iters=d, generator=g)
    assert torch.allclose(m[0].flatten(), m_exact, atol=1e-5)
    eps = (draws - m).flatten(1)
    assert float(eps.mean(0).abs().max()) < 5 * float(C.diagonal().max().sqrt()) / math.sqrt(n)
    cov = eps.T @ eps / n
    # each entry's sampling sd is at most sqrt(2 / n) max_i C_ii (Wishart); 6 sds over 256 entries
    assert float((cov - C).abs().max()) < 6 * float(C.diagonal().max()) * math.sqrt(2 / n)
    # without a generator: the mean alone
    m2, none = gaussian_x0_step(x0_hat, y, op, r, S_Y, cg_iters=d, generator=None)
    assert none is None and torch.allclose(m2.flatten(), m_exact, atol=1e-5)


@pytest.mark.parametrize("kind", ["inpaint", "dense"])
def test_gaussian_prior_posterior_mean_and_spread(kind):
    """A Gaussian prior N(m, 0.2^2 I), two measurements, 200 runs of 40 levels.

    The mean of the runs' outputs (tail_average=1: the last level's m_t, a posterior draw at sigma_min)
    is the exact posterior mean up to Monte Carlo error plus the bias of DAPS's approximation
    ``p(x0 | x_t) ~ N(x0_hat, sigma_t^2 I)`` (the exact conditional variance is ``s^2 sigma_t^2 / (s^2 +
    sigma_t^2)``, smaller): the mean squared z-score over the pixels stays below 4 (1 for an exact sampler; a
    sampler that ignored the data, i.e. returned prior draws, scores over 100 here). The spread: the runs'
    variance over the exact posterior variance is between 0.8 and 1.6 on average (the approximation inflates
    it: measured 1.13 on inpainting and 1.29 on the dense operator); without the x0 draws (the mean of the
    Gaussian only, DDIM-like with eta = 1) the same ratio falls to about 0.
    """
    prior, op, y, post = gaussian_problem(kind)
    N = 200
    r = DAPS(prior, steps=40, tail_average=1, cg_iters=16).reconstruct(y, op, n_samples=N, seed=0, progress=False)
    pm, pv = post.mean().double(), post.var().double()
    z = (r.mean.double() - pm) / (pv / N).sqrt()
    assert float((z**2).mean()) < 4, f"mean z^2 {float((z ** 2).mean()):.2f}"
    prior_z = (prior.mean.double() - pm) / (pv / N).sqrt()
    assert float((prior_z**2).mean()) > 100  # the bound above could fail: the prior mean is far off
    ratio = float((r.std.double() ** 2 / pv).mean())
    assert 0.8 < ratio < 1.6, f"variance ratio {ratio:.3f}"
    assert r.nfe == 40 and r.samples.shape == (N, 2, 1, 4, 4)  # the N runs go through the network as one batch


def test_rao_blackwellised_average_is_closer_to_the_posterior_mean_than_one_draw():
    """tail_average = k averages the conditional means m_t: one run's output is nearer the exact posterior mean
    than one run's final draw, over 16 seeds (a property that fails for an average that adds no information)."""
    prior, op, y, post = gaussian_problem("dense")
    pm = post.mean().double()

    def errors(tail) -> float:  # summed over 16 independent runs (one batch)
        r = DAPS(prior, steps=40, tail_average=tail, cg_iters=16).reconstruct(y, op, n_samples=16, seed=0,
                                                                               progress=False)
        return float(((r.samples.double() - pm) ** 2).mean(dim=(1, 2, 3, 4)).sum())

    err_avg, err_one = errors(0.5), errors(1)
    assert err_avg < 0.7 * err_one, (err_avg, err_one)


def test_registry_presets_and_same_seed():
    prior, op, y, _ = gaussian_problem("inpaint")
    assert solvers.get_solver("daps") is DAPS and solvers.DAPS is DAPS
    s = DAPS(prior).settings()
    assert s["task"] == "default" and s["steps"] == 100
    a = DAPS(prior, steps=8).reconstruct(y, op, seed=4, progress=False).mean
    b = solvers.reconstruct(y, op, prior, method="daps", steps=8, seed=4, progress=False).mean
    assert torch.equal(a, b) and a.shape == y.shape
    assert DAPS(prior, task="inpaint").settings()["task"] == "inpaint"


def test_bad_input_names_the_argument():
    prior, op, y, _ = gaussian_problem("inpaint")
    with pytest.raises(ValueError, match="lambda_"):
        DAPS(prior, lambda_=-1.0)
    with pytest.raises(ValueError, match="steps"):
        DAPS(prior, steps=0)
    with pytest.raises(ValueError, match="task: unknown task group 'painting'"):
        DAPS(prior, task="painting")
    noiseless = dense_op(8, noise_std=0.0)
    with pytest.raises(ValueError, match="noise_std: DAPS needs a positive measurement noise"):
        DAPS(prior, steps=2).reconstruct(torch.zeros(1, 8), noiseless, progress=False)


def test_operator_calls_per_level(monkeypatch):
    """Per level before the last: A once for the residual and once per CG iteration of each solve; A^T the same
    plus one for the draw's A^T z2 (A^T y is not recomputed)."""
    from invdiff.priors import GaussianPrior

    op = dense_op(8, (1, 4, 4))
    calls = count_operator_calls(monkeypatch, op)
    seen = []
    DAPS(GaussianPrior(torch.full((1, 4, 4), 0.5), 0.3), steps=4, cg_iters=3).reconstruct(torch.zeros(1, 8), op, seed=0, progress=False,
                                                          callback=lambda d: seen.append(dict(calls)))
    for before, after in zip(seen[:-2], seen[1:-1]):
        assert {k: after[k] - before[k] for k in calls} == {"A": 1 + 2 * 3, "A_adjoint": 2 + 2 * 3}
