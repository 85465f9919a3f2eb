"""``python -m invdiff.bench`` / ``invdiff bench``: the task benchmark, or one of the other benchmarks by name.

``python -m invdiff.bench [--quick] [--out DIR] [--tasks ...] [--methods ...] [--nfe N]`` runs the
tasks x methods benchmark against deepinv (:mod:`invdiff.bench.cli`).
``python -m invdiff.bench NAME [ARGS]`` runs another benchmark, ``NAME`` one of :data:`SUBCOMMANDS`
(each is also ``python -m invdiff.bench.MODULE``).
"""

from __future__ import annotations

import importlib
import sys

# name -> module with a main(argv) entry point (add a line for a new benchmark)
SUBCOMMANDS: dict[str, str] = {
    "tasks": "invdiff.bench.cli",
    "ct16": "invdiff.bench.ct16",
    "operators": "invdiff.bench.operators",
    "prior-quality": "invdiff.bench.prior_quality",
    "overhead": "invdiff.bench.overhead",
    "exact-posterior": "invdiff.bench.exact_posterior",
    "mbir3d": "invdiff.bench.mbir3d",
    "gpu": "invdiff.bench.gpu",
}


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv`` (without the program name); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        name, rest = argv[0], argv[1:]
    else:
        name, rest = "tasks", argv
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__.strip() + "\n\nbenchmarks: " + ", ".join(SUBCOMMANDS) + "\n")
    try:
        module = importlib.import_module(SUBCOMMANDS[name])
    except ImportError as err:
        print(f"invdiff bench: error: the benchmark {name!r} ({SUBCOMMANDS[name]}) is not available: {err}",
              file=sys.stderr)
        return 2
    code = module.main(rest)
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
