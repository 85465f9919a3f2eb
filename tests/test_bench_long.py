"""The benchmark's long section (``--long-nfe``): its rows, their NFE in the csv files, its report, its options."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from invdiff.bench import run
from invdiff.bench.cli import main as bench_main
from invdiff.bench.machine import DEFAULT_PRIOR, load_prior
from invdiff.bench.methods import HPARAMS_AT_NFE, base_nfe, hparams, hparams_at, tuned_budget
from invdiff.bench.report import long_section


def _read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """``invdiff bench`` at 2 calls on 2 images with a 3-call section on the first image of two tasks."""
    out = tmp_path_factory.mktemp("bench_long")
    argv = ["--tasks", "inpaint70", "ct16", "--methods", "fbp", "dps", "dinv-diffpir", "--nfe", "2", "--images", "2",
            "--long-nfe", "3", "--long-methods", "dps", "reddiff", "--long-tasks", "inpaint70", "ct16",
            "--long-images", "1", "--no-exact", "--out", str(out)]
    assert bench_main(argv) == 0
    return out


def test_long_rows_carry_their_budget_and_images(tiny_run):
    """results.csv: the main rows at NFE 2 on 2 images, the long rows at NFE 3 on 1 image, counted calls = budget."""
    rows = _read(tiny_run / "results.csv")
    main = [r for r in rows if r["nfe_budget"] == "2"]
    long = [r for r in rows if r["nfe_budget"] == "3"]
    assert len(main) + len(long) == len(rows)
    assert {(r["task"], r["key"]) for r in main} == {(t, k) for t in ("inpaint70", "ct16")
                                                     for k in ("fbp", "dps", "dinv-diffpir")}
    assert {(r["task"], r["key"]) for r in long} == {(t, k) for t in ("inpaint70", "ct16") for k in ("dps", "reddiff")}
    assert all(r["images"] == "2" for r in main) and all(r["images"] == "1" for r in long)
    assert all(r["calls_per_image"] == "3" for r in long)
    assert all(float(r["cpu_seconds_per_image"]) > 0 for r in long)  # the process's CPU time, recorded per row
    assert all(r["calls_per_image"] == "2" for r in main if r["key"] != "fbp")
    assert all(math.isfinite(float(r["psnr"])) for r in rows)
    per = _read(tiny_run / "per_image.csv")
    assert {(p["nfe_budget"], p["image"]) for p in per if p["key"] == "reddiff"} == {("3", "0")}
    assert {(p["nfe_budget"], p["image"]) for p in per if p["key"] == "dps"} == {("2", "0"), ("2", "1"), ("3", "0")}
    for r in long:  # the row's PSNR is its per-image PSNR (one image)
        p = [p for p in per if (p["task"], p["key"], p["nfe_budget"]) == (r["task"], r["key"], "3")]
        assert float(p[0]["psnr"]) == pytest.approx(float(r["psnr"]), abs=1e-9)


def test_long_section_in_report(tiny_run):
    """RESULTS.md: a '3 network calls' section after the task tables, with the long rows at NFE 3 and the main run's
    best rows and DPS row re-scored on the section's image (the per-image PSNR of image 0, not the 2-image mean)."""
    md = (tiny_run / "RESULTS.md").read_text()
    assert "## 3 network calls" in md and "| 3-call section | NFE 3: dps, reddiff on inpaint70, ct16; first 1 test" in md
    assert md.index("## ct16:") < md.index("## 3 network calls") < md.index("![PSNR")
    section = md[md.index("## 3 network calls"):md.index("![PSNR")]
    # the summary and task tables (not the setup table above them, whose "total wall time (s)" may itself read 3)
    main_md = md[md.index("## Summary"):md.index("## 3 network calls")]
    assert "| 3 |" not in main_md  # no long row in the main tables
    rows = _read(tiny_run / "results.csv")
    per = _read(tiny_run / "per_image.csv")
    table = [line.split(" | ") for line in section.splitlines() if line.startswith("| inpaint70 | ") or
             line.startswith("| ct16 | ")]
    detail = [c for c in table if len(c) == 10]
    for r in rows:
        if r["nfe_budget"] == "3":
            assert any(c[1] == r["method"] and c[2] == "3" and c[3].startswith(f"{float(r['psnr']):.2f}")
                       for c in detail if c[0] == "| " + r["task"])
    for task in ("inpaint70", "ct16"):
        main = [r for r in rows if r["task"] == task and r["nfe_budget"] == "2"]
        best = max((r for r in main if r["family"] == "deepinv"), key=lambda r: float(r["psnr"]))
        img0 = [float(p["psnr"]) for p in per if (p["task"], p["key"], p["nfe_budget"], p["image"]) ==
                (task, best["key"], "2", "0")][0]
        line = [c for c in detail if c[0] == "| " + task and c[2] == "2" and c[-1].startswith("best deepinv at NFE 2")]
        assert len(line) == 1 and line[0][1] == best["method"] and line[0][3] == f"{img0:.2f} ± 0.00"
        dps2 = [c for c in detail if c[0] == "| " + task and c[1] == "invdiff DPS" and c[2] == "2"]
        dps_img0 = [float(p["psnr"]) for p in per if (p["task"], p["key"], p["nfe_budget"], p["image"]) ==
                    (task, "dps", "2", "0")][0]
        assert len(dps2) == 1 and dps2[0][3] == f"{dps_img0:.2f} ± 0.00"


