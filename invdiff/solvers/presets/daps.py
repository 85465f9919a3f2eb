"""DAPS presets (:class:`invdiff.solvers.DAPS`): the untuned default and the inpaint entry."""

from __future__ import annotations

from invdiff.solvers.presets.provenance import INPAINT70, Preset, task_tuning

PRESETS: dict[str, Preset] = {
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
