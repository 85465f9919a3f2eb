"""``data.shapes``: the broader random-shape phantom family used to train the 2D prior."""

from __future__ import annotations

import pytest
import torch

from invdiff import data


def test_shapes_are_in_range_reproducible_and_varied():
    x = data.shapes(32, 48, seed=5)
    assert x.shape == (32, 1, 48, 48) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert torch.equal(x, data.shapes(32, 48, seed=5))
    assert not torch.equal(x, data.shapes(32, 48, seed=6))
    # not blank: every phantom has structure, and the family has both flat and busy images
    std = x.flatten(1).std(1)
    assert (std > 0.01).all(), std.min()
    levels = torch.tensor([len(torch.unique(im)) for im in x])
    assert levels.min() >= 3 and levels.max() >= 10


def test_shapes_generator_and_non_square_size():
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(data.shapes(3, (20, 30), generator=g1), data.shapes(3, (20, 30), generator=g2))
    assert data.shapes(2, (20, 30), seed=0).shape == (2, 1, 20, 30)


@pytest.mark.parametrize("kw, name", [(dict(n=0), "n"), (dict(n=2, k_max=0), "k_max"), (dict(n=2, size=1), "size")])
def test_shapes_bad_arguments_name_the_argument(kw, name):
    with pytest.raises(ValueError, match=name):
        data.shapes(**kw)
