"""score_sde NCSN++ (VE) checkpoints, as DiffusionMBIR distributes them, as EDM denoisers.

Song et al., "Score-Based Generative Modeling through Stochastic Differential Equations", ICLR 2021
(github.com/yang-song/score_sde_pytorch); Chung et al., "Solving 3D Inverse Problems using
Pre-trained 2D Diffusion Models" (DiffusionMBIR), CVPR 2023 (github.com/HJ-harry/DiffusionMBIR),
whose AAPM CT 256 (``checkpoint_185.pth``) and fastMRI knee 320 (``checkpoint_95.pth``) priors are
NCSN++ networks trained on the VE-SDE with ``sigma`` from 0.01 to 378 on data in ``[0, 1]``.

A VE network is trained on ``x = x0 + sigma n`` and (with ``scale_by_sigma``) outputs the score
``s(x, sigma) = F(x, sigma) / sigma``, so by Tweedie's formula::

    D(x, sigma) = x + sigma^2 s(x, sigma)

Checkpoint format (score_sde's ``save_checkpoint``; a ``torch.save`` of plain containers, read here
with ``torch.load(weights_only=True)``)::

    {"model": DataParallel(NCSNpp).state_dict(),     # keys "module.all_modules.<i>.<...>", "module.sigmas"
     "ema": {"decay": float, "num_updates": int,
             "shadow_params": [tensor, ...]},        # EMA of the trainable parameters, in parameters() order
     "optimizer": {...}, "step": int}

DiffusionMBIR samples with the EMA weights (``ema.copy_to(model.parameters())``), which is the
default here (``use_ema=True``). The EMA covers only parameters with ``requires_grad``: the fixed
Gaussian Fourier features (``all_modules.0.W``) come from ``"model"``. The ``sigmas`` buffer (a
discrete sigma table, used only by positional embeddings) is dropped, as DiffusionMBIR does.

:class:`NCSNpp` is written here from the published architecture. During development it was run
side by side with the original score_sde ``NCSNpp`` (not part of this package): identical key
names, key order and trainable-parameter order, and outputs equal to about 1e-7 relative on five
small configurations (DiffusionMBIR's layout, score_sde's CelebA-HQ layout, FIR off, concatenating
combine, no input pyramid); ``tests/test_adapters.py`` keeps the DiffusionMBIR layout measured on
the original (521 entries, 61,433,601 parameters). It covers score_sde's continuous VE NCSN++ models:
BigGAN residual blocks with FIR (or naive) resampling, ``progressive`` in ``{"none",
"output_skip"}``, ``progressive_input`` in ``{"none", "input_skip", "residual"}``, Gaussian
Fourier noise embedding. Configurations outside that set raise ``ValueError``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invdiff.priors.adapters.common import NetworkDenoiser, config_from_kwargs, resolve_config
from invdiff.priors.checkpoint import load_state_dict_strict, torch_load_plain
from invdiff.utils import append_dims


# ============================================================================ the denoiser
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


# ============================================================================ configuration
@dataclass(frozen=True)
class NCSNppConfig:
    """score_sde ``config.model`` / ``config.data`` fields of an NCSN++ network.

    Defaults are DiffusionMBIR's ``configs/ve/AAPM_256_ncsnpp_continuous.py``.
    """

    image_size: int = 256
    num_channels: int = 1
    centered: bool = False
    nf: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 4
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.0
    resamp_with_conv: bool = True
    conditional: bool = True
    fir: bool = True
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)
    skip_rescale: bool = True
    resblock_type: str = "biggan"
    progressive: str = "none"
    progressive_input: str = "residual"
    progressive_combine: str = "sum"
    embedding_type: str = "fourier"
    fourier_scale: float = 16.0
    scale_by_sigma: bool = True
    sigma_min: float = 0.01
    sigma_max: float = 378.0

    def __post_init__(self):
        allowed = {"resblock_type": ("biggan",), "progressive": ("none", "output_skip"),
                   "progressive_input": ("none", "input_skip", "residual"), "progressive_combine": ("sum", "cat"),
                   "embedding_type": ("fourier",)}
        for key, values in allowed.items():
            if getattr(self, key) not in values:
                raise ValueError(f"{key}: {getattr(self, key)!r} is not supported; expected one of {values} "
                                 "(the configurations of score_sde's continuous VE NCSN++ models)")
        if self.image_size % 2 ** (len(self.ch_mult) - 1):
            raise ValueError(f"image_size: {self.image_size} is not divisible by 2^{len(self.ch_mult) - 1}")

    @property
    def pad_multiple(self) -> int:
        """Spatial sizes the network accepts are multiples of ``2^(len(ch_mult) - 1)``."""
        return 2 ** (len(self.ch_mult) - 1)

    @classmethod
    def from_kwargs(cls, **kw) -> "NCSNppConfig":
        return config_from_kwargs(cls, kw, {"ch_mult": int, "attn_resolutions": int, "fir_kernel": int})


NCSNPP_CONFIGS: dict[str, NCSNppConfig] = {
    # DiffusionMBIR configs/ve/AAPM_256_ncsnpp_continuous.py (checkpoint_185.pth)
    "aapm256": NCSNppConfig(),
    # DiffusionMBIR configs/ve/fastmri_knee_320_ncsnpp_continuous.py (checkpoint_95.pth)
    "fastmri_knee320": NCSNppConfig(image_size=320),
}


# ============================================================================ FIR resampling
def _fir_kernel(k: tuple[int, ...], gain: float, device, dtype) -> Tensor:
    k1 = torch.as_tensor(k, dtype=torch.float64)
    k2 = torch.outer(k1, k1)
    return (k2 / k2.sum() * gain).to(device=device, dtype=dtype)


def upfirdn(x: Tensor, k2: Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)) -> Tensor:
    """Per-channel: insert ``up - 1`` zeros between samples, pad, convolve with ``k2``, keep every ``down``-th.

    The filter is applied as a true convolution (flipped kernel), the same padding ``pad = (before,
    after)`` on both axes; this is StyleGAN2's ``upfirdn2d``.
    """
    B, C, H, W = x.shape
    if up > 1:
        z = x.new_zeros(B, C, H, up, W, up)
        z[:, :, :, 0, :, 0] = x
        x = z.reshape(B, C, H * up, W * up)
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    w = k2.flip(0, 1)[None, None].expand(C, 1, *k2.shape)
    return F.conv2d(x, w, stride=down, groups=C)


def fir_upsample(x: Tensor, k: tuple[int, ...]) -> Tensor:
    """Upsample by 2 with the FIR filter ``k`` (gain 4 so that constants are kept)."""
    p = len(k) - 2
    return upfirdn(x, _fir_kernel(k, 4.0, x.device, x.dtype), up=2, pad=((p + 1) // 2 + 1, p // 2))


def fir_downsample(x: Tensor, k: tuple[int, ...]) -> Tensor:
    """Low-pass with the FIR filter ``k``, then keep every second sample."""
    p = len(k) - 2
    return upfirdn(x, _fir_kernel(k, 1.0, x.device, x.dtype), down=2, pad=((p + 1) // 2, p // 2))


def conv_fir_downsample(x: Tensor, weight: Tensor, k: tuple[int, ...]) -> Tensor:
    """FIR low-pass then a stride-2 convolution with ``weight``, with one padding up front."""
    p = len(k) - 2 + weight.shape[-1] - 1
    x = upfirdn(x, _fir_kernel(k, 1.0, x.device, x.dtype), pad=((p + 1) // 2, p // 2))
    return F.conv2d(x, weight, stride=2)


# ============================================================================ layers (score_sde key names)
def _group_norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=min(ch // 4, 32), num_channels=ch, eps=1e-6)


class FourierFeatures(nn.Module):
    """``[sin(2 pi W log sigma), cos(2 pi W log sigma)]`` with fixed random frequencies ``W``."""

    def __init__(self, size: int, scale: float):
        super().__init__()
        self.W = nn.Parameter(torch.randn(size) * scale, requires_grad=False)

    def forward(self, log_sigma: Tensor) -> Tensor:
        arg = log_sigma[:, None] * self.W[None, :] * 2 * math.pi
        return torch.cat([arg.sin(), arg.cos()], dim=-1)


class NIN(nn.Module):
    """Per-pixel linear map over channels: ``y[b, :, i, j] = x[b, :, i, j] @ W + b``."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.W = nn.Parameter(torch.randn(c_in, c_out) / math.sqrt(c_in))
        self.b = nn.Parameter(torch.zeros(c_out))

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("bchw,cd->bdhw", x, self.W) + self.b[:, None, None]


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels, residual, optionally rescaled by ``1/sqrt(2)``."""

    def __init__(self, ch: int, skip_rescale: bool):
        super().__init__()
        self.GroupNorm_0 = _group_norm(ch)
        self.NIN_0, self.NIN_1, self.NIN_2, self.NIN_3 = (NIN(ch, ch) for _ in range(4))
        self.skip_rescale = skip_rescale

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        h = self.GroupNorm_0(x)
        q, k, v = (m(h).reshape(B, C, H * W).transpose(1, 2) for m in (self.NIN_0, self.NIN_1, self.NIN_2))
        h = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(C)) v
        h = self.NIN_3(h.transpose(1, 2).reshape(B, C, H, W))
        return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h


class ResBlockBigGAN(nn.Module):
    """BigGAN-style residual block, optional 2x up/down-sampling of both branches, noise-conditioned bias."""

    def __init__(self, c_in: int, c_out: int | None, temb_dim: int, cfg: NCSNppConfig, up: bool = False,
                 down: bool = False):
        super().__init__()
        c_out = c_out or c_in
        self.GroupNorm_0 = _group_norm(c_in)
        self.Conv_0 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.Dense_0 = nn.Linear(temb_dim, c_out)
        self.GroupNorm_1 = _group_norm(c_out)
        self.Dropout_0 = nn.Dropout(cfg.dropout)
        self.Conv_1 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.has_skip_conv = c_in != c_out or up or down
        if self.has_skip_conv:
            self.Conv_2 = nn.Conv2d(c_in, c_out, 1)
        self.up, self.down, self.cfg = up, down, cfg

    def _resample(self, x: Tensor) -> Tensor:
        if self.up and self.cfg.fir:
            return fir_upsample(x, self.cfg.fir_kernel)
        if self.up:
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        if self.down and self.cfg.fir:
            return fir_downsample(x, self.cfg.fir_kernel)
        if self.down:
            return F.avg_pool2d(x, 2)
        return x

    def forward(self, x: Tensor, temb: Tensor | None) -> Tensor:
        h = self._resample(F.silu(self.GroupNorm_0(x)))
        x = self._resample(x)
        h = self.Conv_0(h)
        if temb is not None:
            h = h + self.Dense_0(F.silu(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(F.silu(self.GroupNorm_1(h))))
        if self.has_skip_conv:
            x = self.Conv_2(x)
        return (x + h) / math.sqrt(2.0) if self.cfg.skip_rescale else x + h


class _FIRConv(nn.Module):
    """Holds the ``weight`` and ``bias`` of a FIR-resampling convolution (applied by its owner)."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel, kernel) / math.sqrt(c_in * kernel * kernel))
        self.bias = nn.Parameter(torch.zeros(c_out))


