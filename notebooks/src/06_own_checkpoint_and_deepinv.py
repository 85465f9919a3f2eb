# %% [markdown]
# # 6. Bringing your own checkpoint, and benchmarking against deepinv
#
# invdiff's solvers call a prior through one interface, the denoiser `D(x, sigma)`. Public
# checkpoints come in other conventions (epsilon prediction on a VP chain with timesteps, a score
# network on a VE chain, ...); one adapter per checkpoint family converts them once, so every solver
# works with every checkpoint. This notebook
#
# 1. builds a small **randomly initialised** ADM network (the guided-diffusion UNet that DPS's
#    `ffhq_10m.pt` and guided-diffusion's ImageNet models use), saves it as those files are saved
#    (a plain `state_dict`), and loads it with `priors.load(path, arch="adm", ...)`. The random
#    weights stand in for a real checkpoint, which this notebook does not download: its outputs are
#    meaningless, only the loading and the plumbing are real;
# 2. runs deepinv's own samplers (DPS, DiffPIR) and invdiff's solvers on the **same** prior object,
#    operator and measurement, counting network calls, and tabulates PSNR and seconds. This part uses
#    the shipped, trained `"phantom-ct-64"` prior, so its numbers mean something.
#
# **Running time.** A few minutes on one laptop CPU core as written (budget of 100 network calls per
# method). With `INVDIFF_FAST=1` (set by the test suite) the budget is 20 calls, so it runs in well
# under a minute; at that budget every diffusion method is far from its best.

# %%
import os
import time
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto without ipywidgets

import deepinv as dinv
import matplotlib.pyplot as plt
import torch

from invdiff import metrics, priors, solvers
from invdiff.bench.methods import CountingDenoiser, hparams, hparams_at
from invdiff.bench.tasks import TASKS, measure, test_images
from invdiff.priors.adapters.adm import ADMConfig, ADMUNet

torch.manual_seed(0)  # the global generator (op(x) draws its noise from it)
FAST = os.environ.get("INVDIFF_FAST") == "1"
NFE = 20 if FAST else 100  # network calls per image, the same for every diffusion method

# %% [markdown]
# ## 1. An ADM checkpoint
#
# A real one would be loaded with a single line, e.g. DPS's FFHQ model (256x256 RGB, trained on
# images in [-1, 1]):
#
# ```python
# prior = priors.load("ffhq_10m.pt", arch="adm")   # DPS's FFHQ 256 checkpoint, default configuration
# prior = priors.load("256x256_diffusion_uncond.pt", arch="adm", num_channels=256, num_res_blocks=2,
#                     attention_resolutions=(32, 16, 8), num_head_channels=64)   # guided-diffusion ImageNet
# prior = priors.load("my_diffusers_pipeline/", arch="diffusers")   # a folder with unet/ and scheduler/
# ```
#
# `data_scripts/README.md` lists where these files come from. Here we make a tiny one-channel ADM
# network of the same family, with random weights. guided-diffusion starts the output layers at
# zero (the network would predict `eps = 0`), so the weights are perturbed to make it do something.

# %%
config = dict(image_size=64, in_channels=1, num_channels=32, num_res_blocks=1, channel_mult=(1, 2),
              attention_resolutions=(32,), num_heads=4, num_head_channels=32)
net = ADMUNet(ADMConfig(**config))
g = torch.Generator().manual_seed(0)
with torch.no_grad():
    for p in net.parameters():
        p.add_(0.05 * torch.randn(p.shape, generator=g))
torch.save(net.state_dict(), "tiny_adm.pt")  # exactly how ffhq_10m.pt is stored: a raw state dict
print(f"saved tiny_adm.pt: {sum(p.numel() for p in net.parameters()) / 1e6:.2f} M parameters (random)")

adm = priors.load("tiny_adm.pt", arch="adm", **config)
print(type(adm).__name__, "| data range", adm.data_range, "| sigma range", (round(adm.sigma_min, 4), round(adm.sigma_max, 1)))

# %% [markdown]
# The loaded prior is a denoiser like any other: `D(x, sigma)` with `x = x0 + sigma n`. The adapter
# maps `sigma` to the network's timestep and rescales the input as the VP chain expects; the solver
# never sees timesteps. `priors.load` reads checkpoints with `torch.load(weights_only=True)` (or
# safetensors) and refuses a file whose keys do not match the architecture, listing the keys.

# %%
x_test = test_images(1)  # the Shepp-Logan phantom
with torch.no_grad():
    d = adm(x_test + 0.5 * torch.randn_like(x_test), 0.5)
print("D(x, 0.5):", tuple(d.shape), "(random weights, so not a denoised image)")
r = solvers.DDS(adm, steps=5).reconstruct(TASKS["ct16"].operator().A(x_test), TASKS["ct16"].operator(), progress=False)
print(f"DDS with the random ADM prior ran: {r.nfe} network calls, output {tuple(r.mean.shape)}")

