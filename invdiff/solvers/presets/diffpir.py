"""DiffPIR presets (:class:`invdiff.solvers.DiffPIR`): the ct16 default and the ct-limited, inpaint and
deblur entries."""

from __future__ import annotations

from invdiff.solvers.presets.provenance import CT16_TUNING, CT_LIMITED90, DEBLUR, INPAINT70, Preset, task_tuning

PRESETS: dict[str, Preset] = {
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
