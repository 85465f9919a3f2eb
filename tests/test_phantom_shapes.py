"""``data.shapes`` and ``data.clutter``: the broader phantom families used to train the 2D prior."""

from __future__ import annotations

import data_script
import pytest
import torch

from invdiff import data


@pytest.mark.parametrize("family", ["shapes", "clutter"])
def test_family_is_in_range_and_reproducible(family):
    make = getattr(data, family)
    x = make(32, 48, seed=5)
    assert x.shape == (32, 1, 48, 48) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert torch.equal(x, make(32, 48, seed=5))
    assert not torch.equal(x, make(32, 48, seed=6))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(make(3, (20, 30), generator=g1), make(3, (20, 30), generator=g2))
    assert make(2, (20, 30), seed=0).shape == (2, 1, 20, 30)


def test_shapes_are_varied():
    x = data.shapes(32, 48, seed=5)
    # not blank: every phantom has structure, and the family has both flat and busy images
    std = x.flatten(1).std(1)
    assert (std > 0.01).all(), std.min()
    levels = torch.tensor([len(torch.unique(im)) for im in x])
    assert levels.min() >= 3 and levels.max() >= 10


def test_clutter_is_busier_and_fainter_than_shapes():
    x = data.clutter(32, 48, seed=5)
    # many weak edges: busy images (many grey levels) whose typical contrast is below the shapes family's
    levels = torch.tensor([len(torch.unique(im)) for im in x])
    assert levels.median() >= 30, levels
    assert x.flatten(1).std(1).median() < data.shapes(32, 48, seed=5).flatten(1).std(1).median()


@pytest.mark.parametrize("family, kw, name", [
    ("shapes", dict(n=0), "n"), ("shapes", dict(n=2, k_max=0), "k_max"), ("shapes", dict(n=2, size=1), "size"),
    ("clutter", dict(n=0), "n"), ("clutter", dict(n=2, k_range=(0, 4)), "k_range"),
    ("clutter", dict(n=2, k_range=(5, 4)), "k_range"), ("clutter", dict(n=2, k_range=(True, 4)), "k_range"),
    ("clutter", dict(n=2, size=1), "size")])
def test_bad_arguments_name_the_argument(family, kw, name):
    with pytest.raises(ValueError, match=name):
        getattr(data, family)(**kw)


def test_train_script_broad_batch_is_a_third_of_each_family():
    """``train_prior.py --data broad``: ellipses, shapes and clutter in one batch, in that order (before flips)."""
    t = data_script.load("train_prior")
    args = t.parse_args(["--data", "broad", "--size", "32"])
    x = t.batch_2d(args, torch.Generator().manual_seed(0))
    assert x.shape == (16, 1, 32, 32) and float(x.min()) >= 0 and float(x.max()) <= 1
    g = torch.Generator().manual_seed(0)
    parts = [data.ellipses(6, 32, generator=g), data.shapes(5, 32, generator=g), data.clutter(5, 32, generator=g)]
    flip = torch.rand(16, generator=g) < 0.5
    want = torch.cat(parts)
    assert torch.equal(x, torch.where(flip[:, None, None, None], want.flip(-1), want))
    with pytest.raises(SystemExit):
        t.parse_args(["--data", "everything"])
    assert t.MIXTURES["mixed"] == (data.ellipses, data.shapes)


def test_families_figure_draws_the_training_families_and_the_held_out_generator(tmp_path):
    from invdiff.bench.prior_quality import main

    out = tmp_path / "families.png"
    main(["--families", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_other_generator_batch_is_fresh_reproducible_and_named():
    """The ceiling diagnostic's training family: deepinv's generator, never its test (seed 1) or tuning (seed 2) set."""
    from invdiff.bench.prior_quality import other_generator_batch, other_generator_images

    a = other_generator_batch(4, 32, generator=torch.Generator().manual_seed(0))
    b = other_generator_batch(4, 32, generator=torch.Generator().manual_seed(0))
    assert a.shape == (4, 1, 32, 32) and torch.equal(a, b) and float(a.min()) >= 0 and float(a.max()) <= 1
    for seed in (1, 2):
        held_out = other_generator_images(4, 32, seed=seed)
        assert not any(torch.equal(x, h) for x in a for h in held_out)
    g = torch.Generator().manual_seed(0)
    assert not torch.equal(other_generator_batch(4, 32, generator=g), other_generator_batch(4, 32, generator=g))

    t = data_script.load("train_prior")
    assert t._family_name(data.clutter) == "invdiff.data.clutter"
    assert t._family_name(other_generator_batch) == "invdiff.bench.prior_quality.other_generator_batch"
    x = t.batch_2d(t.parse_args(["--data", "other-generator", "--size", "32", "--batch", "3"]),
                   torch.Generator().manual_seed(0))
    assert x.shape == (3, 1, 32, 32)


def test_compare_families_scores_each_family_against_tuned_tv():
    from invdiff.bench.prior_quality import compare_families, compare_other_generator, family_images

    identity = lambda y, sigma: y  # noqa: E731  (leaves the noise: tuned TV must beat it)
    rows = compare_families(identity, n=2, sigmas=(0.1,), families=("clutter", "other"))
    assert [r["family"] for r in rows] == ["clutter", "other"]
    for r in rows:
        assert r["gain_db"] < -1.0 and 0.1 * 0.25 <= r["tv_weight"] <= 0.1 * 4.0
    # the 'other' row is compare_other_generator's measurement on the same images and noise, without Shepp-Logan
    ref = compare_other_generator(identity, n=2, sigmas=(0.1,))[0]
    assert (rows[1]["prior_db"], rows[1]["tv_db"], rows[1]["tv_weight"]) == (ref["prior_db"], ref["tv_db"],
                                                                             ref["tv_weight"])
    with pytest.raises(ValueError, match="family: unknown 'blobs'"):
        family_images("blobs", 2, seed=0)
