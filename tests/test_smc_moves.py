"""MCMC rejuvenation of the Tweedie SMC (invdiff.solvers.smc_moves): the posterior stays exact, the hook runs."""

from __future__ import annotations

import math

import pytest
import torch

from _gauss_inpaint import gauss_inpaint_problem
from invdiff.priors.analytic import GaussianPrior
from invdiff.solvers import SMC
from invdiff.solvers.smc_moves import LangevinMoves, with_moves

S_Y = 0.05


def _problem(B: int = 2, seed: int = 0):
    return gauss_inpaint_problem(S_Y, B, seed)


@pytest.mark.parametrize("jacobian, calls", [("autograd", 3), ("isotropic", 2), ("calibrated", 4)])
def test_moves_keep_the_exact_gaussian_posterior(jacobian, calls):
    """Gaussian prior, inpainting: with Langevin moves after every step (always=True) the weighted mean and
    variance still match the exact posterior within Monte Carlo error (tolerances as in test_smc). One move at
    step 0.3 with either Jacobian, and the preset's 3 moves at step 0.9 ("calibrated"; measured: variance ratio
    1.066 and 1.063 against a tolerance of 0.071, the ULA bias of the long step)."""
    from invdiff.solvers.presets.smc import MOVES

    prior, op, y, post = _problem()
    N, steps = 400, 30
    moves = (LangevinMoves(**MOVES.params, always=True) if jacobian == "calibrated"
             else LangevinMoves(1, step=0.3, jacobian=jacobian, always=True))
    smc = with_moves(SMC(prior, particles=N, steps=steps), moves)
    r = smc.reconstruct(y, op, n_samples=4, seed=0, progress=False)
    # per step: the tilt, then the moves' calls ("isotropic" takes the first move's D from the tilt, no graph needed)
    # and one re-evaluation at the moved particles
    assert r.nfe == calls * steps
    ess_b = r.info["final_ess"]
    assert ess_b.min() > 0.5 * N
    pm, pv = post.mean().to(torch.float64), post.var().to(torch.float64)
    for b in range(2):
        z = (r.mean[b].double() - pm[b]) / (pv[b] / ess_b[b]).sqrt()
        assert float(z.abs().max()) < 4.5, f"ensemble {b}: worst mean error {float(z.abs().max()):.2f} sds"
        ratio = r.std[b].double() ** 2 / pv[b]
        tol = 4 * math.sqrt(2 / (float(ess_b[b]) * ratio.numel()))
        assert abs(float(ratio.mean()) - 1) < tol, f"variance ratio {float(ratio.mean()):.3f}, tolerance {tol:.3f}"


def test_moves_run_only_after_resampling_and_change_the_particles():
    """Default (always=False): the moves cost network calls only at resampled steps, and they separate copies."""
    prior, op, y, _ = _problem(B=1)
    base = SMC(prior, particles=64, steps=20, ess_threshold=1.0)  # resample at every step
    r0 = base.reconstruct(y, op, seed=0, progress=False)
    moved = with_moves(SMC(prior, particles=64, steps=20, ess_threshold=1.0), 2)
    r1 = moved.reconstruct(y, op, seed=0, progress=False)
    n_res = int(r1.info["resampled"].sum())
    assert n_res == 20 and r0.nfe == 20
    assert r1.nfe == 20 + 3 * n_res  # two moves and one re-evaluation per resampling
    distinct = lambda r: len(torch.unique(r.info["particles"][0].reshape(64, -1), dim=0))  # noqa: E731
    assert distinct(r1) == 64 and distinct(r1) >= distinct(r0)


def test_bad_moves_are_named():
    with pytest.raises(ValueError, match="step: expected a number in \\(0, 1\\)"):
        LangevinMoves(step=1.5)
    with pytest.raises(ValueError, match="jacobian: expected one of"):
        LangevinMoves(jacobian="exact")
    with pytest.raises(ValueError, match="moves: expected 'calibrated'.*got 'two'"):
        with_moves(SMC(GaussianPrior(torch.zeros(1, 2, 2), 1.0)), "two")
    with pytest.raises(TypeError, match="moves: expected"):
        with_moves(SMC(GaussianPrior(torch.zeros(1, 2, 2), 1.0)), 2.5)
    with pytest.raises(ValueError, match="gradient proposal"):
        with_moves(SMC(GaussianPrior(torch.zeros(1, 2, 2), 1.0), proposal="gradient"), 1)


def test_calibrated_moves_are_the_preset_and_run_three_moves_per_resampling():
    """SMC(prior, moves="calibrated") takes its moves from the preset MOVES (3 isotropic-Jacobian moves at step 0.9),
    whose provenance names the record; each resampling costs its 3 moves' network calls (the first move reuses the
    step's D, the last is followed by one re-evaluation), and the samples stay finite and distinct."""
    from invdiff.solvers.presets.smc import CALIBRATED, MOVES

    assert SMC(GaussianPrior(torch.zeros(1, 2, 2), 1.0), moves="calibrated").moves == LangevinMoves(**MOVES.params)
    assert dict(MOVES.params) == {"n_moves": 3, "step": 0.9, "jacobian": "isotropic"}
    assert "benchmarks/CALIBRATION.md" in MOVES.provenance
    prior, op, y, _ = _problem(B=1)
    # the ensemble size the calibrated intervals were measured with, unless particles is given
    assert SMC(prior, moves="calibrated").particles == CALIBRATED.params["particles"] == 32
    assert SMC(prior).particles == 16 and SMC(prior, particles=8, moves="calibrated").particles == 8
    assert SMC(prior, moves=3).particles == 16
    r = SMC(prior, particles=16, steps=10, ess_threshold=1.0, moves="calibrated").reconstruct(y, op, seed=0,
                                                                                               progress=False)
    assert r.nfe == 10 + 3 * int(r.info["resampled"].sum()) and torch.isfinite(r.samples).all()
    assert len(torch.unique(r.samples.reshape(16, -1), dim=0)) == 16
