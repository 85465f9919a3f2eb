"""Variance-exploding score networks as EDM denoisers (score_sde NCSN++, diffusers' ScoreSdeVe ports).

A VE network is trained on ``x = x0 + sigma n`` directly and returns the score
``s(x, sigma) = grad_x log p_sigma(x)`` (score_sde's ``scale_by_sigma`` networks divide their output by
``sigma`` themselves), so no input scaling is needed and by Tweedie's formula::

    D(x, sigma) = x + sigma^2 s(x, sigma)

Any image size: the network runs on ``x`` reflect-padded to multiples of ``pad_multiple`` and the
score is cropped back (:mod:`invdiff.priors.padding`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from invdiff.priors.adapters.common import NetworkDenoiser
from invdiff.utils import append_dims


class VEScoreDenoiser(NetworkDenoiser):
    r"""A variance-exploding score network ``s(x, sigma)`` as an EDM denoiser.

    VE-SDE models are trained on ``x = x0 + sigma n`` directly, so no input scaling is needed,
    and Tweedie's formula gives ``D(x, sigma) = x + sigma^2 s(x, sigma)``.

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
    name : str, optional
        A label (the checkpoint's file name).
    pad_multiple : int
        Any image size: ``x`` is reflect-padded to multiples of ``pad_multiple`` (the network's
        downsampling factor, ``2^(len(ch_mult) - 1)`` for NCSN++; :func:`load_ncsnpp` sets it) before
        ``score_fn`` and the score is cropped back (:func:`invdiff.priors.padding.call_padded`), so
        ``D(x) = crop(D(reflect_pad(x)))``. ``1`` (default): no padding.

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
                 data_range: tuple[float, float] = (0.0, 1.0), name: str | None = None, pad_multiple: int = 1):
        super().__init__(score_fn, "score_fn(x, sigma)", data_range, name, pad_multiple)
        if not 0 < float(sigma_min) < float(sigma_max):
            raise ValueError("sigma_min, sigma_max: expected 0 < sigma_min < sigma_max, "
                             f"got {sigma_min!r}, {sigma_max!r}")
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)

    def score_fn(self, x: Tensor, sigma: Tensor) -> Tensor:
        """The raw network's score ``s(x, sigma)`` at any spatial size (reflect-padded to ``pad_multiple``)."""
        return self.call_network(x, sigma)

    def forward(self, x: Tensor, sigma: Tensor | float, *args, **kwargs) -> Tensor:
        """``D(x, sigma) = x + sigma^2 s(x, sigma)``."""
        sigma = self.check_input(x, sigma)
        sigma_net = torch.where(sigma > 0, sigma, torch.full_like(sigma, self.sigma_min))
        s = self.score_fn(x, sigma_net)
        if s.shape != x.shape:
            raise ValueError(f"score_fn: output shape {tuple(s.shape)} does not match the input {tuple(x.shape)}")
        return x + append_dims(sigma, x.ndim) ** 2 * s.to(x.dtype)
