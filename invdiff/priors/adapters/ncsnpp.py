"""VE score networks as EDM denoisers; score_sde NCSN++ checkpoints (DiffusionMBIR) -- placeholder."""

from __future__ import annotations

from collections.abc import Callable

import deepinv as dinv
import torch
from torch import Tensor, nn

from invdiff.utils import append_dims, as_sigma


class VEScoreDenoiser(dinv.models.Denoiser):
    r"""A variance-exploding score network ``s(x, sigma)`` as an EDM denoiser.

    VE-SDE models (Song et al., ICLR 2021) are trained on ``x = x0 + sigma n`` directly, so no
    input scaling is needed, and Tweedie's formula gives::

        D(x, sigma) = x + sigma^2 s(x, sigma)

    Parameters
    ----------
    score_fn : callable
        ``score_fn(x, sigma) -> Tensor`` of ``x``'s shape, with ``sigma`` a ``(B,)`` tensor; the
        score ``grad_x log p_sigma(x)`` (for score_sde's ``scale_by_sigma`` networks the division
        by ``sigma`` is part of the network). An ``nn.Module`` is registered as ``self.net``.
    sigma_min, sigma_max : float
        Noise range of the VE-SDE the network was trained on.
    data_range : tuple of float
        Intensity range of the training data, ``(0, 1)`` for score_sde's uncentred data.

    Notes
    -----
    At ``sigma = 0`` the network is evaluated at ``sigma_min`` (a score network may divide by
    ``sigma``) and the output is ``x`` exactly, since ``sigma^2 = 0``. Nothing is clamped.

    Example
    -------
    >>> score = lambda x, sigma: -x / (1 + sigma[:, None, None, None] ** 2)   # data N(0, I)
    >>> D = VEScoreDenoiser(score, sigma_min=0.01, sigma_max=50.0)
    >>> torch.allclose(D(torch.ones(1, 1, 4, 4), 1.0), torch.full((1, 1, 4, 4), 0.5))
    True
    """

    def __init__(self, score_fn: Callable[[Tensor, Tensor], Tensor], sigma_min: float, sigma_max: float,
                 data_range: tuple[float, float] = (0.0, 1.0), name: str | None = None):
        super().__init__()
        if not callable(score_fn):
            raise TypeError(f"score_fn: expected a callable score_fn(x, sigma), got {type(score_fn).__name__}")
        if not 0 < float(sigma_min) < float(sigma_max):
            raise ValueError(f"sigma_min, sigma_max: expected 0 < sigma_min < sigma_max, got {sigma_min!r}, {sigma_max!r}")
        if isinstance(score_fn, nn.Module):
            self.net = score_fn
        else:
            self._score_fn = score_fn
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self.data_range = tuple(float(v) for v in data_range)
        self.name = name

    def score_fn(self, x: Tensor, sigma: Tensor) -> Tensor:
        """The raw network's score ``s(x, sigma)``."""
        fn = self.net if hasattr(self, "net") else self._score_fn
        return fn(x, sigma)

    def forward(self, x: Tensor, sigma: Tensor | float, *args, **kwargs) -> Tensor:
        """``D(x, sigma) = x + sigma^2 s(x, sigma)``."""
        if not torch.is_tensor(x):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        sigma = as_sigma(sigma, x)
        if bool((sigma < 0).any()):
            raise ValueError(f"sigma: expected non-negative noise levels, got min {float(sigma.min())!r}")
        sigma_net = torch.where(sigma > 0, sigma, torch.full_like(sigma, self.sigma_min))
        s = self.score_fn(x, sigma_net)
        if s.shape != x.shape:
            raise ValueError(f"score_fn: output shape {tuple(s.shape)} does not match the input {tuple(x.shape)}")
        return x + append_dims(sigma, x.ndim) ** 2 * s.to(x.dtype)


def load_ncsnpp(path, device="cpu", **kw):
    raise NotImplementedError("load_ncsnpp: work in progress")
