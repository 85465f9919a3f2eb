"""Train invdiff's shipped priors: an EDM-preconditioned UNet on random phantoms.

``--dims 2`` (default) trains "phantom-ct-64" on 64x64 random-ellipse phantoms (``data.ellipses``);
``--dims 3`` trains the native 3D prior "phantom-ct-3d" on random crops (``--crop``, default 32^3) of
3D ellipsoid phantoms (``data.ellipsoids(--volume)``, default 32x64x64). Training volumes use seeds
``>= 1_000_000`` (``TRAIN_SEED_OFFSET``), so small seeds stay held out for tests.

Resumable: the run directory keeps ``checkpoint.pt`` (plain state dicts, loadable with
``torch.load(weights_only=True)``) and ``loss.csv``; run the same command again to continue.
The EMA weights are exported every ``--export-every`` steps and at the end, as safetensors + JSON.

    python data_scripts/train_prior.py --minutes 90
    python data_scripts/train_prior.py --minutes 30          # continues where it stopped
    python data_scripts/train_prior.py --dims 3 --threads 1 --minutes 80   # the 3D prior

Training recipe (EDM, Karras et al. 2022): sigma ~ LogNormal(P_mean=-1.2, P_std=1.2), loss weight
lambda(sigma) = (sigma^2 + s_d^2) / (sigma s_d)^2, Adam, EMA of the weights; horizontal flips (2D),
random crops and flips along each axis (3D).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import os
import time
from pathlib import Path

import torch
from tqdm import tqdm

from invdiff.bench.prior_quality import other_generator_batch
from invdiff.data.phantoms import clutter, ellipses, ellipsoids, shapes
from invdiff.priors.edm import EDMDenoiser
from invdiff.priors.unet import UNet, UNetConfig

ROOT = Path(__file__).resolve().parents[1]
TRAIN_SEED_OFFSET = 1_000_000  # 3D training volume k has seed TRAIN_SEED_OFFSET + k; tests use smaller seeds
DEFAULT_NAME = {2: "phantom-ct-64", 3: "phantom-ct-3d"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dims", type=int, default=2, choices=(2, 3), help="2: images, 3: volumes")
    p.add_argument("--name", default=None, help="prior name (default: phantom-ct-64 / phantom-ct-3d by --dims)")
    p.add_argument("--out", default=None, help="default: invdiff/priors/weights/<name>.safetensors")
    p.add_argument("--run-dir", default=None, help="default: runs/<name>")
    p.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget of this invocation")
    p.add_argument("--max-steps", type=int, default=1_000_000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=64, help="2D image size")
    p.add_argument("--volume", default="32,64,64", help="3D: D,H,W of each ellipsoid phantom")
    p.add_argument("--crop", default="32,32,32", help="3D: D,H,W of the random training crops")
    p.add_argument("--crops-per-volume", type=int, default=2, help="3D: crops taken from each phantom")
    p.add_argument("--channels", default="32,64,96")
    p.add_argument("--blocks", type=int, default=1)
    p.add_argument("--extra-blocks", type=int, default=0,
                   help="identity-initialised residual blocks per level (UNetConfig.extra_blocks); with --init "
                        "from a network with fewer, that network is grown without changing what it computes")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--decay-steps", type=int, default=0,
                   help="cosine-anneal the learning rate to 0 over the last N steps before --max-steps (0: constant)")
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--p-mean", type=float, default=-1.2)
    p.add_argument("--p-std", type=float, default=1.2)
    p.add_argument("--sigma-data", type=float, default=0.5)
    p.add_argument("--export-every", type=int, default=500)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=20261123)
    p.add_argument("--data", default="ellipses", choices=tuple(MIXTURES),
                   help="2D training images: data.ellipses; 'mixed': half data.ellipses, half data.shapes; "
                        "'broad': a third each of data.ellipses, data.shapes and data.clutter; 'other-generator': deepinv's "
                        "random phantoms, the held-out test family (a diagnostic of the achievable gain, never shipped)")
    p.add_argument("--init", default=None, metavar="SAFETENSORS",
                   help="start a new run from these weights (an invdiff prior of the same network), e.g. to fine-tune")
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="only draw <run-dir>/loss.csv into this figure (and copy the CSV beside it), then exit")
    args = p.parse_args(argv)
    args.name = args.name or DEFAULT_NAME[args.dims]
    args.out = args.out or str(ROOT / f"invdiff/priors/weights/{args.name}.safetensors")
    args.run_dir = args.run_dir or str(ROOT / f"runs/{args.name}")
    if args.dims == 3:
        args.volume, args.crop = _shape3(args.volume, "--volume"), _shape3(args.crop, "--crop")
        if any(c > v for c, v in zip(args.crop, args.volume)):
            p.error(f"--crop {args.crop} must fit inside --volume {args.volume}")
        if args.crops_per_volume < 1 or args.batch % args.crops_per_volume:
            p.error(f"--crops-per-volume {args.crops_per_volume} must be >= 1 and divide --batch {args.batch}")
    return args


def _shape3(text: str, arg: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 2:
        raise SystemExit(f"{arg}: expected three sizes D,H,W >= 2, got {text!r}")
    return shape


# --data: the phantom families of each 2D batch, in equal shares (the first family takes the remainder)
MIXTURES = {"ellipses": (ellipses,), "mixed": (ellipses, shapes), "broad": (ellipses, shapes, clutter),
            # a diagnostic, never shipped: the held-out generator itself, to estimate what a prior could gain there
            "other-generator": (other_generator_batch,)}


def _family_name(make) -> str:
    """``invdiff.data.clutter`` for invdiff's phantom families, the full dotted name for others."""
    module = "invdiff.data" if make.__module__.startswith("invdiff.data") else make.__module__
    return f"{module}.{make.__name__}"


