"""The seed-spread tool (invdiff.bench.seeds): per-seed gaps are the benchmark's own rows, the table's summary is
computed from them, bad arguments are named."""

import math

import pytest
import torch

from invdiff.bench import seeds as sd
from invdiff.bench.run import run_benchmark
from invdiff.priors import GaussianPrior


@pytest.fixture(scope="module")
def prior():
    return GaussianPrior(torch.full((1, 64, 64), 0.3), 0.3)


def test_each_seed_is_the_benchmark_run_of_that_seed(prior):
    rows = sd.seed_gaps(["inpaint70"], ("dds", "tv"), [0, 3], nfe=4, n_images=1, prior=prior, log=lambda *a: None)
    assert [r["seed"] for r in rows] == [0, 3]
    for r in rows:
        bench, _, _ = run_benchmark(["inpaint70"], ["dds", "tv"], n_images=1, nfe=4, prior=prior, seed=r["seed"],
                                    log=lambda *a: None)
        psnr = {b["key"]: b["psnr"] for b in bench}
        assert r["dds"] == psnr["dds"] and r["tv"] == psnr["tv"] and r["gap"] == psnr["dds"] - psnr["tv"]
    assert rows[0]["dds"] != rows[1]["dds"]  # another seed draws other noise


def test_gap_table_summarises_the_seeds():
    rows = [{"task": "deblur", "seed": s, "a": 20.0 + g, "b": 20.0, "gap": g} for s, g in enumerate([0.5, 1.5, 1.0])]
    md = sd.gap_table(rows, ("a", "b"), goal=1.0)
    line = md.splitlines()[2]
    assert "| deblur | 3 | 21.00 | 20.00 | +0.50, +1.50, +1.00 |" in line
    assert f"+1.00 ± {0.5 / math.sqrt(3):.2f} | 0.50 | 2 / 3 |" in line


def test_bad_arguments_are_named(prior):
    with pytest.raises(ValueError, match="methods: expected two different"):
        sd.seed_gaps(["deblur"], ("dds", "dds"), [0], prior=prior)
    with pytest.raises(ValueError, match="seeds: expected at least one"):
        sd.seed_gaps(["deblur"], ("dds", "tv"), [], prior=prior)
    with pytest.raises(SystemExit):
        sd.main(["--tasks", "nope"])
