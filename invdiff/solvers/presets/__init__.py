"""Solver presets: the one place where invdiff's default hyperparameters live, with where they came from.

Every solver class reads its constructor defaults from here (an argument left at ``None`` means "the
preset's"; an argument given explicitly always wins), and so do the benchmark
(:data:`invdiff.bench.methods.HPARAMS`), the notebooks and the command line (which prints
:meth:`~invdiff.solvers.base.Solver.settings`). So::

    solvers.DDS(prior)                                   # == DDS(prior, **preset("dds").params)
    solvers.DDS(prior).settings()                        # the resolved hyperparameters

What was tuned, and on what
---------------------------
Every preset was tuned on the benchmark's tuning images, never on its test images: phantoms
``ellipses(n, 64, seed=777002)`` (disjoint from the test images, seed 777001 + Shepp-Logan), measurement
noise drawn with seed 1, shipped prior ``phantom-ct-64``, 100 network calls per image (DPS and RED-Diff: 1000, the
``steps`` of their presets; their 100-call values are :data:`invdiff.bench.methods.HPARAMS_AT_NFE` ``[100]``);
DiffusionMBIR on its own 3D tuning volume (seed 777102). Each solver has a ``"default"`` entry, tuned on 16-view CT
(``ct16`` of :mod:`invdiff.bench.tasks`), and may have entries for other task groups
(:data:`TASKS`) tuned on that group's task: DDS has ``"inpaint"`` and ``"deblur"`` (tuned on 2 tuning
images of ``inpaint70`` / ``deblur``, checked on 4 more), ``"ct-limited"`` (the default with ``clip_x0``: the
first 2-image winner, ``eta`` 1 with ``lambda_`` 3, lost on further tuning images) and ``"mri"`` (the default
with ``sigma_max`` 0.5 instead of 1.0; ``sigma_max``, the schedule's first level, was tuned on every group); DPS and RED-Diff have
``"inpaint"``, ``"deblur"``, ``"mri"`` and ``"sr"`` (tuned at their 1000 steps on 2 tuning images of ``inpaint70`` /
``deblur`` / ``mri4-random`` / ``sr4``, checked on 2 more; on ``ct-limited90`` their defaults won). :func:`preset` returns the task's own entry, else the default; :attr:`Preset.tuned_on` says what it
was tuned on and :attr:`Preset.grid` what was tried. The grids and every score are in
``benchmarks/TUNING.md``. A class takes the task as an argument::

    solvers.DDS(prior, task="inpaint")                   # == DDS(prior, **preset("dds", "inpaint").params)

Noise range
-----------
:data:`SIGMA_MIN` and :data:`SIGMA_MAX` are the noise range used when a prior does not state its own
``sigma_min``/``sigma_max`` (EDM's ``[0.002, 80]``; Karras et al. 2022). Every solver and schedule
reads them from here.

:data:`PAPER` holds the published settings of the solvers whose tuned preset departs from them, for
reproducing a paper (``DDS(prior, **PAPER["dds"])``).

Layout
------
One module per solver holds that solver's entries, a dict ``{task group: Preset}``
(:mod:`~invdiff.solvers.presets.dds`, ``dps``, ``reddiff``, ``diffpir``, ``daps``, ``smc``, ``mbir``, ``tv``);
:mod:`~invdiff.solvers.presets.provenance` holds :class:`Preset`, the noise range and the shared provenance texts.
This package gathers them into :data:`PRESETS` and answers :func:`preset` and :func:`resolve`.
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any, Mapping

from invdiff.solvers.presets import daps, dds, diffpir, dps, mbir, reddiff, smc, tv
from invdiff.solvers.presets.provenance import (CT16_1000, CT16_TUNING, CT_LIMITED90, DEBLUR, INPAINT70, MRI4,
                                                SR4, SIGMA_MAX, SIGMA_MIN, TASK_1000, TASK_TUNING, TASKS, TUNING_RECORD, Preset,
                                                task_tuning)

__all__ = ["CT16_1000", "CT16_TUNING", "CT_LIMITED90", "DEBLUR", "INPAINT70", "MRI4", "PAPER", "PRESETS", "Preset",
           "SR4", "SIGMA_MAX", "SIGMA_MIN", "TASKS", "TASK_1000", "TASK_TUNING", "TUNING_RECORD", "fill", "preset", "resolve",
           "task_tuning", "tuned_tasks"]

PRESETS: dict[str, dict[str, Preset]] = {
    "dds": dds.PRESETS, "dps": dps.PRESETS, "reddiff": reddiff.PRESETS, "mbir": mbir.PRESETS, "tv": tv.PRESETS,
    "daps": daps.PRESETS, "diffpir": diffpir.PRESETS, "smc": smc.PRESETS,
}
"""Every solver's entries, ``PRESETS[solver][task group]`` (read them through :func:`preset`)."""

