# %% [markdown]
# # 7. Error bars that hold: calibrating an ensemble on held-out images
#
# Run a diffusion solver several times on one measurement and the runs differ where the data leave
# the image open. The per-pixel spread of those runs looks like an error bar, but it is one only if
# the runs are exact posterior samples, and DDS, DPS or RED-Diff runs are not. On the benchmark's
# in-distribution MRI and CT images, 16 DDS runs put the truth inside their own 90 % intervals for
# about half of the pixels (`benchmarks/CALIBRATION.md`).
#
# `invdiff.conformal` repairs the *size* of those intervals with a handful of images whose truth is
# known: reconstruct them exactly as the new images will be reconstructed, find the one factor
# `lambda` by which the intervals must grow to hold the truth at the nominal rate, and apply it to
# new images (conformal calibration, after Angelopoulos et al., ICML 2022, and conformal risk control,
# ICLR 2024).
#
# This notebook, on 4x accelerated MRI of 64x64 phantoms with the shipped prior:
#
# 1. reconstructs calibration and test images with 16 DDS runs each;
# 2. measures how often the raw 50 / 90 / 95 % intervals hold the truth on the test images;
# 3. fits the calibration (`conformal.calibrate`) and measures the calibrated intervals' coverage;
# 4. shows the maps: error, raw and calibrated half-widths, and the pixels left outside.
#
# **What calibration promises, and what it does not.** The scale is fitted on images *like* the test
# images (here: random-ellipse phantoms from the generator the prior was trained on, a seed apart).
# On other images (a different anatomy, scanner or noise level) it promises nothing; calibrate on
# images of the kind you will reconstruct. It fixes the intervals' size, not their shape: a pixel the
# ensemble is wrongly sure about stays too narrow.
#
# **Running time.** About five minutes on one laptop CPU core as written (9 images x 16 runs x 100
# steps). With `INVDIFF_FAST=1` (set by the test suite) it runs 8 runs of 20 steps on 5 images, in
# well under a minute; the fast-mode numbers are then noisy and the reconstructions worse.

# %%
import os
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto without ipywidgets

import matplotlib.pyplot as plt
import torch

from invdiff import conformal, data, metrics, operators, priors, solvers

FAST = os.environ.get("INVDIFF_FAST") == "1"
K = 8 if FAST else 16  # runs per image
STEPS = 20 if FAST else 100  # network calls per run
N_CAL, N_TEST = (3, 2) if FAST else (6, 3)
print(f"fast mode: {FAST}; {K} DDS runs of {STEPS} steps per image, {N_CAL} calibration and {N_TEST} test images")

# %% [markdown]
# ## Images, operator, measurements
#
# Calibration and test images come from the same source (`data.ellipses` with two seeds the prior
# never saw in training): that is the assumption calibration rests on. The operator keeps 25 % of the
# k-space lines (random, with 8 % of the lines at the centre) and adds complex Gaussian noise of std
# 0.01, as the benchmark's `mri4-random` task.

# %%
x_cal = data.ellipses(N_CAL, 64, seed=777002)
x_test = data.ellipses(N_TEST, 64, seed=777001)
op = operators.MRI((1, 64, 64), acceleration=4, mask="random", noise_std=0.01, seed=0)
torch.manual_seed(1)  # op(x) draws its noise from the global generator
y_cal, y_test = op(x_cal), op(x_test)
print("images", tuple(x_test.shape), "k-space", tuple(y_test.shape), y_test.dtype)

# %% [markdown]
# ## An ensemble per image
#
# `reconstruct(y, op, n_samples=K)` runs `K` independent DDS chains per measurement, all through the
# network in one batch, and returns `samples` shaped `(K, images, 1, 64, 64)` besides their `mean`.
# The calibration images must be reconstructed exactly as the test images will be: same solver,
# settings, operator and noise level.

# %%
prior = priors.load("phantom-ct-64")
dds = solvers.DDS(prior, steps=STEPS)
print("DDS settings:", dds.settings())
r_cal = dds.reconstruct(y_cal, op, n_samples=K, seed=0, progress=False)
r_test = dds.reconstruct(y_test, op, n_samples=K, seed=1, progress=False)
print(f"{r_cal.seconds + r_test.seconds:.0f} s for {N_CAL + N_TEST} images x {K} runs")
print("PSNR of the ensemble mean on the test images:",
      [round(float(p), 2) for p in metrics.psnr(r_test.mean, x_test, data_range=1.0)])

# %% [markdown]
# ## How often do the raw intervals hold the truth?
#
# `r.intervals(level)` gives the samples' central interval per pixel; the coverage,
# `metrics.coverage(samples, truth, level)`, is the fraction of pixels whose truth lies inside. Even exact samples fall a little short with few of them: with
# `K` samples the expected coverage of the interpolated `p`-interval is about `p (K - 1) / (K + 1)`
# (the "K exact samples" row).

# %%
LEVELS = (0.5, 0.9, 0.95)
print(f"{'level':>24s}" + "".join(f"{p:>8.2f}" for p in LEVELS))
print(f"{f'{K} exact samples (ideal)':>24s}" + "".join(f"{p * (K - 1) / (K + 1):8.2f}" for p in LEVELS))
raw = [metrics.coverage(r_test.samples, x_test, level=p) for p in LEVELS]
print(f"{'raw DDS intervals':>24s}" + "".join(f"{c:8.2f}" for c in raw))

