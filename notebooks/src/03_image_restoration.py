# %% [markdown]
# # 3. Image restoration: inpainting, deblurring and 4x super-resolution
#
# The same diffusion prior and the same solvers work for any linear forward operator. This notebook
# restores a 64x64 phantom from
#
# * **inpainting**: 70 % of the pixels missing at random,
# * **deblurring**: a Gaussian blur of standard deviation 2 pixels,
# * **super-resolution**: a 4x box-averaged 16x16 image,
#
# each with Gaussian noise of standard deviation 0.01 (1 % of the [0, 1] range), and compares the
# operator's pseudo-inverse with two diffusion solvers on the shipped `"phantom-ct-64"` prior:
# DPS (which back-propagates through the network) and DDS (which does not). It then draws several
# DPS posterior samples for the inpainting problem to show what the measurement leaves open.
#
# **Running time.** A few minutes on one laptop CPU core as written. With `INVDIFF_FAST=1` (set by
# the test suite) the steps are cut (100 -> 20) and fewer samples are drawn, so it runs in well under a
# minute, with worse images.

# %%
import os
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto without ipywidgets

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from invdiff import data, metrics, operators, priors, solvers

torch.manual_seed(0)  # the global generator (op(x) draws its noise from it)
FAST = os.environ.get("INVDIFF_FAST") == "1"
STEPS = 20 if FAST else 100
N_SAMPLES = 2 if FAST else 4


def show(images, titles, rows=1, size=2.2, vmin=0.0, vmax=1.0, cmap="gray"):
    cols = (len(images) + rows - 1) // rows
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows + 0.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, im, title in zip(axes.flat, images, titles):
        ax.imshow(im, cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    plt.show()


# %% [markdown]
# ## Three operators
#
# Each is a deepinv `LinearPhysics`; `op(x)` applies `A` and adds the noise, `op.A_dagger` is the
# pseudo-inverse (for inpainting: the observed pixels, zeros elsewhere; for the blur: a Tikhonov-
# regularised inverse filter; for super-resolution: the minimum-norm upsampling).

# %%
x = data.shepp_logan(64)
noise = 0.01
ops = {
    "inpaint": operators.Inpainting((1, 64, 64), mask=0.3, noise_std=noise, seed=0),  # keep 30 %
    "deblur": operators.Blur((1, 64, 64), kernel="gaussian", kernel_std=2.0, noise_std=noise),
    "sr": operators.SuperResolution((1, 64, 64), factor=4, noise_std=noise),
}
ys = {task: op(x) for task, op in ops.items()}
for task, y in ys.items():
    print(f"{task:8s} measurement {tuple(y.shape)}")
show([x[0, 0], ys["inpaint"][0, 0], ys["deblur"][0, 0], F.interpolate(ys["sr"], scale_factor=4)[0, 0]],
     ["truth", "70 % missing", "blurred", "16x16, shown at 64x64"])

# %% [markdown]
# ## Diffusion solvers
#
# `solvers.DPS(prior, steps, step_size)` and `solvers.DDS(prior, steps, ...)`, with their presets
# (`invdiff.solvers.presets`): tuned on 16-view CT of separate tuning phantoms, not per task, and used
# here as they are, with one exception: DPS's preset is tuned for its 1000 steps (`step_size` 0.03), and
# a step size acts once per step, so at this notebook's 100 (or 20) steps it takes the value tuned at 100
# network calls, `step_size=0.1` (`invdiff.bench.methods.HPARAMS_AT_NFE`). Both return a `Reconstruction` with `mean`, `samples`, `std`, `nfe` (network
# calls) and `seconds`; `settings()` shows the hyperparameters a solver runs with.

# %%
prior = priors.load("phantom-ct-64")
recs = {}
for task, op in ops.items():
    for name, make in [("DPS", lambda: solvers.DPS(prior, steps=STEPS, step_size=0.1)),
                       ("DDS", lambda: solvers.DDS(prior, steps=STEPS))]:
        solver = make()
        r = solver.reconstruct(ys[task], op, seed=0, progress=False)
        recs[task, name] = r
        print(f"{task:8s} {name}: {r.nfe} network calls, {r.seconds:.1f} s")
print("DPS", solvers.DPS(prior, steps=STEPS, step_size=0.1).settings())
print("DDS", solvers.DDS(prior, steps=STEPS).settings())

# %%
print(f"{'task':8s} {'pseudo-inverse':>15s} {'DPS':>13s} {'DDS':>13s}   (PSNR dB / SSIM)")
for task, op in ops.items():
    cells = []
    for est in [op.A_dagger(ys[task]), recs[task, "DPS"].mean, recs[task, "DDS"].mean]:
        cells.append(f"{metrics.psnr(est, x, data_range=1.0).item():6.2f}/{metrics.ssim(est, x, data_range=1.0).item():.3f}")
    print(f"{task:8s} {cells[0]:>15s} {cells[1]:>13s} {cells[2]:>13s}")

ims, titles = [], []
for task, op in ops.items():
    ims += [op.A_dagger(ys[task])[0, 0].clamp(0, 1), recs[task, "DPS"].mean[0, 0].clamp(0, 1),
            recs[task, "DDS"].mean[0, 0].clamp(0, 1)]
    titles += [f"{task}: pseudo-inverse", f"{task}: DPS", f"{task}: DDS"]
show(ims, titles, rows=3)

# %% [markdown]
# ## Several posterior samples
#
# DPS is a sampler: with `n_samples=k` it draws `k` reconstructions at once (as one batch), and
# `Reconstruction.std` is their pixel-wise standard deviation. Where the samples disagree the
# measurement does not decide the image. (Notebook 5 looks at uncertainty more carefully, with a
# sampler whose ensemble is weighted towards the true posterior.)

# %%
r = solvers.DPS(prior, steps=STEPS, step_size=0.1).reconstruct(
    ys["inpaint"], ops["inpaint"], n_samples=N_SAMPLES, seed=1, progress=False)
print("samples", tuple(r.samples.shape), f"{r.nfe} network calls (batched), {r.seconds:.1f} s")
show([s[0, 0].clamp(0, 1) for s in r.samples] + [r.std[0, 0]],
     [f"sample {i}" for i in range(N_SAMPLES)] + ["pixel-wise std"], vmin=None, vmax=None)

# %% [markdown]
# ## Notes
#
# * A mask or kernel can be given as a tensor: `operators.Inpainting(size, mask=my_mask)`,
#   `operators.Blur(size, kernel=my_kernel)`.
# * Blur and super-resolution are deepinv `DecomposablePhysics` operators, so deepinv's DDRM also
#   runs on them (see notebook 6 and `invdiff bench`).
