"""The mean-of-K benchmark methods (invdiff.bench.ensemble): one batch of K chains, their mean scored."""

from __future__ import annotations

import deepinv as dinv
import pytest
import torch

from invdiff import metrics
from invdiff.bench import run
from invdiff.bench.counting import CountingDenoiser
from invdiff.bench.ensemble import ensemble_method, mean_of_chains
from invdiff.bench.methods import DEFAULT_METHODS, ENSEMBLE_BASES, METHODS, Output, get_method, hparams
from invdiff.bench.tasks import measure


class ShrinkDenoiser(dinv.models.Denoiser):
    """The exact denoiser of a N(0.5, 0.25 I) prior (a stand-in network for fast adapter tests)."""

    sigma_min, sigma_max, data_range, sigma_data = 0.002, 10.0, (0.0, 1.0), 0.5

    def forward(self, x, sigma, *args, **kwargs):
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, *([1] * (x.ndim - 1)))
        return 0.5 + (x - 0.5) * 0.25 / (0.25 + s**2)


def _problem(batch: int = 2):
    op = dinv.physics.Inpainting(img_size=(1, 8, 8), mask=0.5, noise_model=dinv.physics.GaussianNoise(0.05))
    x = torch.rand(batch, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    return op, x, measure(op, x, seed=0)


def test_mean_of_chains_repeats_the_batch_and_averages():
    """The base runner sees ``y`` repeated K times (chain j of measurement b at row j B + b); the wrapper returns
    its K outputs per measurement as samples and their mean as the estimate."""
    seen = {}

    def runner(prior, op, y, nfe, seed, params):
        seen["y"] = y
        return Output(x=y * 10 + torch.arange(y.shape[0], dtype=y.dtype).reshape(-1, 1), info={"solver_nfe": nfe})

    y = torch.randn(3, 5)
    out = mean_of_chains(runner, 4)(None, None, y, 7, 0, {})
    assert torch.equal(seen["y"], torch.cat([y] * 4))
    rows = torch.arange(12, dtype=y.dtype).reshape(4, 3, 1)
    assert torch.equal(out.samples, y * 10 + rows)
    assert torch.allclose(out.x, y * 10 + rows.mean(0))
    assert out.info == {"solver_nfe": 7, "chains": 4}


@pytest.mark.parametrize("k", [0, -2, 2.0, True])
def test_mean_of_chains_rejects_a_bad_k(k):
    with pytest.raises(ValueError, match="k: expected .*integer >= 1"):
        mean_of_chains(lambda *a: None, k)


def test_a_base_method_that_returns_the_wrong_batch_is_an_error():
    runner = mean_of_chains(lambda prior, op, y, nfe, seed, params: Output(x=y[:1]), 2)
    with pytest.raises(RuntimeError, match="returned 1 estimates for 4"):
        runner(None, None, torch.zeros(2, 3), 1, 0, {})


@pytest.mark.parametrize("base", ENSEMBLE_BASES)
def test_ensemble_is_the_base_method_on_the_repeated_batch(base):
    """Same seed: the K samples are, bit for bit, the base method's outputs on the K-fold batch; the estimate is
    their mean; the chains differ (K independent draws, not one chain K times); K x NFE evaluations per image."""
    op, x, y = _problem()
    k, nfe = 3, 6
    prior = CountingDenoiser(ShrinkDenoiser())
    params = hparams(base, "inpaint")
    ref = METHODS[base].run(prior, op, y.repeat(k, 1, 1, 1), nfe, 5, dict(params)).x.reshape(k, *x.shape)
    prior.reset()
    out = ensemble_method(METHODS[base], k).run(prior, op, y, nfe, 5, dict(params))
    assert (prior.calls, prior.evaluations) == (nfe, k * nfe * x.shape[0])
    assert torch.equal(out.samples, ref)
    assert torch.allclose(out.x, ref.mean(0), atol=1e-6, rtol=0)
    assert float((out.samples[0] - out.samples[1]).abs().max()) > 1e-3  # the chains differ


def test_registered_keys_and_their_hyperparameters():
    """Every base has a ``-mean8`` key in the benchmark, with the base's family and (until tuned otherwise) its
    hyperparameters; the default run keeps the single-chain methods only."""
    for base in ENSEMBLE_BASES:
        m = get_method(f"{base}-mean8")
        assert m.family == METHODS[base].family and "mean of 8" in m.name
        assert f"{base}-mean8" not in DEFAULT_METHODS and base in DEFAULT_METHODS
    assert hparams("dinv-diffpir-mean8", "deblur") == hparams("dinv-diffpir", "deblur")


def test_benchmark_row_of_a_mean_method():
    """Through the benchmark harness: calls per image = NFE, evaluations per image = 8 x NFE, the coverage column
    is the coverage of the 8 samples, and the PSNR is that of their mean."""
    op, x, y = _problem(batch=1)
    m, nfe = get_method("dds-mean8"), 4
    counting = CountingDenoiser(ShrinkDenoiser())
    out = m.run(counting, op, y, nfe, 0, hparams("dds-mean8", "inpaint"))

    class Task:
        name, volume = "toy", False

    row, per = run._score(Task, m, "dds-mean8", {}, out, x, nfe, 1.0, counting, 0.0)
    assert row["calls_per_image"] == nfe and row["evals_per_image"] == 8 * nfe
    expected_cov = metrics.coverage(out.samples[:, 0], x[0], level=0.9)
    assert row["coverage90"] == pytest.approx(float(expected_cov), abs=1e-12)
    assert row["psnr"] == pytest.approx(float(metrics.psnr(out.samples.mean(0), x, data_range=1.0)), abs=1e-5)


def test_summary_compares_within_equal_network_evaluations():
    """The summary pairs the best invdiff and best deepinv rows of each evaluation count: a mean-of-8 (or SMC) row
    with 800 evaluations per image does not beat a single chain's 100, and is set against deepinv's mean of 8."""
    from invdiff.bench.report import summary_table

    def row(key, family, psnr, evals):
        return {"task": "t", "method": key, "key": key, "family": family, "psnr": psnr, "evals_per_image": evals}

    rows = [row("dds", "invdiff", 30.0, 100), row("dinv-diffpir", "deepinv", 31.0, 100.0),
            row("dds-mean8", "invdiff", 33.0, 800), row("dinv-diffpir-mean8", "deepinv", 32.5, 800.0),
            row("smc", "invdiff", 34.0, 1600), row("fbp", "classical", 20.0, 0)]
    lines = [line for line in summary_table(rows).splitlines() if line.startswith("| t |")]
    assert lines == ["| t | 100 | dds 30.00 | dinv-diffpir 31.00 | -1.00 | fbp 20.00 |",
                     "| t | 800 | dds-mean8 33.00 | dinv-diffpir-mean8 32.50 | +0.50 | fbp 20.00 |",
                     "| t | 1600 | smc 34.00 | - | - | fbp 20.00 |"]
    classical_only = summary_table([row("fbp", "classical", 20.0, 0)]).splitlines()[-1]
    assert classical_only == "| t | - | - | - | - | fbp 20.00 |"
