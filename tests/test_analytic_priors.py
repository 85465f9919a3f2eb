"""Analytic priors: exact mixture denoiser, exact linear-Gaussian posterior, EM fit.

Each quantity is checked against an independent computation: dense Gaussians from scipy, Tweedie's
formula by autograd, numerical integration on a grid, Monte Carlo from the joint distribution.
"""

import math

import deepinv as dinv
import numpy as np
import pytest
import scipy.stats
import torch

from invdiff import priors
from invdiff.priors.analytic import GaussianMixturePrior, GaussianPrior


def random_mixture(image_shape, K=3, diagonal=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(K, *image_shape, generator=g, dtype=torch.float64)
    if diagonal:
        stds = 0.3 + torch.rand(K, *image_shape, generator=g, dtype=torch.float64)
    else:
        stds = 0.3 + torch.rand(K, generator=g, dtype=torch.float64)
    weights = 0.2 + torch.rand(K, generator=g, dtype=torch.float64)
    return means, stds, weights / weights.sum()


def dense_denoiser(means, stds, weights, x, sigma):
    """Brute force in numpy: responsibilities from scipy's multivariate normal with dense covariances."""
    K = means.shape[0]
    m = means.reshape(K, -1).numpy()
    s = stds.numpy().reshape(K, -1)
    v = s**2 * np.ones_like(m)  # (K, 1) broadcasts for isotropic stds
    out = []
    for b, xb in enumerate(x.reshape(x.shape[0], -1).numpy()):
        s2 = float(sigma[b]) ** 2
        logp = np.array([math.log(weights[k]) + scipy.stats.multivariate_normal(m[k], np.diag(v[k] + s2)).logpdf(xb)
                         for k in range(K)])
        r = np.exp(logp - scipy.special.logsumexp(logp))
        out.append(sum(r[k] * (m[k] + v[k] / (v[k] + s2) * (xb - m[k])) for k in range(K)))
    return np.stack(out).reshape(x.shape)


@pytest.mark.parametrize("image_shape, diagonal", [((1, 2, 3), True), ((1, 2, 3), False), ((2, 2, 2, 1), True), ((5,), True)])
def test_mixture_denoiser_matches_dense_closed_form(image_shape, diagonal):
    means, stds, weights = random_mixture(image_shape, diagonal=diagonal)
    prior = GaussianMixturePrior(means, stds, weights)
    g = torch.Generator().manual_seed(1)
    x = 2 * torch.randn(4, *image_shape, generator=g, dtype=torch.float64)
    for sigma in (0.3, torch.tensor([0.01, 0.2, 1.0, 5.0], dtype=torch.float64)):
        sig = torch.as_tensor(sigma, dtype=torch.float64).expand(4)
        ref = dense_denoiser(means, stds, weights.numpy(), x, sig)
        np.testing.assert_allclose(prior(x, sigma).numpy(), ref, rtol=1e-5, atol=1e-5)
        # float32 in, float32 out, same numbers
        out32 = prior(x.float(), sigma)
        assert out32.dtype == torch.float32
        np.testing.assert_allclose(out32.double().numpy(), ref, rtol=1e-5, atol=1e-5)


def test_denoiser_is_tweedie_of_the_smoothed_density():
    """D(x, s) = x + s^2 grad log p_s(x), with grad by autograd of the mixture log density."""
    means, stds, weights = random_mixture((1, 2, 2), K=4)
    prior = GaussianMixturePrior(means, stds, weights)
    x = torch.randn(3, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2)).requires_grad_()
    s = 0.7
    comps = torch.distributions.Independent(torch.distributions.Normal(means, (stds**2 + s**2).sqrt()), 3)
    mix = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(weights), comps)
    (grad,) = torch.autograd.grad(mix.log_prob(x).sum(), x)
    np.testing.assert_allclose(prior(x, s).detach().numpy(), (x + s**2 * grad).detach().numpy(), rtol=1e-10, atol=1e-10)


def test_denoiser_is_differentiable():
    prior = GaussianMixturePrior(*random_mixture((3,), K=2))
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: prior(z, 0.4), (x,))


