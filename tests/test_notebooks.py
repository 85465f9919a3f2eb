"""The tutorials in ``notebooks/`` run top to bottom, show their figures, and are committed without outputs.

Each notebook is executed in a fresh Jupyter kernel (``python3``, which jupyter_client starts with
this interpreter, so it sees the same installed packages) in a temporary working folder, with
``INVDIFF_FAST=1``: the notebooks then shrink their step counts and sizes (each says so in a
Markdown cell) so that the whole file runs in a few minutes on a laptop CPU.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT = 300  # seconds per cell


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


def test_generator_parses_cells():
    gen = _generator()
    cells = gen.parse_cells("# %% [markdown]\n# # Title\n# text\n\n# %%\nx = 1\n\n# %%\n")
    assert cells == [("markdown", "# Title\ntext"), ("code", "x = 1")]
    with pytest.raises(ValueError, match="markdown cell line"):
        gen.parse_cells("# %% [markdown]\nnot a comment\n")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
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
