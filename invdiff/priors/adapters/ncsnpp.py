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

The network is :class:`~invdiff.priors.adapters.ncsnpp_net.NCSNpp` (written from the published
architecture, checked against the original), the denoiser
:class:`~invdiff.priors.adapters.ve.VEScoreDenoiser`; both are re-exported here.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from invdiff.priors.adapters.common import resolve_config
from invdiff.priors.adapters.ncsnpp_net import NCSNPP_CONFIGS, NCSNpp, NCSNppConfig
from invdiff.priors.adapters.ve import VEScoreDenoiser
from invdiff.priors.checkpoint import load_state_dict_strict, torch_load_plain

__all__ = ["NCSNPP_CONFIGS", "NCSNpp", "NCSNppConfig", "VEScoreDenoiser", "load_ncsnpp", "read_ncsnpp_checkpoint"]


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