def test_denoiser_stable_at_small_sigma_and_large_dimension():
    K, shape = 3, (1, 64, 64)
    means = torch.stack([torch.full(shape, float(k)) for k in range(K)])
    prior = GaussianMixturePrior(means, torch.tensor([0.05, 0.1, 0.2]), torch.tensor([0.2, 0.3, 0.5]))
    x, labels = prior.sample(4, generator=torch.Generator().manual_seed(0), return_labels=True)
    m, v = prior.means[labels].float(), prior.stds[labels].float().reshape(4, 1, 1, 1) ** 2
    for sigma in (0.0, 1e-8, 1e-3, 1e-2):
        out = prior(x, sigma)
        assert torch.isfinite(out).all()
        # responsibilities are one-hot on the sampled component
        torch.testing.assert_close(out, m + v / (v + sigma**2) * (x - m), atol=1e-6, rtol=0)
    torch.testing.assert_close(prior(x, 0.0), x, atol=1e-6, rtol=0)
    # far from every mean (log-densities around -1e7): still finite, the nearest component wins
    far = torch.full((1, *shape), 50.0)
    out = prior(far, 0.01)
    expected = 2.0 + 0.2**2 / (0.2**2 + 0.01**2) * (50.0 - 2.0)
    torch.testing.assert_close(out, torch.full_like(far, expected), atol=1e-4, rtol=1e-6)


def test_gaussian_prior_closed_form_and_monte_carlo_tweedie():
    mean, std = torch.tensor([[0.5, -1.0]]), torch.tensor([[0.3, 2.0]])
    prior = GaussianPrior(mean, std)
    x = torch.tensor([[[1.0, 3.0]]]).reshape(1, 1, 2)
    s = 0.5
    np.testing.assert_allclose(prior(x, s).numpy(), (mean + std**2 / (std**2 + s**2) * (x - mean)).numpy(), rtol=1e-6)

    # Monte Carlo: E[x0 | x near x*] from joint samples of a 1-D two-component mixture
    mix = GaussianMixturePrior(torch.tensor([[-1.0], [1.5]]), torch.tensor([0.4, 0.7]), torch.tensor([0.4, 0.6]))
    g = torch.Generator().manual_seed(0)
    n, s, h = 1_000_000, 0.8, 0.02
    x0 = mix.sample(n, generator=g, dtype=torch.float64)[:, 0]
    xs = x0 + s * torch.randn(n, generator=g, dtype=torch.float64)
    for x_star in (-1.5, 0.0, 0.4, 2.0):
        sel = (xs - x_star).abs() < h
        mc = x0[sel].mean()
        se = x0[sel].std() / math.sqrt(int(sel.sum()))
        exact = mix(torch.tensor([[x_star]], dtype=torch.float64), s)[0, 0]
        assert abs(float(mc - exact)) < 4 * float(se) + 2e-3, (x_star, float(mc), float(exact), float(se))


class DenseOp(dinv.physics.LinearPhysics):
    """y = A x for a dense matrix A acting on flattened images."""

    def __init__(self, A, img_size, noise_std):
        super().__init__(noise_model=dinv.physics.GaussianNoise(sigma=noise_std))
        self.M, self.img_size = A, img_size

    def A(self, x, **kw):
        return (x.reshape(x.shape[0], -1).to(self.M.dtype) @ self.M.T)

    def A_adjoint(self, y, **kw):
        return (y @ self.M).reshape(y.shape[0], *self.img_size)


