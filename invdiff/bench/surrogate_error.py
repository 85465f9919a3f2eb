r"""How well can a surrogate predict the network's next Tweedie estimate? (issue 11: why SMC's weights degenerate)

The Gaussian proposal of :class:`invdiff.solvers.SMC` (:mod:`invdiff.solvers.tweedie_smc`) predicts the estimate at
the next noise level from the move ``x_k -> x'`` as ``x0_hat + a (x' - m)``, with ``m = x0_hat + kappa (x_k - x0_hat)``
the mean of the move and ``a`` one number per ensemble. Its weight increment is the error of that prediction seen
through ``A``::

    e = D(x', sigma') - [x0_hat + a (x' - m)],   log w += r_lin^T G^{-1} A e - 1/2 (A e)^T G^{-1} A e

so the weights can only stay balanced if ``|e|`` is small. This module measures ``|e|^2`` on images of the prior's
own generator for three predictors:

* **best scalar**: ``a`` fitted by least squares to this very draw (a lower bound for any one-number surrogate,
  the ensemble-fitted ``prior_std="auto"`` included);
* **pixel map**: ``a_i`` from a per-pixel prior variance ``c_i^2`` (``tau_i^2 = sigma^2 c_i^2 / (sigma^2 + c_i^2)``,
  ``a_i = (1 - kappa) tau_i^2 / (kappa h + (1 - kappa)^2 tau_i^2)``), the variance map of the generator;
* **first order**: ``D(m, sigma') + J(m) (x' - m)``, ``J`` the network's Jacobian (one JVP), the "Jacobian-aware
  surrogate" (an extra network call and a JVP per step, not implemented in SMC).

``x'`` is drawn from the forward bridge given the true image ``x0``:
``x' = x0 + kappa (x_k - x0) + sqrt(kappa h) n`` with ``x_k = x0 + sigma n_0``. For a Gaussian prior with
per-pixel variances ``c_i^2`` the pixel map is exact (``e = 0``: ``D`` is affine and ``E[x0 | x', x_k] = E[x0 | x']``),
and for ``c_i = c`` the scalar is too; :func:`surrogate_errors` checks nothing else.

Run ``python -m invdiff.bench.surrogate_error [--images 4] [--reps 3] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import math
import sys

import torch
from torch import Tensor
from torch.func import jvp

from invdiff.bench.report import emit_markdown
from invdiff.validate import check_positive_int

SIGMAS = (3.0, 1.0, 0.3, 0.1, 0.03, 0.01)
STEP_RATIO = 0.93  # sigma' / sigma: about one step of the 100-step Karras schedule at these levels


def pixel_gain(c2: Tensor, sigma: float, kappa: float, h: float) -> Tensor:
    """``a_i`` of the surrogate ``x0 | x' ~ N(x0_hat + a (x' - m), ...)`` for per-pixel prior variances ``c2``."""
    tau2 = sigma**2 * c2 / (sigma**2 + c2)
    return (1 - kappa) * tau2 / (kappa * h + (1 - kappa) ** 2 * tau2)


def surrogate_errors(denoiser, x0: Tensor, c2_map: Tensor, sigmas=SIGMAS, reps: int = 3, seed: int = 1,
                     ratio: float = STEP_RATIO) -> list[dict]:
    """Per ``sigma``: mean over ``reps`` draws of ``|d|^2`` (``d = D(x', sigma') - x0_hat``, the change to predict)
    and of ``|e|^2`` for the three predictors of the module docstring, summed over the images ``x0``.

    ``denoiser(x, sigma)`` takes float32 images; ``c2_map`` broadcasts against ``x0`` (per-pixel prior variances)."""
    check_positive_int("reps", reps)
    if not 0 < ratio < 1:
        raise ValueError(f"ratio: expected sigma'/sigma in (0, 1), got {ratio!r}")
    g = torch.Generator().manual_seed(int(seed))
    x0 = x0.double()

    def D(x: Tensor, s: float) -> Tensor:
        with torch.no_grad():
            return denoiser(x.float(), torch.tensor(float(s))).double()

    rows = []
    for sigma in sigmas:
        sn = ratio * sigma
        h, kappa = sigma**2 - sn**2, sn**2 / sigma**2
        x = x0 + sigma * torch.randn(x0.shape, generator=g, dtype=torch.float64)
        x0_hat = D(x, sigma)
        m = x0_hat + kappa * (x - x0_hat)
        # all draws at once, (reps, B, ...): one network call for D(x'), one JVP whose primal is D(m, sigma')
        xp = x0 + kappa * (x - x0) + math.sqrt(kappa * h) * torch.randn((reps, *x0.shape), generator=g,
                                                                        dtype=torch.float64)
        dx = xp - m
        d = D(xp.flatten(0, 1), sn).reshape(xp.shape) - x0_hat
        with torch.no_grad():
            D_m, J_dx = jvp(lambda z: denoiser(z, torch.tensor(float(sn))), (m.expand_as(xp).flatten(0, 1).float(),),
                            (dx.flatten(0, 1).float(),))
        e_first = d + x0_hat - (D_m + J_dx).double().reshape(xp.shape)
        a = ((d * dx).flatten(1).sum(1) / (dx * dx).flatten(1).sum(1)).reshape(reps, *[1] * x0.ndim)  # per draw
        a_map = pixel_gain(c2_map.double(), sigma, kappa, h)

        def mean_sq(e: Tensor) -> float:  # summed over the images and pixels, averaged over the draws
            return float(e.pow(2).flatten(1).sum(1).mean())

        rows.append({"sigma": sigma, "change": mean_sq(d), "best scalar": mean_sq(d - a * dx),
                     "pixel map": mean_sq(d - a_map * dx), "first order": mean_sq(e_first)})
    return rows


def table(rows: list[dict]) -> str:
    keys = ("change", "best scalar", "pixel map", "first order")
    heads = ["sum of d^2 (the change)"] + [f"sum of e^2, {k}" for k in keys[1:]]
    lines = ["| sigma | " + " | ".join(heads) + " | first order / best scalar |", "|" + "---|" * (len(keys) + 2)]
    for r in rows:
        lines.append(f"| {r['sigma']:g} | " + " | ".join(f"{r[k]:.3g}" for k in keys)
                     + f" | {r['first order'] / max(r['best scalar'], 1e-300):.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from invdiff import priors
    from invdiff.data import ellipses

    ap = argparse.ArgumentParser(prog="python -m invdiff.bench.surrogate_error", description=__doc__.split("\n")[0])
    ap.add_argument("--prior", default="phantom-ct-64")
    ap.add_argument("--images", type=int, default=4, help="test images ellipses(n, 64, seed=777001)")
    ap.add_argument("--pool", type=int, default=2000, help="images ellipses(n, 64, seed=5) for the variance map")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=None, help="Markdown file to write the table to (atomically; not overwritten)")
    args = ap.parse_args(argv)
    D = priors.load(args.prior)
    c2 = ellipses(args.pool, 64, seed=5).double().var(0)
    emit_markdown(table(surrogate_errors(D, ellipses(args.images, 64, seed=777001), c2, reps=args.reps)), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
