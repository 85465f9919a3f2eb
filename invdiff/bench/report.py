"""The task benchmark's outputs: ``RESULTS.md`` (with the methodology), ``results.csv``, ``per_image.csv``, the plot.

:data:`METHODOLOGY` is the one statement of how the benchmark measures (the module docstrings of
:mod:`invdiff.bench.run` and :mod:`invdiff.bench.cli` refer to it); it is printed into every
``RESULTS.md``. :func:`write_json` is the JSON writer of the other benchmarks' ``--json`` options.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from invdiff.utils import atomic_path

CSV_FIELDS = ("task", "method", "key", "family", "images", "nfe_budget", "psnr", "psnr_sd", "ssim", "ssim_sd",
              "seconds_per_image", "calls_per_image", "evals_per_image", "peak_mem_mb", "coverage90",
              "psnr_axial", "psnr_coronal", "psnr_sagittal", "params", "cpu_seconds_per_image")
PER_IMAGE_FIELDS = ("task", "key", "nfe_budget", "image", "psnr", "ssim")

# How the task benchmark measures, stated once; {memory} is one of PEAK_MEMORY's texts.
METHODOLOGY = (
    "Every method gets the same prior object, operator, measurement (one noise draw) and budget of network "
    "calls per image; methods run on the whole batch of test images at once. PSNR: data range 1. SSIM: "
    "Wang et al. 2004, 11-tap Gaussian window (std 1.5), k1 = 0.01, k2 = 0.03, data range 1 (3D SSIM on "
    "volumes). Estimates are scored unclipped. Seconds: batch wall time / images (results.csv also holds the "
    "process's CPU seconds / images, which another load on the machine changes less). Net calls: batched calls "
    "of the prior (counted by a wrapper, for deepinv too); net evals: images through the network per test "
    "image (SMC pushes all its particles through each call). Peak memory: {memory}"
    " 90 % coverage: fraction of pixels whose true value lies in the samples' central 90 % interval."
)
PEAK_MEMORY = {
    "cuda": "CUDA max_memory_allocated.",
    "cpu": "largest increase of the process RSS over its value at the method's start (sampled every 5 ms, "
           "after malloc_trim); approximate.",
}


def methodology(device: str) -> str:
    """:data:`METHODOLOGY` for a run on ``device`` (the peak-memory sentence depends on it)."""
    return METHODOLOGY.format(memory=PEAK_MEMORY["cuda" if str(device).startswith("cuda") else "cpu"])


# ----------------------------------------------------------------------------- tables
def _fmt(v, nd=2) -> str:
    if v is None or v == "":
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.{nd}f}"
    return str(v)


def _table(headers: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] * len(headers)) + "|"]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(out)


def _evals(r: dict) -> int:
    """A row's network evaluations per image, rounded (the tier it is compared within)."""
    return int(round(float(r["evals_per_image"])))


def summary_table(rows: list[dict]) -> str:
    """Per task and per number of network evaluations per image: the best invdiff method against the best deepinv
    method at those evaluations, and the best classical baseline.

    Rows are compared only with rows that push as many images through the network per test image (single chains:
    ``NFE``; the mean of ``K`` chains and SMC's ``K`` particles: ``K x NFE``), so that no row wins by using more
    evaluations at the same number of calls; an evaluation count with rows of one family only has ``-`` for the
    other.
    """
    lines = []
    for tname in dict.fromkeys(r["task"] for r in rows):
        task_rows = [r for r in rows if r["task"] == tname]
        cand = [r for r in task_rows if r["family"] in ("invdiff", "deepinv")]
        classical = [r for r in task_rows if r["family"] == "classical"]
        best_classical = max(classical, key=lambda r: r["psnr"]) if classical else None

        def cell(r):
            return f"{r['method']} {r['psnr']:.2f}" if r else "-"

        for evals in sorted({_evals(r) for r in cand}) or [None]:
            best = {}
            for fam in ("invdiff", "deepinv"):
                fam_rows = [r for r in cand if r["family"] == fam and _evals(r) == evals]
                best[fam] = max(fam_rows, key=lambda r: r["psnr"]) if fam_rows else None
            diff = (f"{best['invdiff']['psnr'] - best['deepinv']['psnr']:+.2f}"
                    if best["invdiff"] and best["deepinv"] else "-")
            lines.append([tname, "-" if evals is None else str(evals), cell(best["invdiff"]), cell(best["deepinv"]),
                          diff, cell(best_classical)])
    return _table(["task", "net evals / image", "best invdiff (PSNR dB)", "best deepinv (PSNR dB)",
                   "invdiff - deepinv (dB)", "best classical (PSNR dB)"], lines)