def brute_posterior(means, stds, weights, A, y, s_y):
    """Precision form in numpy: P_k = A^T A / s^2 + S_k^-1, mu_k = P_k^-1 (A^T y / s^2 + S_k^-1 m_k)."""
    K = means.shape[0]
    m = means.reshape(K, -1).numpy()
    v = (stds.reshape(K, -1).numpy() ** 2) * np.ones_like(m)
    A = A.numpy()
    out_w, out_mu, out_C = [], [], []
    for yb in y.numpy():
        logw, mus, Cs = [], [], []
        for k in range(K):
            P = A.T @ A / s_y**2 + np.diag(1 / v[k])
            C = np.linalg.inv(P)
            mus.append(C @ (A.T @ yb / s_y**2 + m[k] / v[k]))
            Cs.append(C)
            G = A @ np.diag(v[k]) @ A.T + s_y**2 * np.eye(A.shape[0])
            logw.append(math.log(weights[k]) + scipy.stats.multivariate_normal(A @ m[k], G).logpdf(yb))
        logw = np.array(logw)
        out_w.append(np.exp(logw - scipy.special.logsumexp(logw)))
        out_mu.append(np.stack(mus))
        out_C.append(np.stack(Cs))
    return np.stack(out_w), np.stack(out_mu), np.stack(out_C)


