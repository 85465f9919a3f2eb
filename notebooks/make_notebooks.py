"""Build the tutorial notebooks from their sources in ``notebooks/src/``.

Each source is a Python file in the "percent" format (the one jupytext and VS Code read): a line
``# %%`` starts a code cell, a line ``# %% [markdown]`` starts a Markdown cell whose lines are
written as comments (``# text``). The notebooks are written without outputs, so the committed files
stay small and diffable; run them in Jupyter to see the figures.

    python notebooks/make_notebooks.py          # rewrite notebooks/*.ipynb from notebooks/src/*.py
    python notebooks/make_notebooks.py --check  # exit 1 if a notebook is missing or out of date

``tests/test_notebooks.py`` executes every notebook top to bottom and checks that the committed
notebooks are exactly what this script builds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def parse_cells(text: str) -> list[tuple[str, str]]:
    """Split a percent-format source into ``(kind, source)`` cells, ``kind`` in {"code", "markdown"}."""
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# %%"):
            kind = "markdown" if "[markdown]" in stripped else "code"
            cells.append((kind, []))
        elif cells:
            cells[-1][1].append(line)
        elif stripped:
            raise ValueError(f"text before the first '# %%' cell marker: {line!r}")
    out = []
    for kind, lines in cells:
        if kind == "markdown":
            bad = [ln for ln in lines if ln.strip() and not ln.startswith("#")]
            if bad:
                raise ValueError(f"markdown cell line not written as a comment: {bad[0]!r}")
            lines = [ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in lines]
        source = "\n".join(lines).strip("\n")
        if source:
            out.append((kind, source))
    return out


def build(src: Path) -> nbformat.NotebookNode:
    """The notebook (no outputs) made from one source file."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    for i, (kind, source) in enumerate(parse_cells(src.read_text())):
        cell = nbformat.v4.new_markdown_cell(source) if kind == "markdown" else nbformat.v4.new_code_cell(source)
        cell["id"] = f"{src.stem[:2]}-{i:02d}"  # stable ids, so rebuilding an unchanged source changes nothing
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def sources() -> list[Path]:
    return sorted(SRC.glob("[0-9][0-9]_*.py"))


def target(src: Path) -> Path:
    return HERE / f"{src.stem}.ipynb"


def render(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only check that the notebooks are up to date")
    args = p.parse_args(argv)
    stale = []
    for src in sources():
        text, path = render(build(src)), target(src)
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path.name)
        if not args.check:
            path.write_text(text)
            print(f"wrote {path.relative_to(HERE.parent)}")
    if args.check and stale:
        print(f"out of date: {', '.join(stale)} (run python notebooks/make_notebooks.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
