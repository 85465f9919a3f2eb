"""Solver presets (invdiff.solvers.presets): the class defaults are the tuned settings of benchmarks/TUNING.md,
explicit arguments win, the benchmark reads the same presets, and the sigma defaults live in one place."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import deepinv as dinv
import pytest
import torch

from invdiff import priors, solvers
from invdiff.bench.methods import HPARAMS, hparams
from invdiff.bench.tasks import TASKS, measure, test_images
from invdiff.priors import GaussianPrior
from invdiff.solvers import presets
from invdiff.solvers.presets import PAPER, PRESETS, SIGMA_MAX, SIGMA_MIN, preset
from invdiff.solvers.schedules import karras_sigmas

ROOT = Path(__file__).resolve().parents[1]

# The tuned values as benchmarks/TUNING.md records them, written out by hand: the
# class defaults must equal these, not merely whatever the presets module holds.
RECORDED = {
    "dds": {"steps": 100, "schedule": "karras", "eta": 0.85, "lambda_": 1.0, "cg_iters": 20, "tail_average": 0.2,
            "sigma_max": 1.0},
    "dps": {"steps": 1000, "step_size": 0.03},  # tuned at 1000 steps (0.1 at 100: HPARAMS_AT_NFE[100])
    "reddiff": {"steps": 1000, "lr": 0.1, "lam": 16.0},  # tuned at 1000 steps (lam 0.25 at 100)
    "mbir": {"mode": "dds", "tv_weight": 0.8, "rho": 10.0, "gamma": math.inf, "cg_iters": 5, "eta": 0.85},
    "tv": {"weight": 0.0005},
    "smc": {"particles": 16, "steps": 100, "proposal": "gaussian", "ess_threshold": 0.5, "prior_std": "auto",
            "cg_iters": 10, "cg_tol": 1e-6},
}
# The per-task DDS presets of benchmarks/TUNING.md ("Per-task tuning"), written out by hand.
RECORDED_TASKS = {
    "ct-limited": {"steps": 100, "schedule": "karras", "eta": 0.85, "lambda_": 1.0, "cg_iters": 20, "tail_average": 0.2,
                   "clip_x0": True, "sigma_max": 1.0},
    "mri": {"steps": 100, "schedule": "karras", "eta": 0.85, "lambda_": 1.0, "cg_iters": 20, "tail_average": 0.2,
            "sigma_max": 0.5},
    "inpaint": {"steps": 100, "schedule": "karras", "eta": 0.7, "lambda_": 1.0, "cg_iters": 20, "tail_average": 0.7,
                "sigma_hold": 0.25, "sigma_max": 10.0, "pigdm": 1.0, "pigdm_below": 0.3},
    "deblur": {"steps": 100, "schedule": "karras", "eta": 0.7, "lambda_": 1.0, "cg_iters": 20, "tail_average": 0.7,
               "clip_x0": True, "sigma_max": 1.0, "sigma_hold": 0.15, "tail_estimate": "x0_hat"},
}

# The per-task DPS and RED-Diff presets (1000 steps) of benchmarks/TUNING.md ("DPS and RED-Diff per task at 1000
# calls"), written out by hand.
RECORDED_TASKS_1000 = {
    ("dps", "inpaint"): {"steps": 1000, "step_size": 0.1},
    ("reddiff", "inpaint"): {"steps": 1000, "lr": 0.1, "lam": 0.25},
    ("dps", "deblur"): {"steps": 1000, "step_size": 1.0},
    ("reddiff", "deblur"): {"steps": 1000, "lr": 0.1, "lam": 0.015625},
    # "DPS and RED-Diff at 1000 calls on MRI"
    ("dps", "mri"): {"steps": 1000, "step_size": 1.0},
    ("reddiff", "mri"): {"steps": 1000, "lr": 0.1, "lam": 0.0625},
    # "DPS and RED-Diff at 1000 calls on sr4 and ct-limited90" (ct-limited90: the defaults won, no entry)
    ("dps", "sr"): {"steps": 1000, "step_size": 1.0},
    ("reddiff", "sr"): {"steps": 1000, "lr": 0.1, "lam": 0.25},
}


@pytest.fixture(scope="module")
def ct16():
    """Two of the ct16 benchmark's held-out test images, its operator and measurement, the shipped prior."""
    op = TASKS["ct16"].operator()
    x = test_images(2)
    return priors.load("phantom-ct-64"), op, x, measure(op, x, seed=0)


