"""Weighted-particle helpers for the SMC sampler: weight normalisation, ESS, systematic resampling.

Weights are kept as log-weights ``log_w`` of shape ``(B, N)``: ``B`` independent ensembles (one per
measurement) of ``N`` particles each. Particles themselves are stored flat, ``(B * N, ...)``, with
particle ``i`` of ensemble ``b`` at row ``b * N + i``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def normalise_log_weights(log_w: Tensor) -> Tensor:
    """Normalised weights ``W_i = exp(log_w_i - logsumexp(log_w))`` per ensemble (row), shape ``(B, N)``."""
    return torch.softmax(log_w, dim=-1)


def ess(log_w: Tensor) -> Tensor:
    """Effective sample size ``(sum_i w_i)^2 / sum_i w_i^2 = 1 / sum_i W_i^2`` per row, shape ``(B,)``."""
    W = normalise_log_weights(log_w)
    return 1.0 / (W**2).sum(-1)


def systematic_resample(log_w: Tensor, n: int | None = None, generator: torch.Generator | None = None) -> Tensor:
    """Systematic resampling: ``n`` ancestor indices per row drawn with probabilities ``W``.

    One uniform ``U_b ~ U[0, 1)`` per row; the ``j``-th pointer ``(U_b + j) / n`` picks the particle
    whose cumulative-weight interval contains it (Kitagawa 1996). Unbiased: each particle is picked
    ``floor(n W_i)`` or ``ceil(n W_i)`` times.

    Parameters
    ----------
    log_w : Tensor
        Log-weights ``(B, N)`` (unnormalised).
    n : int, optional
        Number of draws per row (default ``N``).
    generator : torch.Generator, optional
        Source of the uniforms.

    Returns
    -------
    Tensor
        Long indices ``(B, n)`` into each row's ``N`` particles, sorted.
    """
    B, N = log_w.shape
    n = N if n is None else n
    W = normalise_log_weights(log_w.to(torch.float64))
    cdf = W.cumsum(-1)
    cdf[:, -1] = 1.0  # guard against round-off leaving the last pointer past the end
    u = torch.rand(B, 1, generator=generator, dtype=torch.float64, device=log_w.device)
    pointers = (u + torch.arange(n, dtype=torch.float64, device=log_w.device)) / n
    return torch.searchsorted(cdf, pointers, right=True).clamp_(max=N - 1)


def flat_indices(idx: Tensor, N: int) -> Tensor:
    """Turn per-row indices ``(B, n)`` into row indices of the flat ``(B * N, ...)`` particle tensor."""
    B = idx.shape[0]
    return (idx + N * torch.arange(B, device=idx.device)[:, None]).reshape(-1)


def weighted_moments(x: Tensor, log_w: Tensor) -> tuple[Tensor, Tensor]:
    """Weighted mean and pixel-wise standard deviation of particles ``x`` ``(B, N, ...)``.

    ``mean = sum_i W_i x_i`` and ``std = sqrt(sum_i W_i (x_i - mean)^2)``.
    """
    W = normalise_log_weights(log_w).to(x.dtype)
    W = W.reshape(*W.shape, *([1] * (x.ndim - 2)))
    mean = (W * x).sum(1)
    var = (W * (x - mean[:, None]) ** 2).sum(1)
    return mean, var.sqrt()
