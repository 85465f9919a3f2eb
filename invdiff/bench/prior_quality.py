"""How good is a 2D prior as a denoiser? Against total variation tuned per noise level.

    python -m invdiff.bench.prior_quality [--prior phantom-ct-64] [--n 16] [--figure docs/prior_samples.png]

Held-out test images: random-ellipse phantoms drawn with seeds the training never uses (training
streams phantoms from its own generator seeded 20261123) plus the Shepp-Logan phantom, all 64x64 in
[0, 1]. The TV denoiser (deepinv's ``TVDenoiser``) gets, for each sigma, the weight that maximises
its mean PSNR on a separate tuning set, picked from a log-spaced grid. Also times the denoiser at
batch 1 and 16 and draws unconditional samples with a plain Euler-Heun (EDM) sampler.
"""

from __future__ import annotations

import argparse
import time

import deepinv as dinv
import torch

from invdiff.data import clutter, ellipses, shapes, shepp_logan

SIGMAS = (0.05, 0.1, 0.2)
TV_FACTORS = (0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0)  # TV's weight grid, in units of sigma
TEST_SEED = 777_001
TUNE_SEED = 777_002


def psnr(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR for data range 1."""
    mse = ((x - ref) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse)


def test_images(n: int, size: int = 64) -> torch.Tensor:
    return torch.cat([ellipses(n, size, seed=TEST_SEED), shepp_logan(size)])


@torch.no_grad()
def tv_denoise(y: torch.Tensor, weight: float, iters: int = 200) -> torch.Tensor:
    return dinv.models.TVDenoiser(n_it_max=iters, crit=1e-6)(y, ths=weight)


@torch.no_grad()
def tune_tv(sigma: float, n: int = 8, grid=None, seed: int = TUNE_SEED, x: torch.Tensor | None = None,
            generator: torch.Generator | None = None) -> float:
    """The TV weight with the best mean PSNR on a tuning set (never the test set).

    The tuning set is ``x``, or ``n`` ellipse phantoms drawn with ``seed``; its noise comes from
    ``generator`` (default: one seeded with ``seed``).
    """
    grid = grid if grid is not None else [sigma * f for f in (0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0)]
    x = ellipses(n, 64, seed=seed) if x is None else x
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    y = x + sigma * torch.randn(x.shape, generator=g)
    scores = [float(psnr(tv_denoise(y, w), x).mean()) for w in grid]
    return grid[max(range(len(grid)), key=scores.__getitem__)]


@torch.no_grad()
def compare(prior, n: int = 16, sigmas=SIGMAS, seed: int = 0) -> list[dict]:
    """Mean PSNR of the prior's denoiser and of tuned TV on held-out phantoms, for each sigma."""
    x = test_images(n)
    rows = []
    for sigma in sigmas:
        g = torch.Generator().manual_seed(seed + int(sigma * 1000))
        y = x + sigma * torch.randn(x.shape, generator=g)
        w = tune_tv(sigma)
        p_prior = psnr(prior(y, sigma).clamp(0, 1), x)
        p_tv = psnr(tv_denoise(y, w), x)
        rows.append({"sigma": sigma, "prior_db": float(p_prior[:-1].mean()), "tv_db": float(p_tv[:-1].mean()),
                     "prior_shepp_db": float(p_prior[-1]), "tv_shepp_db": float(p_tv[-1]), "tv_weight": w})
    return rows


def other_generator_images(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """``n`` phantoms from deepinv's ``RandomPhantomDataset`` generator (``deepinv.utils.phantoms``), which no
    shipped prior is trained on: about 50 overlapping ellipses of random signed contrast, clipped to [0, 1].

    That generator draws from NumPy's global random state; it is seeded here and restored afterwards.
    """
    import warnings

    import numpy as np
    from deepinv.utils.phantoms import generate_random_phantom

    state = np.random.get_state()
    try:
        np.random.seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch.meshgrid's indexing notice inside deepinv
            imgs = [generate_random_phantom(size) for _ in range(n)]
    finally:
        np.random.set_state(state)
    return torch.stack(imgs)[:, None].to(torch.float32)


def other_generator_batch(n: int, size: int = 64, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` fresh phantoms of deepinv's generator (:func:`other_generator_images`), for training the *ceiling*
    diagnostic only (``train_prior.py --data other-generator``): a prior trained on them is never shipped, since
    this generator is the held-out test of generalisation. The NumPy seed is drawn from ``generator`` in
    ``[1000, 2**31)``, so it is never the test set's (1) or the tuning set's (2)."""
    seed = int(torch.randint(1000, 2**31 - 1, (), generator=generator))
    return other_generator_images(n, size, seed=seed)


def _against_tuned_tv(prior, x: torch.Tensor, x_tune: torch.Tensor, sigma: float, g: torch.Generator,
                      factors=TV_FACTORS) -> tuple[torch.Tensor, torch.Tensor, float, bool]:
    """Per-image PSNR of the prior's denoiser and of TV on ``x + sigma n``, TV's weight tuned over ``sigma * factors``
    on ``x_tune`` (its noise drawn from ``g`` first, then the test noise); also the weight and whether it lies at
    the grid's edge (then the grid would be too narrow for TV to be fairly tuned)."""
    grid = [sigma * f for f in factors]
    best = grid.index(tune_tv(sigma, grid=grid, x=x_tune, generator=g))
    y = x + sigma * torch.randn(x.shape, generator=g)
    return (psnr(prior(y, sigma).clamp(0, 1), x), psnr(tv_denoise(y, grid[best]), x), grid[best],
            best in (0, len(grid) - 1))


@torch.no_grad()
def compare_other_generator(prior, n: int = 8, sigmas=SIGMAS, seed: int = 0, factors=TV_FACTORS) -> list[dict]:
    """Mean PSNR of the prior's denoiser and of tuned TV on another generator's phantoms and on Shepp-Logan.

    Test images: ``n`` phantoms of :func:`other_generator_images` (seed 1) and deepinv's own
    Shepp-Logan (``deepinv.utils.phantoms.generate_shepp_logan``). TV's weight is tuned for each sigma
    on ``n`` other phantoms of the same generator (seed 2), over ``sigma * factors``; a best weight at the
    grid's edge is reported (``tv_weight_at_edge``) since the grid would then be too narrow.
    """
    from deepinv.utils.phantoms import generate_shepp_logan

    x = torch.cat([other_generator_images(n, seed=1), generate_shepp_logan(64)[None, None].float()])
    x_tune = other_generator_images(n, seed=2)
    rows = []
    for sigma in sigmas:
        g = torch.Generator().manual_seed(seed + int(sigma * 1000))
        p_prior, p_tv, w, at_edge = _against_tuned_tv(prior, x, x_tune, sigma, g, factors)
        rows.append({"sigma": sigma, "prior_db": float(p_prior[:-1].mean()), "tv_db": float(p_tv[:-1].mean()),
                     "min_gain_db": float((p_prior - p_tv)[:-1].min()),
                     "prior_shepp_db": float(p_prior[-1]), "tv_shepp_db": float(p_tv[-1]), "tv_weight": w,
                     "tv_weight_at_edge": at_edge})
    return rows


FAMILIES = {"ellipses": ellipses, "shapes": shapes, "clutter": clutter}  # invdiff's 2D training families


def family_images(family: str, n: int, seed: int, size: int = 64) -> torch.Tensor:
    """``n`` phantoms of one family: ``ellipses``, ``shapes`` or ``clutter`` (:data:`FAMILIES`, drawn with their
    own seed, not the training stream) or ``other`` (deepinv's generator, :func:`other_generator_images`)."""
    if family == "other":
        return other_generator_images(n, size, seed=seed)
    if family not in FAMILIES:
        raise ValueError(f"family: unknown {family!r}; expected one of {[*FAMILIES, 'other']}")
    return FAMILIES[family](n, size, seed=seed)


@torch.no_grad()
def compare_families(prior, n: int = 8, sigmas=SIGMAS, families=(*FAMILIES, "other"),
                     factors=TV_FACTORS) -> list[dict]:
    """The prior's gain over tuned TV family by family: is a small gain a failure to generalise (large in the
    training families, small on the other generator) or a limit of denoising that kind of image at that noise?

    For each family and sigma, TV's weight is tuned over ``sigma * factors`` on ``n`` images of the family (seed
    2), and both denoisers are scored on ``n`` others (seed 1; for ``other`` these are
    :func:`compare_other_generator`'s images and noise, without Shepp-Logan).
    """
    rows = []
    for family in families:
        x, x_tune = family_images(family, n, seed=1), family_images(family, n, seed=2)
        for sigma in sigmas:
            g = torch.Generator().manual_seed(int(sigma * 1000))
            p_prior, p_tv, w, _ = _against_tuned_tv(prior, x, x_tune, sigma, g, factors)
            rows.append({"family": family, "sigma": sigma, "prior_db": float(p_prior.mean()),
                         "tv_db": float(p_tv.mean()), "gain_db": float((p_prior - p_tv).mean()), "tv_weight": w})
    return rows


@torch.no_grad()
def sample(prior, n: int = 16, steps: int = 40, seed: int = 0, size: int = 64) -> torch.Tensor:
    """Unconditional samples by EDM's deterministic Heun sampler (Karras et al. 2022, Alg. 1)."""
    from invdiff.solvers.schedules import karras_sigmas

    g = torch.Generator().manual_seed(seed)
    sig = karras_sigmas(steps, prior.sigma_min, prior.sigma_max)
    x = torch.randn(n, 1, size, size, generator=g, dtype=torch.float64) * sig[0]
    for i in range(steps):
        s, s_next = float(sig[i]), float(sig[i + 1])
        d = (x - prior(x.float(), s).double()) / s  # 1. dx/dsigma = (x - D) / sigma
        x_next = x + (s_next - s) * d  # 2. Euler step
        if s_next > 0:  # 3. Heun correction
            d2 = (x_next - prior(x_next.float(), s_next).double()) / s_next
            x_next = x + (s_next - s) * (d + d2) / 2
        x = x_next
    return x.float()


def timing(prior, batch: int, repeats: int = 10) -> float:
    x = torch.rand(batch, 1, 64, 64)
    with torch.no_grad():
        prior(x, 0.1)
        t = time.perf_counter()
        for _ in range(repeats):
            prior(x, 0.1)
    return (time.perf_counter() - t) / repeats / batch


def families_figure(path, n: int = 6, seed: int = 9) -> None:
    """Draw ``n`` phantoms of each 2D training family and of the held-out generator, one row each, into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from invdiff.utils import atomic_path

    titles = {"ellipses": "data.ellipses (trained on)", "shapes": "data.shapes (trained on)",
              "clutter": "data.clutter (trained on)", "other": "deepinv RandomPhantomDataset (held out)"}
    rows = {title: family_images(family, n, seed=seed) for family, title in titles.items()}
    fig, axes = plt.subplots(len(rows), n, figsize=(1.6 * n, 1.75 * len(rows)), squeeze=False)
    for ax_row, (title, xs) in zip(axes, rows.items()):
        for ax, im in zip(ax_row, xs):
            ax.imshow(im[0], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        ax_row[0].set_title(title, loc="left", fontsize=9)
    fig.tight_layout()
    with atomic_path(path, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


def main(argv=None) -> None:
    from invdiff import priors

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prior", default="phantom-ct-64")
    p.add_argument("--n", type=int, default=16, help="held-out ellipse phantoms (plus Shepp-Logan)")
    p.add_argument("--figure", default=None, help="write a PNG of unconditional samples here")
    p.add_argument("--families", default=None, metavar="PNG",
                   help="only draw the 2D training families (ellipses, shapes, clutter) and the held-out generator "
                        "into this figure, then exit")
    p.add_argument("--by-family", action="store_true",
                   help="only print the gain over tuned TV on each training family and on the held-out generator")
    args = p.parse_args(argv)
    if args.families:
        families_figure(args.families)
        print(f"wrote {args.families}")
        return
    prior = priors.load(args.prior)
    print(f"prior {args.prior}: {sum(q.numel() for q in prior.parameters()) / 1e6:.2f} M parameters")
    if args.by_family:
        print(f"Gain over tuned TV by family ({max(args.n // 2, 1)} test images each; TV tuned on as many others):")
        print("| family | sigma | prior PSNR | TV PSNR (tuned) | gain |")
        print("|---|---|---|---|---|")
        for r in compare_families(prior, max(args.n // 2, 1)):
            print(f"| {r['family']} | {r['sigma']} | {r['prior_db']:.2f} | {r['tv_db']:.2f} | {r['gain_db']:+.2f} |")
        return
    print("| sigma | prior PSNR | TV PSNR (tuned) | gain | prior Shepp-Logan | TV Shepp-Logan | TV weight |")
    print("|---|---|---|---|---|---|---|")
    for r in compare(prior, args.n):
        print(f"| {r['sigma']} | {r['prior_db']:.2f} | {r['tv_db']:.2f} | {r['prior_db'] - r['tv_db']:+.2f} | "
              f"{r['prior_shepp_db']:.2f} | {r['tv_shepp_db']:.2f} | {r['tv_weight']:.4f} |")
    print(f"\nAnother generator (deepinv RandomPhantomDataset, {args.n // 2} test images; TV tuned on as many others) "
          "and deepinv's Shepp-Logan:")
    print("| sigma | prior PSNR | TV PSNR (tuned) | gain (mean) | gain (worst image) | prior Shepp-Logan | TV Shepp-Logan | TV weight |")
    print("|---|---|---|---|---|---|---|---|")
    for r in compare_other_generator(prior, max(args.n // 2, 1)):
        print(f"| {r['sigma']} | {r['prior_db']:.2f} | {r['tv_db']:.2f} | {r['prior_db'] - r['tv_db']:+.2f} | "
              f"{r['min_gain_db']:+.2f} | {r['prior_shepp_db']:.2f} | {r['tv_shepp_db']:.2f} | {r['tv_weight']:.4f} |")
    for b in (1, 16):
        print(f"denoiser forward, batch {b}: {1000 * timing(prior, b):.2f} ms per 64x64 image "
              f"({torch.get_num_threads()} threads)")
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from invdiff.utils import atomic_path

        xs = sample(prior, 16)
        fig, axes = plt.subplots(2, 8, figsize=(16, 4.4))
        for ax, im in zip(axes.flat, xs):
            ax.imshow(im[0].clamp(0, 1), cmap="gray", vmin=0, vmax=1)
            ax.axis("off")
        fig.suptitle(f"Unconditional samples from '{args.prior}' (EDM Heun sampler, 40 steps)")
        fig.tight_layout()
        with atomic_path(args.figure, overwrite=True) as tmp:
            fig.savefig(tmp, dpi=80, format="png")
        print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
