"""One-call reconstruction and the table of solvers by name (used by ``invdiff.reconstruct`` and the CLI).

``SOLVERS`` maps each method's name to its class; ``ALIASES`` maps other spellings to those names.
:func:`get_solver` accepts both, in any letter case.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from invdiff.solvers.base import Reconstruction
from invdiff.solvers.baselines import CG, FBP, TV, ZeroFilled
from invdiff.solvers.daps import DAPS
from invdiff.solvers.dds import DDS
from invdiff.solvers.diffpir import DiffPIR
from invdiff.solvers.dps import DPS
from invdiff.solvers.mbir3d import DiffusionMBIR
from invdiff.solvers.red_diff import REDDiff
from invdiff.solvers.afdps import AFDPS
from invdiff.solvers.tweedie_smc import SMC

SOLVERS: dict[str, type] = {
    "dps": DPS, "reddiff": REDDiff, "smc": SMC, "afdps": AFDPS, "mbir": DiffusionMBIR, "dds": DDS, "daps": DAPS, "diffpir": DiffPIR,
    "fbp": FBP, "zerofilled": ZeroFilled, "tv": TV, "cg": CG,
}
ALIASES: dict[str, str] = {
    "red-diff": "reddiff", "red_diff": "reddiff", "diffusionmbir": "mbir", "zero-filled": "zerofilled",
    "zero_filled": "zerofilled",
}


def get_solver(method: str) -> type:
    """The solver class for ``method``: a key of :data:`SOLVERS` or :data:`ALIASES`, any letter case."""
    if not isinstance(method, str):
        raise TypeError(f"method: expected a string, one of {list(SOLVERS)}, got {type(method).__name__}")
    key = method.lower()
    key = ALIASES.get(key, key)
    if key not in SOLVERS:
        raise ValueError(f"method: unknown solver {method!r}; expected one of {list(SOLVERS)}")
    return SOLVERS[key]


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
        A key of :data:`SOLVERS`: ``dps``, ``reddiff``, ``smc``, ``afdps``, ``mbir``, ``dds``, ``daps``, ``diffpir``, ``fbp``,
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
