"""invdiff's own small UNet: the network ``F_theta(c_in x, c_noise)`` behind the shipped priors.

A plain residual UNet without attention, sized for CPUs (about 1-4 M parameters). ``dims=2`` gives
the image network, ``dims=3`` the volume variant with the same layout. The noise level enters as a
Fourier embedding of ``c_noise`` added inside every residual block (as in EDM's DDPM++ blocks).

``extra_blocks`` deepens a trained network without changing what it computes: each level of the
encoder and of the decoder, and the middle, gains that many residual blocks ``x + h(x)`` whose last
convolution starts at zero, so they start as the identity (a Net2DeeperNet-style growth, Chen et al.
2016). :meth:`UNet.load_grown` fills the old blocks from a smaller network's weights.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class UNetConfig:
    """Hyperparameters of :class:`UNet`; stored as JSON beside the weights."""

    in_channels: int = 1
    out_channels: int = 1
    channels: tuple[int, ...] = (32, 64, 96)
    blocks_per_level: int = 1
    extra_blocks: int = 0
    emb_dim: int = 128
    dims: int = 2
    dropout: float = 0.0
    groups: int = 8

    def __post_init__(self):
        if isinstance(self.extra_blocks, bool) or not isinstance(self.extra_blocks, int) or self.extra_blocks < 0:
            raise ValueError(f"UNetConfig: extra_blocks must be an int >= 0, got {self.extra_blocks!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"UNet config: unknown keys {sorted(unknown)}; expected a subset of {sorted(known)}")
        d = dict(d)
        if "channels" in d:
            d["channels"] = tuple(int(c) for c in d["channels"])
        return cls(**d)


def _conv(dims: int):
    return {2: nn.Conv2d, 3: nn.Conv3d}[dims]


class FourierEmbedding(nn.Module):
    """Sinusoidal embedding of a scalar per batch element (``c_noise = log(sigma) / 4``)."""

    def __init__(self, dim: int, max_period: float = 100.0):
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half) / half)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        arg = t[:, None].float() * self.freqs[None] * 100.0
        return torch.cat([torch.cos(arg), torch.sin(arg)], dim=1)


class ResBlock(nn.Module):
    """``(h(x) + skip(x)) / sqrt(2)``, or ``x + h(x)`` with ``identity=True`` (then ``c_in == c_out``; an
    identity map at initialisation, since ``h``'s last convolution starts at zero)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dims: int, groups: int, dropout: float,
                 identity: bool = False):
        super().__init__()
        if identity and c_in != c_out:
            raise ValueError(f"ResBlock: identity=True needs c_in == c_out, got {c_in} and {c_out}")
        self.identity = identity
        Conv = _conv(dims)
        self.norm1 = nn.GroupNorm(min(groups, c_in), c_in)
        self.conv1 = Conv(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(min(groups, c_out), c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = Conv(c_out, c_out, 3, padding=1)
        self.skip = Conv(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        scale, shift = self.emb(emb).reshape(emb.shape[0], -1, *([1] * (x.ndim - 2))).chunk(2, dim=1)
        h = nn.functional.silu(self.norm2(h) * (1 + scale) + shift)
        h = self.conv2(self.dropout(h))
        if self.identity:
            return x + h
        return (h + self.skip(x)) / math.sqrt(2)


class UNet(nn.Module):
    """Residual UNet ``F(x, c_noise)``: input ``(B, C, H, W)`` (or ``(B, C, D, H, W)`` for ``dims=3``).

    Spatial sizes must be divisible by ``2 ** (len(channels) - 1)``; :class:`~invdiff.priors.edm.EDMDenoiser`
    reflect-pads other sizes to that (:mod:`invdiff.priors.padding`).

    >>> net = UNet(UNetConfig(channels=(16, 32)))
    >>> net(torch.zeros(2, 1, 16, 16), torch.zeros(2)).shape
    torch.Size([2, 1, 16, 16])
    """

    def __init__(self, config: UNetConfig = UNetConfig()):
        super().__init__()
        self.config = config
        c, dims, g, p = config.channels, config.dims, config.groups, config.dropout
        Conv = _conv(dims)
        E = config.emb_dim
        self.embed = nn.Sequential(FourierEmbedding(E), nn.Linear(E, E), nn.SiLU(), nn.Linear(E, E), nn.SiLU())
        self.conv_in = Conv(config.in_channels, c[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips = []
        ch = c[0]
        for i, c_level in enumerate(c):
            blocks = nn.ModuleList()
            for _ in range(config.blocks_per_level):
                blocks.append(ResBlock(ch, c_level, E, dims, g, p))
                ch = c_level
            blocks.extend(ResBlock(ch, ch, E, dims, g, p, identity=True) for _ in range(config.extra_blocks))
            self.down.append(blocks)
            skips.append(ch)
            self.downsample.append(Conv(ch, ch, 3, stride=2, padding=1) if i < len(c) - 1 else nn.Identity())
        self.mid = ResBlock(ch, ch, E, dims, g, p)
        self.mid_extra = nn.ModuleList(ResBlock(ch, ch, E, dims, g, p, identity=True)
                                       for _ in range(config.extra_blocks))
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, c_level in reversed(list(enumerate(c))):
            blocks = nn.ModuleList()
            for j in range(config.blocks_per_level):
                blocks.append(ResBlock(ch + (skips[i] if j == 0 else 0), c_level, E, dims, g, p))
                ch = c_level
            blocks.extend(ResBlock(ch, ch, E, dims, g, p, identity=True) for _ in range(config.extra_blocks))
            self.up.append(blocks)
            self.upsample.append(nn.Upsample(scale_factor=2, mode="nearest") if i > 0 else nn.Identity())
        self.norm_out = nn.GroupNorm(min(g, ch), ch)
        self.conv_out = Conv(ch, config.out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        emb = self.embed(c_noise)
        h = self.conv_in(x)
        hs = []
        for blocks, down in zip(self.down, self.downsample):
            for block in blocks:
                h = block(h, emb)
            hs.append(h)
            h = down(h)
        h = self.mid(h, emb)
        for block in self.mid_extra:
            h = block(h, emb)
        for blocks, up in zip(self.up, self.upsample):
            for j, block in enumerate(blocks):
                h = block(torch.cat([h, hs.pop()], dim=1) if j == 0 else h, emb)
            h = up(h)
        return self.conv_out(nn.functional.silu(self.norm_out(h)))

    def load_grown(self, state_dict: dict[str, Tensor]) -> list[str]:
        """Load the weights of a network that differs from this one only by fewer ``extra_blocks``.

        Every tensor of ``state_dict`` must exist here with the same shape; the blocks it lacks keep their
        identity initialisation, so this network then computes exactly what the smaller one did. Returns
        the names of the parameters left at initialisation.
        """
        own = self.state_dict()
        wrong = {k: (tuple(v.shape), tuple(own[k].shape)) for k, v in state_dict.items()
                 if k in own and own[k].shape != v.shape}
        unexpected = sorted(set(state_dict) - set(own))
        if wrong or unexpected:
            raise ValueError(f"load_grown: the weights do not fit this network (shape mismatches {wrong}, "
                             f"unexpected keys {unexpected[:5]}); expected a network with the same channels "
                             "and blocks_per_level and fewer extra_blocks")
        missing = self.load_state_dict(state_dict, strict=False).missing_keys
        extra = tuple(f"{name}." for name, m in self.named_modules() if isinstance(m, ResBlock) and m.identity)
        stray = [name for name in missing if not name.startswith(extra)]
        if stray:
            raise ValueError(f"load_grown: weights {stray[:5]} are missing and are not part of an extra block")
        return missing