@pytest.mark.parametrize("diagonal", [True, False])
def test_posterior_matches_brute_force(diagonal):
    shape, K, M, s_y = (1, 3, 3), 3, 5, 0.4
    means, stds, weights = random_mixture(shape, K=K, diagonal=diagonal, seed=3)
    prior = GaussianMixturePrior(means, stds, weights)
    g = torch.Generator().manual_seed(4)
    A = torch.randn(M, 9, generator=g, dtype=torch.float64) / 3
    op = DenseOp(A, shape, s_y)
    x = prior.sample(2, generator=g, dtype=torch.float64)
    y = op.A(x) + s_y * torch.randn(2, M, generator=g, dtype=torch.float64)
    post = prior.posterior(op, y)  # noise_std from op.noise_model, which holds it in float32
    w, mu, C = brute_posterior(means, stds, weights.numpy(), A, y, float(op.noise_model.sigma))
    assert post.weights.shape == (2, K) and post.means.shape == (2, K, *shape) and post.covs.shape == (2, K, 9, 9)
    np.testing.assert_allclose(post.weights.numpy(), w, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(post.means.reshape(2, K, 9).numpy(), mu, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(post.covs.numpy(), C, rtol=1e-8, atol=1e-10)
    mean = (w[..., None] * mu).sum(1)
    np.testing.assert_allclose(post.mean().reshape(2, 9).numpy(), mean, rtol=1e-8, atol=1e-10)
    var = (w[..., None] * (np.diagonal(C, axis1=-2, axis2=-1) + mu**2)).sum(1) - mean**2
    np.testing.assert_allclose(post.var().reshape(2, 9).numpy(), var, rtol=1e-7, atol=1e-10)


def test_posterior_with_deepinv_inpainting_and_gaussian_prior():
    shape, s_y = (1, 4, 4), 0.1
    g = torch.Generator().manual_seed(5)
    op = dinv.physics.Inpainting(img_size=shape, mask=0.5, noise_model=dinv.physics.GaussianNoise(sigma=s_y),
                                 rng=torch.Generator().manual_seed(6))
    mean, std = torch.randn(shape, generator=g, dtype=torch.float64), 0.5 + torch.rand(shape, generator=g, dtype=torch.float64)
    prior = GaussianPrior(mean, std)
    y = op.A(prior.sample(1, generator=g)) + s_y * torch.randn(1, *shape, generator=g)
    post = prior.posterior(op, y)  # noise_std read from op.noise_model
    A = torch.diag(op.mask.reshape(-1).double())
    w, mu, C = brute_posterior(mean[None], std[None], [1.0], A, y.reshape(1, -1).double(), s_y)
    np.testing.assert_allclose(post.mean().reshape(1, -1).numpy(), mu[:, 0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(post.covs[0, 0].numpy(), C[0, 0], rtol=1e-6, atol=1e-9)


def test_posterior_1d_matches_numerical_integration():
    prior = GaussianMixturePrior(torch.tensor([[-1.0], [2.0]]), torch.tensor([0.5, 1.0]), torch.tensor([0.6, 0.4]))
    a, s_y, y_val = 1.5, 0.8, 1.0
    op = DenseOp(torch.tensor([[a]], dtype=torch.float64), (1,), s_y)
    post = prior.posterior(op, torch.tensor([[y_val]]))
    grid = np.linspace(-12, 12, 400_001)
    dx = grid[1] - grid[0]
    lik = scipy.stats.norm(a * grid, s_y).pdf(y_val)
    joint_k = np.stack([0.6 * scipy.stats.norm(-1, 0.5).pdf(grid), 0.4 * scipy.stats.norm(2, 1.0).pdf(grid)]) * lik
    Z = joint_k.sum() * dx
    w = joint_k.sum(1) * dx / Z
    p = joint_k.sum(0) / Z
    mean = (grid * p).sum() * dx
    var = ((grid - mean) ** 2 * p).sum() * dx
    np.testing.assert_allclose(post.weights[0].numpy(), w, rtol=1e-6)
    np.testing.assert_allclose(float(post.mean()), mean, rtol=1e-6)
    np.testing.assert_allclose(float(post.var()), var, rtol=1e-6)


def test_posterior_samples_have_the_right_moments():
    shape, K, M, s_y = (4,), 2, 2, 0.5
    means = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.8, -0.6, 0.5, 0.3]], dtype=torch.float64)
    stds = torch.tensor([[0.5, 0.4, 0.6, 0.5], [0.7, 0.5, 0.4, 0.6]], dtype=torch.float64)
    prior = GaussianMixturePrior(means, stds, torch.tensor([0.5, 0.5]))
    A = torch.tensor([[1.0, 0.5, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0]], dtype=torch.float64)
    op = DenseOp(A, shape, s_y)
    post = prior.posterior(op, torch.tensor([[0.4, 0.2]], dtype=torch.float64))
    w = post.weights[0]
    assert 0.2 < float(w[0]) < 0.8  # a genuinely bimodal posterior
    n = 40_000
    xs, labels = post.sample(n, generator=torch.Generator().manual_seed(7), return_labels=True)
    assert xs.shape == (n, 1, 4) and labels.shape == (n, 1)
    freq = float((labels == 0).double().mean())
    assert abs(freq - float(w[0])) < 4 * math.sqrt(float(w[0] * w[1]) / n)
    # per-component mean and covariance
    for k in range(K):
        xk = xs[labels[:, 0] == k, 0]
        nk = xk.shape[0]
        Ck = post.covs[0, k]
        se = (torch.diagonal(Ck) / nk).sqrt()
        assert ((xk.mean(0) - post.means[0, k]).abs() < 4.5 * se).all()
        emp = torch.cov(xk.T)
        se_c = ((torch.diagonal(Ck)[:, None] * torch.diagonal(Ck)[None] + Ck**2) / nk).sqrt()
        assert ((emp - Ck).abs() < 4.5 * se_c).all(), (emp, Ck)
    # the whole mixture: mean and variance
    se = (post.var()[0] / n).sqrt()
    assert ((xs[:, 0].mean(0) - post.mean()[0]).abs() < 4.5 * se).all()
    torch.testing.assert_close(xs[:, 0].var(0), post.var()[0], rtol=0.05, atol=0)


def test_noiseless_posterior_is_the_small_noise_limit():
    shape = (1, 3, 3)
    means, stds, weights = random_mixture(shape, K=2, seed=8)
    prior = GaussianMixturePrior(means, stds, weights)
    op = dinv.physics.Inpainting(img_size=shape, mask=0.5, rng=torch.Generator().manual_seed(9))
    y = op.A(prior.sample(1, generator=torch.Generator().manual_seed(10), dtype=torch.float64))
    exact = prior.posterior(op, y, noise_std=0.0)
    near = prior.posterior(op, y, noise_std=1e-6)
    torch.testing.assert_close(exact.weights, near.weights, atol=1e-6, rtol=0)
    torch.testing.assert_close(exact.mean(), near.mean(), atol=1e-6, rtol=0)
    seen = op.mask.bool().expand(1, *shape)
    torch.testing.assert_close(exact.mean()[seen], y.double()[seen], atol=1e-10, rtol=0)
    assert float(exact.var()[seen].max()) < 1e-12
    s = exact.sample(5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(s[:, seen], y.double()[seen].expand(5, -1), atol=1e-9, rtol=0)


def test_fit_recovers_a_two_component_mixture():
    true = GaussianMixturePrior(torch.tensor([[-2.0, -1.0], [2.0, 1.5]]), torch.tensor([[0.5, 0.8], [1.0, 0.6]]),
                                torch.tensor([0.3, 0.7]))
    data = true.sample(4000, generator=torch.Generator().manual_seed(11))
    fitted = GaussianMixturePrior.fit(data, 2, iters=200, seed=0)
    order = torch.argsort(fitted.means[:, 0])
    assert (fitted.weights[order] - true.weights).abs().max() < 0.05
    assert (fitted.means[order] - true.means).abs().max() < 0.15
    assert (fitted.stds[order] - true.stds).abs().max() < 0.1
    iso = GaussianMixturePrior.fit(data, 2, iters=200, seed=1, covariance="isotropic")
    assert iso.isotropic and iso.stds.shape == (2,)
    assert (iso.weights[torch.argsort(iso.means[:, 0])] - true.weights).abs().max() < 0.05
    # k = 1: the data's pixel mean and variance (the Gaussian score approximation, diagonal)
    g = GaussianPrior.fit(data)
    torch.testing.assert_close(g.mean, data.double().mean(0))
    torch.testing.assert_close(g.std, data.double().std(0, unbiased=False))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="stds"):
        GaussianMixturePrior(torch.zeros(2, 3), torch.ones(3))
    with pytest.raises(ValueError, match="stds"):
        GaussianMixturePrior(torch.zeros(2, 3), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="weights"):
        GaussianMixturePrior(torch.zeros(2, 3), 1.0, torch.tensor([0.5, -0.5]))
    with pytest.raises(ValueError, match="means"):
        GaussianMixturePrior(torch.tensor(1.0), 1.0)
    with pytest.raises(ValueError, match="NaN|non-finite"):
        GaussianPrior(torch.tensor([float("nan")]), 1.0)
    with pytest.raises(ValueError, match="std"):
        GaussianPrior(torch.zeros(1, 4, 4), torch.ones(4, 4))
    prior = GaussianPrior(torch.zeros(1, 4, 4), 1.0)
    with pytest.raises(ValueError, match="x: shape"):
        prior(torch.zeros(2, 1, 4, 5), 0.1)
    with pytest.raises(ValueError, match="sigma"):
        prior(torch.zeros(2, 1, 4, 4), -0.1)
    with pytest.raises(ValueError, match="d <= 4096"):
        GaussianPrior(torch.zeros(1, 65, 64), 1.0).posterior(dinv.physics.Inpainting(img_size=(1, 65, 64), mask=0.5),
                                                             torch.zeros(1, 1, 65, 64))
    with pytest.raises(ValueError, match="y: shape"):
        prior.posterior(dinv.physics.Inpainting(img_size=(1, 4, 4), mask=0.5), torch.zeros(1, 1, 4, 5), noise_std=0.1)
    with pytest.raises(ValueError, match="noise_std"):
        prior.posterior(dinv.physics.Inpainting(img_size=(1, 4, 4), mask=0.5), torch.zeros(1, 1, 4, 4), noise_std=-1.0)
    with pytest.raises(ValueError, match="k:"):
        GaussianMixturePrior.fit(torch.zeros(3, 2), 5)


def test_exported_and_attributes():
    assert priors.GaussianPrior is GaussianPrior and priors.GaussianMixturePrior is GaussianMixturePrior
    prior = GaussianMixturePrior(torch.zeros(2, 1, 4, 4), torch.tensor([1.0, 3.0]))
    assert isinstance(prior, dinv.models.Denoiser)
    assert prior.data_range is None and prior.sigma_min == 0.002 and prior.sigma_max == pytest.approx(80 * math.sqrt(5.0))  # mixture std sqrt((1 + 9) / 2)
    assert prior.sample(5, generator=torch.Generator().manual_seed(0)).shape == (5, 1, 4, 4)