def gauss_problem(size=8, noise_std=0.05):
    prior = GaussianPrior(torch.full((1, size, size), 0.3), 0.3)
    op = dinv.physics.Inpainting(img_size=(1, size, size), mask=0.5, rng=torch.Generator().manual_seed(0),
                                 noise_model=dinv.physics.GaussianNoise(sigma=noise_std))
    x = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(1))
    return prior, op, op.A(x)


def test_dds_defaults_are_the_tuned_setting_on_ct16(ct16):
    """DDS(prior) is DDS with the tuned values of benchmarks/TUNING.md (same result, bit for bit), and differs
    from the paper's setting; 4 steps instead of 100 to stay fast."""
    prior, op, x, y = ct16
    tuned = {**RECORDED["dds"], "steps": 4}
    a = solvers.DDS(prior, steps=4).reconstruct(y, op, seed=0, progress=False)
    b = solvers.DDS(prior, **tuned).reconstruct(y, op, seed=0, progress=False)
    assert torch.equal(a.mean, b.mean) and a.nfe == b.nfe == 4
    c = solvers.DDS(prior, steps=4, **hparams("dds", "ct")).reconstruct(y, op, seed=0, progress=False)
    assert torch.equal(a.mean, c.mean)  # the benchmark runs the same setting
    paper = solvers.DDS(prior, **{**PAPER["dds"], "steps": 4}).reconstruct(y, op, seed=0, progress=False)
    assert not torch.allclose(a.mean, paper.mean)


@pytest.mark.parametrize("key", sorted(RECORDED))
def test_class_defaults_are_the_recorded_tuned_values(key):
    prior, _, _ = gauss_problem()
    cls = solvers.get_solver(key)
    s = cls(prior).settings() if cls.needs_prior else cls().settings()
    expected = dict(RECORDED[key])
    if key == "dds":  # tail_average is held as a step count: 20 % of the preset's 100 steps
        expected["tail_average"] = round(expected["tail_average"] * s["steps"])
    assert {k: s[k] for k in expected} == expected
    assert preset(key).knobs() == {k: v for k, v in RECORDED[key].items() if k != "steps"}


def _knobs(key):
    return {k: v for k, v in RECORDED[key].items() if k != "steps"}


@pytest.mark.parametrize("make", [
    lambda p: (solvers.DPS(p, steps=5), solvers.DPS(p, steps=5, **_knobs("dps")),
               solvers.DPS(p, steps=5, step_size=0.1)),
    lambda p: (solvers.REDDiff(p, steps=5), solvers.REDDiff(p, steps=5, **_knobs("reddiff")),
               solvers.REDDiff(p, steps=5, lr=0.1, lam=0.25)),
    lambda p: (solvers.TV(iters=20), solvers.TV(weight=0.0005, iters=20), solvers.TV(weight=0.01, iters=20)),
], ids=["dps", "reddiff", "tv"])
def test_default_run_equals_the_tuned_run(make):
    """The class with no arguments runs the recorded tuned values, bit for bit; another setting (DPS and RED-Diff: the
    values tuned at 100 steps, their earlier defaults) gives another result, so the comparison can fail."""
    prior, op, y = gauss_problem()
    a, b, other = make(prior)
    ra = a.reconstruct(y, op, seed=2, progress=False).mean
    assert torch.equal(ra, b.reconstruct(y, op, seed=2, progress=False).mean)
    assert not torch.allclose(ra, other.reconstruct(y, op, seed=2, progress=False).mean)


@pytest.mark.parametrize("key", ["dps", "reddiff"])
def test_benchmark_at_the_preset_budget_runs_the_class_default(ct16, key):
    """The benchmark's DPS and RED-Diff at the presets' budget (1000 calls) run what the class runs with no arguments:
    the adapter with hparams_at(key, "ct", 1000) equals cls(prior) bit for bit (the budget cut to 4 steps to stay
    fast); at 100 calls the adapter gets the values tuned at 100 calls, a different setting."""
    from invdiff.bench.methods import METHODS, hparams_at

    prior, op, x, y = ct16
    cls = solvers.get_solver(key)
    assert hparams_at(key, "ct", 1000) == _knobs(key) == {k: v for k, v in cls(prior).settings().items()
                                                          if k in _knobs(key)}
    assert cls(prior).settings()["steps"] == 1000
    a = cls(prior, steps=4).reconstruct(y, op, seed=0, progress=False).mean
    b = METHODS[key].run(prior, op, y, 4, 0, hparams_at(key, "ct", 1000)).x
    c = METHODS[key].run(prior, op, y, 4, 0, hparams_at(key, "ct", 100)).x
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_exact_coverage_keeps_the_100_call_dps_step():
    """exact_coverage's DPS rows run step_size 0.1 at 1000 steps, as its table was measured (not the new preset)."""
    from invdiff.bench.exact_coverage import _rows

    labels = [row[0] for row in _rows(True)]
    assert "DPS, 32 independent runs ({'step_size': 0.1})" in labels


