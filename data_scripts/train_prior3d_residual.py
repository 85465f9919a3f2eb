"""Train "phantom-ct-3d": a 3D correction network on top of the slice-wise 2D prior "phantom-ct-64".

The prior is :class:`invdiff.priors.SliceResidualDenoiser` (its module docstring has the equations)::

    D3(x, sigma) = D2s(x, sigma) + c_out(sigma) R_theta([c_in x, c_in D2s, (x - D2s) / sigma], c_noise)
    loss = lambda(sigma) |D3(x0 + sigma n, sigma) - x0|^2,   lambda = 1 / c_out^2     (EDM)

Each step draws ``--batch`` new ellipsoid phantoms ``data.ellipsoids(--volume, seed=1_000_000 + k)``
(``k`` counts every volume drawn, so no training volume is reused and seeds below 10^6 stay held
out), flips each along every axis and swaps H and W with probability 1/2 (before the noise, so the 2D
prior sees exactly what it sees at run time), and trains on the whole volume: the 2D prior always
works on whole slices, and the correction sees the volume size it will see. The 2D prior is frozen
and evaluated without gradients.

Noise levels: with probability ``--goal-fraction`` sigma ~ LogNormal(``--goal-mean``, ``--goal-std``)
(around sigma 0.1-0.2, where the denoising goal is), otherwise EDM's LogNormal(-1.2, 1.2), so that
every sigma of a diffusion run is trained on.

Resumable: ``<run-dir>/checkpoint.pt`` (plain state dicts, ``torch.load(weights_only=True)``) and
``loss.csv``; run the same command again to continue. Every ``--export-every`` steps the EMA weights
are written to ``<run-dir>/ema-<step>.safetensors`` (+ JSON) and to ``--out``.

    python data_scripts/train_prior3d_residual.py --threads 1 --minutes 60
    python data_scripts/train_prior3d_residual.py --plot docs/prior3d_loss.png
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import time
from pathlib import Path

import torch

from invdiff import priors
from invdiff.data.phantoms import ellipsoids
from invdiff.priors.slice_residual import SliceResidualDenoiser
from invdiff.priors.unet import UNet, UNetConfig

ROOT = Path(__file__).resolve().parents[1]
TRAIN_SEED_OFFSET = 1_000_000


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--name", default="phantom-ct-3d")
    p.add_argument("--base", default="phantom-ct-64", help="the 2D prior (an embedded name), frozen")
    p.add_argument("--run-dir", default=str(ROOT / "runs/phantom-ct-3d-residual"))
    p.add_argument("--out", default=None, help="default: <run-dir>/ema.safetensors")
    p.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget of this invocation")
    p.add_argument("--max-steps", type=int, default=1_000_000)
    p.add_argument("--batch", type=int, default=1, help="volumes per step")
    p.add_argument("--volume", default="32,64,64", help="D,H,W of the training phantoms (= the tile size)")
    p.add_argument("--channels", default="16,24,32,48", help="R_theta's UNet channels per level")
    p.add_argument("--z-windows", default="", help="comma-separated odd windows k of the z-averaged 2D estimates E_k")
    p.add_argument("--init", default=None, metavar="SAFETENSORS",
                   help="start a new run from an exported R_theta of the same UNet; input channels it lacks "
                        "(new z windows) get zero weights, so the prior starts as that one")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--decay-steps", type=int, default=0,
                   help="cosine-anneal the learning rate to 0 over the last N steps before --max-steps (0: constant)")
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--goal-fraction", type=float, default=0.75)
    p.add_argument("--goal-mean", type=float, default=math.log(0.15))
    p.add_argument("--goal-std", type=float, default=0.5)
    p.add_argument("--p-mean", type=float, default=-1.2)
    p.add_argument("--p-std", type=float, default=1.2)
    p.add_argument("--sigma-data", type=float, default=0.5)
    p.add_argument("--export-every", type=int, default=100)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=20261129)
    p.add_argument("--first-volume", type=int, default=0,
                   help="step k uses training volumes TRAIN_SEED_OFFSET + first_volume + k * batch + i (a new run "
                        "started with --init takes volumes its parent never saw)")
    p.add_argument("--plot", default=None, metavar="PNG", help="only draw <run-dir>/loss.csv into this figure, then exit")
    p.add_argument("--plot-parent", default=None, metavar="RUN_DIR:STEPS",
                   help="with --plot: first draw this run's loss up to STEPS (the run whose export --init took)")
    args = p.parse_args(argv)
    try:
        args.volume = tuple(int(v) for v in args.volume.split(","))
        args.channels = tuple(int(c) for c in args.channels.split(","))
        args.z_windows = tuple(int(k) for k in args.z_windows.split(",") if k.strip())
    except ValueError:
        p.error(f"--volume / --channels: expected comma-separated integers, got {args.volume!r} / {args.channels!r}")
    if len(args.volume) != 3 or min(args.volume) < 2:
        p.error(f"--volume: expected D,H,W >= 2, got {args.volume}")
    if not 0 <= args.goal_fraction <= 1:
        p.error(f"--goal-fraction: expected a probability in [0, 1], got {args.goal_fraction}")
    args.out = args.out or str(Path(args.run_dir) / "ema.safetensors")
    return args


def batch(args, g: torch.Generator, first: int) -> torch.Tensor:
    """``(B, 1, *volume)`` phantoms with seeds ``TRAIN_SEED_OFFSET + first + i``, randomly flipped and H/W-swapped."""
    vols = []
    for i in range(args.batch):
        v = ellipsoids(args.volume, seed=TRAIN_SEED_OFFSET + first + i)[0]
        flips = [d + 1 for d in range(3) if bool(torch.rand((), generator=g) < 0.5)]
        v = v.flip(flips) if flips else v
        if args.volume[1] == args.volume[2] and bool(torch.rand((), generator=g) < 0.5):
            v = v.transpose(-1, -2)
        vols.append(v)
    return torch.stack(vols)


def sample_sigma(args, n: int, g: torch.Generator) -> torch.Tensor:
    """Mixture: LogNormal(goal) with probability ``goal_fraction``, else EDM's LogNormal(p_mean, p_std)."""
    goal = torch.rand(n, generator=g) < args.goal_fraction
    z = torch.randn(n, generator=g)
    return torch.where(goal, torch.exp(args.goal_mean + args.goal_std * z), torch.exp(args.p_mean + args.p_std * z))


