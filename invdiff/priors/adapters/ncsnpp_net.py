"""score_sde's NCSN++ network (continuous VE models), with score_sde's module layout and key names.

Song et al., "Score-Based Generative Modeling through Stochastic Differential Equations", ICLR 2021
(github.com/yang-song/score_sde_pytorch), ``models/ncsnpp.py``; the networks of DiffusionMBIR
(Chung et al., CVPR 2023, github.com/HJ-harry/DiffusionMBIR). Loaded by :mod:`invdiff.priors.adapters.ncsnpp`.

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
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invdiff.priors.adapters.common import config_from_kwargs
from invdiff.utils import append_dims


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
