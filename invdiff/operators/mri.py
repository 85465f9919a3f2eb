"""Cartesian MRI: undersampled centred Fourier transform, single coil or with coil sensitivities.

.. math::

    y_c = M\\, F\\, S_c\\, x + M n_c, \\qquad c = 1, \\dots, N_c, \\qquad n_c \\sim \\mathcal{N}(0, \\sigma_n^2 I)
    \\text{ on the real and on the imaginary part},

with ``F`` the centred orthonormal 2D FFT of fastMRI (``fftshift(fft2(ifftshift(x), norm="ortho"))``
over ``(H, W)``), ``M`` a 0/1 sampling mask over ``(H, W)`` and ``S_c`` complex coil sensitivities
(``S = 1``, a single coil, when ``coil_maps`` is ``None``). The exact adjoint (real inner product
on two-channel tensors) and the zero-filled inverse are

.. math::

    A^T y = \\sum_c \\overline{S_c}\\, F^H M y_c, \\qquad
    A^\\dagger y = \\frac{\\sum_c \\overline{S_c}\\, F^H M y_c}{\\sum_c |S_c|^2},

(``A^\\dagger = A^T`` for one coil; pixels with ``sum |S_c|^2 = 0`` are set to 0), taking the real
part when the operator models a real image. At full sampling ``A^\\dagger A x = x``.

Layouts (complex numbers as two real channels, real part first):

* image ``x``: ``(B, 1, [D,] H, W)`` (real model) or ``(B, 2, [D,] H, W)`` (complex model);
* k-space ``y``: ``(B, 2, [D,] H, W)`` for one coil, ``(B, 2, N_c, [D,] H, W)`` with ``coil_maps``.

Volumes are transformed slice by slice (2D FFT over ``(H, W)``; the same mask for every slice).

This class subclasses ``LinearPhysics`` directly: deepinv's ``MRI`` uses the same centred FFT but
models complex images only, and its ``MultiCoilMRI`` neither takes volumes slice by slice nor
a real image model. For the single-coil complex model, :meth:`MRI.to_deepinv` returns the
equivalent deepinv ``MRI`` (a ``DecomposablePhysics``, e.g. for deepinv's DDRM).
"""

from __future__ import annotations

import math

import deepinv as dinv
import torch
from torch import Tensor

from invdiff.device import place
from invdiff.validate import check_img_size, check_input, check_interval, check_noise_std
from invdiff.operators.functional.fft import fft2c, from_complex, ifft2c, to_complex
from invdiff.operators.functional.mri_masks import equispaced_mask, poisson_mask, random_mask

MASKS = ("random", "equispaced", "poisson")


def _check_acceleration(acceleration) -> float:
    return check_interval("acceleration", acceleration, low=1.0)


def _check_center_fraction(center_fraction) -> float:
    return check_interval("center_fraction", center_fraction, low=0.0, high=1.0, high_open=True)


def _make_mask(mask, H: int, W: int, acceleration: float, center_fraction: float, seed) -> Tensor:
    """``(H, W)`` float mask of 0s and 1s."""
    if isinstance(mask, str):
        if mask == "random":
            m = random_mask(W, acceleration, center_fraction, seed).expand(H, W)
        elif mask == "equispaced":
            m = equispaced_mask(W, acceleration, center_fraction, seed).expand(H, W)
        elif mask == "poisson":
            m = poisson_mask((H, W), acceleration, center_fraction, seed)
        else:
            raise ValueError(f"mask: unknown mask {mask!r}; expected one of {MASKS} or a tensor")
        return m.float().contiguous()
    if not torch.is_tensor(mask):
        raise TypeError(f"mask: expected one of {MASKS} or a tensor, got {type(mask).__name__}")
    m = mask.detach().to("cpu")
    if tuple(m.shape) not in ((W,), (H, W)):
        raise ValueError(f"mask: tensor of shape {tuple(m.shape)} does not fit the image; expected ({W},) (lines) or ({H}, {W})")
    if m.is_complex() or not ((m == 0) | (m == 1)).all():
        raise ValueError("mask: expected a tensor of 0s and 1s (or bools), got other values")
    return m.float().expand(H, W).contiguous()


