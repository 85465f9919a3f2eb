"""The tutorials in ``notebooks/`` run top to bottom, show their figures, and are committed without outputs.

Each notebook is executed in a fresh Jupyter kernel running this interpreter (so it sees the same
installed packages, also in a fresh virtual environment) in a temporary working folder, with
``INVDIFF_FAST=1``: the notebooks then shrink their step counts and sizes (each says so in a
Markdown cell) so that the whole file runs in a few minutes on a laptop CPU.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import nbclient
import nbformat
import pytest

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT = 300  # seconds per cell
KERNEL = "invdiff-tests"


def _generator():
    spec = importlib.util.spec_from_file_location("make_notebooks", NB_DIR / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _kernel_env() -> dict:
    env = dict(os.environ)
    env["INVDIFF_FAST"] = "1"
    env.pop("MPLBACKEND", None)  # tests set Agg; the kernel must use its inline backend to show figures
    return env


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory):
    """A kernel spec that starts ``sys.executable``, first on ``JUPYTER_PATH``.

    The notebooks name the usual ``python3`` kernel; a user-level ``python3`` spec may point at
    another interpreter, so the tests register their own under another name.
    """
    from ipykernel.kernelspec import write_kernel_spec

    root = tmp_path_factory.mktemp("jupyter")
    write_kernel_spec(root / "kernels" / KERNEL, overrides={"display_name": "invdiff tests"})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(root))
        yield KERNEL


def test_at_least_six_tutorials():
    names = [p.name for p in NOTEBOOKS]
    assert len(names) >= 6, names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: cell {i} has outputs; strip them (make_notebooks.py)"
            assert cell.execution_count is None, f"{path.name}: cell {i} has an execution count"


def test_notebooks_are_built_from_their_sources():
    gen = _generator()
    sources = gen.sources()
    assert {gen.target(s).name for s in sources} == {p.name for p in NOTEBOOKS}
    for src in sources:
        assert gen.target(src).read_text() == gen.render(gen.build(src)), \
            f"{gen.target(src).name} differs from {src.name}; run python notebooks/make_notebooks.py"


def test_test_kernel_runs_this_interpreter(kernel_name):
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec(kernel_name)
    assert spec.argv[0] == sys.executable


def test_generator_parses_cells():
    gen = _generator()
    cells = gen.parse_cells("# %% [markdown]\n# # Title\n# text\n\n# %%\nx = 1\n\n# %%\n")
    assert cells == [("markdown", "# Title\ntext"), ("code", "x = 1")]
    with pytest.raises(ValueError, match="markdown cell line"):
        gen.parse_cells("# %% [markdown]\nnot a comment\n")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, tmp_path, kernel_name):
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name=kernel_name,
                                     resources={"metadata": {"path": str(tmp_path)}})
    t0 = time.perf_counter()
    client.execute(env=_kernel_env())  # raises CellExecutionError (with the traceback) if a cell fails
    seconds = time.perf_counter() - t0
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, errors
    figures = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert figures, f"{path.name}: no inline figure was shown"
    print(f"{path.name}: {seconds:.1f} s, {len(figures)} figure(s)")
