"""SliceDenoiser: a 2D prior on (B, C, D, H, W) volumes equals the 2D prior applied slice by slice."""

import pytest
import torch

from invdiff import priors
from invdiff.priors import EDMDenoiser, GaussianMixturePrior, SliceDenoiser, UNet, UNetConfig


class Recording(torch.nn.Module):
    """A 2D denoiser whose output depends on the slice and on sigma, recording its batch sizes."""

    def __init__(self, C=2):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.linspace(0.5, 1.5, C).reshape(1, C, 1, 1))
        self.calls = []
        self.data_range, self.sigma_min, self.sigma_max = (0.0, 1.0), 0.01, 5.0

    def forward(self, x, sigma):
        assert x.ndim == 4
        self.calls.append(x.shape[0])
        s = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1, 1, 1)
        return self.weight * x.roll(1, dims=-1) / (1 + s**2) + x.mean(dim=(1, 2, 3), keepdim=True)


def slice_by_slice(D2, x, sigma):
    B, D = x.shape[0], x.shape[2]
    sig = torch.as_tensor(sigma, dtype=x.dtype).expand(B)
    return torch.stack([torch.stack([D2(x[b : b + 1, :, z], sig[b : b + 1])[0] for z in range(D)], 1) for b in range(B)])


@pytest.mark.parametrize("chunk", [1, 3, 5, 16])
@pytest.mark.parametrize("sigma", [0.7, torch.tensor([0.1, 2.0])])
def test_equals_slice_by_slice(chunk, sigma):
    D2 = Recording()
    D3 = SliceDenoiser(D2, chunk=chunk)
    x = torch.randn(2, 2, 5, 4, 6, generator=torch.Generator().manual_seed(0))
    out = D3(x, sigma)
    assert D2.calls == [min(chunk, 10 - i) for i in range(0, 10, chunk)]  # B*D = 10 slices in chunks
    torch.testing.assert_close(out, slice_by_slice(D2, x, sigma), rtol=1e-6, atol=1e-6)
    assert (D3.data_range, D3.sigma_min, D3.sigma_max) == ((0.0, 1.0), 0.01, 5.0)


def test_with_real_priors_and_gradients():
    D2 = EDMDenoiser(UNet(UNetConfig(channels=(16, 32)))).eval()
    D3 = SliceDenoiser(D2, chunk=4)
    x = torch.randn(2, 1, 3, 16, 16, generator=torch.Generator().manual_seed(1), requires_grad=True)
    sigma = torch.tensor([0.3, 1.2])
    out = D3(x, sigma)
    torch.testing.assert_close(out, slice_by_slice(D2, x, sigma), rtol=1e-5, atol=1e-5)
    out.sum().backward()  # solvers differentiate through the prior
    assert x.grad is not None and torch.isfinite(x.grad).all()
    gm = GaussianMixturePrior(torch.stack([torch.zeros(1, 4, 4), torch.ones(1, 4, 4)]), torch.tensor([0.2, 0.3]))
    v = torch.rand(1, 1, 6, 4, 4)
    torch.testing.assert_close(SliceDenoiser(gm, chunk=4)(v, 0.5), slice_by_slice(gm, v, 0.5))


def test_images_pass_through_and_bad_input():
    D2 = Recording()
    x = torch.randn(3, 2, 4, 4)
    torch.testing.assert_close(SliceDenoiser(D2)(x, 0.5), D2(x, 0.5))
    with pytest.raises(ValueError, match="chunk"):
        SliceDenoiser(D2, chunk=0)
    with pytest.raises(TypeError, match="denoiser2d"):
        SliceDenoiser(lambda x, s: x)
    with pytest.raises(ValueError, match="x: expected a volume"):
        SliceDenoiser(D2)(torch.zeros(2, 4, 4), 0.1)
    with pytest.raises(ValueError, match="sigma"):
        SliceDenoiser(D2)(torch.zeros(2, 2, 3, 4, 4), torch.tensor([0.1, 0.2, 0.3]))
    assert priors.SliceDenoiser is SliceDenoiser