def _check_coil_maps(coil_maps, size: tuple[int, ...]) -> Tensor | None:
    """Coil maps as a complex ``(N, 1, H, W)`` (or ``(N, D, H, W)``) tensor for volumes, ``(N, H, W)`` for images."""
    if coil_maps is None:
        return None
    spatial = size[1:]
    want = f"a complex tensor (N_coils, {', '.join(map(str, spatial[-2:]))})"
    if len(spatial) == 3:
        want += f" or (N_coils, {', '.join(map(str, spatial))})"
    if not torch.is_tensor(coil_maps):
        raise TypeError(f"coil_maps: expected {want}, got {type(coil_maps).__name__}")
    if not coil_maps.is_complex():
        raise TypeError(
            f"coil_maps: expected {want}, got a real tensor of dtype {coil_maps.dtype} "
            "(convert two real channels with torch.view_as_complex or torch.complex(re, im))"
        )
    S = coil_maps.detach().to("cpu", torch.complex64)
    shape = tuple(S.shape)
    if len(shape) == 3 and shape[1:] == spatial[-2:] and shape[0] >= 1:
        return S[:, None] if len(spatial) == 3 else S
    if len(spatial) == 3 and len(shape) == 4 and shape[1:] == spatial and shape[0] >= 1:
        return S
    raise ValueError(f"coil_maps: shape {shape} does not fit img_size={size}; expected {want}")


