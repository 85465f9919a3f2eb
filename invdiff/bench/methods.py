"""Method adapters: every benchmark method behind one call, with the same prior, operator, measurement and budget.

A method is run as ``method.run(prior, op, y, nfe, seed, params) -> Output``. ``prior`` is the one
prior object of the benchmark wrapped in a :class:`~invdiff.bench.counting.CountingDenoiser` (the run counts every
network call made through it, for invdiff's and deepinv's methods alike), ``op`` the task's
operator (its noise level set), ``y`` the measurement batch ``(B, ...)`` and ``nfe`` the budget of
network calls per image. How the budget maps to each method's steps:

========================  ==========================================================================
invdiff DPS               ``steps = nfe``: one network call (and one backward pass) per step
invdiff RED-Diff          ``steps = nfe``: one network call per Adam step, no backward pass
invdiff DDS               ``steps = nfe``: one network call per DDIM step, CG data consistency
invdiff DAPS              ``steps = nfe``: one network call per annealing level, two CG solves
invdiff DiffPIR           ``steps = nfe``: one network call per step, exact data proximal step
invdiff SMC               ``steps = nfe`` batched calls over ``particles`` particles per image, so
                          ``particles * nfe`` per-particle network evaluations per image; with
                          ``equal_evals=True`` ``steps = nfe // particles`` (equal evaluations)
invdiff DiffusionMBIR     ``mode="dds"``: ``steps = nfe`` (one call per step, all slices batched);
                          ``mode="pc"``: ``steps = nfe // 2`` (predictor + corrector); 3D task only
deepinv DPS               ``num_steps = nfe + 1`` (its DDPM solver calls the network ``num_steps - 1``
                          times, never at the final ``t = 0``)
deepinv DiffPIR           ``max_iter = nfe`` (one call per iteration)
deepinv DDRM              ``sigmas = linspace(1, 0, nfe)`` (one call per level); only on a
                          ``DecomposablePhysics`` (inpainting, deblurring, super-resolution)
FBP / zero-filled, TV     no network (the operator's ``A_dagger``; TV by PDHG, 300 iterations)
``KEY-mean8``             the method ``KEY`` (DDS, DiffPIR, deepinv DiffPIR, deepinv DDRM) on 8 copies of
                          each measurement in one batch, scored on the mean of the 8 outputs: the
                          base method's steps, ``8 * nfe`` network evaluations per image
                          (:mod:`invdiff.bench.ensemble`)
========================  ==========================================================================

Hyperparameters come from :data:`HPARAMS` (per method and task group): for invdiff's solvers their presets
(:mod:`invdiff.solvers.presets`), tuned on the tuning images (:func:`invdiff.bench.tasks.tuning_images`,
seed 777002) by :mod:`invdiff.bench.tune`, never on the test images; deepinv's methods were given the
same tuning of their main knob. Each method's :data:`HPARAMS` hold at its own budget (:func:`base_nfe`: the preset's
``steps``, so 1000 calls for DPS and RED-Diff and 100 for the others); :data:`HPARAMS_AT_NFE` holds the values tuned
at other budgets (100 calls: DPS, RED-Diff; 1000 calls: deepinv DPS), and :func:`hparams_at` lays the entry of the
nearest tuned budget (:func:`tuned_budget`) over them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import deepinv as dinv
import numpy as np
import torch
from torch import Tensor

from invdiff.bench.counting import CountingDenoiser  # noqa: F401  (its old home: invdiff.bench.methods)
from invdiff.bench.ensemble import DEFAULT_CHAINS, ensemble_method
from invdiff.solvers import get_solver
from invdiff.solvers.presets import PRESETS


@dataclass
class Output:
    """A method's result on a batch: the estimate ``x`` ``(B, ...)``, posterior ``samples`` ``(S, B, ...)`` if any."""

    x: Tensor
    samples: Tensor | None = None
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Method:
    """A benchmark method.

    Attributes
    ----------
    key : str
        Identifier used by ``--methods`` (``dps``, ``reddiff``, ``smc``, ``dds``, ``mbir``, ``slicewise``,
        ``dinv-dps``, ``dinv-diffpir``, ``dinv-ddrm``, ``fbp``, ``tv``; mean of 8 chains: ``dds-mean8``, ...).
    name : str
        Display name.
    family : str
        ``invdiff``, ``deepinv`` or ``classical``.
    nfe_rule : str
        How the budget of network calls maps to the method's steps.
    runner : callable
        ``(prior, op, y, nfe, seed, params) -> Output``.
    applies : callable
        ``(task, op) -> None`` when the method runs on the task, else the reason it is skipped.
    available : callable
        ``() -> None`` when the method's code imports, else the reason it is not available.
    """

    key: str
    name: str
    family: str
    nfe_rule: str
    runner: Callable
    applies: Callable = lambda task, op: None if not task.volume else "2D method"
    available: Callable = lambda: None

    def run(self, prior, op, y: Tensor, nfe: int, seed: int, params: dict) -> Output:
        return self.runner(prior, op, y, nfe, seed, params)