def test_explicit_arguments_win():
    prior, _, _ = gauss_problem()
    s = solvers.DDS(prior, steps=10, cg_iters=5, eta=0.5, schedule="vp", tail_average=1).settings()
    assert (s["steps"], s["cg_iters"], s["eta"], s["schedule"], s["tail_average"], s["lambda_"]) == (
        10, 5, 0.5, "vp", 1, 1.0)
    # gamma without lambda_ chooses the constant data weight: the preset's lambda_ is dropped
    s = solvers.DDS(prior, gamma=2.0).settings()
    assert s["gamma"] == 2.0 and s["lambda_"] is None and s["schedule"] == "karras"
    assert solvers.DDS(prior, gamma=2.0, lambda_=3.0).settings()["lambda_"] == 3.0
    assert solvers.DPS(prior, step_size=0.7).settings()["step_size"] == 0.7
    assert solvers.TV(weight=0.0).settings()["weight"] == 0.0  # zero is a value, not "unset"
    # DiffusionMBIR: mode="pc" given, the paper's settings fill in (not the dds-mode preset)
    s = solvers.DiffusionMBIR(prior, mode="pc").settings()
    assert {k: s[k] for k in ("steps", "tv_weight", "rho", "cg_iters")} == {"steps": 200, "tv_weight": 0.04,
                                                                             "rho": 10.0, "cg_iters": 1}
    assert solvers.DiffusionMBIR(prior, mode="pc", tv_weight=0.5, cg_iters=3).settings()["tv_weight"] == 0.5


@pytest.mark.parametrize("key", ["dds", "dps", "reddiff", "mbir", "tv"])
def test_settings_round_trip(key):
    """settings() names every constructor argument with a value the constructor takes back unchanged."""
    prior, _, _ = gauss_problem()
    cls = solvers.get_solver(key)
    solver = cls(prior) if cls.needs_prior else cls()
    s = solver.settings()
    again = cls(prior, **s) if cls.needs_prior else cls(**s)
    assert again.settings() == s


def test_benchmark_reads_the_presets():
    for key in ("dds", "daps", "dps", "reddiff", "mbir", "tv"):
        assert HPARAMS[key] == {task: p.knobs() for task, p in PRESETS[key].items()}
        for group in presets.TASKS:
            assert hparams(key, group) == preset(key, group).knobs()
            if group not in PRESETS[key]:  # not tuned on this group: the default
                assert preset(key, group) is preset(key)
    assert HPARAMS["slicewise"]["default"] == {**preset("mbir").knobs(), "tv_weight": 0.0}
    assert "steps" not in hparams("dds", "ct")  # the benchmark sets steps from its NFE
    # every benchmark task's group is a preset task group, and the limited-angle task has its own
    assert {t.group for t in TASKS.values()} <= set(presets.TASKS)
    assert TASKS["ct-limited90"].group == "ct-limited" and TASKS["ct16"].group == "ct"


@pytest.mark.parametrize("task", sorted(RECORDED_TASKS))
def test_task_presets_are_the_recorded_tuned_values(task):
    """DDS(prior, task=...) runs the per-task values of benchmarks/TUNING.md (written out by hand above), bit for
    bit, the benchmark runs the same, and they differ from the default's."""
    expected = RECORDED_TASKS[task]
    assert dict(preset("dds", task).params) == expected
    prior, op, y = gauss_problem()
    short = {**expected, "steps": 6}
    a = solvers.DDS(prior, steps=6, task=task)
    assert a.task == task and a.settings()["task"] == task
    ra = a.reconstruct(y, op, seed=0, progress=False).mean
    rb = solvers.DDS(prior, **short).reconstruct(y, op, seed=0, progress=False).mean
    rc = solvers.DDS(prior, steps=6, **hparams("dds", task)).reconstruct(y, op, seed=0, progress=False).mean
    assert torch.equal(ra, rb) and torch.equal(ra, rc)
    # a setting of its own: some tuned knob differs from the default's
    default = solvers.DDS(prior, steps=6).settings()
    assert {k for k in expected if k != "steps" and a.settings()[k] != default[k]}
    # explicit arguments still win over the task's preset
    assert solvers.DDS(prior, task=task, eta=0.3).settings()["eta"] == 0.3


