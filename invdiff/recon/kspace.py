"""Measured (multi-coil) k-space to magnitude images: the work behind ``invdiff reconstruct KSPACE.h5``.

The path, for fastMRI-layout k-space ``y`` of shape ``(slices, 2, [coils,] H, W)``:

1. **Mask.** The file's ``mask`` (fastMRI test layout: ``y`` is already undersampled), or a
   retrospective mask (fully sampled training layout) drawn from ``mask``/``acceleration``/
   ``center_fraction``/``seed``; ``y <- M y``.
2. **Coil maps.** ESPIRiT from the fully sampled centre (:func:`invdiff.operators.estimate_coil_maps`,
   all slices at once); one coil: ``S = 1``.
3. **Image model.** ``complex``: ``x`` complex (two channels), ``y = M F S x`` (SENSE), for a
   two-channel prior and for the classical solvers. ``magnitude``: ``x = m e^{i phi}`` with ``m`` real
   and ``phi`` the phase of the calibration image (the SENSE combination of the Hann-windowed
   calibration region, a low-resolution image), folded into the maps: ``y = M F (S e^{i phi}) m``,
   the real-image MRI model, so that a one-channel magnitude prior (the shipped one) serves
   unchanged. ESPIRiT's per-pixel phase ambiguity ``S e^{i psi}`` cancels in ``S e^{i phi}``, since
   ``phi`` is measured through the same maps. The low-resolution phase is biased near edges (the
   window leans to the bright side); it is refined by demodulation on a full-resolution CG SENSE
   image (:func:`refine_phase`), which matters: on the 64x64 test phantoms (8 coils, 4x) DDS went
   from about 30 dB with the calibration phase alone to about 41 dB.
4. **Scale.** ``y / s`` with ``s`` mapping the 0.995 quantile of a 20-iteration CG SENSE image onto
   the prior's upper bound (:func:`invdiff.recon.scale.match_data_range`), or ``scale=`` given.
5. **Noise.** ``noise_std=`` given (data units), else the file's ``noise_std`` attribute, else an
   estimate: MAD of the zero-filled coil images on the ``H/8`` rows (readout direction, not aliased
   by line masks) of least energy, where only noise lives; divided by ``sqrt(sampled fraction)``
   (the orthonormal inverse FFT of masked white noise of std ``sigma`` has std ``sigma sqrt(f)``).
6. **Solve** slice by slice (each slice has its own maps), ``image = s |x|``.
7. The zero-filled root-sum-of-squares image is computed too, as the baseline; with the solvers
   ``fbp``/``zerofilled`` it is the result. PSNRs are printed against the file's
   ``reconstruction_rss`` (or ``_esc``), centre-cropped, when it has one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from invdiff.operators.coils import calibration_region, estimate_coil_maps
from invdiff.operators.functional.fft import fft2c, from_complex, ifft2c, to_complex
from invdiff.recon.scale import IntensityScale, given_scale, mad_std, match_data_range, prior_upper

MODELS = ("auto", "magnitude", "complex")

__all__ = ["KspaceRecon", "reconstruct_kspace", "kspace_mask", "rss_zero_filled", "calibration_phase",
           "refine_phase", "estimate_noise_std", "prior_channels", "MODELS"]


@dataclass
class KspaceRecon:
    """Result of :func:`reconstruct_kspace`; ``lines`` are what the command line prints."""

    image: Tensor  # (slices, 1, H, W) magnitude, in the data's units
    baseline: Tensor  # zero-filled root-sum-of-squares, (slices, 1, H, W)
    mask: Tensor  # (H, W)
    maps: Tensor | None  # complex (slices, coils, H, W) as used (phase folded in for the magnitude model)
    model: str  # "complex", "magnitude" or "rss"
    scale: IntensityScale | None
    noise_std: float | None  # in data units
    nfe: int = 0
    seconds: float = 0.0
    lines: list[str] = field(default_factory=list)


def _as_coils(kspace: Tensor) -> Tensor:
    """``(S, 2, [C,] H, W)`` real -> complex ``(S, C, H, W)``."""
    if not torch.is_tensor(kspace) or kspace.is_complex() or kspace.ndim not in (4, 5) or kspace.shape[1] != 2:
        raise ValueError(f"kspace: expected real (slices, 2, [coils,] H, W) (real and imaginary channels), got "
                         f"{'shape ' + str(tuple(kspace.shape)) if torch.is_tensor(kspace) else type(kspace).__name__}")
    if not torch.isfinite(kspace).all():
        raise ValueError("kspace: contains NaN or Inf")
    z = to_complex(kspace)
    return z[:, None] if z.ndim == 3 else z


def kspace_mask(kspace: Tensor, meta: dict, acceleration: float = 4.0, center_fraction: float = 0.08,
                mask: str = "random", seed: int | None = 0) -> tuple[Tensor, str]:
    """The ``(H, W)`` sampling mask: the file's ``mask`` if it has one (test layout), else a retrospective one."""
    from invdiff.operators.mri import MRI

    H, W = kspace.shape[-2:]
    m = meta.get("mask")
    if torch.is_tensor(m) and m.numel() in (W, H * W):
        M = (m.reshape(-1, W) != 0).float().expand(H, W).contiguous()
        return M, f"the file's mask ({1 / float(M.mean()):.2f}x)"
    if m is not None:
        raise ValueError(f"mask: the file's mask has shape {tuple(getattr(m, 'shape', ()))}; expected ({W},) or ({H}, {W})")
    M = MRI((1, H, W), acceleration=acceleration, center_fraction=center_fraction, mask=mask, seed=seed).mask
    return M, f"{mask} mask {acceleration:g}x, centre fraction {center_fraction:g} (retrospective, {1 / float(M.mean()):.2f}x)"


