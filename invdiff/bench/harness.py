"""Old home of the task benchmark, kept so that ``invdiff.bench.harness.NAME`` still works.

The benchmark now lives in :mod:`invdiff.bench.run` (the run loop), :mod:`invdiff.bench.report`
(RESULTS.md, CSV, plot and the methodology), :mod:`invdiff.bench.machine` (prior and machine
information), :mod:`invdiff.bench.memory` (peak memory) and :mod:`invdiff.bench.cli` (the command).
"""

from invdiff.bench.cli import build_parser, main
from invdiff.bench.machine import DEFAULT_PRIOR, load_prior, machine_info
from invdiff.bench.machine import prior_meta as _prior_meta
from invdiff.bench.memory import PeakMemory
from invdiff.bench.report import (CSV_FIELDS, summary_table, task_table, write_csv, write_markdown,
                                  write_plot)
from invdiff.bench.run import exact_posterior_rows, plane_psnr, run_benchmark, run_parallel

__all__ = ["CSV_FIELDS", "DEFAULT_PRIOR", "PeakMemory", "build_parser", "exact_posterior_rows", "load_prior",
           "machine_info", "main", "plane_psnr", "run_benchmark", "run_parallel", "summary_table", "task_table",
           "write_csv", "write_markdown", "write_plot", "_prior_meta"]

if __name__ == "__main__":
    import sys

    sys.exit(main())
