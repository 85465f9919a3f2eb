# %% [markdown]
# # 5. Uncertainty with the SMC ensemble
#
# A reconstruction from incomplete data is one of many images that explain the measurement. A
# posterior *sampler* draws several of them; their spread says where the data leave the image open.
# But most diffusion solvers (DPS, RED-Diff, DDS) only approximate the posterior, so their spread
# need not mean much. `solvers.SMC` runs a weighted ensemble of particles (sequential Monte Carlo,
# after Chen, Ren, Min, Ying and Izzo, "an approximation-free ensemble sampling approach", 2025):
# the weights correct the particles towards the true posterior as the ensemble grows.
#
# This notebook
#
# 1. checks SMC on a problem whose posterior is known exactly: a 2D Gaussian-mixture prior and one
#    noisy linear measurement (`priors.GaussianMixturePrior.posterior` gives the exact answer), against
#    exact samples and against DPS, by sample scatter plots, sliced Wasserstein distance, mixture weights
#    and credible-interval coverage;
# 2. uses SMC with the shipped `"phantom-ct-64"` prior on inpainting: posterior mean, pixel-wise
#    standard deviation, error map, and the coverage of the truth by the credible intervals.
#
# **Running time.** About two minutes on one laptop CPU core as written. With `INVDIFF_FAST=1` (set
# by the test suite) the ensembles and step counts are cut so it runs in well under a minute; the
# fast-mode statistics are then noisy.

# %%
import os
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto without ipywidgets

import deepinv as dinv
import matplotlib.pyplot as plt
import torch

from invdiff import data, metrics, operators, priors, solvers

torch.manual_seed(0)  # the global generator (op(x) draws its noise from it)
FAST = os.environ.get("INVDIFF_FAST") == "1"

# %% [markdown]
# ## Part 1: a Gaussian-mixture prior with an exact posterior
#
# The "image" is a point in the plane (shape `(1, 1, 2)`), the prior a mixture of three Gaussians,
# and the measurement one noisy number: `y = x_1 + x_2 + noise`, noise std 0.3. Given `y`, the
# posterior lives near the line `x_1 + x_2 = y`, where it can have more than one mode.
#
# Any deepinv `LinearPhysics` works as an operator; this one is written in a few lines.

# %%
class Projection(dinv.physics.LinearPhysics):
    """y = <a, x> + noise for x of shape (B, 1, 1, 2)."""

    def __init__(self, a, noise_std):
        super().__init__(noise_model=dinv.physics.GaussianNoise(sigma=noise_std))
        self.register_buffer("a", torch.as_tensor(a, dtype=torch.float32))
        self.img_size = (1, 1, 2)
        self.noise_std = noise_std

    def A(self, x, **kwargs):
        return (x.flatten(1) * self.a.to(x.dtype)).sum(1, keepdim=True)

    def A_adjoint(self, y, **kwargs):
        return (y * self.a.to(y.dtype)).reshape(-1, 1, 1, 2)


means = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]]).reshape(3, 1, 1, 2)
gmm = priors.GaussianMixturePrior(means, stds=[0.5, 0.5, 0.5], weights=[0.3, 0.3, 0.4])
op = Projection([1.0, 1.0], noise_std=0.3)
y = torch.tensor([[2.2]])  # compatible with the 2nd and 3rd component
post = gmm.posterior(op, y)
print("exact posterior weights of the three components:", post.weights[0].numpy().round(3))

# %% [markdown]
# SMC and DPS use the mixture's exact denoiser as their prior (so any error is the sampler's own).
# SMC draws `n_samples` samples from its final weighted ensemble; DPS draws independent runs.

# %%
N = 300 if FAST else 2000
exact = post.sample(N, generator=torch.Generator().manual_seed(1))  # (N, 1, 1, 1, 2)
smc = solvers.SMC(gmm, particles=N, steps=40 if FAST else 100)
r_smc = smc.reconstruct(y, op, n_samples=N, seed=0, progress=False)
r_dps = solvers.DPS(gmm, steps=100 if FAST else 500, step_size=0.5).reconstruct(
    y, op, n_samples=N, seed=0, progress=False)
print(f"SMC: {r_smc.nfe} batched calls of {N} particles, {r_smc.seconds:.1f} s; final ESS {float(r_smc.info['final_ess'][0]):.0f}")
print(f"DPS: {r_dps.nfe} batched calls, {r_dps.seconds:.1f} s")

# %%
def component_shares(samples):
    """Share of samples whose most responsible exact-posterior component is k."""
    pts = samples.reshape(samples.shape[0], 2).double()
    logp = torch.stack([torch.distributions.MultivariateNormal(post.means[0, k].reshape(2), post.covs[0, k]).log_prob(pts)
                        + post.log_weights[0, k] for k in range(3)], 1)
    return torch.bincount(logp.argmax(1), minlength=3).double() / pts.shape[0]


