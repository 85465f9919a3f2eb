"""The shipped prior 'phantom-ct-64' loads offline and denoises held-out phantoms better than tuned TV."""

from __future__ import annotations

import pytest
import torch

from invdiff import priors
from invdiff.bench.prior_quality import compare


def test_shipped_prior_is_listed_and_loads():
    assert "phantom-ct-64" in priors.available()
    D = priors.load("phantom-ct-64")
    assert D.data_range == (0.0, 1.0) and D.sigma_min < 0.01 and D.sigma_max >= 5
    n_params = sum(p.numel() for p in D.parameters())
    assert 1e6 <= n_params <= 4e6
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        out = D(x, torch.tensor([0.1, 0.5]))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_shipped_prior_beats_tuned_tv_by_1p5_db():
    """Held-out random ellipses (a seed training never draws) and Shepp-Logan, sigma 0.05 / 0.1 / 0.2.

    TV's weight is tuned per sigma on a separate tuning set of phantoms.
    """
    D = priors.load("phantom-ct-64")
    for row in compare(D, n=6):
        assert row["prior_db"] - row["tv_db"] >= 1.5, row
        assert row["prior_shepp_db"] - row["tv_shepp_db"] >= 1.5, row


@pytest.mark.xfail(strict=True, reason="not met yet by the shipped prior (trained on data.ellipses only): on deepinv's "
                   "RandomPhantomDataset its margin over tuned TV is +1.24 / +1.01 / +0.07 dB at sigma 0.05 / 0.1 / 0.2")
def test_shipped_prior_beats_tuned_tv_by_1p5_db_on_another_generator():
    """Issue 12: phantoms from a generator the prior was not trained on (deepinv's ``RandomPhantomDataset``,
    8 test images; TV's weight tuned per sigma on 8 others of that generator) and deepinv's Shepp-Logan.
    Goal: the prior's mean PSNR is at least 1.5 dB above tuned TV's at sigma 0.05, 0.1 and 0.2, on both."""
    from invdiff.bench.prior_quality import compare_other_generator

    D = priors.load("phantom-ct-64")
    for row in compare_other_generator(D, n=8):
        assert not row["tv_weight_at_edge"], row  # TV's grid is wide enough, so TV is fairly tuned
        assert row["prior_db"] - row["tv_db"] >= 1.5, row
        assert row["prior_shepp_db"] - row["tv_shepp_db"] >= 1.5, row