def lr_factor(step: int, args) -> float:
    """Linear warm-up, then 1, then ``(1 + cos(pi t)) / 2`` over the last ``decay_steps`` before ``max_steps``."""
    f = min(1.0, (step + 1) / args.warmup)
    start = args.max_steps - args.decay_steps
    if args.decay_steps > 0 and step >= start:
        f *= 0.5 * (1 + math.cos(math.pi * min(1.0, (step - start) / args.decay_steps)))
    return f


def plot_loss(run: Path, png: Path, parent: str | None = None) -> None:
    """Loss against step (each point the mean of 50 steps), log scale, preceded by the parent run's loss up to
    the step its export was taken (``parent = "RUN_DIR:STEPS"``); a CSV of the drawn rows is written beside."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, offset, seconds0 = [], 0, 0.0
    if parent:
        pdir, psteps = parent.rsplit(":", 1)
        rows = [r for r in csv.DictReader(open(Path(pdir) / "loss.csv")) if int(r["step"]) <= int(psteps)]
        runs.append((Path(pdir).name, rows, 0, 0.0))
        offset, seconds0 = int(psteps), float(rows[-1]["seconds"])
    rows = list(csv.DictReader(open(run / "loss.csv")))
    if not rows:
        raise SystemExit(f"{run / 'loss.csv'}: no loss rows yet")
    runs.append((run.name, rows, offset, seconds0))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    lines = ["run,step,seconds,loss"]
    for name, rs, off, sec0 in runs:
        steps = [off + int(r["step"]) for r in rs]
        ax.plot(steps, [float(r["loss"]) for r in rs], lw=1, label=name)
        lines += [f"{name},{off + int(r['step'])},{sec0 + float(r['seconds']):.2f},{r['loss']}" for r in rs]
    total = lines[-1].split(",")
    ax.set(xlabel="step (one 32x64x64 volume each)", ylabel="EDM-weighted loss (mean of 50 steps)", yscale="log",
           title=f"{png.stem}: {total[1]} steps, {float(total[2]) / 60:.0f} min (shared 2-core CPU)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = png.with_name(png.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, png)
    tmp_csv = png.with_suffix(".csv.tmp")
    tmp_csv.write_text("\n".join(lines) + "\n")
    os.replace(tmp_csv, png.with_suffix(".csv"))


def build(args) -> SliceResidualDenoiser:
    net = UNet(UNetConfig(in_channels=3 + 2 * len(args.z_windows), out_channels=1, channels=args.channels, dims=3))
    return SliceResidualDenoiser(priors.load(args.base), net, sigma_data=args.sigma_data, tile=args.volume,
                                 name=args.name, base_name=args.base, z_windows=args.z_windows)


def init_from(net: UNet, path: str) -> None:
    """Load an exported ``R_theta`` into ``net``; ``conv_in`` input channels beyond the file's get zero weights."""
    from safetensors.torch import load_file

    state = load_file(path)
    w = state["conv_in.weight"]
    if w.shape[1] < net.conv_in.weight.shape[1]:
        pad = torch.zeros(w.shape[0], net.conv_in.weight.shape[1] - w.shape[1], *w.shape[2:], dtype=w.dtype)
        state["conv_in.weight"] = torch.cat([w, pad], dim=1)
    net.load_state_dict(state)


