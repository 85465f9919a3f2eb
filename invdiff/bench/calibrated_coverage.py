r"""Coverage of conformally calibrated intervals on in-distribution CT and MRI (:mod:`invdiff.conformal`).

``python -m invdiff.bench.calibrated_coverage [--tasks ct16 mri4-random] [--methods smc dds:n_samples=16]
[--calibration-images 4] [--images 4] [--cache DIR] [--out FILE]``

Per task and sampler: the sampler's ensembles on ``--calibration-images`` tuning images (``ellipses(n, 64,
seed=777002)``) fit the scale ``lambda`` of :func:`invdiff.conformal.calibrate` at levels 50 / 90 / 95 %
(``method="plug-in"``, and ``"risk-control"`` where there are enough images for its guarantee); the scale is
then applied to the sampler's ensembles on the in-distribution test images of :mod:`invdiff.bench.coverage`
(``ellipses(n, 64, seed=777001)``, same operators, noise seed and sampler seeds, so the raw columns are that
benchmark's). Columns: raw coverage, calibrated coverage (mean ± s.e. over test images), the scale, and the
mean interval width before and after. Sampling dominates the cost; ``--cache DIR`` keeps every image's samples
(``torch.save`` of tensors only, loaded with ``weights_only=True``) so that a rerun only refits.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

from invdiff.bench.coverage import LEVELS, TASKS, _sample, interval_coverage, parse_spec, reference_coverage
from invdiff.bench.machine import DEFAULT_PRIOR, load_prior
from invdiff.bench.report import emit_markdown
from invdiff.bench.tasks import get_task, measure, test_images, tuning_images
from invdiff.conformal import calibrate, calibrated_intervals
from invdiff.metrics import central_intervals

__all__ = ["ensembles", "run", "table", "main"]

DEFAULT_METHODS = ("smc", "dds:n_samples=16")


def _cache_file(cache: Path, task: str, label: str, image_set: str, b: int) -> Path:
    safe = "".join(c if c.isalnum() or c in "-." else "_" for c in label)
    return cache / f"{task}_{safe}_{image_set}_{b}.pt"


def ensembles(task: str, spec, image_set: str, n: int, prior, noise_seed: int = 1, seed: int = 0,
              cache: Path | None = None, log=None, prior_name: str = DEFAULT_PRIOR) -> tuple[Tensor, Tensor, float]:
    """``(samples (K, n, C, H, W), truth (n, C, H, W), seconds per image)`` of ``spec`` on the first ``n`` images of
    ``image_set`` (``"test"`` or ``"tuning"``); image ``b`` has sampler seed ``seed + b``, as in
    :func:`invdiff.bench.coverage.run`. A cached image is reused when its seeds, prior and truth match."""
    x = test_images(n, shepp=False) if image_set == "test" else tuning_images(n)
    op = get_task(task).operator()
    y = measure(op, x, seed=noise_seed)
    out, secs = [], []
    for b in range(n):
        f = None if cache is None else _cache_file(cache, task, spec.label, image_set, b)
        key = {"noise_seed": noise_seed, "seed": seed + b, "prior": str(prior_name)}
        if f is not None and f.exists():
            d = torch.load(f, weights_only=True)
            if d.get("key") == key and torch.equal(d["truth"], x[b].float()):
                out.append(d["samples"])
                secs.append(float(d["seconds"]))
                continue
        t0 = time.perf_counter()
        s, _, _ = _sample(spec, prior, op, y[b:b + 1], seed + b)
        secs.append(time.perf_counter() - t0)
        out.append(s[:, 0].float())
        if f is not None:
            f.parent.mkdir(parents=True, exist_ok=True)
            tmp = f.with_suffix(".tmp")
            torch.save({"samples": out[-1], "truth": x[b].float(), "seconds": secs[-1], "key": key}, tmp)
            tmp.replace(f)
        if log:
            log(f"{task} {spec.label} {image_set} image {b}: {secs[-1]:.0f} s")
    return torch.stack(out, 1), x.float(), sum(secs) / n


def _width(lo: Tensor, hi: Tensor) -> float:
    return float((hi - lo).mean())


def run(task_names=TASKS, specs=None, n_cal: int = 4, n_test: int = 4, prior=None, cache: Path | None = None,
        log=None, prior_name: str = DEFAULT_PRIOR) -> list[dict]:
    """One row per (task, sampler, level): raw and calibrated coverage on the test images (module docstring)."""
    specs = [parse_spec(s) if isinstance(s, str) else s for s in (specs or DEFAULT_METHODS)]
    prior = prior if prior is not None else load_prior(prior_name)
    rows = []
    for task in task_names:
        for spec in specs:
            Sc, xc, sec_c = ensembles(task, spec, "tuning", n_cal, prior, cache=cache, log=log,
                                     prior_name=prior_name)
            St, xt, sec_t = ensembles(task, spec, "test", n_test, prior, cache=cache, log=log,
                                     prior_name=prior_name)
            K = St.shape[0]
            raw_all = interval_coverage(St, xt, LEVELS)  # (images, levels)
            lo, hi = central_intervals(St, LEVELS)  # (levels, images, ...): one sort for every level's width
            for li, p in enumerate(LEVELS):
                raw = raw_all[:, li]
                row = {"task": task, "method": spec.label, "K": K, "level": p, "n_cal": n_cal, "n_test": n_test,
                       "raw": float(raw.mean()), "raw_se": float(raw.std() / math.sqrt(n_test)) if n_test > 1 else math.nan,
                       "ref": reference_coverage(K, p), "raw_width": _width(lo[li], hi[li]),
                       "seconds": (sec_c * n_cal + sec_t * n_test) / (n_cal + n_test)}
                for method in ("plug-in", "risk-control"):
                    try:
                        cal = calibrate(Sc, xc, level=p, method=method)
                    except ValueError as e:  # too few calibration images for the guarantee
                        row[method] = str(e).split(";")[0].replace("samples: ", "")
                        continue
                    cov = cal.coverage(St, xt)
                    clo, chi = calibrated_intervals(St, cal.scale, p)
                    row[method] = {"scale": cal.scale, "cal_cov": cal.calibration_coverage, "cov": float(cov.mean()),
                                   "se": float(cov.std() / math.sqrt(n_test)) if n_test > 1 else math.nan,
                                   "per_image": cov.tolist(), "width": _width(clo, chi)}
                rows.append(row)
                if log:
                    pl = row["plug-in"]
                    log(f"{task} {spec.label} {p:.2f}: raw {row['raw']:.3f} (ref {row['ref']:.3f}), plug-in scale "
                        f"{pl['scale']:.2f} -> {pl['cov']:.3f} {['%.3f' % c for c in pl['per_image']]}")
    return rows


def table(rows: list[dict]) -> str:
    """Markdown table of :func:`run`'s rows."""
    head = ("| task | sampler | K | level | raw coverage (test) | exact-sample reference | plug-in: scale | plug-in: "
            "coverage (test) | plug-in: coverage per test image | risk-control: scale, coverage (test) | mean width raw "
            "-> plug-in |\n|" + "---|" * 11)
    lines = [head]
    for r in rows:
        pl, rc = r["plug-in"], r["risk-control"]
        rc_text = rc if isinstance(rc, str) else f"{rc['scale']:.2f}, {rc['cov']:.3f} ± {rc['se']:.3f}"
        lines.append(f"| {r['task']} | {r['method']} | {r['K']} | {r['level']:.2f} | {r['raw']:.3f} ± {r['raw_se']:.3f} "
                     f"| {r['ref']:.3f} | {pl['scale']:.2f} | {pl['cov']:.3f} ± {pl['se']:.3f} | "
                     f"{' / '.join('%.3f' % c for c in pl['per_image'])} | {rc_text} | "
                     f"{r['raw_width']:.4f} -> {pl['width']:.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m invdiff.bench.calibrated_coverage", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), help="benchmark tasks (invdiff.bench.tasks)")
    ap.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                    help="sampler specs name:key=value,... as in invdiff.bench.coverage (smc, dps, dds)")
    ap.add_argument("--calibration-images", type=int, default=4, help="tuning images ellipses(n, 64, seed=777002)")
    ap.add_argument("--images", type=int, default=4, help="test images ellipses(n, 64, seed=777001)")
    ap.add_argument("--prior", default=DEFAULT_PRIOR)
    ap.add_argument("--cache", default=None, help="folder for the samples of every image (reused by a rerun)")
    ap.add_argument("--out", default=None, help="also write the Markdown table to this file")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = ap.parse_args(argv)
    for t in args.tasks:
        get_task(t)
    for name, v in (("--calibration-images", args.calibration_images), ("--images", args.images)):
        if v < 1:
            raise SystemExit(f"{name}: expected a positive number of images, got {v}")
    specs = [parse_spec(s) for s in args.methods]
    rows = run(args.tasks, specs, args.calibration_images, args.images, load_prior(args.prior),
               Path(args.cache) if args.cache else None, log=lambda m: print(m, file=sys.stderr, flush=True),
               prior_name=args.prior)
    emit_markdown(table(rows), args.out, args.overwrite)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