def test_keep_images_cuts_the_full_measurement():
    """A section on the first image sees the same measurement as the full batch: FBP's per-image PSNR is identical."""
    prior = load_prior(DEFAULT_PRIOR)
    _, full, _ = run.run_benchmark(["ct16", "mri4-random"], ["fbp"], n_images=3, nfe=1, prior=prior, log=lambda m: None)
    _, cut, _ = run.run_benchmark(["ct16", "mri4-random"], ["fbp"], n_images=3, nfe=1, prior=prior, log=lambda m: None,
                                  keep_images=1)
    assert [p["image"] for p in cut] == [0, 0]
    for c in cut:
        f = [p for p in full if p["task"] == c["task"] and p["image"] == 0][0]
        assert c["psnr"] == f["psnr"] and c["ssim"] == f["ssim"]
    assert {p["nfe_budget"] for p in full + cut} == {1}


def test_hparams_at_lays_the_budget_entries_over_the_tuned_ones(monkeypatch):
    monkeypatch.setitem(HPARAMS_AT_NFE, 7, {"dps": {"default": {"step_size": 0.5}, "inpaint": {"step_size": 0.7}}})
    assert hparams_at("dps", "ct", 7) == {**hparams("dps", "ct"), "step_size": 0.5}
    assert hparams_at("dps", "inpaint", 7) == {**hparams("dps", "inpaint"), "step_size": 0.7}
    assert hparams_at("dps", "ct", 1000) == hparams("dps", "ct")  # the preset's own budget: the tuned table
    assert hparams_at("dds", "ct", 7) == hparams("dds", "ct")  # no entry for DDS at any other budget
    assert hparams_at("dinv-dps", "ct", 7) == hparams("dinv-dps", "ct")  # 7 is nearer its own 100 than 1000


# The values tuned at each budget as benchmarks/TUNING.md records them, written out by hand.
AT_100 = {"dps": {"step_size": 0.1}, "reddiff": {"lr": 0.1, "lam": 0.25}, "dinv-dps": {"weight": 10.0}}
AT_1000 = {"dps": {"step_size": 0.03}, "reddiff": {"lr": 0.1, "lam": 16.0}, "dinv-dps": {"weight": 30.0}}
# the per-task presets of DPS and RED-Diff, tuned at 1000 calls on their group's task ("DPS and RED-Diff per task at
# 1000 calls"); the other groups run AT_1000
AT_1000_GROUP = {"dps": {"inpaint": {"step_size": 0.1}, "deblur": {"step_size": 1.0}, "mri": {"step_size": 1.0},
                         "sr": {"step_size": 1.0}},
                 "reddiff": {"inpaint": {"lr": 0.1, "lam": 0.25}, "deblur": {"lr": 0.1, "lam": 0.015625},
                             "mri": {"lr": 0.1, "lam": 0.0625}, "sr": {"lr": 0.1, "lam": 0.25}}}


