"""Analytic priors with exact denoisers: a Gaussian and a mixture of Gaussians (isotropic or diagonal).

For ``x0 ~ sum_k w_k N(m_k, diag(s_k^2))`` and ``x = x0 + sigma n`` the denoiser is exact::

    r_k(x)   ∝ w_k N(x; m_k, diag(s_k^2 + sigma^2))                          (responsibilities)
    D(x, s)  = E[x0 | x] = sum_k r_k(x) [m_k + s_k^2 / (s_k^2 + sigma^2) (x - m_k)]

and so is the posterior for a linear operator ``y = A x0 + s_y e`` with Gaussian noise
(:meth:`GaussianMixturePrior.posterior`), which is again a mixture::

    G_k   = A S_k A^T + s_y^2 I                 S_k = diag(s_k^2)
    mu_k  = m_k + S_k A^T G_k^{-1} (y - A m_k)  C_k = S_k - S_k A^T G_k^{-1} A S_k
    w'_k  ∝ w_k N(y; A m_k, G_k)

(the precision form ``C_k^{-1} = A^T A / s_y^2 + S_k^{-1}``, ``mu_k = C_k (A^T y / s_y^2 + S_k^{-1} m_k)``
is the same by the Woodbury identity; the form above also holds for ``s_y = 0``). These priors are the
ground truth of the solver tests and, fitted by EM (:meth:`GaussianMixturePrior.fit`), the Gaussian /
mixture score approximation of a data set. All arithmetic is in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import deepinv as dinv
import torch
from torch import Tensor

from invdiff.device import place
from invdiff.utils import as_sigma, check_finite

_LOG2PI = math.log(2 * math.pi)
MAX_POSTERIOR_DIM = 4096


def _as_float64(name: str, value) -> Tensor:
    t = torch.as_tensor(value)
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"{name}: expected real numbers, got dtype {t.dtype}")
    t = t.to(torch.float64)
    check_finite(name, t)
    return t


class GaussianMixturePrior(dinv.models.Denoiser):
    r"""Mixture of Gaussians with isotropic or diagonal covariances, and its exact denoiser.

    Parameters
    ----------
    means : Tensor
        ``(K, *image_shape)``; the shape after ``K`` is the image shape the prior accepts:
        ``(C, H, W)``, ``(C, D, H, W)`` or a flat ``(d,)``.
    stds : Tensor, float or sequence
        Positive component standard deviations: ``(K,)`` (isotropic, ``s_k I``), or
        ``(K, *image_shape)`` (diagonal); a scalar is shared by all components.
    weights : Tensor or sequence, optional
        ``(K,)`` non-negative mixture weights (normalised here); uniform by default.
    sigma_min, sigma_max : float, optional
        Noise range for samplers; default ``0.002`` and ``80 max(1, sd)``, with ``sd`` the largest
        pixel-wise standard deviation of the mixture.
    data_range : tuple of float, optional
        Intensity range used by solvers that clip (``None``: no clipping, the default, since a
        Gaussian has unbounded support).
    device : str or torch.device, optional
        Where its buffers live (``None``: the CPU; solvers move it to the measurement's device).

    Example
    -------
    >>> prior = GaussianMixturePrior(torch.stack([torch.zeros(1, 4, 4), torch.ones(1, 4, 4)]), [0.1, 0.2], [0.3, 0.7])
    >>> prior(torch.randn(2, 1, 4, 4), 0.5).shape
    torch.Size([2, 1, 4, 4])
    >>> prior.sample(3, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3, 1, 4, 4])
    """

    def __init__(self, means, stds, weights=None, sigma_min: float | None = None, sigma_max: float | None = None,
                 data_range: tuple[float, float] | None = None, device: str | torch.device | None = None):
        super().__init__()
        m = _as_float64("means", means)
        if m.ndim < 2:
            raise ValueError(f"means: expected shape (K, *image_shape) with K >= 1, got shape {tuple(m.shape)}")
        K, image_shape = m.shape[0], tuple(m.shape[1:])
        d = math.prod(image_shape)
        s = _as_float64("stds", stds)
        if s.ndim == 0:
            s = s.expand(K)
        if tuple(s.shape) == (K,):
            isotropic = True
            var = (s**2)[:, None].expand(K, d).clone()
        elif tuple(s.shape) == (K, *image_shape):
            isotropic = False
            var = (s**2).reshape(K, d)
        else:
            raise ValueError(f"stds: expected a scalar, shape ({K},) or shape {(K, *image_shape)} to match means, "
                             f"got shape {tuple(s.shape)}")
        if not (s > 0).all():
            raise ValueError(f"stds: expected positive standard deviations, got minimum {float(s.min())}")
        w = torch.full((K,), 1.0 / K, dtype=torch.float64) if weights is None else _as_float64("weights", weights)
        if tuple(w.shape) != (K,) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights: expected {K} non-negative numbers with a positive sum, got {w.tolist()}")
        self.image_shape = image_shape
        self.isotropic = isotropic
        self.register_buffer("m", m.reshape(K, d))
        self.register_buffer("var", var)
        self.register_buffer("log_w", torch.log(w / w.sum()))
        if sigma_max is None:
            mix_mean = (self.weights[:, None] * self.m).sum(0)
            mix_var = (self.weights[:, None] * (self.var + (self.m - mix_mean) ** 2)).sum(0)
            sigma_max = 80.0 * max(1.0, float(mix_var.max().sqrt()))
        self.sigma_min = 0.002 if sigma_min is None else float(sigma_min)
        self.sigma_max = float(sigma_max)
        self.data_range = None if data_range is None else tuple(float(v) for v in data_range)
        place(self, device)

    # ---------------------------------------------------------------- basic properties
    @property
    def K(self) -> int:
        return self.m.shape[0]

    @property
    def dim(self) -> int:
        return self.m.shape[1]

    @property
    def weights(self) -> Tensor:
        """``(K,)`` mixture weights."""
        return self.log_w.double().exp()

    @property
    def means(self) -> Tensor:
        """``(K, *image_shape)`` component means (float64)."""
        return self.m.double().reshape(self.K, *self.image_shape)

    @property
    def stds(self) -> Tensor:
        """``(K,)`` if isotropic, else ``(K, *image_shape)`` component standard deviations (float64)."""
        s = self.var.double().sqrt()
        return s[:, 0] if self.isotropic else s.reshape(self.K, *self.image_shape)

    @property
    def sigma_data(self) -> float:
        """The data std: the root of the mixture's per-pixel marginal variance averaged over pixels,
        ``sum_k w_k (s_k^2 + m_k^2) - (sum_k w_k m_k)^2`` (EDM's ``sigma_data``; used by Pi-GDM's ``r^2``)."""
        w, m, v = self.weights[:, None], self.m.double(), self.var.double().expand(self.K, self.dim)
        var = (w * (v + m * m)).sum(0) - (w * m).sum(0) ** 2
        return float(var.mean().sqrt())

    def _check_x(self, x: Tensor) -> None:
        if not torch.is_tensor(x):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        if tuple(x.shape[1:]) != self.image_shape or x.ndim != len(self.image_shape) + 1:
            raise ValueError(f"x: shape {tuple(x.shape)} does not fit the prior; expected (B, {', '.join(map(str, self.image_shape))})")

    # ---------------------------------------------------------------- the exact denoiser
    def log_responsibilities(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``(B, K)`` log ``r_k(x)`` for ``x = x0 + sigma n`` (float64, normalised by logsumexp)."""
        self._check_x(x)
        s2 = as_sigma(sigma, x).to(torch.float64)[:, None] ** 2  # (B, 1)
        z = x.reshape(x.shape[0], -1).to(torch.float64)
        logits = []
        for k in range(self.K):  # loop over components: memory O(B d), not O(B K d)
            v = self.var[k].double() + s2  # (B, d)
            quad = ((z - self.m[k].double()) ** 2 / v).sum(1)
            logits.append(self.log_w[k].double() - 0.5 * (quad + v.log().sum(1) + self.dim * _LOG2PI))
        logits = torch.stack(logits, 1)
        return logits - torch.logsumexp(logits, 1, keepdim=True)

    def forward(self, x: Tensor, sigma: Tensor | float, *args, **kwargs) -> Tensor:
        """``D(x, sigma) = sum_k r_k(x) [m_k + s_k^2 / (s_k^2 + sigma^2) (x - m_k)]`` (differentiable in ``x``)."""
        sig = as_sigma(sigma, x)
        if (sig < 0).any():
            raise ValueError(f"sigma: expected non-negative noise levels, got {sig.tolist()}")
        r = self.log_responsibilities(x, sig).exp()  # (B, K)
        s2 = sig.to(torch.float64)[:, None] ** 2
        z = x.reshape(x.shape[0], -1).to(torch.float64)
        out = torch.zeros_like(z)
        for k in range(self.K):
            vk, mk = self.var[k].double(), self.m[k].double()
            out = out + r[:, k : k + 1] * (mk + vk / (vk + s2) * (z - mk))
        return out.reshape(x.shape).to(x.dtype)

    # ---------------------------------------------------------------- sampling and fitting
    def sample(self, n: int, generator: torch.Generator | None = None, return_labels: bool = False,
               dtype: torch.dtype = torch.float32):
        """``n`` prior samples ``(n, *image_shape)`` (and their ``(n,)`` component labels if asked)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n: expected a positive integer, got {n!r}")
        dev = self.m.device
        labels = torch.multinomial(self.weights.cpu(), n, replacement=True, generator=generator).to(dev)
        noise = torch.randn(n, self.dim, generator=generator, dtype=torch.float64, device=dev)
        x = self.m[labels].double() + self.var[labels].double().sqrt() * noise
        x = x.reshape(n, *self.image_shape).to(dtype)
        return (x, labels) if return_labels else x

    @classmethod
    def fit(cls, images: Tensor, k: int, iters: int = 100, seed: int = 0, covariance: str = "diag",
            min_std: float | None = None, tol: float = 1e-8, **kwargs) -> "GaussianMixturePrior":
        """Fit ``k`` components to ``images`` ``(N, *image_shape)`` by EM (maximum likelihood).

        E-step: ``r_nk ∝ w_k N(x_n; m_k, S_k)``; M-step: ``w_k = mean_n r_nk``,
        ``m_k = sum_n r_nk x_n / sum_n r_nk``, ``S_k`` the responsibility-weighted variance per pixel
        (``covariance="diag"``) or averaged over pixels (``"isotropic"``), floored at ``min_std^2``
        (default ``1e-3`` times the data's overall std) so that no component collapses.
        Initialisation: means at ``k`` distinct images drawn with ``seed``, variances the data's.

        With ``k = 1`` and ``"diag"`` this is the data's pixel mean and variance: a Gaussian score
        approximation with a diagonal covariance (the Gaussian score approximation of
        Wang & Vastola uses the full covariance, which this class does not represent).
        ``kwargs`` go to the constructor (``sigma_min``, ``sigma_max``, ``data_range``).
        """
        if not torch.is_tensor(images) or images.ndim < 2:
            raise ValueError(f"images: expected a tensor (N, *image_shape), got {getattr(images, 'shape', type(images))}")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= images.shape[0]:
            raise ValueError(f"k: expected an integer between 1 and the number of images ({images.shape[0]}), got {k!r}")
        if covariance not in ("diag", "isotropic"):
            raise ValueError(f"covariance: expected 'diag' or 'isotropic', got {covariance!r}")
        check_finite("images", images)
        N, image_shape = images.shape[0], tuple(images.shape[1:])
        X = images.reshape(N, -1).to(torch.float64)
        floor = (1e-3 * float(X.std()) if min_std is None else float(min_std)) ** 2
        floor = max(floor, 1e-24)
        g = torch.Generator().manual_seed(int(seed))
        m = X[torch.randperm(N, generator=g)[:k].to(X.device)].clone()
        var = X.var(0, unbiased=False).clamp_min(floor).expand(k, -1).clone()
        if covariance == "isotropic":
            var = var.mean(1, keepdim=True).expand(k, X.shape[1]).clone()
        log_w = torch.full((k,), -math.log(k), dtype=torch.float64, device=X.device)
        prev = -math.inf
        for _ in range(iters):
            # E-step
            logits = torch.stack([log_w[j] - 0.5 * (((X - m[j]) ** 2 / var[j]).sum(1) + var[j].log().sum() + X.shape[1] * _LOG2PI)
                                  for j in range(k)], 1)
            ll = torch.logsumexp(logits, 1)
            r = (logits - ll[:, None]).exp()  # (N, k)
            # M-step
            nk = r.sum(0).clamp_min(1e-300)
            log_w = torch.log(nk / N)
            m = (r.T @ X) / nk[:, None]
            var = (r.T @ X**2) / nk[:, None] - m**2
            if covariance == "isotropic":
                var = var.mean(1, keepdim=True).expand(k, X.shape[1])
            var = var.clamp_min(floor)
            cur = float(ll.mean())
            if abs(cur - prev) < tol * max(1.0, abs(cur)):
                break
            prev = cur
        stds = var[:, 0].sqrt() if covariance == "isotropic" else var.sqrt().reshape(k, *image_shape)
        return cls(m.reshape(k, *image_shape), stds, log_w.exp(), **kwargs)

    # ---------------------------------------------------------------- exact posterior
    def posterior(self, op, y: Tensor, noise_std: float | None = None) -> "GaussianMixturePosterior":
        """Exact posterior ``p(x0 | y)`` for ``y = op.A(x0) + noise_std e``, ``e ~ N(0, I)``.

        ``op.A`` must be linear; it is made dense by applying it to the identity basis, so the image
        dimension ``d`` is limited to :data:`MAX_POSTERIOR_DIM`. ``noise_std`` defaults to
        ``op.noise_std`` or ``op.noise_model.sigma``; ``0`` is allowed (pseudo-inverse on the range of
        ``A``). ``y`` is ``(B, *measurement_shape)``; every measurement gets its own posterior.
        """
        if self.dim > MAX_POSTERIOR_DIM:
            raise ValueError(f"posterior: the image has d = {self.dim} pixels; the exact posterior builds dense "
                             f"d x d matrices and is limited to d <= {MAX_POSTERIOR_DIM}")
        if not torch.is_tensor(y):
            raise TypeError(f"y: expected a torch.Tensor measurement, got {type(y).__name__}")
        check_finite("y", y)
        s_y = _noise_std(op, noise_std)
        dev = self.m.device
        A = dense_matrix(op, self.image_shape, device=dev)  # (M, d)
        M = A.shape[0]
        if y.ndim < 1 or y[0].numel() != M:
            raise ValueError(f"y: shape {tuple(y.shape)} does not fit the operator; expected (B, ...) with {M} "
                             f"values per measurement (op.A of an image of shape {self.image_shape})")
        Y = y.reshape(y.shape[0], M).to(device=dev, dtype=torch.float64)
        eye = torch.eye(M, dtype=torch.float64, device=dev)
        means, gains, log_ev, ranks = [], [], [], []
        for k in range(self.K):
            v, mk = self.var[k].double(), self.m[k].double()
            AS = A * v  # A S_k, (M, d)
            G = AS @ A.T + s_y**2 * eye
            lam, U = torch.linalg.eigh(G)
            keep = lam > lam.max().clamp_min(1e-300) * M * torch.finfo(torch.float64).eps
            lam, U = lam[keep], U[:, keep]
            W = (U / lam) @ (U.T @ AS)  # G^+ A S_k, (M, d)
            r = Y - mk @ A.T  # (B, M)
            means.append(mk + r @ W)
            gains.append(W)
            quad = ((r @ U) ** 2 / lam).sum(1)
            log_ev.append(-0.5 * (quad + lam.log().sum() + lam.numel() * _LOG2PI))
            ranks.append(lam.numel())
        if len(set(ranks)) > 1:
            raise ValueError(f"noise_std: with noise_std={s_y} the components' evidence matrices A S_k A^T have "
                             f"different numerical ranks {ranks}; use a positive noise_std")
        logits = self.log_w.double()[None] + torch.stack(log_ev, 1)
        log_weights = logits - torch.logsumexp(logits, 1, keepdim=True)
        return GaussianMixturePosterior(
            log_weights=log_weights, component_means=torch.stack(means, 1), gains=torch.stack(gains),
            A=A, y=Y, prior_means=self.m.double(), prior_vars=self.var.double(), noise_std=s_y,
            image_shape=self.image_shape)


class GaussianPrior(GaussianMixturePrior):
    r"""Gaussian prior ``N(m, diag(s^2))`` with exact denoiser ``D(x, sigma) = m + s^2 / (s^2 + sigma^2) (x - m)``.

    The one-component case of :class:`GaussianMixturePrior` (posterior, sampling and all).

    Parameters
    ----------
    mean : Tensor
        ``image_shape``, e.g. ``(C, H, W)``.
    std : float or Tensor
        A positive scalar (isotropic) or a tensor shaped like ``mean`` (diagonal).

    Example
    -------
    >>> prior = GaussianPrior(torch.zeros(1, 8, 8), 0.5)
    >>> torch.allclose(prior(torch.ones(1, 1, 8, 8), 0.5), torch.full((1, 1, 8, 8), 0.5))
    True
    """

    def __init__(self, mean, std, **kwargs):
        mean = _as_float64("mean", mean)
        std = _as_float64("std", std)
        if std.ndim > 0 and std.shape != mean.shape:
            raise ValueError(f"std: expected a scalar or shape {tuple(mean.shape)} like mean, got shape {tuple(std.shape)}")
        super().__init__(mean[None], std[None] if std.ndim > 0 else std, None, **kwargs)

    @property
    def mean(self) -> Tensor:
        return self.means[0]

    @property
    def std(self) -> Tensor:
        return self.stds[0]

    @classmethod
    def fit(cls, images: Tensor, covariance: str = "diag", min_std: float | None = None, **kwargs) -> "GaussianPrior":
        """Pixel-wise mean and std of ``images`` ``(N, *image_shape)`` (``"isotropic"``: one std)."""
        gm = GaussianMixturePrior.fit(images, 1, iters=1, covariance=covariance, min_std=min_std)
        std = gm.stds[0]
        return cls(gm.means[0], std, **kwargs)


def _noise_std(op, noise_std) -> float:
    if noise_std is None:
        noise_std = getattr(op, "noise_std", None)
        if noise_std is None:
            noise_std = getattr(getattr(op, "noise_model", None), "sigma", None)
        if noise_std is None:
            raise ValueError("noise_std: the operator states no Gaussian noise level (op.noise_std or "
                             "op.noise_model.sigma); pass noise_std=")
    try:
        s = float(torch.as_tensor(noise_std).reshape(-1)[0]) if torch.as_tensor(noise_std).numel() == 1 else None
    except (TypeError, ValueError, RuntimeError):
        s = None
    if s is None or not math.isfinite(s) or s < 0:
        raise ValueError(f"noise_std: expected one non-negative finite number, got {noise_std!r}")
    return s


def dense_matrix(op, image_shape: tuple[int, ...], device=None, chunk: int = 256) -> Tensor:
    """The ``(M, d)`` float64 matrix of the linear map ``op.A`` on images of ``image_shape``.

    Built column by column from the identity basis (in chunks of ``chunk`` images). Tries float64
    first and falls back to float32 for operators that only run in single precision.
    """
    d = math.prod(image_shape)
    cols = []
    for start in range(0, d, chunk):
        idx = torch.arange(start, min(start + chunk, d), device=device)
        E = torch.zeros(len(idx), d, dtype=torch.float64, device=device)
        E[torch.arange(len(idx), device=device), idx] = 1.0
        E = E.reshape(len(idx), *image_shape)
        with torch.no_grad():
            try:
                out = op.A(E)
            except (RuntimeError, TypeError):
                out = op.A(E.float())
        cols.append(out.reshape(len(idx), -1).to(torch.float64))
    return torch.cat(cols, 0).T.contiguous()


@dataclass(frozen=True, eq=False)
class GaussianMixturePosterior:
    r"""The exact posterior of a :class:`GaussianMixturePrior` given ``B`` linear-Gaussian measurements.

    A mixture per measurement ``b``: ``sum_k w_bk N(mu_bk, C_k)`` (the covariances do not depend on
    ``y``). All tensors are float64 on the prior's device.

    Attributes
    ----------
    weights : Tensor
        ``(B, K)`` posterior component weights.
    means : Tensor
        ``(B, K, *image_shape)`` component means ``mu_bk``.
    covs : Tensor
        ``(B, K, d, d)`` component covariances (a broadcast view of ``(K, d, d)``).
    """

    log_weights: Tensor  # (B, K)
    component_means: Tensor  # (B, K, d)
    gains: Tensor  # (K, M, d): G_k^+ A S_k
    A: Tensor  # (M, d)
    y: Tensor  # (B, M)
    prior_means: Tensor  # (K, d)
    prior_vars: Tensor  # (K, d)
    noise_std: float
    image_shape: tuple

    @property
    def weights(self) -> Tensor:
        return self.log_weights.exp()

    @property
    def means(self) -> Tensor:
        B, K = self.log_weights.shape
        return self.component_means.reshape(B, K, *self.image_shape)

    @cached_property
    def _covs(self) -> Tensor:
        # C_k = S_k - S_k A^T G_k^+ A S_k = diag(v_k) - (A S_k)^T W_k
        AS = self.A[None] * self.prior_vars[:, None, :]
        return torch.diag_embed(self.prior_vars) - AS.transpose(1, 2) @ self.gains

    @property
    def covs(self) -> Tensor:
        B = self.log_weights.shape[0]
        return self._covs[None].expand(B, *self._covs.shape)

    def _diag_covs(self) -> Tensor:
        """``(K, d)`` diagonals of ``C_k`` without forming them."""
        AS = self.A[None] * self.prior_vars[:, None, :]
        return self.prior_vars - (AS * self.gains).sum(1)

    def mean(self) -> Tensor:
        """``(B, *image_shape)`` posterior mean ``sum_k w_k mu_k``."""
        mu = (self.weights[..., None] * self.component_means).sum(1)
        return mu.reshape(-1, *self.image_shape)

    def var(self) -> Tensor:
        """``(B, *image_shape)`` pixel-wise posterior variance ``sum_k w_k (diag C_k + mu_k^2) - mean^2``."""
        w = self.weights[..., None]
        mu = (w * self.component_means).sum(1)
        second = (w * (self._diag_covs()[None] + self.component_means**2)).sum(1)
        return (second - mu**2).clamp_min(0).reshape(-1, *self.image_shape)

    def sample(self, n: int, generator: torch.Generator | None = None, return_labels: bool = False):
        """``(n, B, *image_shape)`` exact posterior samples (and ``(n, B)`` component labels if asked).

        The layout matches ``Reconstruction.samples``. Each sample is drawn by Matheron's rule
        (perturb and update): ``x ~ N(m_k, S_k)``, ``e ~ N(0, s_y^2 I)``, then
        ``x + S_k A^T G_k^+ (y - A x - e)`` is a draw of ``N(mu_k, C_k)``.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n: expected a positive integer, got {n!r}")
        B, K = self.log_weights.shape
        M, d = self.A.shape
        dev = self.A.device
        labels = torch.multinomial(self.weights.cpu(), n, replacement=True, generator=generator).T.to(dev)  # (n, B)
        x = torch.randn(n, B, d, generator=generator, dtype=torch.float64, device=dev)
        e = torch.randn(n, B, M, generator=generator, dtype=torch.float64, device=dev)
        x = self.prior_means[labels] + self.prior_vars[labels].sqrt() * x
        resid = self.y[None] - x @ self.A.T - self.noise_std * e  # (n, B, M)
        for k in range(K):  # one gain matrix at a time: memory O(M d), not O(n B M d)
            sel = labels == k
            if sel.any():
                x[sel] = x[sel] + resid[sel] @ self.gains[k]
        x = x.reshape(n, B, *self.image_shape)
        return (x, labels) if return_labels else x
