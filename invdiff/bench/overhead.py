"""Solver overhead: each solver's wall time against the floor of the network and operator work it does.

The floor of a run is measured, not modelled: the prior and the operator are wrapped so that every
network call (its input shape) and every ``A`` / ``A_adjoint`` / ``A_dagger`` call is recorded, with
whether a gradient later flowed back through its output (a hook on the output). The same calls are
then replayed bare, with a backward pass exactly where the solver back-propagated through one, in the
same process and interleaved with the solver's runs: each run's ratio is its time over the mean of
the floors replayed just before and just after it, and the median over ``repeats`` runs (after an
untimed warm-up run) is reported, with the medians of the times and floors, so that slow drifts of
the machine's load cancel. The same is reported for the process's CPU time
(``time.process_time``), which, with one thread on a CPU shared with other jobs, is the steadier
measure; on a GPU only the wall-clock columns mean anything. Everything else a solver does
(schedules, random draws, the update arithmetic, checks, progress bars) is its overhead.

Run ``python -m invdiff.bench.overhead [--steps 20] [--repeats 3] [--device cpu] [--json out.json]``
(also ``invdiff bench overhead``).
The problem is 16-view sparse-view CT of a 64x64 phantom (invdiff's CT operator) with the shipped ``phantom-ct-64`` prior (a randomly initialised
network of the same size if the weights are missing; timing does not depend on the weights).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import deepinv as dinv
import torch
from torch import Tensor

from invdiff.bench.counting import CountingDenoiser, mark_backward
from invdiff.bench.report import write_json
from invdiff.data.phantoms import shepp_logan

class RecordingOperator:
    """Patches ``op.A``, ``op.A_adjoint`` and ``op.A_dagger`` on the instance to record each call."""

    METHODS = ("A", "A_adjoint", "A_dagger")

    def __init__(self, op):
        self.op = op
        self.calls: list[tuple[str, tuple[int, ...], bool]] = []
        self.original = {m: getattr(op, m) for m in self.METHODS}
        self._depth = 0
        for m in self.METHODS:
            setattr(op, m, self._wrap(m, self.original[m]))

    def _wrap(self, name: str, fn: Callable) -> Callable:
        def wrapped(x, *args, **kwargs):
            if self._depth > 0:  # an operator's internal call: counted in the outer one
                return fn(x, *args, **kwargs)
            call = [name, tuple(x.shape), False]
            self.calls.append(call)
            self._depth += 1
            try:
                return mark_backward(fn(x, *args, **kwargs), call, index=2)
            finally:
                self._depth -= 1
        return wrapped

    def restore(self) -> None:
        for m in self.METHODS:
            setattr(self.op, m, self.original[m])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def replay(prior: torch.nn.Module, ops: dict[str, Callable], net_calls, op_calls,
           device: torch.device) -> tuple[float, float]:
    """Wall-clock and process CPU seconds to redo the recorded calls bare (inputs prepared beforehand, float32)."""
    g = torch.Generator(device=device).manual_seed(0)
    cache: dict[tuple, Tensor] = {}

    def rand(shape) -> Tensor:
        if shape not in cache:
            cache[shape] = torch.randn(shape, generator=g, device=device)
        return cache[shape]

    for shape, _ in net_calls:
        rand(shape)
    for _, shape, _ in op_calls:
        rand(shape)
    cot: dict[tuple, Tensor] = {}
    with torch.no_grad():  # shapes of the outputs, for the cotangents of the backward passes
        for shape, grad in net_calls:
            if grad and ("net", shape) not in cot:
                cot[("net", shape)] = torch.randn_like(prior(rand(shape), 0.5))
        for name, shape, grad in op_calls:
            if grad and (name, shape) not in cot:
                cot[(name, shape)] = torch.randn_like(ops[name](rand(shape)))
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    for shape, grad in net_calls:
        if grad:
            x = rand(shape).requires_grad_(True)
            with torch.enable_grad():
                torch.autograd.grad(prior(x, 0.5), x, cot[("net", shape)])
            x.requires_grad_(False)
        else:
            with torch.no_grad():
                prior(rand(shape), 0.5)
    for name, shape, grad in op_calls:
        if grad:
            x = rand(shape).requires_grad_(True)
            with torch.enable_grad():
                torch.autograd.grad(ops[name](x), x, cot[(name, shape)])
            x.requires_grad_(False)
        else:
            with torch.no_grad():
                ops[name](rand(shape))
    _sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def load_prior(device: torch.device) -> tuple[torch.nn.Module, str]:
    """The shipped ``phantom-ct-64`` prior, else a randomly initialised network of the same size."""
    from invdiff import priors

    try:
        return priors.load("phantom-ct-64", device=device), "phantom-ct-64"
    except Exception:  # noqa: BLE001 - any failure falls back to the file, then to a random network
        pass
    path = Path(priors.__file__).parent / "weights" / "phantom-ct-64.safetensors"
    try:
        return priors.EDMDenoiser.from_file(path, device=device), f"phantom-ct-64 ({path.name})"
    except Exception:  # noqa: BLE001
        from invdiff.priors.unet import UNet, UNetConfig

        net = UNet(UNetConfig(channels=(32, 64, 96), blocks_per_level=1, emb_dim=128))
        return priors.EDMDenoiser(net).to(device).eval(), "random-init UNet (32, 64, 96)"


def make_ct(size: int, views: int, device: torch.device):
    """invdiff's parallel-beam CT operator of ``views`` angles over 180 degrees, and its name."""
    from invdiff.operators import CT

    return CT((1, size, size), n_views=views), "invdiff.operators.CT"


