"""One call-counting wrapper around a prior, for the benchmarks (tasks, overhead, notebooks).

:class:`CountingDenoiser` wraps a denoiser ``D(x, sigma)`` and counts what goes through it:

* ``calls``: batched calls (a call with a batch of ``k`` inputs counts once);
* ``evaluations``: inputs through the network (that call counts ``k`` times);
* with ``record=True``, ``records``: one ``[shape, back_propagated]`` per call, where
  ``back_propagated`` turns ``True`` when a gradient later flows back through that call's output
  (a hook on the output), which :mod:`invdiff.bench.overhead` needs to replay the calls bare.

The prior's descriptive attributes (``sigma_min``, ``sigma_max``, ``data_range``, ...) are copied,
so solvers that read them see the wrapped prior's values.
"""

from __future__ import annotations

import deepinv as dinv
import torch
from torch import Tensor

PRIOR_ATTRS = ("sigma_min", "sigma_max", "data_range", "sigma_data", "name")


def mark_backward(out, record: list, index: int = 1):
    """Set ``record[index] = True`` if a gradient ever flows back through ``out`` (a backward pass happened)."""
    if torch.is_tensor(out) and out.requires_grad:
        out.register_hook(lambda grad: record.__setitem__(index, True))
    return out


class CountingDenoiser(dinv.models.Denoiser):
    """Wraps a denoiser and counts its calls: ``calls`` (batched calls) and ``evaluations`` (images through the net).

    Parameters
    ----------
    inner : torch.nn.Module
        The denoiser ``D(x, sigma, ...)``.
    record : bool
        Also keep ``records``: ``[input shape, back-propagated]`` for every call.

    Examples
    --------
    >>> import torch
    >>> from invdiff.priors import GaussianPrior
    >>> c = CountingDenoiser(GaussianPrior(torch.zeros(1, 4, 4), 1.0))
    >>> _ = c(torch.zeros(3, 1, 4, 4), 0.5)
    >>> c.calls, c.evaluations
    (1, 3)
    """

    def __init__(self, inner: torch.nn.Module, record: bool = False):
        super().__init__()
        self.inner = inner
        for a in PRIOR_ATTRS:
            if hasattr(inner, a):
                setattr(self, a, getattr(inner, a))
        self.record = bool(record)
        self.calls = 0
        self.evaluations = 0
        self.records: list[list] = []

    def reset(self) -> None:
        """Zero the counts and forget the records."""
        self.calls = 0
        self.evaluations = 0
        self.records.clear()

    def forward(self, x: Tensor, sigma, *args, **kwargs) -> Tensor:
        self.calls += 1
        self.evaluations += int(x.shape[0])
        out = self.inner(x, sigma, *args, **kwargs)
        if self.record:
            rec = [tuple(x.shape), False]
            self.records.append(rec)
            mark_backward(out, rec)
        return out