exact2 = post.sample(N, generator=torch.Generator().manual_seed(2))
print(f"{'':6s} {'SW2 to exact':>12s}   component shares (exact weights {post.weights[0].numpy().round(2)})")
for name, s in [("exact", exact2), ("SMC", r_smc.samples), ("DPS", r_dps.samples)]:
    sw = metrics.sliced_wasserstein(s[:, 0], exact[:, 0])
    print(f"{name:6s} {sw:12.3f}   {component_shares(s).numpy().round(2)}")

prior_pts = gmm.sample(1000, generator=torch.Generator().manual_seed(3)).reshape(-1, 2)
fig, axes = plt.subplots(1, 3, figsize=(10, 3.4), sharex=True, sharey=True)
t = torch.linspace(-4, 5, 2)
for ax, (name, s) in zip(axes, [("exact posterior", exact), ("SMC", r_smc.samples), ("DPS", r_dps.samples)]):
    ax.scatter(prior_pts[:, 0], prior_pts[:, 1], s=2, c="0.8", label="prior")
    pts = s.reshape(-1, 2)
    ax.scatter(pts[:, 0], pts[:, 1], s=3, alpha=0.5, label=name)
    ax.plot(t, float(y) - t, "k--", lw=0.8, label="x1 + x2 = y")
    ax.set_title(name)
    ax.set_xlim(-4, 4)
    ax.set_ylim(-3, 5)
axes[0].legend(loc="lower left", fontsize=7)
fig.tight_layout()
plt.show()

# %% [markdown]
# ### Calibration: do 90 % credible intervals contain the truth 90 % of the time?
#
# Draw many truths from the prior, measure each, and sample each posterior. For every coordinate,
# `metrics.coverage(samples, truth, level)` is the fraction of true values inside the samples'
# central credible interval. A calibrated sampler gives about `level` (slightly less with few
# samples: the "ideal" row); smaller means over-confident. With `B` truths of 2 coordinates each the
# numbers are themselves uncertain by about `sqrt(level (1 - level) / (2 B))`.

# %%
B = 50 if FAST else 200
S = 64 if FAST else 200
truths = gmm.sample(B, generator=torch.Generator().manual_seed(4))
ys = op.A(truths) + 0.3 * torch.randn(B, 1, generator=torch.Generator().manual_seed(5))
samples = {
    "exact": gmm.posterior(op, ys).sample(S, generator=torch.Generator().manual_seed(6)).float(),
    "SMC": solvers.SMC(gmm, particles=S, steps=40 if FAST else 100).reconstruct(
        ys, op, n_samples=S, seed=0, progress=False).samples,
    "DPS": solvers.DPS(gmm, steps=100 if FAST else 500, step_size=0.5).reconstruct(
        ys, op, n_samples=S, seed=0, progress=False).samples,
}
levels = (0.5, 0.8, 0.9, 0.95)
print(f"{'level':8s}" + "".join(f"{lv:>8.2f}" for lv in levels))
# with S exact samples the expected coverage of the interpolated quantiles is level (S - 1) / (S + 1)
print(f"{'ideal':8s}" + "".join(f"{lv * (S - 1) / (S + 1):8.2f}" for lv in levels))
for name, s in samples.items():
    print(f"{name:8s}" + "".join(f"{metrics.coverage(s, truths, level=lv):8.2f}" for lv in levels))

# %% [markdown]
# ## Part 2: SMC with the shipped prior
#
# Now the prior is the 64x64 network and the problem inpainting with 70 % of the pixels missing and
# 1 % noise. SMC needs the measurement noise level (it weighs particles by the Gaussian likelihood);
# it reads `op.noise_std`. Each step is one batched network call over all particles.
#
# The effective sample size (ESS, `1 / sum_i w_i^2`) says how many particles carry the weight. In
# 4096 dimensions and with a handful of particles it drops close to 1 during the run: the ensemble
# then descends from very few particles, and its spread and credible intervals are too narrow. The
# coverage below measures how far off they are; more particles (the cost grows linearly) help.

# %%
prior = priors.load("phantom-ct-64")
x = data.ellipses(1, 64, seed=777001)
op = operators.Inpainting((1, 64, 64), mask=0.3, noise_std=0.01, seed=0)
y = op(x)

particles, steps = (4, 15) if FAST else (16, 40)
r = solvers.SMC(prior, particles=particles, steps=steps).reconstruct(y, op, n_samples=32, seed=0, progress=False)
print(f"SMC: {particles} particles, {r.nfe} batched network calls, {r.seconds:.1f} s")
print("ESS before resampling, every 5th step:", r.info["ess"][::5, 0].numpy().round(1),
      " final:", r.info["final_ess"].numpy().round(1))
