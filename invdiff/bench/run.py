"""The task benchmark's run: every method on every task at one budget of network calls, scored against the truth.

Every method gets the prior wrapped in one :class:`~invdiff.bench.counting.CountingDenoiser`, the
task's operator, the same measurement and the same budget; what is measured and how is stated
once, in :data:`invdiff.bench.report.METHODOLOGY`. :func:`run_benchmark` returns rows;
:mod:`invdiff.bench.report` writes them and :mod:`invdiff.bench.cli` is the command line.
"""

from __future__ import annotations

import math
import os
import time
import traceback
from dataclasses import dataclass

import torch
from torch import Tensor

from invdiff import metrics
from invdiff.bench.counting import CountingDenoiser
from invdiff.bench.machine import DEFAULT_PRIOR, load_prior
from invdiff.bench.memory import PeakMemory
from invdiff.bench.methods import get_method, hparams_at
from invdiff.bench.tasks import TASKS, get_task, measure, test_images, test_volumes

PLANES = {"axial": 2, "coronal": 3, "sagittal": 4}  # the axis held fixed, in (B, C, D, H, W)


@dataclass(frozen=True)
class Section:
    """One budget of the benchmark: ``methods`` on ``tasks`` at ``nfe`` network calls per image.

    ``keep_images``: the section runs on the first ``keep_images`` of the run's test images only (their
    measurement cut from the whole batch's, so operator, noise draw and seed are those of the other sections);
    ``None`` keeps them all.
    """

    nfe: int
    tasks: tuple
    methods: tuple
    keep_images: int | None = None


# The long section (issue 11): DPS and RED-Diff (and deepinv's DPS) at their papers' budget of 1000 calls, by default
# on every 2D task and every test image of the run. Its cost, measured in CPU seconds on the shared machine (about
# 100 s for DPS + RED-Diff per task and image, about 155 s with deepinv DPS), projects to about 52 minutes on 2 cores
# for 10 tasks x 4 images (benchmarks/TUNING.md, "1000 network calls"); the CLI's --long-* options narrow it.
LONG_NFE = 1000
LONG_METHODS = ("dps", "reddiff", "dinv-dps")
LONG_TASKS = tuple(name for name, task in TASKS.items() if not task.volume)
LONG_IMAGES: int | None = None  # all the run's test images


def plane_psnr(x: Tensor, ref: Tensor, axis: int) -> float:
    """Mean PSNR (data range 1) over the 2D slices of volumes ``(B, C, D, H, W)`` taken along ``axis`` (2, 3 or 4).

    .. math:: \\frac{1}{B n} \\sum_{b, s} \\mathrm{PSNR}(x_{b, s}, r_{b, s}), \\quad s \\text{ the slices along axis}
    """
    xs = x.movedim(axis, 1).flatten(0, 1)  # (B * n_slices, C, ., .)
    rs = ref.movedim(axis, 1).flatten(0, 1)
    return float(metrics.psnr(xs, rs, data_range=1.0).mean())


def _mean_sd(values: list[float]) -> tuple[float, float]:
    t = torch.tensor(values, dtype=torch.float64)
    return float(t.mean()), float(t.std()) if len(values) > 1 else 0.0


def _score(task, m, key: str, params: dict, out, x: Tensor, nfe: int, seconds: float, counting: CountingDenoiser,
           peak_mb: float) -> tuple[dict, list[dict]]:
    """One method's row (the fields of :data:`~invdiff.bench.report.CSV_FIELDS`) and its per-image rows."""
    est = out.x.detach().to(torch.float32).reshape(x.shape)
    B = x.shape[0]
    ps = metrics.psnr(est, x, data_range=1.0).tolist()
    ss = metrics.ssim(est, x, data_range=1.0).tolist()
    cov = float("nan")
    if out.samples is not None and out.samples.shape[0] >= 2:
        smp = out.samples.detach().to(torch.float32).reshape(out.samples.shape[0], *x.shape)
        cov = sum(metrics.coverage(smp[:, b], x[b], level=0.9) for b in range(B)) / B
    row = {
        "task": task.name, "method": m.name, "key": key, "family": m.family, "images": B, "nfe_budget": nfe,
        "seconds_per_image": seconds / B, "calls_per_image": counting.calls,
        "evals_per_image": counting.evaluations / B, "peak_mem_mb": peak_mb, "coverage90": cov,
        "params": ", ".join(f"{k}={v}" for k, v in params.items()),
    }
    row["psnr"], row["psnr_sd"] = _mean_sd(ps)
    row["ssim"], row["ssim_sd"] = _mean_sd(ss)
    if task.volume:
        for plane, axis in PLANES.items():
            row[f"psnr_{plane}"] = plane_psnr(est, x, axis)
    per_image = [{"task": task.name, "key": key, "nfe_budget": nfe, "image": b, "psnr": ps[b], "ssim": ss[b]}
                 for b in range(B)]
    return row, per_image


