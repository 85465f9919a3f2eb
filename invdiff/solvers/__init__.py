"""Posterior solvers and classical baselines. Each returns a :class:`Reconstruction`."""

import importlib

from invdiff.solvers.api import SOLVERS, get_solver, reconstruct
from invdiff.solvers.base import Reconstruction, Solver
from invdiff.solvers.baselines import CG, FBP, TV, ZeroFilled
from invdiff.solvers.cg import cg
from invdiff.solvers.dps import DPS
from invdiff.solvers.red_diff import REDDiff
from invdiff.solvers.schedules import karras_sigmas, vp_chain_sigmas, vp_sigmas

# solvers in their own (heavier, separately developed) modules, imported on first use
_LAZY = {"SMC": "invdiff.solvers.smc", "DiffusionMBIR": "invdiff.solvers.mbir3d", "DDS": "invdiff.solvers.dds"}

__all__ = ["Reconstruction", "Solver", "karras_sigmas", "vp_sigmas", "vp_chain_sigmas", "DPS", "REDDiff",
           "FBP", "ZeroFilled", "TV", "CG", "cg", "reconstruct", "SOLVERS", "get_solver", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        try:
            return getattr(importlib.import_module(_LAZY[name]), name)
        except (ImportError, AttributeError) as err:
            raise AttributeError(f"invdiff.solvers.{name} is not available: {err}") from err
    raise AttributeError(f"module 'invdiff.solvers' has no attribute {name!r}")
