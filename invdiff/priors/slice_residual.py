"""A native 3D prior built on a 2D one: the slice-wise 2D estimate plus a learned 3D correction.

A 2D prior applied slice by slice (:class:`~invdiff.priors.slice.SliceDenoiser`), ``D2s``, sees one
axial slice at a time and so cannot use the neighbouring slices. A small 3D UNet ``R_theta`` adds what
the z context gives (and any in-plane improvement), with EDM's preconditioning (Karras et al. 2022,
github.com/NVlabs/edm, ``EDMPrecond``)::

    D3(x, sigma) = D2s(x, sigma) + c_out(sigma) R_theta(u, c_noise(sigma))

    u = [ c_in x,  c_in D2s(x, sigma),  (x - D2s(x, sigma)) / sigma,
          c_in E_k,  (E_k - D2s(x, sigma)) / sigma   for each window k in z_windows ]
    E_k = D2s(M_k x, sigma / sqrt(n_k))           (the 2D prior on z-averaged slices)
    c_in = 1 / sqrt(sigma^2 + s_d^2)     c_out = sigma s_d / sqrt(sigma^2 + s_d^2)     c_noise = log(sigma) / 4

``c_in`` scales the noisy volume and the 2D estimates to unit variance as in EDM; ``(x - D2s) / sigma``
is the noise that the 2D prior removed, in units of ``sigma``. ``M_k`` averages each slice with its
neighbours in a window of ``k`` slices along z (``n_k(z)`` of them inside the volume: fewer at the two
ends), so the noise of ``M_k x`` has standard deviation ``sigma / sqrt(n_k)`` and the 2D prior denoises
it at that level: where the object does not change over ``k`` slices, ``E_k`` is the 2D estimate at a
much lower noise level; where it does (the caps of the ellipsoids), ``E_k`` is blurred along z, and
``(E_k - D2s) / sigma`` shows where. ``R_theta`` learns where to trust which.
``R_theta``'s output layer starts at zero, so before training ``D3 = D2s`` exactly. ``D2s`` is frozen.

Training loss: EDM's x0-prediction loss with its weight ``lambda(sigma) = 1 / c_out(sigma)^2``,
``x = x0 + sigma n``::

    L = E lambda(sigma) |D3(x, sigma) - x0|^2 = E | R_theta(u, c_noise) - (x0 - D2s(x, sigma)) / c_out |^2

so ``R_theta`` regresses the 2D prior's error in units of ``c_out`` (EDM's effective target with
``c_skip x`` replaced by ``D2s``); ``D2s`` is computed without gradients in training. At run time
gradients flow through both parts (DPS, RED-Diff).

Volumes larger than the training volume: ``D2s`` always runs on whole slices; the correction runs on
overlapping tiles of the training size, blended with :class:`~invdiff.priors.tiled.TiledDenoiser`'s
weights (which sum to one, so the blend is ``D2s + c_out * blend(R)``).

On disk (``arch="invdiff"``, ``kind="slice-residual-3d"``): ``R_theta``'s state dict as safetensors,
and a JSON file with its UNet config, ``sigma_data``, the tile size and ``base_prior``, the 2D prior's
embedded name (or a file name next to the JSON). The 2D weights are not duplicated.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import deepinv as dinv
import torch
from torch import Tensor

from invdiff.priors.checkpoint import load_state_dict_strict
from invdiff.priors.padding import call_padded
from invdiff.priors.slice import SliceDenoiser
from invdiff.priors.tiled import TiledDenoiser
from invdiff.priors.unet import UNet, UNetConfig
from invdiff.utils import append_dims, as_sigma, atomic_path

KIND = "slice-residual-3d"


class _Corrected(torch.nn.Module):
    """``[x, D2s, E_k...] -> [D3, D2s, E_k...]``: the tile-wise step of :class:`SliceResidualDenoiser`.

    Returning the 2D estimates unchanged lets :class:`TiledDenoiser` (which keeps the channel count)
    blend tiles of the correction; the blended estimate channels are the estimates again.
    """

    def __init__(self, owner: "SliceResidualDenoiser"):
        super().__init__()
        self.owner = [owner]  # not a submodule: no second copy of the parameters in state_dict

    def forward(self, xd: Tensor, sigma: Tensor | float) -> Tensor:
        x, est = xd[:, :1], xd[:, 1:]
        return torch.cat([self.owner[0].correct(x, est, sigma), est], dim=1)


class SliceResidualDenoiser(dinv.models.Denoiser):
    """``D3(x, sigma) = D2s(x, sigma) + c_out R_theta(u, c_noise)`` for ``(B, 1, D, H, W)`` volumes.

    Parameters
    ----------
    base2d : torch.nn.Module
        The 2D prior ``D(x, sigma)`` for ``(N, 1, H, W)`` slices (frozen; applied by :class:`SliceDenoiser`).
    net : UNet
        ``R_theta``: ``dims=3``, ``in_channels=3 + 2 len(z_windows)``, ``out_channels=1``.
    sigma_data : float
        EDM's ``s_d`` in ``c_in`` and ``c_out``.
    tile : tuple of 3 ints, optional
        Training volume size; larger inputs get the correction tile by tile (``None``: never tiled).
    overlap : tuple of 3 ints, optional
        Minimum tile overlap (default a quarter of ``tile``).
    name, base_name : str, optional
        This prior's name and the 2D prior's (stored in the JSON by :meth:`save`).
    z_windows : tuple of odd ints
        Windows ``k`` of the z-averaged 2D estimates ``E_k`` given to ``R_theta`` (``()``: none).

    ``data_range``, ``sigma_min`` and ``sigma_max`` are the 2D prior's; ``spatial_dims`` is 3.

    Example
    -------
    >>> from invdiff.priors import EDMDenoiser
    >>> base = EDMDenoiser(UNet(UNetConfig(channels=(8, 16))))
    >>> D = SliceResidualDenoiser(base, UNet(UNetConfig(in_channels=3, channels=(8, 16), dims=3)))
    >>> D(torch.zeros(2, 1, 6, 16, 16), 0.1).shape
    torch.Size([2, 1, 6, 16, 16])
    """

    spatial_dims = 3

    def __init__(self, base2d: torch.nn.Module, net: UNet, sigma_data: float = 0.5,
                 tile: tuple[int, int, int] | None = None, overlap: tuple[int, int, int] | None = None,
                 name: str | None = None, base_name: str | None = None, chunk: int = 32,
                 z_windows: tuple[int, ...] = ()):
        super().__init__()
        z_windows = tuple(z_windows)
        if any(isinstance(k, bool) or not isinstance(k, int) or k < 3 or k % 2 == 0 for k in z_windows):
            raise ValueError(f"z_windows: expected odd window sizes >= 3 (slices along z), got {z_windows!r}")
        c_in = 3 + 2 * len(z_windows)
        if not isinstance(net, UNet) or net.config.dims != 3 or net.config.in_channels != c_in or net.config.out_channels != 1:
            got = net.config if isinstance(net, UNet) else type(net).__name__
            raise ValueError(f"net: expected invdiff's UNet with dims=3, in_channels={c_in} (3 + 2 per z window "
                             f"{z_windows}), out_channels=1, got {got}")
        if getattr(base2d, "spatial_dims", 2) != 2:
            raise ValueError(f"base2d: expected a 2D prior, got one with spatial_dims={base2d.spatial_dims}")
        if not sigma_data > 0:
            raise ValueError(f"sigma_data: expected a positive number, got {sigma_data!r}")
        self.slice = SliceDenoiser(base2d, chunk=chunk)
        self.slice.requires_grad_(False)
        self.net = net
        self.sigma_data = float(sigma_data)
        self.tile = None if tile is None else tuple(int(t) for t in tile)
        self.overlap = None if overlap is None else tuple(int(o) for o in overlap)
        self.name, self.base_name, self.z_windows = name, base_name, z_windows
        self.data_range = getattr(base2d, "data_range", None)
        self.sigma_min = getattr(base2d, "sigma_min", None)
        self.sigma_max = getattr(base2d, "sigma_max", None)
        self._tiled = None if self.tile is None else TiledDenoiser(_Corrected(self), patch=self.tile, overlap=self.overlap)

    @property
    def pad_multiple(self) -> int:
        return 2 ** (len(self.net.config.channels) - 1)

    def estimates(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``[D2s(x, sigma), E_k for k in z_windows]`` stacked along channels, ``(B, 1 + len(z_windows), D, H, W)``."""
        out = [self.slice(x, sigma)]
        B, _, D, H, W = x.shape
        for k in self.z_windows:
            xm, n = z_mean(x, k)
            s = (as_sigma(sigma, x)[:, None] / n.to(x.dtype).sqrt()).reshape(-1)  # (B*D,): each slice's noise level
            slices = xm.permute(0, 2, 1, 3, 4).reshape(B * D, 1, 1, H, W)  # each slice a depth-1 volume
            out.append(self.slice(slices, s).reshape(B, D, 1, H, W).permute(0, 2, 1, 3, 4))
        return torch.cat(out, dim=1)

    def correct(self, x: Tensor, est: Tensor, sigma: Tensor | float) -> Tensor:
        """``D3 = D2s + c_out R_theta(u, c_noise)`` given ``est = estimates(x, sigma)``."""
        sigma = as_sigma(sigma, x).to(torch.float32)
        s = append_dims(sigma, x.ndim)
        sd2 = self.sigma_data**2
        c_in = 1 / (s**2 + sd2).sqrt()
        c_out = s * self.sigma_data / (s**2 + sd2).sqrt()
        d2 = est[:, :1]
        feats = [c_in * x, c_in * d2, (x - d2) / s]
        for j in range(1, est.shape[1]):
            feats += [c_in * est[:, j : j + 1], (est[:, j : j + 1] - d2) / s]
        R = call_padded(self.net, torch.cat(feats, dim=1).to(torch.float32), self.pad_multiple,
                        sigma.clamp_min(1e-20).log() / 4)
        return (d2 + c_out * R).to(x.dtype)

    def forward(self, x: Tensor, sigma: Tensor | float, *args, **kwargs) -> Tensor:
        if not torch.is_tensor(x):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 5 or x.shape[1] != 1:
            raise ValueError(f"x: expected a one-channel volume (B, 1, D, H, W), got shape {tuple(x.shape)}")
        est = self.estimates(x, sigma)
        if self._tiled is None:
            return self.correct(x, est, sigma)
        return self._tiled(torch.cat([x, est], dim=1), sigma)[:, :1]

    def training_loss(self, x0: Tensor, sigma: Tensor, noise: Tensor) -> Tensor:
        """EDM loss ``mean lambda(sigma) |D3(x0 + sigma n) - x0|^2``, ``lambda = 1 / c_out^2``; ``D2s`` without
        gradients, the correction on the whole input (train on volumes of the ``tile`` size)."""
        s = append_dims(sigma, x0.ndim)
        x = x0 + s * noise
        with torch.no_grad():
            est = self.estimates(x, sigma)
        c_out = s * self.sigma_data / (s**2 + self.sigma_data**2).sqrt()
        return ((self.correct(x, est, sigma) - x0) ** 2 / c_out**2).mean()

    # ---------------------------------------------------------------- on-disk format
    def metadata(self) -> dict:
        return {"arch": "invdiff", "format_version": 1, "kind": KIND, "name": self.name, "base_prior": self.base_name,
                "unet": self.net.config.to_dict(), "sigma_data": self.sigma_data, "z_windows": list(self.z_windows),
                "tile": None if self.tile is None else list(self.tile),
                "overlap": None if self.overlap is None else list(self.overlap),
                "sigma_min": self.sigma_min, "sigma_max": self.sigma_max,
                "data_range": None if self.data_range is None else list(self.data_range)}

    def save(self, path: str | os.PathLike, overwrite: bool = False, extra: dict | None = None) -> Path:
        """Write ``R_theta``'s weights to ``path`` (``.safetensors``) and the JSON beside it, each atomically."""
        from safetensors.torch import save_file

        path = Path(path)
        if path.suffix != ".safetensors":
            raise ValueError(f"path: expected a '.safetensors' file name, got {str(path)!r}")
        if not self.base_name:
            raise ValueError("base_name: the 2D prior's name (or file) is needed in the JSON to load this prior again")
        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        with atomic_path(path, overwrite=overwrite) as tmp:
            save_file(state, str(tmp), metadata={"invdiff": json.dumps({"arch": "invdiff", "kind": KIND})})
        with atomic_path(path.with_suffix(".json"), overwrite=overwrite) as tmp:
            tmp.write_text(json.dumps(self.metadata() | (extra or {}), indent=2) + "\n")
        return path

    @classmethod
    def from_file(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "SliceResidualDenoiser":
        """Load a prior written by :meth:`save`; its ``base_prior`` is loaded by name (or as a file next to the JSON)."""
        from safetensors.torch import load_file

        from invdiff.priors.registry import available, load

        path = Path(path).with_suffix(".safetensors")
        cfg_path = path.with_suffix(".json")
        for p in (path, cfg_path):
            if not p.is_file():
                raise FileNotFoundError(f"{p}: no such file (a {KIND} prior is a .safetensors file plus a .json config)")
        meta = json.loads(cfg_path.read_text())
        if meta.get("kind") != KIND:
            raise ValueError(f"{cfg_path}: kind {meta.get('kind')!r} is not {KIND!r}")
        base_name = meta.get("base_prior")
        if not isinstance(base_name, str) or not base_name:
            raise ValueError(f"{cfg_path}: 'base_prior' must name the 2D prior, got {base_name!r}")
        local = path.parent / base_name
        if base_name not in available() and not local.exists():
            raise ValueError(f"{cfg_path}: base_prior {base_name!r} is neither an embedded prior ({available()}) "
                             f"nor a file next to it ({local})")
        base = load(base_name if base_name in available() else local, device=device)
        net = UNet(UNetConfig.from_dict(meta["unet"]))
        load_state_dict_strict(net, load_file(str(path), device=str(device)), source=str(path))
        model = cls(base, net, sigma_data=meta["sigma_data"], tile=meta.get("tile"), overlap=meta.get("overlap"),
                    name=meta.get("name"), base_name=base_name, z_windows=tuple(meta.get("z_windows", ())))
        return model.to(device).eval()


def z_mean(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``(M_k x, n_k)``: the mean of each slice's window of ``k`` slices along z (dim 2) that lie inside the
    volume, and their number per slice, ``(D,)`` (``k`` inside, down to ``k // 2 + 1`` at the ends)."""
    r, D = k // 2, x.shape[2]
    xp = torch.nn.functional.pad(x, (0, 0, 0, 0, r, r))
    total = xp.unfold(2, k, 1).sum(-1)
    ones = torch.nn.functional.pad(torch.ones(D, device=x.device, dtype=x.dtype), (r, r))
    n = ones.unfold(0, k, 1).sum(-1)
    return total / n.reshape(1, 1, D, 1, 1), n


def is_slice_residual(json_path: str | os.PathLike) -> bool:
    """Whether the invdiff prior whose JSON is ``json_path`` is a :class:`SliceResidualDenoiser`."""
    try:
        return json.loads(Path(json_path).read_text()).get("kind") == KIND
    except (OSError, ValueError, AttributeError):
        return False
