"""The task benchmark: tasks x methods at a fixed budget of network calls, against deepinv's samplers.

``python -m invdiff.bench [--quick] [--out DIR] [--tasks ...] [--methods ...] [--nfe N] [--images N]``
(or ``invdiff bench ...``) writes ``DIR/RESULTS.md`` (tables, machine, versions), ``DIR/results.csv``
(one row per task and method), ``DIR/per_image.csv`` and ``DIR/results.png`` (PSNR against seconds).

Every method gets the same prior object (wrapped in a :class:`~invdiff.bench.methods.CountingDenoiser`
that counts its calls), the same operator, the same measurement (same noise draw) and the same
budget of network calls per image (``--nfe``); methods run on the whole batch of test images at once.

Metrics (per image, then mean and standard deviation over the images):

* PSNR in dB with data range 1 (the phantoms lie in [0, 1]): :func:`invdiff.metrics.psnr`;
* SSIM: :func:`invdiff.metrics.ssim`, Wang et al. (2004) with an 11-tap Gaussian window (std 1.5),
  ``k1 = 0.01``, ``k2 = 0.03``, data range 1, valid positions only (3D SSIM on volumes);
* estimates are scored as returned (no clipping to [0, 1]);
* seconds: wall time of the batched run divided by the number of images;
* network calls per image (batched calls; each call carries every image of the batch once) and
  network evaluations per image (inputs through the network / images: larger for SMC, whose calls
  carry all particles);
* peak memory: on CPU, the largest increase of the process's resident set size (RSS, read from
  ``/proc/self/statm`` every 5 ms, after ``malloc_trim``) over its value when the method started;
  on CUDA, ``torch.cuda.max_memory_allocated`` over the run;
* for samplers with several samples (SMC): coverage of the truth by the pixel-wise central 90 %
  credible interval (:func:`invdiff.metrics.coverage`).
"""

from __future__ import annotations

import argparse
import csv
import ctypes
import datetime as _dt
import importlib
import json
import math
import os
import platform
import sys
import threading
import time
import traceback
from pathlib import Path

import torch
from torch import Tensor

from invdiff import metrics
from invdiff.bench.methods import METHODS, QUICK_METHODS, CountingDenoiser, get_method, hparams
from invdiff.bench.tasks import QUICK_TASKS, TASKS, get_task, measure, test_images, test_volumes
from invdiff.utils import atomic_path

DEFAULT_PRIOR = "phantom-ct-64"
CSV_FIELDS = ("task", "method", "key", "family", "images", "nfe_budget", "psnr", "psnr_sd", "ssim", "ssim_sd",
              "seconds_per_image", "calls_per_image", "evals_per_image", "peak_mem_mb", "coverage90",
              "psnr_axial", "psnr_coronal", "psnr_sagittal", "params")


# ----------------------------------------------------------------------------- prior, machine
def load_prior(spec: str = DEFAULT_PRIOR, device: str = "cpu") -> torch.nn.Module:
    """The benchmark prior: ``invdiff.priors.load(spec)`` if available, else the shipped weights file."""
    from invdiff import priors

    if hasattr(priors, "load"):
        return priors.load(spec, device=device).eval()
    path = Path(spec)
    if not path.exists():
        path = Path(priors.__file__).parent / "weights" / f"{spec}.safetensors"
    return priors.EDMDenoiser.from_file(path).to(device).eval()


def _prior_meta(prior) -> dict:
    """The shipped prior's JSON metadata (train steps, ...) when the prior has a name."""
    from invdiff import priors

    name = getattr(prior, "name", None)
    if not name:
        return {}
    path = Path(priors.__file__).parent / "weights" / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _version(module: str) -> str:
    try:
        return str(importlib.import_module(module).__version__)
    except Exception:  # noqa: BLE001 - a missing optional package is reported as such
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device: str) -> dict:
    """Platform, CPU, thread counts and package versions."""
    import invdiff

    info = {
        "date (UTC)": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": f"{_cpu_model()} ({os.cpu_count()} logical cores; torch threads {torch.get_num_threads()})",
        "device": device if not device.startswith("cuda") else f"{device} ({torch.cuda.get_device_name(device)})",
        "torch": torch.__version__,
        "deepinv": _version("deepinv"),
        "invdiff": invdiff.__version__,
        "astra-toolbox": _version("astra"),
        "numpy": _version("numpy"),
    }
    try:
        import subprocess

        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(invdiff.__file__).parent)
        if rev.returncode == 0:
            info["invdiff git commit"] = rev.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


