"""Any image size for networks that need multiples of their downsampling factor: reflect, run, crop.

A UNet with ``L`` stride-2 stages needs every spatial size to be a multiple of ``m = 2^L``; real data
come at sizes such as 57x67, 320x320 or 362x362. Each spatial size ``n`` is padded to
``n' = ceil(n / m) m`` by mirror reflection (the edge sample is not repeated, as ``numpy.pad(mode=
"reflect")``), the padding split ``before = (n' - n) // 2``, ``after = n' - n - before``; the network
runs on the padded tensor and its output is cropped back to ``[before, before + n)``::

    F_any(x) = crop(F(reflect_pad(x)))

The reflection is the ``2(n - 1)``-periodic even extension of the samples, so the padding may be
longer than the image itself (an 8-pixel image padded to 32); a single sample is repeated.
Sizes that are already multiples of ``m`` are not touched: the network is called on ``x`` itself,
bit for bit as before. Padding and cropping are index operations, so gradients flow through them.

Every network-backed prior calls :func:`call_padded` around its network (``EDMDenoiser`` and the
checkpoint adapters); the preconditioning around the network is pixel-wise, so for any prior ``D``
built this way ``D(x) = crop(D(reflect_pad(x)))`` exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def padded_size(n: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is ``>= n``."""
    return -(-n // multiple) * multiple


def check_multiple(multiple: int, arg: str = "multiple") -> int:
    """``multiple`` if it is a positive integer, else a ``ValueError`` naming ``arg``."""
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise ValueError(f"{arg}: expected a positive integer (the network's downsampling factor), got {multiple!r}")
    return multiple


def reflect_indices(n: int, before: int, after: int, device: torch.device | None = None) -> Tensor:
    """Indices ``i in [-before, n + after)`` folded into ``[0, n)`` by even reflection about ``0`` and ``n - 1``."""
    i = torch.arange(-before, n + after, device=device)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    j = i.remainder(period)
    return torch.where(j >= n, period - j, j)


def pad_amounts(shape: tuple[int, ...], multiple: int) -> list[tuple[int, int]]:
    """``(before, after)`` for each size in ``shape`` so that it becomes a multiple of ``multiple``."""
    check_multiple(multiple)
    out = []
    for n in shape:
        p = padded_size(n, multiple) - n
        out.append((p // 2, p - p // 2))
    return out


def reflect_pad(x: Tensor, multiple: int, spatial_dims: int | None = None) -> Tensor:
    """Pad the last ``spatial_dims`` dimensions of ``x`` (default ``x.ndim - 2``) to multiples of ``multiple``."""
    if not torch.is_tensor(x):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    k = x.ndim - 2 if spatial_dims is None else spatial_dims
    if k < 1 or k > x.ndim:
        raise ValueError(f"x: expected (B, C, *spatial) with at least one spatial dimension, got shape {tuple(x.shape)}")
    for dim, (before, after) in zip(range(x.ndim - k, x.ndim), pad_amounts(tuple(x.shape[-k:]), multiple)):
        if before or after:
            x = x.index_select(dim, reflect_indices(x.shape[dim], before, after, x.device))
    return x


def crop_to(y: Tensor, shape: tuple[int, ...], multiple: int) -> Tensor:
    """Undo :func:`reflect_pad`: keep the window of ``y``'s last ``len(shape)`` dims that held the input of ``shape``."""
    index = [slice(None)] * (y.ndim - len(shape))
    for (before, _), n in zip(pad_amounts(tuple(shape), multiple), shape):
        index.append(slice(before, before + n))
    return y[tuple(index)]


def call_padded(fn: Callable[..., Tensor], x: Tensor, multiple: int, *args, **kwargs) -> Tensor:
    """``crop(fn(reflect_pad(x), *args, **kwargs))`` over the spatial dims of ``x`` ``(B, C, *spatial)``.

    ``fn`` must keep the spatial size (it may change the channel count). Where every spatial size is
    already a multiple of ``multiple``, this is ``fn(x, *args, **kwargs)`` itself.

    Example
    -------
    >>> net = torch.nn.Sequential(torch.nn.AvgPool2d(2), torch.nn.Upsample(scale_factor=2))
    >>> call_padded(net, torch.ones(1, 1, 5, 7), multiple=2).shape
    torch.Size([1, 1, 5, 7])
    """
    check_multiple(multiple)
    shape = tuple(x.shape[2:])
    if all(n % multiple == 0 for n in shape):
        return fn(x, *args, **kwargs)
    out = fn(reflect_pad(x, multiple), *args, **kwargs)
    return crop_to(out, shape, multiple)
