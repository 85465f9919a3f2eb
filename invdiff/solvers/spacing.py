r"""Voxel spacing and the weight of total variation along z (DiffusionMBIR).

DiffusionMBIR ties the slices of a volume together with ``lam |D_z x|_1``, ``(D_z x)_k = x_{k+1} - x_k``
(:mod:`invdiff.solvers.tv_z`). How strongly neighbouring slices should be tied depends on how far apart
they are. The rule used here:

.. math::

    \lambda_z = \lambda \, \frac{h}{d_z}, \qquad h = \sqrt{d_y d_x},

with ``spacing = (d_z, d_y, d_x)`` (the tensor's axis order ``(D, H, W)``, any length unit) and
``lambda`` the weight for isotropic voxels (the ``tv_weight`` of :class:`~invdiff.solvers.DiffusionMBIR`).

Why ``1 / d_z``. The objects are piecewise constant: a difference between two neighbouring slices is
non-zero only where a boundary passes between the two slice centres. The chance of that grows in
proportion to the distance ``d_z`` between them, while the height of the jump does not depend on it, so
``E|x_{k+1} - x_k| = b`` grows like ``d_z``. ``lam |D_z x|_1`` is the negative log of a Laplace prior
``p(v) ~ exp(-|v| / b)`` on the differences with ``lam = 1 / b`` (in the units of the data term), hence
``lam ~ 1 / d_z``: slices four times as thick are four times less alike and are tied four times less.
Thick slices that average thin ones (partial volume) follow the same rule: the mean over ``d_z`` of
a piecewise-constant profile changes from one thick slice to the next where a boundary falls in the
``d_z`` between them. The in-plane pixel ``h`` is the unit because the 2D prior, the operator and the
isotropic tuning all live on the in-plane grid; at ``d_z = h`` the weight is ``lambda`` unchanged, so
``spacing=None`` (isotropic) keeps every earlier result. The one constant, ``lambda`` at isotropic
voxels, is the tuned preset (``benchmarks/TUNING.md``, section "DiffusionMBIR: TV along z and the
voxel spacing", where the rule is checked against a grid of weights on a 4x-thick-slice tuning volume).

Example
-------
>>> tv_z_weight(0.2, (4.0, 1.0, 1.0))
0.05
>>> spacing_from_affine([[0.5, 0, 0, 0], [0, 0.5, 0, 0], [0, 0, 3.0, 0], [0, 0, 0, 1]])
(3.0, 0.5, 0.5)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np

Spacing = tuple[float, float, float]


def check_spacing(spacing, name: str = "spacing") -> Spacing | None:
    """``spacing`` as three positive finite floats ``(dz, dy, dx)``, or ``None``; anything else raises.

    >>> check_spacing([2, 1, 1])
    (2.0, 1.0, 1.0)
    """
    if spacing is None:
        return None
    values = spacing.tolist() if hasattr(spacing, "tolist") else spacing  # tensors, arrays
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name}: expected three voxel sizes (dz, dy, dx), got {type(spacing).__name__} {spacing!r}")
    values = list(values)
    if len(values) != 3:
        raise ValueError(f"{name}: expected three voxel sizes (dz, dy, dx) in the volume's axis order (D, H, W), "
                         f"got {len(values)} values {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name}: expected three positive finite voxel sizes (dz, dy, dx), got {values!r}")
        out.append(float(v))
    return tuple(out)  # type: ignore[return-value]


def spacing_from_affine(affine) -> Spacing:
    """Voxel sizes ``(dz, dy, dx)`` of a volume ``(D, H, W)`` from its 4x4 NIfTI-style affine.

    The affine maps voxel ``(i, j, k, 1)`` to world coordinates with ``i`` along W, ``j`` along H and
    ``k`` along D (the layout of :func:`invdiff.data.load`); the voxel size along an axis is the norm
    of that axis' column, ``|A[:3, c]|``, whatever the rotation or flips.
    """
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.isfinite(a).all():
        raise ValueError(f"affine: expected a finite 4x4 matrix, got shape {a.shape}")
    dx, dy, dz = np.linalg.norm(a[:3, :3], axis=0)
    return check_spacing((float(dz), float(dy), float(dx)), name="affine (voxel sizes)")  # type: ignore[return-value]


def z_ratio(spacing) -> float:
    """``h / d_z`` with ``h = sqrt(d_y d_x)``: 1 for isotropic voxels (and ``spacing=None``), 1/4 for 4x-thick slices."""
    s = check_spacing(spacing)
    if s is None:
        return 1.0
    dz, dy, dx = s
    return math.sqrt(dy * dx) / dz


def tv_z_weight(tv_weight: float, spacing) -> float:
    """The TV-along-z weight for voxels of ``spacing``: ``tv_weight * sqrt(dy dx) / dz`` (see the module docstring)."""
    return float(tv_weight) * z_ratio(spacing)
