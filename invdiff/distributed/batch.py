"""Many scans on Ray: the work behind ``invdiff batch IN_DIR --out OUT_DIR``.

Every scan in ``IN_DIR`` (a ``.npy``, ``.nii``, ``.nii.gz`` or ``.h5`` file, or a sub-folder holding
one DICOM series) becomes one Ray task calling :func:`invdiff.recon.file.reconstruct_file` with the
same options as ``invdiff reconstruct``; its output is ``OUT_DIR/<name><ext>`` (the input's extension,
``.nii.gz`` for a DICOM folder, or ``ext``).

Guarantees:

- each output is written atomically (a temporary file in ``OUT_DIR``, then a rename), so an output
  that exists is finished, and a task killed at any point leaves no partial output;
- a rerun skips finished outputs (unless ``overwrite``); a task first removes the temporary files
  that a killed attempt left behind for its output;
- a scan that fails (a corrupt file, a worker that died more than ``max_retries`` times) is reported
  by name in :attr:`BatchResult.failed`; the other scans finish.
"""

from __future__ import annotations

import glob
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from invdiff.distributed.ray_tasks import TaskFailure, ray_session, run_tasks

SCAN_EXTENSIONS = (".nii.gz", ".nii", ".npy", ".h5")
# Test hook: a scan whose name is in this variable (in the driver's environment, os.pathsep-separated)
# kills its own worker (SIGKILL) after its output's temporary file is written and before the rename,
# in the first attempt (one that finds no temporary file of a killed attempt).
KILL_HOOK = "INVDIFF_BATCH_KILL_BEFORE_RENAME"