@pytest.mark.parametrize("key", sorted(AT_100))
def test_each_budget_runs_the_values_tuned_at_it(key):
    """DPS and RED-Diff's presets hold their 1000-call values (per task group where one was tuned); the benchmark's
    100-call rows (and the quick run's 20, and the tests' few calls: the nearest tuned budget is 100) keep the values
    tuned at 100 calls, for every group."""
    for group in ("default", "ct", "ct-limited", "mri", "inpaint", "deblur", "sr"):
        for nfe in (1, 20, 100, 300):
            assert hparams_at(key, group, nfe) == AT_100[key], (group, nfe)
        for nfe in (400, 1000, 5000):
            expected = {**AT_1000[key], **AT_1000_GROUP.get(key, {}).get(group, {})}
            assert hparams_at(key, group, nfe) == expected, (group, nfe)
    assert [tuned_budget(key, n) for n in (20, 100, 316, 317, 1000)] == [100, 100, 100, 1000, 1000]
    assert base_nfe(key) == (1000 if key in ("dps", "reddiff") else 100)


@pytest.mark.parametrize("key", sorted(AT_1000_GROUP))
def test_task_presets_at_1000_calls_leave_the_100_call_values(key):
    """A per-task preset of DPS / RED-Diff (tuned at 1000 calls) is what the benchmark's 1000-call rows of that group run,
    while its 100-call rows still run HPARAMS_AT_NFE[100] (tuned at 100 calls) and the other groups the default."""
    for group, values in AT_1000_GROUP[key].items():
        assert hparams_at(key, group, 1000) == values == hparams(key, group)
        assert hparams_at(key, group, 100) == AT_100[key] == HPARAMS_AT_NFE[100][key]["default"]
        assert hparams_at(key, "ct", 1000) == AT_1000[key]
        assert tuned_budget(key, 1000) == base_nfe(key) == 1000


def test_tuned_budget_checks_its_argument():
    for bad in (0, -3, 2.5, True, "100"):
        with pytest.raises(ValueError, match=r"nfe: expected a positive integer number of network calls, got"):
            tuned_budget("dps", bad)


def test_long_section_without_rows_says_so():
    text = "\n".join(long_section([], [], [], 1000))
    assert "## 1000 network calls" in text and "no rows" in text


