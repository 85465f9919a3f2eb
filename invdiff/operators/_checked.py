"""Shape-checked ``A`` / ``A_adjoint`` / ``A_dagger`` and the ``noise_std`` property, for deepinv-based operators.

The operators that are thin layers over a deepinv ``LinearPhysics`` (:class:`~invdiff.operators.Blur`,
:class:`~invdiff.operators.Inpainting`, :class:`~invdiff.operators.SuperResolution`) add the same
things to it: each public map checks its input's shape before deepinv sees it,

.. math::

    A : (B, *\\mathrm{img\\_size}) \\to (B, *\\mathrm{meas\\_size}), \\qquad
    A^T, A^\\dagger : (B, *\\mathrm{meas\\_size}) \\to (B, *\\mathrm{img\\_size}),

and the Gaussian measurement noise level is read back as ``noise_std``. :class:`CheckedOperator`
holds that once. List it before the deepinv class, so that its methods run first and hand on to
deepinv's through ``super()``::

    class Inpainting(CheckedOperator, dinv.physics.Inpainting): ...

The operator sets ``img_size``; ``meas_size`` defaults to ``img_size`` (operators whose
measurements live in image space) and is set by those that change the shape.
"""

from __future__ import annotations

from torch import Tensor

from invdiff.validate import check_input


class CheckedOperator:
    """Mixin: shape checks on ``A`` (``x``: ``(B, *img_size)``), ``A_adjoint`` and ``A_dagger`` (``y``:
    ``(B, *meas_size)``), each failing with a message naming ``x`` or ``y``; and ``noise_std``."""

    img_size: tuple[int, ...]

    @property
    def noise_std(self) -> float:
        """Standard deviation of the Gaussian measurement noise (``noise_model.sigma``)."""
        return float(self.noise_model.sigma)

    def measurement_size(self) -> tuple[int, ...]:
        """``meas_size`` if the operator sets it, else ``img_size``."""
        return tuple(getattr(self, "meas_size", None) or self.img_size)

    def check_x(self, x: Tensor) -> None:
        """``x`` must be a tensor ``(B, *img_size)``."""
        check_input("x", x, self.img_size)

    def check_y(self, y: Tensor) -> None:
        """``y`` must be a tensor ``(B, *meas_size)``."""
        check_input("y", y, self.measurement_size())

    def A(self, x: Tensor, **kwargs) -> Tensor:
        """``y = A x`` (shape-checked)."""
        self.check_x(x)
        return super().A(x, **kwargs)

    def A_adjoint(self, y: Tensor, **kwargs) -> Tensor:
        """``A^T y``, the exact adjoint (shape-checked)."""
        self.check_y(y)
        return super().A_adjoint(y, **kwargs)

    def A_dagger(self, y: Tensor, **kwargs) -> Tensor:
        """The operator's pseudo-inverse ``A^+ y`` (shape-checked)."""
        self.check_y(y)
        return super().A_dagger(y, **kwargs)