def run_benchmark(task_names, method_keys, n_images: int = 4, nfe: int = 100, prior=None, device: str = "cpu",
                  seed: int = 0, params_override: dict | None = None, images: Tensor | None = None,
                  log=print, keep_images: int | None = None) -> tuple[list[dict], list[dict], list[str]]:
    """Run every method on every task.

    ``params_override`` maps a method key to hyperparameters that replace the tuned ones (over
    :func:`~invdiff.bench.methods.hparams_at` of the task's group and ``nfe``); ``images`` replaces the test
    images of 2D tasks (the tuning script passes the tuning images). ``keep_images``: on 2D tasks, the
    measurement of all the images is drawn, then only the first ``keep_images`` images and their
    measurements are kept, so a section run on fewer images sees the same noise as the full run.

    Returns
    -------
    rows : list of dict
        One row per task and method (the fields of :data:`~invdiff.bench.report.CSV_FIELDS`).
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
        if keep_images is not None and not task.volume:
            x, y = x[:keep_images], y[:keep_images]
        log(f"[{tname}] {task.description}; {x.shape[0]} test item(s), noise std {task.noise_std():.4g}, NFE {nfe}")
        for key in method_keys:
            m = get_method(key)
            reason = m.available() or m.applies(task, op)
            if reason:
                skipped.append(f"{tname} / {m.name}: {reason}")
                continue
            params = hparams_at(key, task.group, nfe)
            if params_override and key in params_override:
                params.update(params_override[key])
            counting.reset()
            try:
                with PeakMemory(device) as mem:
                    t0, c0 = time.perf_counter(), time.process_time()
                    out = m.run(counting, op, y, nfe, seed, dict(params))
                    if str(device).startswith("cuda"):
                        torch.cuda.synchronize()
                    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            except Exception as err:  # noqa: BLE001 - one failing method must not stop the benchmark
                skipped.append(f"{tname} / {m.name}: failed ({type(err).__name__}: {str(err).splitlines()[0][:200]})")
                log(f"  {m.name:<34} FAILED: {type(err).__name__}: {err}")
                if os.environ.get("INVDIFF_BENCH_TRACEBACK"):
                    traceback.print_exc()
                continue
            row, per = _score(task, m, key, params, out, x, nfe, seconds, counting, mem.peak_mb)
            row["cpu_seconds_per_image"] = cpu / x.shape[0]  # this process's CPU time: robust to a shared machine
            rows.append(row)
            per_image += per
            cov = row["coverage90"]
            extra = f"  cov90 {cov:.2f}" if math.isfinite(cov) else ""
            log(f"  {m.name:<34} PSNR {row['psnr']:6.2f} +- {row['psnr_sd']:4.2f}  SSIM {row['ssim']:.3f}  "
                f"{row['seconds_per_image']:7.2f} s/img  calls {counting.calls:4d}  evals/img "
                f"{row['evals_per_image']:6.0f}  mem {mem.peak_mb:7.1f} MB{extra}")
    return rows, per_image, skipped


def _worker(args: tuple) -> tuple[list[dict], list[dict], list[str], list[str]]:
    """One task of one section in a worker process (``--jobs``): returns its rows and its log lines."""
    tname, method_keys, n_images, nfe, prior_spec, device, seed, *rest = args
    keep_images = rest[0] if rest else None
    torch.set_num_threads(1)
    lines: list[str] = []
    rows, per_image, skipped = run_benchmark([tname], method_keys, n_images=n_images, nfe=nfe,
                                             prior=load_prior(prior_spec, device), device=device, seed=seed,
                                             log=lines.append, keep_images=keep_images)
    return rows, per_image, skipped, lines


def run_sections(sections: list[Section], n_images: int, prior_spec, device: str, seed: int, jobs: int = 1,
                 log=print, address=None, prior=None, parts=None) -> list[tuple[list[dict], list[dict], list[str]]]:
    """Run each :class:`Section` task by task; returns ``(rows, per_image, skipped)`` per section, in order.

    With ``jobs > 1`` (and more than one task) every (section, task) pair is one Ray task on the engine of
    :func:`run_parallel`, the later sections' tasks queued first (they are the long ones, so the workers end
    together); otherwise the tasks run one after the other in this process (``prior``: the loaded prior, loaded
    from ``prior_spec`` if ``None``). Results and log lines come back in section and task order. ``parts``
    (:class:`invdiff.bench.parts.Parts`): every finished task is written there at once, and tasks it already
    holds (with ``resume``) are read instead of run.
    """
    if sum(len(sec.tasks) for sec in sections) <= 1:
        jobs = 1
    from invdiff.distributed.ray_tasks import TaskFailure

    work = [(si, t) for si, sec in enumerate(sections) for t in sec.tasks]
    done: dict[int, tuple] = {}
    if parts is not None:
        for i, (si, t) in enumerate(work):
            sec = sections[si]
            got = parts.load(sec.nfe, t, sec.methods, sec.keep_images)
            if got is not None:
                done[i] = got
    todo = [i for i in range(len(work)) if i not in done]
    order = sorted(todo, key=lambda i: -work[i][0]) if jobs > 1 else todo  # on Ray: later (longer) sections first
    args = [(work[i][1], list(sections[work[i][0]].methods), n_images, sections[work[i][0]].nfe, prior_spec, device,
             seed, sections[work[i][0]].keep_images) for i in order]

    def finished(i: int, res, logged: bool = False) -> None:
        """Keep task ``i``'s result (and write its part); ``logged``: its lines were logged as it ran."""
        si, t = work[i]
        sec = sections[si]
        if isinstance(res, TaskFailure):
            done[i] = ([], [], [f"{t} / all methods (NFE {sec.nfe}): {res}"], [])
            return
        rows, per_image, skipped, lines = res
        if parts is not None:
            parts.save(sec.nfe, t, sec.methods, sec.keep_images, (rows, per_image, skipped, lines))
        done[i] = (rows, per_image, skipped, [] if logged else lines)

    if jobs <= 1:
        prior = load_prior(prior_spec, device) if prior is None else prior
        for i, a in zip(order, args):
            lines: list[str] = []

            def live(msg: str) -> None:  # logged now, and kept for the part
                lines.append(msg)
                log(msg)

            rows, per_image, skipped = run_benchmark([a[0]], a[1], n_images=n_images, nfe=a[3], prior=prior,
                                                     device=device, seed=seed, log=live, keep_images=a[7])
            finished(i, (rows, per_image, skipped, lines), logged=True)
    elif args:
        from invdiff.distributed.ray_tasks import ray_session, run_tasks

        t0, n_done = time.perf_counter(), 0
        with ray_session(jobs, address):
            for j, res in run_tasks(_worker, args, workers=jobs, max_retries=1):
                finished(order[j], res)
                n_done += 1  # the workers' own lines come at the end, in task order; progress is logged now
                si, t = work[order[j]]
                log(f"[bench] {t} (NFE {sections[si].nfe}) finished: {n_done} of {len(order)} tasks to run, "
                    f"{time.perf_counter() - t0:.0f} s")
    out = [([], [], []) for _ in sections]
    for i, (si, _) in enumerate(work):
        r, p, s, lines = done[i]
        for line in lines:
            log(line)
        out[si][0].extend(r)
        out[si][1].extend(p)
        out[si][2].extend(s)
    return out