def rss_zero_filled(y: Tensor, mask: Tensor) -> Tensor:
    """``sqrt(sum_c |F^H M y_c|^2)``: complex ``(S, C, H, W)`` k-space -> ``(S, 1, H, W)``."""
    return (ifft2c(y * mask).abs() ** 2).sum(1, keepdim=True).sqrt()


def calibration_phase(y: Tensor, maps: Tensor, mask: Tensor) -> Tensor:
    """``e^{i phi}``, ``phi`` the phase of ``sum_c conj(S_c) F^H (w y_c)``, ``w`` a Hann window on the calibration region.

    ``y``: complex ``(S, C, H, W)``; ``maps``: complex ``(S, C, H, W)``; returns complex ``(S, H, W)`` of
    modulus 1 (1 where the combination vanishes).
    """
    rows, cols = calibration_region(mask)
    H, W = mask.shape
    win = torch.zeros(H, W, dtype=torch.float64)
    hr = torch.hann_window(rows.stop - rows.start + 2, periodic=False, dtype=torch.float64)[1:-1]
    hc = torch.hann_window(cols.stop - cols.start + 2, periodic=False, dtype=torch.float64)[1:-1]
    win[rows, cols] = hr[:, None] * hc[None, :]
    low = (maps.conj() * ifft2c(y * win.to(y.device))).sum(1)
    mag = low.abs()
    return torch.where(mag > 0, low / mag.clamp_min(1e-30), torch.ones_like(low))