def task_table(rows: list[dict], tname: str) -> str:
    """One task's rows, best PSNR first."""
    rs = [r for r in rows if r["task"] == tname]
    vol = any(r.get("psnr_axial") not in (None, "") for r in rs)
    headers = ["method", "PSNR (dB)", "SSIM", "s / image", "net calls / image", "net evals / image", "peak mem (MB)",
               "90 % coverage"] + (["PSNR axial / coronal / sagittal"] if vol else []) + ["hyperparameters"]
    lines = []
    for r in sorted(rs, key=lambda r: -r["psnr"]):
        line = [r["method"], f"{r['psnr']:.2f} ± {r['psnr_sd']:.2f}", f"{r['ssim']:.3f} ± {r['ssim_sd']:.3f}",
                _fmt(r["seconds_per_image"]), str(r["calls_per_image"]), _fmt(r["evals_per_image"], 0),
                _fmt(r["peak_mem_mb"], 1), _fmt(r["coverage90"])]
        if vol:
            line.append(" / ".join(_fmt(r.get(f"psnr_{p}")) for p in ("axial", "coronal", "sagittal")))
        line.append(r["params"] or "-")
        lines.append(line)
    return _table(headers, lines)


# ----------------------------------------------------------------------------- the long section
def _subset(per_image: list[dict], task: str, key: str, nfe: int, n: int) -> dict | None:
    """Mean and sd of PSNR and SSIM of ``key`` on ``task`` at ``nfe`` over its images ``0 .. n-1`` (None if absent)."""
    vals = [p for p in per_image if p["task"] == task and p["key"] == key and int(p.get("nfe_budget", -1)) == nfe
            and int(p["image"]) < n]
    if len(vals) != n:
        return None
    out = {}
    for m in ("psnr", "ssim"):
        mean = sum(float(p[m]) for p in vals) / n
        sd = math.sqrt(sum((float(p[m]) - mean) ** 2 for p in vals) / (n - 1)) if n > 1 else 0.0
        out[m], out[m + "_sd"] = mean, sd
    return out


def _comparison(long_rows: list[dict], rows: list[dict], per_image: list[dict], tname: str) -> list[tuple[dict, str]]:
    """The rows of ``tname`` that the long section shows: its own rows, then the main budget's best invdiff and best
    deepinv rows (best by their PSNR in the main table) and the main budget's rows of the long section's methods,
    re-scored on the long section's images; each with its note."""
    lr = sorted((r for r in long_rows if r["task"] == tname), key=lambda r: -r["psnr"])
    if not lr:
        return []
    n = int(lr[0]["images"])
    out = [(r, "") for r in lr]
    main = [r for r in rows if r["task"] == tname]
    picks: dict[str, str] = {}
    for fam in ("invdiff", "deepinv"):
        cand = [r for r in main if r["family"] == fam]
        if cand:
            picks[max(cand, key=lambda r: r["psnr"])["key"]] = f"best {fam} at NFE {cand[0]['nfe_budget']}"
    for r in lr:
        picks.setdefault(r["key"], "")
    for r in sorted(main, key=lambda r: -r["psnr"]):
        if r["key"] in picks:
            sub = _subset(per_image, tname, r["key"], int(r["nfe_budget"]), n)
            if sub is not None:
                out.append(({**r, **sub, "images": n}, picks[r["key"]]))
    return out


