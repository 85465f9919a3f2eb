"""``invdiff bench`` / ``python -m invdiff.bench``: the tasks x methods benchmark against deepinv.

``invdiff bench [--quick] [--out DIR] [--tasks ...] [--methods ...] [--nfe N] [--images N] [--jobs N]
[--long-nfe N] [--long-methods ...] [--long-tasks ...] [--long-images N]``
writes ``DIR/RESULTS.md`` (setup, methodology, tables), ``DIR/results.csv`` (one row per task,
method and budget, with its ``nfe_budget``), ``DIR/per_image.csv`` and ``DIR/results.png`` (PSNR against
seconds, main budget). The long section (``--long-nfe``, default 1000; 0 skips it) runs the methods whose papers use
that budget (:data:`invdiff.bench.run.LONG_METHODS`) on every 2D task that ``--tasks`` runs and every test image
(``--long-tasks`` and ``--long-images`` narrow it: the first N images, their measurement cut from the whole batch's). The run is
:func:`invdiff.bench.run.run_benchmark`; how it measures is :data:`invdiff.bench.report.METHODOLOGY`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from invdiff.bench.machine import DEFAULT_PRIOR, load_prior, machine_info, prior_meta
from invdiff.bench.methods import DEFAULT_METHODS, METHODS, QUICK_METHODS
from invdiff.bench.parts import Parts, source_id
from invdiff.bench.report import CSV_FIELDS, PER_IMAGE_FIELDS, write_csv, write_markdown, write_plot
from invdiff.bench.run import (LONG_IMAGES, LONG_METHODS, LONG_NFE, LONG_TASKS, Section, exact_posterior_rows,
                               run_sections)
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
                   help=f"methods (default: all single-chain ones): {', '.join(METHODS)}")
    p.add_argument("--nfe", type=int, default=None, help="network calls per image (default 100; 20 with --quick)")
    p.add_argument("--images", type=int, default=None, help="test images per 2D task (default 4; 2 with --quick); "
                   "3D tasks use one volume per 4 images")
    p.add_argument("--prior", default=DEFAULT_PRIOR, help="prior name or checkpoint path")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--seed", type=int, default=0, help="seed of the measurement noise and the samplers")
    p.add_argument("--no-exact", action="store_true", help="skip the exact-posterior benchmark rows")
    p.add_argument("--jobs", type=int, default=1, help="Ray tasks at once, one benchmark task each, on a local Ray "
                   "cluster of this many CPUs (timings are then taken with the other workers running)")
    p.add_argument("--long-nfe", type=int, default=None, help=f"network calls per image of the long section, in "
                   f"which the methods whose papers use that budget run (default {LONG_NFE}; off with --quick); 0 "
                   "skips the section")
    p.add_argument("--long-methods", nargs="+", default=list(LONG_METHODS), choices=list(METHODS), metavar="METHOD",
                   help="methods of the long section")
    p.add_argument("--long-tasks", nargs="+", default=None, choices=list(TASKS), metavar="TASK",
                   help="2D tasks of the long section (default: every 2D task that --tasks runs)")
    p.add_argument("--long-images", type=int, default=LONG_IMAGES, help="the long section runs on the first N test "
                   "images, at most --images (default: all)")
    p.add_argument("--resume", action="store_true", help="reuse the tasks that an earlier, interrupted run with the "
                   "same settings and source finished (every finished task is kept in OUT/parts; "
                   "invdiff.bench.parts)")
    p.add_argument("--address", default=None, help="with --jobs: join the Ray cluster at this address ('auto' or "
                   "HOST:PORT) instead of starting a local one")
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, run the benchmark, write its four outputs; returns the exit status."""
    args = build_parser().parse_args(argv)
    tasks = args.tasks or (list(QUICK_TASKS) if args.quick else list(TASKS))
    method_keys = args.methods or (list(QUICK_METHODS) if args.quick else list(DEFAULT_METHODS))
    nfe = args.nfe or (20 if args.quick else 100)
    n_images = args.images or (2 if args.quick else 4)
    if nfe < 1 or n_images < 1:
        print(f"invdiff bench: error: --nfe and --images must be positive, got {nfe}, {n_images}", file=sys.stderr)
        return 2
    try:
        long = long_section(args, tasks, nfe, n_images)
    except ValueError as err:
        print(f"invdiff bench: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    prior = load_prior(args.prior, args.device)

    def log(msg: str) -> None:
        print(msg, flush=True)

    sections = [Section(nfe, tuple(tasks), tuple(method_keys))] + ([long] if long else [])
    parts = Parts(out / "parts", args.resume, {"prior": args.prior, "device": args.device, "seed": args.seed,
                                                "images": n_images, "source": source_id()})
    results = run_sections(sections, n_images, args.prior, args.device, args.seed, jobs=args.jobs, log=log,
                           address=args.address, prior=prior, parts=parts)
    rows, per_image, skipped = results[0]
    long_rows, long_per_image, long_skipped = results[1] if long else ([], [], [])
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
            f"{long.nfe}-call section" if long else "long section": (
                f"NFE {long.nfe}: {', '.join(long.methods)} on {', '.join(long.tasks)}; first {long.keep_images} "
                f"test image(s) per task" if long else "not run (--long-nfe 0, or none of its tasks in --tasks)"),
            "worker processes": args.jobs,
            "tasks read from an earlier run (--resume)": (", ".join(parts.resumed) if parts.resumed else "none"),
            "total wall time (s)": f"{time.perf_counter() - t_start:.0f}",
        },
    }
    skipped += [f"{s} (NFE {long.nfe})" for s in long_skipped]
    write_markdown(out / "RESULTS.md", rows, skipped, machine_info(args.device), settings, exact, exact_note,
                   long_rows=long_rows, per_image=per_image, long_nfe=long.nfe if long else None)
    write_csv(out / "results.csv", rows + long_rows, CSV_FIELDS)
    write_csv(out / "per_image.csv", per_image + long_per_image, PER_IMAGE_FIELDS)
    write_plot(out / "results.png", rows)
    log(f"wrote {out / 'RESULTS.md'}, results.csv, per_image.csv, results.png "
        f"({time.perf_counter() - t_start:.0f} s)")
    return 0


