"""Synthetic test objects: the Shepp-Logan phantom, random-ellipse phantoms, 3D ellipsoids.

All phantoms are float32 tensors with values in ``[0, 1]`` and carry batch and channel
dimensions, ready for an operator: images are ``(N, 1, H, W)``, volumes ``(1, 1, D, H, W)``.
Coordinates run over ``[-1, 1]`` along every axis with pixel centres at ``-1 + (2i + 1) / n``;
the first image row is the top (``y = +1``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# Modified Shepp-Logan (Toft 1996): value, semi-axis a (x), semi-axis b (y), centre x, centre y, angle (deg)
_SHEPP_LOGAN = [
    (1.00, 0.6900, 0.9200, 0.00, 0.0000, 0.0),
    (-0.80, 0.6624, 0.8740, 0.00, -0.0184, 0.0),
    (-0.20, 0.1100, 0.3100, 0.22, 0.0000, -18.0),
    (-0.20, 0.1600, 0.4100, -0.22, 0.0000, 18.0),
    (0.10, 0.2100, 0.2500, 0.00, 0.3500, 0.0),
    (0.10, 0.0460, 0.0460, 0.00, 0.1000, 0.0),
    (0.10, 0.0460, 0.0460, 0.00, -0.1000, 0.0),
    (0.10, 0.0460, 0.0230, -0.08, -0.6050, 0.0),
    (0.10, 0.0230, 0.0230, 0.00, -0.6060, 0.0),
    (0.10, 0.0230, 0.0460, 0.06, -0.6050, 0.0),
]


def _check_size(name: str, value, ndim: int | None = None) -> tuple[int, ...]:
    if isinstance(value, int) and ndim is not None:
        value = (value,) * ndim
    try:
        dims = tuple(int(v) for v in value)
    except TypeError:
        raise TypeError(f"{name}: expected an int or a tuple of ints, got {value!r}") from None
    if ndim is not None and len(dims) != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got {value!r}")
    if any(d < 2 for d in dims) or any(d != v for d, v in zip(dims, value)):
        raise ValueError(f"{name}: expected integer sizes >= 2, got {value!r}")
    return dims


def _grid(shape: tuple[int, ...]) -> list[Tensor]:
    """Pixel-centre coordinates in [-1, 1]; returns (x, y[, z]) with x along the last axis."""
    axes = [(2 * torch.arange(n, dtype=torch.float64) + 1) / n - 1 for n in shape]
    mesh = torch.meshgrid(*axes, indexing="ij")
    if len(shape) == 2:
        rows, cols = mesh
        return [cols, -rows]  # x to the right, y up
    depth, rows, cols = mesh
    return [cols, -rows, depth]


def _paint_ellipses(params: Tensor, shape: tuple[int, int], rect: Tensor | None = None) -> Tensor:
    """Sum ellipse indicator functions. ``params``: (N, K, 6) = value, a, b, x0, y0, angle (rad).

    ``rect`` (N, K), optional: where true, shape ``k`` is the rotated rectangle ``|u| <= a, |w| <= b`` instead."""
    x, y = _grid(shape)
    x, y = x.to(params.dtype), y.to(params.dtype)
    v, a, b, x0, y0, phi = (params[..., i, None, None] for i in range(6))
    c, s = torch.cos(phi), torch.sin(phi)
    dx, dy = x - x0, y - y0
    u, w = c * dx + s * dy, -s * dx + c * dy
    ue, we = u / a, w / b
    inside = (ue * ue + we * we) <= 1.0
    if rect is not None:
        inside = torch.where(rect[..., None, None], (u.abs() <= a) & (w.abs() <= b), inside)
    return (v * inside).sum(dim=1)


def shepp_logan(size: int | tuple[int, int] = 128) -> Tensor:
    """The modified (Toft) Shepp-Logan phantom, values in [0, 1], shape ``(1, 1, H, W)``.

    >>> shepp_logan(64).shape
    torch.Size([1, 1, 64, 64])
    """
    h, w = _check_size("size", size, 2)
    p = torch.tensor(_SHEPP_LOGAN, dtype=torch.float64)
    p[:, 5] = torch.deg2rad(p[:, 5])
    img = _paint_ellipses(p[None], (h, w))
    return img.clamp(0, 1).to(torch.float32)[:, None]


def _random_ellipse_params(n: int, g: torch.Generator, k_max: int = 12) -> Tensor:
    """Parameters of random head-like phantoms: a body, an optional bright rim, inner features."""

    def U(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=torch.float64)

    # body ellipse
    a_body, b_body = U(0.55, 0.9, n), U(0.65, 0.95, n)
    xc, yc, phi_body = U(-0.08, 0.08, n), U(-0.08, 0.08, n), U(-0.5, 0.5, n)
    v_body = U(0.1, 0.5, n)
    has_rim = torch.rand(n, generator=g) < 0.6
    rim = U(0.03, 0.08, n)
    v_outer = torch.where(has_rim, torch.ones_like(v_body), v_body)
    body = [torch.stack([v_outer, a_body, b_body, xc, yc, phi_body], -1)]
    inner_v = torch.where(has_rim, v_body - 1.0, torch.zeros_like(v_body))
    body.append(torch.stack([inner_v, a_body * (1 - rim), b_body * (1 - rim), xc, yc, phi_body], -1))
    # inner features, placed inside the body
    k = torch.randint(3, k_max + 1, (n,), generator=g)
    r = U(0.0, 0.75, n, k_max).sqrt()
    t = U(0, 2 * math.pi, n, k_max)
    ex = r * torch.cos(t) * a_body[:, None]
    ey = r * torch.sin(t) * b_body[:, None]
    cb, sb = torch.cos(phi_body)[:, None], torch.sin(phi_body)[:, None]
    fx = xc[:, None] + cb * ex - sb * ey
    fy = yc[:, None] + sb * ex + cb * ey
    fa = U(0.02, 0.3, n, k_max) * U(0.3, 1.0, n, k_max)
    fb = fa * U(0.4, 2.5, n, k_max)
    fv = U(-0.3, 0.5, n, k_max)
    fv = torch.where(torch.arange(k_max)[None] < k[:, None], fv, torch.zeros_like(fv))
    feats = torch.stack([fv, fa, fb, fx, fy, U(0, math.pi, n, k_max)], -1)
    return torch.cat([torch.stack(body, 1), feats], 1)


def ellipses(n: int, size: int | tuple[int, int] = 64, seed: int | None = 0,
             generator: torch.Generator | None = None) -> Tensor:
    """``n`` random-ellipse phantoms of the usual CT-test kind, values in [0, 1], ``(n, 1, H, W)``.

    Each phantom is a body ellipse (with a bright rim, as a skull, in 60% of them) holding 3 to 12
    smaller ellipses of random position, size, orientation and contrast; overlaps add up and the
    result is clipped to [0, 1]. The same ``seed`` gives the same phantoms.

    >>> ellipses(4, 64, seed=1).shape
    torch.Size([4, 1, 64, 64])
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive int, got {n!r}")
    h, w = _check_size("size", size, 2)
    if generator is None:
        generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
    p = _random_ellipse_params(n, generator)
    return _paint_ellipses(p, (h, w)).clamp(0, 1).to(torch.float32)[:, None]