def long_summary_table(long_rows: list[dict], rows: list[dict], per_image: list[dict]) -> str:
    """Per task, PSNR on the long section's images: the main budget's best invdiff and deepinv rows, and each long
    method at the main budget and at the long one."""
    keys = list(dict.fromkeys(r["key"] for r in long_rows))
    names = {r["key"]: r["method"] for r in long_rows}
    nfe_long = long_rows[0]["nfe_budget"] if long_rows else ""
    nfe_main = rows[0]["nfe_budget"] if rows else ""
    lines = []
    for tname in dict.fromkeys(r["task"] for r in long_rows):
        comp = _comparison(long_rows, rows, per_image, tname)
        best = {note.split(" at ")[0]: r for r, note in comp if note.startswith("best")}

        def cell(r):
            return f"{r['method']} {r['psnr']:.2f}" if r else "-"

        line = [tname, str(comp[0][0]["images"]), cell(best.get("best invdiff")), cell(best.get("best deepinv"))]
        for k in keys:
            at = {int(r["nfe_budget"]): r["psnr"] for r, _ in comp if r["key"] == k}
            line.append(" → ".join(f"{at[b]:.2f}" if b in at else "-" for b in (int(nfe_main or 0), int(nfe_long))))
        lines.append(line)
    return _table(["task", "images", f"best invdiff at NFE {nfe_main}", f"best deepinv at NFE {nfe_main}"]
                  + [f"{names[k]}: NFE {nfe_main} → {nfe_long}" for k in keys], lines)


def long_table(long_rows: list[dict], rows: list[dict], per_image: list[dict]) -> str:
    """Every row of the long section with its comparison rows (:func:`_comparison`), one block per task."""
    headers = ["task", "method", "NFE", "PSNR (dB)", "SSIM", "s / image", "CPU s / image", "net calls / image",
               "hyperparameters", "row"]
    lines = []
    for tname in dict.fromkeys(r["task"] for r in long_rows):
        for r, note in _comparison(long_rows, rows, per_image, tname):
            lines.append([tname, r["method"], str(r["nfe_budget"]), f"{r['psnr']:.2f} ± {r['psnr_sd']:.2f}",
                          f"{r['ssim']:.3f} ± {r['ssim_sd']:.3f}", _fmt(r["seconds_per_image"]),
                          _fmt(r.get("cpu_seconds_per_image")),
                          str(r["calls_per_image"]), r["params"] or "-", note or "-"])
    return _table(headers, lines)


def long_section(long_rows: list[dict], rows: list[dict], per_image: list[dict], nfe: int) -> list[str]:
    """The Markdown lines of the section at ``nfe`` network calls (``long_rows``), compared with the main ``rows``."""
    parts = [f"## {nfe} network calls", ""]
    if not long_rows:
        return parts + ["(no rows: every combination of this section was skipped, see Not run)", ""]
    n = int(long_rows[0]["images"])
    nfe_main = rows[0]["nfe_budget"] if rows else "?"
    parts += [f"The methods whose papers use {nfe} network calls per image run at that budget, on the first {n} test "
              f"image(s) of each task listed, with the operator, measurement (the same noise draw: the measurement of "
              f"the whole batch, cut to these images) and seed of the sections above. For comparison, the rows at NFE "
              f"{nfe_main} of the best invdiff method, the best deepinv method (best by their PSNR in the tables above) "
              f"and of this section's methods, with PSNR and SSIM re-computed on the same {n} image(s) from "
              f"per_image.csv; their seconds per image are those of the whole batch. Hyperparameters at {nfe} calls: "
              f"`invdiff.bench.methods.hparams_at` (the presets of invdiff's DPS and RED-Diff, tuned at 1000 calls; "
              f"`HPARAMS_AT_NFE` for deepinv's DPS; benchmarks/TUNING.md).", "",
              long_summary_table(long_rows, rows, per_image), "", long_table(long_rows, rows, per_image), ""]
    return parts


