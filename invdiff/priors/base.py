"""Score and epsilon from a denoiser, in EDM's sigma-space convention ``x = x0 + sigma n``.

Tweedie: ``D(x, sigma) = E[x0 | x]``, so ``score(x, sigma) = grad log p_sigma(x) = (D(x, sigma) - x) / sigma^2``
and the noise estimate is ``eps(x, sigma) = (x - D(x, sigma)) / sigma``.
"""

from __future__ import annotations

from torch import Tensor

from invdiff.utils import append_dims, as_sigma


def score_from_denoiser(D, x: Tensor, sigma: Tensor | float) -> Tensor:
    """``(D(x, sigma) - x) / sigma^2``."""
    s = append_dims(as_sigma(sigma, x), x.ndim)
    return (D(x, sigma) - x) / s**2


def eps_from_denoiser(D, x: Tensor, sigma: Tensor | float) -> Tensor:
    """``(x - D(x, sigma)) / sigma``."""
    s = append_dims(as_sigma(sigma, x), x.ndim)
    return (x - D(x, sigma)) / s
