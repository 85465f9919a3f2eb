"""``invdiff batch``: many scans on Ray (issue 10, item 4), and the benchmark's ``--jobs`` on the same engine.

One local Ray cluster (2 CPUs, no dashboard) serves the whole module; the batch commands find it
initialised and use it as it is. Inputs are 16x16 ``.npy`` images reconstructed by FBP, so the
reference output of every scan is :func:`invdiff.recon.file.reconstruct_file` run in this process.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")

from invdiff import data  # noqa: E402
from invdiff.cli import main  # noqa: E402
from invdiff.distributed import batch  # noqa: E402
from invdiff.distributed.ray_tasks import TaskFailure, ray_session, run_tasks  # noqa: E402
from invdiff.recon.file import reconstruct_file  # noqa: E402

OPTS = ["--operator", "ct", "--views", "8", "--solver", "fbp", "--workers", "2"]
GOOD = [f"scan{i}.npy" for i in range(5)]


@pytest.fixture(scope="module")
def cluster():
    with ray_session(workers=2) as r:
        yield r


def _inputs(folder, corrupt: bool = True):
    folder.mkdir()
    for i, name in enumerate(GOOD):
        np.save(folder / name, np.random.default_rng(i).random((16, 16), dtype=np.float32))
    if corrupt:
        (folder / "broken.npy").write_bytes(b"\x93NUMPY\x01\x00" + os.urandom(120))  # a header cut short
    return folder


def _reference(folder, name, tmp_path):
    ref = tmp_path / "ref" / name
    reconstruct_file(folder / name, ref, operator="ct", views=8, solver="fbp", echo=lambda s: None)
    return data.load(ref)[0]


def _state(out_dir):
    """Every file in ``out_dir`` (temporaries included) with its inode and modification time."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out_dir.iterdir()}


