"""Safe checkpoint reading shared by every adapter: no pickled code, clear key mismatch errors."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn


def torch_load_plain(path: Path) -> object:
    """``torch.load(path, weights_only=True)`` on the CPU; a missing file or a pickle carrying code is refused
    (``FileNotFoundError`` / ``ValueError`` naming the file)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError and friends
        raise ValueError(
            f"{path}: refused to load; it is not a plain tensor checkpoint readable with "
            f"torch.load(weights_only=True) ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        ) from None


def read_state_dict(path: str | os.PathLike, key: str | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file, never running pickled code.

    Torch files are opened with ``torch.load(weights_only=True)``: a pickle that would construct
    arbitrary objects is refused with a ``ValueError``. ``key`` selects a nested dict
    (e.g. ``"model"`` or ``"ema"`` in training checkpoints).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj = load_file(str(path))
    else:
        obj = torch_load_plain(path)
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            have = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
            raise KeyError(f"{path}: no entry {key!r} in the checkpoint; it has {have}")
        obj = obj[key]
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ValueError(f"{path}: expected a state dict (a mapping of names to tensors)")
    return obj


def load_state_dict_strict(net: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """``net.load_state_dict(state)`` that lists missing, unexpected and mis-shaped keys on failure."""
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:

        def short(keys):
            return keys[:10] + ([f"... ({len(keys) - 10} more)"] if len(keys) > 10 else [])

        parts = [f"{source}: the state dict does not match {type(net).__name__}"]
        if missing:
            parts.append(f"missing keys {short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {short(unexpected)}")
        if shapes:
            parts.append("shape mismatches " + str(short([f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in shapes])))
        raise ValueError("; ".join(parts))
    net.load_state_dict(state, strict=True)