def run_parallel(task_names, method_keys, n_images, nfe, prior_spec, device, seed, jobs, log=print, address=None):
    """:func:`run_benchmark` with one Ray task per benchmark task, ``jobs`` at a time (one thread each).

    The engine is :func:`invdiff.distributed.ray_tasks.run_tasks` (as for ``invdiff batch``): a local
    Ray cluster of ``jobs`` CPUs, or the one at ``address``. Rows come back in the order of
    ``task_names`` and equal a serial run's; timings are taken with the other workers running. A
    task whose worker died is listed in ``skipped``.
    """
    section = Section(nfe, tuple(task_names), tuple(method_keys))
    return run_sections([section], n_images, prior_spec, device, seed, jobs, log, address)[0]


def exact_posterior_rows(quick: bool, log=print) -> tuple[list[dict] | None, str | None]:
    """:func:`invdiff.bench.exact_posterior.run` (``quick``): its rows and a Markdown note (summary and table).

    A failure of that benchmark is reported in the note and does not stop the task benchmark.
    """
    from invdiff.bench import exact_posterior

    log("[exact-posterior] Gaussian-mixture prior, exact posterior samples as reference")
    try:
        rows = list(exact_posterior.run(quick, log=lambda m: log("  " + m)))
    except Exception as err:  # noqa: BLE001 - reported in RESULTS.md, the task rows are still written
        return None, f"Exact-posterior benchmark failed: {type(err).__name__}: {err}"
    doc = (exact_posterior.__doc__ or "").strip().split("\n\n")[0]
    text = exact_posterior.table(rows)
    return rows, (doc + "\n\n" + text) if doc else text