# ----------------------------------------------------------------------------- hyperparameters
def _from_presets(solver: str, **extra) -> dict[str, dict]:
    """``{task group: knobs}`` of every preset of ``solver`` (invdiff.solvers.presets), without ``steps``."""
    return {task: {**p.knobs(), **extra} for task, p in PRESETS[solver].items()}


# invdiff's solvers: their presets (invdiff.solvers.presets: a "default" tuned on the ct16 tuning images, seed
# 777002, at 100 network calls (DPS and RED-Diff at 1000, their `steps`), and per-task-group entries tuned on that
# group's task; DiffusionMBIR on its 3D
# tuning volume), without the budget `steps`, which the benchmark sets from its NFE. The presets module holds the
# provenance; the grids and scores are in benchmarks/TUNING.md. deepinv's methods stay here: they are
# settings of this benchmark only (no invdiff class reads them); deepinv's were tuned per task group on the same
# tuning images with the same procedure. Groups: ct, ct-limited, mri, inpaint, deblur, sr, ct3d
# (invdiff.bench.tasks.Task.group); a group without an entry of its own runs the "default".
HPARAMS: dict[str, dict[str, dict]] = {
    "dps": _from_presets("dps"),
    "reddiff": _from_presets("reddiff"),
    "dds": _from_presets("dds"),
    "daps": _from_presets("daps"),
    "diffpir": _from_presets("diffpir"),
    # the SMC preset (16 particles, 10 CG iterations to 1e-6: 2.5x faster on CT than 50; benchmarks/CALIBRATION.md)
    "smc": _from_presets("smc"),
    "mbir": _from_presets("mbir"),
    "slicewise": _from_presets("mbir", tv_weight=0.0),
    # tuned like invdiff's (benchmarks/TUNING.md): "default" on the ct16 tuning images, the groups on their task's
    "dinv-dps": {"default": {"weight": 10.0}},
    "dinv-diffpir": {"default": {"lambda_": 1.0, "zeta": 1.0}, "inpaint": {"lambda_": 3.0, "zeta": 1.0},
                     "ct-limited": {"lambda_": 3.0, "zeta": 1.0}},
    "dinv-ddrm": {"default": {"eta": 0.85}},
    "tv": _from_presets("tv"),
}


