"""PSNR of a 3D prior against the 2D prior slice by slice, on 32x64x64 ellipsoid volumes.

Volumes ``data.ellipsoids((32, 64, 64), seed=s)`` for ``--seeds`` (default 1, 2, 3: the held-out test
volumes of tests/test_prior3d.py; use e.g. ``--seeds 777002,777003,777004`` for tuning decisions),
Gaussian noise ``sigma * randn(generator=manual_seed(--noise-seed))`` drawn for the stacked volumes as in
the test, PSNR with data range 1. Prints one markdown row per prior and sigma: PSNR per volume and the
gain over ``SliceDenoiser(priors.load("phantom-ct-64"))``.

    python data_scripts/eval_prior3d.py runs/phantom-ct-3d-residual/ema-300.safetensors phantom-ct-3d
"""

from __future__ import annotations

import argparse

import torch

from invdiff import data, metrics, priors


def psnrs(D, vols: torch.Tensor, sigma: float, noise_seed: int = 7) -> list[float]:
    noisy = vols + sigma * torch.randn(vols.shape, generator=torch.Generator().manual_seed(noise_seed))
    with torch.no_grad():
        return [float(metrics.psnr(D(noisy[i : i + 1], sigma), vols[i : i + 1], data_range=1.0)) for i in range(len(vols))]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("priors", nargs="+", help="3D priors: embedded names or .safetensors files")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--sigmas", default="0.1,0.2")
    p.add_argument("--noise-seed", type=int, default=7)
    p.add_argument("--tiled", action="store_true", help="wrap each prior in TiledDenoiser(patch=32, overlap=8)")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    seeds = [int(s) for s in a.seeds.split(",")]
    sigmas = [float(s) for s in a.sigmas.split(",")]
    vols = torch.cat([data.ellipsoids((32, 64, 64), seed=s) for s in seeds])
    ref = priors.SliceDenoiser(priors.load("phantom-ct-64"))
    base = {s: psnrs(ref, vols, s, a.noise_seed) for s in sigmas}
    fmt = lambda v: " / ".join(f"{x:.2f}" for x in v)  # noqa: E731
    print(f"volumes {seeds}, noise seed {a.noise_seed}")
    print("| prior | sigma | PSNR per volume | gain over 2D slice by slice |\n|---|---|---|---|")
    for s in sigmas:
        print(f"| 2D prior slice by slice | {s} | {fmt(base[s])} | |")
    for name in a.priors:
        D = priors.load(name)
        if a.tiled:
            D = priors.TiledDenoiser(D, patch=32, overlap=8)
        for s in sigmas:
            v = psnrs(D, vols, s, a.noise_seed)
            print(f"| {name} | {s} | {fmt(v)} | {fmt([x - b for x, b in zip(v, base[s])])} |", flush=True)


if __name__ == "__main__":
    main()