def long_section(args: argparse.Namespace, tasks: list[str], nfe: int, n_images: int) -> Section | None:
    """The long :class:`~invdiff.bench.run.Section` the options ask for (``None``: not run); ValueError names a bad
    option, its value and what was expected."""
    long_nfe = args.long_nfe if args.long_nfe is not None else (0 if args.quick else LONG_NFE)
    if long_nfe < 0:
        raise ValueError(f"--long-nfe: expected a number of network calls >= 0 (0 skips the section), got {long_nfe}")
    if long_nfe == 0:
        return None
    if long_nfe == nfe:
        raise ValueError(f"--long-nfe: expected a budget other than --nfe ({nfe}), got {long_nfe}")
    keep = args.long_images if args.long_images is not None else n_images
    if not 1 <= keep <= n_images:
        raise ValueError(f"--long-images: expected an integer in [1, --images={n_images}], got {keep}")
    if args.long_tasks is None:
        long_tasks = [t for t in tasks if t in LONG_TASKS]
    else:
        long_tasks = list(dict.fromkeys(args.long_tasks))
        vol = [t for t in long_tasks if TASKS[t].volume]
        if vol:
            raise ValueError(f"--long-tasks: expected 2D tasks, got the 3D task(s) {', '.join(vol)}")
        missing = [t for t in long_tasks if t not in tasks]
        if missing:
            raise ValueError(f"--long-tasks: expected tasks that --tasks runs ({', '.join(tasks)}), got "
                             f"{', '.join(missing)}")
    if not long_tasks:
        return None
    return Section(long_nfe, tuple(long_tasks), tuple(dict.fromkeys(args.long_methods)), keep_images=keep)


if __name__ == "__main__":
    sys.exit(main())