def ellipsoids(shape: tuple[int, int, int] = (32, 64, 64), seed: int | None = 0, n_ellipsoids: int = 10) -> Tensor:
    """A random 3D ellipsoid phantom, values in [0, 1], shape ``(1, 1, D, H, W)``.

    A body ellipsoid (with a bright rim) holds ``n_ellipsoids`` smaller random ellipsoids, rotated
    about the z axis; structures extend across slices so that sagittal and coronal planes show them.
    """
    d, h, w = _check_size("shape", shape, 3)
    g = torch.Generator().manual_seed(0 if seed is None else int(seed))
    x, y, z = _grid((d, h, w))

    def U(lo, hi):
        return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))

    def ellipsoid(v, a, b, c, x0, y0, z0, phi):
        cp, sp = math.cos(phi), math.sin(phi)
        dx, dy, dz = x - x0, y - y0, z - z0
        u = (cp * dx + sp * dy) / a
        w_ = (-sp * dx + cp * dy) / b
        return v * ((u * u + w_ * w_ + (dz / c) ** 2) <= 1.0)

    a, b, c, phi = U(0.65, 0.9), U(0.75, 0.95), U(0.85, 1.0), U(-0.4, 0.4)
    v_body = U(0.15, 0.45)
    vol = ellipsoid(1.0, a, b, 1.2, 0, 0, 0, phi) + ellipsoid(v_body - 1.0, a * 0.94, b * 0.94, 1.2, 0, 0, 0, phi)
    for _ in range(n_ellipsoids):
        r, t = math.sqrt(U(0, 0.6)), U(0, 2 * math.pi)
        x0, y0 = r * a * math.cos(t), r * b * math.sin(t)
        fa = U(0.05, 0.3)
        vol = vol + ellipsoid(U(-0.25, 0.5), fa, fa * U(0.5, 2.0), U(0.2, 0.8), x0, y0, U(-0.6, 0.6), U(0, math.pi))
    return vol.clamp(0, 1).to(torch.float32)[None, None]


