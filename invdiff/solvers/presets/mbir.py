"""DiffusionMBIR presets (:class:`invdiff.solvers.DiffusionMBIR`): tuned on 3D CT slabs, isotropic and
4x-thick."""

from __future__ import annotations

import math

from invdiff.solvers.presets.provenance import Preset

PRESETS: dict[str, Preset] = {
    "default": Preset(
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
}
