# %% [markdown]
# # 2. Accelerated MRI from a fastMRI-layout HDF5 file
#
# An MRI scanner samples the Fourier transform of the image (*k-space*), usually through several
# receive coils, each seeing the object weighted by its *sensitivity map*. Scans are accelerated by
# skipping k-space lines; the zero-filled inverse FFT of the undersampled data then shows aliasing.
#
# The public fastMRI data set stores each scan as an HDF5 file: `kspace` (complex,
# `(slices, [coils,] H, W)`), the reference image `reconstruction_rss` and attributes such as
# `acquisition` and `max`. This notebook
#
# 1. makes such files itself, single-coil and multi-coil, from a phantom and synthetic coil maps
#    (so that it runs without downloading anything; `data_scripts/convert_fastmri.py` converts the real files),
# 2. reads them back with `invdiff.data.load`,
# 3. undersamples k-space retrospectively (4x and 8x, random Cartesian lines) and reconstructs with the
#    zero-filled inverse and with a diffusion solver using the shipped `"phantom-ct-64"` prior.
#
# The shipped prior was trained on 64x64 phantoms with real values in [0, 1], so the MRI operator is
# used with the *real-image* model `img_size=(1, 64, 64)` (its adjoint keeps the real part). For
# complex images use `img_size=(2, H, W)` and a prior trained on two-channel data.
#
# **Running time.** A few minutes on one laptop CPU core as written. The test suite sets
# `INVDIFF_FAST=1`, which cuts the diffusion steps (100 -> 20) and skips the 8x case, so the notebook
# finishes in well under a minute with worse reconstructions.

# %%
import math
import os
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto without ipywidgets

import matplotlib.pyplot as plt
import torch

from invdiff import data, metrics, operators, priors, solvers
from invdiff.operators.functional.fft import ifft2c, to_complex

torch.manual_seed(0)  # the global generator (op(x) draws its noise from it)
FAST = os.environ.get("INVDIFF_FAST") == "1"
STEPS = 20 if FAST else 100
ACCELERATIONS = (4,) if FAST else (4, 8)


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
# ## A phantom and synthetic coil sensitivities
#
# Eight coils around the object, each a smooth Gaussian bump of sensitivity with a slowly varying
# phase, normalised so that `sum_c |S_c|^2 = 1` at every pixel (as ESPIRiT maps are).

# %%
H = W = 64
x = data.ellipses(1, 64, seed=777001)  # (1, 1, H, W), values in [0, 1]


def coil_maps(n_coils: int, H: int, W: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    maps = []
    for c in range(n_coils):
        a = 2 * math.pi * c / n_coils
        cy, cx = 1.2 * math.sin(a), 1.2 * math.cos(a)
        mag = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 1.5)
        phase = 0.8 * (xx * math.cos(a) + yy * math.sin(a)) + a
        maps.append(torch.polar(mag, phase))
    S = torch.stack(maps)
    return S / (S.abs() ** 2).sum(0).sqrt()


S = coil_maps(8, H, W)  # complex (coils, H, W)
show([x[0, 0]] + [S[c].abs() for c in range(4)], ["phantom"] + [f"|S_{c}|" for c in range(4)])

# %% [markdown]
# ## Writing fastMRI-layout files
#
# A fully sampled acquisition is `A x` plus noise with an operator at acceleration 1. invdiff holds
# complex data as two real channels, so k-space is `(slices, 2, [coils,] H, W)`; `data.save` writes
# it as the complex `kspace` dataset of a fastMRI file, further tensors as datasets and scalars as
# attributes. The reference image of a fastMRI file is the root-sum-of-squares of the coil images.

# %%
noise = 0.01  # per real channel; the centred FFT is orthonormal, so this is 1 % of the image range
g = torch.Generator().manual_seed(0)
full = {"singlecoil": operators.MRI((1, H, W), acceleration=1),
        "multicoil": operators.MRI((1, H, W), acceleration=1, coil_maps=S)}