@dataclass
class BatchResult:
    """What a batch did: outputs ``written`` now, ``skipped`` (finished before), ``failed`` (scan name -> reason)."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def _extension(path: Path) -> str | None:
    name = path.name.lower()
    return next((e for e in SCAN_EXTENSIONS if name.endswith(e)), None)


def list_scans(in_dir: str | os.PathLike, exclude: str | os.PathLike | None = None) -> list[Path]:
    """The scans in ``in_dir``, sorted by name: files with a scan extension and sub-folders (DICOM series).

    Hidden entries (``.name``) and the folder ``exclude`` (an output folder inside ``in_dir``) are left out.
    """
    in_dir = Path(in_dir)
    if not in_dir.is_dir():
        raise FileNotFoundError(f"{in_dir}: input folder not found" if not in_dir.exists()
                                else f"{in_dir}: is not a folder")
    skip = Path(exclude).resolve() if exclude is not None else None
    scans = [p for p in sorted(in_dir.iterdir())
             if not p.name.startswith(".") and (p.is_dir() and p.resolve() != skip or p.is_file() and _extension(p))]
    return scans


def output_path(scan: Path, out_dir: str | os.PathLike, ext: str | None = None) -> Path:
    """``out_dir/<name><ext>``: the scan's name without its extension.

    ``ext`` default: the scan's own, ``.nii.gz`` for a folder (a DICOM series).
    """
    scan = Path(scan)
    own = None if scan.is_dir() else _extension(scan)
    stem = scan.name[: len(scan.name) - len(own)] if own else scan.name
    if ext is not None and ext.lower().lstrip(".") not in [e.lstrip(".") for e in SCAN_EXTENSIONS]:
        raise ValueError(f"ext: expected one of {', '.join(SCAN_EXTENSIONS)}, got {ext!r}")
    suffix = "." + ext.lower().lstrip(".") if ext is not None else own or ".nii.gz"
    return Path(out_dir) / f"{stem}{suffix}"


def _stale_temporaries(out: Path) -> list[Path]:
    """Temporary files of :func:`invdiff.utils.atomic_path` for ``out`` (``.<name>.<random>.tmp<suffix>``)."""
    return list(out.parent.glob(f".{glob.escape(out.name)}.*.tmp*")) if out.parent.is_dir() else []


def _reconstruct_task(job: tuple[str, str, dict, bool]) -> dict[str, Any]:
    """One scan in a Ray worker: :func:`reconstruct_file`, its printed lines collected; errors returned, not raised.

    First removes the temporary files an attempt killed before it left for this output (Ray runs
    one attempt of a task at a time); ``retried`` counts them.
    """
    scan, out, kw, kill = job
    import torch

    from invdiff.recon.file import reconstruct_file

    torch.set_num_threads(1)
    stale = _stale_temporaries(Path(out))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    rename = os.replace
    if kill and not stale:  # test hook (KILL_HOOK): the first attempt dies between its temporary file and the rename
        os.replace = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
    lines: list[str] = []
    t0 = time.perf_counter()
    try:
        reconstruct_file(scan, out, **kw, progress=False, echo=lines.append)
    except Exception as err:  # noqa: BLE001 - reported by the driver under the scan's name
        text = str(err).strip().splitlines()
        return {"ok": False, "error": f"{type(err).__name__}: {text[0] if text else ''}"}
    finally:
        os.replace = rename
    return {"ok": True, "lines": lines, "seconds": time.perf_counter() - t0, "retried": len(stale)}


def run_batch(in_dir: str | os.PathLike, out_dir: str | os.PathLike, *, workers: int | None = None,
              address: str | None = None, ext: str | None = None, overwrite: bool = False, max_retries: int = 3,
              gpus_per_task: float | None = None, progress: bool = False, echo: Callable[[str], None] = print,
              **reconstruct_kw) -> BatchResult:
    """Reconstruct every scan of ``in_dir`` into ``out_dir``, one Ray task per scan.

    Parameters
    ----------
    in_dir, out_dir : path
        Input folder (:func:`list_scans`) and output folder (created; outputs named by :func:`output_path`).
    workers : int, optional
        Tasks in flight at once; a local cluster gets this many CPUs (default: all of them).
    address : str, optional
        Join the Ray cluster at this address (``"auto"``, ``"HOST:6379"``) instead of starting one.
    ext : str, optional
        Output extension for every scan (``.npy``, ``.nii``, ``.nii.gz``, ``.h5``).
    overwrite : bool
        Reconstruct scans whose output exists too (default: skip them, they are finished).
    max_retries : int
        Times Ray reruns a task whose worker process died.
    gpus_per_task : float, optional
        GPUs Ray gives each task (fractions share a GPU); default 1 when ``device`` is ``"cuda"``, else
        0. Ray shows a task only its GPUs, so ``device="cuda"`` is the task's GPU.
    progress, echo
        A tqdm progress bar; the receiver of the report lines.
    **reconstruct_kw
        Options of :func:`invdiff.recon.file.reconstruct_file` (``solver``, ``operator``, ``views``, ...).

    Returns
    -------
    BatchResult
        ``written``, ``skipped`` and ``failed`` (scan name -> ``"Type: message"``).
    """
    from tqdm.auto import tqdm

    if gpus_per_task is None:
        gpus_per_task = 1.0 if str(reconstruct_kw.get("device", "cpu")).startswith("cuda") else 0.0
    if not (isinstance(gpus_per_task, (int, float)) and gpus_per_task >= 0):
        raise ValueError(f"gpus_per_task: expected a non-negative number, got {gpus_per_task!r}")
    out_dir = Path(out_dir)
    scans = list_scans(in_dir, exclude=out_dir)
    outs = [output_path(s, out_dir, ext) for s in scans]
    seen: dict[Path, Path] = {}
    for s, o in zip(scans, outs):
        if o in seen:
            raise ValueError(f"{seen[o].name} and {s.name} would both be written to {o}; pass another ext or "
                             "rename one of them")
        seen[o] = s
    result = BatchResult(skipped=[o for o in outs if o.exists() and not overwrite])
    todo = [(s, o) for s, o in zip(scans, outs) if overwrite or not o.exists()]
    echo(f"invdiff batch: {len(scans)} scan(s) in {in_dir}: {len(todo)} to reconstruct, "
         f"{len(result.skipped)} finished before")
    if not todo:
        return result
    out_dir.mkdir(parents=True, exist_ok=True)
    kill = set(filter(None, os.environ.get(KILL_HOOK, "").split(os.pathsep)))
    jobs = [(str(s), str(o), {**reconstruct_kw, "overwrite": overwrite}, s.name in kill) for s, o in todo]
    t0 = time.perf_counter()
    with ray_session(workers, address), tqdm(total=len(jobs), desc="invdiff batch", unit="scan",
                                              disable=not progress) as bar:
        for i, r in run_tasks(_reconstruct_task, jobs, workers=workers, max_retries=max_retries,
                                  num_gpus=gpus_per_task):
            scan, out = todo[i]
            if isinstance(r, TaskFailure):
                r = {"ok": False, "error": f"worker lost ({r})"}
            if r["ok"]:
                result.written.append(out)
                again = ", after a lost worker" if r["retried"] else ""
                line = f"  {scan.name} -> {out.name} ({r['seconds']:.2f} s{again})"
            else:
                result.failed[scan.name] = r["error"]
                line = f"  FAILED {scan.name}: {r['error']}"
            bar.write(line) if progress else echo(line)
            bar.update()
    result.seconds = time.perf_counter() - t0
    echo(f"invdiff batch: {len(result.written)} written, {len(result.skipped)} skipped (finished), "
         f"{len(result.failed)} failed, {result.seconds:.1f} s")
    return result
