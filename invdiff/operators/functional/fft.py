"""Centred orthonormal 2D FFT (the fastMRI convention) and the two-real-channel complex layout.

The k-space of an image ``x`` is

.. math::

    k = \\mathrm{fftshift}\\big(\\mathcal{F}(\\mathrm{ifftshift}(x))\\big), \\qquad \\|k\\|_2 = \\|x\\|_2,

taken over the last two dimensions, so that the zero frequency sits at index ``(H // 2, W // 2)``
for even and odd sizes alike. ``ifft2c`` is its exact inverse and adjoint.

Complex tensors travel between operators as deepinv holds them: two real channels in dimension 1,
``(B, 2, ...)``, the real part first.
"""

from __future__ import annotations

import torch
from torch import Tensor

_DIMS = (-2, -1)


def fft2c(x: Tensor) -> Tensor:
    """Centred orthonormal FFT over the last two dimensions of a complex tensor."""
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=_DIMS), norm="ortho"), dim=_DIMS)


def ifft2c(k: Tensor) -> Tensor:
    """Inverse (and adjoint) of :func:`fft2c`."""
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=_DIMS), norm="ortho"), dim=_DIMS)


def to_complex(x: Tensor) -> Tensor:
    """``(B, 2, ...)`` real -> ``(B, ...)`` complex (real part in channel 0)."""
    if x.shape[1] != 2:
        raise ValueError(f"to_complex: expected 2 channels (real, imaginary) in dimension 1, got shape {tuple(x.shape)}")
    return torch.complex(x[:, 0], x[:, 1])


def from_complex(z: Tensor) -> Tensor:
    """``(B, ...)`` complex -> ``(B, 2, ...)`` real."""
    return torch.stack((z.real, z.imag), dim=1)
