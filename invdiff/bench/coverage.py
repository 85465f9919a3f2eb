r"""Coverage of the truth by each sampler's per-pixel intervals on in-distribution CT and MRI.

``python -m invdiff.bench.coverage [--tasks ct16 mri4-random] [--images 4] [--methods SPEC ...] [--out FILE]``

Test images are drawn from the generator the shipped prior ``phantom-ct-64`` was trained on
(:func:`invdiff.data.ellipses`, the training family of ``data_scripts/train_prior.py``) with the held-out
seed of the benchmark, ``ellipses(n, 64, seed=777001)`` (:func:`invdiff.bench.tasks.test_images` with
``shepp=False``: no Shepp-Logan, which the prior never saw). Operators and noise are the benchmark's
(:mod:`invdiff.bench.tasks`; measurement noise seed ``--noise-seed``).

Coverage
--------
A sampler returns ``K`` samples per image. For every pixel its central interval at level ``p`` is
``[q_{(1-p)/2}, q_{(1+p)/2}]`` of the ``K`` values (``torch.quantile``'s linear interpolation, ends included,
as :func:`invdiff.metrics.coverage` and the benchmark's coverage column). The coverage is the fraction of
pixels whose true value lies inside, averaged over images (``± s.e.`` over images).

Reference: exact samples of the same count
------------------------------------------
If the ``K`` samples were exact posterior samples, the truth would be one more draw from the same
(continuous) posterior, so the ``K + 1`` values are exchangeable and the number ``R`` of samples below the
truth is uniform on ``{0, ..., K}``. With order statistics ``X_(1) <= ... <= X_(K)``:

* for integer ranks ``j < k``, ``P(X_(j) <= truth <= X_(k)) = P(j <= R <= k - 1) = (k - j) / (K + 1)``;
* the interpolated quantile ``q`` sits at the fractional rank ``r = 1 + q (K - 1) = a + f`` (``a`` integer,
  ``0 <= f < 1``), ``L = X_(a) + f (X_(a+1) - X_(a))``. ``truth < L`` when ``R < a``, probability
  ``a / (K + 1)``, or when ``R = a`` and the truth's relative place ``U = (truth - X_(a)) / (X_(a+1) - X_(a))``
  in its gap is below ``f``. For a uniform parent ``U`` is uniform (the spacings are exchangeable), so
  ``P(truth < L) = (a + f) / (K + 1) = r / (K + 1)``, and the central interval holds the truth with probability

      c_K(p) = (r_hi - r_lo) / (K + 1) = p (K - 1) / (K + 1)

  (:func:`reference_coverage`: 0.794 at ``K = 16``, 0.872 at 64, 0.9 as ``K -> inf``). It is exact whatever the
  posterior when both ranks are integers (e.g. ``K = 21``, ``p = 0.9``: ranks 2 and 20, 18 / 22); otherwise it
  is exact for a uniform posterior and off by less than ``2 / (K + 1)`` for any other (only the two partial
  gaps are in doubt), and by much less when the density varies little over a gap.

The phantoms have atoms: pixels outside the body are exactly 0 and values are clipped to [0, 1]. Where the
posterior puts an atom on the truth, exact samples would tie with it and cover it (ends included) more often
than ``c_K``, while a diffusion sampler's continuous samples cover it only if they straddle it. The table
therefore also gives the coverage over the pixels whose truth lies strictly inside (0, 1).

Samplers (``--methods`` specs ``name:key=value,...``): ``afdps`` (:class:`invdiff.solvers.AFDPS`, the paper's particle
tilt, ``K = particles`` samples), ``smc`` (:class:`invdiff.solvers.SMC`, ``K = particles``
samples, one batched network call per step for all particles; ``moves=calibrated`` is ``SMC(prior,
moves="calibrated")``, 32 particles unless ``particles`` is given; ``moves=n`` and ``move_step``, ``move_jacobian``,
``move_max_sigma``, ``move_always`` add the Langevin rejuvenation of :mod:`invdiff.solvers.smc_moves`), ``dps`` and ``dds`` (``n_samples`` independent
runs, batched through the prior) and ``mbir`` (:class:`invdiff.solvers.DiffusionMBIR`, ``n_samples`` independent
runs, 100 steps unless ``steps`` is given). DiffusionMBIR needs a volume (TV along z): on a volume task
(``--tasks ct3d8``) each "image" is one held-out ellipsoid slab (:func:`invdiff.bench.tasks.test_volumes`) and
coverage counts its voxels; ``dds`` and ``dps`` run there slice by slice, ``smc`` and ``afdps`` (2D samplers) are skipped, and on
the 2D tasks ``mbir`` is. Seconds are wall time per image on whatever else shares the machine.
"""