# ----------------------------------------------------------------------------- peak memory
class PeakMemory:
    """Peak memory of a block: CUDA ``max_memory_allocated``, or the peak RSS increase sampled every 5 ms on CPU."""

    def __init__(self, device: str):
        self.cuda = str(device).startswith("cuda")
        self.peak_mb = float("nan")

    @staticmethod
    def _rss() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        try:  # hand freed heap back to the OS so that this block's allocations show in RSS
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        self._base = self._rss()
        self._peak = self._base
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(0.005):
                self._peak = max(self._peak, self._rss())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.peak_mb = (torch.cuda.max_memory_allocated() - self._base) / 2**20
            return False
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._rss())
        self.peak_mb = (self._peak - self._base) / 2**20
        return False


# ----------------------------------------------------------------------------- metrics
def plane_psnr(x: Tensor, ref: Tensor, axis: int) -> float:
    """Mean PSNR (data range 1) over the 2D slices of volumes ``(B, C, D, H, W)`` taken along ``axis`` (2, 3 or 4)."""
    xs = x.movedim(axis, 1).flatten(0, 1)  # (B * n_slices, C, ., .)
    rs = ref.movedim(axis, 1).flatten(0, 1)
    return float(metrics.psnr(xs, rs, data_range=1.0).mean())


def _mean_sd(values: list[float]) -> tuple[float, float]:
    t = torch.tensor(values, dtype=torch.float64)
    return float(t.mean()), float(t.std()) if len(values) > 1 else 0.0