def batch_2d(args, g: torch.Generator) -> torch.Tensor:
    """``(B, 1, H, W)`` phantoms of the ``--data`` mixture (:data:`MIXTURES`: ``ellipses``, ``mixed`` = ellipses and
    random shapes, ``broad`` = ellipses, shapes and low-contrast clutter), each flipped left-right with probability 1/2."""
    families = MIXTURES[args.data]
    k = args.batch // len(families)
    counts = [args.batch - k * (len(families) - 1)] + [k] * (len(families) - 1)
    x0 = torch.cat([make(n, args.size, generator=g) for make, n in zip(families, counts)])
    flip = torch.rand(args.batch, generator=g) < 0.5
    return torch.where(flip[:, None, None, None], x0.flip(-1), x0)


def batch_3d(args, g: torch.Generator, step: int) -> torch.Tensor:
    """``(B, 1, *crop)``: ``crops_per_volume`` random crops of each of ``B / crops_per_volume`` ellipsoid
    phantoms (seeds ``TRAIN_SEED_OFFSET + step * n + i``, never reused), each flipped along every axis
    with probability 1/2."""
    n = args.batch // args.crops_per_volume
    crops = []
    for i in range(n):
        vol = ellipsoids(args.volume, seed=TRAIN_SEED_OFFSET + step * n + i)[0]
        for _ in range(args.crops_per_volume):
            start = [int(torch.randint(0, v - c + 1, (), generator=g)) for v, c in zip(args.volume, args.crop)]
            crop = vol[:, start[0]:start[0] + args.crop[0], start[1]:start[1] + args.crop[1],
                       start[2]:start[2] + args.crop[2]]
            flips = [d + 1 for d in range(3) if bool(torch.rand((), generator=g) < 0.5)]
            crops.append(crop.flip(flips) if flips else crop)
    return torch.stack(crops)


def atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def lr_decay(step: int, max_steps: int, decay_steps: int) -> float:
    """Learning-rate factor: 1, then ``(1 + cos(pi t)) / 2`` for ``t`` from 0 to 1 over the last ``decay_steps``."""
    start = max_steps - decay_steps
    if decay_steps <= 0 or step < start:
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - start) / decay_steps)))


