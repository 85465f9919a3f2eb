"""invdiff: reconstruct scientific images from incomplete, noisy measurements with diffusion priors.

Subpackages are imported lazily so that ``import invdiff`` stays fast (measured with
``python -X importtime``: about 2 ms for ``import invdiff`` against about 3 s for ``import invdiff.solvers``,
almost all of it torch and deepinv; the CLI's ``--help`` and tools that only read ``__version__`` gain)::

    import invdiff
    from invdiff import operators, priors, solvers, data, metrics
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = ("operators", "priors", "solvers", "data", "metrics", "conformal", "bench", "utils")

__all__ = [*_SUBMODULES, "reconstruct", "__version__"]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"invdiff.{name}")
    if name == "reconstruct":
        from invdiff.solvers.api import reconstruct

        return reconstruct
    raise AttributeError(f"module 'invdiff' has no attribute {name!r}")
