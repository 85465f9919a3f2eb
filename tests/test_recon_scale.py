"""invdiff.recon.scale: intensity mapping onto a prior's range and noise estimates from the data."""

import math

import pytest
import torch

from invdiff.recon import scale


def test_second_difference_noise_std_recovers_the_noise_of_a_smooth_signal():
    g = torch.Generator().manual_seed(0)
    for s in (0.01, 0.05, 0.2):
        clean = torch.linspace(0, 6, 256).sin().repeat(64, 1) * 3
        y = clean + s * torch.randn(64, 256, generator=g)
        # 16k residuals: the MAD estimate's relative s.d. is about 1.1 / sqrt(n) < 1 %; the signal adds < 1 %
        assert scale.second_difference_noise_std(y) == pytest.approx(s, rel=0.05)
    assert scale.second_difference_noise_std(torch.zeros(4, 10)) == 0.0
    with pytest.raises(ValueError, match="at least 3"):
        scale.second_difference_noise_std(torch.zeros(4, 2))


def test_match_data_range_maps_the_quantile_onto_the_prior_upper_bound():
    g = torch.Generator().manual_seed(1)
    ref = torch.rand(1, 1, 64, 64, generator=g) * 0.02  # attenuation-like values in 1/mm
    s = scale.match_data_range(ref, upper=1.0, quantile=0.995, units="1/mm")
    q = float(torch.quantile(ref.reshape(-1).double(), 0.995))
    assert s.scale == pytest.approx(q)
    assert float(torch.quantile(s.to_prior(ref).reshape(-1).double(), 0.995)) == pytest.approx(1.0)
    assert torch.allclose(s.from_prior(s.to_prior(ref)), ref)
    assert "1/mm" in s.how and "0.995" in s.how
    assert scale.match_data_range(ref, upper=2.0).scale == pytest.approx(q / 2)
    with pytest.raises(ValueError, match="--scale"):
        scale.match_data_range(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="scale"):
        scale.given_scale(-1)
    assert scale.given_scale(0.5).scale == 0.5


def test_prior_upper_reads_the_data_range():
    class P:
        data_range = (0.0, 2.5)

    assert scale.prior_upper(P()) == 2.5
    assert scale.prior_upper(object()) == 1.0
    P.data_range = (-1.0, -0.5)
    with pytest.raises(ValueError, match="data_range"):
        scale.prior_upper(P())
    assert math.isclose(scale.mad_std(torch.tensor([0.0, 1.0, 2.0])), 1.4826)


def test_sinogram_noise_std_uses_air_cells_and_falls_back_to_all_cells():
    g = torch.Generator().manual_seed(2)
    det = torch.arange(128, dtype=torch.float64)
    # a sharp-edged object in the middle third of the detector: its edges inflate a global MAD
    obj = ((det > 40) & (det < 88)).double() * 5.0 + ((det > 55) & (det < 70)).double() * 3.0
    s = 0.02
    y = obj.repeat(90, 1) + s * torch.randn(90, 128, generator=g, dtype=torch.float64)
    est, how = scale.sinogram_noise_std(y)
    assert est == pytest.approx(s, rel=0.05) and "air cells" in how
    filled = y[:, 40:88]  # an object that fills the field of view: no air, the global estimate is used
    est2, how2 = scale.sinogram_noise_std(filled)
    assert "only 0 air cells" in how2 and est2 > 0
    with pytest.raises(ValueError, match="7 detector cells"):
        scale.sinogram_noise_std(torch.zeros(3, 5))
