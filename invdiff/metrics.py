"""Image-quality and distribution metrics: PSNR, SSIM, sliced Wasserstein, credible-interval coverage.

Image metrics work on batches: dimension 0 is the batch, dimension 1 the channels, the rest are
spatial (``(B, C, H, W)`` images or ``(B, C, D, H, W)`` volumes); each returns one value per
image as a ``(B,)`` float64 tensor. Unless ``data_range`` is given it is taken per image from the
reference, ``max(ref) - min(ref)`` (1 for a phantom in ``[0, 1]`` that reaches both ends).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["psnr", "ssim", "sliced_wasserstein", "central_intervals", "coverage"]


def _check_pair(x: Tensor, ref: Tensor, min_ndim: int = 3) -> None:
    for name, t in (("x", x), ("ref", ref)):
        if not torch.is_tensor(t):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.is_complex():
            raise TypeError(f"{name}: expected a real tensor (take the magnitude first), got dtype {t.dtype}")
    if x.shape != ref.shape:
        raise ValueError(f"x: shape {tuple(x.shape)} differs from ref's {tuple(ref.shape)}; expected equal shapes")
    if x.ndim < min_ndim:
        raise ValueError(f"x: expected a batch (B, C, H, W) or (B, C, D, H, W), got shape {tuple(x.shape)}")


def _data_range(data_range, ref: Tensor) -> Tensor:
    """``(B,)`` float64 data ranges: the argument, or ``max(ref) - min(ref)`` per image."""
    B = ref.shape[0]
    if data_range is None:
        flat = ref.detach().reshape(B, -1).to(torch.float64)
        L = flat.amax(1) - flat.amin(1)
        if (L <= 0).any():
            raise ValueError("data_range: the reference is constant in at least one image, so max(ref) - min(ref) = 0; "
                             "pass data_range explicitly")
        return L
    L = torch.as_tensor(data_range, dtype=torch.float64, device=ref.device).reshape(-1)
    if L.numel() == 1:
        L = L.expand(B)
    if L.numel() != B or not torch.isfinite(L).all() or (L <= 0).any():
        raise ValueError(f"data_range: expected a positive number or a ({B},) tensor of positive numbers, got {data_range!r}")
    return L


def psnr(x: Tensor, ref: Tensor, data_range: float | Tensor | None = None) -> Tensor:
    r"""Peak signal-to-noise ratio per image, in dB.

    .. math:: \mathrm{PSNR}(x, x^\ast) = 10 \log_{10} \frac{L^2}{\frac{1}{n}\sum_i (x_i - x^\ast_i)^2}

    Parameters
    ----------
    x, ref : Tensor
        Estimate and reference, same shape ``(B, C, ...)``; the mean runs over all but dimension 0.
    data_range : float or Tensor, optional
        ``L``; default ``max(ref) - min(ref)`` per image.

    Returns
    -------
    Tensor
        ``(B,)`` float64; ``inf`` where ``x == ref``.

    Example
    -------
    >>> ref = torch.zeros(1, 1, 4, 4); ref[..., 0, 0] = 1.0
    >>> round(float(psnr(ref + 0.1, ref)), 3)  # MSE = 0.01, L = 1
    20.0
    """
    _check_pair(x, ref)
    L = _data_range(data_range, ref)
    mse = (x.detach().to(torch.float64) - ref.detach().to(torch.float64)).pow(2).reshape(x.shape[0], -1).mean(1)
    return 10 * torch.log10(L**2 / mse)


def _gaussian_window(size: int, sigma: float, dtype, device) -> Tensor:
    r = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def _blur(x: Tensor, g: Tensor, spatial: int) -> Tensor:
    """Separable 'valid' Gaussian filter over the last ``spatial`` dims of ``x`` shaped (N, 1, ...)."""
    conv = (F.conv1d, F.conv2d, F.conv3d)[spatial - 1]
    for axis in range(spatial):
        shape = [1, 1] + [1] * spatial
        shape[2 + axis] = g.numel()
        x = conv(x, g.reshape(shape))
    return x


def ssim(x: Tensor, ref: Tensor, data_range: float | Tensor | None = None, win_size: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> Tensor:
    r"""Structural similarity (Wang, Bovik, Sheikh & Simoncelli 2004), Gaussian window, per image.

    Local statistics are weighted by an isotropic Gaussian window (``win_size`` taps, standard
    deviation ``sigma``, as in the paper), evaluated where the window fits inside the image
    ('valid'), with population (not sample) covariances:

    .. math:: \mathrm{SSIM} = \frac{(2\mu_x\mu_y + C_1)(2\sigma_{xy} + C_2)}
              {(\mu_x^2 + \mu_y^2 + C_1)(\sigma_x^2 + \sigma_y^2 + C_2)},\quad
              C_1 = (k_1 L)^2,\ C_2 = (k_2 L)^2

    and averaged over positions and channels. Images ``(B, C, H, W)`` use a 2D window; volumes
    ``(B, C, D, H, W)`` a 3D window (SSIM in 3D, not slice by slice; for slice-wise SSIM pass
    ``x.transpose(1, 2).flatten(0, 1)``). A spatial size smaller than ``win_size`` shrinks the
    window to the largest odd size that fits (at least 3). With ``win_size=7, sigma=1.5`` and a
    given ``data_range`` this is scikit-image's ``gaussian_weights=True`` variant with
    ``use_sample_covariance=False``.

    Parameters
    ----------
    x, ref : Tensor
        Estimate and reference, same real shape ``(B, C, H, W)`` or ``(B, C, D, H, W)``.
    data_range : float or Tensor, optional
        ``L``; default ``max(ref) - min(ref)`` per image.
    win_size : int
        Window taps per axis (odd).
    sigma : float
        Gaussian standard deviation in pixels.
    k1, k2 : float
        Stabilising constants of the paper.

    Returns
    -------
    Tensor
        ``(B,)`` float64, 1 where ``x == ref``.
    """
    _check_pair(x, ref, min_ndim=4)
    if x.ndim not in (4, 5):
        raise ValueError(f"x: expected (B, C, H, W) or (B, C, D, H, W), got shape {tuple(x.shape)}")
    if not isinstance(win_size, int) or win_size < 3 or win_size % 2 == 0:
        raise ValueError(f"win_size: expected an odd integer >= 3, got {win_size!r}")
    spatial = x.ndim - 2
    smallest = min(x.shape[2:])
    if smallest < 3:
        raise ValueError(f"x: spatial size {tuple(x.shape[2:])} too small for SSIM; expected every side >= 3")
    win = min(win_size, smallest if smallest % 2 else smallest - 1)
    L = _data_range(data_range, ref)
    B, C = x.shape[:2]
    X = x.detach().to(torch.float64).reshape(B * C, 1, *x.shape[2:])
    Y = ref.detach().to(torch.float64).reshape(B * C, 1, *x.shape[2:])
    g = _gaussian_window(win, sigma, torch.float64, x.device)
    mu_x, mu_y = _blur(X, g, spatial), _blur(Y, g, spatial)
    var_x = _blur(X * X, g, spatial) - mu_x**2
    var_y = _blur(Y * Y, g, spatial) - mu_y**2
    cov = _blur(X * Y, g, spatial) - mu_x * mu_y
    Lc = L.repeat_interleave(C).reshape(B * C, *([1] * (spatial + 1)))
    C1, C2 = (k1 * Lc) ** 2, (k2 * Lc) ** 2
    s = ((2 * mu_x * mu_y + C1) * (2 * cov + C2)) / ((mu_x**2 + mu_y**2 + C1) * (var_x + var_y + C2))
    return s.reshape(B, -1).mean(1)


def _as_samples(name: str, a: Tensor) -> Tensor:
    if not torch.is_tensor(a):
        raise TypeError(f"{name}: expected a torch.Tensor of samples (N, ...), got {type(a).__name__}")
    if a.ndim < 1 or a.shape[0] < 1:
        raise ValueError(f"{name}: expected at least one sample along dimension 0, got shape {tuple(a.shape)}")
    a = a.detach().to(torch.float64).reshape(a.shape[0], -1)
    if not torch.isfinite(a).all():
        raise ValueError(f"{name}: contains NaN or Inf")
    return a


def sliced_wasserstein(a: Tensor, b: Tensor, n_projections: int = 256, seed: int = 0) -> float:
    r"""Sliced 2-Wasserstein distance between two empirical distributions.

    .. math:: SW_2(\mu, \nu) = \Big( \mathbb{E}_{\theta \sim U(S^{d-1})}
              W_2^2(\theta_\# \mu, \theta_\# \nu) \Big)^{1/2}

    estimated with ``n_projections`` directions drawn uniformly on the sphere (seeded). Each
    one-dimensional :math:`W_2^2 = \int_0^1 (Q_a(u) - Q_b(u))^2 du` is computed exactly between the
    two empirical quantile (step) functions, integrating over the union of their breakpoints
    :math:`\{i/N_a\} \cup \{j/N_b\}`, so unequal sample sizes need no resampling (with equal sizes
    this is the sorted matching). For two Gaussians with identity covariance and means
    :math:`m_a, m_b` in :math:`\mathbb{R}^d`, :math:`W_2(\theta_\#\mu, \theta_\#\nu) =
    |\langle\theta, m_a - m_b\rangle|` and :math:`\mathbb{E}\,\theta\theta^T = I/d` give
    :math:`SW_2 = |m_a - m_b| / \sqrt{d}` (:math:`|m_a - m_b|` in one dimension).

    Parameters
    ----------
    a, b : Tensor
        Samples ``(N_a, ...)`` and ``(N_b, ...)``; everything after dimension 0 is flattened to
        ``d`` features (images become vectors), and both must give the same ``d``.
    n_projections : int
        Number of random directions (ignored when ``d = 1``).
    seed : int
        Seed of the directions.

    Returns
    -------
    float
    """
    A, Bm = _as_samples("a", a), _as_samples("b", b)
    if A.shape[1] != Bm.shape[1]:
        raise ValueError(f"b: samples have {Bm.shape[1]} features, a's have {A.shape[1]}; expected the same dimension")
    if isinstance(n_projections, bool) or not isinstance(n_projections, int) or n_projections < 1:
        raise ValueError(f"n_projections: expected a positive integer, got {n_projections!r}")
    d = A.shape[1]
    if d == 1:
        theta = torch.ones(1, 1, dtype=torch.float64, device=A.device)
    else:
        g = torch.Generator(device="cpu").manual_seed(int(seed))
        theta = torch.randn(d, n_projections, generator=g, dtype=torch.float64).to(A.device)
        theta = theta / theta.norm(dim=0, keepdim=True)
    pa, _ = (A @ theta).sort(dim=0)  # (N_a, P) sorted projections
    pb, _ = (Bm @ theta).sort(dim=0)
    Na, Nb = pa.shape[0], pb.shape[0]
    # breakpoints of both quantile functions; equal rationals give bit-equal floats (correct rounding)
    u = torch.cat([torch.arange(1, Na + 1, dtype=torch.float64) / Na,
                   torch.arange(1, Nb + 1, dtype=torch.float64) / Nb]).unique().to(A.device)
    w = torch.diff(u, prepend=u.new_zeros(1))
    mid = u - w / 2
    ia = (mid * Na).floor().long().clamp_(0, Na - 1)
    ib = (mid * Nb).floor().long().clamp_(0, Nb - 1)
    w2 = (w[:, None] * (pa[ia] - pb[ib]) ** 2).sum(0)  # (P,) squared W2 per direction
    return math.sqrt(float(w2.mean()))


def central_intervals(samples: Tensor, levels) -> tuple[Tensor, Tensor]:
    r"""Per-element central credible intervals of ``samples`` ``(S, ...)`` at each of ``levels``, from one sort.

    ``[q_{(1-p)/2}, q_{(1+p)/2}]`` with the quantiles linearly interpolated at position ``q (S - 1)`` between
    order statistics (as ``torch.quantile``, without its input-size limit). Returns ``(lower, upper)``, each
    ``(len(levels), ...)`` float64.
    """
    S = samples.shape[0]
    srt, _ = samples.detach().to(torch.float64).sort(dim=0)

    def quantile(q: float) -> Tensor:  # linear interpolation at position q (S - 1)
        pos = q * (S - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, S - 1)
        return srt[lo] + (pos - lo) * (srt[hi] - srt[lo])

    lower = torch.stack([quantile((1 - p) / 2) for p in levels])
    upper = torch.stack([quantile((1 + p) / 2) for p in levels])
    return lower, upper


def coverage(samples: Tensor, truth: Tensor, level: float = 0.9) -> float:
    r"""Fraction of pixels whose true value lies in the samples' central credible interval.

    For every pixel the interval is ``[q_{(1-level)/2}, q_{(1+level)/2}]`` of the samples
    (quantiles with linear interpolation between order statistics, as ``torch.quantile``), ends
    included. For ``S`` exchangeable samples from the true posterior the expected coverage is about
    ``(s - r) / (S + 1)`` with ``r, s`` the (fractional, 1-based) ranks of the two quantiles, which
    tends to ``level`` as ``S`` grows.

    Parameters
    ----------
    samples : Tensor
        ``(S, ...)`` posterior samples (``Reconstruction.samples``), ``S >= 2``.
    truth : Tensor
        The ground truth, shape ``samples.shape[1:]``.
    level : float
        Credible level in ``(0, 1)``.

    Returns
    -------
    float
    """
    if not torch.is_tensor(samples) or not torch.is_tensor(truth):
        raise TypeError("samples, truth: expected torch.Tensors")
    if samples.ndim < 1 or samples.shape[0] < 2:
        raise ValueError(f"samples: expected (S, ...) with S >= 2 samples, got shape {tuple(samples.shape)}")
    if tuple(truth.shape) != tuple(samples.shape[1:]):
        raise ValueError(f"truth: shape {tuple(truth.shape)} should equal samples.shape[1:] = {tuple(samples.shape[1:])}")
    if not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValueError(f"level: expected a number in (0, 1), got {level!r}")
    lower, upper = central_intervals(samples, (level,))
    t = truth.detach().to(torch.float64)
    return float(((t >= lower[0]) & (t <= upper[0])).double().mean())
