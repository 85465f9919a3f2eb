"""Operator speed: invdiff's CT (ASTRA CPU backend) against deepinv's ``Tomography``.

Times ``A`` (forward projection) and ``A_adjoint`` (back-projection) of parallel-beam CT, by
default a 256x256 Shepp-Logan phantom with 180 views over 180 degrees, on the CPU with torch's
default thread count. Both operators are built once; each is called once untimed (deepinv builds
its autograd adjoint on the first call), then the calls are timed in interleaved rounds (ours,
theirs, ours, ...) so that a drift of the machine's load hits both, and the median over ``repeats``
rounds is reported with the ratio ``deepinv / ours`` (above 1: ours is faster).

deepinv's ``Tomography`` is used with its defaults (``circle=False``, ``adjoint_via_backprop=True``:
its exact adjoint, as ours is), unnormalised like ours. For reference, rows are also printed for
deepinv with ``adjoint_via_backprop=False`` (a cheaper back-projection that is not the exact
adjoint) and for invdiff's ``backend="torch"`` (deepinv's ``Radon`` in our layout).

Run ``python -m invdiff.bench operators [--size 256] [--views 180] [--repeats 7] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from typing import Callable

import deepinv as dinv
import torch

from invdiff.bench.report import write_json
from invdiff.data.phantoms import shepp_logan
from invdiff.operators import CT


def _time(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_benchmark(size: int = 256, views: int = 180, repeats: int = 7, batch: int = 1) -> dict:
    """Median seconds per call of ``A`` and ``A_adjoint`` for each operator, and the ratios to ours."""
    x = shepp_logan(size).expand(batch, 1, size, size).contiguous()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ops = {
            "invdiff CT (astra)": CT((1, size, size), n_views=views),
            "deepinv Tomography": dinv.physics.Tomography(angles=views, img_width=size, normalize=False),
            "deepinv Tomography (inexact adjoint)": dinv.physics.Tomography(
                angles=views, img_width=size, normalize=False, adjoint_via_backprop=False),
            "invdiff CT (torch)": CT((1, size, size), n_views=views, backend="torch"),
        }
    calls = {}
    with torch.no_grad():
        for name, op in ops.items():
            y = op.A(x)  # warm-up (and deepinv's adjoint cache)
            op.A_adjoint(y)
            calls[name] = (lambda op=op: op.A(x), lambda op=op, y=y: op.A_adjoint(y), tuple(y.shape))
        times = {name: {"A": [], "A_adjoint": []} for name in ops}
        for _ in range(repeats):
            for name, (fA, fAT, _) in calls.items():
                times[name]["A"].append(_time(fA))
                times[name]["A_adjoint"].append(_time(fAT))
    ours = "invdiff CT (astra)"
    result = {"size": size, "views": views, "batch": batch, "repeats": repeats, "torch_threads": torch.get_num_threads(),
              "operators": {}}
    for name, t in times.items():
        med = {k: statistics.median(v) for k, v in t.items()}
        result["operators"][name] = {
            "sinogram_shape": calls[name][2],
            "A_s": med["A"], "A_adjoint_s": med["A_adjoint"],
            "A_ratio_to_ours": med["A"] / statistics.median(times[ours]["A"]),
            "A_adjoint_ratio_to_ours": med["A_adjoint"] / statistics.median(times[ours]["A_adjoint"]),
        }
    return result


def report(result: dict) -> str:
    r = result
    lines = [f"CT {r['size']}x{r['size']}, {r['views']} views, parallel beam, batch {r['batch']}, CPU, "
             f"{r['torch_threads']} torch threads; median of {r['repeats']} interleaved rounds",
             f"{'operator':40s} {'sinogram':>18s} {'A [s]':>8s} {'A^T [s]':>8s} {'A: x ours':>10s} {'A^T: x ours':>11s}"]
    for name, o in r["operators"].items():
        lines.append(f"{name:40s} {str(tuple(o['sinogram_shape'])):>18s} {o['A_s']:8.3f} {o['A_adjoint_s']:8.3f} "
                     f"{o['A_ratio_to_ours']:10.2f} {o['A_adjoint_ratio_to_ours']:11.2f}")
    d = r["operators"]["deepinv Tomography"]
    lines.append(f"ours (astra) is {d['A_ratio_to_ours']:.2f}x faster for A and {d['A_adjoint_ratio_to_ours']:.2f}x "
                 f"faster for A_adjoint than deepinv's Tomography (exact adjoint); target >= 1.5x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m invdiff.bench operators", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--size", type=int, default=256, help="image size (square)")
    ap.add_argument("--views", type=int, default=180, help="views over 180 degrees")
    ap.add_argument("--repeats", type=int, default=7, help="timed rounds; medians are reported")
    ap.add_argument("--batch", type=int, default=1, help="images per call")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    args = ap.parse_args(argv)
    for name in ("size", "views", "repeats", "batch"):
        if getattr(args, name) < 1:
            ap.error(f"--{name}: expected a positive integer, got {getattr(args, name)}")
    result = run_benchmark(args.size, args.views, args.repeats, args.batch)
    print(report(result))
    if args.json:
        write_json(args.json, result, overwrite=args.overwrite)
    return 0


if __name__ == "__main__":
    sys.exit(main())