@pytest.mark.parametrize("key", ["dps", "reddiff"])
def test_dps_and_reddiff_take_a_task_as_dds_does(key):
    """DPS(prior, task=...) and REDDiff(prior, task=...) fill the arguments left at None from preset(key, task), show
    the task in settings(), let explicit arguments win, fall back to the default on a group without an entry of its
    own, and reject a bad task with DDS's messages (they go through the same preset lookup)."""
    prior, _, _ = gauss_problem()
    cls = solvers.get_solver(key)
    knob = {"dps": "step_size", "reddiff": "lam"}[key]
    for task in presets.TASKS:
        s = cls(prior, task=task).settings()
        assert s["task"] == task and cls(prior, task=task).task == task
        assert {k: s[k] for k in preset(key, task).params} == dict(preset(key, task).params), task
        if task not in PRESETS[key]:  # no entry of its own: the default's values
            assert {k: v for k, v in s.items() if k != "task"} == {k: v for k, v in cls(prior).settings().items()
                                                                   if k != "task"}
        assert cls(prior, task=task, **{knob: 0.37}).settings()[knob] == 0.37  # explicit arguments win
    assert cls(prior).settings()["task"] == "default"
    with pytest.raises(TypeError, match=r"task: expected a string .* got int"):
        cls(prior, task=16)
    with pytest.raises(ValueError, match=r"task: unknown task group 'inpainting'.*'inpaint'"):
        cls(prior, task="inpainting")
    with pytest.raises(ValueError, match=r"task: unknown task group 'ct16'"):
        cls(prior, task="ct16")


@pytest.mark.parametrize("key, task", sorted(RECORDED_TASKS_1000))
def test_dps_reddiff_task_presets_are_the_recorded_tuned_values(key, task):
    """cls(prior, task=...) runs the per-task values tuned at 1000 calls (written out by hand above), bit for bit, the
    benchmark's 1000-call run of the group runs the same, and the default's values give another result (5 steps)."""
    from invdiff.bench.methods import METHODS, hparams_at

    expected = RECORDED_TASKS_1000[(key, task)]
    assert dict(preset(key, task).params) == expected
    assert set(PRESETS[key]) == {"default"} | {t for k, t in RECORDED_TASKS_1000 if k == key}  # no unrecorded entry
    prior, op, y = gauss_problem()
    cls = solvers.get_solver(key)
    a = cls(prior, steps=5, task=task)
    assert a.task == task and a.settings()["task"] == task
    knobs = {k: v for k, v in expected.items() if k != "steps"}
    ra = a.reconstruct(y, op, seed=0, progress=False).mean
    rb = cls(prior, steps=5, **knobs).reconstruct(y, op, seed=0, progress=False).mean
    rc = METHODS[key].run(prior, op, y, 5, 0, hparams_at(key, task, 1000)).x
    assert torch.equal(ra, rb) and torch.equal(ra, rc)
    rd = cls(prior, steps=5).reconstruct(y, op, seed=0, progress=False).mean
    assert knobs != _knobs(key) and not torch.allclose(ra, rd)


def test_every_preset_states_its_provenance():
    for key, entries in PRESETS.items():
        assert "default" in entries
        for task, p in entries.items():
            assert (p.solver, p.task) == (key, task)
            for text in (p.tuned_on, p.grid, p.measured):
                assert isinstance(text, str) and len(text) > 10
            for path in p.record.split(", "):
                assert (ROOT / path).is_file(), path
            assert p.tuned_on in p.provenance and p.record in p.provenance
            names = inspect.signature(solvers.get_solver(key).__init__).parameters
            assert set(p.params) <= set(names), (key, set(p.params) - set(names))
        with pytest.raises(TypeError):
            entries["default"].params["steps"] = 1  # read-only


def test_preset_lookup_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"solver: no preset for 'afdps'"):
        preset("afdps")
    with pytest.raises(TypeError, match="task"):
        preset("dds", task=16)
    with pytest.raises(ValueError, match=r"task: unknown task group 'inpainting'.*'inpaint'"):
        preset("dds", task="inpainting")
    with pytest.raises(ValueError, match=r"task: unknown task group 'ct16'"):
        solvers.DDS(GaussianPrior(torch.zeros(1, 4, 4), 1.0), task="ct16")