def shapes(n: int, size: int | tuple[int, int] = 64, seed: int | None = 0, k_max: int = 48,
           generator: torch.Generator | None = None) -> Tensor:
    """``n`` random-shape phantoms, values in [0, 1], ``(n, 1, H, W)``: a broader family than :func:`ellipses`.

    Each phantom is a sum of ``k`` shapes, ``k`` log-uniform in ``[4, k_max]``, each an ellipse or a
    rotated rectangle (1 in 3) anywhere in the field of view, with a log-uniform size in ``[0.02, 0.8]``
    (half-axes, in units of half the field of view), aspect ratio up to 8, and a signed value
    uniform in ``[-0.4, 0.8]``; half of them sit on a uniform background in ``[0, 0.4]``. The sum is
    clipped to [0, 1]. No body outline, no head-like layout: used, mixed with :func:`ellipses`, to
    train a prior that is not tied to one generator's look.

    >>> shapes(3, 32, seed=1).shape
    torch.Size([3, 1, 32, 32])
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive int, got {n!r}")
    if isinstance(k_max, bool) or not isinstance(k_max, int) or k_max < 1:
        raise ValueError(f"k_max: expected a positive int, got {k_max!r}")
    h, w = _check_size("size", size, 2)
    g = generator if generator is not None else torch.Generator().manual_seed(0 if seed is None else int(seed))

    def U(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=torch.float64)

    k = torch.exp(U(math.log(min(4, k_max)), math.log(k_max + 1), n)).floor().clamp(1, k_max)
    used = torch.arange(k_max)[None] < k[:, None]
    a = torch.exp(U(math.log(0.02), math.log(0.8), n, k_max))
    b = a * torch.exp(U(-math.log(8), math.log(8), n, k_max)).clamp(max=1.0 / a.clamp_min(1e-3))
    v = torch.where(used, U(-0.4, 0.8, n, k_max), torch.zeros(n, k_max, dtype=torch.float64))
    p = torch.stack([v, a, b.clamp(0.01, 1.0), U(-0.9, 0.9, n, k_max), U(-0.9, 0.9, n, k_max),
                     U(0, math.pi, n, k_max)], -1)
    rect = torch.rand(n, k_max, generator=g) < 1 / 3
    img = _paint_ellipses(p, (h, w), rect)  # one pass: each shape painted once, as an ellipse or a rectangle
    background = torch.where(torch.rand(n, generator=g) < 0.5, U(0, 0.4, n), torch.zeros(n, dtype=torch.float64))
    return (img + background[:, None, None]).clamp(0, 1).to(torch.float32)[:, None]


def clutter(n: int, size: int | tuple[int, int] = 64, seed: int | None = 0, k_range: tuple[int, int] = (16, 96),
            generator: torch.Generator | None = None) -> Tensor:
    """``n`` low-contrast clutter phantoms, values in [0, 1], ``(n, 1, H, W)``: many faint overlapping ellipses.

    Each phantom sums ``k`` ellipses, ``k`` uniform in ``k_range``, placed anywhere in the field of view,
    with half-axes drawn independently and log-uniform in ``[0.02, 0.6]`` (so elongated ones are common)
    and a signed value ``c * U(-1, 1)``, where the image's contrast scale ``c`` is log-uniform in
    ``[0.05, 0.8]``. Half of them sit on a uniform background in ``[0, 0.3]``; the sum is clipped to
    [0, 1]. Where :func:`ellipses` and :func:`shapes` hold a few strong edges, this family holds
    textures of many weak ones, at and below the noise levels a prior is used at: the third part of
    the ``broad`` training mixture of the 2D prior (``data_scripts/train_prior.py --data broad``).

    >>> clutter(2, 32, seed=1).shape
    torch.Size([2, 1, 32, 32])
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive int, got {n!r}")
    if (not isinstance(k_range, tuple) or len(k_range) != 2 or not all(type(k) is int for k in k_range)
            or not 1 <= k_range[0] <= k_range[1]):
        raise ValueError(f"k_range: expected a pair of ints 1 <= lo <= hi, got {k_range!r}")
    h, w = _check_size("size", size, 2)
    g = generator if generator is not None else torch.Generator().manual_seed(0 if seed is None else int(seed))

    def U(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=torch.float64)

    lo, hi = k_range
    k = torch.randint(lo, hi + 1, (n,), generator=g)
    used = torch.arange(hi)[None] < k[:, None]
    c = torch.exp(U(math.log(0.05), math.log(0.8), n))
    v = torch.where(used, c[:, None] * U(-1.0, 1.0, n, hi), torch.zeros(n, hi, dtype=torch.float64))
    a = torch.exp(U(math.log(0.02), math.log(0.6), n, hi))
    b = torch.exp(U(math.log(0.02), math.log(0.6), n, hi))
    p = torch.stack([v, a, b, U(-1, 1, n, hi), U(-1, 1, n, hi), U(0, math.pi, n, hi)], -1)
    background = torch.where(torch.rand(n, generator=g) < 0.5, U(0, 0.3, n), torch.zeros(n, dtype=torch.float64))
    img = _paint_ellipses(p, (h, w)) + background[:, None, None]
    return img.clamp(0, 1).to(torch.float32)[:, None]