# The published settings where the preset departs from them (not tuned here; for reproducing a paper).
PAPER: dict[str, Mapping[str, Any]] = {
    # Chung, Lee, Ye, ICLR 2024, official code solver_2d.py: DDIM on the VP chain, 5 CG iterations, eta 0.85
    "dds": MappingProxyType({"steps": 100, "schedule": "vp", "eta": 0.85, "gamma": math.inf, "cg_iters": 5,
                             "tail_average": 1}),
    # Chung et al., ICLR 2023: 1000 ancestral steps, zeta 1.0 (the code's default)
    "dps": MappingProxyType({"steps": 1000, "step_size": 1.0}),
    # Mardani et al., ICLR 2024: lambda 0.25
    "reddiff": MappingProxyType({"steps": 1000, "lr": 0.25, "lam": 0.25}),
    # Chung et al., CVPR 2023 (CT): predictor-corrector, lambda 0.04, rho 10, 1 CG iteration; 2000 steps in the
    # paper, 200 here (CPU)
    "mbir": MappingProxyType({"steps": 200, "mode": "pc", "tv_weight": 0.04, "rho": 10.0, "cg_iters": 1}),
}


def preset(solver: str, task: str = "default") -> Preset:
    """The preset of ``solver`` for ``task`` (a name of :data:`TASKS`): the task's own entry if one was tuned,
    else ``"default"``.

    Example
    -------
    >>> preset("dds").params["schedule"]
    'karras'
    >>> preset("dds", "mri") is preset("dds")  # not tuned on MRI: the default (16-view CT)
    True
    >>> preset("dds", "ct") is preset("dds")   # the default was tuned on 16-view CT
    True
    """
    if not isinstance(solver, str) or solver not in PRESETS:
        raise ValueError(f"solver: no preset for {solver!r}; expected one of {sorted(PRESETS)}")
    if not isinstance(task, str):
        raise TypeError(f"task: expected a string (a task group such as 'ct', 'mri' or 'default'), got "
                        f"{type(task).__name__}")
    if task not in TASKS:
        raise ValueError(f"task: unknown task group {task!r}; expected one of {list(TASKS)}")
    entries = PRESETS[solver]
    return entries.get(task, entries["default"])


def tuned_tasks(solver: str) -> list[str]:
    """The task groups with a preset of their own for ``solver`` (``"default"`` first)."""
    preset(solver)
    return list(PRESETS[solver])


def resolve(solver: str, given: Mapping[str, Any], task: str = "default") -> dict:
    """``given`` with every ``None`` (and every missing preset key) replaced by the preset's value.

    Arguments passed explicitly (not ``None``) win; keys of ``given`` that the preset does not set stay
    as given (``None`` included).
    """
    return fill(given, preset(solver, task).params)


def fill(given: Mapping[str, Any], values: Mapping[str, Any]) -> dict:
    """``given`` with every ``None`` or missing key of ``values`` replaced by the value in ``values``."""
    out = dict(given)
    for name, value in values.items():
        if out.get(name) is None:
            out[name] = value
    return out