from __future__ import annotations

import argparse
import ast
import math
import sys
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from invdiff.bench.counting import CountingDenoiser
from invdiff.bench.machine import DEFAULT_PRIOR, load_prior
from invdiff.bench.report import emit_markdown
from invdiff.bench.tasks import get_task, measure, test_images, test_volumes, tuning_images
from invdiff.metrics import central_intervals, psnr

__all__ = ["LEVELS", "reference_coverage", "interval_coverage", "Spec", "parse_spec", "run", "table", "main"]

LEVELS = (0.5, 0.9, 0.95)
TASKS = ("ct16", "mri4-random")
# "dds:...,tail_average=1": DDS without the tail average, the near-calibrated ensemble of benchmarks/CALIBRATION.md
DEFAULT_METHODS = ("smc:particles=8", "smc", "smc:particles=32", "dds:n_samples=16",
                   "dds:n_samples=16,tail_average=1", "dps:n_samples=8")
SMC_DEFAULTS: dict = {}  # an "smc" spec runs the class defaults, the preset (invdiff.solvers.presets, "smc")
# samplers run as n_samples independent chains: spec name -> class name in invdiff.solvers
INDEPENDENT = {"dps": "DPS", "dds": "DDS", "diffpir": "DiffPIR", "daps": "DAPS", "mbir": "DiffusionMBIR"}
# ensemble samplers whose K samples are their particles: spec name -> class name in invdiff.solvers
ENSEMBLES = {"smc": "SMC", "afdps": "AFDPS"}
METHOD_NAMES = (*ENSEMBLES, *INDEPENDENT)


def reference_coverage(K: int, level: float) -> float:
    r"""Expected coverage of the central ``level`` interval of ``K`` exact posterior samples: ``p (K - 1) / (K + 1)``.

    The truth is one more exchangeable draw; the interpolated quantiles sit at ranks ``1 + q (K - 1)`` and the
    truth's rank is uniform over the ``K + 1`` gaps (module docstring). Exact for integer ranks, or a uniform
    posterior.

    >>> round(reference_coverage(16, 0.9), 4), reference_coverage(21, 0.9) == 18 / 22
    (0.7941, True)
    """
    if isinstance(K, bool) or not isinstance(K, int) or K < 2:
        raise ValueError(f"K: expected an integer number of samples >= 2, got {K!r}")
    if not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValueError(f"level: expected a number in (0, 1), got {level!r}")
    return level * (K - 1) / (K + 1)