print(f"PSNR: observed pixels only {metrics.psnr(op.A_dagger(y), x, data_range=1.0).item():.2f} dB, "
      f"SMC mean {metrics.psnr(r.mean, x, data_range=1.0).item():.2f} dB")

# %%
print("coverage of the truth by the SMC credible intervals:")
for lv in levels:
    print(f"  level {lv:.2f}: {metrics.coverage(r.samples[:, 0], x[0], level=lv):.3f}")
err = (r.mean - x).abs()[0, 0]
print(f"mean pixel std {r.std.mean():.4f}, mean absolute error {err.mean():.4f}")
fig, axes = plt.subplots(1, 5, figsize=(12, 2.7))
panels = [(x[0, 0], "truth", (0, 1)), (y[0, 0], "measurement", (0, 1)), (r.mean[0, 0], "SMC mean", (0, 1)),
          (r.std[0, 0], "SMC std", (0, None)), (err, "|mean - truth|", (0, None))]
for ax, (im, title, (lo, hi)) in zip(axes, panels):
    maps = title in ("SMC std", "|mean - truth|")
    h = ax.imshow(im, cmap="inferno" if maps else "gray", vmin=lo, vmax=hi)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    if maps:
        fig.colorbar(h, ax=ax, fraction=0.046)
fig.tight_layout()
plt.show()

# %% [markdown]
# Where the error is large the standard deviation should be large too. Here is that relation
# pixel by pixel: for a calibrated sampler the points scatter around the dashed line
# `error = 0.8 std` (the mean absolute value of a Gaussian error); points far above it are pixels
# where the ensemble is over-confident.

# %%
plt.figure(figsize=(3.6, 3.2))
plt.scatter(r.std[0, 0].flatten(), err.flatten(), s=3, alpha=0.4)
m = float(r.std.max())
plt.plot([0, m], [0, 0.8 * m], "k--", lw=0.8)
plt.xlabel("SMC pixel std")
plt.ylabel("|mean - truth|")
plt.tight_layout()
plt.show()

# %% [markdown]
# ### Independent DDS chains as an ensemble
#
# Independent chains have no weights to degenerate. DDS's presets average the last steps of each
# chain (`tail_average`), which pulls every chain towards the mean and narrows the intervals; with
# `tail_average=1` each chain ends on its own sample. On in-distribution 16-view CT and 4x MRI, 16
# such chains held the truth in their 90 % intervals for 0.82 / 0.80 of the pixels whose value lies
# strictly between 0 and 1, where 16 exact posterior samples give 0.79, and their mean was 9-11 dB
# above SMC's (benchmarks/CALIBRATION.md, last section). DDS is not an exact posterior sampler (on
# the exact Gaussian-mixture test its intervals hold 0.75 of the mass, exact samples 0.87), so this
# is measured, not guaranteed. The same comparison on this inpainting problem:

# %%
K = 8 if FAST else 16
r_dds = solvers.DDS(prior, tail_average=1, steps=20 if FAST else 100).reconstruct(
    y, op, n_samples=K, seed=0, progress=False)
print(f"DDS, {K} chains: {r_dds.seconds:.1f} s, mean PSNR {metrics.psnr(r_dds.mean, x, data_range=1.0).item():.2f} dB")
print(f"{'level':>6s} {'SMC':>7s} {'DDS':>7s}  (coverage of the truth)")
for lv in levels:
    print(f"{lv:6.2f} {metrics.coverage(r.samples[:, 0], x[0], level=lv):7.3f} "
          f"{metrics.coverage(r_dds.samples[:, 0], x[0], level=lv):7.3f}")

# %% [markdown]
# ## Notes
#
# * More particles make the ensemble more faithful (the weights are exact in the limit); the cost
#   grows linearly, since all particles go through the network together.
# * `solvers.AFDPS(...)` is the AFDPS paper's scheme (the likelihood tilt at the particle itself);
#   `SMC` weighs particles by the likelihood of their Tweedie estimate (as TDS does) and needs far
#   fewer particles: on the exact Gaussian-mixture test AFDPS collapses onto one mode while SMC's
#   90 % intervals hold 0.90 of the exact posterior mass at 1024 particles
#   (benchmarks/CALIBRATION.md). `r.info` has the ESS history, final weights and particles.
# * `invdiff bench` reports the 90 % coverage of SMC on its tasks, and
#   `python -m invdiff.bench.exact_posterior` compares all samplers on a Gaussian-mixture problem.