class _NoRange(torch.nn.Module):
    """A denoiser that states no noise range (no sigma_min / sigma_max attributes)."""

    def forward(self, x, sigma):
        s = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, *[1] * (x.ndim - 1))
        return x / (1 + s**2)


def test_sigma_defaults_live_in_one_place():
    """A prior without a noise range gets presets.SIGMA_MIN / SIGMA_MAX in every solver and schedule."""
    assert (SIGMA_MIN, SIGMA_MAX) == (0.002, 80.0)
    sig = karras_sigmas(5)
    assert math.isclose(float(sig[0]), SIGMA_MAX) and math.isclose(float(sig[-2]), SIGMA_MIN)
    D = _NoRange()
    mbir = solvers.DiffusionMBIR(D)
    assert (mbir.sigma_min, mbir.sigma_max) == (SIGMA_MIN, SIGMA_MAX)  # was 0.01 in mbir3d.py
    smc = solvers.SMC(D, particles=2, steps=3)
    assert (smc.sigma_min, smc.sigma_max) == (SIGMA_MIN, SIGMA_MAX)
    op = dinv.physics.Inpainting(img_size=(1, 8, 8), mask=0.5, rng=torch.Generator().manual_seed(0),
                                 noise_model=dinv.physics.GaussianNoise(sigma=0.05))
    levels = []
    solvers.DDS(D, steps=4).reconstruct(op.A(torch.rand(1, 1, 8, 8)), op, progress=False,
                                        callback=lambda d: levels.append(d["sigma"]))
    # DDS's presets set its first level (sigma_max, tuned); the last is the prior's range's, here SIGMA_MIN
    assert math.isclose(levels[0], preset("dds").params["sigma_max"]) and math.isclose(levels[-1], SIGMA_MIN)
    levels.clear()
    solvers.DDS(D, steps=4, schedule="vp").reconstruct(op.A(torch.rand(1, 1, 8, 8)), op, progress=False,
                                                       callback=lambda d: levels.append(d["sigma"]))
    assert math.isclose(levels[0], preset("dds").params["sigma_max"], rel_tol=1e-6)  # the vp chain, capped there
    assert presets.fill({"a": None, "b": 2}, {"a": 1, "b": 3, "c": 4}) == {"a": 1, "b": 2, "c": 4}


def test_smc_defaults_are_its_preset(ct16):
    """SMC(prior) is SMC(prior, **preset("smc").params) (same ensemble, bit for bit), the benchmark runs the same knobs
    and draws one sample per particle, and an explicit argument still wins; 3 steps instead of 100 to stay fast."""
    prior, op, x, y = ct16
    p = dict(preset("smc").params)
    assert p == RECORDED["smc"]
    a = solvers.SMC(prior, steps=3)
    b = solvers.SMC(prior, **{**p, "steps": 3})
    assert a.settings() == b.settings() and solvers.SMC(prior).settings()["steps"] == 100
    ra = a.reconstruct(y[:1], op, seed=0, progress=False)
    rb = b.reconstruct(y[:1], op, seed=0, progress=False)
    assert torch.equal(ra.info["particles"], rb.info["particles"]) and ra.info["particles"].shape[1] == 16
    assert hparams("smc", "ct") == {k: v for k, v in p.items() if k != "steps"}
    s = solvers.SMC(prior, particles=4, cg_iters=3, ess_threshold=1.0).settings()
    assert (s["particles"], s["cg_iters"], s["ess_threshold"], s["cg_tol"]) == (4, 3, 1.0, 1e-6)
    # a different setting gives a different ensemble: the comparison above can fail
    rc = solvers.SMC(prior, **{**p, "steps": 3, "cg_iters": 2}).reconstruct(y[:1], op, seed=0, progress=False)
    assert not torch.equal(ra.info["particles"], rc.info["particles"])


def test_benchmark_smc_draws_one_sample_per_particle():
    """The benchmark's SMC returns as many samples as particles (distinct particles, not repeats of 8 as before)."""
    from invdiff.bench.methods import METHODS

    prior, op, y = gauss_problem()
    out = METHODS["smc"].run(prior, op, y, 3, 0, {**hparams("smc", "ct"), "particles": 6})
    assert out.samples.shape[0] == 6
