"""VP (DDPM) networks as EDM denoisers: one wrapper for every discrete-time VP checkpoint.

A VP network is trained on ``x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps`` for integer timesteps
``t = 0 .. T-1`` of its schedule ``ab_t = alpha_bar_t``. The same state in sigma-space is
``x = x_t / sqrt(ab_t) = x0 + sigma_t n`` with ``sigma_t = sqrt((1 - ab_t) / ab_t)``. Given
``(x, sigma)`` the wrapper

1. maps ``sigma`` to a (fractional) timestep ``t`` through the checkpoint's own ``sigma_t`` table,
   by linear interpolation in ``log sigma`` between the two neighbouring integer timesteps
   (``timestep="interp"``, the default, as k-diffusion's ``DiscreteEpsDDPMDenoiser`` does; the
   networks' sinusoidal timestep embeddings accept fractional ``t``), or by the nearest one
   (``timestep="nearest"``); ``sigma`` outside ``[sigma_min, sigma_max]`` uses the end timestep;
2. scales the input to the VP state ``x_t = x / sqrt(1 + sigma^2)`` (``ab = 1 / (1 + sigma^2)``);
3. converts the network output to the Tweedie estimate (no clamping, ever)::

       epsilon:       D = x - sigma * eps(x_t, t)
       v_prediction:  D = sqrt(ab) x_t - sqrt(1 - ab) v(x_t, t) = ab x - sigma sqrt(ab) v(x_t, t)
       sample:        D = x0_hat(x_t, t)

   with ``v = sqrt(ab) eps - sqrt(1 - ab) x0`` (Salimans & Ho 2022).

Any image size: the network runs on ``x_t`` reflect-padded to multiples of ``pad_multiple`` and its
output is cropped back; steps 2 and 3 are pixel-wise, so ``D(x) = crop(D(reflect_pad(x)))``.

Learned-variance networks (guided-diffusion ``learn_sigma=True``) output ``2C`` channels for ``C``
input channels; the first ``C`` are the prediction, the variance channels are dropped.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from invdiff.priors.adapters.common import NetworkDenoiser
from invdiff.utils import append_dims

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


def make_alphas_cumprod(beta_schedule: str = "linear", num_train_timesteps: int = 1000,
                        beta_start: float = 1e-4, beta_end: float = 0.02,
                        compute_dtype: torch.dtype = torch.float64) -> Tensor:
    """``alpha_bar_t = prod_{s <= t} (1 - beta_s)`` for the usual discrete VP schedules.

    Parameters
    ----------
    beta_schedule : {"linear", "scaled_linear", "squaredcos_cap_v2"}
        ``linear``: ``beta_t`` evenly spaced from ``beta_start`` to ``beta_end`` (DDPM, ADM);
        ``scaled_linear``: ``sqrt(beta_t)`` evenly spaced (latent diffusion);
        ``squaredcos_cap_v2``: Nichol & Dhariwal's cosine schedule
        ``ab(t) = cos^2((t / T + 0.008) / 1.008 * pi / 2)``, ``beta_t`` capped at 0.999.
    num_train_timesteps : int
        ``T``.
    beta_start, beta_end : float
        Ends of the linear schedules (ignored by the cosine schedule).
    compute_dtype : torch.dtype
        Precision of the betas and of the cumulative product, to reproduce a codebase's own
        numbers: guided-diffusion computes in float64 (NumPy), diffusers in float32 (torch).

    Returns
    -------
    Tensor
        ``(T,)`` float64, strictly decreasing values in ``(0, 1)``.
    """
    T = num_train_timesteps
    if isinstance(T, bool) or not isinstance(T, int) or T < 2:
        raise ValueError(f"num_train_timesteps: expected an integer >= 2, got {T!r}")
    if beta_schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, T, dtype=compute_dtype)
    elif beta_schedule == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=compute_dtype) ** 2
    elif beta_schedule == "squaredcos_cap_v2":
        def ab(s: float) -> float:
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = torch.tensor([min(1 - ab((i + 1) / T) / ab(i / T), 0.999) for i in range(T)], dtype=compute_dtype)
    else:
        raise ValueError(f"beta_schedule: expected one of {BETA_SCHEDULES}, got {beta_schedule!r}")
    if not bool(((betas > 0) & (betas < 1)).all()):
        raise ValueError(f"beta_start, beta_end: the betas must lie in (0, 1), got {beta_start!r}, {beta_end!r}")
    return torch.cumprod(1 - betas, dim=0).to(torch.float64)


class VPEpsDenoiser(NetworkDenoiser):
    r"""A discrete-time VP network ``f(x_t, t)`` as an EDM denoiser ``D(x, sigma) = E[x0 | x]``.

    Parameters
    ----------
    net_fn : callable
        ``net_fn(x_t, t) -> Tensor``: the raw network, ``x_t`` of shape ``(B, C, ...)`` in VP units and
        ``t`` a ``(B,)`` float tensor of (possibly fractional) timesteps in ``[0, T-1]``. Returns ``C``
        or ``2C`` (learned variance) channels. An ``nn.Module`` is registered as ``self.net``.
    alphas_cumprod : Tensor
        The checkpoint's own ``alpha_bar_t``, ``(T,)``, strictly decreasing in ``(0, 1)``.
    data_range : tuple of float
        Intensity range the network was trained on, ``(-1, 1)`` for the ADM/DPS checkpoints.
    prediction_type : {"epsilon", "v_prediction", "sample"}
        What the network predicts.
    timestep : {"interp", "nearest"}
        How ``sigma`` is mapped to ``t``: log-sigma interpolation (fractional ``t``) or nearest timestep.
    name : str, optional
        A label (the checkpoint's file name).
    pad_multiple : int
        Any image size: ``x_t`` is reflect-padded to multiples of ``pad_multiple`` (the network's
        downsampling factor ``2^levels``; the loaders set it) before ``net_fn`` and the output is
        cropped back (:func:`invdiff.priors.padding.call_padded`). ``1`` (default): no padding.

    Attributes
    ----------
    sigmas : Tensor
        ``sigma_t = sqrt((1 - ab_t) / ab_t)``, float64, increasing in ``t``.
    sigma_min, sigma_max : float
        ``sigmas[0]`` and ``sigmas[-1]``.

    Example
    -------
    >>> from invdiff.priors.adapters.vp import VPEpsDenoiser, make_alphas_cumprod
    >>> zero_eps = lambda x_t, t: torch.zeros_like(x_t)
    >>> D = VPEpsDenoiser(zero_eps, make_alphas_cumprod("linear", 1000))
    >>> D(torch.ones(2, 3, 8, 8), 0.5).mean().item()
    1.0
    """

    def __init__(self, net_fn: Callable[[Tensor, Tensor], Tensor], alphas_cumprod: Tensor,
                 data_range: tuple[float, float] = (-1.0, 1.0), prediction_type: str = "epsilon",
                 timestep: str = "interp", name: str | None = None, pad_multiple: int = 1):
        super().__init__(net_fn, "net_fn(x_t, t)", data_range, name, pad_multiple)
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type: expected one of {PREDICTION_TYPES}, got {prediction_type!r}")
        if timestep not in ("interp", "nearest"):
            raise ValueError(f"timestep: expected 'interp' or 'nearest', got {timestep!r}")
        ab = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64).reshape(-1)
        if ab.numel() < 2 or not bool(((ab > 0) & (ab < 1)).all()) or not bool((ab[1:] < ab[:-1]).all()):
            raise ValueError("alphas_cumprod: expected at least 2 strictly decreasing values in (0, 1), "
                             f"got {ab.numel()} values in [{float(ab.min()):.3g}, {float(ab.max()):.3g}]")
        sigmas = ((1 - ab) / ab).sqrt()
        self.register_buffer("alphas_cumprod", ab, persistent=False)
        self.register_buffer("sigmas", sigmas, persistent=False)
        self.register_buffer("log_sigmas", sigmas.log(), persistent=False)
        self.prediction_type = prediction_type
        self.timestep = timestep
        self.sigma_min = float(sigmas[0])
        self.sigma_max = float(sigmas[-1])

    @property
    def num_train_timesteps(self) -> int:
        return int(self.sigmas.numel())

    def net_fn(self, x_t: Tensor, t: Tensor) -> Tensor:
        """The raw network output ``f(x_t, t)`` at any spatial size (reflect-padded to ``pad_multiple``)."""
        return self.call_network(x_t, t)

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        """Timestep(s) of noise level(s) ``sigma`` (float64), clamped to ``[0, T-1]``."""
        log_sigmas = self.log_sigmas.to(device=sigma.device, dtype=torch.float64)
        log_sigma = sigma.detach().to(torch.float64).clamp_min(1e-300).log()
        log_sigma = log_sigma.clamp(log_sigmas[0], log_sigmas[-1])
        if self.timestep == "nearest":
            return (log_sigma[:, None] - log_sigmas[None, :]).abs().argmin(dim=1).to(torch.float64)
        # low = last index with log_sigmas[low] <= log_sigma, kept below T-1 so that high = low + 1 exists
        low = (torch.searchsorted(log_sigmas, log_sigma, right=True) - 1).clamp(0, len(log_sigmas) - 2)
        lo, hi = log_sigmas[low], log_sigmas[low + 1]
        w = ((log_sigma - lo) / (hi - lo)).clamp(0, 1)
        return low.to(torch.float64) + w

    def t_to_sigma(self, t: Tensor | float) -> Tensor:
        """Noise level of a (fractional) timestep, interpolating ``log sigma_t`` linearly."""
        t = torch.as_tensor(t, dtype=torch.float64, device=self.log_sigmas.device)
        low = t.floor().long().clamp(0, len(self.log_sigmas) - 2)
        w = t - low
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[low + 1]).exp()

    def forward(self, x: Tensor, sigma: Tensor | float, *args, **kwargs) -> Tensor:
        """``D(x, sigma)``: see the module docstring for the update equations."""
        sigma = self.check_input(x, sigma)
        t = self.sigma_to_t(sigma)
        s = append_dims(sigma, x.ndim)
        c_in = 1 / (1 + s**2).sqrt()  # sqrt(ab)
        out = self.net_fn(x * c_in, t.to(torch.float32))
        C = x.shape[1]
        if out.shape[1] == 2 * C and out.shape[2:] == x.shape[2:]:
            out = out[:, :C]  # learned variance: drop the variance channels
        elif out.shape[1:] != x.shape[1:]:
            raise ValueError(f"net_fn: output shape {tuple(out.shape)} does not match the input "
                             f"{tuple(x.shape)} (expected C={C} or 2C={2 * C} channels)")
        out = out.to(x.dtype)
        if self.prediction_type == "epsilon":
            return x - s * out
        if self.prediction_type == "v_prediction":
            return c_in**2 * x - s * c_in * out
        return out
