"""Super-resolution: average over ``f x f`` blocks (box downsampling by an integer factor ``f``).

.. math::

    y_{c,i,j} = \\frac{1}{f^2} \\sum_{a,b=0}^{f-1} x_{c,\\,fi+a,\\,fj+b} + n_{c,i,j}.

The rows of ``A`` are disjoint constant blocks of norm ``1/f``, so ``A A^T = f^{-2} I`` and the
operator has an explicit SVD ``A = U diag(s) V^T``:

* ``V^T`` applies, in every block, the orthonormal 2D DCT-II of size ``f x f``, whose first basis
  vector is the constant ``1/f``; its output is ``(B, C, f^2, H/f, W/f)`` (coefficient index third);
* ``s = 1/f`` on the constant (DC) coefficient and ``0`` on the ``f^2 - 1`` others;
* ``U`` takes the DC coefficient, ``(B, C, H/f, W/f)``, and ``U^T`` puts ``y`` back there.

It is therefore a deepinv ``DecomposablePhysics`` and deepinv's DDRM runs on it (the SVD is the one
DDRM's paper uses for super-resolution). ``A^T y`` repeats ``y / f^2`` over each block and the
pseudo-inverse ``A^+ y`` repeats ``y`` (nearest-neighbour upsampling), so ``A(A^+ y) = y`` exactly.
"""

from __future__ import annotations

import math

import deepinv as dinv
import torch
from torch import Tensor

from invdiff.device import place
from invdiff.operators._checked import CheckedOperator
from invdiff.validate import check_img_size, check_noise_std


def dct_matrix(n: int) -> Tensor:
    """Orthonormal DCT-II matrix ``(n, n)`` in float64; row 0 is the constant ``1/sqrt(n)``."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    j = torch.arange(n, dtype=torch.float64)[None, :]
    D = torch.cos(math.pi * (j + 0.5) * k / n) * math.sqrt(2.0 / n)
    D[0] = 1.0 / math.sqrt(n)
    return D


def _check_factor(factor, size: tuple[int, ...]) -> int:
    if isinstance(factor, bool) or not isinstance(factor, int):
        if not (isinstance(factor, float) and factor.is_integer()):
            raise TypeError(f"factor: expected a positive integer, got {factor!r}")
    f = int(factor)
    H, W = size[-2:]
    if f < 1:
        raise ValueError(f"factor: expected a positive integer, got {factor!r}")
    if H % f or W % f:
        raise ValueError(f"factor: {factor!r} does not divide the image size H x W = {H} x {W}; expected a common divisor")
    return f


class SuperResolution(CheckedOperator, dinv.physics.DecomposablePhysics):
    """Box downsampling of ``(C, H, W)`` images by an integer ``factor`` that divides ``H`` and ``W``.

    Parameters
    ----------
    img_size : tuple of int
        ``(C, H, W)`` of the high-resolution image.
    factor : int
        Downsampling factor ``f``; measurements are ``(B, C, H/f, W/f)``.
    noise_std : float
        Standard deviation of the Gaussian measurement noise.

    Examples
    --------
    >>> import torch
    >>> from invdiff.operators import SuperResolution
    >>> op = SuperResolution((1, 32, 32), factor=4)
    >>> y = op(torch.rand(1, 1, 32, 32))
    >>> y.shape, bool(torch.allclose(op.A(op.A_dagger(y)), y))
    (torch.Size([1, 1, 8, 8]), True)
    """

    def __init__(self, img_size, factor: int = 4, noise_std: float = 0.0, device: str | torch.device | None = None):
        size = check_img_size(img_size, ndims=(3,))
        noise_std = check_noise_std(noise_std)
        f = _check_factor(factor, size)
        C, H, W = size
        s = torch.zeros(1, C, f * f, H // f, W // f)
        s[:, :, 0] = 1.0 / f
        super().__init__(img_size=size, mask=s, noise_model=dinv.physics.GaussianNoise(sigma=noise_std))
        self.img_size = size
        self.factor = f
        self.meas_size = (C, H // f, W // f)
        self.register_buffer("Q", torch.kron(dct_matrix(f), dct_matrix(f)).to(torch.float32))  # (f^2, f^2)
        place(self, device)

    # SVD factors -------------------------------------------------------------------------
    def V_adjoint(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, f^2, H/f, W/f)``: blockwise orthonormal DCT."""
        B, C, H, W = x.shape
        f = self.factor
        blocks = x.reshape(B, C, H // f, f, W // f, f).permute(0, 1, 3, 5, 2, 4).reshape(B, C, f * f, H // f, W // f)
        return torch.einsum("pq,bcqhw->bcphw", self.Q.to(x.dtype), blocks)

    def V(self, z: Tensor) -> Tensor:
        """Inverse of :meth:`V_adjoint`."""
        B, C, _, h, w = z.shape
        f = self.factor
        blocks = torch.einsum("qp,bcqhw->bcphw", self.Q.to(z.dtype), z)
        return blocks.reshape(B, C, f, f, h, w).permute(0, 1, 4, 2, 5, 3).reshape(B, C, h * f, w * f)

    def U(self, z: Tensor) -> Tensor:
        """Keep the DC coefficient: ``(B, C, f^2, h, w) -> (B, C, h, w)``."""
        return z[:, :, 0]

    def U_adjoint(self, y: Tensor) -> Tensor:
        """``(B, C, h, w) -> (B, C, f^2, h, w)`` with ``y`` in the DC coefficient, zeros elsewhere."""
        z = y.new_zeros(y.shape[0], y.shape[1], self.factor**2, *y.shape[2:])
        z[:, :, 0] = y
        return z
