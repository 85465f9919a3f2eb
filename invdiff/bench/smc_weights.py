r"""Where the Tweedie SMC's weights degenerate: ESS and the spread of the incremental log-weights per step.

``python -m invdiff.bench.smc_weights [--task ct16] [--image 0] [--particles 16] [--steps 100] [--every 5]
[--method smc:key=value,...]``

Runs :class:`invdiff.solvers.SMC` (the coverage benchmark's settings, :mod:`invdiff.bench.coverage`) on one
in-distribution test image (``ellipses(n, 64, seed=777001)``) and prints, per step ``k``: ``sigma_k``, the ESS
before resampling, the standard deviation over the particles of the incremental log-weight
``log w_k - log w_{k-1}`` (after the previous step's resampling), its range, and whether the ensemble was
resampled. For an ESS of ``N / 2`` with normally distributed increments the spread is about
``sqrt(log 2) = 0.83``; a spread of several units empties the ensemble at every step.
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import Tensor

from invdiff.bench.coverage import SMC_DEFAULTS, build_smc, parse_spec
from invdiff.bench.machine import DEFAULT_PRIOR, load_prior
from invdiff.bench.tasks import get_task, measure, test_images

__all__ = ["weight_trace", "main"]


def weight_trace(solver, y: Tensor, op, seed: int = 0) -> list[dict]:
    """Run ``solver`` (an SMC) on ``y`` (one measurement) and return one dict per step: ``sigma``, ``ess`` (before
    resampling), ``inc_std`` / ``inc_range`` (of the incremental log-weights over the particles), ``resampled``,
    and for a tempered run (:mod:`invdiff.solvers.smc_temper`) the exponent ``beta``."""
    rows: list[dict] = []
    prev: list[Tensor | None] = [None]
    inner = solver._resample

    def resample(log_w, g, *tensors, split=None):
        base = torch.zeros_like(log_w) if prev[0] is None else prev[0]
        inc = (log_w - base)[0]
        out = inner(log_w, g, *tensors, split=split)
        prev[0] = out[0]
        rows.append({"inc_std": float(inc.std()), "inc_range": float(inc.max() - inc.min()),
                     "ess": float(out[1][0]), "resampled": bool(out[2][0])})
        return out

    def callback(info):
        rows[-1]["sigma"] = info["sigma"]

    solver._resample = resample
    try:
        r = solver.reconstruct(y, op, seed=seed, progress=False, callback=callback)
    finally:
        del solver._resample
    for row, b in zip(rows, r.info.get("beta", [])):
        row["beta"] = float(b[0])
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m invdiff.bench.smc_weights", description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="ct16")
    ap.add_argument("--image", type=int, default=0, help="image k of test_images(k + 1, shepp=False)")
    ap.add_argument("--method", default="smc", help="SMC spec as in invdiff.bench.coverage")
    ap.add_argument("--every", type=int, default=5, help="print every n-th step (and the last ones)")
    ap.add_argument("--noise-seed", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    spec = parse_spec(args.method)
    if spec.name != "smc":
        raise SystemExit(f"--method: expected an smc spec, got {args.method!r}")
    prior = load_prior(DEFAULT_PRIOR)
    op = get_task(args.task).operator()
    x = test_images(args.image + 1, shepp=False)[args.image:args.image + 1]
    y = measure(op, x, seed=args.noise_seed)
    kw = {**SMC_DEFAULTS, **spec.kw}
    solver = build_smc(prior, kw)
    rows = weight_trace(solver, y, op, seed=args.image)
    print(f"{args.task}, image {args.image}, {args.method} ({kw})")
    print("step  sigma     ESS    inc std  inc range  beta  resampled")
    for k, r in enumerate(rows):
        if k % args.every == 0 or k >= len(rows) - 3:
            beta = f"{r['beta']:.3f}" if "beta" in r else "  -  "
            print(f"{k:4d} {r.get('sigma', math.nan):8.4f} {r['ess']:6.2f} {r['inc_std']:9.3f} {r['inc_range']:9.3f} "
                  f" {beta} {'yes' if r['resampled'] else ''}")
    n_res = sum(r["resampled"] for r in rows)
    print(f"resampled at {n_res} of {len(rows)} steps; median inc std "
          f"{sorted(r['inc_std'] for r in rows)[len(rows) // 2]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