def plot_loss(csv_path: Path, png: Path) -> None:
    """The training loss (each point the mean over 50 steps) against the step, log-scaled; copies the CSV
    next to the figure (``<png stem>.csv``). Both written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(csv_path)))
    if not rows:
        raise SystemExit(f"{csv_path}: no loss rows yet")
    steps = [int(r["step"]) for r in rows]
    loss = [float(r["loss"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, loss, lw=1)
    ax.set(xlabel="step", ylabel="EDM-weighted loss (mean of 50 steps)", yscale="log",
           title=f"{png.stem}: {steps[-1]} steps, {float(rows[-1]['seconds']) / 60:.0f} min")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = png.with_name(png.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, png)
    tmp_csv = png.with_suffix(".csv.tmp")
    tmp_csv.write_text(Path(csv_path).read_text())
    os.replace(tmp_csv, png.with_suffix(".csv"))


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.plot:
        plot_loss(Path(args.run_dir) / "loss.csv", Path(args.plot))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    run = Path(args.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    cfg = UNetConfig(channels=tuple(int(c) for c in args.channels.split(",")), blocks_per_level=args.blocks,
                     extra_blocks=args.extra_blocks, dims=args.dims)
    model = EDMDenoiser(UNet(cfg), sigma_data=args.sigma_data, name=args.name).to(dev)
    ema = EDMDenoiser(UNet(cfg), sigma_data=args.sigma_data, name=args.name).to(dev)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    g = torch.Generator().manual_seed(args.seed)
    step, seconds = 0, 0.0
    ckpt = run / "checkpoint.pt"
    if ckpt.exists():
        state = torch.load(ckpt, map_location=dev, weights_only=True)
        model.net.load_state_dict(state["model"])
        ema.net.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        g.set_state(state["rng"])
        step, seconds = int(state["step"]), float(state["seconds"])
        print(f"resumed from {ckpt} at step {step} ({seconds / 60:.1f} min trained)")
    elif args.init:
        init = EDMDenoiser.from_file(args.init)
        grown = dataclasses.replace(init.net.config, extra_blocks=cfg.extra_blocks)
        if grown != cfg or init.net.config.extra_blocks > cfg.extra_blocks:
            raise SystemExit(f"--init {args.init}: its network {init.net.config} differs from this run's {cfg} "
                             "(only a smaller extra_blocks may differ)")
        new = model.net.load_grown(init.net.state_dict())
        ema.load_state_dict(model.state_dict())
        print(f"initialised from {args.init}" + (f" ({len(new)} new tensors in the extra blocks)" if new else ""))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"UNet dims={cfg.dims} {cfg.channels} x{cfg.blocks_per_level} (+{cfg.extra_blocks}): {n_params / 1e6:.2f} M parameters, "
          f"device {dev}, {torch.get_num_threads()} threads")

    log_path = run / "loss.csv"
    new_log = not log_path.exists()
    log = open(log_path, "a", newline="")
    writer = csv.writer(log)
    if new_log:
        writer.writerow(["step", "seconds", "loss"])

    if args.dims == 2:
        train_info = {"train_data": ", ".join(_family_name(f) for f in MIXTURES[args.data])
                      + (" in equal shares" if len(MIXTURES[args.data]) > 1 else "")}
        if args.init:
            train_info["train_init"] = Path(args.init).name
    else:
        train_info = {"train_data": "invdiff.data.ellipsoids", "train_volume": list(args.volume),
                      "train_crop": list(args.crop), "train_seed_offset": TRAIN_SEED_OFFSET}

    def save_all():
        atomic_torch_save({"model": model.net.state_dict(), "ema": ema.net.state_dict(), "opt": opt.state_dict(),
                           "rng": g.get_state(), "step": step, "seconds": seconds}, ckpt)
        ema.save(args.out, overwrite=True, extra={"train_steps": step, "train_seconds": round(seconds, 1),
                                                  "train_batch": args.batch} | train_info)
        log.flush()

    budget = args.minutes * 60
    t_start = time.perf_counter()
    running = []
    bar = tqdm(total=args.max_steps, initial=step, desc="train", unit="step", mininterval=5)
    while step < args.max_steps and time.perf_counter() - t_start < budget:
        t0 = time.perf_counter()
        x0 = (batch_2d(args, g) if args.dims == 2 else batch_3d(args, g, step)).to(dev)
        sigma = torch.exp(args.p_mean + args.p_std * torch.randn(args.batch, generator=g)).to(dev)
        noise = torch.randn(x0.shape, generator=g).to(dev)
        s = sigma.reshape(-1, *([1] * (x0.ndim - 1)))
        weight = (s**2 + args.sigma_data**2) / (s * args.sigma_data) ** 2
        D = model(x0 + s * noise, sigma)
        loss = (weight * (D - x0) ** 2).mean()
        for group in opt.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / args.warmup) * lr_decay(step, args.max_steps, args.decay_steps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
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
            bar.set_postfix(loss=f"{sum(running) / len(running):.4f}")
            log.flush()
            running = []
        if step % args.export_every == 0:
            save_all()
        bar.update(1)
    bar.close()
    save_all()
    print(f"stopped at step {step}, {seconds / 60:.1f} min of training; weights in {args.out}")


if __name__ == "__main__":
    main()
