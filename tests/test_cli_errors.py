"""The ``invdiff`` command tells user errors (one line, exit 2) from internal errors (traceback).

User errors: a bad argument value found by invdiff's own checks, a missing file, an existing output.
Internal errors: anything else, including ``TypeError`` / ``ValueError`` raised by Python or a library
because of a bug; these must not be turned into a one-line "invdiff: error: ..." message.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from invdiff.cli import main
from invdiff.solvers import get_solver

DEMO = ["demo", "--task", "inpaint", "--size", "16", "--solver", "tv", "--steps", "2"]


def _bug_type_error(self, *args, **kwargs):
    return len(5)  # TypeError raised by Python: a bug, not a bad argument


def _bug_value_error(self, *args, **kwargs):
    return int("not a number")  # ValueError raised by Python


def _bug_import_error(self, *args, **kwargs):
    import invdiff_no_such_module  # noqa: F401  (a broken import inside the package: a bug, not "not available")


def _bug_runtime_error(self, *args, **kwargs):
    raise RuntimeError("solver blew up")


@pytest.mark.parametrize("bug, exc", [(_bug_type_error, TypeError), (_bug_value_error, ValueError),
                                      (_bug_import_error, ModuleNotFoundError), (_bug_runtime_error, RuntimeError)])
def test_internal_error_is_not_a_one_line_user_error(tmp_path, capsys, monkeypatch, bug, exc):
    monkeypatch.setattr(get_solver("tv"), "reconstruct", bug)
    with pytest.raises(exc):
        main([*DEMO, "--out", str(tmp_path)])
    assert "invdiff: error" not in capsys.readouterr().err


def test_validator_error_is_one_line(tmp_path, capsys):
    """The same exception type (ValueError) from invdiff's own check of an argument: one line, exit 2."""
    assert main([*DEMO, "--keep", "2", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("invdiff: error: mask:") and "2.0" in err[0]
    assert main(["demo", "--views", "0", "--size", "16", "--solver", "fbp", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "n_views" in err[0] and "0" in err[0]


def test_internal_error_prints_a_traceback_from_the_command(tmp_path):
    """Run as a program, a bug in a solver exits non-zero with Python's traceback naming the real error."""
    code = ("import sys\nfrom invdiff.cli import main\nfrom invdiff.solvers import get_solver\n"
            "get_solver('tv').reconstruct = lambda self, *a, **k: len(5)\n"
            f"sys.exit(main({[*DEMO, '--out', str(tmp_path)]!r}))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "TypeError: object of type 'int' has no len()" in proc.stderr
    assert "invdiff: error" not in proc.stderr
