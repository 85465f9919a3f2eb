"""Likelihood tempering of the Tweedie SMC (invdiff.solvers.smc_temper): the Lanczos quadratic forms equal CG's, the
annealed sampler keeps the exact Gaussian posterior, the exponent ends at 1 and each raise keeps the CESS."""

from __future__ import annotations

import math

import pytest
import torch

from _gauss_inpaint import gauss_inpaint_problem
from invdiff.operators import CT, MRI, Inpainting
from invdiff.priors.analytic import GaussianPrior
from invdiff.solvers import SMC
from invdiff.solvers.smc_gauss import GaussianSteps
from invdiff.solvers.smc_temper import Tempering, as_tempering, lanczos, shifted_quad

S_Y = 0.01


def _problem(B: int = 2, seed: int = 0):
    return gauss_inpaint_problem(S_Y, B, seed)


@pytest.mark.parametrize("make", [lambda: MRI((1, 16, 16), acceleration=4, seed=0),
                                  lambda: Inpainting((1, 4, 4), mask=0.5, seed=0),
                                  lambda: CT((1, 8, 8), n_views=4, backend="torch")], ids=["mri", "mask", "ct"])
def test_lanczos_quadratic_forms_equal_cg_for_every_shift(make):
    """r^T (c I + t2 A A^T)^{-1} r from one Lanczos run, for three shifts c, against a converged CG; with as many
    Lanczos steps as the Krylov space can have (<= the number of measurements) the two agree to round-off: 1e-6
    relative, 1e-4 for the CT projector, which computes in float32."""
    op = make()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, *op.img_size, generator=g)
    r = op.A(x).double()
    r = r + 0.1 * torch.randn(r.shape, generator=g, dtype=r.dtype)
    if isinstance(op, MRI):
        r = r * op.mask.double()  # measurements live on the sampled lines
    t2 = torch.tensor([0.1, 0.01, 1.0], dtype=torch.float64)
    m = min(r[0].numel(), 40)
    alpha, beta, nr2 = lanczos(op, r, m)
    gs = GaussianSteps(op, 200, 0.0)
    for c in (1e-2, 1e-1, 1.0):
        q_cg, _ = gs.quad(r, c, t2)
        q_l = shifted_quad(alpha, beta, nr2, torch.full((3, 1), c, dtype=torch.float64), t2)[:, 0]
        assert torch.allclose(q_l, q_cg, rtol=1e-4 if isinstance(op, CT) else 1e-6), (c, q_l, q_cg)


@pytest.mark.parametrize("temper", [dict(cess=0.5, beta_start=1e-4, growth=2.0),
                                    dict(cess=0.9, beta_start=1e-3, growth=1.5, ramp=0.8)], ids=["fast", "slow"])
def test_tempered_smc_keeps_the_exact_gaussian_posterior(temper):
    """Gaussian prior, inpainting, noise 0.01: annealing the likelihood from beta_start (s^2 / beta) to 1, the
    weighted mean and variance still match the exact posterior within Monte Carlo error (tolerances of
    test_smc_moves: 4.5 posterior sds / sqrt(ESS) for the mean, 4 s.e. of a variance ratio); the exponent rises
    as scheduled, is 1 at the end, and the tempering weights changed the result (they are not all equal)."""
    prior, op, y, post = _problem()
    N, steps = 400, 30
    smc = SMC(prior, particles=N, steps=steps, tempering=temper)
    r = smc.reconstruct(y, op, n_samples=4, seed=0, progress=False)
    beta = r.info["beta"]
    assert beta.shape == (steps, 2) and torch.all(beta[-1] == 1) and torch.all(beta[0] < 0.05)
    assert torch.all(beta[1:] >= beta[:-1])
    ess_b = r.info["final_ess"]
    assert ess_b.min() > 0.5 * N
    pm, pv = post.mean().to(torch.float64), post.var().to(torch.float64)
    for b in range(2):
        z = (r.mean[b].double() - pm[b]) / (pv[b] / ess_b[b]).sqrt()
        assert float(z.abs().max()) < 4.5, f"ensemble {b}: worst mean error {float(z.abs().max()):.2f} sds"
        ratio = r.std[b].double() ** 2 / pv[b]
        tol = 4 * math.sqrt(2 / (float(ess_b[b]) * ratio.numel()))
        assert abs(float(ratio.mean()) - 1) < tol, f"variance ratio {float(ratio.mean()):.3f}, tolerance {tol:.3f}"
    plain = SMC(prior, particles=N, steps=steps).reconstruct(y, op, n_samples=4, seed=0, progress=False)
    assert not torch.equal(plain.mean, r.mean)


def test_each_raise_keeps_the_conditional_ess():
    """Without a cap the exponent is raised to where the CESS of the tempering weights is the target (bisection), and
    the weights that step adds are exp(delta): recompute the CESS from the returned increments."""
    _, op, y, _ = _problem(B=1)
    prior = GaussianPrior(torch.full((1, 4, 4), 0.5), 1.0)  # wide prior, started at sigma 0.3: particles disagree
    seen = []
    orig = Tempering.advance

    def spy(self, ctx, log_w, beta, r, tau2, s2, iters, k, steps, last):
        out = orig(self, ctx, log_w, beta, r, tau2, s2, iters, k, steps, last)
        seen.append((float(beta[0]), float(out[0][0]), float(Tempering._cess(log_w, out[2], ctx)[0]), last))
        return out

    Tempering.advance = spy
    try:
        SMC(prior, particles=200, steps=20, sigma_max=0.3, tempering=dict(cess=0.7, beta_start=1e-6)).reconstruct(
            y, op, seed=0, progress=False)
    finally:
        Tempering.advance = orig
    raised = [c for b0, b1, c, last in seen if b1 < 1 and b1 > b0 and not last]
    assert raised, "the exponent never stopped short of 1: the test problem does not exercise the bisection"
    assert all(abs(c - 0.7) < 0.01 for c in raised), raised
    assert seen[-1][1] == 1.0


def test_bad_tempering_is_named():
    with pytest.raises(ValueError, match="cess"):
        Tempering(cess=1.5)
    with pytest.raises(ValueError, match="growth: expected"):
        Tempering(growth=0.5)
    with pytest.raises(ValueError, match="ramp: expected"):
        Tempering(ramp=2.0)
    with pytest.raises(TypeError, match="tempering: expected"):
        as_tempering("fast")
    with pytest.raises(ValueError, match="tempering: not implemented for proposal='gradient'"):
        SMC(GaussianPrior(torch.zeros(1, 2, 2), 1.0), proposal="gradient", tempering=0.5)
    assert as_tempering(0.3) == Tempering(cess=0.3)