# Hyperparameters at other budgets: {nfe: {method: {group: changes}}}, laid over hparams(key, group) by hparams_at.
# DPS's zeta and deepinv DPS's weight act once per step and RED-Diff's lr once per Adam step, so a value tuned at one
# budget need not be right at another. A method's own budget is BASE_NFE (the preset's `steps` for invdiff's solvers,
# 100 for deepinv's): there hparams(key, group) holds. Each entry below was tuned at its budget on the ct16 tuning
# images (seed 777002, noise seed 1), benchmarks/TUNING.md ("1000 network calls", "DPS and RED-Diff presets at 1000
# steps"). A budget without an entry uses the nearest tuned budget (tuned_budget).
HPARAMS_AT_NFE: dict[int, dict[str, dict[str, dict]]] = {
    100: {
        # DPS and RED-Diff's presets hold their 1000-call values (1000 is their papers' budget and their `steps`);
        # these are the values tuned at 100 calls, which the benchmark's 100-call rows have always run.
        # step_size 0.01/0.03/0.05/0.1/0.2/0.3 at 100 steps: 0.1 best (22.64 dB on 2 tuning images)
        "dps": {"default": {"step_size": 0.1}},
        # lr 0.02/0.05/0.1/0.3 at lam 0.25; lam 0.05/0.25/1.0 at lr 0.1: lr 0.1, lam 0.25
        "reddiff": {"default": {"lr": 0.1, "lam": 0.25}},
    },
    1000: {
        # weight 1/3/10/30/100: 17.41/20.51/26.07/34.21/31.89 (10 is the 100-call value)
        "dinv-dps": {"default": {"weight": 30.0}},
    },
}

DEEPINV_NFE = 100
"""The budget deepinv's methods were tuned at (their :data:`HPARAMS`)."""


def base_nfe(key: str) -> int:
    """The budget at which :func:`hparams` of method ``key`` was tuned: its preset's ``steps`` (invdiff's solvers),
    else :data:`DEEPINV_NFE`."""
    entries = PRESETS.get("mbir" if key == "slicewise" else key)
    steps = entries["default"].params.get("steps") if entries else None
    return int(steps) if steps is not None else DEEPINV_NFE


def tuned_budget(key: str, nfe: int) -> int:
    """The tuned budget whose hyperparameters method ``key`` runs with at ``nfe`` network calls: the nearest (by ratio,
    the smaller on a tie) of :func:`base_nfe` and the budgets of :data:`HPARAMS_AT_NFE` with an entry for ``key``.

    >>> tuned_budget("dps", 1000), tuned_budget("dps", 100), tuned_budget("dps", 20)  # preset: 1000 steps
    (1000, 100, 100)
    >>> tuned_budget("dds", 1000)  # no entry: the preset's budget
    100
    """
    if isinstance(nfe, bool) or not isinstance(nfe, (int, np.integer)) or nfe < 1:
        raise ValueError(f"nfe: expected a positive integer number of network calls, got {nfe!r}")
    budgets = {base_nfe(key)} | {b for b, table in HPARAMS_AT_NFE.items() if key in table}
    return min(sorted(budgets), key=lambda b: abs(math.log(int(nfe) / b)))


def hparams_at(key: str, group: str, nfe: int) -> dict:
    """The hyperparameters of method ``key`` for task group ``group`` at a budget of ``nfe`` network calls:
    :func:`hparams` with the entry of :data:`HPARAMS_AT_NFE` for :func:`tuned_budget` laid over it (group entry
    over default); at the method's own budget (:func:`base_nfe`) :func:`hparams` itself."""
    budget = tuned_budget(key, nfe)
    table = HPARAMS_AT_NFE.get(budget, {}).get(key, {})
    return {**hparams(key, group), **table.get("default", {}), **table.get(group, {})}


def hparams(key: str, group: str) -> dict:
    """The hyperparameters of method ``key`` for task group ``group`` (group entry over the default).

    For invdiff's solvers this is ``preset(key, group).knobs()`` (:mod:`invdiff.solvers.presets`).
    """
    table = HPARAMS.get(key, {})
    return {**table.get("default", {}), **table.get(group, {})}


# ----------------------------------------------------------------------------- helpers
def _invdiff_run(name: str, steps_of: Callable[[int, dict], dict]):
    """An adapter for the invdiff solver ``name`` (a key of ``invdiff.solvers.SOLVERS``):
    ``cls(prior, **steps_of(nfe, params), **params)``."""

    def run(prior, op, y, nfe, seed, params):
        cls = get_solver(name)
        p = dict(params)
        n_samples = p.pop("n_samples", 1)
        solver = cls(prior, **steps_of(nfe, p), **p)
        r = solver.reconstruct(y, op, n_samples=n_samples, seed=seed, progress=False)
        return Output(x=r.mean, samples=r.samples if n_samples > 1 else None, info={"solver_nfe": r.nfe})

    return run