def _assert_valid_outputs(folder, out_dir, tmp_path):
    assert sorted(p.name for p in out_dir.iterdir()) == GOOD  # no temporaries, no output for the corrupt scan
    for name in GOOD:
        # equal to float32 precision: a Ray task runs one thread, the test process several, so ASTRA's and
        # torch's sums may run in another order (measured: at most 3.6e-7 on values of order 0.1)
        ref = _reference(folder, name, tmp_path)
        torch.testing.assert_close(data.load(out_dir / name)[0], ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


def test_batch_two_workers_one_corrupt_input_then_rerun(cluster, tmp_path, capsys):
    folder, out_dir = _inputs(tmp_path / "in"), tmp_path / "out"
    assert main(["batch", str(folder), "--out", str(out_dir), *OPTS]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("invdiff: error: broken.npy:"), err
    _assert_valid_outputs(folder, out_dir, tmp_path)
    before = _state(out_dir)
    # a rerun skips the five finished outputs, tries the corrupt scan again and writes nothing new
    assert main(["batch", str(folder), "--out", str(out_dir), *OPTS]) == 1
    out, err = capsys.readouterr()
    assert "1 to reconstruct, 5 finished before" in out and "broken.npy" in err
    assert _state(out_dir) == before


def test_killed_worker_loses_nothing_and_a_rerun_completes(cluster, tmp_path, capsys, monkeypatch):
    """The worker of scan2 is killed (SIGKILL) after its temporary file is written, before the rename."""
    folder, out_dir = _inputs(tmp_path / "in", corrupt=False), tmp_path / "out"
    monkeypatch.setenv(batch.KILL_HOOK, "scan2.npy")
    assert main(["batch", str(folder), "--out", str(out_dir), *OPTS, "--retries", "0"]) == 1
    err = capsys.readouterr().err
    assert "scan2.npy" in err and "worker lost" in err
    left = sorted(p.name for p in out_dir.iterdir())
    assert "scan2.npy" not in left and len([n for n in left if n.startswith(".scan2.npy.")]) == 1  # killed mid-write
    assert [n for n in left if not n.startswith(".")] == [n for n in GOOD if n != "scan2.npy"]
    monkeypatch.delenv(batch.KILL_HOOK)
    assert main(["batch", str(folder), "--out", str(out_dir), *OPTS]) == 0
    assert "1 to reconstruct, 4 finished before" in capsys.readouterr().out
    _assert_valid_outputs(folder, out_dir, tmp_path)  # the stale temporary is gone too


def test_killed_worker_is_retried_by_ray_in_the_same_run(cluster, tmp_path, capsys, monkeypatch):
    folder, out_dir = _inputs(tmp_path / "in", corrupt=False), tmp_path / "out"
    monkeypatch.setenv(batch.KILL_HOOK, "scan1.npy")
    assert main(["batch", str(folder), "--out", str(out_dir), *OPTS, "--retries", "1"]) == 0
    out = capsys.readouterr().out
    assert "scan1.npy -> scan1.npy" in out and out.count("after a lost worker") == 1, out
    _assert_valid_outputs(folder, out_dir, tmp_path)


def test_run_tasks_reports_failures_and_keeps_going(cluster, tmp_path):
    (tmp_path / "x.npy").write_bytes(b"")
    res = dict(run_tasks(batch.list_scans, [tmp_path, tmp_path / "nope", tmp_path], workers=2))
    assert res[0] == res[2] == [tmp_path / "x.npy"]
    assert isinstance(res[1], TaskFailure) and res[1].kind == "FileNotFoundError" and "nope" in res[1].message


def test_bench_jobs_on_ray_equal_a_serial_run(cluster):
    """``invdiff bench --jobs 2``: rows in task order, the same numbers as one process (timings aside)."""
    from invdiff.bench.machine import DEFAULT_PRIOR, load_prior
    from invdiff.bench.run import run_benchmark, run_parallel

    tasks, methods = ["ct16", "inpaint70"], ["fbp", "tv"]
    par, par_img, par_skip = run_parallel(tasks, methods, 1, 2, DEFAULT_PRIOR, "cpu", 0, jobs=2, log=lambda s: None)
    ser, ser_img, ser_skip = run_benchmark(tasks, methods, n_images=1, nfe=2, prior=load_prior(DEFAULT_PRIOR, "cpu"),
                                           log=lambda s: None)

    def numbers(rows):  # timings aside; NaN (no coverage without samples) compared as a value
        return [{k: "nan" if v != v else v for k, v in r.items()
                 if k not in ("seconds_per_image", "cpu_seconds_per_image", "peak_mem_mb")}
                for r in rows]

    assert numbers(par) == numbers(ser) and len(par) == 4
    assert par_img == ser_img and par_skip == ser_skip
    assert [(r["task"], r["key"]) for r in par] == [(t, m) for t in tasks for m in methods]


def test_scan_listing_and_output_names(tmp_path):
    (tmp_path / "a.nii.gz").write_bytes(b"")
    (tmp_path / "b.npy").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a scan")
    (tmp_path / ".hidden.npy").write_bytes(b"")
    (tmp_path / "series").mkdir()  # a DICOM series
    (tmp_path / "out").mkdir()  # the output folder inside the input folder
    scans = batch.list_scans(tmp_path, exclude=tmp_path / "out")
    assert [p.name for p in scans] == ["a.nii.gz", "b.npy", "series"]
    assert [batch.output_path(p, "o").name for p in scans] == ["a.nii.gz", "b.npy", "series.nii.gz"]
    assert batch.output_path(scans[0], "o", ".npy").name == "a.npy"
    with pytest.raises(ValueError, match="ext.*'.png'"):
        batch.output_path(scans[0], "o", ".png")
    with pytest.raises(FileNotFoundError, match="nope"):
        batch.list_scans(tmp_path / "nope")


def test_help_names_ray(capsys):
    assert main(["batch", "--help"]) == 0
    out = capsys.readouterr().out
    assert "Ray" in out and "--address" in out and "--workers" in out and "--views" in out


def test_batch_user_errors_fail_before_any_task(tmp_path, capsys):
    assert main(["batch", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--operator", "ct"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0] and "not found" in err[0]
    assert main(["batch", str(tmp_path), "--out", str(tmp_path / "o"), "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err
    (tmp_path / "a.nii").write_bytes(b"")
    (tmp_path / "a.npy").write_bytes(b"")
    with pytest.raises(ValueError, match="a.nii and a.npy would both be written"):
        batch.run_batch(tmp_path, tmp_path / "o", ext=".h5", echo=lambda s: None)
    with pytest.raises(ValueError, match="gpus_per_task.*-1"):
        batch.run_batch(tmp_path, tmp_path / "o", gpus_per_task=-1, echo=lambda s: None)
    assert not (tmp_path / "o").exists()
