"""Scaling benchmark of the slice-wise solvers: memory per voxel, seconds per slice-step, 1 rank vs 2.

``python -m invdiff.bench.scale [--json benchmarks/scale.json] [--quick]`` runs every measurement in a
fresh subprocess (so that one run's heap does not inflate the next one's resident set) and writes them
to the JSON file (benchmarks/SCALE.md reports them). One measurement alone::

    python -m invdiff.bench.scale one --depth 16 --size 128 --prior unet --solver dds --steps 3

prints one JSON line: ``peak_mb`` (peak resident set above its value before ``reconstruct``,
:class:`invdiff.bench.memory.PeakMemory`), ``seconds``, ``sec_per_slice_step``.

- **Bytes of extra state per voxel**: ``(peak(D2) - peak(D1)) / (voxels(D2) - voxels(D1))`` for two
  depths of the same slice size, so that what does not grow with the volume (the network, its
  activations on one slab, the operator) cancels. The goal is <= 32 (8 float32 volumes).
- **Seconds per slice-step**: wall time / (slices x steps), one network call per slice and step
  (DDS), with the shipped UNet (``phantom-ct-64``) or an ADM-256-sized network (guided-diffusion's
  FFHQ-256 configuration, one input channel) at random initialisation, which costs what a public
  checkpoint costs.
- **1 rank vs 2 ranks**: the same volume through ``torchrun --nproc-per-node 1`` and ``2`` with Gloo.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

PRIORS = ("unet", "adm", "gauss")
SOLVERS = ("dds", "mbir")


def make_prior(name: str, size: int):
    """``unet``: the shipped ``phantom-ct-64``; ``adm``: ADM-256 (FFHQ config, 1 channel) at random
    initialisation (seed 0); ``gauss``: an analytic Gaussian prior (no network)."""
    from invdiff import priors

    if name == "unet":
        return priors.load("phantom-ct-64")
    if name == "adm":
        from invdiff.bench.gpu import adm_prior

        return adm_prior(256, torch.device("cpu"))[0]
    if name == "gauss":
        return priors.GaussianPrior(torch.full((1, size, size), 0.5), 0.3)
    raise ValueError(f"prior: expected one of {PRIORS}, got {name!r}")


def make_solver(name: str, prior, steps: int, chunk: int):
    from invdiff.solvers import DDS, DiffusionMBIR

    if name == "dds":
        return DDS(prior, steps=steps, chunk=chunk)
    if name == "mbir":
        return DiffusionMBIR(prior, steps=steps, chunk=chunk)
    raise ValueError(f"solver: expected one of {SOLVERS}, got {name!r}")


def problem(depth: int, size: int, views: int):
    """An ellipsoid phantom ``(1, 1, depth, size, size)``, CT with ``views`` views, 1 % noise."""
    from invdiff import data, operators

    x = data.ellipsoids((depth, size, size), seed=0).reshape(1, 1, depth, size, size)
    op0 = operators.CT((1, depth, size, size), n_views=views)
    with torch.no_grad():
        scale = float(op0.A(x).pow(2).mean().sqrt())
    op = operators.CT((1, depth, size, size), n_views=views, noise_std=0.01 * scale)
    torch.manual_seed(0)
    with torch.no_grad():
        y = op(x)
    return x, op, y


def measure_one(depth: int, size: int, prior: str, solver: str, steps: int, views: int, chunk: int) -> dict:
    """One reconstruction in this process: peak RSS above the start and seconds."""
    from invdiff.bench.memory import PeakMemory

    p = make_prior(prior, size)
    s = make_solver(solver, p, steps, chunk)
    x, op, y = problem(depth, size, views)
    with PeakMemory("cpu") as mem:
        t0 = time.perf_counter()
        r = s.reconstruct(y, op, seed=0, progress=False)
        seconds = time.perf_counter() - t0
    return {"depth": depth, "size": size, "prior": prior, "solver": solver, "steps": steps, "views": views,
            "chunk": chunk, "threads": torch.get_num_threads(), "peak_mb": round(mem.peak_mb, 1),
            "seconds": round(seconds, 2), "sec_per_slice_step": seconds / (depth * steps), "nfe": r.nfe}


def run_one_subprocess(args: list[str], env: dict | None = None, timeout: float = 3600) -> dict:
    cmd = [sys.executable, "-m", "invdiff.bench.scale", "one", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bytes_per_voxel(a: dict, b: dict) -> float:
    """Growth of the peak between two runs, per voxel of the volume."""
    dv = (b["depth"] - a["depth"]) * b["size"] ** 2
    return (b["peak_mb"] - a["peak_mb"]) * 2**20 / dv


def torchrun_seconds(nproc: int, depth: int, size: int, steps: int, views: int, workdir: Path) -> float:
    """Wall time of ``torchrun --nproc-per-node nproc -m invdiff reconstruct`` on a phantom volume (Gloo, CPU)."""
    import numpy as np

    from invdiff import data

    vol = workdir / f"vol_{depth}x{size}.npy"
    if not vol.exists():
        np.save(vol, data.ellipsoids((depth, size, size), seed=0).numpy())
    out = workdir / f"rec_{nproc}.npy"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), "-m",
           "invdiff", "reconstruct", str(vol), "--operator", "ct", "--views", str(views), "--solver", "dds",
           "--steps", str(steps), "--out", str(out)]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    seconds = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    return seconds


FIXED_MMAP = {"MALLOC_MMAP_THRESHOLD_": "65536"}  # glibc: large blocks mmapped and returned to the OS on free


def run_all(quick: bool, log) -> dict:
    """Every measurement, one subprocess each, one after the other; returns the rows by section."""
    res: dict = {"threads": 1, "machine": f"{platform.machine()}, {os.cpu_count()} cores", "rows": {}}
    one_thread = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def one(key, args, env=None):
        row = run_one_subprocess(args, {**one_thread, **(env or {})})
        res["rows"][key] = row
        log(f"{key}: {json.dumps(row)}")
        return row

    depths = (8, 24) if quick else (16, 48)
    for solver in SOLVERS:  # 1. extra state per voxel: two depths of 128^2 slices
        for alloc, env in (("fixed-mmap", FIXED_MMAP), ("glibc-default", {})):
            if solver == "mbir" and alloc == "glibc-default":
                continue
            for d in depths:
                one(f"mem/{solver}/{alloc}/{d}", ["--depth", str(d), "--size", "128", "--prior", "unet", "--solver",
                                                   solver, "--steps", "1", "--views", "8"], env)
    # 2. seconds per slice-step, 256^2 and 512^2 slices, shipped UNet and ADM-256 at random initialisation
    for prior, n_slices in (("unet", 4), ("adm", 2)):
        for size in (256, 512):
            one(f"time/{prior}/{size}", ["--depth", str(n_slices), "--size", str(size), "--prior", prior,
                                         "--steps", "1", "--views", "60"], FIXED_MMAP)
    # 3. a 256^3 volume (and 256^2 x 32 for the per-voxel growth): no network (Gaussian prior), 1 step
    if not quick:
        for d in (32, 256):
            one(f"vol256/{d}", ["--depth", str(d), "--size", "256", "--prior", "gauss", "--steps", "1",
                                "--views", "8"], FIXED_MMAP)
    # 4. one volume over 1 and 2 torchrun ranks (Gloo)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for nproc in (1, 2):
            sec = torchrun_seconds(nproc, 16, 64, 5, 16, Path(tmp))
            res["rows"][f"ranks/{nproc}"] = {"seconds": round(sec, 1), "depth": 16, "size": 64, "steps": 5, "views": 16}
            log(f"ranks/{nproc}: {sec:.1f} s")
    return res


def _compare(out: dict, x, steps: int) -> dict:
    """PSNR per image of the ``float64`` and ``float32`` reconstructions in ``out`` against ``x``, their mean
    and largest difference, and the largest pixel difference (in float64)."""
    from invdiff import metrics

    p64, p32 = (metrics.psnr(out[k], x).flatten().tolist() for k in ("float64", "float32"))
    return {"psnr_float64": p64, "psnr_float32": p32, "mean_psnr_diff_db": sum(a - b for a, b in zip(p32, p64)) / len(p64),
            "max_abs_psnr_diff_db": max(abs(a - b) for a, b in zip(p32, p64)),
            "max_abs_diff": float((out["float32"].double() - out["float64"].double()).abs().max()), "steps": steps}


def precision(n_images: int = 8, steps: int = 100) -> dict:
    """DDS (preset) on the ct16 task's test images with the 2D state in float64 (the default) and float32.

    Returns the PSNR of each and the largest absolute difference between the two reconstructions.
    """
    from invdiff import priors
    from invdiff.bench.tasks import TASKS, measure, test_images
    from invdiff.solvers import DDS

    op = TASKS["ct16"].operator()
    x = test_images(n_images)
    y = measure(op, x, seed=0)
    prior = priors.load("phantom-ct-64")
    out = {}
    for name, dtype in (("float64", torch.float64), ("float32", torch.float32)):
        s = DDS(prior, steps=steps)
        s.image_dtype = dtype
        out[name] = s.reconstruct(y, op, seed=0, progress=False).mean
    return _compare(out, x, steps)


def precision_volume(n_images: int = 8, steps: int = 100) -> dict:
    """DDS (preset) on the ct16 test images stacked as the slices of one volume (CT 16 views on the volume,
    the same noise level), the volume state in float32 (the default) and float64; PSNR per slice."""
    from invdiff import priors
    from invdiff.bench.tasks import TASKS, _noise_std_of, test_images
    from invdiff.operators import CT
    from invdiff.solvers import DDS

    x2 = test_images(n_images)
    _, _, H, W = x2.shape
    op = CT((1, n_images, H, W), n_views=16, noise_std=_noise_std_of(TASKS["ct16"].operator()))
    x = x2.permute(1, 0, 2, 3)[None]  # (1, 1, n, H, W)
    with torch.no_grad():
        Ax = op.A(x)
    y = Ax + op.noise_std * torch.randn(Ax.shape, generator=torch.Generator().manual_seed(0))
    prior = priors.load("phantom-ct-64")
    out = {}
    for name, dtype in (("float32", torch.float32), ("float64", torch.float64)):
        s = DDS(prior, steps=steps)
        s.volume_dtype = dtype
        out[name] = s.reconstruct(y, op, seed=0, progress=False).mean[0].transpose(0, 1)  # (n, 1, H, W)
    return _compare(out, x2, steps)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m invdiff.bench.scale", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = ap.add_subparsers(dest="cmd")
    one = sub.add_parser("one", help="one measurement in this process, one JSON line")
    one.add_argument("--depth", type=int, required=True)
    one.add_argument("--size", type=int, required=True)
    one.add_argument("--prior", choices=PRIORS, default="unet")
    one.add_argument("--solver", choices=SOLVERS, default="dds")
    one.add_argument("--steps", type=int, default=3)
    one.add_argument("--views", type=int, default=60)
    one.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--json", default="benchmarks/scale.json", help="where the measurements are written")
    ap.add_argument("--quick", action="store_true", help="smaller depths, no 256^3 volume (a dry run)")
    prec = sub.add_parser("precision", help="DDS on the ct16 images with float64 vs float32 2D state, one JSON line")
    prec.add_argument("--images", type=int, default=8)
    prec.add_argument("--steps", type=int, default=100)
    args = ap.parse_args(argv)
    if args.cmd == "precision":
        print(json.dumps(precision(args.images, args.steps)))
        print(json.dumps(precision_volume(args.images, args.steps)))
        return 0
    if args.cmd == "one":
        print(json.dumps(measure_one(args.depth, args.size, args.prior, args.solver, args.steps, args.views,
                                     args.chunk)))
        return 0
    res = run_all(args.quick, lambda line: print(line, flush=True))
    res["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    from invdiff.utils import atomic_path

    with atomic_path(args.json, overwrite=True) as tmp:
        tmp.write_text(json.dumps(res, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