def _steps(nfe: int, p: dict) -> dict:
    return {"steps": nfe}


def _smc_steps(nfe: int, p: dict) -> dict:
    particles = int(p.get("particles", PRESETS["smc"]["default"].params["particles"]))
    if p.pop("equal_evals", False):
        return {"steps": max(1, nfe // particles)}
    return {"steps": nfe}


def _smc_run(prior, op, y, nfe, seed, params):
    # samples = the particles (K = N): more samples than particles would only repeat particles
    p = {"n_samples": int(params.get("particles", PRESETS["smc"]["default"].params["particles"])), **params}
    return _invdiff_run("smc", _smc_steps)(prior, op, y, nfe, seed, p)


def _fbp_run(prior, op, y, nfe, seed, params):
    with torch.no_grad():
        return Output(x=op.A_dagger(y))


def _tv_run(prior, op, y, nfe, seed, params):
    r = get_solver("tv")(**params).reconstruct(y, op, seed=seed, progress=False)
    return Output(x=r.mean)


def _dinv_dps_run(prior, op, y, nfe, seed, params):
    rng = torch.Generator(device=y.device).manual_seed(int(seed))
    model = dinv.sampling.DPS(prior, num_steps=nfe + 1, rng=rng, device=y.device, **params)
    return Output(x=model(y, op, seed=seed).to(y.dtype))


def _dinv_diffpir_run(prior, op, y, nfe, seed, params):
    p = dict(params)
    init_fbp = p.pop("init_fbp", True)
    model = dinv.sampling.DiffPIR(prior, dinv.optim.data_fidelity.L2(), max_iter=nfe, device=y.device, **p)
    torch.manual_seed(seed)  # DiffPIR draws from the global generator
    with torch.no_grad():
        x_init = op.A_dagger(y) if init_fbp else None
    return Output(x=model(y, op, x_init=x_init).to(y.dtype))


def _dinv_ddrm_run(prior, op, y, nfe, seed, params):
    model = dinv.sampling.DDRM(prior, sigmas=np.linspace(1.0, 0.0, nfe), **params)
    torch.manual_seed(seed)  # DDRM draws from the global generator
    return Output(x=model(y, op).to(y.dtype))


def _decomposable(task, op) -> str | None:
    if task.volume:
        return "2D method"
    if not isinstance(op, dinv.physics.DecomposablePhysics):
        return f"needs a DecomposablePhysics (SVD); {type(op).__name__} is not"
    return None


def _only_3d(task, op) -> str | None:
    return None if task.volume else "3D method"


def _any(task, op) -> str | None:
    return None


def _mbir_run(tv: bool):
    def run(prior, op, y, nfe, seed, params):
        cls = get_solver("mbir")
        p = dict(params)
        if not tv:
            p["tv_weight"] = 0.0
        p.setdefault("mode", "dds")
        steps = nfe // 2 if p["mode"] == "pc" else nfe  # pc: predictor + corrector = 2 calls per step
        r = cls(prior, steps=steps, **p).reconstruct(y, op, seed=seed, progress=False)
        return Output(x=r.mean, info={"solver_nfe": r.nfe})

    return run


METHODS: dict[str, Method] = {m.key: m for m in [
    Method("fbp", "FBP / zero-filled (A_dagger)", "classical", "no network", _fbp_run, applies=_any),
    Method("tv", "TV (PDHG)", "classical", "no network; 300 PDHG iterations", _tv_run, applies=_any),
    Method("dps", "invdiff DPS", "invdiff", "steps = NFE", _invdiff_run("dps", _steps)),
    Method("reddiff", "invdiff RED-Diff", "invdiff", "steps = NFE",
           _invdiff_run("reddiff", _steps)),
    Method("dds", "invdiff DDS", "invdiff", "steps = NFE (volumes: all slices in each call)",
           _invdiff_run("dds", _steps), applies=lambda task, op: None),
    Method("daps", "invdiff DAPS", "invdiff", "steps = NFE (one call per annealing level)",
           _invdiff_run("daps", _steps)),
    Method("diffpir", "invdiff DiffPIR", "invdiff", "steps = NFE (one call per step)",
           _invdiff_run("diffpir", _steps)),
    Method("smc", "invdiff SMC", "invdiff", "steps = NFE batched calls x particles", _smc_run),
    Method("mbir", "invdiff DiffusionMBIR", "invdiff", "mode dds: steps = NFE (all slices in each call)",
           _mbir_run(tv=True), applies=_only_3d),
    Method("slicewise", "invdiff slice-wise (MBIR, tv_weight=0)", "invdiff",
           "mode dds: steps = NFE (all slices in each call)",
           _mbir_run(tv=False), applies=_only_3d),
    Method("dinv-dps", "deepinv DPS", "deepinv", "num_steps = NFE + 1", _dinv_dps_run),
    Method("dinv-diffpir", "deepinv DiffPIR", "deepinv", "max_iter = NFE", _dinv_diffpir_run),
    Method("dinv-ddrm", "deepinv DDRM", "deepinv", "len(sigmas) = NFE", _dinv_ddrm_run, applies=_decomposable),
]}

# The single-chain methods: what `invdiff bench` runs by default (the mean-of-K rows below are asked for by key).
DEFAULT_METHODS = tuple(METHODS)

# Mean of K chains run as one batch (invdiff.bench.ensemble): K images per measurement through the network in each of
# the NFE calls, scored on their mean; the same wrapper for invdiff's methods and deepinv's, so that both sides can be
# compared at equal calls and equal network evaluations (K x NFE per image). Keys: "dds-mean8", "dinv-diffpir-mean8",
# ... Their hyperparameters are the base method's, with the changes of ENSEMBLE_HPARAMS (tuned for the mean of K on
# the tuning images, benchmarks/TUNING.md, "Mean of 8 chains").
ENSEMBLE_BASES = ("dds", "diffpir", "dinv-diffpir", "dinv-ddrm")
ENSEMBLE_HPARAMS: dict[str, dict[str, dict]] = {
    # on 2 tuning images (noise seed 1), mean of 8: deblur tail 0.2 26.86 against the preset's tail 0.6 25.60;
    # inpaint tail 0.2 without the early stop 23.74 against tail 0.6, sigma_min 0.02 23.14 (the tail averaging and
    # early stop that pulled one chain towards the mean cost once 8 chains are averaged). The inpaint entry states the
    # setting that was scored: its "sigma_min": None of then was filled with the preset's 0.02 (None means "the
    # preset's"), so the early stop stayed; and it switches off the single-chain preset's later held tail, eta 0.7
    # and Pi-GDM correction.
    "dds-mean8": {"deblur": {"tail_average": 0.2},
                  "inpaint": {"tail_average": 0.2, "sigma_min": 0.02, "sigma_hold": 0, "eta": 0.85,
                              "pigdm": 0}},
}


def _add_ensembles(bases: tuple[str, ...], k: int) -> None:
    """Register the mean-of-``k`` method of each of ``bases`` in :data:`METHODS` and its hyperparameters in
    :data:`HPARAMS` (the base's, per group, with the changes of :data:`ENSEMBLE_HPARAMS`)."""
    for base in bases:
        m = ensemble_method(METHODS[base], k)
        METHODS[m.key] = m
        changes = ENSEMBLE_HPARAMS.get(m.key, {})
        HPARAMS[m.key] = {g: {**HPARAMS[base].get(g, {}), **changes.get(g, {})}
                          for g in dict.fromkeys([*HPARAMS[base], *changes])}


_add_ensembles(ENSEMBLE_BASES, DEFAULT_CHAINS)

QUICK_METHODS = ("fbp", "dds", "reddiff", "dps", "dinv-diffpir")


def get_method(key: str) -> Method:
    """The method called ``key`` (a key of :data:`METHODS`)."""
    if key not in METHODS:
        raise ValueError(f"method: unknown method {key!r}; expected one of {list(METHODS)}")
    return METHODS[key]