def interval_coverage(samples: Tensor, truth: Tensor, levels=LEVELS, mask: Tensor | None = None) -> Tensor:
    """Per image and level, the fraction of pixels whose truth lies in the samples' central interval.

    Parameters
    ----------
    samples : Tensor
        ``(K, B, C, H, W)`` (``Reconstruction.samples``), ``K >= 2``.
    truth : Tensor
        ``(B, C, H, W)``.
    levels : sequence of float
        Levels in (0, 1).
    mask : Tensor, optional
        Boolean ``(B, C, H, W)``: count only these pixels (an image with none gives NaN).

    Returns
    -------
    Tensor
        ``(B, len(levels))`` float64; the same numbers as :func:`invdiff.metrics.coverage` per image.
    """
    if not torch.is_tensor(samples) or samples.ndim < 3 or samples.shape[0] < 2:
        raise ValueError(f"samples: expected (K, B, ...) with K >= 2, got "
                         f"{tuple(samples.shape) if torch.is_tensor(samples) else type(samples).__name__}")
    if not torch.is_tensor(truth) or tuple(truth.shape) != tuple(samples.shape[1:]):
        raise ValueError(f"truth: expected shape {tuple(samples.shape[1:])} (samples.shape[1:]), got "
                         f"{tuple(truth.shape) if torch.is_tensor(truth) else type(truth).__name__}")
    if mask is not None and (not torch.is_tensor(mask) or tuple(mask.shape) != tuple(truth.shape)):
        raise ValueError(f"mask: expected a boolean tensor of shape {tuple(truth.shape)}")
    K, B = samples.shape[:2]
    lower, upper = central_intervals(samples.reshape(K, B, -1), levels)  # (L, B, pixels)
    t = truth.detach().reshape(B, -1).to(torch.float64)
    inside = (t >= lower) & (t <= upper)
    if mask is None:
        return inside.double().mean(-1).T
    keep = mask.reshape(B, -1).bool()
    return ((inside & keep).sum(-1).double() / keep.sum(-1)).T  # 0 / 0: NaN for an image with no pixel kept


@dataclass
class Spec:
    """One sampler configuration: ``name`` (``smc``, ``dps``, ``dds``, ``diffpir``, ``daps``, ``mbir``) and keyword
    arguments.

    ``n_samples`` (DPS, DDS, DiffPIR, DAPS, DiffusionMBIR) is the number of independent runs ``K``; SMC returns ``K = particles`` samples.
    """

    name: str
    kw: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.name + ("" if not self.kw else " " + ", ".join(f"{k}={v}" for k, v in self.kw.items()))


def parse_spec(text: str) -> Spec:
    """``"smc:particles=16,steps=100"`` -> ``Spec("smc", {"particles": 16, "steps": 100})``."""
    name, _, rest = text.partition(":")
    if name not in METHOD_NAMES:
        raise ValueError(f"methods: unknown sampler {name!r} in {text!r}; expected one of {METHOD_NAMES}")
    kw = {}
    for item in filter(None, rest.split(",")):
        key, eq, val = item.partition("=")
        if not eq or not key.isidentifier():
            raise ValueError(f"methods: expected key=value in {text!r}, got {item!r}")
        try:
            kw[key] = ast.literal_eval(val)
        except (ValueError, SyntaxError):
            kw[key] = val  # a bare word, e.g. proposal=gaussian
    return Spec(name, kw)


def build_smc(prior, kw: dict):
    """:class:`invdiff.solvers.SMC` from a spec's keywords: ``moves=n`` and ``move_*`` (``move_step=0.3`` ->
    ``step=0.3``) add the Langevin rejuvenation of :mod:`invdiff.solvers.smc_moves`, ``temper_*`` (``temper_cess=0.5``) the
    likelihood tempering of :mod:`invdiff.solvers.smc_temper`; the rest go to the class."""
    from invdiff.solvers import SMC

    kw = dict(kw)
    moves = kw.pop("moves", None)
    move_kw = {k[5:]: kw.pop(k) for k in list(kw) if k.startswith("move_")}  # move_step=0.3 -> step=0.3
    if move_kw:
        moves = {"n_moves": 1 if moves is None else moves, **move_kw}
    temper_kw = {k[7:]: kw.pop(k) for k in list(kw) if k.startswith("temper_")}  # temper_cess=0.5 -> cess=0.5
    if temper_kw:
        kw["tempering"] = temper_kw
    return SMC(prior, moves=moves, **kw)  # moves=calibrated also sets the preset's particles unless given


