"""Posterior solvers and classical baselines. Each returns a :class:`Reconstruction`."""

from invdiff.solvers.base import Reconstruction, Solver
from invdiff.solvers.schedules import karras_sigmas, vp_sigmas

__all__ = ["Reconstruction", "Solver", "karras_sigmas", "vp_sigmas"]