# %% [markdown]
# ## 2. invdiff against deepinv, same prior, operator, measurement and budget
#
# The tasks come from `invdiff.bench.tasks`: 16-view CT and inpainting with 70 % of the pixels
# missing, on held-out test phantoms, with seeded measurement noise. The prior is wrapped in a
# `CountingDenoiser`, which counts the network calls of every method, invdiff's and deepinv's alike.
#
# How the budget of `NFE` calls maps to each method's steps (as in `invdiff bench`):
#
# | method | steps |
# | --- | --- |
# | invdiff DDS, DPS, RED-Diff | `steps = NFE` |
# | deepinv DPS | `num_steps = NFE + 1` (it never calls the network at the last step) |
# | deepinv DiffPIR | `max_iter = NFE`, started from the pseudo-inverse |
# | deepinv DDRM | `NFE` noise levels; needs a `DecomposablePhysics` (an SVD), so inpainting only |
#
# The hyperparameters are `invdiff bench`'s, tuned on separate tuning phantoms for invdiff's and
# deepinv's methods alike.

# %%
prior = CountingDenoiser(priors.load("phantom-ct-64"))


def run_invdiff(cls, key, group):
    def run(op, y):
        return cls(prior, steps=NFE, **hparams_at(key, group, NFE)).reconstruct(y, op, seed=0, progress=False).mean
    return run


def run_dinv_dps(group):
    def run(op, y):
        model = dinv.sampling.DPS(prior, num_steps=NFE + 1, rng=torch.Generator().manual_seed(0),
                                  **hparams("dinv-dps", group))
        return model(y, op, seed=0).float()
    return run


def run_dinv_diffpir(group):
    def run(op, y):
        model = dinv.sampling.DiffPIR(prior, dinv.optim.data_fidelity.L2(), max_iter=NFE,
                                      **hparams("dinv-diffpir", group))
        torch.manual_seed(0)  # DiffPIR draws from the global generator
        return model(y, op, x_init=op.A_dagger(y)).float()
    return run


def run_dinv_ddrm(group):
    def run(op, y):
        import numpy as np

        model = dinv.sampling.DDRM(prior, sigmas=np.linspace(1.0, 0.0, NFE), **hparams("dinv-ddrm", group))
        torch.manual_seed(0)
        return model(y, op).float()
    return run


def methods(group, decomposable):
    table = {
        "pseudo-inverse (FBP / masked)": lambda op, y: op.A_dagger(y),
        "invdiff DDS": run_invdiff(solvers.DDS, "dds", group),
        "invdiff RED-Diff": run_invdiff(solvers.REDDiff, "reddiff", group),
        "invdiff DPS": run_invdiff(solvers.DPS, "dps", group),
        "deepinv DPS": run_dinv_dps(group),
        "deepinv DiffPIR": run_dinv_diffpir(group),
    }
    if decomposable:
        table["deepinv DDRM"] = run_dinv_ddrm(group)
    return table


rows, images = [], {}
n_images = 1 if FAST else 2
for task_name in ("ct16", "inpaint70"):
    task = TASKS[task_name]
    op = task.operator()
    x = test_images(n_images)
    y = measure(op, x, seed=0)
    decomposable = isinstance(op, dinv.physics.DecomposablePhysics)
    for name, run in methods(task.group, decomposable).items():
        prior.reset()
        t0 = time.perf_counter()
        with torch.no_grad() if "pseudo" in name else torch.enable_grad():
            est = run(op, y).detach()
        seconds = (time.perf_counter() - t0) / n_images
        rows.append((task_name, name, metrics.psnr(est, x, data_range=1.0).mean().item(),
                     metrics.ssim(est, x, data_range=1.0).mean().item(), seconds, prior.calls))
        images[task_name, name] = est[-1, 0]
    images[task_name, "truth"] = x[-1, 0]

print(f"budget: {NFE} network calls per image, {n_images} test image(s) per task\n")
print(f"| task | method | PSNR (dB) | SSIM | seconds / image | network calls |")
print(f"| --- | --- | ---: | ---: | ---: | ---: |")
for task_name, name, p, s, sec, calls in rows:
    print(f"| {task_name} | {name} | {p:.2f} | {s:.3f} | {sec:.2f} | {calls} |")

# %%
for task_name in ("ct16", "inpaint70"):
    names = ["truth"] + [n for (t, n) in images if t == task_name and n != "truth"]
    fig, axes = plt.subplots(1, len(names), figsize=(2.1 * len(names), 2.5))
    for ax, name in zip(axes, names):
        ax.imshow(images[task_name, name].clamp(0, 1), cmap="gray", vmin=0, vmax=1)
        ax.set_title(name.replace(" (FBP / masked)", ""), fontsize=8)
        ax.axis("off")
    fig.suptitle(task_name, fontsize=10)
    fig.tight_layout()
    plt.show()

# %% [markdown]
# ## Notes
#
# * deepinv's samplers accept invdiff's operators and priors unchanged, and invdiff's solvers
#   accept deepinv's (`dinv.physics.*`, `dinv.models.*` denoisers): both follow deepinv's
#   `Physics` and `Denoiser` interfaces.
# * The full comparison, all tasks and methods with several test images, is
#   `invdiff bench` (`--quick` for a three-minute version); its results are in `benchmarks/RESULTS.md`.
# * With a real checkpoint, mind its data range: DPS's FFHQ model expects images in [-1, 1]
#   (`prior.data_range`), so scale your measurements' images accordingly.
