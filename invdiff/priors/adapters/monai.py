"""MONAI ``DiffusionModelUNet`` checkpoints (2D and 3D) as EDM denoisers, with MONAI's DDPM schedule.

A MONAI bundle (``monai.bundle``) keeps the weights as ``models/model.pt`` (``torch.save`` of the
network's state dict) and the network's constructor arguments in ``configs/*.json`` under the
network definition, e.g.::

    "network_def": {"_target_": "monai.networks.nets.DiffusionModelUNet", "spatial_dims": 3,
                    "in_channels": 1, "out_channels": 1, "channels": [32, 64, 64], ...},
    "noise_scheduler": {"_target_": "monai.networks.schedulers.DDPMScheduler",
                        "num_train_timesteps": 1000, "schedule": "scaled_linear_beta",
                        "beta_start": 0.0015, "beta_end": 0.0195}

:func:`load_monai` takes ``config=`` (those constructor arguments, or a whole bundle config with a
``network_def`` entry; a dict, a JSON file or a YAML file) and ``scheduler=`` (``DDPMScheduler`` arguments). It
builds ``DiffusionModelUNet(**config)``, loads the weights strictly (missing / unexpected keys are
listed) and wraps the network in :class:`~invdiff.priors.adapters.vp.VPEpsDenoiser`.

The schedule is MONAI's, taken from ``monai.networks.schedulers`` (float32,
``alpha_bar_t = prod_{s<=t} (1 - beta_s)``)::

    linear_beta         beta_t = linspace(beta_start, beta_end, T)
    scaled_linear_beta  beta_t = linspace(sqrt(beta_start), sqrt(beta_end), T)^2
    sigmoid_beta        beta_t = sigmoid(linspace(-r, r, T)) (beta_end - beta_start) + beta_start, r = sig_range
    cosine              ab(u) = cos^2((u / T + s) / (1 + s) pi / 2) / ab(0),
                        beta_t = clip(1 - ab(t + 1) / ab(t), 0, 0.999)

With ``sigma_t = sqrt((1 - ab_t) / ab_t)`` and ``x_t = x / sqrt(1 + sigma^2) = sqrt(ab) x``, MONAI's
``DDPMScheduler.step`` estimate of ``x0`` ("pred_original_sample") is, per prediction type,

    epsilon:       x0 = (x_t - sqrt(1 - ab) eps) / sqrt(ab)        = x - sigma eps
    v_prediction:  x0 = sqrt(ab) x_t - sqrt(1 - ab) v               (eps = sqrt(ab) v + sqrt(1 - ab) x_t)
    sample:        x0 = f(x_t, t)

which is :class:`VPEpsDenoiser`'s ``D(x, sigma)`` (never clipped: ``clip_sample`` is a sampler option,
not part of the denoiser). Any spatial size: inputs are reflect-padded to multiples of
``2^(len(channels) - 1)`` (each level but the last halves every spatial size) and cropped back.

Requires the optional ``monai`` package (``pip install 'invdiff[monai]'``), imported only here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from invdiff.priors.adapters.vp import PREDICTION_TYPES, VPEpsDenoiser
from invdiff.priors.checkpoint import load_state_dict_strict, read_state_dict

MONAI_SCHEDULES = ("linear_beta", "scaled_linear_beta", "sigmoid_beta", "cosine")
# MONAI Generative (the package MONAI's generative networks came from) named these differently
_LEGACY_SCHEDULES = {"linear": "linear_beta", "scaled_linear": "scaled_linear_beta", "sigmoid": "sigmoid_beta"}
_SAMPLER_ONLY = ("variance_type", "clip_sample", "clip_sample_min", "clip_sample_max", "steps_offset",
                 "set_alpha_to_one", "skip_prk_steps")
_SCHEDULER_KEYS = ("noise_scheduler", "scheduler")


def monai_alphas_cumprod(schedule: str = "linear_beta", num_train_timesteps: int = 1000, *,
                         beta_start: float = 1e-4, beta_end: float = 2e-2, sig_range: float = 6.0,
                         s: float = 8e-3) -> Tensor:
    """``alpha_bar_t`` of MONAI's named noise schedules (see the module docstring), float32 maths, float64 out.

    Computed by MONAI itself (``monai.networks.schedulers.Scheduler``, what its ``DDPMScheduler`` builds);
    this function adds the checks, MONAI Generative's names and the routing of each schedule's arguments.

    Parameters
    ----------
    schedule : {"linear_beta", "scaled_linear_beta", "sigmoid_beta", "cosine"}
        MONAI's ``NoiseSchedules`` name (MONAI Generative's ``"linear"``, ``"scaled_linear"`` also accepted).
    num_train_timesteps : int
        ``T``.
    beta_start, beta_end : float
        Ends of the beta range (the three beta schedules).
    sig_range : float
        ``sigmoid_beta``'s input range ``[-sig_range, sig_range]``.
    s : float
        ``cosine``'s offset.
    """
    schedule = _LEGACY_SCHEDULES.get(schedule, schedule)
    T = num_train_timesteps
    if isinstance(T, bool) or not isinstance(T, int) or T < 2:
        raise ValueError(f"num_train_timesteps: expected an integer >= 2, got {T!r}")
    if schedule not in MONAI_SCHEDULES:
        raise ValueError(f"schedule: expected one of {MONAI_SCHEDULES}, got {schedule!r}")
    args = {"s": s} if schedule == "cosine" else dict(beta_start=beta_start, beta_end=beta_end)
    if schedule == "sigmoid_beta":
        args["sig_range"] = sig_range
    try:
        from monai.networks.schedulers import Scheduler
    except ImportError as exc:
        raise ImportError("monai_alphas_cumprod needs the 'monai' package: pip install 'invdiff[monai]'") from exc
    sched = Scheduler(T, schedule, **args)  # MONAI's own schedule (float32), as its DDPMScheduler builds it
    if not bool(((sched.betas > 0) & (sched.betas < 1)).all()):
        raise ValueError(f"beta_start, beta_end: the betas must lie in (0, 1), got {beta_start!r}, {beta_end!r}")
    return sched.alphas_cumprod.to(torch.float64)


def _read_config(config: Mapping[str, Any] | str | os.PathLike, arg: str) -> dict[str, Any]:
    """A dict, or the object in the JSON file ``config`` (``.yaml`` / ``.yml``: read with PyYAML's ``safe_load``)."""
    if isinstance(config, Mapping):
        return dict(config)
    if not isinstance(config, (str, os.PathLike)):
        raise TypeError(f"{arg}: expected a dict or the path of a JSON file, got {type(config).__name__}")
    path = Path(config)
    if not path.is_file():
        raise FileNotFoundError(f"{arg}: {path}: no such file")
    is_yaml = path.suffix.lower() in (".yaml", ".yml")
    if is_yaml:
        try:
            import yaml
        except ImportError as exc:
            raise ImportError(f"{arg}: reading the YAML file {path} needs PyYAML (pip install pyyaml), "
                              "or convert it to JSON") from exc
    try:
        text = path.read_text()
        obj = yaml.safe_load(text) if is_yaml else json.loads(text)
    except Exception as exc:  # OSError, ValueError, yaml.YAMLError
        raise ValueError(f"{arg}: {path} is not readable {'YAML' if is_yaml else 'JSON'} ({exc})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{arg}: {path} must hold a mapping, got {type(obj).__name__}")
    return obj


def _resolve_refs(value: Any, root: Mapping[str, Any], arg: str, depth: int = 0) -> Any:
    """Replace MONAI bundle references ``"@name"`` / ``"@a#b"`` by the bundle's entries; refuse ``"$"`` code."""
    if depth > 20:
        raise ValueError(f"{arg}: circular '@' references in the bundle config")
    if isinstance(value, str) and value.startswith("@"):
        node: Any = root
        for part in value[1:].split("#"):
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise ValueError(f"{arg}: the reference {value!r} names no entry of the config")
        return _resolve_refs(node, root, arg, depth + 1)
    if isinstance(value, str) and value.startswith("$"):
        raise ValueError(f"{arg}: {value!r} is a MONAI bundle expression (Python code), which invdiff does not "
                         "evaluate; write the value itself")
    if isinstance(value, Mapping):
        return {k: _resolve_refs(v, root, arg, depth) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_refs(v, root, arg, depth) for v in value]
    return value


def _target_is(entry: Any, cls_name: str) -> bool:
    return isinstance(entry, Mapping) and str(entry.get("_target_", "")).split(".")[-1] == cls_name


def network_and_scheduler_args(config: Mapping[str, Any] | str | os.PathLike,
                               scheduler: Mapping[str, Any] | str | os.PathLike | None = None
                               ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(DiffusionModelUNet arguments, DDPMScheduler arguments)`` from ``config`` and ``scheduler``.

    ``config`` is either the constructor arguments themselves (an optional ``_target_`` must name
    ``DiffusionModelUNet``) or a bundle config holding them under ``network_def``; there, ``"@name"``
    references are resolved against the bundle and, without ``scheduler``, the ``noise_scheduler`` /
    ``scheduler`` entry (a DDPM or DDIM scheduler: the same training schedule) gives the schedule.
    """
    root = _read_config(config, "config")
    sched = None if scheduler is None else _read_config(scheduler, "scheduler")
    if "network_def" in root:
        net = _resolve_refs(root["network_def"], root, "config")
        if sched is None:
            for key in _SCHEDULER_KEYS:
                if isinstance(root.get(key), Mapping):
                    sched = _resolve_refs(root[key], root, "config")
                    break
    else:
        net = _resolve_refs(root, root, "config")
    if not isinstance(net, Mapping):
        raise ValueError(f"config: expected the network's constructor arguments as a JSON object, got {net!r}")
    net = dict(net)
    target = net.pop("_target_", "DiffusionModelUNet")
    if str(target).split(".")[-1] != "DiffusionModelUNet":
        raise ValueError(f"config: _target_ is {target!r}; only MONAI's DiffusionModelUNet is supported")
    net.pop("_requires_", None)
    if "num_channels" in net and "channels" not in net:  # MONAI Generative's name
        net["channels"] = net.pop("num_channels")
    if net.get("with_conditioning") or net.get("num_class_embeds") is not None:
        raise ValueError("config: conditional networks (with_conditioning / num_class_embeds) are not supported; "
                         "a prior is an unconditional denoiser")
    sched = dict(sched or {})
    target = sched.pop("_target_", "DDPMScheduler")
    if str(target).split(".")[-1] not in ("DDPMScheduler", "DDIMScheduler"):
        raise ValueError(f"scheduler: _target_ is {target!r}; expected MONAI's DDPMScheduler (or DDIMScheduler)")
    if "beta_schedule" in sched and "schedule" not in sched:  # MONAI Generative's name
        sched["schedule"] = sched.pop("beta_schedule")
    return net, sched


def build_monai_unet(net_args: Mapping[str, Any]) -> nn.Module:
    """``monai.networks.nets.DiffusionModelUNet(**net_args)``, with a clear error for wrong arguments."""
    try:
        from monai.networks.nets import DiffusionModelUNet
    except ImportError as exc:
        raise ImportError("load_monai needs the 'monai' package: pip install 'invdiff[monai]'") from exc
    for key in ("spatial_dims", "in_channels", "out_channels"):
        if key not in net_args:
            raise ValueError(f"config: missing {key!r}; DiffusionModelUNet needs spatial_dims, in_channels and "
                             f"out_channels, got {sorted(net_args)}")
    if net_args["spatial_dims"] not in (2, 3):
        raise ValueError(f"config: spatial_dims must be 2 or 3, got {net_args['spatial_dims']!r}")
    try:
        return DiffusionModelUNet(**net_args)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"config: DiffusionModelUNet rejects the arguments {dict(net_args)} ({exc})") from None


class MonaiUNetOutput(nn.Module):
    """``DiffusionModelUNet(x_t, timesteps)`` as a plain ``f(x_t, t)`` (its sinusoidal embedding takes fractional
    ``t``), checking that ``x_t`` has the network's dimensionality and channels."""

    def __init__(self, unet: nn.Module, spatial_dims: int):
        super().__init__()
        self.unet = unet
        self.spatial_dims = spatial_dims

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        c = self.unet.in_channels
        if x_t.ndim != self.spatial_dims + 2 or x_t.shape[1] != c:
            want = "(B, C, H, W)" if self.spatial_dims == 2 else "(B, C, D, H, W)"
            raise ValueError(f"x: this MONAI network is {self.spatial_dims}D; expected shape {want} with C={c}, "
                             f"got {tuple(x_t.shape)}")
        return self.unet(x_t, t.reshape(-1).expand(x_t.shape[0]))


def load_monai(path: str | os.PathLike, device: str | torch.device = "cpu", *,
               config: Mapping[str, Any] | str | os.PathLike | None = None,
               scheduler: Mapping[str, Any] | str | os.PathLike | None = None,
               prediction_type: str | None = None, data_range: tuple[float, float] = (0.0, 1.0),
               timestep: str = "interp", key: str | None = None) -> VPEpsDenoiser:
    """Load a MONAI ``DiffusionModelUNet`` state dict (2D or 3D) as an EDM denoiser.

    Parameters
    ----------
    path : path-like
        The weights: a bundle's ``models/model.pt`` (read with ``torch.load(weights_only=True)``) or a
        ``.safetensors`` file.
    device : str or torch.device
        Where the network goes.
    config : dict or path of a JSON (or, with PyYAML installed, YAML) file
        ``DiffusionModelUNet``'s constructor arguments (``spatial_dims``, ``in_channels``, ``out_channels``,
        ``channels``, ``attention_levels``, ``num_res_blocks``, ``num_head_channels``, ...), or a bundle
        config with them under ``network_def`` (``"@name"`` references resolved, ``"$"`` code refused).
    scheduler : dict or path of a JSON file, optional
        ``DDPMScheduler`` arguments: ``num_train_timesteps`` (1000), ``schedule`` (``"linear_beta"``),
        ``beta_start``, ``beta_end``, ``sig_range``, ``s``, ``prediction_type`` (``"epsilon"``). Default:
        the bundle config's ``noise_scheduler`` entry, else MONAI's defaults. Sampler-only arguments
        (``clip_sample``, ``variance_type``, ...) are ignored.
    prediction_type : {"epsilon", "v_prediction", "sample"}, optional
        Overrides the scheduler's.
    data_range : tuple of float
        Intensity range of the training data; MONAI's generative tutorials and bundles scale images to
        ``(0, 1)``, the default.
    timestep : {"interp", "nearest"}
        sigma-to-timestep mapping (see :class:`VPEpsDenoiser`).
    key : str, optional
        Entry of a nested checkpoint dict holding the state dict (e.g. ``"model"``).

    Returns
    -------
    VPEpsDenoiser
        In eval mode on ``device``, for ``(B, C, H, W)`` (``spatial_dims=2``) or ``(B, C, D, H, W)``
        (``spatial_dims=3``) inputs of any size, with ``data_range``, ``sigma_min`` and ``sigma_max``.
    """
    if config is None:
        raise ValueError("config: arch='monai' needs the network's constructor arguments (a dict, or the path of "
                         "a JSON file holding them or a bundle config with network_def)")
    net_args, sched = network_and_scheduler_args(config, scheduler)
    for name in _SAMPLER_ONLY:
        sched.pop(name, None)
    pred = prediction_type or sched.pop("prediction_type", "epsilon")
    sched.pop("prediction_type", None)
    if pred not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type: expected one of {PREDICTION_TYPES}, got {pred!r}")
    known = {"schedule", "num_train_timesteps", "beta_start", "beta_end", "sig_range", "s"}
    if set(sched) - known:
        raise ValueError(f"scheduler: unknown argument(s) {sorted(set(sched) - known)}; expected some of "
                         f"{sorted(known | {'prediction_type', *_SAMPLER_ONLY})}")
    sched.setdefault("num_train_timesteps", 1000)
    ab = monai_alphas_cumprod(**sched)
    unet = build_monai_unet(net_args)
    load_state_dict_strict(unet, read_state_dict(path, key=key), source=str(path))
    pad = 2 ** (len(unet.block_out_channels) - 1)
    D = VPEpsDenoiser(MonaiUNetOutput(unet, int(net_args["spatial_dims"])), ab, data_range=data_range,
                      prediction_type=pred, timestep=timestep, name=os.path.basename(str(path)), pad_multiple=pad)
    return D.to(device).eval()
