"""Blur: circular convolution with a Gaussian or a given kernel.

.. math::

    y = k \\circledast x + n, \\qquad n \\sim \\mathcal{N}(0, \\sigma_n^2 I),

with periodic (circular) boundaries, so that the 2D DFT diagonalises ``A``: ``A = F^H diag(\\hat k) F``.
The operator is deepinv's :class:`deepinv.physics.BlurFFT` (a ``DecomposablePhysics`` whose
singular values are ``|\\hat k|``), so deepinv's DDRM runs on it and ``A_adjoint`` (correlation
with ``k``, i.e. multiplication by ``conj(\\hat k)``) is exact. Circular boundaries are the price of
that structure: the blur wraps around the image edges.

``A_dagger`` is the Tikhonov (Wiener, white prior) inverse

.. math::

    A^\\dagger_\\lambda y = F^H \\frac{\\overline{\\hat k}}{|\\hat k|^2 + \\lambda} F y ,

with ``lambda = 20 noise_std^2`` by default: the Wiener filter of a white signal of power ``0.05``
per (orthonormal) Fourier coefficient, a rough fit for images in ``[0, 1]`` (on Shepp-Logan and
ellipse phantoms at 128x128, within 1 dB of the best ``lambda`` for kernel_std 2-3 and noise_std
0.01-0.05, 3 dB short for kernel_std 1 at noise_std 0.01). Noise-free (``lambda = 0``) it is deepinv's truncated-SVD pseudo-inverse
(singular values below ``1e-5`` dropped). ``A_dagger(y, reg=...)`` overrides ``lambda``.
"""

from __future__ import annotations

import math

import deepinv as dinv
import torch
from torch import Tensor

from invdiff.device import place
from invdiff.operators._checked import CheckedOperator
from invdiff.validate import check_img_size, check_noise_std


def gaussian_kernel(std: float) -> Tensor:
    """Normalised isotropic Gaussian kernel ``(1, 1, 2h+1, 2h+1)`` with ``h = ceil(3 std)`` (covers +-3 std)."""
    h = math.ceil(3.0 * std)
    t = torch.arange(-h, h + 1, dtype=torch.float64)
    g = torch.exp(-(t**2) / (2.0 * std**2))
    k = g[:, None] * g[None, :]
    return (k / k.sum()).to(torch.float32)[None, None]


def _kernel_from_arg(size: tuple[int, ...], kernel, kernel_std) -> Tensor:
    C, H, W = size
    if isinstance(kernel, str):
        if kernel != "gaussian":
            raise ValueError(f"kernel: expected 'gaussian' or a tensor, got {kernel!r}")
        try:
            std = float(kernel_std)
        except (TypeError, ValueError):
            raise TypeError(f"kernel_std: expected a positive number, got {kernel_std!r}") from None
        if not math.isfinite(std) or std <= 0:
            raise ValueError(f"kernel_std: expected a positive finite number, got {kernel_std!r}")
        k = gaussian_kernel(std)
        if k.shape[-2] > H or k.shape[-1] > W:
            raise ValueError(
                f"kernel_std: {kernel_std!r} gives a {k.shape[-2]}x{k.shape[-1]} kernel (+-3 std), "
                f"larger than the image ({H}x{W}); expected kernel_std <= {(min(H, W) - 1) // 2 / 3:.3g}"
            )
        return k
    if not torch.is_tensor(kernel):
        raise TypeError(f"kernel: expected 'gaussian' or a tensor, got {type(kernel).__name__}")
    k = kernel.detach().to("cpu", torch.float32) if not kernel.is_complex() else None
    if k is None or not torch.isfinite(k).all():
        raise ValueError("kernel: expected a real tensor of finite values")
    if k.ndim == 2:
        k = k[None, None]
    if k.ndim != 4 or k.shape[0] != 1 or k.shape[1] not in (1, C) or k.shape[-2] > H or k.shape[-1] > W:
        raise ValueError(
            f"kernel: shape {tuple(kernel.shape)} does not fit img_size={size}; expected (h, w), (1, 1, h, w) "
            f"or (1, {C}, h, w) with h <= {H}, w <= {W}"
        )
    return k.clone()


class Blur(CheckedOperator, dinv.physics.BlurFFT):
    """Circular blur of ``(C, H, W)`` images by a Gaussian or a given kernel.

    Parameters
    ----------
    img_size : tuple of int
        ``(C, H, W)``.
    kernel : "gaussian" or Tensor
        ``"gaussian"``: an isotropic Gaussian of standard deviation ``kernel_std`` pixels, of size
        ``2 ceil(3 kernel_std) + 1``, normalised to sum 1. A tensor ``(h, w)``, ``(1, 1, h, w)`` or
        ``(1, C, h, w)`` is used as given (not normalised); its centre is pixel ``(h // 2, w // 2)``,
        so odd sizes keep the image in place.
    kernel_std : float
        Standard deviation of the Gaussian kernel in pixels (ignored for a tensor kernel).
    noise_std : float
        Standard deviation of the Gaussian measurement noise.

    Examples
    --------
    >>> import torch
    >>> from invdiff.operators import Blur
    >>> op = Blur((1, 32, 32), kernel_std=1.5, noise_std=0.01)
    >>> x = torch.rand(1, 1, 32, 32)
    >>> y = op(x)
    >>> op.A_dagger(y).shape
    torch.Size([1, 1, 32, 32])
    """

    def __init__(self, img_size, kernel: str | Tensor = "gaussian", kernel_std: float = 2.0, noise_std: float = 0.0,
                 device: str | torch.device | None = None):
        size = check_img_size(img_size, ndims=(3,))
        noise_std = check_noise_std(noise_std)
        k = _kernel_from_arg(size, kernel, kernel_std)
        super().__init__(img_size=size, filter=k, noise_model=dinv.physics.GaussianNoise(sigma=noise_std))
        self.img_size = size
        place(self, device)

    def A_dagger(self, y: Tensor, reg: float | None = None, **kwargs) -> Tensor:
        """Tikhonov inverse ``V diag(s / (s^2 + reg)) U^T y``; ``reg=None``: ``20 noise_std^2``.

        ``reg=0`` is deepinv's pseudo-inverse (singular values below ``1e-5`` dropped).
        """
        self.check_y(y)
        if reg is None:
            reg = 20.0 * self.noise_std**2
        reg = float(reg)
        if not math.isfinite(reg) or reg < 0:
            raise ValueError(f"reg: expected a non-negative finite number, got {reg!r}")
        if reg == 0:
            return super().A_dagger(y, **kwargs)  # deepinv's, through CheckedOperator
        self.update_parameters(**kwargs)
        s = self.mask
        return self.V(self.U_adjoint(y) * s / (s * s + reg))