class ConvDownsample(nn.Module):
    """Stride-2 convolution (FIR low-pass first when ``fir``): score_sde's ``Downsample(with_conv=True)``."""

    def __init__(self, c_in: int, c_out: int, cfg: NCSNppConfig):
        super().__init__()
        self.fir_kernel = cfg.fir_kernel if cfg.fir else None
        if self.fir_kernel is not None:
            self.Conv2d_0 = _FIRConv(c_in, c_out)
        else:
            self.Conv_0 = nn.Conv2d(c_in, c_out, 3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        if self.fir_kernel is not None:
            return conv_fir_downsample(x, self.Conv2d_0.weight, self.fir_kernel) + self.Conv2d_0.bias[:, None, None]
        return self.Conv_0(F.pad(x, (0, 1, 0, 1)))


class Combine(nn.Module):
    """1x1 convolution of the input-pyramid branch, then sum or concatenation with the features."""

    def __init__(self, c_pyramid: int, c_features: int, method: str):
        super().__init__()
        self.Conv_0 = nn.Conv2d(c_pyramid, c_features, 1)
        self.method = method

    def forward(self, pyramid: Tensor, h: Tensor) -> Tensor:
        p = self.Conv_0(pyramid)
        return p + h if self.method == "sum" else torch.cat([p, h], dim=1)


# ============================================================================ the network
class NCSNpp(nn.Module):
    """NCSN++ (score_sde ``models/ncsnpp.py``) with the same flat ``all_modules`` layout and key names.

    ``forward(x, sigma)`` returns the score ``F(x, log sigma) / sigma`` (``scale_by_sigma``) for
    ``x`` in the data's own units (``[0, 1]`` when ``centered=False``; the network maps it to
    ``[-1, 1]`` itself). The modules are created and consumed in the same order: the forward pass
    walks ``all_modules`` with an iterator. Attention is placed by the configured ``image_size``,
    so inputs should have that size (other sizes divisible by ``2^(levels-1)`` run, with the
    attention layout of ``image_size``).
    """

    def __init__(self, config: NCSNppConfig | None = None):
        super().__init__()
        cfg = self.config = config or NCSNppConfig()
        nf, L, C = cfg.nf, len(cfg.ch_mult), cfg.num_channels
        temb_dim = 4 * nf
        res = [cfg.image_size // 2**i for i in range(L)]
        mods: list[nn.Module] = [FourierFeatures(nf, cfg.fourier_scale)]
        if cfg.conditional:
            mods += [nn.Linear(2 * nf, temb_dim), nn.Linear(temb_dim, temb_dim)]

        def block(c_in, c_out=None, **kw):
            return ResBlockBigGAN(c_in, c_out, temb_dim, cfg, **kw)

        def attn(ch):
            return AttnBlock(ch, cfg.skip_rescale)

        # 1. encoder
        mods.append(nn.Conv2d(C, nf, 3, padding=1))
        skips, ch, c_pyr = [nf], nf, C
        for i in range(L):
            for _ in range(cfg.num_res_blocks):
                mods.append(block(ch, nf * cfg.ch_mult[i]))
                ch = nf * cfg.ch_mult[i]
                if res[i] in cfg.attn_resolutions:
                    mods.append(attn(ch))
                skips.append(ch)
            if i != L - 1:
                mods.append(block(ch, down=True))
                if cfg.progressive_input == "input_skip":
                    mods.append(Combine(c_pyr, ch, cfg.progressive_combine))
                    ch = 2 * ch if cfg.progressive_combine == "cat" else ch
                elif cfg.progressive_input == "residual":
                    mods.append(ConvDownsample(c_pyr, ch, cfg))
                    c_pyr = ch
                skips.append(ch)
        # 2. middle
        mods += [block(ch), attn(ch), block(ch)]
        # 3. decoder
        for i in reversed(range(L)):
            for _ in range(cfg.num_res_blocks + 1):
                mods.append(block(ch + skips.pop(), nf * cfg.ch_mult[i]))
                ch = nf * cfg.ch_mult[i]
            if res[i] in cfg.attn_resolutions:
                mods.append(attn(ch))
            if cfg.progressive == "output_skip":
                mods += [_group_norm(ch), nn.Conv2d(ch, C, 3, padding=1)]
            if i != 0:
                mods.append(block(ch, up=True))
        if cfg.progressive != "output_skip":
            mods += [_group_norm(ch), nn.Conv2d(ch, C, 3, padding=1)]
        self.all_modules = nn.ModuleList(mods)

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        """Score ``s(x, sigma)`` for ``x`` ``(B, C, H, W)`` and ``sigma`` ``(B,)`` (positive)."""
        cfg, L = self.config, len(self.config.ch_mult)
        k = 2 ** (L - 1)
        if x.ndim != 4 or x.shape[1] != cfg.num_channels or x.shape[-1] % k or x.shape[-2] % k:
            raise ValueError(f"x: expected shape (B, {cfg.num_channels}, H, W) with H and W divisible by {k}, "
                             f"got {tuple(x.shape)}")
        res = [cfg.image_size // 2**i for i in range(L)]
        m = iter(self.all_modules)
        sigma = sigma.reshape(-1).expand(x.shape[0])
        temb = next(m)(sigma.log())
        if cfg.conditional:
            temb = next(m)(temb)
            temb = next(m)(F.silu(temb))
        else:
            temb = None
        if not cfg.centered:
            x = 2 * x - 1  # the network works on [-1, 1]
        # 1. encoder, with the input pyramid
        pyramid = x
        hs = [next(m)(x)]
        for i in range(L):
            for _ in range(cfg.num_res_blocks):
                h = next(m)(hs[-1], temb)
                if res[i] in cfg.attn_resolutions:
                    h = next(m)(h)
                hs.append(h)
            if i != L - 1:
                h = next(m)(hs[-1], temb)
                if cfg.progressive_input == "input_skip":
                    pyramid = fir_downsample(pyramid, cfg.fir_kernel) if cfg.fir else F.avg_pool2d(pyramid, 2)
                    h = next(m)(pyramid, h)
                elif cfg.progressive_input == "residual":
                    pyramid = next(m)(pyramid)
                    pyramid = (pyramid + h) / math.sqrt(2.0) if cfg.skip_rescale else pyramid + h
                    h = pyramid
                hs.append(h)
        # 2. middle
        h = next(m)(hs[-1], temb)
        h = next(m)(h)
        h = next(m)(h, temb)
        # 3. decoder, with the output pyramid
        out = None
        for i in reversed(range(L)):
            for _ in range(cfg.num_res_blocks + 1):
                h = next(m)(torch.cat([h, hs.pop()], dim=1), temb)
            if res[i] in cfg.attn_resolutions:
                h = next(m)(h)
            if cfg.progressive == "output_skip":
                norm, conv = next(m), next(m)
                p = conv(F.silu(norm(h)))
                if out is None:
                    out = p
                else:
                    out = (fir_upsample(out, cfg.fir_kernel) if cfg.fir
                           else F.interpolate(out, scale_factor=2.0, mode="nearest")) + p
            if i != 0:
                h = next(m)(h, temb)
        if cfg.progressive != "output_skip":
            norm, conv = next(m), next(m)
            out = conv(F.silu(norm(h)))
        if next(m, None) is not None:  # pragma: no cover - construction and forward out of step
            raise RuntimeError("NCSNpp: modules left over after the forward pass")
        if cfg.scale_by_sigma:
            out = out / append_dims(sigma, out.ndim)
        return out


# ============================================================================ checkpoint reading
def read_ncsnpp_checkpoint(path: str | os.PathLike, net: NCSNpp, use_ema: bool = True) -> tuple[dict, dict]:
    """State dict for ``net`` from a score_sde / DiffusionMBIR training checkpoint.

    Accepts the training-checkpoint dict (``"model"``, ``"ema"``, ...) or a bare state dict.
    ``module.`` prefixes (``DataParallel``) and the ``sigmas`` buffer are dropped; with
    ``use_ema`` the EMA shadow parameters replace the trainable parameters, matched by order
    (the checkpoint's own ``"model"`` key order is ``model.parameters()`` order) and checked by
    count and shape. Returns ``(state_dict, info)``.
    """
    path = Path(path)
    obj = torch_load_plain(path)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict (a training checkpoint or a state dict), got {type(obj).__name__}")
    model = obj["model"] if "model" in obj else obj
    if not isinstance(model, dict) or not all(torch.is_tensor(v) for v in model.values()):
        raise ValueError(f"{path}: 'model' is not a state dict (a mapping of names to tensors)")
    state = {}
    for key, value in model.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if key != "sigmas":
            state[key] = value
    info = {"step": obj.get("step"), "ema": False}
    if use_ema and "ema" in obj:
        ema = obj["ema"]
        shadow = ema.get("shadow_params") if isinstance(ema, dict) else None
        if not isinstance(shadow, (list, tuple)) or not all(torch.is_tensor(t) for t in shadow):
            raise ValueError(f"{path}: 'ema' has no list of 'shadow_params' tensors")
        fixed = {n for n, p in net.named_parameters() if not p.requires_grad}
        params = {n for n, _ in net.named_parameters()}
        trainable = [k for k in state if k in params and k not in fixed]
        if len(trainable) != len(shadow) or len(trainable) != len(params) - len(fixed):
            raise ValueError(f"{path}: the EMA holds {len(shadow)} tensors but the network has "
                             f"{len(params) - len(fixed)} trainable parameters ({len(trainable)} of them in 'model')")
        bad = [k for k, t in zip(trainable, shadow) if t.shape != state[k].shape]
        if bad:
            raise ValueError(f"{path}: EMA shadow parameters do not line up with 'model' (first mismatch at {bad[0]})")
        state.update(zip(trainable, shadow))
        info["ema"] = True
    return state, info


def load_ncsnpp(path: str | os.PathLike, device: str | torch.device = "cpu", *,
                config: str | NCSNppConfig | None = None, use_ema: bool = True,
                data_range: tuple[float, float] | None = None, **net_kw) -> VEScoreDenoiser:
    """Load a score_sde / DiffusionMBIR NCSN++ checkpoint as an EDM denoiser.

    Parameters
    ----------
    path : path-like
        ``checkpoint_*.pth`` (read with ``torch.load(weights_only=True)``).
    device : str or torch.device
        Where the network goes.
    config : {"aapm256", "fastmri_knee320"} or NCSNppConfig, optional
        Network configuration; ``None`` is DiffusionMBIR's AAPM 256 model. Keyword arguments
        ``net_kw`` (``image_size``, ``nf``, ``ch_mult``, ``num_res_blocks``, ``sigma_max``, ...)
        override single fields.
    use_ema : bool
        Use the EMA weights (as DiffusionMBIR and score_sde sample) rather than the raw ones.
    data_range : tuple of float, optional
        Default ``(0, 1)`` (``centered=False``) or ``(-1, 1)`` (``centered=True``).

    Returns
    -------
    VEScoreDenoiser
        ``D(x, sigma) = x + sigma^2 s(x, sigma)`` in eval mode, ``sigma_min``/``sigma_max`` from the config.
        Any image size: inputs are reflect-padded to multiples of ``2^(len(ch_mult) - 1)`` (8 for
        DiffusionMBIR's networks) around the network and cropped back.
    """
    cfg = resolve_config(config, NCSNPP_CONFIGS, NCSNppConfig, net_kw)
    net = NCSNpp(cfg)
    state, info = read_ncsnpp_checkpoint(path, net, use_ema=use_ema)
    load_state_dict_strict(net, state, source=str(path))
    if data_range is None:
        data_range = (-1.0, 1.0) if cfg.centered else (0.0, 1.0)
    D = VEScoreDenoiser(net, cfg.sigma_min, cfg.sigma_max, data_range=data_range, name=os.path.basename(str(path)),
                        pad_multiple=cfg.pad_multiple)
    D.checkpoint_info = info
    return D.to(device).eval()
