"""GPU benchmark: seconds per network call and per solver step, peak device memory (issue 10, item 1).

``python -m invdiff.bench.gpu --out DIR [--device cuda] [--quick] [--budget-s 480]`` measures:

* **network calls** ``D(x, sigma)`` at batch 1: the shipped prior (``phantom-ct-64``) on ``64^2``,
  ``256^2`` and ``512^2`` slices; an ADM-256-sized network (guided-diffusion's FFHQ-256 layout,
  DPS's ``ffhq_10m.pt`` architecture with one input channel, about 93 M parameters) at random
  initialisation on ``256^2``, standing in for the cost of a public checkpoint; and the shipped
  prior on a chunk of 16 slices of ``256^2`` (what DDS sends per call on a volume);
* **solver steps**: DDS on a 2D parallel-beam CT slice of each size (``views`` views), and DDS on a
  ``256^3`` CT volume (slice-wise prior, 16 slices per call; ASTRA's GPU projector per slice when
  ASTRA has CUDA). Seconds per step are the run's wall time over its steps.

Each timing is the median of ``repeats`` runs after one warm-up, with ``torch.cuda.synchronize``
around it; peak memory is ``torch.cuda.max_memory_allocated`` over the block above its start
(:class:`invdiff.bench.memory.PeakMemory`; on the CPU, the process's peak RSS growth, sampled).
Items run in order and stop being started once ``--budget-s`` seconds have passed (each skipped
item is listed), so that the whole run fits a 10-minute slot on one GPU.

``--device cpu --quick`` is the dry run: sizes 32 / 64, a small ADM, an ``8 x 32 x 32`` volume,
a few steps. Outputs: ``DIR/gpu_bench.json`` and ``DIR/gpu_bench.md`` (written atomically; existing
files are kept unless ``--overwrite``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from invdiff.bench.memory import PeakMemory
from invdiff.device import check_device
from invdiff.utils import atomic_path

FULL = dict(sizes=(64, 256, 512), adm=256, volume=(256, 256, 256), views=60, steps=5, volume_steps=2, repeats=5)
QUICK = dict(sizes=(32, 64), adm=32, volume=(8, 32, 32), views=16, steps=3, volume_steps=2, repeats=2)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, float]:
    """``(median seconds, peak MB)`` of ``fn()`` over ``repeats`` runs after one warm-up."""
    with torch.no_grad():
        fn()
        _sync(device)
        times = []
        with PeakMemory(str(device)) as mem:
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                _sync(device)
                times.append(time.perf_counter() - t0)
    return statistics.median(times), mem.peak_mb


def adm_prior(size: int, device: torch.device):
    """An ADM network of guided-diffusion's FFHQ-256 layout (1 channel), randomly initialised (seed 0), as a
    denoiser, and its parameter count (also :func:`invdiff.bench.scale.make_prior`'s ``"adm"``)."""
    from invdiff.priors.adapters.adm import ADM_CONFIGS, ADMConfig, ADMUNet
    from invdiff.priors.adapters.vp import VPEpsDenoiser, make_alphas_cumprod

    if size == 256:
        base = ADM_CONFIGS["ffhq256"]
        cfg = ADMConfig(**{**base.__dict__, "in_channels": 1})
    else:  # the dry run: the same blocks, small
        cfg = ADMConfig(image_size=size, in_channels=1, num_channels=32, channel_mult=(1, 2),
                        attention_resolutions=(size // 2,), num_head_channels=32)
    torch.manual_seed(0)
    net = ADMUNet(cfg)
    D = VPEpsDenoiser(net, make_alphas_cumprod("linear", 1000), name=f"adm{size}-random", pad_multiple=cfg.pad_multiple)
    n_params = sum(p.numel() for p in net.parameters())
    return D.to(device).eval(), n_params


def _call_row(name: str, prior, shape: tuple[int, ...], device: torch.device, repeats: int, **extra) -> dict:
    x = torch.randn(shape, device=device)
    sec, mb = timed(lambda: prior(x, 0.5), device, repeats)
    return dict(kind="network call", item=name, shape=list(shape), seconds=sec, peak_mb=mb, **extra)


def _dds_row(name: str, prior, x, op, steps: int, device: torch.device, **extra) -> dict:
    from invdiff.solvers import DDS

    with torch.no_grad():
        y = op(x)
    DDS(prior, steps=1, device=device).reconstruct(y, op, progress=False)  # warm-up: cuDNN autotuning, ASTRA
    solver = DDS(prior, steps=steps, device=device)
    _sync(device)
    with PeakMemory(str(device)) as mem:
        t0 = time.perf_counter()
        r = solver.reconstruct(y, op, progress=False)
        _sync(device)
        sec = time.perf_counter() - t0
    return dict(kind="solver step", item=name, shape=list(x.shape), seconds=sec / steps, peak_mb=mem.peak_mb,
                steps=steps, nfe=r.nfe, finite=bool(torch.isfinite(r.mean).all()), **extra)


def plan(device: torch.device, quick: bool) -> list[tuple[str, Callable[[], dict]]]:
    """The benchmark's items in order, each a ``(label, run)`` pair."""
    from invdiff import data, operators, priors
    from invdiff.operators.functional.astra_cuda import astra_mode

    p = QUICK if quick else FULL
    shipped = priors.load("phantom-ct-64", device=device)
    items: list[tuple[str, Callable[[], dict]]] = []
    for n in p["sizes"]:
        items.append((f"shipped prior {n}^2", lambda n=n: _call_row("phantom-ct-64", shipped, (1, 1, n, n), device,
                                                                     p["repeats"])))
    A = p["adm"]

    def adm():
        D, n_params = adm_prior(A, device)
        return _call_row("ADM-256 layout, random init" if A == 256 else "ADM (small, dry run)", D, (1, 1, A, A),
                         device, p["repeats"], parameters=n_params)
    items.append((f"ADM {A}^2", adm))
    S = p["volume"][1]
    items.append((f"shipped prior 16 x {S}^2", lambda: _call_row("phantom-ct-64, 16 slices", shipped, (16, 1, S, S),
                                                                 device, p["repeats"])))
    for n in p["sizes"]:
        def dds2d(n=n):
            x = data.shepp_logan(n).to(device)
            op = operators.CT((1, n, n), n_views=p["views"], noise_std=0.01)
            return _dds_row("DDS, CT slice", shipped, x, op, p["steps"], device, views=p["views"],
                            projector=f"astra-{astra_mode(device)}")
        items.append((f"DDS {n}^2", dds2d))

    def dds3d():
        Dz, H, W = p["volume"]
        x = data.ellipsoids((Dz, H, W), seed=0).to(device)
        op = operators.CT((1, Dz, H, W), n_views=p["views"], noise_std=0.01)
        return _dds_row("DDS, CT volume (slice-wise prior, 16 slices/call)", shipped, x, op, p["volume_steps"], device,
                        views=p["views"], projector=f"astra-{astra_mode(device)}")
    items.append((f"DDS volume {'x'.join(map(str, p['volume']))}", dds3d))
    return items


def machine(device: torch.device) -> dict:
    from invdiff.operators.functional.astra_cuda import astra_has_cuda

    info = dict(device=str(device), torch=torch.__version__, python=platform.python_version(),
                astra_cuda=astra_has_cuda(), cpu_threads=torch.get_num_threads())
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# GPU benchmark ({'quick dry run' if result['quick'] else 'full'}) on {m.get('gpu', m['device'])}", "",
             f"torch {m['torch']}, ASTRA CUDA: {m['astra_cuda']}, total {result['seconds']:.1f} s", "",
             "| kind | item | shape | seconds | peak MB | notes |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        notes = ", ".join(f"{k}={r[k]}" for k in ("parameters", "steps", "nfe", "views", "projector", "finite") if k in r)
        unit = "s/step" if r["kind"] == "solver step" else "s/call"
        lines.append(f"| {r['kind']} | {r['item']} | {'x'.join(map(str, r['shape']))} | {r['seconds']:.4g} {unit} | "
                     f"{r['peak_mb']:.1f} | {notes} |")
    for label, why in result["skipped"]:
        lines.append(f"| skipped | {label} | | | | {why} |")
    return "\n".join(lines) + "\n"


def run(out: str | Path, device: str = "cuda", quick: bool = False, budget_s: float = 480.0,
        overwrite: bool = False, echo: Callable[[str], None] = print) -> dict:
    """Run the benchmark and write ``out/gpu_bench.json`` and ``out/gpu_bench.md``; returns the result."""
    dev = check_device(device)
    out = Path(out)
    paths = out / "gpu_bench.json", out / "gpu_bench.md"
    for path in paths:
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path}: output exists; pass --overwrite to replace it")
    t0 = time.perf_counter()
    rows, skipped = [], []
    for label, fn in plan(dev, quick):
        if time.perf_counter() - t0 > budget_s:
            skipped.append((label, f"budget of {budget_s:g} s spent"))
            echo(f"skip {label}: budget spent")
            continue
        try:
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            row = fn()
        except (RuntimeError, MemoryError) as err:  # e.g. out of memory: report it, go on
            skipped.append((label, f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"))
            echo(f"fail {label}: {skipped[-1][1]}")
            continue
        rows.append(row)
        echo(f"{label}: {row['seconds']:.4g} s, peak {row['peak_mb']:.1f} MB  ({time.perf_counter() - t0:.0f} s)")
    result = dict(machine=machine(dev), quick=quick, budget_s=budget_s, seconds=time.perf_counter() - t0,
                  rows=rows, skipped=skipped)
    with atomic_path(paths[0], overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(result, indent=1))
    with atomic_path(paths[1], overwrite=overwrite) as tmp:
        tmp.write_text(markdown(result))
    echo(f"wrote {paths[0]} and {paths[1]}")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m invdiff.bench.gpu", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--device", default="cuda", help="torch device")
    ap.add_argument("--quick", action="store_true", help="the tiny dry run (sizes 32/64, 8x32x32 volume)")
    ap.add_argument("--budget-s", type=float, default=480.0, help="start no new item after this many seconds")
    ap.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    args = ap.parse_args(argv)
    try:
        run(args.out, device=args.device, quick=args.quick, budget_s=args.budget_s, overwrite=args.overwrite)
    except (ValueError, TypeError, FileExistsError) as err:
        print(f"python -m invdiff.bench.gpu: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