# ----------------------------------------------------------------------------- the run
def run_benchmark(task_names, method_keys, n_images: int = 4, nfe: int = 100, prior=None, device: str = "cpu",
                  seed: int = 0, params_override: dict | None = None, images: Tensor | None = None,
                  log=print) -> tuple[list[dict], list[dict], list[str]]:
    """Run every method on every task.

    ``params_override`` maps a method key to hyperparameters that replace the tuned ones;
    ``images`` replaces the test images of 2D tasks (the tuning script passes the tuning images).

    Returns
    -------
    rows : list of dict
        One row per task and method (the fields of :data:`CSV_FIELDS`).
    per_image : list of dict
        ``task, key, image, psnr, ssim`` per test image.
    skipped : list of str
        ``task / method: reason`` for every combination that did not run.
    """
    prior = load_prior(DEFAULT_PRIOR, device) if prior is None else prior
    counting = CountingDenoiser(prior).to(device)
    rows, per_image, skipped = [], [], []
    for tname in task_names:
        task = get_task(tname)
        try:
            op = task.operator().to(device)
        except Exception as err:  # noqa: BLE001 - an operator that cannot be built skips its task
            skipped.append(f"{tname} / all methods: operator not available ({type(err).__name__}: {err})")
            log(f"[{tname}] skipped: {err}")
            continue
        if task.volume:
            x = test_volumes(max(1, n_images // 4)).to(device)
        else:
            x = (test_images(n_images) if images is None else images).to(device)
        y = measure(op, x, seed=seed)
        log(f"[{tname}] {task.description}; {x.shape[0]} test item(s), noise std {task.noise_std():.4g}, NFE {nfe}")
        for key in method_keys:
            m = get_method(key)
            reason = m.available() or m.applies(task, op)
            if reason:
                skipped.append(f"{tname} / {m.name}: {reason}")
                continue
            params = hparams(key, task.group)
            if params_override and key in params_override:
                params.update(params_override[key])
            counting.reset()
            try:
                with PeakMemory(device) as mem:
                    t0 = time.perf_counter()
                    out = m.run(counting, op, y, nfe, seed, dict(params))
                    if str(device).startswith("cuda"):
                        torch.cuda.synchronize()
                    seconds = time.perf_counter() - t0
            except Exception as err:  # noqa: BLE001 - one failing method must not stop the benchmark
                skipped.append(f"{tname} / {m.name}: failed ({type(err).__name__}: {str(err).splitlines()[0][:200]})")
                log(f"  {m.name:<34} FAILED: {type(err).__name__}: {err}")
                if os.environ.get("INVDIFF_BENCH_TRACEBACK"):
                    traceback.print_exc()
                continue
            est = out.x.detach().to(torch.float32).reshape(x.shape)
            B = x.shape[0]
            ps = metrics.psnr(est, x, data_range=1.0).tolist()
            ss = metrics.ssim(est, x, data_range=1.0).tolist()
            cov = float("nan")
            if out.samples is not None and out.samples.shape[0] >= 2:
                smp = out.samples.detach().to(torch.float32).reshape(out.samples.shape[0], *x.shape)
                cov = sum(metrics.coverage(smp[:, b], x[b], level=0.9) for b in range(B)) / B
            row = {
                "task": tname, "method": m.name, "key": key, "family": m.family, "images": B, "nfe_budget": nfe,
                "seconds_per_image": seconds / B, "calls_per_image": counting.calls,
                "evals_per_image": counting.evaluations / B, "peak_mem_mb": mem.peak_mb, "coverage90": cov,
                "params": ", ".join(f"{k}={v}" for k, v in params.items()),
            }
            row["psnr"], row["psnr_sd"] = _mean_sd(ps)
            row["ssim"], row["ssim_sd"] = _mean_sd(ss)
            if task.volume:
                for axis, plane in ((2, "axial"), (3, "coronal"), (4, "sagittal")):
                    row[f"psnr_{plane}"] = plane_psnr(est, x, axis)
            rows.append(row)
            per_image += [{"task": tname, "key": key, "image": b, "psnr": ps[b], "ssim": ss[b]} for b in range(B)]
            extra = f"  cov90 {cov:.2f}" if math.isfinite(cov) else ""
            log(f"  {m.name:<34} PSNR {row['psnr']:6.2f} +- {row['psnr_sd']:4.2f}  SSIM {row['ssim']:.3f}  "
                f"{row['seconds_per_image']:7.2f} s/img  calls {counting.calls:4d}  evals/img "
                f"{row['evals_per_image']:6.0f}  mem {mem.peak_mb:7.1f} MB{extra}")
    return rows, per_image, skipped


def _worker(args: tuple) -> tuple[list[dict], list[dict], list[str], list[str]]:
    """One task in a worker process (``--jobs``): returns its rows and its log lines."""
    tname, method_keys, n_images, nfe, prior_spec, device, seed = args
    torch.set_num_threads(1)
    lines: list[str] = []
    rows, per_image, skipped = run_benchmark([tname], method_keys, n_images=n_images, nfe=nfe,
                                             prior=load_prior(prior_spec, device), device=device, seed=seed,
                                             log=lines.append)
    return rows, per_image, skipped, lines


def run_parallel(task_names, method_keys, n_images, nfe, prior_spec, device, seed, jobs, log=print):
    """:func:`run_benchmark` with the tasks spread over ``jobs`` worker processes (one thread each).

    Rows come back in the order of ``task_names``; timings are taken with the other workers running.
    """
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    work = [(t, list(method_keys), n_images, nfe, prior_spec, device, seed) for t in task_names]
    rows, per_image, skipped = [], [], []
    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        for r, p, s, lines in pool.map(_worker, work):
            for line in lines:
                log(line)
            rows += r
            per_image += p
            skipped += s
    return rows, per_image, skipped


# ----------------------------------------------------------------------------- outputs
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


def summary_table(rows: list[dict]) -> str:
    """Per task: the best invdiff method against the best deepinv method and the best classical baseline."""
    lines = []
    for tname in dict.fromkeys(r["task"] for r in rows):
        best = {}
        for fam in ("invdiff", "deepinv", "classical"):
            cand = [r for r in rows if r["task"] == tname and r["family"] == fam]
            best[fam] = max(cand, key=lambda r: r["psnr"]) if cand else None

        def cell(r):
            return f"{r['method']} {r['psnr']:.2f}" if r else "-"

        diff = (f"{best['invdiff']['psnr'] - best['deepinv']['psnr']:+.2f}"
                if best["invdiff"] and best["deepinv"] else "-")
        lines.append([tname, cell(best["invdiff"]), cell(best["deepinv"]), diff, cell(best["classical"])])
    return _table(["task", "best invdiff (PSNR dB)", "best deepinv (PSNR dB)", "invdiff - deepinv (dB)",
                   "best classical (PSNR dB)"], lines)


def task_table(rows: list[dict], tname: str) -> str:
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


def _generic_table(records: list[dict]) -> str:
    keys = list(dict.fromkeys(k for r in records for k in r))
    return _table(keys, [[_fmt(r.get(k), 3) if isinstance(r.get(k), float) else _fmt(r.get(k)) for k in keys]
                         for r in records])


def write_markdown(path: Path, rows, skipped, info: dict, settings: dict, exact: list[dict] | None,
                   exact_note: str | None) -> None:
    from invdiff.bench.methods import METHODS as _M

    used = list(dict.fromkeys(r["key"] for r in rows))
    parts = ["# invdiff benchmark results", "",
             f"Command: `{settings['command']}`", "",
             "## Setup", "",
             _table(["", ""], [[k, str(v)] for k, v in {**info, **settings["table"]}.items()]), "",
             "Every method gets the same prior object, operator, measurement (one noise draw) and budget of network "
             "calls per image; methods run on the whole batch of test images at once. PSNR: data range 1. SSIM: "
             "Wang et al. 2004, 11-tap Gaussian window (std 1.5), k1 = 0.01, k2 = 0.03, data range 1 (3D SSIM on "
             "volumes). Estimates are scored unclipped. Seconds: batch wall time / images. Net calls: batched calls "
             "of the prior (counted by a wrapper, for deepinv too); net evals: images through the network per test "
             "image (SMC pushes all its particles through each call). Peak memory: "
             + ("CUDA max_memory_allocated." if settings["device"].startswith("cuda") else
                "largest increase of the process RSS over its value at the method's start (sampled every 5 ms, "
                "after malloc_trim); approximate.")
             + " 90 % coverage: fraction of pixels whose true value lies in the samples' central 90 % interval.", "",
             "How the budget maps to steps:", "",
             _table(["method", "steps from NFE"], [[_M[k].name, _M[k].nfe_rule] for k in used]), "",
             "## Summary: best invdiff against best deepinv at the same number of network calls", "",
             summary_table(rows), ""]
    for tname in dict.fromkeys(r["task"] for r in rows):
        parts += [f"## {tname}: {TASKS[tname].description}", "", task_table(rows, tname), ""]
    if exact is not None or exact_note:
        parts += ["## Exact-posterior benchmark (Gaussian-mixture prior; `invdiff.bench.exact_posterior`)", ""]
        parts += [exact_note or "(no rows)", ""]
    if skipped:
        parts += ["## Not run", ""] + [f"- {s}" for s in skipped] + [""]
    parts += ["![PSNR against seconds](results.png)", ""]
    with atomic_path(path, overwrite=True) as tmp:
        Path(tmp).write_text("\n".join(parts))


def write_csv(path: Path, rows: list[dict], fields) -> None:
    with atomic_path(path, overwrite=True) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({k: r.get(k, "") for k in fields})


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


def exact_posterior_rows(quick: bool, log=print) -> tuple[list[dict] | None, str | None]:
    """``invdiff.bench.exact_posterior.run(quick)`` when that module exists; (rows, Markdown table or note)."""
    try:
        mod = importlib.import_module("invdiff.bench.exact_posterior")
    except ImportError as err:
        return None, f"Exact-posterior benchmark not available ({err})."
    if not hasattr(mod, "run"):
        return None, "Exact-posterior benchmark: invdiff.bench.exact_posterior has no run(quick)."
    log("[exact-posterior] Gaussian-mixture prior, exact posterior samples as reference")
    try:
        rows = list(mod.run(quick, log=lambda m: log("  " + m)))
    except Exception as err:  # noqa: BLE001
        return None, f"Exact-posterior benchmark failed: {type(err).__name__}: {err}"
    doc = (mod.__doc__ or "").strip().split("\n\n")[0]
    text = mod.table(rows) if hasattr(mod, "table") else _generic_table(rows)
    return rows, (doc + "\n\n" + text) if doc else text


# ----------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="invdiff bench", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                description="Tasks x methods benchmark against deepinv at a fixed budget of network "
                                "calls; writes RESULTS.md, results.csv, per_image.csv and results.png to --out. "
                                "Other benchmarks: invdiff bench {ct16,operators,prior-quality,overhead,"
                                "exact-posterior,mbir3d} ...")
    p.add_argument("--quick", action="store_true", help=f"reduced run: tasks {', '.join(QUICK_TASKS)}; methods "
                   f"{', '.join(QUICK_METHODS)}; 2 images; NFE 20 (explicit options still apply)")
    p.add_argument("--out", default="benchmarks", help="output folder")
    p.add_argument("--tasks", nargs="+", default=None, choices=list(TASKS), metavar="TASK",
                   help=f"tasks (default: all): {', '.join(TASKS)}")
    p.add_argument("--methods", nargs="+", default=None, choices=list(METHODS), metavar="METHOD",
                   help=f"methods (default: all): {', '.join(METHODS)}")
    p.add_argument("--nfe", type=int, default=None, help="network calls per image (default 100; 20 with --quick)")
    p.add_argument("--images", type=int, default=None, help="test images per 2D task (default 4; 2 with --quick); "
                   "3D tasks use one volume per 4 images")
    p.add_argument("--prior", default=DEFAULT_PRIOR, help="prior name or checkpoint path")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--seed", type=int, default=0, help="seed of the measurement noise and the samplers")
    p.add_argument("--no-exact", action="store_true", help="skip the exact-posterior benchmark rows")
    p.add_argument("--jobs", type=int, default=1, help="worker processes, one task each at a time (timings are then "
                   "taken with the other workers running)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tasks = args.tasks or (list(QUICK_TASKS) if args.quick else list(TASKS))
    method_keys = args.methods or (list(QUICK_METHODS) if args.quick else list(METHODS))
    nfe = args.nfe or (20 if args.quick else 100)
    n_images = args.images or (2 if args.quick else 4)
    if nfe < 1 or n_images < 1:
        print(f"invdiff bench: error: --nfe and --images must be positive, got {nfe}, {n_images}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    prior = load_prior(args.prior, args.device)

    def log(msg: str) -> None:
        print(msg, flush=True)

    if args.jobs > 1 and len(tasks) > 1:
        rows, per_image, skipped = run_parallel(tasks, method_keys, n_images, nfe, args.prior, args.device, args.seed,
                                                args.jobs, log)
    else:
        rows, per_image, skipped = run_benchmark(tasks, method_keys, n_images=n_images, nfe=nfe, prior=prior,
                                                 device=args.device, seed=args.seed, log=log)
    exact, exact_note = (None, None) if args.no_exact else exact_posterior_rows(args.quick, log)
    meta = _prior_meta(prior)
    settings = {
        "command": "invdiff bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": args.device,
        "table": {
            "prior": f"{args.prior}" + (f" ({meta.get('train_steps')} training steps)" if meta.get("train_steps") else ""),
            "network calls per image (NFE)": nfe,
            "test images per 2D task": f"{n_images} (ellipses seed 777001" + (", then Shepp-Logan)" if n_images > 1
                                                                              else "; Shepp-Logan)"),
            "measurement / sampler seed": args.seed,
            "worker processes": args.jobs,
            "total wall time (s)": f"{time.perf_counter() - t_start:.0f}",
        },
    }
    write_markdown(out / "RESULTS.md", rows, skipped, machine_info(args.device), settings, exact, exact_note)
    write_csv(out / "results.csv", rows, CSV_FIELDS)
    write_csv(out / "per_image.csv", per_image, ("task", "key", "image", "psnr", "ssim"))
    write_plot(out / "results.png", rows)
    log(f"wrote {out / 'RESULTS.md'}, results.csv, per_image.csv, results.png "
        f"({time.perf_counter() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
