"""The ensemble samplers, re-exported under their old module name.

:class:`SMC` (Tweedie tilt, the recommended one) lives in :mod:`invdiff.solvers.tweedie_smc`; the paper's
scheme, :class:`AFDPS`, in :mod:`invdiff.solvers.afdps`; what they share in :mod:`invdiff.solvers.ensemble`.
"""

from invdiff.solvers.afdps import AFDPS
from invdiff.solvers.tweedie_smc import SMC

__all__ = ["SMC", "AFDPS"]
