"""Hyperparameter tuning of the benchmark methods on the tuning images, never on the test images.

``python -m invdiff.bench.tune --task ct16 --methods reddiff dinv-diffpir [--images 4] [--nfe 100]
[--out benchmarks/TUNING.md]`` runs each method's grid (:data:`GRIDS`) on ``--images`` tuning phantoms
(:func:`invdiff.bench.tasks.tuning_images`, ``ellipses(n, 64, seed=777002)``, disjoint from the test
phantoms of seed 777001 and from the prior's training data), with a measurement noise draw of its own
(seed 1), and prints (and appends to ``--out``) the mean PSNR of every setting and the best one.

The search is coordinate-wise: the first parameter of a grid is scanned with the others at their
first value; each next parameter is then scanned with the earlier ones at their best value.
The same procedure and the same tuning images are used for invdiff's and deepinv's methods; the
winners are copied into :data:`invdiff.solvers.presets` (invdiff's) and
:data:`invdiff.bench.methods.HPARAMS` (deepinv's) by hand.

Per-task tuning (``--scan``): on a task other than ct16, each method's list of settings in
:data:`SCANS` (changes to its current hyperparameters for that task's group; ``{}`` is the current
setting itself) is scored one by one, as recorded in ``benchmarks/TUNING.md`` ("Per-task tuning"):
``python -m invdiff.bench.tune --task inpaint70 --methods dds dinv-diffpir --images 2 --scan``.
``--settings '{"lambda_": 0.5}' ...`` scores the given changes instead of the list, and ``--first 2 --images 4``
scores on the further tuning images ``tuning_images(6)[2:]`` (the check of a winner on images it was not chosen on).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from invdiff.bench.counting import CountingDenoiser  # noqa: F401  (re-exported for scripts)
from invdiff.bench.machine import load_prior
from invdiff.bench.run import run_benchmark
from invdiff.bench.tasks import TASKS, tuning_images

# method -> ordered {parameter: values}; coordinate search in this order
GRIDS: dict[str, dict[str, list]] = {
    "dps": {"step_size": [0.1, 0.3, 1.0]},
    "reddiff": {"lr": [0.05, 0.2, 0.5], "lam": [0.25, 0.05, 1.0]},
    "dds": {"gamma": [0.1, 1.0, 10.0, math.inf], "eta": [0.85, 1.0], "cg_iters": [5, 10]},
    "smc": {"particles": [8]},
    "dinv-dps": {"weight": [0.1, 0.3, 1.0]},
    "dinv-diffpir": {"lambda_": [1.0, 7.0, 30.0], "zeta": [0.1, 0.4, 1.0]},
    "dinv-ddrm": {"eta": [0.85, 1.0]},
    "tv": {"weight": [0.001, 0.003, 0.01, 0.03]},
}


# task -> method -> settings scored by --scan (changes to the method's hyperparameters of the task's group)
_TAIL = [{"tail_average": f} for f in (0.4, 0.6, 0.7, 0.8, 0.9)]
_DIFFPIR = [{}, {"lambda_": 0.3}, {"lambda_": 3.0}, {"zeta": 0.6}, {"zeta": 0.3}]
_DIFFPIR_OWN = [{}, {"lambda_": 0.5}, {"lambda_": 2.0}, {"tail_average": 0.2}, {"tail_average": 0.4},
                {"tail_average": 0.6}, {"zeta": 0.8}, {"clip_x0": False}, {"schedule": "quad"}]
SCANS: dict[str, dict[str, list[dict]]] = {
    "inpaint70": {
        "dds": [{}, {"clip_x0": True}, *_TAIL, {"sigma_min": 0.01}, {"sigma_min": 0.03}, {"sigma_min": 0.1},
                {"eta": 1.0, "tail_average": 0.4}, {"eta": 1.0, "tail_average": 0.8},
                {"tail_average": 0.6, "eta": 0.95}, {"tail_average": 0.6, "eta": 0.75},
                {"tail_average": 0.6, "schedule": "vp"}, {"tail_average": 0.65, "clip_x0": True}],
        "daps": [{"cg_iters": 3, "lambda_": v} for v in (1.0, 4.0, 16.0, 64.0)],
        "diffpir": _DIFFPIR_OWN,
        "dinv-diffpir": _DIFFPIR,
    },
    "deblur": {
        "dds": [{}, *_TAIL[:2], {"sigma_min": 0.01}, {"sigma_min": 0.03}, {"sigma_min": 0.05}, {"sigma_min": 0.1},
                {"eta": 1.0, "tail_average": 0.4}, {"sigma_min": 0.03, "tail_average": 0.4},
                {"sigma_min": 0.03, "tail_average": 0.6}, {"sigma_min": 0.03, "lambda_": 3.0}],
        "diffpir": _DIFFPIR_OWN,
        "dinv-diffpir": _DIFFPIR,
    },
    "ct-limited90": {
        # after the coordinate search (benchmarks/TUNING.md)
        "dds": [{}, {"eta": 1.0, "lambda_": 3.0}, {"tail_average": 0.4}, {"tail_average": 0.6}, {"clip_x0": True},
                {"clip_x0": True, "eta": 1.0}],
        "dinv-diffpir": [{}, {"lambda_": 3.0}, {"lambda_": 0.3}],
        "diffpir": [{}, {"lambda_": 0.5}, {"schedule": "quad"}, {"lambda_": 0.5, "schedule": "quad"},
                    {"lambda_": 0.25}, {"lambda_": 0.5, "tail_average": 0.2}, {"lambda_": 0.5, "zeta": 0.8},
                    {"lambda_": 0.5, "clip_x0": False}],
    },
}


def scan(task: str, key: str, settings: list[dict], images, nfe: int, prior, log=print) -> list[tuple[dict, float]]:
    """Score each of ``settings`` (changes to ``key``'s hyperparameters for ``task``) on ``images``: (params, PSNR)."""
    out = []
    for change in settings:
        rows, _, skipped = run_benchmark([task], [key], nfe=nfe, prior=prior, seed=1, images=images,
                                         params_override={key: change}, log=lambda m: None)
        out.append((dict(change), rows[0]["psnr"] if rows else float("nan")))
        log(f"  {key} {change}: {out[-1][1]:.2f} dB" + (f"  ({skipped[0]})" if skipped and not rows else ""))
    return out


def coordinate_search(task: str, key: str, grid: dict[str, list], images, nfe: int, prior, fixed: dict | None = None,
                      log=print) -> tuple[dict, list[tuple[dict, float]]]:
    """Coordinate-wise grid search of ``key`` on ``task``; returns the best parameters and every (params, PSNR)."""
    best = {k: v[0] for k, v in grid.items()}
    best.update(fixed or {})
    scores: dict[tuple, float] = {}
    history: list[tuple[dict, float]] = []

    def score(params: dict) -> float:
        sig = tuple(sorted(params.items()))
        if sig not in scores:
            rows, _, skipped = run_benchmark([task], [key], nfe=nfe, prior=prior, seed=1, images=images,
                                             params_override={key: params}, log=lambda m: None)
            scores[sig] = rows[0]["psnr"] if rows else float("nan")
            history.append((dict(params), scores[sig]))
            log(f"  {key} {params}: {scores[sig]:.2f} dB" + (f"  ({skipped[0]})" if skipped and not rows else ""))
        return scores[sig]

    for name, values in grid.items():
        results = {v: score({**best, name: v}) for v in values}
        finite = {v: s for v, s in results.items() if s == s}
        if finite:
            best[name] = max(finite, key=finite.get)
    return best, history


def _json_setting(text: str) -> dict:
    """One ``--settings`` entry: a JSON object of hyperparameter changes."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise SystemExit(f"--settings: {text!r} is not JSON ({e}); expected an object such as '{{\"lambda_\": 0.5}}'")
    if not isinstance(value, dict):
        raise SystemExit(f"--settings: expected a JSON object of hyperparameters, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m invdiff.bench.tune", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--task", default="ct16", choices=list(TASKS))
    p.add_argument("--methods", nargs="+", default=list(GRIDS), choices=sorted({*GRIDS, "daps", "diffpir"}))
    p.add_argument("--images", type=int, default=4, help="tuning images")
    p.add_argument("--nfe", type=int, default=100, help="network calls per image")
    p.add_argument("--prior", default="phantom-ct-64")
    p.add_argument("--out", default=None, help="Markdown file to append the results to")
    p.add_argument("--scan", action="store_true", help="score the task's list of settings (SCANS) instead of GRIDS")
    p.add_argument("--settings", nargs="+", default=None, metavar="JSON",
                   help="with --scan: score these changes (JSON objects, e.g. '{\"lambda_\": 0.5}') instead of SCANS")
    p.add_argument("--first", type=int, default=0,
                   help="skip this many tuning images: score tuning_images(first + images)[first:] (a further check)")
    args = p.parse_args(argv)
    if args.settings is not None and not args.scan:
        p.error("--settings: only with --scan")
    if args.first < 0:
        p.error(f"--first: expected an integer >= 0, got {args.first}")
    prior = load_prior(args.prior)
    images = tuning_images(args.first + args.images)[args.first:]
    which = f"tuning images {args.first}-{args.first + args.images - 1}" if args.first else f"{args.images} tuning images"
    lines = [f"## {args.task}, NFE {args.nfe}, {which} (ellipses seed 777002), "
             f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC", ""]
    for key in args.methods:
        print(f"[{args.task}] tuning {key}", flush=True)
        if args.scan:
            settings = [_json_setting(t) for t in args.settings] if args.settings is not None else \
                SCANS.get(args.task, {}).get(key, [{}])
            history = scan(args.task, key, settings, images, args.nfe, prior, log=lambda m: print(m, flush=True))
            lines.append(f"- **{key}** scan: " + "; ".join(f"{h} {s:.2f}" for h, s in history))
            continue
        best, history = coordinate_search(args.task, key, GRIDS[key], images, args.nfe, prior,
                                          log=lambda m: print(m, flush=True))
        top = max((s for _, s in history if s == s), default=float("nan"))
        print(f"  best {key}: {best} ({top:.2f} dB)", flush=True)
        lines.append(f"- **{key}** best {best} ({top:.2f} dB); tried: "
                     + "; ".join(f"{h} {s:.2f}" for h, s in history))
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write("\n".join(lines) + "\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
