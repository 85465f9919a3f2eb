"""Coil sensitivities from the fully sampled calibration region of k-space (ESPIRiT), batched over slices.

Uecker, Lai, Murphy, Virtue, Elad, Pauly, Vasanawala, Lustig, "ESPIRiT: an eigenvalue approach to
autocalibrating parallel MRI", MRM 71 (2014). Reference implementation: sigpy's
``sigpy.mri.app.EspiritCalib`` (https://github.com/mikgroup/sigpy), which deepinv's
``MultiCoilMRI.estimate_coil_maps`` wraps (one slice at a time, on NumPy).

1. Calibration matrix. Every ``k_h x k_w`` window of the calibration k-space ``y_c`` (all coils)
   is one row ``a_p`` of a matrix ``A`` (``n_windows x N_c k_h k_w``). The rows of
   ``A = U \\Sigma V^H`` lie in the span of the leading right singular vectors
   ``v_1 .. v_K`` (``\\sigma_k > t \\sigma_1``, ``t = threshold``): the signal subspace.
2. Image-domain operator. With ``g_k = F^{-1}`` of the zero-padded kernel ``v_k``
   (``N_c`` images), the per-pixel matrix

   .. math::

       G(r) = \\frac{H W}{k_h k_w} \\sum_k g_k(r)\\, g_k(r)^H \\in \\mathbb{C}^{N_c \\times N_c}

   has the sensitivities ``S(r)`` as eigenvector with eigenvalue 1 wherever the object is. Since
   ``g_k g_k^H`` only depends on products ``v_k[c, u] \\overline{v_k[d, u']}``, ``G`` is computed as
   the inverse FFT of ``P = V_K^T \\overline{V_K}`` summed over equal kernel offsets ``u - u'``
   (``N_c^2`` images of ``(2 k_h - 1) x (2 k_w - 1)`` coefficients), not from ``K N_c`` full images.
3. Maps. ``S(r)`` is the eigenvector of the largest eigenvalue ``\\lambda(r)`` of ``G(r)``
   (``torch.linalg.eigh``, batched over slices and pixels), set to 0 where ``\\lambda(r) <= crop``.
   Each map has ``\\sum_c |S_c(r)|^2 = 1`` where it is kept.

Phase. An eigenvector is defined up to a phase *per pixel*: ``S_c x = (S_c e^{i\\psi}) (x e^{-i\\psi})``,
so the data cannot tell ``S`` from ``S e^{i\\psi(r)}`` for any ``\\psi``. sigpy makes the first coil
real; here the phase is taken relative to a virtual body coil ``b(r) = w^H S(r)``, with ``w`` the
leading eigenvector of ``\\sum_r S(r) S(r)^H`` (a smooth combination of all coils, not one coil
that may fade out): ``S \\leftarrow S\\, \\overline{b} / |b|``. Compare maps with
:func:`coil_map_error`, which is blind to that ambiguity.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from invdiff.operators.functional.fft import ifft2c, to_complex

__all__ = ["estimate_coil_maps", "calibration_region", "coil_map_error"]


def _as_complex_kspace(kspace: Tensor) -> Tensor:
    """``(B, N_c, H, W)`` complex, or ``(B, 2, N_c, H, W)`` real (two channels) -> complex ``(B, N_c, H, W)``."""
    if not torch.is_tensor(kspace):
        raise TypeError(f"kspace: expected a torch.Tensor, got {type(kspace).__name__}")
    if kspace.is_complex() and kspace.ndim == 4:
        return kspace
    if not kspace.is_complex() and kspace.ndim == 5 and kspace.shape[1] == 2:
        return to_complex(kspace)
    raise ValueError(f"kspace: expected complex (slices, coils, H, W) or real (slices, 2, coils, H, W), "
                     f"got shape {tuple(kspace.shape)} and dtype {kspace.dtype}")


def _centre_run(sampled: Tensor, centre: int) -> tuple[int, int]:
    """``[start, stop)`` of the run of ``True`` in the 1D ``sampled`` that contains ``centre``."""
    s = sampled.tolist()
    if not s[centre]:
        return centre, centre
    a, b = centre, centre + 1
    while a > 0 and s[a - 1]:
        a -= 1
    while b < len(s) and s[b]:
        b += 1
    return a, b


def calibration_region(mask: Tensor, max_size: int | None = None) -> tuple[slice, slice]:
    """The fully sampled block around the centre of k-space: ``(rows, cols)`` slices of an ``(H, W)`` mask.

    For a line mask (phase encoding along ``W``) this is all rows times the central band of
    lines. ``max_size`` caps each side (around the centre), e.g. 24 as in ESPIRiT's examples.
    """
    if not torch.is_tensor(mask) or mask.ndim != 2:
        raise ValueError(f"mask: expected an (H, W) tensor, got {getattr(mask, 'shape', type(mask).__name__)}")
    m = mask.detach().cpu() != 0
    H, W = m.shape
    c0, c1 = _centre_run(m[H // 2], W // 2)
    if c1 - c0 == 0:
        raise ValueError("mask: the centre of k-space (H//2, W//2) is not sampled; no calibration region")
    r0, r1 = _centre_run(m[:, c0:c1].all(1), H // 2)
    if max_size is not None:
        r0, r1 = max(r0, H // 2 - max_size // 2), min(r1, H // 2 - max_size // 2 + max_size)
        c0, c1 = max(c0, W // 2 - max_size // 2), min(c1, W // 2 - max_size // 2 + max_size)
    return slice(r0, r1), slice(c0, c1)


def _kernel_products(V: Tensor, C: int, kh: int, kw: int) -> Tensor:
    """``sum_{u - u' = d} P[c, u, d', u']`` for ``P = V^T conj(V)``: ``(B, C, C, 2kh-1, 2kw-1)``.

    ``V``: ``(B, K, C*kh*kw)`` kernels (rows), already weighted by 0/1 for the kept ones.
    """
    B = V.shape[0]
    P = torch.einsum("bki,bkj->bij", V, V.conj()).reshape(B, C, kh, kw, C, kh, kw)
    out = V.new_zeros(B, C, C, 2 * kh - 1, 2 * kw - 1)
    for a in range(kh):  # offset u' of the conjugated factor; u - u' = (i - a, j - b)
        for b in range(kw):
            block = P[:, :, :, :, :, a, b].permute(0, 1, 4, 2, 3)  # (B, C, C', kh, kw) over u
            out[:, :, :, kh - 1 - a: 2 * kh - 1 - a, kw - 1 - b: 2 * kw - 1 - b] += block
    return out


def _virtual_coil_phase(S: Tensor) -> Tensor:
    """Rotate each pixel's map so that the virtual body coil ``w^H S(r)`` is real and >= 0."""
    cov = torch.einsum("bchw,bdhw->bcd", S, S.conj())  # sum_r S S^H, (B, C, C)
    w = torch.linalg.eigh(cov)[1][..., -1]  # leading eigenvector, (B, C)
    b = torch.einsum("bc,bchw->bhw", w.conj(), S)
    rot = torch.where(b.abs() > 0, b.conj() / b.abs().clamp_min(1e-30), torch.ones_like(b))
    return S * rot[:, None]


def estimate_coil_maps(kspace: Tensor, mask: Tensor | None = None, calib: tuple[slice, slice] | None = None,
                       kernel: int = 6, threshold: float = 0.02, crop: float = 0.95,
                       max_calib: int | None = None, chunk: int | None = None) -> Tensor:
    """ESPIRiT coil sensitivities (one set of maps per slice), on torch, batched over slices.

    Parameters
    ----------
    kspace : Tensor
        Centred k-space (the layout of :func:`invdiff.operators.functional.fft.fft2c`), complex
        ``(slices, N_c, H, W)`` or two real channels ``(slices, 2, N_c, H, W)``.
    mask : Tensor, optional
        ``(H, W)`` or ``(W,)`` sampling mask; the calibration region is its fully sampled centre
        (:func:`calibration_region`). Without ``mask`` and ``calib``, the nonzero entries of the
        first slice's first coil are taken as the mask.
    calib : (slice, slice), optional
        The calibration region ``(rows, cols)`` itself (overrides ``mask``).
    kernel : int
        ESPIRiT kernel side, capped at half of each side of the calibration region (so that the
        calibration matrix has several windows along each axis).
    threshold : float
        Singular values above ``threshold * sigma_max`` span the signal subspace.
    crop : float
        Maps are set to 0 where the largest eigenvalue is ``<= crop`` (outside the object), in ``[0, 1)``.
    max_calib : int, optional
        Cap on each side of the calibration region (a larger one costs time, not accuracy).
    chunk : int, optional
        Slices handled at once (memory ``~ 3 chunk N_c^2 H W`` complex128 numbers); default: as many
        as fit in about 2 GB (e.g. 64 slices of 8 coils at 64x64, one slice of 15 coils at 640x368).

    Returns
    -------
    Tensor
        Complex ``(slices, N_c, H, W)`` maps, ``sum_c |S_c|^2 = 1`` where kept, phase relative to a
        virtual body coil (see the module docstring).

    Example
    -------
    >>> import torch
    >>> k = torch.randn(2, 4, 32, 32, dtype=torch.complex64)
    >>> estimate_coil_maps(k, calib=(slice(8, 24), slice(8, 24)), kernel=4).shape
    torch.Size([2, 4, 32, 32])
    """
    k = _as_complex_kspace(kspace)
    B, C, H, W = k.shape
    if not torch.isfinite(torch.view_as_real(k)).all():
        raise ValueError("kspace: contains NaN or Inf")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold: expected a number in (0, 1), got {threshold!r}")
    if not 0 <= crop < 1:
        raise ValueError(f"crop: expected a number in [0, 1), got {crop!r}")
    if isinstance(kernel, bool) or not isinstance(kernel, int) or kernel < 2:
        raise ValueError(f"kernel: expected an integer >= 2, got {kernel!r}")
    if calib is None:
        if mask is None:
            mask = (k[0, 0] != 0).float()
        mask = mask.detach().cpu()
        if mask.ndim == 1:
            if mask.shape[0] != W:
                raise ValueError(f"mask: a line mask must have W={W} entries, got shape {tuple(mask.shape)}")
            mask = mask.expand(H, W)
        if tuple(mask.shape) != (H, W):
            raise ValueError(f"mask: expected shape ({H}, {W}) or ({W},), got {tuple(mask.shape)}")
        calib = calibration_region(mask, max_calib)
    rows, cols = calib
    ch, cw = len(range(H)[rows]), len(range(W)[cols])
    kh, kw = min(kernel, max(2, ch // 2)), min(kernel, max(2, cw // 2))  # at least a few windows per side
    if ch < 2 or cw < 2 or (ch - kh + 1) * (cw - kw + 1) < 2:
        raise ValueError(f"calib: the calibration region is {ch} x {cw}; ESPIRiT needs at least a few {kh} x {kw} "
                         f"windows (more fully sampled central lines: a larger center fraction)")
    if chunk is None:
        chunk = max(1, int(2e9 // (3 * C * C * H * W * 16)))
    elif isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk: expected a positive integer, got {chunk!r}")
    out = []
    for s in range(0, B, chunk):
        out.append(_espirit(k[s:s + chunk, :, rows, cols], (H, W), kh, kw, threshold, crop))
    return _virtual_coil_phase(torch.cat(out))


def _espirit(cal: Tensor, shape: tuple[int, int], kh: int, kw: int, threshold: float, crop: float) -> Tensor:
    """ESPIRiT on calibration data ``(b, C, ch, cw)``; maps ``(b, C, H, W)``."""
    b, C = cal.shape[:2]
    H, W = shape
    cal = cal.to(torch.complex128)
    # 1. calibration matrix: one row per window, (b, n_windows, C * kh * kw)
    win = cal.unfold(2, kh, 1).unfold(3, kw, 1)  # (b, C, nh, nw, kh, kw)
    A = win.permute(0, 2, 3, 1, 4, 5).reshape(b, -1, C * kh * kw)
    _, sv, Vh = torch.linalg.svd(A, full_matrices=False)
    keep = (sv > threshold * sv[:, :1]).to(Vh.dtype)  # (b, K)
    V = Vh * keep[..., None]
    # 2. G(r) = (H W / (kh kw)) sum_k g_k g_k^H, from the kernel products summed over equal offsets
    Gs = _kernel_products(V, C, kh, kw)  # (b, C, C, 2kh-1, 2kw-1)
    pad = Gs.new_zeros(b, C, C, H, W)
    h0, w0 = H // 2 - (kh - 1), W // 2 - (kw - 1)
    hs, ws = slice(max(h0, 0), min(h0 + 2 * kh - 1, H)), slice(max(w0, 0), min(w0 + 2 * kw - 1, W))
    pad[..., hs, ws] = Gs[..., hs.start - h0: hs.stop - h0, ws.start - w0: ws.stop - w0]
    G = ifft2c(pad) * (math.sqrt(H * W) / (kh * kw))  # (b, C, C, H, W)
    G = G.permute(0, 3, 4, 1, 2)
    G = 0.5 * (G + G.conj().transpose(-1, -2))  # Hermitian up to rounding
    # 3. leading eigenvector, cropped where the eigenvalue falls below `crop`
    lam, vec = torch.linalg.eigh(G)
    S = vec[..., -1].permute(0, 3, 1, 2)  # (b, C, H, W)
    S = S * (lam[..., -1] > crop)[:, None]
    return S.to(torch.complex64)


def coil_map_error(estimate: Tensor, truth: Tensor, support: Tensor | None = None) -> float:
    """Relative error of coil maps, blind to the per-pixel phase that ESPIRiT cannot know.

    .. math::

        e = \\sqrt{\\frac{\\sum_{r \\in \\Omega} \\min_\\psi \\|S_{est}(r) e^{i\\psi} - S(r)\\|^2}
                        {\\sum_{r \\in \\Omega} \\|S(r)\\|^2}},
        \\qquad \\min_\\psi \\|a e^{i\\psi} - b\\|^2 = \\|a\\|^2 + \\|b\\|^2 - 2 |a^H b|,

    over the pixels ``Omega`` of ``support`` (all pixels if ``None``). ``estimate`` and ``truth``:
    complex ``([slices,] N_c, H, W)``; ``support``: ``([slices,] H, W)`` booleans.
    """
    if estimate.shape != truth.shape or not (estimate.is_complex() and truth.is_complex()):
        raise ValueError(f"estimate, truth: expected complex maps of one shape, got {tuple(estimate.shape)} "
                         f"({estimate.dtype}) and {tuple(truth.shape)} ({truth.dtype})")
    a, b = estimate.to(torch.complex128), truth.to(torch.complex128)
    cdim = -3
    num = (a.abs() ** 2).sum(cdim) + (b.abs() ** 2).sum(cdim) - 2 * (a.conj() * b).sum(cdim).abs()
    den = (b.abs() ** 2).sum(cdim)
    if support is not None:
        m = support.to(torch.bool).expand_as(num)
        num, den = num[m], den[m]
    return float(num.clamp_min(0).sum().sqrt() / den.sum().sqrt().clamp_min(1e-30))
