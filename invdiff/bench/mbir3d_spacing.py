"""3D CT on isotropic and thick-slice volumes: slice-wise 2D, DiffusionMBIR (defaults), the native 3D prior.

``python -m invdiff.bench.mbir3d_spacing [--md benchmarks/MBIR3D.md] [--out docs/mbir3d_spacing.png] [--overwrite]``
(a few minutes on one CPU thread); ``--tune`` runs the tuning grid of the TV-along-z weight instead.

Problem: the ``ct3d8`` task of :mod:`invdiff.bench.tasks` (8 parallel-beam views of every axial slice,
noise std 1 % of the Shepp-Logan sinogram's maximum, drawn with seed 0), reconstructed from the same
measurement by

* ``slice-wise 2D``: ``DiffusionMBIR(prior2d, tv_weight=0)`` (the 2D prior slice by slice plus CG data
  consistency, nothing couples the slices);
* ``DiffusionMBIR``: ``DiffusionMBIR(prior2d, spacing=spacing)``, every other setting the preset's;
* ``DiffusionMBIR, spacing ignored`` (thick volume only): ``DiffusionMBIR(prior2d)``, as if isotropic;
* ``native 3D``: ``DDS(prior3d, steps=<the same steps>)``, the DDS preset otherwise, no TV. A plain 3D
  network is wrapped in ``TiledDenoiser(prior3d, patch=32, overlap=8)`` (its 32^3 training size); the
  shipped ``SliceResidualDenoiser`` tiles its own 3D correction and gives its 2D part whole slices.

Two held-out volumes, both cut from the same ellipsoid phantom ``ellipsoids((64, 64, 64), seed=777003)``
(:data:`invdiff.bench.tasks.VOLUME_SEED`; neither prior trained on it):

* isotropic: its 16 central slices (``test_volumes(1, 16)``), ``spacing = (1, 1, 1)``;
* 4x thick slices: all 64 slices averaged in groups of 4 (``16 x 64 x 64``, ``spacing = (4, 1, 1)``).
  Averaging thin slices is what a thick-slice acquisition measures (the slice profile integrates over
  its thickness: partial volume), so thick slices are simulated that way rather than by drawing the
  ellipsoids on a coarse grid (point sampling every 4th slice).

PSNR (data range 1) is computed per 2D slice and averaged over the slices of each plane (axial, coronal,
sagittal), as in :mod:`invdiff.bench.mbir3d`. The claim: DiffusionMBIR's defaults beat slice-wise by at
least 0.5 dB on the coronal and on the sagittal planes of both volumes.

Tuning (``--tune``) uses other volumes, cut the same ways from ``ellipsoids((64,) * 3, seed=777102)``
(:data:`TUNE_SEED`): the 8 central slices (isotropic) and the 32 central slices averaged in groups of 4
(8 thick slices), measurement noise seed 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

from invdiff.bench.machine import DEFAULT_PRIOR, load_prior, machine_info
from invdiff.bench.mbir3d import _operator_for, plane_psnr
from invdiff.bench.tasks import VOLUME_SEED, get_task, measure, test_volumes
from invdiff.data import ellipsoids
from invdiff.utils import atomic_path

MARGIN_DB = 0.5
TUNE_SEED = 777102
THICK = 4
PRIOR3D = "phantom-ct-3d"
TUNE_GRID = (0.0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
NAMES = {"slicewise": "slice-wise 2D (tv_weight 0)", "mbir": "DiffusionMBIR (defaults, spacing)",
         "mbir_iso": "DiffusionMBIR, spacing ignored", "native3d": "native 3D prior (DDS)"}


def thick_slab(seed: int, depth: int, factor: int = THICK, size: int = 64) -> Tensor:
    """``depth`` slices ``factor`` times as thick as a pixel: the central ``depth * factor`` slices of the
    cubic phantom ``ellipsoids((size,) * 3, seed)``, averaged in groups of ``factor``; ``(1, 1, depth, size, size)``."""
    if not 1 <= depth * factor <= size:
        raise ValueError(f"depth, factor: expected depth * factor in [1, {size}], got {depth} * {factor}")
    v = ellipsoids((size, size, size), seed=seed)
    lo = (size - depth * factor) // 2
    return v[:, :, lo:lo + depth * factor].reshape(1, 1, depth, factor, size, size).mean(3)


def iso_slab(seed: int, depth: int, size: int = 64) -> Tensor:
    """The ``depth`` central slices of ``ellipsoids((size,) * 3, seed)`` (isotropic voxels)."""
    lo = (size - depth) // 2
    return ellipsoids((size, size, size), seed=seed)[:, :, lo:lo + depth].contiguous()


def test_cases(depth: int = 16) -> dict[str, tuple[Tensor, tuple[float, float, float]]]:
    """The two held-out volumes and their spacings (see the module docstring)."""
    return {"isotropic": (test_volumes(1, depth=depth), (1.0, 1.0, 1.0)),
            "thick": (thick_slab(VOLUME_SEED, 64 // THICK), (float(THICK), 1.0, 1.0))}


test_cases.__test__ = False


def _solvers(spacing, prior2d, prior3d, steps: int | None) -> dict:
    from invdiff.priors import SliceResidualDenoiser, TiledDenoiser
    from invdiff.solvers import DDS, DiffusionMBIR

    kw = {} if steps is None else {"steps": steps}
    out = {"slicewise": DiffusionMBIR(prior2d, tv_weight=0.0, spacing=spacing, **kw),
           "mbir": DiffusionMBIR(prior2d, spacing=spacing, **kw)}
    if spacing != (1.0, 1.0, 1.0):
        out["mbir_iso"] = DiffusionMBIR(prior2d, **kw)
    if prior3d is not None:
        # a SliceResidualDenoiser tiles its own 3D correction (its 2D part must see whole slices); a plain 3D
        # network is tiled into its 32^3 training size
        native = prior3d if isinstance(prior3d, SliceResidualDenoiser) else TiledDenoiser(prior3d, patch=32, overlap=8)
        out["native3d"] = DDS(native, steps=out["mbir"].steps)
    return out


def run(steps: int | None = None, prior2d: str = DEFAULT_PRIOR, prior3d: str | None = PRIOR3D, seed: int = 0,
        log=print) -> dict:
    """Every method on both volumes; returns settings, PSNRs, margins and the volumes (key ``_volumes``)."""
    task = get_task("ct3d8")
    p2, p3 = load_prior(prior2d), (load_prior(prior3d) if prior3d else None)
    res = {"settings": {"task": "ct3d8", "noise_std": task.noise_std(), "prior2d": prior2d, "prior3d": prior3d,
                        "seed": seed, "steps": steps}, "cases": {}, "_volumes": {}}
    for case, (x, spacing) in test_cases().items():
        op = _operator_for(task, x)
        y = measure(op, x, seed=seed)
        rows, vols = {}, {"truth": x}
        for key, solver in _solvers(spacing, p2, p3, steps).items():
            r = solver.reconstruct(y, op, seed=seed, progress=False)
            rows[key] = {**plane_psnr(r.mean, x), "seconds": r.seconds, "nfe": r.nfe,
                         "tv_weight_z": getattr(solver, "tv_weight_z", None)}
            vols[key] = r.mean
            log(f"  {case:9s} {NAMES[key]:36s} coronal {rows[key]['coronal']:.2f}  sagittal "
                f"{rows[key]['sagittal']:.2f} dB  ({r.seconds:.0f} s)")
        margins = {p: rows["mbir"][p] - rows["slicewise"][p] for p in ("axial", "coronal", "sagittal")}
        res["cases"][case] = {"shape": list(x.shape), "spacing": list(spacing), "methods": rows,
                              "margins_db": margins,
                              "passed": margins["coronal"] >= MARGIN_DB and margins["sagittal"] >= MARGIN_DB}
        res["_volumes"][case] = vols
    res["passed"] = all(c["passed"] for c in res["cases"].values())
    return res


def tune(grid=TUNE_GRID, steps: int | None = None, prior2d: str = DEFAULT_PRIOR, log=print) -> list[dict]:
    """DiffusionMBIR with ``tv_weight_z`` = each value of ``grid`` (no spacing rule) on both tuning slabs."""
    from invdiff.solvers import DiffusionMBIR

    task, prior = get_task("ct3d8"), load_prior(prior2d)
    kw = {} if steps is None else {"steps": steps}
    rows = []
    for case, x in (("isotropic", iso_slab(TUNE_SEED, 8)), ("thick", thick_slab(TUNE_SEED, 8))):
        op = _operator_for(task, x)
        y = measure(op, x, seed=1)
        for lam in grid:
            r = DiffusionMBIR(prior, tv_weight=lam, **kw).reconstruct(y, op, seed=1, progress=False)
            rows.append({"case": case, "tv_weight_z": lam, **plane_psnr(r.mean, x), "seconds": r.seconds})
            log(f"  {case:9s} tv_weight_z {lam:<5g} coronal {rows[-1]['coronal']:.2f} sagittal "
                f"{rows[-1]['sagittal']:.2f} dB")
    return rows


def report(res: dict) -> str:
    lines = []
    for case, c in res["cases"].items():
        sp = "x".join(f"{v:g}" for v in c["spacing"])
        lines += [f"**{case}** volume {' x '.join(str(v) for v in c['shape'][2:])}, spacing (dz, dy, dx) = {sp}:", "",
                  "| method | coronal | sagittal | axial | tv_weight_z | s | calls |", "|---|---|---|---|---|---|---|"]
        for key, m in c["methods"].items():
            w = "" if m["tv_weight_z"] is None else f"{m['tv_weight_z']:g}"
            lines.append(f"| {NAMES[key]} | {m['coronal']:.2f} | {m['sagittal']:.2f} | {m['axial']:.2f} | {w} "
                         f"| {m['seconds']:.0f} | {m['nfe']} |")
        d = c["margins_db"]
        lines += ["", f"DiffusionMBIR - slice-wise: coronal {d['coronal']:+.2f} dB, sagittal {d['sagittal']:+.2f} dB "
                  f"(claim >= {MARGIN_DB}): {'PASSED' if c['passed'] else 'FAILED'}"]
        m = c["methods"]
        for key, other in (("mbir", "mbir_iso"), ("native3d", "slicewise")):
            if key in m and other in m:
                lines.append(f"{NAMES[key]} - {NAMES[other]}: coronal {m[key]['coronal'] - m[other]['coronal']:+.2f} dB, "
                             f"sagittal {m[key]['sagittal'] - m[other]['sagittal']:+.2f} dB")
        lines.append("")
    return "\n".join(lines)


def tune_report(rows: list[dict]) -> str:
    lines = ["| tuning slab | tv_weight_z | coronal | sagittal | axial |", "|---|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['tv_weight_z']:g} | {r['coronal']:.2f} | {r['sagittal']:.2f} | {r['axial']:.2f} |"
              for r in rows]
    return "\n".join(lines)


def figure(res: dict, path: str | Path, overwrite: bool = False) -> Path:
    """Central coronal and sagittal planes of both volumes: truth and every method (physical aspect ratio)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["truth", "slicewise", "mbir", "mbir_iso", "native3d"]
    keys = [k for k in keys if any(k in v for v in res["_volumes"].values())]
    rows = [(case, plane) for case in res["_volumes"] for plane in ("coronal", "sagittal")]
    heights = [res["cases"][case]["shape"][2] * res["cases"][case]["spacing"][0] for case, _ in rows]  # physical
    width = res["cases"][rows[0][0]]["shape"][-1]
    fig, axes = plt.subplots(len(rows), len(keys), squeeze=False, gridspec_kw={"height_ratios": heights},
                             figsize=(2.6 * len(keys), 2.6 * sum(heights) / width + 0.4 * len(rows) + 0.6))
    for r, (case, plane) in enumerate(rows):
        vols, c = res["_volumes"][case], res["cases"][case]
        dz = c["spacing"][0]
        for k, key in enumerate(keys):
            ax = axes[r, k]
            ax.set_xticks([])
            ax.set_yticks([])
            if key not in vols:
                ax.axis("off")
                continue
            v = vols[key][0, 0].detach().float().cpu()
            img = v[:, v.shape[1] // 2] if plane == "coronal" else v[:, :, v.shape[2] // 2]
            ax.imshow(img.numpy(), cmap="gray", vmin=0, vmax=1, aspect=dz, interpolation="nearest")
            if r == min(i for i, (cs, _) in enumerate(rows) if key in res["_volumes"][cs]):  # first row it has
                ax.set_title("truth" if key == "truth" else NAMES[key], fontsize=8)
            if k == 0:
                ax.set_ylabel(f"{case}\n{plane}", fontsize=8)
            if key != "truth":
                ax.set_xlabel(f"{c['methods'][key][plane]:.2f} dB", fontsize=8)
    fig.suptitle("8-view CT per slice: central coronal / sagittal planes (PSNR: mean over that plane's slices)",
                 fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def markdown(res: dict, command: str, fig: str | None, seconds: float, cpu: str) -> str:
    """benchmarks/MBIR3D.md: what was run, the command, the tables and the verdict."""
    doc = __doc__.split("\n\n", 2)
    head = ["# 3D CT: slice-wise 2D, DiffusionMBIR and the native 3D prior, isotropic and thick slices", "",
            "Generated by (rerun it after a new `phantom-ct-3d` is shipped; it rewrites this file):", "",
            f"    {command}", "", f"{seconds / 60:.1f} min on {cpu}; add `--overwrite` to replace the outputs.", "",
            doc[2].split("Tuning (``--tune``)")[0].strip(), "",
            "The TV-along-z weight DiffusionMBIR uses is `tv_weight * sqrt(dy dx) / dz` "
            "(`invdiff/solvers/spacing.py`); its tuning is in benchmarks/TUNING.md.", "", "## Results", ""]
    tail = [f"Overall: {'PASSED' if res['passed'] else 'FAILED'} (DiffusionMBIR >= +{MARGIN_DB} dB over slice-wise, "
            "coronal and sagittal, on both volumes)."]
    if fig:
        tail += ["", f"![central planes]({fig})"]
    return "\n".join(head) + "\n" + report(res) + "\n" + "\n".join(tail) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m invdiff.bench.mbir3d_spacing", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=None, help="diffusion steps (default: DiffusionMBIR's preset)")
    p.add_argument("--prior", default=DEFAULT_PRIOR, help="2D prior name or checkpoint path")
    p.add_argument("--prior3d", default=PRIOR3D, help="3D prior name or checkpoint path ('' to skip)")
    p.add_argument("--seed", type=int, default=0, help="seed of the measurement noise and the samplers")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--md", default="", help="write the markdown report here (e.g. benchmarks/MBIR3D.md)")
    p.add_argument("--out", default="", help="figure path (e.g. docs/mbir3d_spacing.png)")
    p.add_argument("--json", default="", help="also write the numbers to this JSON file")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--tune", action="store_true", help="run the tuning grid on the tuning slabs instead")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for out in (args.md, args.out, args.json):  # fail before minutes of sampling, not after
        if out and Path(out).exists() and not args.overwrite:
            raise FileExistsError(f"{out}: output exists; pass --overwrite to replace it")
    torch.set_num_threads(args.threads)
    cpu = machine_info("cpu")["cpu"]
    t0 = time.perf_counter()
    if args.tune:
        rows = tune(steps=args.steps, prior2d=args.prior)
        print(tune_report(rows))
        if args.json:
            with atomic_path(args.json, overwrite=args.overwrite) as tmp:
                Path(tmp).write_text(json.dumps(rows, indent=2))
        return 0
    res = run(steps=args.steps, prior2d=args.prior, prior3d=args.prior3d or None, seed=args.seed)
    seconds = time.perf_counter() - t0
    print(report(res))
    if args.out:
        print(f"figure: {figure(res, args.out, overwrite=args.overwrite)}")
    if args.json:
        with atomic_path(args.json, overwrite=args.overwrite) as tmp:
            Path(tmp).write_text(json.dumps({k: v for k, v in res.items() if not k.startswith("_")}, indent=2,
                                            default=str))
    if args.md:
        given = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--overwrite"]
        command = "python -m invdiff.bench.mbir3d_spacing " + " ".join(given)
        fig = os.path.relpath(args.out, start=Path(args.md).resolve().parent) if args.out else None
        with atomic_path(args.md, overwrite=args.overwrite) as tmp:
            Path(tmp).write_text(markdown(res, command, fig, seconds, cpu))
    return 0 if res["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
