"""Finished benchmark tasks kept on disk, so that an interrupted ``invdiff bench`` resumes where it stopped.

The full benchmark takes about two hours on two idle cores. Each (section, task) pair that finishes is written at
once, atomically, to ``OUT/parts/nfe{N}_{task}.json``:

* its **key**: everything that decides its rows, i.e. task, methods, test images, NFE, the images kept by the
  long section, prior, device, seed, and the source: the git tree of the ``invdiff`` package, plus a hash of its
  uncommitted diff when it has changes. Commits that touch only documents, notes or benchmark records leave the
  key alone, so they can be made while a long run is going on;
* its **result**: rows, per-image rows, skipped entries and log lines.

``invdiff bench --resume`` reads the parts whose key equals the new run's and runs only the other tasks. A part
with another key is ignored, and replaced when its task finishes. Rows are plain JSON: nothing is unpickled. The
rows of a resumed task keep the seconds measured when it ran; ``RESULTS.md`` lists which tasks were resumed.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from invdiff.utils import atomic_path

__all__ = ["Parts", "source_id"]


def source_id() -> str:
    """The git tree of the ``invdiff`` package at HEAD (``git rev-parse HEAD:./`` in the package folder), with
    ``+diff.<sha1 of git diff HEAD>`` of the package when it has uncommitted changes; ``"unknown"`` outside a git
    checkout."""
    import invdiff

    pkg = Path(invdiff.__file__).parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD:./"], capture_output=True, text=True, timeout=10, cwd=pkg)
        if rev.returncode != 0:
            return "unknown"
        diff = subprocess.run(["git", "diff", "HEAD", "--", "."], capture_output=True, timeout=30, cwd=pkg)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    out = rev.stdout.strip()
    if diff.returncode == 0 and diff.stdout:
        out += "+diff." + hashlib.sha1(diff.stdout).hexdigest()[:12]
    return out


class Parts:
    """The ``parts`` folder of one benchmark output folder.

    Parameters
    ----------
    folder : Path
        Where the part files live (``OUT/parts``); made on the first write.
    resume : bool
        Whether :meth:`load` returns finished parts (``False``: every task runs again).
    base_key : dict
        The key entries shared by every task of the run (prior, device, seed, test images, source).
    """

    def __init__(self, folder: Path, resume: bool, base_key: dict):
        self.folder, self.resume, self.base_key = Path(folder), bool(resume), dict(base_key)
        self.resumed: list[str] = []

    def key(self, nfe: int, task: str, methods, keep_images) -> dict:
        return {**self.base_key, "nfe": int(nfe), "task": task, "methods": list(methods),
                "keep_images": keep_images}

    def path(self, nfe: int, task: str) -> Path:
        return self.folder / f"nfe{int(nfe)}_{task}.json"

    def load(self, nfe: int, task: str, methods, keep_images) -> tuple | None:
        """The finished result ``(rows, per_image, skipped, lines)`` of this task, or ``None``."""
        if not self.resume:
            return None
        f = self.path(nfe, task)
        if not f.exists():
            return None
        try:
            d = json.loads(f.read_text())
        except (OSError, ValueError):
            return None  # unreadable: run the task again
        if d.get("key") != self.key(nfe, task, methods, keep_images):  # key(): plain JSON types only
            return None
        self.resumed.append(f"{task} (NFE {nfe})")
        r = d["result"]
        return r["rows"], r["per_image"], r["skipped"], r["lines"]

    def save(self, nfe: int, task: str, methods, keep_images, result: tuple) -> None:
        """Write a finished task's result (atomically, replacing an older part)."""
        rows, per_image, skipped, lines = result
        self.folder.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"key": self.key(nfe, task, methods, keep_images),
                           "result": {"rows": rows, "per_image": per_image, "skipped": skipped, "lines": lines}},
                          default=_plain, indent=1)
        with atomic_path(self.path(nfe, task), overwrite=True) as tmp:
            Path(tmp).write_text(text + "\n")


def _plain(value):
    """JSON for the numbers of a row that are not Python's own (numpy and torch scalars, small tensors)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"a benchmark row holds a {type(value).__name__}, which a part file cannot store")
