"""``python -m invdiff``: the ``invdiff`` command (:func:`invdiff.cli.main`).

This is also the entry point of ``torchrun --standalone --nproc-per-node N -m invdiff reconstruct ...``,
which reconstructs one volume over N processes (:func:`invdiff.distributed.context.reconstruct_split`).
"""

import sys

from invdiff.cli import main

if __name__ == "__main__":
    sys.exit(main())
