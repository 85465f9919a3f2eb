# %% [markdown]
# # 1. Sparse-view and limited-angle CT with a diffusion prior
#
# A CT scanner measures line integrals of the attenuation through the body: the *sinogram*. With
# enough views over 180 degrees, filtered back-projection (FBP) inverts it well. To lower the dose or
# the scan time one takes fewer views (*sparse-view* CT), or the geometry allows only part of the
# circle (*limited-angle* CT, e.g. in breast tomosynthesis or C-arm scans). FBP then produces streaks
# or smears, and a prior on what images look like is needed.
#
# This notebook
#
# 1. builds a test phantom and two CT operators (16 views over 180 degrees; 60 views over 90 degrees),
# 2. reconstructs with FBP,
# 3. reconstructs with a diffusion model trained on 64x64 random-ellipse phantoms (shipped with
#    invdiff as `"phantom-ct-64"`), using the Decomposed Diffusion Sampler (DDS),
# 4. compares PSNR and SSIM, and looks at how the result depends on the number of steps.
#
# **Running time.** With the settings below the notebook takes a few minutes on one laptop CPU core.
# The test suite runs it with the environment variable `INVDIFF_FAST=1`, which cuts the number of
# diffusion steps (100 -> 20) and the number of test images so that it finishes in well under a
# minute. The fast-mode reconstructions are worse; they only show that the code runs.

# %%
import os
import time
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto without ipywidgets

import matplotlib.pyplot as plt
import torch

import invdiff
from invdiff import data, metrics, operators, priors, solvers
from invdiff.solvers.presets import preset

torch.manual_seed(0)  # the global generator (op(x) draws its noise from it)
FAST = os.environ.get("INVDIFF_FAST") == "1"
STEPS = 20 if FAST else 100  # diffusion steps = network calls per image
print(f"invdiff {invdiff.__version__}, torch {torch.__version__}, fast mode: {FAST}, {STEPS} steps")

# %% [markdown]
# ## Test images
#
# The modified Shepp-Logan phantom and random-ellipse phantoms, all 64x64 with values in [0, 1]
# (`data.ellipses` with a seed that the prior never saw in training). Images are tensors shaped
# `(batch, channels, height, width)`.

# %%
x = torch.cat([data.shepp_logan(64), data.ellipses(1 if FAST else 3, 64, seed=777001)])
print("images:", tuple(x.shape), "range", float(x.min()), float(x.max()))


