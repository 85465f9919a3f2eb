"""ADM (guided-diffusion) epsilon networks, as DPS and deepinv distribute them, as EDM denoisers.

Dhariwal & Nichol, "Diffusion Models Beat GANs on Image Synthesis", NeurIPS 2021
(github.com/openai/guided-diffusion); the checkpoints used by DPS (Chung et al., ICLR 2023,
github.com/DPS2022/diffusion-posterior-sampling): ``ffhq_10m.pt`` (FFHQ 256) and
``imagenet256.pt`` (guided-diffusion's ``256x256_diffusion_uncond.pt``). Each file is a plain
``torch.save(model.state_dict())`` with guided-diffusion's key names; the network predicts
``[eps, variance]`` (``2C`` channels, ``learn_sigma=True``) for the linear beta schedule
``1e-4 .. 0.02``, ``T = 1000``, on images in ``[-1, 1]``.

The network is :class:`ADMUNet`, assembled from deepinv's guided-diffusion building blocks
(``deepinv.models.diffunet``: ``ResBlock``, ``AttentionBlock``, ...). ``deepinv.models.DiffUNet``
is the same network but hard-codes the two public configurations (its constructor offers only
``large_model``) and adds two schedule buffers to its state dict; :class:`ADMUNet` takes
guided-diffusion's ``create_model`` arguments, so that small test networks and other checkpoints
can be built, and its keys are exactly guided-diffusion's. ``tests/test_adapters.py`` checks that
it reproduces ``DiffUNet`` at the FFHQ configuration, key for key and output for output.

A state dict saved from ``DiffUNet`` (``torch.save(model.state_dict())``, the checkpoint deepinv
users hold) loads too: its two schedule buffers ``sqrt_alphas_cumprod = sqrt(ab_t)`` and
``sqrt_1m_alphas_cumprod = sqrt(1 - ab_t)`` are checked against the loader's schedule (same length,
within ``SCHEDULE_BUFFER_ATOL``: DiffUNet computes them in float32) and then dropped; the denoiser
uses its own float64 ``ab_t``. Buffers of another schedule are refused, naming the largest difference.

The denoiser is :class:`~invdiff.priors.adapters.vp.VPEpsDenoiser`:
``D(x, sigma) = x - sigma * eps(x / sqrt(1 + sigma^2), t(sigma))``, at any image size (the input is
reflect-padded to a multiple of the network's ``2^(len(channel_mult) - 1)`` and cropped back).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from deepinv.models.diffunet import (
    AttentionBlock,
    Downsample,
    ResBlock,
    TimestepEmbedSequential,
    Upsample,
    normalization,
    timestep_embedding,
    zero_module,
)
from torch import Tensor, nn

from invdiff.priors.adapters.common import config_from_kwargs, resolve_config
from invdiff.priors.adapters.vp import VPEpsDenoiser, make_alphas_cumprod
from invdiff.priors.checkpoint import load_state_dict_strict, read_state_dict

# deepinv DiffUNet's schedule buffers, name -> function of alpha_bar; float32 there: |error| < 2e-6
DIFFUNET_BUFFERS = {"sqrt_alphas_cumprod": lambda ab: ab.sqrt(), "sqrt_1m_alphas_cumprod": lambda ab: (1 - ab).sqrt()}
SCHEDULE_BUFFER_ATOL = 1e-5

# guided-diffusion's default channel multipliers per image size (``channel_mult=""``)
_DEFAULT_MULT = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}


@dataclass(frozen=True)
class ADMConfig:
    """guided-diffusion ``create_model`` arguments; defaults are DPS's FFHQ 256 model.

    ``attention_resolutions`` are feature-map sizes (as in guided-diffusion's config files);
    ``channel_mult=()`` picks guided-diffusion's default for ``image_size``.
    """

    image_size: int = 256
    in_channels: int = 3
    num_channels: int = 128
    num_res_blocks: int = 1
    channel_mult: tuple[float, ...] = ()
    attention_resolutions: tuple[int, ...] = (16,)
    num_heads: int = 4
    num_head_channels: int = 64
    num_heads_upsample: int = -1
    learn_sigma: bool = True
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    dropout: float = 0.0

    def resolved_channel_mult(self) -> tuple[float, ...]:
        if self.channel_mult:
            return tuple(self.channel_mult)
        if self.image_size not in _DEFAULT_MULT:
            raise ValueError(f"channel_mult: no guided-diffusion default for image_size={self.image_size!r} "
                             f"(defaults exist for {sorted(_DEFAULT_MULT)}); pass channel_mult explicitly")
        return _DEFAULT_MULT[self.image_size]

    @property
    def pad_multiple(self) -> int:
        """Spatial sizes the network accepts are multiples of ``2^(len(channel_mult) - 1)``."""
        return 2 ** (len(self.resolved_channel_mult()) - 1)

    @classmethod
    def from_kwargs(cls, **kw) -> "ADMConfig":
        # "32,16,8" as in the YAML configs, or any sequence
        return config_from_kwargs(cls, kw, {"attention_resolutions": int, "channel_mult": float})


ADM_CONFIGS: dict[str, ADMConfig] = {
    # DPS configs/model_config.yaml (ffhq_10m.pt); deepinv's DiffUNet(large_model=False)
    "ffhq256": ADMConfig(),
    # DPS configs/imagenet_model_config.yaml (guided-diffusion 256x256_diffusion_uncond.pt);
    # deepinv's DiffUNet(large_model=True)
    "imagenet256": ADMConfig(num_channels=256, num_res_blocks=2, attention_resolutions=(32, 16, 8)),
}


class ADMUNet(nn.Module):
    """guided-diffusion's ``UNetModel`` (unconditional, 2D) from deepinv's building blocks.

    ``forward(x_t, t)`` returns the raw output: ``eps`` (``C`` channels) or ``[eps, v]`` (``2C``
    channels, ``learn_sigma``), for ``t`` a ``(B,)`` tensor of (possibly fractional) timesteps.
    State-dict keys are guided-diffusion's (``time_embed.*``, ``input_blocks.*``, ``middle_block.*``,
    ``output_blocks.*``, ``out.*``).

    Example
    -------
    >>> net = ADMUNet(ADMConfig(image_size=32, num_channels=32, channel_mult=(1, 2),
    ...                         attention_resolutions=(16,), num_head_channels=32))
    >>> net(torch.zeros(1, 3, 32, 32), torch.tensor([10.0])).shape
    torch.Size([1, 6, 32, 32])
    """

    def __init__(self, config: ADMConfig | None = None):
        super().__init__()
        cfg = self.config = config or ADMConfig()
        mult = cfg.resolved_channel_mult()
        attn_ds = {cfg.image_size // int(r) for r in cfg.attention_resolutions}
        heads_up = cfg.num_heads if cfg.num_heads_upsample == -1 else cfg.num_heads_upsample
        mc, emb_dim = cfg.num_channels, 4 * cfg.num_channels
        self.out_channels = cfg.in_channels * (2 if cfg.learn_sigma else 1)
        self.n_down = len(mult) - 1

        def res(ch_in, ch_out, **kw):
            return ResBlock(ch_in, emb_dim, cfg.dropout, out_channels=ch_out, dims=2,
                            use_scale_shift_norm=cfg.use_scale_shift_norm, **kw)

        def attn(ch, heads):
            return AttentionBlock(ch, num_heads=heads, num_head_channels=cfg.num_head_channels)

        def resample(ch, down):
            if cfg.resblock_updown:
                return res(ch, ch, down=down, up=not down)
            if down:
                return Downsample(ch, True, dims=2, out_channels=ch)
            return Upsample(ch, True, dims=2, out_channels=ch)

        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        ch = input_ch = int(mult[0] * mc)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(cfg.in_channels, ch, 3, padding=1))])
        skip_chans, ds = [ch], 1
        for level, m in enumerate(mult):
            for _ in range(cfg.num_res_blocks):
                layers = [res(ch, int(m * mc))]
                ch = int(m * mc)
                if ds in attn_ds:
                    layers.append(attn(ch, cfg.num_heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_chans.append(ch)
            if level != len(mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(resample(ch, down=True)))
                skip_chans.append(ch)
                ds *= 2
        self.middle_block = TimestepEmbedSequential(res(ch, ch), attn(ch, cfg.num_heads), res(ch, ch))
        self.output_blocks = nn.ModuleList()
        for level, m in list(enumerate(mult))[::-1]:
            for i in range(cfg.num_res_blocks + 1):
                layers = [res(ch + skip_chans.pop(), int(m * mc))]
                ch = int(m * mc)
                if ds in attn_ds:
                    layers.append(attn(ch, heads_up))
                if level and i == cfg.num_res_blocks:
                    layers.append(resample(ch, down=False))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(normalization(ch), nn.SiLU(),
                                 zero_module(nn.Conv2d(input_ch, self.out_channels, 3, padding=1)))

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        """Raw network output for VP states ``x_t`` ``(B, C, H, W)`` at timesteps ``t`` ``(B,)``."""
        k = 2**self.n_down
        if x_t.ndim != 4 or x_t.shape[1] != self.config.in_channels or x_t.shape[-1] % k or x_t.shape[-2] % k:
            raise ValueError(f"x_t: expected shape (B, {self.config.in_channels}, H, W) with H and W divisible "
                             f"by {k}, got {tuple(x_t.shape)}")
        emb = self.time_embed(timestep_embedding(t.reshape(-1).expand(x_t.shape[0]), self.config.num_channels))
        hs, h = [], x_t
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)


def drop_schedule_buffers(state: dict[str, Tensor], alphas_cumprod: Tensor, source: str = "checkpoint"
                          ) -> dict[str, Tensor]:
    """``state`` without deepinv ``DiffUNet``'s schedule buffers, after checking them against ``alphas_cumprod``.

    Each buffer present must have ``alphas_cumprod``'s length ``T`` and lie within
    ``SCHEDULE_BUFFER_ATOL`` of ``sqrt(ab_t)`` / ``sqrt(1 - ab_t)``; otherwise a ``ValueError`` names the
    buffer, the largest difference and its timestep, and the loader arguments that set the schedule.
    """
    out = dict(state)
    for name, fn in DIFFUNET_BUFFERS.items():
        if name not in out:
            continue
        buf = out.pop(name).detach().to("cpu", torch.float64).reshape(-1)
        want = fn(alphas_cumprod.to(torch.float64))
        if buf.shape != want.shape:
            raise ValueError(f"{source}: schedule buffer {name!r} has {buf.numel()} timesteps, the schedule "
                             f"(num_train_timesteps) has {want.numel()}; pass the checkpoint's num_train_timesteps")
        err = (buf - want).abs()
        if not bool(err.max() <= SCHEDULE_BUFFER_ATOL):  # also refuses NaN
            t = int(err.nan_to_num(float("inf")).argmax())
            raise ValueError(f"{source}: schedule buffer {name!r} disagrees with the schedule (linear betas "
                             f"beta_start..beta_end, num_train_timesteps) by up to {float(err[t]):.3g} at timestep "
                             f"{t} ({float(buf[t]):.6g} vs {float(want[t]):.6g}; tolerance {SCHEDULE_BUFFER_ATOL}); "
                             "pass the beta_start, beta_end and num_train_timesteps the network was trained with")
    return out


def load_adm(path: str | os.PathLike, device: str | torch.device = "cpu", *, config: str | ADMConfig | None = None,
             timestep: str = "interp", data_range: tuple[float, float] = (-1.0, 1.0),
             beta_start: float = 1e-4, beta_end: float = 0.02, num_train_timesteps: int = 1000,
             **net_kw) -> VPEpsDenoiser:
    """Load a guided-diffusion state dict (``torch.save(model.state_dict())``) as an EDM denoiser.

    Parameters
    ----------
    path : path-like
        ``.pt`` file (read with ``torch.load(weights_only=True)``) or ``.safetensors``: a guided-diffusion
        state dict, or one saved from deepinv's ``DiffUNet`` (its schedule buffers are checked against
        the schedule below, then dropped; see :func:`drop_schedule_buffers`).
    device : str or torch.device
        Where the network goes.
    config : {"ffhq256", "imagenet256"} or ADMConfig, optional
        Network configuration; ``None`` is DPS's FFHQ 256 model. Keyword arguments ``net_kw``
        (``image_size``, ``num_channels``, ``num_res_blocks``, ``channel_mult``, ``attention_resolutions``,
        ``num_heads``, ``num_head_channels``, ``learn_sigma``, ...) override single fields.
    timestep : {"interp", "nearest"}
        sigma-to-timestep mapping (see :class:`VPEpsDenoiser`).
    data_range : tuple of float
        Intensity range of the training data; ``(-1, 1)`` for the DPS/guided-diffusion checkpoints.
    beta_start, beta_end, num_train_timesteps :
        The linear beta schedule the network was trained with.

    Returns
    -------
    VPEpsDenoiser
        In eval mode on ``device``, with ``data_range``, ``sigma_min`` (about 0.010) and ``sigma_max``
        (about 157) for the default schedule. Any image size: inputs are reflect-padded to multiples of
        ``2^(len(channel_mult) - 1)`` (32 for the 256 models) around the network and cropped back.
    """
    cfg = resolve_config(config, ADM_CONFIGS, ADMConfig, net_kw)
    ab = make_alphas_cumprod("linear", num_train_timesteps, beta_start, beta_end)
    state = drop_schedule_buffers(read_state_dict(path), ab, source=str(path))
    net = ADMUNet(cfg)
    load_state_dict_strict(net, state, source=str(path))
    D = VPEpsDenoiser(net, ab, data_range=data_range, prediction_type="epsilon", timestep=timestep,
                      name=os.path.basename(str(path)), pad_multiple=cfg.pad_multiple)
    return D.to(device).eval()
