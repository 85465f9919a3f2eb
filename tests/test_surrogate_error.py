"""invdiff.bench.surrogate_error: the predictors are exact where theory says so, and not otherwise."""

import pytest
import torch

from invdiff.bench.surrogate_error import surrogate_errors, table
from invdiff.priors.analytic import GaussianPrior


def _images(n=2, size=8, seed=0):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def test_isotropic_gaussian_prior_every_predictor_is_exact():
    prior = GaussianPrior(torch.full((1, 8, 8), 0.4), 0.3)
    rows = surrogate_errors(prior, _images(), torch.full((1, 8, 8), 0.3**2), sigmas=(2.0, 0.3, 0.02), reps=2)
    for r in rows:
        assert r["change"] > 1e-6, r  # there is something to predict
        for k in ("best scalar", "pixel map", "first order"):
            assert r[k] < 1e-9 * max(r["change"], 1.0), (k, r)


def test_per_pixel_variances_need_the_pixel_map():
    """For a Gaussian prior whose pixels have different variances, only the map (and first order) are exact."""
    std = torch.linspace(0.02, 0.5, 64, dtype=torch.float64).reshape(1, 8, 8)
    prior = GaussianPrior(torch.full((1, 8, 8), 0.5), std)
    rows = surrogate_errors(prior, _images(), std**2, sigmas=(0.3, 0.05), reps=2)
    for r in rows:
        assert r["pixel map"] < 1e-9 * r["change"] and r["first order"] < 1e-9 * r["change"], r
        assert r["best scalar"] > 1e-3 * r["change"], r  # one number cannot fit the different gains
    wrong = surrogate_errors(prior, _images(), torch.full((1, 8, 8), 0.1), sigmas=(0.3,), reps=2)[0]
    assert wrong["pixel map"] > 1e-3 * wrong["change"]
    assert "| 0.3 |" in table(rows)


def test_surrogate_errors_checks_its_arguments():
    prior = GaussianPrior(torch.full((1, 8, 8), 0.4), 0.3)
    with pytest.raises(ValueError, match="reps"):
        surrogate_errors(prior, _images(), torch.tensor(0.09), reps=0)
    with pytest.raises(ValueError, match="ratio"):
        surrogate_errors(prior, _images(), torch.tensor(0.09), ratio=1.5)