def _sample(spec: Spec, prior, op, y: Tensor, seed: int) -> tuple[Tensor, int, dict]:
    """``(K, 1, ...)`` samples for one measurement, ``K``, and the SMC diagnostics (resampling steps, final ESS)."""
    from invdiff import solvers

    kw = dict(spec.kw)
    if spec.name in ENSEMBLES:  # SMC through build_smc (its moves and tempering keys); AFDPS as the class takes them
        solver = (build_smc(prior, {**SMC_DEFAULTS, **kw}) if spec.name == "smc"
                  else getattr(solvers, ENSEMBLES[spec.name])(prior, **kw))
        K = solver.particles
    elif spec.name in INDEPENDENT:
        if spec.name == "mbir" and y.ndim != 5:
            raise ValueError(f"mbir: DiffusionMBIR needs a volume measurement (B, C, D, ...), got shape {tuple(y.shape)}")
        K = kw.pop("n_samples", 8)
        kw.setdefault("steps", 100)
        solver = getattr(solvers, INDEPENDENT[spec.name])(prior, **kw)
    else:
        raise ValueError(f"sampler: expected one of {', '.join(METHOD_NAMES)}, got {spec.name!r}")
    r = solver.reconstruct(y, op, n_samples=K, seed=seed, progress=False)
    info = {}
    if "resampled" in r.info:
        info = {"resamplings": float(r.info["resampled"].float().sum()), "final_ess": float(r.info["final_ess"][0])}
    return r.samples.detach(), K, info


def run(task_names=TASKS, specs=None, n_images: int = 4, seed: int = 0, noise_seed: int = 1,
        prior=None, log=None, image_set: str = "test", first: int = 0) -> list[dict]:
    """One row per (task, sampler): coverage at :data:`LEVELS` (all pixels and truth in (0, 1)), the reference
    :func:`reference_coverage`, ``K``, seconds per image, network calls per image and PSNR of the sample mean.
    ``image_set="tuning"`` takes the tuning images ``ellipses(n, 64, seed=777002)`` (for choosing settings);
    ``first``: start at that image of the set (image ``first + b`` with sampler seed ``seed + first + b``), so that
    a row can be extended by further images."""
    specs = [parse_spec(s) if isinstance(s, str) else s for s in (specs or DEFAULT_METHODS)]
    prior = CountingDenoiser(prior if prior is not None else load_prior(DEFAULT_PRIOR))
    if image_set not in ("test", "tuning"):
        raise ValueError(f"image_set: expected 'test' or 'tuning', got {image_set!r}")
    if isinstance(first, bool) or not isinstance(first, int) or first < 0:
        raise ValueError(f"first: expected a non-negative image index, got {first!r}")
    seed = seed + first
    rows = []
    for tname in task_names:
        task = get_task(tname)
        if task.volume and image_set != "test":
            raise ValueError(f"image_set: volume task {tname!r} has held-out test volumes only, got {image_set!r}")
        if task.volume:  # held-out ellipsoid slabs (invdiff.bench.tasks.test_volumes), one volume per "image"
            x_all = test_volumes(first + n_images, depth=task.img_size[1], size=task.img_size[-1])
        else:
            x_all = test_images(first + n_images, shepp=False) if image_set == "test" else tuning_images(first + n_images)
        x = x_all[first:]  # the measurements of images first.. are those of a run over all first + n_images
        inner = (x > 0) & (x < 1)
        op = task.operator()
        y = measure(op, x_all, seed=noise_seed)[first:]
        for spec in specs:
            if spec.name == "mbir" and not task.volume:
                rows.append({"task": tname, "method": spec.label, "skipped": "needs a volume (TV along z)"})
                continue
            if spec.name in ENSEMBLES and task.volume:
                rows.append({"task": tname, "method": spec.label, "skipped": "a 2D sampler"})
                continue
            samples, seconds, infos = [], [], []
            prior.reset()
            for b in range(n_images):  # one image at a time: seconds per image
                t0 = time.perf_counter()
                s, K, info = _sample(spec, prior, op, y[b:b + 1], seed + b)
                seconds.append(time.perf_counter() - t0)
                samples.append(s)
                infos.append(info)
            S = torch.cat(samples, 1)
            cov, cov_in = interval_coverage(S, x), interval_coverage(S, x, mask=inner)
            row = {"task": tname, "method": spec.label, "K": K, "images": n_images,
                   "cov": cov.mean(0).tolist(), "se": (cov.std(0) / math.sqrt(n_images)).tolist() if n_images > 1 else [math.nan] * len(LEVELS),
                   "cov_inner": cov_in.nanmean(0).tolist(), "cov_images": cov.tolist(), "ref": [reference_coverage(K, p) for p in LEVELS],
                   "seconds": sum(seconds) / n_images, "calls": prior.calls / n_images,
                   "evals": prior.evaluations / n_images,
                   "psnr": float(psnr(S.mean(0), x, data_range=1.0).mean()),
                   "distinct": sum(len(torch.unique(S[:, b].reshape(K, -1), dim=0)) for b in range(n_images)) / n_images}
            for key in ("resamplings", "final_ess"):
                if infos[0]:
                    row[key] = sum(i[key] for i in infos) / n_images
            rows.append(row)
            if log:
                log(_line(row))
    return rows


