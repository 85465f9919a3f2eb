"""The Pi-GDM-corrected Tweedie estimate (invdiff.solvers.pigdm) and its use in DDS (``pigdm``, ``pigdm_below``)."""

from __future__ import annotations

import deepinv as dinv
import pytest
import torch

from invdiff.operators import Inpainting
from invdiff.priors import GaussianPrior
from invdiff.solvers.dds import DDS
from invdiff.solvers.pigdm import pigdm_estimate, pigdm_variance

SIZE = 6


def matrix_physics(M: torch.Tensor, noise_std: float) -> dinv.physics.LinearPhysics:
    """``y = M x`` on flattened ``(1, SIZE, SIZE)`` images (wide, not row-orthonormal), with Gaussian noise."""
    return dinv.physics.LinearPhysics(A=lambda x: x.flatten(1) @ M.T,
                                      A_adjoint=lambda y: (y @ M).reshape(y.shape[0], 1, SIZE, SIZE),
                                      noise_model=dinv.physics.GaussianNoise(sigma=noise_std))


def exact_conditional_mean(m, v, x, sigma, M, y, sy):
    """``E[x0 | x, y]`` for ``x0 ~ N(m, v I)``, ``x = x0 + sigma n``, ``y = M x0 + sy e`` (precision form)."""
    d = m.numel()
    P = torch.eye(d, dtype=torch.float64) * (1 / v + 1 / sigma**2) + M.T @ M / sy**2
    b = m.flatten() / v + x.flatten() / sigma**2 + M.T @ y.flatten() / sy**2
    return torch.linalg.solve(P, b).reshape(x.shape)


@pytest.mark.parametrize("sigma", [0.05, 0.3, 2.0])
def test_zeta_one_is_the_exact_conditional_mean_of_a_gaussian_prior(sigma):
    """For ``N(m, v I)`` the network's ``sigma^2 J`` is ``r^2 I``, so the corrected estimate is Gaussian conditioning
    on both ``x`` and ``y``: equal to the precision-form mean for a wide random matrix with noise."""
    g = torch.Generator().manual_seed(0)
    v, sy = 0.3**2, 0.05
    m = torch.full((1, 1, SIZE, SIZE), 0.4, dtype=torch.float64)
    prior = GaussianPrior(m[0], v**0.5)
    M = torch.randn(20, SIZE * SIZE, generator=g, dtype=torch.float64) / SIZE
    op = matrix_physics(M, sy)
    x0 = m + v**0.5 * torch.randn(m.shape, generator=g, dtype=torch.float64)
    x = x0 + sigma * torch.randn(m.shape, generator=g, dtype=torch.float64)
    y = op.A(x0) + sy * torch.randn(1, 20, generator=g, dtype=torch.float64)
    denoise = lambda z, s, grad=False: prior(z, s)  # noqa: E731
    tilde, hat = pigdm_estimate(denoise, x, sigma, y, op, sy, v, zeta=1.0, cg_iters=40)
    exact = exact_conditional_mean(m, v, x, sigma, M, y, sy)
    assert torch.allclose(hat, prior(x, sigma))
    assert torch.allclose(tilde, exact, atol=1e-8), float((tilde - exact).abs().max())
    # without the correction the estimate ignores y: far from the exact mean
    assert float((hat - exact).abs().max()) > 100 * float((tilde - exact).abs().max())


