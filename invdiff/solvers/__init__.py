"""Posterior solvers and classical baselines. Each returns a :class:`Reconstruction`."""

from invdiff.solvers.api import SOLVERS, get_solver, reconstruct
from invdiff.solvers.base import Reconstruction, Solver
from invdiff.solvers.baselines import CG, FBP, TV, ZeroFilled
from invdiff.solvers.cg import cg
from invdiff.solvers.daps import DAPS
from invdiff.solvers.dds import DDS
from invdiff.solvers.diffpir import DiffPIR
from invdiff.solvers.dps import DPS
from invdiff.solvers.mbir3d import DiffusionMBIR
from invdiff.solvers.red_diff import REDDiff
from invdiff.solvers.schedules import karras_sigmas, vp_chain_sigmas, vp_sigmas
from invdiff.solvers.afdps import AFDPS
from invdiff.solvers.tweedie_smc import SMC

__all__ = ["Reconstruction", "Solver", "karras_sigmas", "vp_sigmas", "vp_chain_sigmas", "DPS", "REDDiff", "SMC",
           "AFDPS", "DDS", "DAPS", "DiffPIR", "DiffusionMBIR", "FBP", "ZeroFilled", "TV", "CG", "cg", "reconstruct", "SOLVERS", "get_solver"]
