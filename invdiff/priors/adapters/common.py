"""Helpers shared by the checkpoint adapters: configuration resolution, the network holder, input checks.

- :func:`config_from_kwargs` builds a frozen config dataclass from keyword arguments, naming unknown
  ones, and turns list (or ``"32,16,8"`` text, as in the published YAML configs) fields into tuples.
- :func:`resolve_config` turns a loader's ``config=`` (``None``, a preset name or a config object) plus
  single-field overrides into one config: ``preset | overrides``.
- :class:`NetworkDenoiser` is the common base of the VP and VE wrappers: it keeps the raw network
  (an ``nn.Module`` is registered as ``self.net``, so ``.to(device)`` and ``state_dict`` see it),
  ``data_range``, ``name`` and ``pad_multiple``, checks ``(x, sigma)``, and calls the network on
  inputs reflect-padded to ``pad_multiple`` (:func:`invdiff.priors.padding.call_padded`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, fields
from typing import Any, TypeVar

import deepinv as dinv
import torch
from torch import Tensor, nn

from invdiff.priors.padding import call_padded, check_multiple
from invdiff.utils import as_sigma

C = TypeVar("C")


def config_from_kwargs(cls: type[C], kw: Mapping[str, Any], tuple_fields: Mapping[str, type]) -> C:
    """``cls(**kw)`` for a config dataclass; ``tuple_fields`` maps tuple-valued fields to their element type.

    A tuple field given as text (``"32,16,8"``) is split on commas and each item converted with its
    element type; any other iterable becomes a tuple as it is. Unknown names raise ``TypeError``.
    """
    names = {f.name for f in fields(cls)}
    bad = sorted(set(kw) - names)
    if bad:
        raise TypeError(f"{cls.__name__}: unknown argument(s) {bad}; expected some of {sorted(names)}")
    kw = dict(kw)
    for key, elem in tuple_fields.items():
        if key in kw:
            value = kw[key]
            kw[key] = tuple(elem(v) for v in value.split(",") if v) if isinstance(value, str) else tuple(value)
    return cls(**kw)


def resolve_config(config: str | C | None, presets: Mapping[str, C], cls: type[C], overrides: Mapping[str, Any]) -> C:
    """The loader's configuration: ``config`` (``None`` = ``cls()``, a name in ``presets``, or a ``cls``)
    with the fields in ``overrides`` replaced, rebuilt through ``cls.from_kwargs``."""
    if config is None:
        base = cls()
    elif isinstance(config, cls):
        base = config
    elif isinstance(config, str) and config in presets:
        base = presets[config]
    else:
        raise ValueError(f"config: expected one of {sorted(presets)}, an {cls.__name__} or None, got {config!r}")
    return cls.from_kwargs(**(asdict(base) | dict(overrides)))


class NetworkDenoiser(dinv.models.Denoiser):
    """Base of the adapters' denoisers: a raw network ``fn`` and the prior's metadata.

    Parameters
    ----------
    fn : callable
        The raw network; ``signature`` (e.g. ``"net_fn(x_t, t)"``) names it in errors.
    data_range : tuple of float
        Intensity range of the training data.
    name : str, optional
        A label (the checkpoint's file name).
    pad_multiple : int
        Spatial sizes the network accepts are multiples of this (``2^levels`` for a UNet); inputs are
        reflect-padded to it around the network call and the output is cropped back. ``1``: no padding.
    """

    def __init__(self, fn: Callable[..., Tensor], signature: str, data_range: tuple[float, float],
                 name: str | None, pad_multiple: int):
        super().__init__()
        if not callable(fn):
            arg = signature.split("(")[0]
            raise TypeError(f"{arg}: expected a callable {signature}, got {type(fn).__name__}")
        if isinstance(fn, nn.Module):
            self.net = fn
        else:
            self._fn = fn
        self.data_range = tuple(float(v) for v in data_range)
        self.name = name
        self.pad_multiple = check_multiple(pad_multiple, "pad_multiple")

    def call_network(self, x: Tensor, cond: Tensor) -> Tensor:
        """``crop(fn(reflect_pad(x), cond))``: the raw network at any spatial size of ``x``."""
        fn = self.net if hasattr(self, "net") else self._fn
        return call_padded(fn, x, self.pad_multiple, cond)

    @staticmethod
    def check_input(x: Tensor, sigma: Tensor | float) -> Tensor:
        """Check ``x`` is a tensor and return ``sigma`` as a non-negative ``(B,)`` tensor on ``x``'s device."""
        if not torch.is_tensor(x):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        sigma = as_sigma(sigma, x)
        if bool((sigma < 0).any()):
            raise ValueError(f"sigma: expected non-negative noise levels, got min {float(sigma.min())!r}")
        return sigma