def test_zeta_scales_the_correction_and_r2_is_the_papers():
    assert pigdm_variance(2.0, 1.0) == pytest.approx(4 / 5)  # the paper's r_t^2 = sigma^2 / (1 + sigma^2) at v = 1
    prior = GaussianPrior(torch.full((1, SIZE, SIZE), 0.4), 0.3)
    op = Inpainting((1, SIZE, SIZE), mask=0.5, noise_std=0.01, seed=0)
    x = torch.rand(1, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = op.A(torch.rand(1, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(2))).double()
    denoise = lambda z, s, grad=False: prior(z, s)  # noqa: E731
    one, hat = pigdm_estimate(denoise, x, 0.3, y, op, 0.01, 0.09, zeta=1.0)
    half, _ = pigdm_estimate(denoise, x, 0.3, y, op, 0.01, 0.09, zeta=0.5)
    assert torch.allclose(half - hat, 0.5 * (one - hat), atol=1e-10)


def test_dds_pigdm_runs_only_below_its_level_and_counts_one_call_per_step(monkeypatch):
    """Steps with ``sigma <= pigdm_below`` pass through the correction (and so change ``x0_hat``), the others do not;
    every step is one network call either way."""
    import invdiff.solvers.dds as dds_module

    prior = GaussianPrior(torch.full((1, SIZE, SIZE), 0.4), 0.3)
    op = Inpainting((1, SIZE, SIZE), mask=0.5, noise_std=0.01, seed=0)
    y = op.A(torch.rand(1, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(2)))
    kw = dict(steps=8, schedule="karras", eta=0.7, lambda_=1.0, cg_iters=5, sigma_max=2.0, tail_average=3, sigma_hold=0.2)
    calls, sig = [], []
    real = dds_module.pigdm_estimate
    monkeypatch.setattr(dds_module, "pigdm_estimate", lambda denoise, x, sigma, **k: calls.append(sigma) or real(
        denoise, x, sigma, **k))
    r = DDS(prior, pigdm=1.0, pigdm_below=0.5, **kw).reconstruct(y, op, seed=0, progress=False,
                                                                  callback=lambda d: sig.append(d["sigma"]))
    assert r.nfe == 8
    assert calls == [s for s in sig if s <= 0.5] and 0 < len(calls) < 8
    plain = DDS(prior, pigdm=0, **kw).reconstruct(y, op, seed=0, progress=False)
    assert not torch.allclose(plain.mean, r.mean)


def test_dds_pigdm_on_a_noiseless_operator():
    """An operator that states zero noise gives ``sigma_y = 0`` (``r^2 > 0`` keeps the system definite), as DDS's own
    data step takes its noiseless limit: the run finishes, finite, and the observed pixels match ``y``."""
    prior = GaussianPrior(torch.full((1, SIZE, SIZE), 0.4), 0.3)
    op = Inpainting((1, SIZE, SIZE), mask=0.5, noise_std=0.0, seed=0)
    y = op.A(torch.rand(1, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(2)))
    r = DDS(prior, steps=6, pigdm=1.0, cg_iters=5, sigma_max=2.0).reconstruct(y, op, seed=0, progress=False)
    assert torch.isfinite(r.mean).all()
    assert torch.allclose(op.A(r.mean.float()), y, atol=1e-4)


class CorrelatedGaussian(dinv.models.Denoiser):
    """``N(m, C)`` with a full covariance (a smooth field) and its exact denoiser ``m + C (C + sigma^2 I)^{-1} (x - m)``:
    the unobserved pixels are correlated with the observed ones, as in images."""

    def __init__(self, m: torch.Tensor, C: torch.Tensor):
        super().__init__()
        self.m, self.C = m, C
        self.sigma_data, self.sigma_min, self.sigma_max = float(C.diagonal().mean().sqrt()), 0.002, 3.0

    def forward(self, x, sigma, *args, **kwargs):
        s2 = float(torch.as_tensor(sigma).flatten()[0]) ** 2
        K = self.C @ torch.linalg.inv(self.C + s2 * torch.eye(len(self.m), dtype=self.C.dtype))
        return (self.m + (x.flatten(1).double() - self.m) @ K.T).reshape(x.shape).to(x.dtype)


def test_dds_pigdm_lowers_the_error_of_a_correlated_gaussian_posterior_mean():
    """Inpainting a smooth Gaussian field: DDS's data step puts the observed pixels back but leaves the unobserved
    ones at ``x0_hat``; the correction moves them through the prior's correlations (the Jacobian). Over 3 images x 3
    seeds the held tail's mean lands closer to the exact posterior mean with ``pigdm=1``."""
    d = SIZE * SIZE
    ii = torch.arange(SIZE)
    grid = torch.stack([t.flatten() for t in torch.meshgrid(ii, ii, indexing="ij")], 1).double()
    C = 0.09 * torch.exp(-torch.cdist(grid, grid) ** 2 / 8.0) + 1e-3 * torch.eye(d, dtype=torch.float64)
    prior = CorrelatedGaussian(torch.full((d,), 0.5, dtype=torch.float64), C)
    sy = 0.02
    op = Inpainting((1, SIZE, SIZE), mask=0.3, noise_std=sy, seed=0)
    rows = torch.eye(d, dtype=torch.float64)[op.mask.flatten().bool()]
    kw = dict(steps=30, schedule="karras", eta=0.7, lambda_=1.0, cg_iters=10, sigma_max=3.0, tail_average=15,
              sigma_hold=0.6)
    err = {0.0: 0.0, 1.0: 0.0}
    for t in range(3):
        g = torch.Generator().manual_seed(10 + t)
        x0 = (prior.m + torch.linalg.cholesky(C) @ torch.randn(d, generator=g, dtype=torch.float64)).reshape(1, 1, SIZE, SIZE)
        y = op.A(x0.float()) + sy * torch.randn(1, 1, SIZE, SIZE, generator=g)
        G = rows @ C @ rows.T + sy**2 * torch.eye(len(rows), dtype=torch.float64)
        mean = prior.m + C @ rows.T @ torch.linalg.solve(G, y.flatten()[op.mask.flatten().bool()].double() - rows @ prior.m)
        for zeta in err:
            for seed in range(3):
                r = DDS(prior, pigdm=zeta, **kw).reconstruct(y, op, seed=seed, progress=False).mean
                err[zeta] += float((r.double().flatten() - mean).pow(2).mean())
    assert err[1.0] < 0.5 * err[0.0], err  # measured: 0.23x


def test_the_data_variance_is_the_priors_sigma_data():
    """``v = sigma_data^2``: a Gaussian's own variance, a mixture's marginal variance, EDM's 0.5 for a prior without."""
    from invdiff.priors import GaussianMixturePrior
    from invdiff.solvers.pigdm import pigdm_data_var

    assert pigdm_data_var(GaussianPrior(torch.full((1, SIZE, SIZE), 0.4), 0.3)) == pytest.approx(0.09)
    mix = GaussianMixturePrior(torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2)]), 0.1)
    assert mix.sigma_data ** 2 == pytest.approx(0.01 + 0.25)  # component variance + the means' spread
    assert pigdm_data_var(torch.nn.Identity()) == pytest.approx(0.25)


def test_pigdm_refusals():
    prior = GaussianPrior(torch.full((1, SIZE, SIZE), 0.4), 0.3)
    op = Inpainting((1, SIZE, SIZE), mask=0.5, noise_std=0.01, seed=0)
    y = op.A(torch.rand(1, 1, SIZE, SIZE))
    with pytest.raises(ValueError, match="pigdm: expected"):
        DDS(prior, pigdm=-1.0)
    with pytest.raises(ValueError, match="pigdm_below: expected"):
        DDS(prior, pigdm=1.0, pigdm_below=-0.1)
    from invdiff.operators import CT

    ct = CT((1, 2, SIZE, SIZE), n_views=4, noise_std=0.01)
    with pytest.raises(ValueError, match="2D images only"):
        DDS(prior, steps=4, pigdm=1.0, chunk=2).reconstruct(ct.A(torch.rand(1, 1, 2, SIZE, SIZE)), ct, progress=False)
