"""The shipped 2D priors 'phantom-ct-64' and 'phantom-broad-64' load offline and denoise held-out phantoms better
than tuned TV."""

from __future__ import annotations

import pytest
import torch

from invdiff import priors
from invdiff.bench.prior_quality import compare


PRIORS_2D = ("phantom-ct-64", "phantom-broad-64")


@pytest.mark.parametrize("name", PRIORS_2D)
def test_shipped_prior_is_listed_and_loads(name):
    assert name in priors.available()
    D = priors.load(name)
    assert D.data_range == (0.0, 1.0) and D.sigma_min < 0.01 and D.sigma_max >= 5
    n_params = sum(p.numel() for p in D.parameters())
    assert 1e6 <= n_params <= 4e6
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        out = D(x, torch.tensor([0.1, 0.5]))
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("name", PRIORS_2D)
def test_shipped_prior_beats_tuned_tv_by_1p5_db(name):
    """Held-out random ellipses (a seed training never draws) and Shepp-Logan, sigma 0.05 / 0.1 / 0.2.

    TV's weight is tuned per sigma on a separate tuning set of phantoms.
    """
    D = priors.load(name)
    for row in compare(D, n=6):
        assert row["prior_db"] - row["tv_db"] >= 1.5, row
        assert row["prior_shepp_db"] - row["tv_shepp_db"] >= 1.5, row


@pytest.mark.xfail(strict=True, reason="met at sigma 0.05 and 0.1 only: on deepinv's RandomPhantomDataset the margin "
                   "of 'phantom-broad-64' over tuned TV is +2.59 / +1.91 / +1.21 dB at sigma 0.05 / 0.1 / 0.2 "
                   "('phantom-ct-64', trained on data.ellipses only: +1.24 / +1.01 / +0.07); the same network "
                   "trained on that generator itself reaches only +1.46 at sigma 0.2, and +1.50 (the goal itself) "
                   "when trained there at noise levels near 0.2 only; docs/prior2d.md")
def test_shipped_prior_beats_tuned_tv_by_1p5_db_on_another_generator():
    """Issue 12: phantoms from a generator the prior was not trained on (deepinv's ``RandomPhantomDataset``,
    8 test images; TV's weight tuned per sigma on 8 others of that generator) and deepinv's Shepp-Logan.
    Goal: the prior's mean PSNR is at least 1.5 dB above tuned TV's at sigma 0.05, 0.1 and 0.2, on both."""
    from invdiff.bench.prior_quality import compare_other_generator

    D = priors.load("phantom-broad-64")  # the stronger of the two shipped 2D priors off the ellipse family
    for row in compare_other_generator(D, n=8):
        assert not row["tv_weight_at_edge"], row  # TV's grid is wide enough, so TV is fairly tuned
        assert row["prior_db"] - row["tv_db"] >= 1.5, row
        assert row["prior_shepp_db"] - row["tv_shepp_db"] >= 1.5, row


def test_broad_prior_denoises_the_other_generator_better_than_the_ellipse_prior():
    """'phantom-broad-64' (fine-tuned from 'phantom-ct-64' on ellipses, shapes and clutter) against
    'phantom-ct-64' on the same noisy images of deepinv's generator, which neither was trained on: at least
    0.5 dB higher mean PSNR at each sigma (measured: see docs/prior2d.md)."""
    from invdiff.bench.prior_quality import other_generator_images, psnr

    x = other_generator_images(8, seed=1)
    old, new = priors.load("phantom-ct-64"), priors.load("phantom-broad-64")
    for sigma in (0.05, 0.1, 0.2):
        y = x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(int(sigma * 1000)))
        with torch.no_grad():
            gain = psnr(new(y, sigma).clamp(0, 1), x).mean() - psnr(old(y, sigma).clamp(0, 1), x).mean()
        assert gain >= 0.5, (sigma, float(gain))