@pytest.mark.parametrize("extra, message", [
    (["--long-nfe", "-5"], "--long-nfe: expected a number of network calls >= 0 (0 skips the section), got -5"),
    (["--long-nfe", "4"], "--long-nfe: expected a budget other than --nfe (4), got 4"),
    (["--long-nfe", "8", "--long-images", "3"], "--long-images: expected an integer in [1, --images=2], got 3"),
    (["--long-nfe", "8", "--long-images", "0"], "--long-images: expected an integer in [1, --images=2], got 0"),
    (["--long-nfe", "8", "--long-tasks", "ct3d8"], "--long-tasks: expected 2D tasks, got the 3D task(s) ct3d8"),
    (["--long-nfe", "8", "--long-tasks", "deblur"], "--long-tasks: expected tasks that --tasks runs (ct16), got "
                                                    "deblur"),
])
def test_long_options_are_checked_before_anything_runs(tmp_path, capsys, extra, message):
    out = tmp_path / "o"
    assert bench_main(["--tasks", "ct16", "--methods", "fbp", "--nfe", "4", "--images", "2", "--no-exact",
                       "--out", str(out), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # nothing written


def test_long_methods_must_be_known(capsys):
    with pytest.raises(SystemExit) as e:
        bench_main(["--long-methods", "dps", "nope"])
    assert e.value.code == 2 and "--long-methods" in capsys.readouterr().err


def test_long_section_defaults(tmp_path):
    """Default scope: every 2D task that --tasks runs, every image, LONG_NFE; off with --quick or --long-nfe 0."""
    from invdiff.bench.cli import build_parser, long_section as section_of

    args = build_parser().parse_args(["--tasks", "ct8", "ct3d8", "inpaint70"])
    sec = section_of(args, ["ct8", "ct3d8", "inpaint70"], 100, 4)
    assert sec == run.Section(1000, ("ct8", "inpaint70"), ("dps", "reddiff", "dinv-dps"), keep_images=4)
    assert run.LONG_NFE == 1000 and set(run.LONG_METHODS) == {"dps", "reddiff", "dinv-dps"}
    assert section_of(build_parser().parse_args(["--quick"]), ["ct16"], 20, 2) is None
    assert section_of(build_parser().parse_args(["--long-nfe", "0"]), ["ct16"], 100, 4) is None
    assert section_of(build_parser().parse_args(["--long-images", "2"]), ["ct16"], 100, 4).keep_images == 2


def test_run_uses_the_hyperparameters_of_its_budget(monkeypatch):
    """A run at a budget with an HPARAMS_AT_NFE entry uses it (the row's params say so); a budget nearer to 100 than to
    the preset's 1000 runs the 100-call values, as the benchmark's main rows always have."""
    monkeypatch.setitem(HPARAMS_AT_NFE, 3, {"dps": {"default": {"step_size": 0.0123}}})
    prior = load_prior(DEFAULT_PRIOR)
    # on ct16 (group "ct": the default preset, step_size 0.03); inpaint's 1000-call preset is 0.1, the 100-call value
    at3, _, _ = run.run_benchmark(["ct16"], ["dps"], n_images=1, nfe=3, prior=prior, log=lambda m: None)
    monkeypatch.delitem(HPARAMS_AT_NFE, 3)
    at2, _, _ = run.run_benchmark(["ct16"], ["dps"], n_images=1, nfe=2, prior=prior, log=lambda m: None)
    assert at3[0]["params"] == "step_size=0.0123"
    assert at2[0]["params"] == "step_size=0.1" != f"step_size={hparams('dps', 'ct')['step_size']}"


@pytest.mark.slow  # a local Ray cluster: minutes on the shared 2-core machine
def test_sections_on_ray_equal_serial_sections():
    """``run_sections`` with ``jobs=2`` (one Ray task per section and task, the long section queued first) returns
    each section's rows in section and task order, with the numbers of a serial run."""
    from invdiff.distributed.ray_tasks import ray_session

    sections = [run.Section(2, ("ct16", "inpaint70"), ("fbp", "dps")),
                run.Section(3, ("inpaint70", "ct16"), ("fbp",), keep_images=1)]
    with ray_session(workers=2):
        par = run.run_sections(sections, 2, DEFAULT_PRIOR, "cpu", 0, jobs=2, log=lambda s: None)
    # a Ray task runs torch on one thread (run._worker); the serial run must too, or DPS's backward pass
    # sums in another order and differs in the last bits (CI: 13.481496113 against 13.481496117 dB)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ser = run.run_sections(sections, 2, DEFAULT_PRIOR, "cpu", 0, jobs=1, log=lambda s: None)
    finally:
        torch.set_num_threads(threads)

    def numbers(rows):
        return [{k: "nan" if v != v else v for k, v in r.items()
                 if k not in ("seconds_per_image", "cpu_seconds_per_image", "peak_mem_mb")} for r in rows]

    assert len(par) == len(ser) == 2
    for (pr, pp, ps), (sr, sp, ss) in zip(par, ser):
        assert numbers(pr) == numbers(sr) and pp == sp and ps == ss
    assert [(r["task"], r["key"], r["nfe_budget"]) for r in par[0][0]] == [
        (t, m, 2) for t in ("ct16", "inpaint70") for m in ("fbp", "dps")]
    assert [(r["task"], r["nfe_budget"], r["images"]) for r in par[1][0]] == [("inpaint70", 3, 1), ("ct16", 3, 1)]
