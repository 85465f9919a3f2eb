"""``invdiff bench`` / ``python -m invdiff.bench``: the tasks x methods benchmark against deepinv.

``invdiff bench [--quick] [--out DIR] [--tasks ...] [--methods ...] [--nfe N] [--images N] [--jobs N]``
writes ``DIR/RESULTS.md`` (setup, methodology, tables), ``DIR/results.csv`` (one row per task and
method), ``DIR/per_image.csv`` and ``DIR/results.png`` (PSNR against seconds). The run is
:func:`invdiff.bench.run.run_benchmark`; how it measures is :data:`invdiff.bench.report.METHODOLOGY`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from invdiff.bench.machine import DEFAULT_PRIOR, load_prior, machine_info, prior_meta
from invdiff.bench.methods import METHODS, QUICK_METHODS
from invdiff.bench.report import CSV_FIELDS, PER_IMAGE_FIELDS, write_csv, write_markdown, write_plot
from invdiff.bench.run import exact_posterior_rows, run_benchmark, run_parallel
from invdiff.bench.tasks import QUICK_TASKS, TASKS


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
    p.add_argument("--jobs", type=int, default=1, help="Ray tasks at once, one benchmark task each, on a local Ray "
                   "cluster of this many CPUs (timings are then taken with the other workers running)")
    p.add_argument("--address", default=None, help="with --jobs: join the Ray cluster at this address ('auto' or "
                   "HOST:PORT) instead of starting a local one")
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, run the benchmark, write its four outputs; returns the exit status."""
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
                                                args.jobs, log, address=args.address)
    else:
        rows, per_image, skipped = run_benchmark(tasks, method_keys, n_images=n_images, nfe=nfe, prior=prior,
                                                 device=args.device, seed=args.seed, log=log)
    exact, exact_note = (None, None) if args.no_exact else exact_posterior_rows(args.quick, log)
    meta = prior_meta(prior)
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
    write_csv(out / "per_image.csv", per_image, PER_IMAGE_FIELDS)
    write_plot(out / "results.png", rows)
    log(f"wrote {out / 'RESULTS.md'}, results.csv, per_image.csv, results.png "
        f"({time.perf_counter() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
