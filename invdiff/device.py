"""Where tensors live: one rule for operators, priors, solvers and the command line.

The rule
--------
* A solver computes on ``device`` when one is given, else on the **measurement's** device
  (``device=None``, the default). Every tensor a solver, operator or prior makes inside a
  reconstruction is made on that device (``torch.randn(..., device=y.device)``), never on the
  default device.
* The operator and the prior are moved there **in place** with ``.to(device)``, as torch modules
  are; ``y`` is copied there. Modules already on that device are left alone (no copy).
* The result (``Reconstruction.mean``, ``samples``, ``std``) comes back on ``y``'s own device: a
  CPU measurement solved with ``device="cuda"`` gives CPU tensors, and ``solver(y, op)`` stays
  deepinv-compatible (output where the input is).
* ASTRA's CT projectors run where the data are: CUDA projectors for CUDA tensors when ASTRA was
  built with CUDA (:func:`invdiff.operators.functional.astra_cuda.astra_mode`), its CPU projectors
  for CPU tensors (unchanged).

:func:`check_device` turns ``"cpu"``, ``"cuda:0"``, ``torch.device(...)`` or ``None`` into a
``torch.device`` (or ``None``) and fails with one message naming the argument, the value and what
was expected, also for a CUDA device on a machine without CUDA.
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_device(device: str | torch.device | None, name: str = "device") -> torch.device | None:
    """``device`` as a :class:`torch.device` (``None`` stays ``None``: "the measurement's device").

    Raises
    ------
    TypeError
        ``device`` is neither a string, a ``torch.device`` nor ``None``.
    ValueError
        The string is not a torch device (``"gpu"``), or names an accelerator that is not present
        (``"cuda"`` without CUDA, ``"cuda:3"`` on a machine with one GPU).

    Examples
    --------
    >>> check_device("cpu")
    device(type='cpu')
    >>> check_device(None) is None
    True
    """
    if device is None:
        return None
    if isinstance(device, bool) or not isinstance(device, (str, torch.device)):
        raise TypeError(f"{name}: expected a torch device such as 'cpu', 'cuda' or 'cuda:1' (or None for the "
                        f"measurement's device), got {type(device).__name__} {device!r}")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"{name}: expected a torch device such as 'cpu', 'cuda' or 'cuda:1', got {device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name}: {device!r} asks for a CUDA GPU, but CUDA is not available on this machine "
                             f"(torch {torch.__version__}); expected 'cpu'")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise ValueError(f"{name}: {device!r} names GPU {dev.index}, but this machine has {n}; expected an "
                             f"index in 0..{n - 1}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name}: {device!r} asks for Apple's MPS, which is not available here; expected 'cpu'")
    return dev


def module_device(module) -> torch.device | None:
    """The device of ``module``'s first parameter or buffer (``None``: it holds no tensors)."""
    if not isinstance(module, torch.nn.Module):
        return None
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return None


def move_module(module, device: torch.device):
    """``module.to(device)`` in place where it is a module whose tensors live elsewhere; else untouched."""
    if isinstance(module, torch.nn.Module):
        here = {t.device for t in module.parameters()} | {t.device for t in module.buffers()}
        if here and here != {device}:
            module.to(device)
    return module


def same_device(a: torch.device, b: torch.device) -> bool:
    """``cuda`` and ``cuda:<current>`` are the same device; otherwise type and index must agree."""
    if a.type != b.type:
        return False
    if a.type != "cuda" or (a.index is not None and b.index is not None):
        return a.index == b.index or (a.index is None and b.index is None)
    cur = torch.cuda.current_device()
    return (a.index if a.index is not None else cur) == (b.index if b.index is not None else cur)


def to_device(t: Tensor, device: torch.device) -> Tensor:
    """``t`` on ``device`` (the tensor itself when it is already there)."""
    return t if same_device(t.device, device) else t.to(device)


def place(module, device: str | torch.device | None, name: str = "device"):
    """``module`` moved to ``device`` (checked by :func:`check_device`); ``None`` leaves it where it is.

    What operator and prior constructors call with their ``device=`` argument.
    """
    dev = check_device(device, name)
    if dev is not None:
        module.to(dev)
    return module