def main(argv=None) -> None:
    args = parse_args(argv)
    run = Path(args.run_dir)
    if args.plot:
        plot_loss(run, Path(args.plot), args.plot_parent)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    run.mkdir(parents=True, exist_ok=True)
    model, ema = build(args), build(args)
    ema.net.load_state_dict(model.net.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.Adam(model.net.parameters(), lr=args.lr)
    g = torch.Generator().manual_seed(args.seed)
    step, seconds = 0, 0.0
    ckpt = run / "checkpoint.pt"
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        model.net.load_state_dict(state["model"])
        ema.net.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        g.set_state(state["rng"])
        step, seconds = int(state["step"]), float(state["seconds"])
        print(f"resumed from {ckpt} at step {step} ({seconds / 60:.1f} min trained)", flush=True)
    elif args.init:
        init_from(model.net, args.init)
        init_from(ema.net, args.init)
        print(f"initialised from {args.init}", flush=True)
    n_params = sum(p.numel() for p in model.net.parameters())
    print(f"R_theta UNet dims=3 {args.channels}: {n_params / 1e6:.2f} M parameters, {torch.get_num_threads()} threads",
          flush=True)
    log_path = run / "loss.csv"
    new_log = not log_path.exists()
    log = open(log_path, "a", newline="")
    writer = csv.writer(log)
    if new_log:
        writer.writerow(["step", "seconds", "loss"])
    info = {"train_data": "invdiff.data.ellipsoids", "train_volume": list(args.volume),
            "train_seed_offset": TRAIN_SEED_OFFSET, "train_batch": args.batch,
            "train_init": Path(args.init).name if args.init else None, "train_first_volume": args.first_volume,
            "train_sigma": f"{args.goal_fraction} LogNormal({args.goal_mean:.3f}, {args.goal_std}) + "
                           f"{1 - args.goal_fraction:.2f} LogNormal({args.p_mean}, {args.p_std})"}

    def save_all():
        atomic_torch_save({"model": model.net.state_dict(), "ema": ema.net.state_dict(), "opt": opt.state_dict(),
                           "rng": g.get_state(), "step": step, "seconds": seconds}, ckpt)
        extra = {"train_steps": step, "train_seconds": round(seconds, 1)} | info
        ema.save(args.out, overwrite=True, extra=extra)
        ema.save(run / f"ema-{step}.safetensors", overwrite=True, extra=extra)
        log.flush()

    t_start, running = time.perf_counter(), []
    while step < args.max_steps and time.perf_counter() - t_start < args.minutes * 60:
        t0 = time.perf_counter()
        x0 = batch(args, g, args.first_volume + step * args.batch)
        sigma = sample_sigma(args, args.batch, g)
        noise = torch.randn(x0.shape, generator=g)
        loss = model.training_loss(x0, sigma, noise)
        for group in opt.param_groups:
            group["lr"] = args.lr * lr_factor(step, args)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.net.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(args.ema, (1 + step) / (10 + step))
            for pe, pm in zip(ema.net.parameters(), model.net.parameters()):
                pe.lerp_(pm, 1 - decay)
        step += 1
        seconds += time.perf_counter() - t0
        running.append(float(loss.detach()))
        if not math.isfinite(running[-1]):
            raise FloatingPointError(f"training diverged at step {step}: loss {running[-1]}")
        if step % 50 == 0:
            writer.writerow([step, round(seconds, 2), round(sum(running) / len(running), 5)])
            log.flush()
            print(f"step {step}  {seconds / step:.2f} s/step  loss {sum(running) / len(running):.4f}", flush=True)
            running = []
        if step % args.export_every == 0:
            save_all()
    save_all()
    print(f"stopped at step {step}, {seconds / 60:.1f} min of training; EMA weights in {args.out}", flush=True)


def atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