class MRI(dinv.physics.LinearPhysics):
    """Cartesian (multi-coil) MRI with fastMRI-style or Poisson-disc undersampling.

    Parameters
    ----------
    img_size : tuple of int
        ``(C, H, W)`` or ``(C, D, H, W)`` with ``C = 1`` (real image; ``A_adjoint`` keeps the real
        part) or ``C = 2`` (complex image as real and imaginary channels). Odd and non-square
        ``H, W`` work.
    acceleration : float
        ``R >= 1``: about ``1/R`` of k-space is sampled (``R = 1``: full sampling).
    center_fraction : float
        In ``[0, 1)``: fraction of the phase-encoding lines (``"poisson"``: of each axis) fully
        sampled around the zero frequency.
    mask : str or Tensor
        ``"random"`` or ``"equispaced"``: fastMRI line masks over the columns ``W`` (the phase-encoding
        direction), the same for every row; ``"poisson"``: a 2D variable-density Poisson-disc mask over
        ``(H, W)`` (see :func:`invdiff.operators.functional.mri_masks.poisson_mask`); or a 0/1 tensor of
        shape ``(W,)`` (lines) or ``(H, W)``, in centred k-space (``acceleration`` and
        ``center_fraction`` are then unused).
    coil_maps : Tensor or None
        Complex coil sensitivities ``(N_c, H, W)`` (for volumes also ``(N_c, D, H, W)``). A real
        tensor is refused: build the complex one with ``torch.complex(re, im)``. ``None``: one coil
        with ``S = 1``, and k-space without a coil dimension.
    noise_std : float
        Standard deviation of the Gaussian noise on each real channel of the *sampled* k-space
        entries (unsampled entries stay 0).
    seed : int or None
        Seed of the random mask (masks are drawn on the CPU, so identical on every device).

    Attributes
    ----------
    mask : Tensor
        ``(H, W)`` float buffer of 0s and 1s, in centred k-space.
    coil_maps : Tensor or None
        Complex buffer ``(N_c, H, W)`` or ``(N_c, 1 | D, H, W)``.
    meas_size : tuple of int
        Shape of the k-space without the batch dimension.

    Examples
    --------
    >>> import torch
    >>> from invdiff.operators import MRI
    >>> op = MRI((1, 64, 48), acceleration=4, mask="equispaced", seed=0)
    >>> x = torch.rand(2, 1, 64, 48)
    >>> op(x).shape
    torch.Size([2, 2, 64, 48])
    >>> full = MRI((1, 64, 48), acceleration=1)
    >>> bool(torch.allclose(full.A_dagger(full.A(x)), x, atol=1e-6))
    True
    """

    def __init__(
        self,
        img_size,
        acceleration: float = 4,
        center_fraction: float = 0.08,
        mask: str | Tensor = "random",
        coil_maps: Tensor | None = None,
        noise_std: float = 0.0,
        seed: int | None = None,
        device: str | torch.device | None = None,
    ):
        size = check_img_size(img_size)
        if size[0] not in (1, 2):
            raise ValueError(
                f"img_size: {img_size!r} has {size[0]} channels; expected 1 (real image) or 2 (complex image: real, imaginary)"
            )
        R = _check_acceleration(acceleration)
        cf = _check_center_fraction(center_fraction)
        noise_std = check_noise_std(noise_std)
        H, W = size[-2:]
        M = _make_mask(mask, H, W, R, cf, seed)
        S = _check_coil_maps(coil_maps, size)
        super().__init__(img_size=size, noise_model=dinv.physics.GaussianNoise(sigma=noise_std))
        self.img_size = size
        self.register_buffer("mask", M)
        self.register_buffer("coil_maps", S)
        if S is not None:
            self.register_buffer("coil_norm", (S.abs() ** 2).sum(0))  # sum_c |S_c|^2, for A_dagger
        coils = () if S is None else (S.shape[0],)
        self.meas_size = (2, *coils, *size[1:])
        place(self, device)

    @property
    def noise_std(self) -> float:
        return float(self.noise_model.sigma)

    @property
    def acceleration_achieved(self) -> float:
        """``1 / (fraction of k-space sampled)`` (``inf`` for an empty mask)."""
        rate = float(self.mask.mean())
        return 1.0 / rate if rate > 0 else math.inf

    def _image_to_complex(self, x: Tensor) -> Tensor:
        """``(B, C, ...)`` real -> ``(B, ...)`` complex."""
        return torch.complex(x[:, 0], torch.zeros_like(x[:, 0])) if self.img_size[0] == 1 else to_complex(x)

    def _complex_to_image(self, z: Tensor) -> Tensor:
        return z.real[:, None] if self.img_size[0] == 1 else from_complex(z)

    def _coil_images(self, y: Tensor) -> Tensor:
        """``F^H M y`` as a complex ``(B, [N_c,] [D,] H, W)`` tensor."""
        return ifft2c(to_complex(y) * self.mask)

    def A(self, x: Tensor, **kwargs) -> Tensor:
        """``y = M F S x`` in the layout ``(B, 2, [N_c,] [D,] H, W)``."""
        check_input("x", x, self.img_size)
        z = self._image_to_complex(x)
        if self.coil_maps is not None:
            z = self.coil_maps * z[:, None]
        return from_complex(fft2c(z) * self.mask)

    def A_adjoint(self, y: Tensor, **kwargs) -> Tensor:
        """``A^T y = sum_c conj(S_c) F^H M y_c`` (real part for the real image model)."""
        check_input("y", y, self.meas_size)
        z = self._coil_images(y)
        if self.coil_maps is not None:
            z = (self.coil_maps.conj() * z).sum(1)
        return self._complex_to_image(z)

    def A_dagger(self, y: Tensor, **kwargs) -> Tensor:
        """Zero-filled inverse: ``A^T y`` normalised by ``sum_c |S_c|^2`` (0 where no coil sees a pixel)."""
        check_input("y", y, self.meas_size)
        z = self._coil_images(y)
        if self.coil_maps is not None:
            n = self.coil_norm
            z = (self.coil_maps.conj() * z).sum(1) / torch.where(n > 0, n, 1.0)
            z = torch.where(n > 0, z, torch.zeros_like(z))
        return self._complex_to_image(z)

    def noise(self, y: Tensor, **kwargs) -> Tensor:
        """Gaussian noise of std ``noise_std`` on each real channel of the sampled entries only."""
        return self.noise_model(y, **kwargs) * self.mask

    def to_deepinv(self) -> dinv.physics.MRI:
        """The equivalent deepinv ``MRI`` (single-coil complex 2D model only), with the same mask and noise."""
        if self.coil_maps is not None or self.img_size[0] != 2 or len(self.img_size) != 3:
            raise ValueError(
                f"to_deepinv: only the single-coil complex 2D model maps to deepinv.physics.MRI; "
                f"this operator has img_size={self.img_size} and {'coil maps' if self.coil_maps is not None else 'one coil'}"
            )
        return dinv.physics.MRI(
            mask=self.mask.clone(),
            img_size=self.img_size,
            noise_model=dinv.physics.GaussianNoise(sigma=self.noise_std),
            device=self.mask.device,
        )