def _line(r: dict) -> str:
    c = " / ".join(f"{v:.3f}" for v in r["cov"])
    ref = " / ".join(f"{v:.3f}" for v in r["ref"])
    extra = "" if "final_ess" not in r else f", resamplings {r['resamplings']:.1f}, final ESS {r['final_ess']:.1f}"
    inner = " / ".join(f"{v:.3f}" for v in r["cov_inner"])
    return (f"{r['task']} {r['method']}: coverage {c} (reference {ref}; truth in (0, 1): {inner}), "
            f"{r['seconds']:.1f} s/image, PSNR {r['psnr']:.2f}, distinct samples {r['distinct']:.1f}{extra}")


def table(rows: list[dict]) -> str:
    """Markdown table of :func:`run`'s rows."""
    head = ("| task | method | K | cov 50 % | cov 90 % | cov 95 % | reference 50 / 90 / 95 | 90 %: cov - ref "
            "| cov 50 / 90 / 95 %, truth in (0, 1) | PSNR of mean | net calls / image | images through net / image "
            "| seconds / image |\n|" + "---|" * 13)
    lines = [head]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['task']} | {r['method']} | not run: {r['skipped']} |" + " |" * 10)
            continue
        cov = " | ".join(f"{c:.3f} ± {s:.3f}" if math.isfinite(s) else f"{c:.3f} (1 image)"
                         for c, s in zip(r["cov"], r["se"]))
        ref = " / ".join(f"{v:.3f}" for v in r["ref"])
        inner = " / ".join(f"{v:.3f}" for v in r["cov_inner"])
        lines.append(f"| {r['task']} | {r['method']} | {r['K']} | {cov} | {ref} | {r['cov'][1] - r['ref'][1]:+.3f} "
                     f"| {inner} | {r['psnr']:.2f} | {r['calls']:.0f} | {r['evals']:.0f} | {r['seconds']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m invdiff.bench.coverage", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), help="benchmark tasks (invdiff.bench.tasks)")
    ap.add_argument("--images", type=int, default=4, help="in-distribution test images, ellipses(n, 64, seed=777001)")
    ap.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                    help=f"sampler specs name:key=value,... (name: {', '.join(METHOD_NAMES)})")
    ap.add_argument("--seed", type=int, default=0, help="sampler seed of the first image (image b: seed + b)")
    ap.add_argument("--noise-seed", type=int, default=1, help="seed of the measurement noise")
    ap.add_argument("--prior", default=DEFAULT_PRIOR)
    ap.add_argument("--image-set", choices=("test", "tuning"), default="test",
                    help="in-distribution test images (seed 777001) or tuning images (seed 777002, for choosing settings)")
    ap.add_argument("--first-image", type=int, default=0, help="first image of the set (sampler seed --seed + index)")
    ap.add_argument("--out", default=None, help="also write the Markdown table to this file")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = ap.parse_args(argv)
    for t in args.tasks:
        get_task(t)
    if args.images < 1:
        raise SystemExit(f"--images: expected a positive number of images, got {args.images}")
    specs = [parse_spec(s) for s in args.methods]
    rows = run(args.tasks, specs, args.images, args.seed, args.noise_seed, load_prior(args.prior),
               log=lambda m: print(m, file=sys.stderr, flush=True), image_set=args.image_set,
               first=args.first_image)
    md = table(rows)
    emit_markdown(md, args.out, args.overwrite)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
