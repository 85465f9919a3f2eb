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
images of ``inpaint70`` / ``deblur``, checked on 4 more) and ``"ct-limited"`` (the default with ``clip_x0``: the
first 2-image winner, ``eta`` 1 with ``lambda_`` 3, lost on further tuning images); DPS and RED-Diff have
``"inpaint"`` and ``"deblur"`` (tuned at their 1000 steps on 2 tuning images of ``inpaint70`` / ``deblur``, checked
on 2 more). :func:`preset` returns the task's own entry, else the default; :attr:`Preset.tuned_on` says what it
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

TASKS: tuple[str, ...] = ("default", "ct", "ct-limited", "mri", "inpaint", "deblur", "sr", "ct3d")
"""Task groups a preset can be asked for (the benchmark's :attr:`invdiff.bench.tasks.Task.group`):
``"default"`` is what was tuned first (16-view CT), ``"ct"`` sparse-view CT, ``"ct-limited"``
limited-angle CT, then MRI, inpainting, deblurring, super-resolution and 3D CT."""
CT16_TUNING = ("ct16: 16-view parallel-beam CT of 64x64 phantoms, noise std 1 % of the Shepp-Logan sinogram's "
               "maximum; tuning images ellipses(n, 64, seed=777002), noise seed 1, prior phantom-ct-64, "
               "100 network calls per image")

CT16_1000 = CT16_TUNING.replace("100 network calls per image", "1000 network calls per image (the preset's steps)")

TASK_TUNING = ("{task}; tuning images ellipses(2, 64, seed=777002), noise seed 1, prior phantom-ct-64, 100 network "
               "calls per image")
TASK_1000 = TASK_TUNING.replace("100 network calls per image", "1000 network calls per image (the preset's steps)")


def task_tuning(task: str, nfe: int = 100, checked_on: str | None = None) -> str:
    """The ``tuned_on`` text of a per-task entry: 2 tuning images of ``task`` at ``nfe`` (100 or 1000) network
    calls per image, then checked on the further tuning images ``checked_on`` (e.g. ``"tuning_images(4)[2:]"``)."""
    text = {100: TASK_TUNING, 1000: TASK_1000}[nfe].format(task=task)
    first = "ellipses(2, 64, seed=777002)"
    return text if checked_on is None else text.replace(first, f"{first}, checked on {checked_on}")


CT_LIMITED90 = ("ct-limited90: limited-angle parallel-beam CT, 60 views over 90 deg, noise std 1 % of the Shepp-Logan "
                "sinogram's maximum")
