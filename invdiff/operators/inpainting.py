"""Inpainting: keep a subset of the pixels (or voxels) of an image or volume.

.. math::

    y = m \\odot x + m \\odot n, \\qquad n \\sim \\mathcal{N}(0, \\sigma_n^2 I),

with a binary mask ``m``. ``A = diag(m)`` is its own singular value decomposition, so the operator is
deepinv's :class:`deepinv.physics.Inpainting` (a ``DecomposablePhysics``) and deepinv's DDRM runs on
it. ``A_adjoint = A`` and ``A_dagger = A`` (the pseudo-inverse of a 0/1 diagonal), so
``A(A_dagger(y)) = y`` for every measurement ``y = A x``.
"""

from __future__ import annotations

import math

import deepinv as dinv
import torch
from torch import Tensor

from invdiff.device import place
from invdiff.operators._checked import CheckedOperator
from invdiff.validate import check_img_size, check_noise_std


def keep_mask(spatial: tuple[int, ...], ratio: float, seed: int | None = None) -> Tensor:
    """Binary mask over ``spatial`` that keeps exactly ``round(ratio * prod(spatial))`` positions.

    The kept positions are a uniformly random subset drawn on the CPU with a ``torch.Generator``
    seeded by ``seed`` (the global generator when ``seed`` is ``None``), so a seed gives the same
    mask on every device.
    """
    n = math.prod(spatial)
    g = None if seed is None else torch.Generator().manual_seed(int(seed))
    keep = torch.randperm(n, generator=g)[: int(round(ratio * n))]
    m = torch.zeros(n)
    m[keep] = 1.0
    return m.reshape(spatial)


def _mask_from_arg(size: tuple[int, ...], mask, seed: int | None) -> Tensor:
    """Full ``(C, ...)`` float mask from a keep-ratio or a tensor."""
    C, spatial = size[0], size[1:]
    if torch.is_tensor(mask):
        m = mask.detach().to("cpu")
        if m.is_complex() or not torch.isfinite(m.float()).all() or not ((m == 0) | (m == 1)).all():
            raise ValueError("mask: expected a tensor of 0s and 1s (or bools), got other values")
        shape = tuple(m.shape)
        if shape not in (size, spatial, (1, *spatial)):
            raise ValueError(
                f"mask: tensor of shape {shape} does not fit img_size={size}; expected {size}, "
                f"{spatial} or {(1, *spatial)}"
            )
        return m.float().expand(size).clone() if shape != size else m.float().clone()
    if isinstance(mask, bool) or not isinstance(mask, (int, float)):
        raise TypeError(f"mask: expected a keep-ratio in [0, 1] or a tensor, got {mask!r}")
    ratio = float(mask)
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mask: keep-ratio must lie in [0, 1], got {mask!r}")
    return keep_mask(spatial, ratio, seed).expand(C, *spatial).clone()


class Inpainting(CheckedOperator, dinv.physics.Inpainting):
    """Random or given pixel mask; ``img_size`` ``(C, H, W)`` or ``(C, D, H, W)``.

    Parameters
    ----------
    img_size : tuple of int
        ``(C, H, W)`` for images, ``(C, D, H, W)`` for volumes.
    mask : float or Tensor
        A keep-ratio in ``[0, 1]``: exactly ``round(ratio * H * W)`` (times ``D``) pixels are kept,
        drawn uniformly with ``seed``; the same pixels are kept in every channel. Or a 0/1 (bool)
        tensor of shape ``img_size`` (a mask per channel), ``img_size[1:]`` or ``(1, *img_size[1:])``
        (shared across channels).
    noise_std : float
        Standard deviation of the Gaussian noise added to the kept pixels (the removed pixels stay 0).
    seed : int or None
        Seed of the random mask.

    Attributes
    ----------
    mask : Tensor
        ``(1, *img_size)`` float buffer of 0s and 1s (deepinv's singular values of ``A``).

    Examples
    --------
    >>> import torch
    >>> from invdiff.operators import Inpainting
    >>> op = Inpainting((1, 32, 32), mask=0.3, noise_std=0.01, seed=0)
    >>> x = torch.rand(2, 1, 32, 32)
    >>> y = op(x)
    >>> bool(torch.equal(op.A(op.A_dagger(op.A(x))), op.A(x)))
    True
    """

    def __init__(self, img_size, mask: float | Tensor = 0.5, noise_std: float = 0.0, seed: int | None = None,
                 device: str | torch.device | None = None):
        size = check_img_size(img_size)
        noise_std = check_noise_std(noise_std)
        super().__init__(
            img_size=size,
            mask=_mask_from_arg(size, mask, seed),
            noise_model=dinv.physics.GaussianNoise(sigma=noise_std),
        )
        self.img_size = size
        place(self, device)
