"""Hyperparameter tuning of the benchmark methods on the tuning images, never on the test images.

``python -m invdiff.bench.tune --task ct16 --methods reddiff dinv-diffpir [--images 4] [--nfe 100]
[--out benchmarks/TUNING.md]`` runs each method's grid (:data:`GRIDS`) on ``--images`` tuning phantoms
(:func:`invdiff.bench.tasks.tuning_images`, ``ellipses(n, 64, seed=777002)``, disjoint from the test
phantoms of seed 777001 and from the prior's training data), with a measurement noise draw of its own
(seed 1), and prints (and appends to ``--out``) the mean PSNR of every setting and the best one.

The search is coordinate-wise: the first parameter of a grid is scanned with the others at their
first value; each next parameter is then scanned with the earlier ones at their best value.
The same procedure and the same tuning images are used for invdiff's and deepinv's methods; the
winners are copied into :data:`invdiff.bench.methods.HPARAMS` by hand.
"""

from __future__ import annotations

import argparse
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m invdiff.bench.tune", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--task", default="ct16", choices=list(TASKS))
    p.add_argument("--methods", nargs="+", default=list(GRIDS), choices=list(GRIDS))
    p.add_argument("--images", type=int, default=4, help="tuning images")
    p.add_argument("--nfe", type=int, default=100, help="network calls per image")
    p.add_argument("--prior", default="phantom-ct-64")
    p.add_argument("--out", default=None, help="Markdown file to append the results to")
    args = p.parse_args(argv)
    prior = load_prior(args.prior)
    images = tuning_images(args.images)
    lines = [f"## {args.task}, NFE {args.nfe}, {args.images} tuning images (ellipses seed 777002), "
             f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC", ""]
    for key in args.methods:
        print(f"[{args.task}] tuning {key}", flush=True)
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