def show(images, titles, rows=1, size=2.2, cmap="gray", vmin=0.0, vmax=1.0):
    """Show a list of 2D arrays in a grid."""
    cols = (len(images) + rows - 1) // rows
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows + 0.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, im, title in zip(axes.flat, images, titles):
        ax.imshow(im, cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    plt.show()


show([im[0] for im in x], [f"test image {i}" for i in range(len(x))])

# %% [markdown]
# ## Two CT operators
#
# `operators.CT` is a parallel-beam projector (ASTRA on the CPU) that behaves as a deepinv
# `LinearPhysics`: `op.A(x)` projects, `op.A_adjoint(y)` back-projects (the exact adjoint),
# `op.A_dagger(y)` is FBP, and `op(x)` adds Gaussian noise of standard deviation `noise_std`.
#
# The noise is 1 % of the largest projection value of the Shepp-Logan phantom, as in
# `invdiff bench`.

# %%
def ct(**kw):
    clean = operators.CT((1, 64, 64), **kw)
    s = 0.01 * float(clean.A(data.shepp_logan(64)).abs().max())
    return operators.CT((1, 64, 64), noise_std=s, **kw)


ops = {
    "sparse-view (16 views / 180 deg)": ct(n_views=16),
    "limited-angle (60 views / 90 deg)": ct(n_views=60, limited_angle=90.0),
}
g = torch.Generator().manual_seed(0)
ys = {}
for name, op in ops.items():
    Ax = op.A(x)
    ys[name] = Ax + op.noise_std * torch.randn(Ax.shape, generator=g)
    print(f"{name}: sinogram {tuple(ys[name].shape)} (batch, channel, views, detectors), noise std {op.noise_std:.3f}")

show([y[0, 0] for y in ys.values()], list(ops), size=3.2, cmap="magma", vmin=None, vmax=None)

# %% [markdown]
# ## Filtered back-projection
#
# FBP is `op.A_dagger`. With 16 views the streaks are strong; with 90 degrees of coverage the edges
# whose normals fall in the missing wedge of directions are lost.

# %%
fbp = {name: op.A_dagger(ys[name]) for name, op in ops.items()}
for name in ops:
    print(f"FBP, {name}: PSNR {metrics.psnr(fbp[name], x, data_range=1.0).mean():.2f} dB")

# %% [markdown]
# ## The diffusion prior
#
# A prior is a denoiser `D(x, sigma) = E[x0 | x0 + sigma n]` (the EDM convention). The shipped
# prior is a small UNet (about 1 M parameters) trained on random-ellipse phantoms: it knows what
# such phantoms look like, nothing about real anatomy. For real data, load a public checkpoint
# (notebook 6 and `data_scripts/`).

# %%
prior = priors.load("phantom-ct-64")
print("embedded priors:", priors.available())
print("data range", prior.data_range, " sigma range", (prior.sigma_min, prior.sigma_max))

# %% [markdown]
# ## The Decomposed Diffusion Sampler
#
# **DDS** (Chung, Lee and Ye, ICLR 2024) runs DDIM and corrects every Tweedie estimate
# `x0_hat = D(x, sigma)` by a few conjugate-gradient iterations on the data term `|A x - y|^2`,
# started at `x0_hat`. No gradient flows through the network, so a step costs one network call,
# and the CG step uses the exact operator, which is why DDS needs few steps.
#
# `solvers.DDS(prior)` runs with its preset (`invdiff.solvers.presets`), tuned on 16-view CT of separate
# tuning phantoms; the benchmark and the command line use the same preset. Any argument given
# explicitly (here `steps`) overrides it; `settings()` shows what a solver runs with.

# %%
print(preset("dds").provenance)
print("DDS settings:", solvers.DDS(prior, steps=STEPS).settings())
dds = {}
for name, op in ops.items():
    r = solvers.DDS(prior, steps=STEPS).reconstruct(ys[name], op, seed=0, progress=False)
    dds[name] = r
    print(f"DDS, {name}: {r.nfe} network calls, {r.seconds:.1f} s for {len(x)} images")

# %% [markdown]
# ## Results
#
# PSNR and SSIM against the truth, averaged over the images (data range 1, the phantoms' range).

# %%
print(f"{'problem':36s} {'method':6s} {'PSNR':>6s} {'SSIM':>6s}")
for name in ops:
    for method, est in [("FBP", fbp[name]), ("DDS", dds[name].mean)]:
        p = metrics.psnr(est, x, data_range=1.0).mean().item()
        s = metrics.ssim(est, x, data_range=1.0).mean().item()
        print(f"{name:36s} {method:6s} {p:6.2f} {s:6.3f}")

# %%
for name in ops:
    ims, titles = [], []
    for i in range(len(x)):
        ims += [x[i, 0], fbp[name][i, 0].clamp(0, 1), dds[name].mean[i, 0].clamp(0, 1),
                (dds[name].mean - x)[i, 0].abs()]
        titles += ["truth", "FBP", "DDS", "|DDS - truth|"]
    print(name)
    show(ims, titles, rows=len(x))

# %% [markdown]
# ## How many steps?
#
# The cost of a diffusion solver is its number of network calls. A small sweep on the 16-view
# problem shows what DDS gains from more steps (the times are for all test images together).

# %%
op, y = ops["sparse-view (16 views / 180 deg)"], ys["sparse-view (16 views / 180 deg)"]
sweep = (5, 10, 20) if FAST else (10, 25, 50, 100)
for steps in sweep:
    r = solvers.DDS(prior, steps=steps).reconstruct(y, op, seed=0, progress=False)
    print(f"{steps:4d} steps: PSNR {metrics.psnr(r.mean, x, data_range=1.0).mean():6.2f} dB, {r.seconds:6.1f} s")

# %% [markdown]
# ## Where to go from here
#
# * `solvers.DPS` (diffusion posterior sampling), `solvers.REDDiff` and `solvers.SMC` (weighted
#   particles, notebook 5) take the same prior and operator; DPS back-propagates through the
#   network at every step and needs many more steps (its paper uses 1000).
#   `invdiff.reconstruct(y, op, prior, method="dds", steps=...)` is the one-line form.
# * `operators.CT(..., geometry="fan")` gives a fan-beam scanner, and `photon_count=` log-Poisson
#   noise instead of Gaussian.
# * `invdiff bench --tasks ct8 ct16 ct-limited90` compares these methods with deepinv's DPS and
#   DiffPIR at equal numbers of network calls.