INPAINT70 = "inpaint70: 70 % of the pixels missing at random, noise std 0.01"
DEBLUR = "deblur: Gaussian blur of std 2 px, noise std 0.01"


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
    # Per-task entries (issue 11): tuned on 2 tuning images of the group's benchmark task, 100 network calls, then
    # checked on 4 more; every key of the default is restated, so an entry is a whole setting. benchmarks/TUNING.md,
    # "Per-task tuning". On ct-limited the 2-image winner (eta 1, lambda_ 3) did not hold up; clip_x0 did (TUNING.md).
    "ct-limited": Preset(
        "dds", "ct-limited",
        {"steps": 100, "schedule": "karras", "eta": 0.85, "lambda_": 1.0, "cg_iters": 20, "tail_average": 0.2,
         "clip_x0": True},
        tuned_on=task_tuning(CT_LIMITED90, checked_on="tuning_images(4)[2:]"),
        grid="on 2 tuning images, coordinate search from the default: lambda_ 1/0.3/3/10 (36.86/34.48/36.96/35.89), "
             "eta at lambda_ 3 0.85/0.7/1.0 (36.96/36.70/38.48), tail_average at eta 1 0.2/1/0.4 (38.48/37.90/35.96); "
             "tail_average 0.4/0.6 (34.43/30.98); clip_x0 (37.54), clip_x0 with eta 1 (38.95). On 2 further tuning "
             "images: the default 30.53, clip_x0 31.09, clip_x0 with eta 1 29.78, eta 1 with lambda_ 3 27.12 "
             "(with clip_x0 27.26)",
        measured="37.54 / 31.09 dB on the 2 / 2 further tuning images (the default: 36.86 / 30.53; deepinv DiffPIR "
                 "lambda_ 1, zeta 1: 35.90 on the first 2); on the 4 ct-limited90 test images see benchmarks/TUNING.md"),
    "inpaint": Preset(
        "dds", "inpaint",
        {"steps": 100, "schedule": "karras", "eta": 0.85, "lambda_": 1.0, "cg_iters": 20, "tail_average": 0.6,
         "sigma_min": 0.02},
        tuned_on=task_tuning(INPAINT70),
        grid="lambda_ 1/0.3/3/10 (20.96-20.97: the data step is exact at this noise); clip_x0 (20.89); tail_average "
             "0.2/0.4/0.6/0.7/0.8/0.9 (20.97/21.28/22.10/22.07/21.63/21.00); sigma_min 0.01/0.03/0.1 (20.99/20.96/"
             "21.28); at tail 0.6: eta 0.75/0.95 (21.96/22.03), schedule vp (21.25), sigma_min 0.02/0.05 (22.65/"
             "22.07); eta 1 with tail 0.4/0.8 (21.25/20.63)",
        measured="22.65 dB on 2 tuning images (the default: 20.97; deepinv DiffPIR lambda_ 3, zeta 1: 22.07); on 4 "
                 "further tuning images (tuning_images(6)[2:]) 21.43 (the default: 20.53; tail 0.6 alone: 21.44); on "
                 "the 4 inpaint70 test images see benchmarks/TUNING.md"),
    "deblur": Preset(
        "dds", "deblur",
        {"steps": 100, "schedule": "karras", "eta": 0.85, "lambda_": 1.0, "cg_iters": 20, "tail_average": 0.6,
         "clip_x0": True},
        tuned_on=task_tuning(DEBLUR, checked_on="tuning_images(6)[2:]"),
        grid="on 2 tuning images: tail_average 0.2/0.4/0.6 (21.83/22.15/22.94); sigma_min 0.01/0.03/0.05/0.1 "
             "(22.25/24.00/24.03/23.08); eta 1 with tail 0.4 (20.63); at sigma_min 0.03: tail 0.4/0.6 (24.07/23.47), "
             "lambda_ 3 (23.42). On 4 further tuning images: the default 23.21, sigma_min 0.03 with tail 0.4 23.38, "
             "tail 0.6 24.02; over all 6, tail 0.6 (23.66) ahead of sigma_min 0.03 with tail 0.4 (23.61); then "
             "clip_x0 at tail 0.6: 23.18 / 24.12 on the 2 / 4",
        measured="23.18 / 24.12 dB on the 2 / 4 tuning images (the default: 21.83 / 23.21; deepinv DiffPIR lambda_ 1, "
                 "zeta 1: 23.92 on the 2); on the 4 deblur test images see benchmarks/TUNING.md"),
    },
    # DPS and RED-Diff: tuned at 1000 steps, the budget of their papers and of their presets (issue 11); the values
    # tuned at 100 steps are invdiff.bench.methods.HPARAMS_AT_NFE[100], which the benchmark's 100-call rows run.
    "dps": {"default": Preset(
        "dps", "default", {"steps": 1000, "step_size": 0.03},
        tuned_on=CT16_1000 + "; 2 tuning images, checked on tuning_images(4)[2:]",
        grid="step_size at 1000 steps on 2 tuning images 0.01/0.02/0.03/0.05/0.1/0.3: 24.70/36.22/37.34/36.24/32.43/"
             "19.14 dB; on the 2 further 0.02/0.03/0.05: 32.69/33.60/33.17; at 100 steps 0.01/0.03/0.05/0.1/0.2/0.3, "
             "best 0.1 (22.64 dB)",
        measured="37.34 / 33.60 dB on the 2 / 2 further tuning images at 1000 steps; on 2 ct16 test images "
                 "(test_images(2)) DPS(prior) with no arguments 33.18, the benchmark's 1000-call run the same "
                 "(same setting, bit for bit); the earlier default (step_size 0.1) 29.30",
        notes="steps = 1000 is the paper's, step_size 1.0 the paper's (10.70 dB at 100 steps). At 100 network calls "
              "the benchmark runs step_size 0.1 (tuned there; HPARAMS_AT_NFE[100] of invdiff.bench.methods); a "
              "class run with fewer steps keeps 0.03 unless step_size is given."),
    # Per-task entries (issue 11): at 1000 steps on 2 tuning images of the group's task; benchmarks/TUNING.md,
    # "DPS and RED-Diff per task at 1000 calls".
    "inpaint": Preset(
        "dps", "inpaint", {"steps": 1000, "step_size": 0.1},
        tuned_on=task_tuning(INPAINT70, nfe=1000, checked_on="tuning_images(4)[2:]"),
        grid="step_size 0.03 (the default) / 0.1 / 0.3 / 0.2: 17.00 / 20.59 / 20.46 / 20.48 dB",
        measured="20.59 / 23.68 dB on the 2 / 2 further tuning images (tuning_images(4)[2:]; the default 0.03: "
                 "17.00 / 17.07)",
        notes="The same value as tuned at 100 calls on ct16 (HPARAMS_AT_NFE[100])."),
    "deblur": Preset(
        "dps", "deblur", {"steps": 1000, "step_size": 1.0},
        tuned_on=task_tuning(DEBLUR, nfe=1000, checked_on="tuning_images(4)[2:]"),
        grid="step_size 0.03 (the default) / 0.1 / 0.3 / 1.0 / 3.0: 16.44 / 18.72 / 20.50 / 23.46 / 21.27 dB",
        measured="23.46 / 26.59 dB on the 2 / 2 further tuning images (tuning_images(4)[2:]; the default 0.03: "
                 "16.44 / 18.32)",
        notes="1.0 is the paper's zeta."),
    },
    "reddiff": {"default": Preset(
        "reddiff", "default", {"steps": 1000, "lr": 0.1, "lam": 16.0},
        tuned_on=CT16_1000 + "; 2 tuning images, checked on tuning_images(4)[2:]",
        grid="at 1000 steps on 2 tuning images: lr 0.05/0.1/0.25 at lam 0.25: 20.80/20.80/20.67 dB; lam "
             "0.05/0.25/1/4/8/16/32/64/128 at lr 0.1: 17.59/20.80/24.48/28.49/29.64/29.95/29.06/26.25/24.05; lr "
             "0.05/0.25 at lam 16: 29.89/29.62; on the 2 further lam 8/16/32: 32.07/32.94/33.25 (mean of all 4: "
             "30.86/31.45/31.16); at 100 steps lr 0.02/0.05/0.1/0.3 at lam 0.25, lam 0.05/0.25/1.0 at lr 0.1, best "
             "lr 0.1, lam 0.25; noise-weighted data term",
        measured="29.95 / 32.94 dB on the 2 / 2 further tuning images at 1000 steps; on 2 ct16 test images "
                 "(test_images(2)) REDDiff(prior) with no arguments 29.11, the benchmark's 1000-call run the same "
                 "(same setting, bit for bit); the earlier default (lam 0.25) 20.84",
        notes="steps = 1000 is the paper's; the paper's lam 0.25 is the value tuned at 100 steps, where the benchmark "
              "runs lr 0.1, lam 0.25 (HPARAMS_AT_NFE[100] of invdiff.bench.methods); a class run with fewer steps "
              "keeps lam 16 unless lam is given."),
    "inpaint": Preset(
        "reddiff", "inpaint", {"steps": 1000, "lr": 0.1, "lam": 0.25},
        tuned_on=task_tuning(INPAINT70, nfe=1000, checked_on="tuning_images(4)[2:]"),
        grid="lam 16 (the default) / 1 / 0.25 / 0.0625 at lr 0.1: 15.57 / 21.46 / 22.33 / 21.74 dB",
        measured="22.33 / 23.29 dB on the 2 / 2 further tuning images (tuning_images(4)[2:]; the default lam 16: "
                 "15.57 / 16.97)",
        notes="The paper's lam and the values tuned at 100 calls on ct16 (HPARAMS_AT_NFE[100])."),
    "deblur": Preset(
        "reddiff", "deblur", {"steps": 1000, "lr": 0.1, "lam": 0.015625},
        tuned_on=task_tuning(DEBLUR, nfe=1000, checked_on="tuning_images(4)[2:]"),
        grid="lam 16 (the default) / 1 / 0.25 / 0.0625 / 0.015625 at lr 0.1: 15.47 / 16.13 / 17.42 / 19.72 / "
             "20.73 dB",
        measured="20.73 / 26.23 dB on the 2 / 2 further tuning images (tuning_images(4)[2:]; lam 0.0625: 19.72 / "
                 "25.37; the default lam 16: 15.47 / 17.69)",
        notes="0.015625 is the smallest value tried, so the optimum may lie below it."),
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

PRESETS["daps"] = {
    "default": Preset(
        "daps", "default", {"steps": 100, "lambda_": 1.0, "cg_iters": 20, "tail_average": 0.6},
        tuned_on="not tuned: the paper's r_t = sigma_t (lambda_ 1), 20 CG iterations per solve, and the tail average "
                 "that DDS found best on inpaint70 (0.6)",
        grid="none (see the 'inpaint' entry for the one task DAPS was tried on)",
        measured="20.76 dB on the 2 inpaint70 tuning images with 3 CG iterations (DDS's inpaint preset: 22.65)",
        notes="Added for issue 11 as a candidate; it did not beat DDS on inpaint70 (benchmarks/TUNING.md)."),
    "inpaint": Preset(
        "daps", "inpaint", {"steps": 100, "lambda_": 4.0, "cg_iters": 3, "tail_average": 0.6},
        tuned_on=task_tuning(INPAINT70),
        grid="lambda_ 1/4/16/64 at cg_iters 3, tail_average 0.6: 20.76/21.54/21.50/21.22 dB",
        measured="21.54 dB on 2 tuning images (DDS's inpaint preset: 22.65; deepinv DiffPIR: 22.07)",
        notes="3 CG iterations are exact here (A^T A is a mask). Not measured on the test images."),
}

PRESETS["diffpir"] = {
    "default": Preset(
        "diffpir", "default",
        {"steps": 100, "lambda_": 0.125, "zeta": 1.0, "schedule": "karras", "clip_x0": True, "tail_average": 1,
         "lambda_end": None, "cg_iters": 20, "cg_tol": 0.0},
        tuned_on=CT16_TUNING + "; 4 tuning images (2, then 2 further: tuning_images(4)[2:])",
        grid="lambda_ 1 (the paper's zeta 1 and lambda, deepinv's lambda_ 2 in this prior's units) and 0.125 (the "
             "ct-limited choice); zeta 1, clip_x0 as deepinv's DiffPIR, EDM's schedule and 20 CG iterations as DDS's "
             "preset, not scanned on ct16",
        measured="lambda_ 0.125: 37.30 / 35.65 dB on the 2 / 2 further ct16 tuning images (lambda_ 1: 33.65 / 32.69; "
                 "DDS's default preset: 36.61 / 34.21); lambda_ 1 on 2 tuning images of ct-limited90 38.57, inpaint70 "
                 "21.10, deblur 21.22",
        notes="Added for issue 11 (benchmarks/TUNING.md, 'DiffPIR in invdiff')."),
    # Per-task entries (issue 11): scanned on 2 tuning images of the group's task, 100 network calls, then checked on
    # 4 further tuning images (tuning_images(6)[2:], python -m invdiff.bench.tune --first 2 --images 4 --scan ...).
    "ct-limited": Preset(
        "diffpir", "ct-limited",
        {"steps": 100, "lambda_": 0.125, "zeta": 1.0, "schedule": "karras", "clip_x0": True, "tail_average": 1,
         "lambda_end": None, "cg_iters": 20, "cg_tol": 0.0},
        tuned_on=task_tuning(CT_LIMITED90, checked_on="tuning_images(6)[2:]"),
        grid="on 2 tuning images: lambda_ 1/0.5/0.25/0.125/0.0625 (38.57/38.89/38.82/38.16/36.85), schedule quad at "
             "lambda_ 1/0.5/0.25/0.125 (36.52/36.13/35.22/33.95), at lambda_ 0.5: tail_average 0.2 (38.66), sigma_min 0.03 "
             "(34.60), zeta 0.8 (31.09). On the 4 further: lambda_ 1/0.5/0.25/0.125/0.0625 26.78/27.48/28.12/28.66/"
             "28.94, quad at lambda_ 0.25/0.125 28.98/28.61 (DDS's ct-limited preset 27.63). lambda_ chosen by the "
             "mean over all 6: 0.125 31.83, 0.25 31.69, 0.0625 31.58, quad 0.25 31.06, quad 0.125 30.39 (DDS 30.93); after the test run, zeta 0.95 / 0.9 at lambda_ 0.125 on the 4 further: 26.95 / 26.00",
        measured="38.16 / 28.66 dB on the 2 / 4 further tuning images (DDS's ct-limited preset: 37.54 / 27.63; deepinv "
                 "DiffPIR lambda_ 3: 36.53 on the 2); on the 4 ct-limited90 test images see benchmarks/TUNING.md"),
    "inpaint": Preset(
        "diffpir", "inpaint",
        {"steps": 100, "lambda_": 1.0, "zeta": 1.0, "schedule": "karras", "clip_x0": True, "tail_average": 0.6,
         "sigma_min": 0.02, "lambda_end": None, "cg_iters": 20, "cg_tol": 0.0},
        tuned_on=task_tuning(INPAINT70),
        grid="lambda_ 1/0.5/2 (21.10/21.10/21.09: the data step is a hard constraint at this noise); tail_average "
             "0.2/0.4/0.5/0.6 (21.09/21.25/21.54/21.58); zeta 0.8 (20.24); clip_x0 off (21.07); schedule quad (20.73); "
             "at tail 0.6: sigma_min 0.01/0.02/0.05 (21.80/22.05/21.03); tail 0.7 with sigma_min 0.02 (21.22)",
        measured="22.05 dB on 2 tuning images (DDS's inpaint preset: 22.65; deepinv DiffPIR lambda_ 3: 22.07)",
        notes="Loses to DDS on this task; kept as DiffPIR's best setting for it."),
    "deblur": Preset(
        "diffpir", "deblur",
        {"steps": 100, "lambda_": 0.25, "zeta": 1.0, "schedule": "karras", "clip_x0": True, "tail_average": 1,
         "sigma_min": 0.03, "lambda_end": None, "cg_iters": 20, "cg_tol": 0.0},
        tuned_on=task_tuning(DEBLUR, checked_on="tuning_images(6)[2:]"),
        grid="on 2 tuning images: lambda_ 1/0.5/2 (21.22/21.83/20.35); tail_average 0.2/0.4/0.6 (21.27/21.65/21.98); "
             "zeta 0.8 (20.71); clip_x0 off (21.10); schedule quad (22.95), quad with lambda_ 0.5 (23.02), quad with "
             "tail 0.6 (21.27; with lambda_ 0.5 19.79); sigma_min 0.01/0.03 (22.03/22.82); at sigma_min 0.03 lambda_ "
             "0.5/0.25 (23.73/23.84), with tail 0.2 (23.81) or 0.6 (19.14), lambda_end 2/0.125 (22.31/23.47); "
             "sigma_min 0.05/0.1 at lambda_ 0.5 (23.62/21.96). On the 4 further: sigma_min 0.03 with lambda_ 0.5/0.25 "
             "21.68/22.04, with lambda_ 0.5 and tail 0.2 21.69",
        measured="23.84 / 22.04 dB on the 2 / 4 further tuning images (DDS's deblur preset: 23.18 / 24.12; deepinv "
                 "DiffPIR lambda_ 1: 23.92 / 22.80)",
        notes="Loses to DDS on this task; kept as DiffPIR's best setting for it."),
}

PRESETS["smc"] = {
    "default": Preset(
        "smc", "default",
        {"particles": 16, "steps": 100, "proposal": "gaussian", "ess_threshold": 0.5, "prior_std": "auto",
         "cg_iters": 10, "cg_tol": 1e-6},
        tuned_on=CT16_TUNING + "; 2 tuning images; PSNR of the weighted ensemble mean and 90 % coverage of the truth by "
                               "the particles' per-pixel intervals (python -m invdiff.bench.coverage --image-set tuning)",
        grid="particles 8/16 at 100 steps (2 tuning images, sampler seeds 0 and 1): PSNR of the mean 26.17/27.75 dB, "
             "90 % coverage 0.378/0.515 (exact-sample reference 0.700/0.794); 32 particles not run on the tuning images "
             "(on 1 test image of the earlier stop: 28.14 dB, 0.483, at twice the cost); the other knobs as proposed "
             "untuned in the earlier stop",
        measured="27.75 dB and 90 % coverage 0.515 on 2 ct16 tuning images, 521 s per image on 2 shared CPU cores "
                 "(python -m invdiff.bench.coverage --tasks ct16 --images 2 --image-set tuning --methods "
                 "smc:particles=8 smc); the 'smc' row is SMC(prior) with no arguments, so the default is the tuned "
                 "result (0 dB apart); in-distribution test images in benchmarks/CALIBRATION.md",
        record="benchmarks/CALIBRATION.md",
        notes="K = particles samples. The 10 CG iterations (tolerance 1e-6) per Gaussian solve are the benchmark's "
              "earlier setting, 2.5x faster than 50 on CT. Tempering and Langevin moves are off "
              "(invdiff.solvers.smc_temper, smc_moves; benchmarks/CALIBRATION.md)."),
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
