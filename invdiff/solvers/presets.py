"""Solver presets: the one place where invdiff's default hyperparameters live, with where they came from.

Every solver class reads its constructor defaults from here (an argument left at ``None`` means "the
preset's"; an argument given explicitly always wins), and so do the benchmark
(:data:`invdiff.bench.methods.HPARAMS`), the notebooks and the command line (which prints
:meth:`~invdiff.solvers.base.Solver.settings`). So::

    solvers.DDS(prior)                                   # == DDS(prior, **preset("dds").params)
    solvers.DDS(prior).settings()                        # the resolved hyperparameters

What was tuned, and on what
---------------------------
Only the 16-view sparse-view CT task (``ct16`` of :mod:`invdiff.bench.tasks`) was tuned, on the
tuning phantoms ``ellipses(n, 64, seed=777002)`` (disjoint from the benchmark's test images, seed
777001 + Shepp-Logan), measurement noise drawn with seed 1, shipped prior ``phantom-ct-64``, 100
network calls per image; DiffusionMBIR was tuned on its own 3D tuning volume (seed 777102). There is
therefore one entry per solver, task ``"default"`` (= what was tuned), used for every task:
:func:`preset` returns it for any task without an entry of its own, and :attr:`Preset.tuned_on`
says what it was tuned on. The grids and every score are in ``benchmarks/TUNING.md``.

Noise range
-----------
:data:`SIGMA_MIN` and :data:`SIGMA_MAX` are the noise range used when a prior does not state its own
``sigma_min``/``sigma_max`` (EDM's ``[0.002, 80]``; Karras et al. 2022). Every solver and schedule
reads them from here.

:data:`PAPER` holds the published settings of the solvers whose tuned preset departs from them, for
reproducing a paper (``DDS(prior, **PAPER["dds"])``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

SIGMA_MIN: float = 0.002
"""Smallest noise level when the prior states none (EDM's ``sigma_min``)."""
SIGMA_MAX: float = 80.0
"""Largest noise level when the prior states none (EDM's ``sigma_max``)."""

TUNING_RECORD = "benchmarks/TUNING.md"
CT16_TUNING = ("ct16: 16-view parallel-beam CT of 64x64 phantoms, noise std 1 % of the Shepp-Logan sinogram's "
               "maximum; tuning images ellipses(n, 64, seed=777002), noise seed 1, prior phantom-ct-64, "
               "100 network calls per image")


@dataclass(frozen=True)
class Preset:
    """One solver's default hyperparameters for one task, and their provenance.

    Attributes
    ----------
    solver : str
        Key of :data:`invdiff.solvers.SOLVERS` (``"dds"``, ``"dps"``, ...).
    task : str
        ``"default"`` (used for every task without an entry of its own) or a task group.
    params : Mapping
        Constructor keyword arguments (read-only); ``steps`` is the budget the preset was measured at.
    tuned_on : str
        The task, images, seed and budget it was tuned on.
    grid : str
        The values that were tried.
    measured : str
        The scores measured with it (mean PSNR, dB).
    """

    solver: str
    task: str
    params: Mapping[str, Any]
    tuned_on: str
    grid: str
    measured: str
    record: str = TUNING_RECORD
    notes: str = ""

    def __post_init__(self):
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    @property
    def provenance(self) -> str:
        """One paragraph: tuned on, grid, measured, where the record is."""
        text = f"{self.solver} preset '{self.task}': tuned on {self.tuned_on}. Grid: {self.grid}. Measured: " \
               f"{self.measured}. Record: {self.record}."
        return text + (f" {self.notes}" if self.notes else "")

    def knobs(self) -> dict:
        """The tuned hyperparameters without the budget ``steps`` (what the benchmark passes with its own NFE)."""
        return {k: v for k, v in self.params.items() if k != "steps"}


PRESETS: dict[str, dict[str, Preset]] = {
    "dds": {"default": Preset(
        "dds", "default",
        {"steps": 100, "schedule": "karras", "eta": 0.85, "lambda_": 1.0, "cg_iters": 20, "tail_average": 0.2},
        tuned_on=CT16_TUNING + "; 3-4 tuning images",
        grid="schedule vp/karras; gamma 0.1/1/10/inf; eta 0.5/0.7/0.85/1.0; cg_iters 3/5/10/20/50; "
             "sigma_min 0.002/0.02/0.05/0.1; lambda_ 0.3/1/3; tail average 1/20 steps",
        measured="35.03 dB on 4 tuning images (official settings, vp schedule: 29.68 on 3); "
                 "35.26 dB on the 8 ct16 test images (benchmarks/CT16.md), re-measured as DDS(prior): 35.27 "
                 "(PAPER['dds'] on the same measurement: 31.05)",
        notes="gamma is unused while lambda_ is set (gamma_t = sigma_t^2 / (lambda_ sigma_y^2)); passing gamma "
              "without lambda_ switches lambda_ off."),
    },
    "dps": {"default": Preset(
        "dps", "default", {"steps": 1000, "step_size": 0.1},
        tuned_on=CT16_TUNING + "; 2 tuning images",
        grid="step_size 0.01/0.03/0.05/0.1/0.2/0.3 at 100 steps",
        measured="22.64 dB on 2 tuning images at 100 steps; at 1000 steps (not re-tuned) 29.36 dB on 2 ct16 test "
                 "images (benchmarks/CT16.md), re-measured as DPS(prior): 29.30; the paper's step_size 1.0: 10.70 dB at 100 steps",
        notes="steps = 1000 is the paper's; step_size was tuned at 100 steps."),
    },
    "reddiff": {"default": Preset(
        "reddiff", "default", {"steps": 1000, "lr": 0.1, "lam": 0.25},
        tuned_on=CT16_TUNING + "; 2 tuning images",
        grid="lr 0.02/0.05/0.1/0.3 at lam 0.25; lam 0.05/0.25/1.0 at lr 0.1; noise-weighted data term",
        measured="18.23 dB on the 8 ct16 test images at 100 steps (benchmarks/CT16.md); at 1000 steps (not "
                 "re-tuned) 20.84 dB on 2 ct16 test images (test_images(2)), 17.31 at 100 steps on the same 2 "
                 "(run_benchmark(['ct16'], ['reddiff'], n_images=2, nfe=1000))",
        notes="steps = 1000 is the paper's; lr and lam were tuned at 100 steps."),
    },
    "mbir": {"default": Preset(
        "mbir", "default",
        {"steps": 50, "mode": "dds", "tv_weight": 0.8, "rho": 10.0, "gamma": math.inf, "cg_iters": 5, "eta": 0.85},
        tuned_on="ct3d8: 8-view parallel-beam CT of every slice of two 3D tuning slabs cut from ellipsoids((64,)*3, "
                 "seed=777102): its 8 central slices (isotropic) and its 32 central slices averaged in groups of 4 "
                 "(4x-thick slices), measurement noise seed 1, prior phantom-ct-64 slice by slice, 50 steps",
        grid="tv_weight_z 0/0.05/0.1/0.2/0.4/0.8/1.6 on each slab (python -m invdiff.bench.mbir3d_spacing --tune); "
             "tv_weight (isotropic) chosen as the best of the rule tv_weight_z = tv_weight * sqrt(dy dx) / dz on both "
             "slabs; rho, gamma, cg_iters, eta as tuned earlier (isotropic slab, TV 0.2 against 0)",
        measured="coronal / sagittal dB: isotropic slab 29.45 / 29.18 at 0.8 (0.2: 27.79 / 27.70; 0: 22.97 / 23.36), "
                 "thick slab 26.04 / 26.35 at 0.8 / 4 = 0.2 (its best; 0.8 unscaled: 23.98 / 24.26; 0: 23.42 / "
                 "23.73); held-out volumes in benchmarks/MBIR3D.md",
        record="benchmarks/TUNING.md, invdiff/bench/mbir3d_spacing.py, benchmarks/MBIR3D.md",
        notes="tv_weight is the weight for isotropic voxels; DiffusionMBIR(spacing=(dz, dy, dx)) uses "
              "tv_weight * sqrt(dy dx) / dz (invdiff/solvers/spacing.py). The earlier preset 0.2 was tuned as TV "
              "0.2 against 0 only. The paper's predictor-corrector sampler is mode='pc' (PAPER['mbir'])."),
    },
    "tv": {"default": Preset(
        "tv", "default", {"weight": 0.0005},
        tuned_on=CT16_TUNING.replace(", 100 network calls per image", "") + "; 4 tuning images, 300 PDHG iterations",
        grid="weight 0.0001/0.0003/0.0005/0.001/0.002/0.003/0.01/0.03: 23.60/27.10/28.15/27.01/24.75/23.45/20.42/"
             "18.96 dB",
        measured="28.15 dB on 4 tuning images; 27.29 dB on the 8 ct16 test images (measured once, after the "
                 "choice); the benchmark's earlier weight 0.01 (no grid recorded) scored 19.34 dB "
                 "on the 8 ct16 test images (benchmarks/CT16.md), 20.42 on the tuning images",
        notes="Re-tuned for the presets (python -m invdiff.bench.tune --task ct16 --methods tv --images 4, then the "
              "grid extended below 0.001 with invdiff.bench.tune.coordinate_search)."),
    },
}

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
    """The preset of ``solver`` for ``task``: the task's own entry if one was tuned, else ``"default"``.

    Example
    -------
    >>> preset("dds").params["schedule"]
    'karras'
    >>> preset("dds", "mri") is preset("dds")  # only ct16 was tuned
    True
    """
    if not isinstance(solver, str) or solver not in PRESETS:
        raise ValueError(f"solver: no preset for {solver!r}; expected one of {sorted(PRESETS)}")
    if not isinstance(task, str):
        raise TypeError(f"task: expected a string (a task group such as 'ct', 'mri' or 'default'), got "
                        f"{type(task).__name__}")
    entries = PRESETS[solver]
    return entries.get(task, entries["default"])


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