def _deepinv_dps(prior, steps: int, shape: tuple[int, ...], device: torch.device):
    model = dinv.sampling.DPS(prior, num_steps=steps, weight=1.0, device=device, rng=torch.Generator(device=device))
    return lambda y, op: model(y, op, x_init=shape, seed=0)


def candidates(steps: int, shape: tuple[int, ...], device: torch.device,
               particles: int = 4) -> list[tuple[str, Callable]]:
    """``(name, factory(prior) -> run(y, op))`` for invdiff's DPS, RED-Diff, SMC, DDS and deepinv's DPS."""
    from invdiff.solvers import get_solver

    out = []
    for key, label, kw in (("dps", "invdiff DPS", dict(steps=steps)), ("reddiff", "invdiff RED-Diff", dict(steps=steps)),
                           ("smc", "invdiff SMC", dict(steps=steps, particles=particles)),
                           ("dds", "invdiff DDS", dict(steps=steps))):
        cls = get_solver(key)
        out.append((label, lambda p, cls=cls, kw=kw: (lambda y, op: cls(p, **kw).reconstruct(y, op, progress=False))))
    out.append(("deepinv DPS", lambda p: _deepinv_dps(p, steps, shape, device)))
    return out


def run_benchmark(steps: int = 20, repeats: int = 3, size: int = 64, views: int = 16, device: str = "cpu",
                  particles: int = 4, only: list[str] | None = None, echo: Callable[[str], None] = print) -> list[dict]:
    """Time every solver against its floor; returns one dict per solver (and prints a table)."""
    dev = torch.device(device)
    prior, prior_name = load_prior(dev)
    op, op_name = make_ct(size, views, dev)
    x = shepp_logan(size).to(dev)
    y = op.A(x)
    noise_std = 0.01 * float(y.abs().max())
    y = y + noise_std * torch.randn(y.shape, generator=torch.Generator().manual_seed(0)).to(dev)
    op.set_noise_model(dinv.physics.GaussianNoise(sigma=noise_std))  # states the noise level (SMC reads it)
    ops = {m: getattr(op, m) for m in RecordingOperator.METHODS}
    echo(f"overhead: {size}x{size} CT, {views} views ({op_name}); prior {prior_name}; {steps} steps; "
         f"device {dev}; median of {repeats}; torch threads {torch.get_num_threads()}")
    echo(f"{'solver':<18} {'nfe':>5} {'net bwd':>7} {'op calls':>8} {'floor s':>9} {'time s':>9} {'ratio':>6} "
         f"{'cpu floor':>9} {'cpu time':>9} {'cpu ratio':>6}")
    rows = []
    for name, factory in candidates(steps, tuple(x.shape), dev, particles):
        if only and not any(o.lower() in name.lower() for o in only):
            continue
        wrapped = CountingDenoiser(prior, record=True)
        try:
            run = factory(wrapped)
            times, floors = [], []  # (wall, cpu) pairs
            for k in range(repeats + 1):  # run 0 is an untimed warm-up that records the calls
                wrapped.reset()
                rec = RecordingOperator(op)
                try:
                    _sync(dev)
                    t0, c0 = time.perf_counter(), time.process_time()
                    run(y, op)
                    _sync(dev)
                    if k > 0:
                        times.append((time.perf_counter() - t0, time.process_time() - c0))
                finally:
                    rec.restore()
                floors.append(replay(prior, ops, wrapped.records, rec.calls, dev))
        except Exception as err:  # noqa: BLE001 - report and go on with the other solvers
            echo(f"{name:<18} skipped: {type(err).__name__}: {err}")
            continue

        def med(v):
            return sorted(v)[len(v) // 2]

        # each run against the mean of the floors replayed just before and just after it
        ratios = [[t[j] / ((floors[k][j] + floors[k + 1][j]) / 2) for k, t in enumerate(times)] for j in (0, 1)]
        row = dict(solver=name, nfe=wrapped.calls, net_backward=sum(g for _, g in wrapped.records),
                   op_calls=len(rec.calls), floor_s=med([f[0] for f in floors]), time_s=med([t[0] for t in times]),
                   ratio=med(ratios[0]), cpu_floor_s=med([f[1] for f in floors]),
                   cpu_time_s=med([t[1] for t in times]), cpu_ratio=med(ratios[1]),
                   ratios=sorted(ratios[0]), cpu_ratios=sorted(ratios[1]))
        rows.append(row)
        echo(f"{name:<18} {row['nfe']:>5} {row['net_backward']:>7} {row['op_calls']:>8} {row['floor_s']:>9.3f} "
             f"{row['time_s']:>9.3f} {row['ratio']:>6.3f} {row['cpu_floor_s']:>9.3f} {row['cpu_time_s']:>9.3f} "
             f"{row['cpu_ratio']:>6.3f}")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m invdiff.bench.overhead", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--steps", type=int, default=20, help="diffusion steps per solver")
    ap.add_argument("--particles", type=int, default=4, help="SMC particles")
    ap.add_argument("--repeats", type=int, default=3, help="runs per solver; medians are reported")
    ap.add_argument("--size", type=int, default=64, help="image size")
    ap.add_argument("--views", type=int, default=16, help="CT views")
    ap.add_argument("--device", default="cpu", help="torch device")
    ap.add_argument("--only", nargs="*", default=None, help="substrings of solver names to run")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    args = ap.parse_args(argv)
    for name in ("steps", "repeats", "size", "views", "particles"):
        if getattr(args, name) < 1:
            ap.error(f"--{name}: expected a positive integer, got {getattr(args, name)}")
    rows = run_benchmark(args.steps, args.repeats, args.size, args.views, args.device, args.particles, args.only)
    if args.json:
        write_json(args.json, rows, overwrite=args.overwrite)
    return 0


if __name__ == "__main__":
    sys.exit(main())
