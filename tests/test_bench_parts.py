"""Finished benchmark tasks kept on disk and resumed (invdiff.bench.parts, invdiff bench --resume)."""

import numpy as np
import torch

from invdiff.bench import run as bench_run
from invdiff.bench.parts import Parts, source_id
from invdiff.bench.run import Section, run_sections

BASE = {"prior": "phantom-ct-64", "device": "cpu", "seed": 0, "images": 2, "source": "abc"}


def _result(task):
    rows = [{"task": task, "method": "dds", "psnr": np.float64(30.5), "calls_per_image": np.int64(20),
             "ssim": torch.tensor(0.75), "coverage90": float("nan"), "hparams": "eta=0.85"}]
    return rows, [{"task": task, "image": 0, "psnr": 31.0}], [], [f"{task}: done"]


def test_a_saved_part_is_read_back_only_with_the_same_key_and_resume(tmp_path):
    p = Parts(tmp_path / "parts", resume=True, base_key=BASE)
    p.save(100, "ct16", ("dds", "tv"), None, _result("ct16"))
    rows, per_image, skipped, lines = p.load(100, "ct16", ("dds", "tv"), None)
    assert rows[0]["psnr"] == 30.5 and rows[0]["calls_per_image"] == 20 and abs(rows[0]["ssim"] - 0.75) < 1e-7
    assert rows[0]["coverage90"] != rows[0]["coverage90"]  # NaN survives
    assert lines == ["ct16: done"] and p.resumed == ["ct16 (NFE 100)"]
    assert p.load(100, "ct16", ("dds",), None) is None  # other methods
    assert p.load(1000, "ct16", ("dds", "tv"), None) is None  # other section
    assert p.load(100, "ct16", ("dds", "tv"), 2) is None  # other kept images
    assert Parts(tmp_path / "parts", True, {**BASE, "source": "def"}).load(100, "ct16", ("dds", "tv"), None) is None
    assert Parts(tmp_path / "parts", False, BASE).load(100, "ct16", ("dds", "tv"), None) is None  # no --resume
    (tmp_path / "parts" / "nfe100_ct16.json").write_text("{ not json")
    assert p.load(100, "ct16", ("dds", "tv"), None) is None  # unreadable: run again


def test_source_id_is_the_package_tree():
    """The key's source is the package's git tree (not the commit: a commit of documents leaves it alone), marked
    when the package has uncommitted changes."""
    import subprocess
    from pathlib import Path

    import invdiff

    pkg = Path(invdiff.__file__).parent
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=pkg)
    if commit.returncode != 0:
        assert source_id() == "unknown"
        return
    tree = subprocess.run(["git", "ls-tree", "HEAD", pkg.name], capture_output=True, text=True, cwd=pkg.parent)
    sid = source_id()
    assert sid.split("+diff.")[0] == tree.stdout.split()[2]  # "<mode> tree <sha>\tinvdiff"
    assert sid.split("+diff.")[0] != commit.stdout.strip()
    dirty = subprocess.run(["git", "diff", "HEAD", "--quiet", "--", "."], cwd=pkg).returncode != 0
    assert ("+diff." in sid) == dirty


def test_run_sections_resumes_the_finished_tasks_and_writes_the_others(tmp_path, monkeypatch):
    calls = []

    def fake(task_names, method_keys, n_images, nfe, prior, device, seed, log, keep_images):
        (t,) = task_names
        calls.append((t, nfe))
        rows, per_image, skipped, _ = _result(t)
        log(f"{t}: ran")
        return rows, per_image, skipped

    monkeypatch.setattr(bench_run, "run_benchmark", fake)
    secs = [Section(100, ("ct16", "mri4-random"), ("dds",)), Section(1000, ("ct16",), ("dps",), keep_images=1)]
    logged = []
    first = run_sections(secs, 2, "x", "cpu", 0, jobs=1, log=logged.append, prior=object(),
                         parts=Parts(tmp_path, False, BASE))
    assert sorted(calls) == [("ct16", 100), ("ct16", 1000), ("mri4-random", 100)]
    assert sorted(logged) == ["ct16: ran", "ct16: ran", "mri4-random: ran"]  # logged once each, as they ran
    assert len(list(tmp_path.glob("*.json"))) == 3
    (tmp_path / "nfe100_mri4-random.json").unlink()  # as if interrupted before this task finished
    calls.clear()
    parts = Parts(tmp_path, True, BASE)
    again = run_sections(secs, 2, "x", "cpu", 0, jobs=1, log=logged.append, prior=object(), parts=parts)
    assert calls == [("mri4-random", 100)]
    assert parts.resumed == ["ct16 (NFE 100)", "ct16 (NFE 1000)"]
    assert [[r["task"] for r in sec[0]] for sec in again] == [[r["task"] for r in sec[0]] for sec in first]
    assert again[0][0][0]["psnr"] == first[0][0][0]["psnr"]


def test_cli_has_resume():
    from invdiff.bench.cli import build_parser

    assert build_parser().parse_args(["--resume"]).resume is True
    assert build_parser().parse_args([]).resume is False


def test_a_parallel_run_logs_each_task_as_it_finishes(monkeypatch):
    """With Ray workers (faked here), each finished task is logged at once with a count, so a long run shows
    progress; the workers' own lines still come at the end."""
    import contextlib

    from invdiff.distributed import ray_tasks

    def fake_run_tasks(fn, args, workers, max_retries):
        for j, a in enumerate(args):
            yield j, _result(a[0])

    monkeypatch.setattr(ray_tasks, "ray_session", lambda jobs, address: contextlib.nullcontext())
    monkeypatch.setattr(ray_tasks, "run_tasks", fake_run_tasks)
    secs = [Section(100, ("ct16", "mri4-random"), ("dds",)), Section(1000, ("ct16",), ("dps",), keep_images=1)]
    logged = []
    out = run_sections(secs, 2, "x", "cpu", 0, jobs=2, log=logged.append)
    progress = [line for line in logged if line.startswith("[bench] ")]
    assert [p.split(" finished")[0] for p in progress] == ["[bench] ct16 (NFE 1000)", "[bench] ct16 (NFE 100)",
                                                          "[bench] mri4-random (NFE 100)"]  # long section first
    assert [p.split(": ")[1].split(" tasks")[0] for p in progress] == ["1 of 3", "2 of 3", "3 of 3"]
    assert logged.index(progress[-1]) < logged.index("ct16: done")  # progress before the workers' lines
    assert [r["task"] for r in out[0][0]] == ["ct16", "mri4-random"]