def refine_phase(image: Tensor, phase: Tensor, width: float = 4.0, iters: int = 8) -> Tensor:
    r"""Smooth phase of a full-resolution complex ``image``, by demodulation from a first guess ``phase``.

    The phase of a low-pass image, ``arg(h * (|x| e^{i theta}))``, is biased wherever ``theta`` varies
    across the low-pass window and ``|x|`` is not uniform (the window's weight leans to the bright
    side). Demodulating first removes the bias to first order; repeated, it converges:

    .. math::

        e^{i\phi_{k+1}} = e^{i\phi_k}\, \frac{h * (x e^{-i\phi_k})}{|h * (x e^{-i\phi_k})|},

    with ``h`` a Gaussian of std ``width`` pixels. ``image``: complex ``(S, H, W)`` (a SENSE CG image);
    ``phase``: complex ``(S, H, W)`` of modulus 1.
    """
    H, W = image.shape[-2:]
    ky = (torch.arange(H, device=image.device, dtype=torch.float64) - H // 2) / H
    kx = (torch.arange(W, device=image.device, dtype=torch.float64) - W // 2) / W
    g = torch.exp(-2 * math.pi**2 * width**2 * (ky[:, None] ** 2 + kx[None, :] ** 2))  # FT of the Gaussian
    p = phase
    for _ in range(iters):
        z = ifft2c(fft2c(image * p.conj()) * g)
        mag = z.abs()
        p = torch.where(mag > 0, p * z / mag.clamp_min(1e-30), p)
    return p


def estimate_noise_std(y: Tensor, mask: Tensor, fraction: float = 0.125) -> float:
    """Noise std per real channel of the sampled k-space, from the image rows of least energy.

    Line masks undersample along ``W`` only, so aliasing stays within a row: the rows outside the
    object (``fraction`` of the rows with least energy, per slice, at least 2) of the zero-filled coil
    images hold noise alone, of std ``sigma sqrt(f)`` with ``f`` the sampled fraction.
    """
    z = ifft2c(y * mask)  # (S, C, H, W)
    S, C, H, W = z.shape
    n = max(2, int(round(fraction * H)))
    energy = (z.abs() ** 2).sum((1, 3))  # (S, H)
    rows = energy.argsort(dim=1)[:, :n]
    vals = torch.stack([z[s][:, rows[s]] for s in range(S)])
    f = float(mask.mean())
    return mad_std(torch.cat([vals.real.reshape(-1), vals.imag.reshape(-1)])) / math.sqrt(f)


def prior_channels(prior) -> int:
    """Image channels a prior models, 1 if it says nothing.

    Looked up in order: an ``image_channels``/``in_channels`` attribute of the prior, of its network
    ``net`` (or ``model``/``unet``) or of that network's ``config`` (ADM, diffusers, invdiff's UNet);
    NCSN++'s ``config.num_channels`` (in score_sde that field is the image's channels; in ADM it is the
    width, hence the type check); an analytic prior's ``image_shape[0]``.
    """
    nets = [getattr(prior, a, None) for a in ("net", "model", "unet")]
    objs = [prior, *nets, *(getattr(n, "config", None) for n in nets)]
    for obj in objs:
        for attr in ("image_channels", "in_channels"):
            v = getattr(obj, attr, None)
            if isinstance(v, int) and not isinstance(v, bool):
                return v
    for obj in objs:
        if type(obj).__name__ == "NCSNppConfig":
            return int(obj.num_channels)
    shape = getattr(prior, "image_shape", None)
    if shape:
        return int(shape[0])
    return 1


def _cg_sense(y: Tensor, maps: Tensor, mask: Tensor, iters: int = 20) -> Tensor:
    """Complex SENSE least-squares image by CG (``iters`` steps), complex ``(S, H, W)``."""
    from invdiff.operators.mri import MRI
    from invdiff.solvers.baselines import CG

    out = []
    for s in range(y.shape[0]):
        op = MRI((2, *mask.shape), mask=mask, coil_maps=maps[s]).to(y.device)
        out.append(to_complex(CG(iters=iters, tol=0.0).reconstruct(from_complex(y[s:s + 1]), op, progress=False).mean))
    return torch.cat(out)


def _psnr_line(label: str, image: Tensor, meta: dict, nfe: int, seconds: float) -> str:
    from invdiff import metrics

    target = meta.get("reconstruction_rss", meta.get("reconstruction_esc"))
    S, _, H, W = image.shape
    if torch.is_tensor(target) and target.shape[0] == S and target.shape[-2] <= H and target.shape[-1] <= W:
        h, w = target.shape[-2:]
        top, left = (H - h) // 2, (W - w) // 2
        crop = image[..., top:top + h, left:left + w].detach().cpu().float()
        ref = target.reshape(S, 1, h, w).float()
        p = float(metrics.psnr(crop, ref).mean())
        s = float(metrics.ssim(crop, ref).mean())
        return f"  {label:<34} PSNR {p:6.2f} dB  SSIM {s:.4f}  NFE {nfe:5d}  {seconds:8.2f} s  (vs the file's target)"
    return f"  {label:<34} NFE {nfe:5d}  {seconds:8.2f} s"


def reconstruct_kspace(kspace: Tensor, meta: dict, solver=None, *, acceleration: float = 4.0,
                       center_fraction: float = 0.08, mask: str = "random", seed: int = 0,
                       image_model: str = "auto", scale: float | None = None, noise_std: float | None = None,
                       device: str | torch.device = "cpu", progress: bool = False,
                       name: str = "k-space", solver_name: str | None = None) -> KspaceRecon:
    """Reconstruct measured fastMRI-layout k-space (see the module docstring for the steps).

    Parameters
    ----------
    kspace : Tensor
        ``(slices, 2, [coils,] H, W)``, as :func:`invdiff.data.load` returns a fastMRI file's ``kspace``.
    meta : dict
        The file's meta (``mask``, ``noise_std``, ``reconstruction_rss`` are used when present).
    solver : invdiff.solvers.Solver or None
        ``None`` or a ``ZeroFilled``/``FBP``: the zero-filled root-sum-of-squares image. Otherwise a
        classical solver (CG, TV: complex SENSE model) or a diffusion solver (model from its prior).
    acceleration, center_fraction, mask, seed
        The retrospective mask, when the file has none.
    image_model : str
        ``"auto"`` (a prior's channel count decides: 1 -> ``"magnitude"``, 2 -> ``"complex"``;
        classical solvers: ``"complex"``), ``"magnitude"`` or ``"complex"``.
    scale : float, optional
        Data units per prior unit; default: matched to the prior's ``data_range`` (``[0, 1]`` for
        classical solvers).
    noise_std : float, optional
        Measurement noise std per real channel, in data units; default: the file's, else estimated.

    Returns
    -------
    KspaceRecon
    """
    from invdiff.operators.mri import MRI
    from invdiff.solvers.baselines import FBP

    if image_model not in MODELS:
        raise ValueError(f"image_model: expected one of {MODELS}, got {image_model!r}")
    if noise_std is not None and not (math.isfinite(noise_std) and noise_std > 0):
        raise ValueError(f"noise_std: expected a positive number (data units), got {noise_std!r}")
    y = _as_coils(kspace).to(device)
    S, C, H, W = y.shape
    M, how = kspace_mask(kspace, meta, acceleration, center_fraction, mask, seed)
    M = M.to(device)
    y = y * M
    lines = [f"invdiff reconstruct: {name}: k-space {tuple(kspace.shape)}, {C} coil(s), {how}"]
    t0 = time.perf_counter()
    base = rss_zero_filled(y, M)
    lines.append(_psnr_line("zero-filled root-sum-of-squares", base, meta, 0, time.perf_counter() - t0))
    label = solver_name or type(solver).__name__
    if solver is None or isinstance(solver, FBP):
        return KspaceRecon(base, base, M, None, "rss", None, None, 0, time.perf_counter() - t0, lines)

    # 2. coil maps
    t1 = time.perf_counter()
    if C > 1:
        maps = estimate_coil_maps(y, mask=M)
        rows, cols = calibration_region(M)
        lines.append(f"  coil maps: ESPIRiT (torch) from the {rows.stop - rows.start} x {cols.stop - cols.start} "
                     f"calibration region, {time.perf_counter() - t1:.2f} s")
    else:
        maps = torch.ones(S, 1, H, W, dtype=y.dtype, device=y.device)
    # 3. image model
    prior = getattr(solver, "prior", None)
    model = image_model
    if model == "auto":
        model = "complex" if prior is None or prior_channels(prior) == 2 else "magnitude"
    channels = 1 if model == "magnitude" else 2
    if prior is not None and prior_channels(prior) != channels:
        raise ValueError(f"image_model: {model!r} reconstructs a {channels}-channel image, but the prior models "
                         f"{prior_channels(prior)} channel(s); use image_model='auto'")
    x_cg = _cg_sense(y, maps, M)
    if model == "magnitude":
        phase = refine_phase(x_cg, calibration_phase(y, maps, M))
        maps = maps * phase[:, None]
        lines.append("  image model: magnitude m with the calibration image's phase (refined on a 20-iteration CG "
                     "SENSE image) folded into the coil maps (real-image SENSE)")
    else:
        lines.append("  image model: complex (real, imaginary channels), SENSE")
    # 4. scale
    upper = prior_upper(prior) if prior is not None else 1.0
    if scale is not None:
        sc = given_scale(scale)
    else:
        sc = match_data_range(x_cg.abs(), upper, what="a 20-iteration CG SENSE image")
    lines.append(f"  scale: {sc.how}")
    # 5. noise
    if noise_std is not None:
        sigma, src = float(noise_std), "given (--noise-std)"
    elif isinstance(meta.get("noise_std"), (int, float)) and meta["noise_std"] > 0:
        sigma, src = float(meta["noise_std"]), "the file's noise_std attribute"
    else:
        sigma = estimate_noise_std(y, M)
        src = "estimated (MAD of the zero-filled coil images on the rows of least energy)"
        if not sigma > 0:
            sigma = 1e-6 * float(y.abs().max())
            src += "; the estimate was 0, using 1e-6 x max|y|"
    lines.append(f"  noise std: {sigma:.4g} per real channel ({src}); {sigma / sc.scale:.4g} in prior units")
    # 6. solve slice by slice
    out, nfe, seconds = [], 0, 0.0
    for s in range(S):
        op = MRI((channels, H, W), mask=M, coil_maps=maps[s], noise_std=sigma / sc.scale).to(device)
        ys = from_complex(y[s:s + 1]) / sc.scale
        r = solver.reconstruct(ys.float(), op, seed=seed, progress=progress)
        nfe, seconds = nfe + r.nfe, seconds + r.seconds
        out.append(r.mean.abs() if channels == 1 else r.mean.pow(2).sum(1, keepdim=True).sqrt())
    image = sc.from_prior(torch.cat(out))
    lines.append(_psnr_line(f"{label} ({model} SENSE)", image, meta, nfe, seconds))
    return KspaceRecon(image, base, M, maps, model, sc, sigma, nfe, seconds, lines)
