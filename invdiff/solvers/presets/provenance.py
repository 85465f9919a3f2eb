"""Provenance of the presets: the noise range, the task groups, the texts that say what a preset was tuned
on, and the :class:`Preset` record itself (re-exported by :mod:`invdiff.solvers.presets`)."""

from __future__ import annotations

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
MRI4 = "mri4-random: single-coil MRI, 4x random Cartesian lines with 8 % at the centre, noise std 0.01"
SR4 = "sr4: 4x super-resolution, mean of each 4 x 4 pixel block, noise std 0.01"


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

