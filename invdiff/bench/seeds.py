"""How far a one-run benchmark gap moves with the seed: the benchmark's test images, several seeds, the gap between two
methods per seed, and its mean with a standard error.

``python -m invdiff.bench.seeds --tasks deblur inpaint70 --methods dds dinv-diffpir --seeds 0 1 2 3 4 5 6 7 8 9``

Seed ``s`` is the benchmark's ``--seed``: it draws the measurement noise of the 4 test images and the samplers' own
noise, so each seed is one complete run of the 100-call section for these tasks and methods
(:func:`invdiff.bench.run.run_benchmark`, tuned settings). Seed 0 is the run of ``benchmarks/RESULTS.md``. For each
task the first method is set against the second: per-seed PSNR (mean over the images), the gap
``first - second``, and over the seeds its mean, standard deviation and standard error ``sd / sqrt(n)``, and how many
seeds reach ``--goal`` (default 1 dB, the goal of issue 11). Nothing is tuned on these images; this only says how much
of a one-run figure is the draw.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys

from invdiff.bench.report import emit_markdown
from invdiff.bench.tasks import TASKS

__all__ = ["gap_table", "seed_gaps"]


def seed_gaps(tasks: list[str], methods: tuple[str, str], seeds: list[int], nfe: int = 100, n_images: int = 4,
              prior=None, log=print) -> list[dict]:
    """One row per task and seed: ``{"task", "seed", first, second, "gap"}`` (mean PSNR over the images, dB)."""
    from invdiff.bench.run import run_benchmark

    if len(methods) != 2 or methods[0] == methods[1]:
        raise ValueError(f"methods: expected two different benchmark methods, got {list(methods)!r}")
    if not seeds:
        raise ValueError("seeds: expected at least one seed")
    out = []
    for s in seeds:
        rows, _, skipped = run_benchmark(tasks, list(methods), n_images=n_images, nfe=nfe, prior=prior, seed=s,
                                         log=lambda *a: None)
        if skipped:
            raise RuntimeError(f"seed {s}: did not run: {skipped}")
        psnr = {(r["task"], r["key"]): r["psnr"] for r in rows}
        for t in tasks:
            a, b = psnr[(t, methods[0])], psnr[(t, methods[1])]
            out.append({"task": t, "seed": s, methods[0]: a, methods[1]: b, "gap": a - b})
            log(f"[{t}] seed {s}: {methods[0]} {a:.2f}, {methods[1]} {b:.2f}, gap {a - b:+.2f} dB")
    return out


def gap_table(rows: list[dict], methods: tuple[str, str], goal: float = 1.0) -> str:
    """Markdown: per task the gaps by seed, their mean, sd, standard error and the seeds at ``goal`` or above."""
    lines = [f"| task | seeds | {methods[0]} (mean) | {methods[1]} (mean) | gap per seed ({methods[0]} - {methods[1]}, dB) | "
             f"mean gap ± s.e. | sd | seeds with gap >= {goal:g} |", "|---|---|---|---|---|---|---|---|"]
    for t in dict.fromkeys(r["task"] for r in rows):
        rs = [r for r in rows if r["task"] == t]
        g = [r["gap"] for r in rs]
        sd = statistics.stdev(g) if len(g) > 1 else math.nan
        lines.append(
            f"| {t} | {len(g)} | {statistics.mean(r[methods[0]] for r in rs):.2f} | "
            f"{statistics.mean(r[methods[1]] for r in rs):.2f} | {', '.join(f'{x:+.2f}' for x in g)} | "
            f"{statistics.mean(g):+.2f} ± {sd / math.sqrt(len(g)):.2f} | {sd:.2f} | {sum(x >= goal for x in g)} / {len(g)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m invdiff.bench.seeds", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=["deblur", "inpaint70"], choices=list(TASKS))
    p.add_argument("--methods", nargs=2, default=["dds", "dinv-diffpir"], metavar=("FIRST", "SECOND"))
    p.add_argument("--seeds", nargs="+", type=int, default=list(range(5)))
    p.add_argument("--nfe", type=int, default=100, help="network calls per image")
    p.add_argument("--images", type=int, default=4, help="test images per task")
    p.add_argument("--goal", type=float, default=1.0, help="gap (dB) counted per seed")
    p.add_argument("--prior", default="phantom-ct-64")
    p.add_argument("--out", default=None, help="also write the Markdown table to this file")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = p.parse_args(argv)
    from invdiff.bench.machine import load_prior

    rows = seed_gaps(args.tasks, tuple(args.methods), args.seeds, args.nfe, args.images, load_prior(args.prior),
                     log=lambda m: print(m, file=sys.stderr, flush=True))
    emit_markdown(gap_table(rows, tuple(args.methods), args.goal), args.out, args.overwrite)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