for name, op in full.items():
    k = op.A(x)
    k = k + noise * torch.randn(k.shape, generator=g)
    coil_images = ifft2c(to_complex(k))  # centred orthonormal inverse FFT, complex (slices, [coils,] H, W)
    rss = coil_images.abs() if name == "singlecoil" else coil_images.abs().pow(2).sum(1).sqrt()
    data.save(f"synthetic_{name}.h5", k, overwrite=True, reconstruction_rss=rss[:, None],
              acquisition="SYNTHETIC", max=float(rss.max()), patient_id="phantom-777001")
    print(f"wrote synthetic_{name}.h5: kspace {tuple(k.shape)}")

# %% [markdown]
# ## Reading them back
#
# `data.load` returns the k-space as `(slices, 2, [coils,] H, W)` and everything else in `meta`.

# %%
kspace, meta = {}, {}
for name in full:
    kspace[name], meta[name] = data.load(f"synthetic_{name}.h5")
    print(name, tuple(kspace[name].shape), {k: v for k, v in meta[name].items() if not hasattr(v, "shape")})
log_k = kspace["multicoil"][0].square().sum(0).sqrt().clamp_min(1e-6).log10()
show([meta["multicoil"]["reconstruction_rss"][0, 0], log_k[0]], ["reconstruction_rss", "log10 |k|, coil 0"],
     size=3, vmin=None, vmax=None)

# %% [markdown]
# ## Retrospective undersampling
#
# `operators.MRI(img_size, acceleration=R, center_fraction=0.08, mask="random", coil_maps=S)`
# keeps a random `1/R` of the phase-encoding lines (columns) and the 8 % around the centre, as the
# fastMRI challenge masks do. Undersampling measured k-space is multiplying by the mask.
# `op.A_dagger` is the zero-filled inverse (coil-combined with the maps for multi-coil data).

# %%
prior = priors.load("phantom-ct-64")
# DDS's preset (invdiff.solvers.presets) was tuned on 16-view CT; nothing was tuned for MRI
print("DDS settings (the CT-tuned preset):", solvers.DDS(prior, steps=STEPS).settings())
results = {}
for R in ACCELERATIONS:
    for name in full:
        maps = S if name == "multicoil" else None
        op = operators.MRI((1, H, W), acceleration=R, mask="random", coil_maps=maps, noise_std=noise, seed=0)
        y = kspace[name] * op.mask  # unsampled entries are zero
        zf = op.A_dagger(y)
        r = solvers.DDS(prior, steps=STEPS).reconstruct(y, op, seed=0, progress=False)
        results[R, name] = (op, zf, r)
        print(f"{R}x {name:10s}: {op.acceleration_achieved:.2f}x achieved; DDS {r.nfe} network calls, {r.seconds:.1f} s")

# %% [markdown]
# ## Results

# %%
print(f"{'case':16s} {'zero-filled':>11s} {'DDS':>7s}   (PSNR dB / SSIM)")
for (R, name), (op, zf, r) in results.items():
    p0, p1 = metrics.psnr(zf, x, data_range=1.0).item(), metrics.psnr(r.mean, x, data_range=1.0).item()
    s0, s1 = metrics.ssim(zf, x, data_range=1.0).item(), metrics.ssim(r.mean, x, data_range=1.0).item()
    print(f"{R}x {name:12s} {p0:6.2f}/{s0:.3f} {p1:6.2f}/{s1:.3f}")

for (R, name), (op, zf, r) in results.items():
    show([op.mask, x[0, 0], zf[0, 0].clamp(0, 1), r.mean[0, 0].clamp(0, 1), (r.mean - x)[0, 0].abs()],
         [f"mask {R}x", "truth", f"zero-filled ({name})", "DDS", "|DDS - truth|"], vmin=0, vmax=1)

# %% [markdown]
# ## Notes
#
# * Real fastMRI files hold 320x320 or larger images; the shipped prior is 64x64, so use a prior of
#   the right size for them (the `data_scripts/` README lists public checkpoints).
# * `mask="equispaced"` gives the other fastMRI mask, `mask="poisson"` a 2D variable-density
#   Poisson-disc mask, and a 0/1 tensor any mask you like.
# * The `invdiff reconstruct FILE.h5 --operator mri ...` command reads measured (undersampled)
#   k-space straight from such a file.
