"""One-call reconstruction and the table of solvers by name (used by ``invdiff.reconstruct`` and the CLI).

``SOLVERS`` maps a method name to its class. The classes of the heavier methods (``smc``, ``mbir``,
``dds``) are imported only when asked for, so a missing optional module breaks only that method.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Callable, Iterator

import torch
from torch import Tensor

from invdiff.solvers.base import Reconstruction

# name -> "module:Class"; aliases point at the same entry
_TABLE: dict[str, str] = {
    "dps": "invdiff.solvers.dps:DPS",
    "reddiff": "invdiff.solvers.red_diff:REDDiff",
    "smc": "invdiff.solvers.smc:SMC",
    "mbir": "invdiff.solvers.mbir3d:DiffusionMBIR",
    "dds": "invdiff.solvers.dds:DDS",
    "fbp": "invdiff.solvers.baselines:FBP",
    "zerofilled": "invdiff.solvers.baselines:ZeroFilled",
    "tv": "invdiff.solvers.baselines:TV",
    "cg": "invdiff.solvers.baselines:CG",
}
_ALIASES: dict[str, str] = {
    "red-diff": "reddiff", "red_diff": "reddiff", "diffusionmbir": "mbir", "zero-filled": "zerofilled",
    "zero_filled": "zerofilled", "afdps": "smc",
}


class _SolverTable(Mapping):
    """A read-only ``{name: solver class}`` mapping that imports each class on first access."""

    def __init__(self, table: dict[str, str], aliases: dict[str, str]):
        self._table, self._aliases = table, aliases

    def _key(self, name: str) -> str:
        if not isinstance(name, str):
            raise TypeError(f"method: expected a string, one of {sorted(self._table)}, got {type(name).__name__}")
        key = name.lower()
        key = self._aliases.get(key, key)
        if key not in self._table:
            raise KeyError(name)
        return key

    def __getitem__(self, name: str) -> type:
        key = self._key(name)
        module, cls = self._table[key].split(":")
        try:
            return getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError) as err:
            raise ImportError(f"method {name!r}: its solver {module}.{cls} is not available ({err})") from err

    def __contains__(self, name) -> bool:
        try:
            self._key(name)
        except (KeyError, TypeError):
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)

    def available(self) -> list[str]:
        """Names whose solver module imports (for help texts)."""
        out = []
        for name in self._table:
            try:
                self[name]
            except ImportError:
                continue
            out.append(name)
        return out


SOLVERS = _SolverTable(_TABLE, _ALIASES)


def get_solver(method: str) -> type:
    """The solver class for ``method`` (``"dps"``, ``"reddiff"``, ``"smc"``, ``"mbir"``, ``"dds"``, ``"fbp"``, ...)."""
    try:
        return SOLVERS[method]
    except KeyError:
        raise ValueError(f"method: unknown solver {method!r}; expected one of {list(SOLVERS)}") from None


def reconstruct(y: Tensor, op, prior=None, method: str = "dps", *, n_samples: int = 1,
                seed: int | torch.Generator | None = 0, progress: bool = True,
                callback: Callable[[dict], None] | None = None, **kw) -> Reconstruction:
    """Reconstruct ``x`` from ``y = op(x)`` in one call.

    Parameters
    ----------
    y : Tensor
        The measurement.
    op : deepinv.physics.Physics
        The forward operator.
    prior : deepinv.models.Denoiser, optional
        The diffusion prior ``D(x, sigma)``; ignored by the classical baselines (``fbp``, ``zerofilled``,
        ``tv``, ``cg``), required by the others.
    method : str
        A key of :data:`SOLVERS`: ``dps``, ``reddiff``, ``smc``, ``mbir``, ``dds``, ``fbp``,
        ``zerofilled``, ``tv``, ``cg``.
    n_samples, seed, progress, callback
        As :meth:`invdiff.solvers.base.Solver.reconstruct`.
    **kw
        Passed to the solver's constructor (``steps=``, ``step_size=``, ``lr=``, ``weight=``, ...).

    Returns
    -------
    Reconstruction

    Example
    -------
    >>> r = invdiff.reconstruct(y, op, prior, method="dps", steps=200, step_size=0.5)  # doctest: +SKIP
    >>> r.mean, r.nfe  # doctest: +SKIP
    """
    cls = get_solver(method)
    if getattr(cls, "needs_prior", True):
        if prior is None:
            raise TypeError(f"prior: method {method!r} needs a diffusion prior (a denoiser D(x, sigma)), got None")
        solver = cls(prior, **kw)
    else:
        solver = cls(**kw)
    return solver.reconstruct(y, op, n_samples=n_samples, seed=seed, progress=progress, callback=callback)