# %% [markdown]
# ## Calibrate on the calibration images, check on the test images
#
# `conformal.calibrate(samples, truth, level, method)` scores every calibration pixel by how much its
# interval would have to grow to hold the truth, and picks the scale `lambda`:
#
# - `method="plug-in"`: the smallest `lambda` under which the calibration pixels are covered at the
#   nominal rate. It aims straight at the level; it carries no finite-sample guarantee.
# - `method="risk-control"` (the default): conformal risk control. For a new image exchangeable with
#   the calibration images, the *expected* fraction of its pixels outside is at most `1 - level`. It
#   needs `n >= 1 / (1 - level) - 1` calibration images (9 at 90 %, 19 at 95 %) and over-covers
#   while `n` is small. With too few images it says so:

# %%
try:
    conformal.calibrate(r_cal.samples, x_cal, level=0.9, method="risk-control")
except ValueError as err:
    print("ValueError:", err)

# %%
cals = {p: conformal.calibrate(r_cal.samples, x_cal, level=p, method="plug-in") for p in LEVELS}
print(f"{'level':>24s}" + "".join(f"{p:>8.2f}" for p in LEVELS))
print(f"{'scale lambda':>24s}" + "".join(f"{cals[p].scale:8.2f}" for p in LEVELS))
print(f"{'calibration images':>24s}" + "".join(f"{cals[p].calibration_coverage:8.2f}" for p in LEVELS))
per_image = {p: cals[p].coverage(r_test.samples, x_test) for p in LEVELS}  # pixels inside, per test image
print(f"{'test images, raw':>24s}" + "".join(f"{c:8.2f}" for c in raw))
print(f"{'test images, calibrated':>24s}" + "".join(f"{float(per_image[p].mean()):8.2f}" for p in LEVELS))
for p in LEVELS:
    print(f"  {p:.2f}: per test image {[round(float(c), 3) for c in per_image[p]]}")

# %% [markdown]
# The scale is about the same at every level (in the benchmark, 2.1-3.4 for DDS): the runs' spread
# has roughly the right *shape* and the wrong *size*. An SMC ensemble of the same size needs a much
# larger and level-dependent scale (its particles descend from few ancestors), and its calibrated
# intervals are wider (`benchmarks/CALIBRATION.md`).
#
# A plot of coverage against the nominal level shows the same thing at a glance: a calibrated
# sampler sits on the diagonal.

# %%
grid = torch.linspace(0.1, 0.95, 12).tolist()
raw_curve = [metrics.coverage(r_test.samples, x_test, level=p) for p in grid]
cal_curve = [float(conformal.calibrate(r_cal.samples, x_cal, level=p, method="plug-in")
                   .coverage(r_test.samples, x_test).mean()) for p in grid]
fig, ax = plt.subplots(figsize=(4, 3.6))
ax.plot([0, 1], [0, 1], "k:", lw=1, label="nominal")
ax.plot(grid, [p * (K - 1) / (K + 1) for p in grid], "0.6", lw=1, label=f"{K} exact samples")
ax.plot(grid, raw_curve, "o-", ms=3, label="raw DDS intervals")
ax.plot(grid, cal_curve, "s-", ms=3, label="calibrated (plug-in)")
ax.set_xlabel("nominal level")
ax.set_ylabel("coverage on the test images")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Maps
#
# For each test image: the truth, the ensemble mean, the absolute error, the raw and the calibrated
# 90 % half-widths (same colour scale), and the pixels whose truth lies outside the calibrated
# interval. Where the error is large the intervals should be wide; the pixels left outside mark
# where the ensemble was sure of a wrong value.

# %%
lo_raw, hi_raw = r_test.intervals(0.9)
lo_cal, hi_cal = r_test.intervals(calibration=cals[0.9])
err = (r_test.mean - x_test).abs()
half_raw, half_cal = (hi_raw - lo_raw) / 2, (hi_cal - lo_cal) / 2
outside = (x_test < lo_cal) | (x_test > hi_cal)
vmax = float(half_cal.max())
cols = [("truth", x_test, "gray", 0, 1), ("mean", r_test.mean, "gray", 0, 1), ("|error|", err, "magma", 0, vmax),
        ("raw 90 % half-width", half_raw, "magma", 0, vmax), ("calibrated half-width", half_cal, "magma", 0, vmax),
        ("outside (calibrated)", outside.float(), "gray", 0, 1)]
fig, axes = plt.subplots(N_TEST, len(cols), figsize=(2 * len(cols), 2.1 * N_TEST), squeeze=False)
for i in range(N_TEST):
    for ax, (title, img, cmap, lo, hi) in zip(axes[i], cols):
        ax.imshow(img[i, 0].detach(), cmap=cmap, vmin=lo, vmax=hi)
        ax.set_title(title if i == 0 else "", fontsize=8)
        ax.axis("off")
fig.tight_layout()
plt.show()
print("mean 90 % width: raw", round(float((hi_raw - lo_raw).mean()), 4), " calibrated",
      round(float((hi_cal - lo_cal).mean()), 4))

# %% [markdown]
# ## Using it on your own scans
#
# ```python
# cal = conformal.calibrate(r_cal.samples, x_cal, level=0.9)  # risk control: >= 9 calibration images
# r = solvers.DDS(prior).reconstruct(y_new, op, n_samples=16)
# lower, upper = r.intervals(calibration=cal)
# ```
#
# - Reconstruct the calibration scans with the same solver, settings, number of runs, operator and
#   noise level as the new scans; a calibration is only valid for that recipe.
# - More calibration images make the scale more stable; `method="risk-control"` turns the fit into
#   a guarantee on the expected fraction of pixels outside, and needs at least `1 / (1 - level) - 1`
#   images.
# - `python -m invdiff.bench.calibrated_coverage` runs this experiment on the benchmark's CT and MRI
#   tasks for SMC and DDS; its figures are in `benchmarks/CALIBRATION.md`.