# ----------------------------------------------------------------------------- files
def write_markdown(path: Path, rows, skipped, info: dict, settings: dict, exact: list[dict] | None,
                   exact_note: str | None, long_rows: list[dict] | None = None, per_image: list[dict] | None = None,
                   long_nfe: int | None = None) -> None:
    """``RESULTS.md``: setup (``info`` and ``settings["table"]``), methodology, summary, one table per task.

    With ``long_nfe``, a section "``long_nfe`` network calls" (:func:`long_section`) of ``long_rows``, compared
    with ``rows`` re-scored from ``per_image`` (the per-image rows of ``rows``).
    """
    from invdiff.bench.methods import METHODS
    from invdiff.bench.tasks import TASKS

    long_rows = list(long_rows or [])
    used = list(dict.fromkeys(r["key"] for r in [*rows, *long_rows]))
    parts = ["# invdiff benchmark results", "",
             f"Command: `{settings['command']}`", "",
             "## Setup", "",
             _table(["", ""], [[k, str(v)] for k, v in {**info, **settings["table"]}.items()]), "",
             methodology(settings["device"]), "",
             "How the budget maps to steps:", "",
             _table(["method", "steps from NFE"], [[METHODS[k].name, METHODS[k].nfe_rule] for k in used]), "",
             "## Summary: best invdiff against best deepinv at the same number of network calls and network "
             "evaluations per image", "",
             summary_table(rows), ""]
    for tname in dict.fromkeys(r["task"] for r in rows):
        parts += [f"## {tname}: {TASKS[tname].description}", "", task_table(rows, tname), ""]
    if long_nfe:
        parts += long_section(long_rows, rows, per_image or [], long_nfe)
    if exact is not None or exact_note:
        parts += ["## Exact-posterior benchmark (Gaussian-mixture prior; `invdiff.bench.exact_posterior`)", ""]
        parts += [exact_note or "(no rows)", ""]
    if skipped:
        parts += ["## Not run", ""] + [f"- {s}" for s in skipped] + [""]
    parts += ["![PSNR against seconds](results.png)", ""]
    with atomic_path(path, overwrite=True) as tmp:
        Path(tmp).write_text("\n".join(parts))


def emit_markdown(md: str, out: str | None, overwrite: bool = False) -> None:
    """Print a benchmark's Markdown table and, with ``out``, also write it there atomically (never over an
    existing file unless ``overwrite``)."""
    print(md)
    if out:
        with atomic_path(out, overwrite=overwrite) as tmp:
            tmp.write_text(md + "\n")


def write_csv(path: Path, rows: list[dict], fields) -> None:
    """Rows as CSV with columns ``fields`` (missing values empty)."""
    with atomic_path(path, overwrite=True) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({k: r.get(k, "") for k in fields})


def write_json(path, obj, overwrite: bool = False) -> None:
    """``obj`` as indented JSON, written atomically; an existing file is kept unless ``overwrite``."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2) + "\n")


def write_plot(path: Path, rows: list[dict]) -> None:
    """PSNR against seconds per image, one panel per task, one marker per method."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    keys = list(dict.fromkeys(r["key"] for r in rows))
    markers = "osD^v<>phX*P8"
    colors = {"invdiff": "tab:blue", "deepinv": "tab:orange", "classical": "tab:gray"}
    style = {k: markers[i % len(markers)] for i, k in enumerate(keys)}
    ncol = min(4, max(1, len(tasks)))
    nrow = math.ceil(len(tasks) / ncol) if tasks else 1
    fig = Figure(figsize=(3.6 * ncol, 3.0 * nrow + 0.9), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    handles = {}
    for ax, tname in zip(axes, tasks):
        for r in (r for r in rows if r["task"] == tname):
            h = ax.scatter(max(r["seconds_per_image"], 1e-4), r["psnr"], marker=style[r["key"]],
                           color=colors.get(r["family"], "k"), s=42, edgecolor="k", linewidth=0.5)
            handles.setdefault(r["key"], (h, r["method"]))
        ax.set_xscale("log")
        ax.set_title(tname, fontsize=9)
        ax.set_xlabel("seconds / image", fontsize=8)
        ax.set_ylabel("PSNR (dB)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(tasks):]:
        ax.set_axis_off()
    fig.legend([h for h, _ in handles.values()], [n for _, n in handles.values()], loc="outside lower center",
               ncol=min(4, len(handles)), fontsize=7, frameon=False)
    with atomic_path(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
