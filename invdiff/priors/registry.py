"""``priors.load`` and ``priors.available``: embedded priors by name, checkpoints by path and family.

Embedded priors live in ``invdiff/priors/weights/`` as ``<name>.safetensors`` plus ``<name>.json``
(invdiff's own format, see :mod:`invdiff.priors.edm`). Public checkpoint families go through one
adapter each (:mod:`invdiff.priors.adapters`); the optional third-party ``diffusers`` package is
imported only when a diffusers folder is loaded (an ``ImportError`` naming ``invdiff[diffusers]``).
Every prior returned works at any image size (see :mod:`invdiff.priors.padding`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from invdiff.device import check_device
from invdiff.priors.adapters import adm, ncsnpp
from invdiff.priors.adapters import diffusers as diffusers_adapter
from invdiff.priors.adapters import monai as monai_adapter
from invdiff.priors.edm import EDMDenoiser
from invdiff.priors.slice_residual import SliceResidualDenoiser, is_slice_residual

WEIGHTS_DIR = Path(__file__).parent / "weights"
ARCHS = ("invdiff", "adm", "ncsnpp", "diffusers", "monai")


def available() -> list[str]:
    """Names of the embedded priors (``<name>.safetensors`` with its ``<name>.json``), sorted."""
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors") if p.with_suffix(".json").is_file())


def _infer_arch(path: Path) -> str:
    if path.is_dir():
        if (path / "unet").is_dir():
            return "diffusers"
    elif path.suffix in (".safetensors", ".json") and path.with_suffix(".json").is_file() \
            and path.with_suffix(".safetensors").is_file():
        return "invdiff"
    raise ValueError(f"arch: cannot tell the checkpoint family of {str(path)!r}; pass arch= one of {list(ARCHS)} "
                     f"(an invdiff prior is a .safetensors file with a .json beside it, a diffusers pipeline "
                     f"a folder with unet/)")


def _load_invdiff(path: Path, device):
    """invdiff's own format: an :class:`EDMDenoiser`, or a :class:`SliceResidualDenoiser` (JSON ``kind``)."""
    if is_slice_residual(Path(path).with_suffix(".json")):
        return SliceResidualDenoiser.from_file(path, device=device)
    return EDMDenoiser.from_file(path, device=device)


def load(name_or_path: str | os.PathLike, arch: str | None = None, device: str | torch.device = "cpu", **kwargs):
    """Load a prior: an embedded name (see :func:`available`) or a local checkpoint.

    Parameters
    ----------
    name_or_path : str or path-like
        An embedded prior's name (e.g. ``"phantom-ct-64"``), or a file / folder.
    arch : {"invdiff", "adm", "ncsnpp", "diffusers", "monai"}, optional
        The checkpoint family. ``None`` infers it: a ``.safetensors`` file with a ``.json`` beside it
        is ``"invdiff"``, a folder with ``unet/`` is ``"diffusers"``; anything else must say.
    device : str or torch.device
        Where the network goes.
    **kwargs
        Passed to the adapter (e.g. ``config=`` for ``"adm"`` and ``"ncsnpp"``; for ``"monai"``,
        ``config=`` is required: ``DiffusionModelUNet``'s constructor arguments, a dict or a JSON
        file, and ``scheduler=`` its ``DDPMScheduler`` arguments).

    Returns
    -------
    deepinv.models.Denoiser
        ``D(x, sigma) = E[x0 | x0 + sigma n]`` with ``data_range``, ``sigma_min`` and ``sigma_max``.

    Example
    -------
    >>> prior = load("phantom-ct-64")  # doctest: +SKIP
    >>> prior(torch.zeros(1, 1, 64, 64), 0.1).shape  # doctest: +SKIP
    torch.Size([1, 1, 64, 64])
    """
    if arch is not None and arch not in ARCHS:
        raise ValueError(f"arch: expected one of {list(ARCHS)} or None, got {arch!r}")
    if check_device(device) is None:  # a bad device fails before any file is read
        raise TypeError("device: expected a torch device such as 'cpu' or 'cuda' where the network goes, got None")
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"name_or_path: expected an embedded prior's name or a path, got {type(name_or_path).__name__}")
    path = Path(name_or_path)
    if not path.exists():
        if isinstance(name_or_path, str) and arch in (None, "invdiff") and name_or_path in available():
            return _load_invdiff(WEIGHTS_DIR / f"{name_or_path}.safetensors", device)
        looks_like_path = isinstance(name_or_path, os.PathLike) or os.sep in name_or_path or path.suffix != ""
        if looks_like_path:
            raise FileNotFoundError(f"{path}: no such checkpoint file or folder")
        raise ValueError(f"name_or_path: {name_or_path!r} is neither an embedded prior nor an existing path; "
                         f"embedded priors: {available()}")
    arch = arch or _infer_arch(path)
    if arch == "invdiff":
        if kwargs:
            raise TypeError(f"load: arch='invdiff' takes no extra arguments, got {sorted(kwargs)}")
        return _load_invdiff(path, device)
    if arch == "adm":
        return adm.load_adm(path, device, **kwargs)
    if arch == "ncsnpp":
        return ncsnpp.load_ncsnpp(path, device, **kwargs)
    if arch == "monai":
        return monai_adapter.load_monai(path, device, **kwargs)  # the monai package is imported there
    return diffusers_adapter.load_diffusers(path, device, **kwargs)  # the diffusers package is imported there
