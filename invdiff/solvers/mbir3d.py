"""DiffusionMBIR: 3D reconstruction with a 2D diffusion prior applied slice by slice plus TV along z.

Chung, Ryu, McCann, Klasky, Ye, "Solving 3D Inverse Problems using Pre-trained 2D Diffusion Models",
CVPR 2023. Official code: https://github.com/HJ-harry/DiffusionMBIR (``controllable_generation_TV.py``,
``get_pc_radon_ADMM_TV_vol``; ``inverse_problem_solver_AAPM_3d_total.py`` for the CT settings).

The 2D prior sees every axial slice independently (:class:`invdiff.priors.SliceDenoiser`); the slices
are tied together by one ADMM iteration of ``min 1/2 |A x - y|^2 + lam |D_z x|_1`` on the whole volume
after every diffusion step (:mod:`invdiff.solvers.tv_z`). Two samplers:

``mode="pc"`` (the paper's): VE predictor-corrector in sigma-space, one reverse-diffusion predictor
step and one Langevin corrector step (signal-to-noise ratio ``snr``) per slice, then ADMM on the noisy
iterate with ``cg_iters`` (official: 1) CG iterations. Two network calls per slice and step; the paper
uses 2000 steps (4000 calls per slice), far beyond a CPU, so the default here is 200.

``mode="dds"`` (fast, after DDS, Chung et al. ICLR 2024): DDIM with the ADMM-TV_z step applied to the
Tweedie estimate (:meth:`invdiff.solvers.dds.DDSLoop.dds_loop`), one network call per slice and step
(50-100 steps).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from invdiff.solvers.base import sigma_range
from invdiff.solvers.dds import DDSConfig, DDSLoop, normal_operator
from invdiff.solvers.presets import PAPER, fill, preset
from invdiff.solvers.spacing import check_spacing, tv_z_weight
from invdiff.solvers.tv_z import ADMMTVz
from invdiff.validate import check_choice, check_positive_float, check_positive_int, check_prior

MODES = ("pc", "dds")


def ve_sigmas(steps: int, sigma_min: float, sigma_max: float) -> Tensor:
    """The VE-SDE's geometric noise levels ``sigma_i = sigma_max (sigma_min / sigma_max)^(i / (N - 1))``, then 0."""
    i = torch.arange(steps, dtype=torch.float64)
    sig = sigma_max * (sigma_min / sigma_max) ** (i / max(steps - 1, 1))
    return torch.cat([sig, sig.new_zeros(1)])


class DiffusionMBIR(DDSLoop):
    r"""Slice-wise 2D diffusion prior plus ADMM total variation along z, for volumes ``(B, C, D, H, W)``.

    ``mode="pc"``, one step from ``sigma`` to ``sigma'`` (``score(x, s) = (D(x, s) - x) / s^2``)::

        # 1. predictor (reverse diffusion, per slice):
        #        x = x + (sigma^2 - sigma'^2) score(x, sigma) + sqrt(sigma^2 - sigma'^2) n
        # 2. corrector (Langevin, per slice):  g = score(x, sigma'),  e = 2 (snr |n| / |g|)^2,
        #        x = x + e g + sqrt(2 e) n
        # 3. ADMM-TV_z on the volume (z, u persist across steps):
        #        (A^T A + rho D_z^T D_z) x = A^T y + rho D_z^T (z - u)   (cg_iters CG iterations from x)
        #        z = soft(D_z x + u, lam / rho),   u += D_z x - z

    The last step (``sigma' = 0``) takes the predictor's mean (the Tweedie estimate) and skips the
    corrector. Departures from the official code: the corrector uses the score at ``sigma'`` (the
    level the predictor just moved to; the official code reuses ``sigma``, a difference that vanishes
    at 2000 steps); its step size is set per slice (the official code averages the norms over a chunk
    of 12 slices, so results there depend on the chunking); ``D_z`` has no wrap-around.

    ``mode="dds"``: the DDS loop (:class:`invdiff.solvers.DDS` on volumes), one network call per slice
    and step: ``x0_hat = D(x, sigma)``, one ADMM iteration started at ``x0_hat`` with ``cg_iters``
    (default 5) CG iterations on ``(A^T A + I/gamma + rho D_z^T D_z) x = A^T y + x0_hat/gamma + ...``,
    then a DDIM step with ``eta``.

    Step count and ``rho`` in ``pc`` mode: the x-update runs on the noisy iterate and ``z`` remembers
    the previous step's differences, so the x-update pulls ``D_z x`` back towards noise of the previous
    (larger) level. With the paper's 2000 steps the level barely moves between steps; with a few dozen
    steps and ``rho`` comparable to ``|A^T A|`` that memory keeps early noise in the null space of ``A``
    (measured on a 16 x 16 toy problem with ``|A^T A|`` about 50: ``rho = 10`` fails, ``rho = 2`` works).
    Keep ``rho`` well below ``|A^T A|`` (about 500 for invdiff's 64 x 64, 8-view CT) or use ``dds``.

    ``tv_weight = 0`` is the same solver with the TV term switched off: the ADMM step becomes
    ``cg_iters`` CG iterations on the data term alone (``rho`` unused), i.e. plain slice-wise
    reconstruction with the same data consistency.

    Defaults: an argument left at ``None`` takes the tuned preset (:func:`invdiff.solvers.presets.preset`
    ``("mbir")``, tuned on isotropic and 4x-thick-slice 3D CT tuning slabs): ``mode="dds", steps=50,
    tv_weight=0.8, rho=10, gamma=inf, cg_iters=5, eta=0.85``; ``tv_weight`` is the weight at isotropic
    voxels, scaled by ``sqrt(dy dx) / dz`` when ``spacing`` is given (0.2 for 4x-thick slices). With
    ``mode="pc"`` given, the paper's settings fill in instead
    (``presets.PAPER["mbir"]``: ``steps=200, tv_weight=0.04, rho=10, cg_iters=1``).

    Parameters
    ----------
    prior2d : deepinv.models.Denoiser
        A 2D denoiser ``D(x, sigma)`` (or an :class:`invdiff.priors.SliceDenoiser` around one).
    steps : int, optional
        Diffusion steps. ``pc``: the paper uses 2000 (two network calls per slice each), default 200;
        ``dds``: 50-100 (preset 50).
    tv_weight : float, optional
        ``lambda``, weight of ``|D_z x|_1`` for isotropic voxels. With ``spacing`` the weight used is
        ``tv_weight_z = tv_weight * sqrt(dy dx) / dz`` (:mod:`invdiff.solvers.spacing`: neighbouring
        slices ``dz`` apart differ ``dz / h`` times as often, so thick slices are tied less). The
        official CT value is 0.04 with ``rho = 10`` for images in [0, 1] and a projector whose
        ``|A^T A|`` is about 400 (256 x 256, 8 views); the defaults here were tuned on invdiff's CT
        operator (see :mod:`invdiff.bench.mbir3d_spacing` and ``benchmarks/TUNING.md``).
    rho : float, optional
        ADMM penalty.
    mode : {"pc", "dds"}, optional
        Sampler (see above); preset ``"dds"``.
    snr : float
        Langevin corrector's signal-to-noise ratio (``pc``; official 0.16).
    cg_iters : int, optional
        CG iterations per ADMM x-update: default 1 for ``pc`` (official), 5 for ``dds`` (official DDS, preset).
    eta, gamma, schedule, lambda_, noise_std, tail_average
        DDIM stochasticity, data-term weight, noise schedule, noise-aware proximal weight
        ``gamma_t = sigma_t^2 / (lambda_ sigma_y^2)`` and tail average of ``mode="dds"`` (see
        :class:`DDS`). With ``lambda_`` the x-update keeps ``x0_hat`` in the null space of ``A``
        (``|x - x0_hat|^2 / (2 gamma_t)``) instead of letting the TV state ``z - u`` replace it there.
    sigma_min, sigma_max : float, optional
        Noise range of ``mode="pc"`` (default: the prior's, else :data:`invdiff.solvers.presets.SIGMA_MIN`
        and ``SIGMA_MAX``). ``sigma_max``, when given, is also the first level of ``mode="dds"`` (as
        :class:`DDS`'s ``sigma_max``; unlike DDS's presets, DiffusionMBIR's leaves it at the prior's).
    chunk : int
        Slices per network call.
    spacing : (dz, dy, dx), optional
        Voxel sizes in the volume's axis order ``(D, H, W)``, any one unit (``meta["spacing"]`` of
        :func:`invdiff.data.load` for NIfTI and DICOM; :func:`invdiff.solvers.spacing.spacing_from_affine`
        from an affine). Sets the TV-along-z weight (see ``tv_weight``); ``None``: isotropic.

    Example
    -------
    >>> op = invdiff.operators.CT((1, 16, 64, 64), n_views=8)  # doctest: +SKIP
    >>> solver = DiffusionMBIR(invdiff.priors.load("phantom-ct-64"), mode="dds", steps=100)  # doctest: +SKIP
    >>> volume = solver(op(x), op)  # doctest: +SKIP
    """

    def __init__(self, prior2d, steps: int | None = None, tv_weight: float | None = None, rho: float | None = None,
                 mode: str | None = None, snr: float = 0.16, cg_iters: int | None = None, eta: float | None = None,
                 gamma: float | None = None, schedule: str = "vp", sigma_min: float | None = None,
                 sigma_max: float | None = None, chunk: int = 16, lambda_: float | None = None,
                 noise_std: float | None = None, tail_average: int | float = 1,
                 spacing: tuple[float, float, float] | None = None, device: str | torch.device | None = None):
        super().__init__(check_prior(prior2d), device=device)
        tuned = preset("mbir").params
        self.mode = mode = check_choice("mode", tuned["mode"] if mode is None else mode, MODES)
        # mode="dds": the tuned preset; mode="pc": the paper's settings (eta, gamma from the preset, unused there)
        values = tuned if mode == "dds" else {**tuned, **PAPER["mbir"]}
        kw = fill(dict(steps=steps, tv_weight=tv_weight, rho=rho, cg_iters=cg_iters, eta=eta, gamma=gamma), values)
        # the DDS settings (eta, gamma, schedule, lambda_, ...) are checked in every mode; mode="dds" uses them
        self.config = DDSConfig(kw["steps"], kw["eta"], kw["gamma"], schedule, None, lambda_, noise_std, tail_average,
                                sigma_max=sigma_max)
        if (self.lambda_ is not None or self.tail_average > 1) and mode != "dds":
            raise ValueError(f"lambda_, tail_average: only mode='dds' takes them, got mode={mode!r}")
        self.tv_weight = check_positive_float("tv_weight", kw["tv_weight"], allow_zero=True)
        self.spacing = check_spacing(spacing)
        self.rho = check_positive_float("rho", kw["rho"])
        self.snr = check_positive_float("snr", snr, allow_zero=True)
        self.cg_iters = check_positive_int("cg_iters", kw["cg_iters"], minimum=0)
        lo, hi = sigma_range(prior2d, sigma_min, sigma_max)
        self.sigma_min, self.sigma_max = check_positive_float("sigma_min", lo), check_positive_float("sigma_max", hi)
        if not self.sigma_min < self.sigma_max:
            raise ValueError(f"sigma_min, sigma_max: expected sigma_min < sigma_max, got {lo!r}, {hi!r}")
        self.chunk = check_positive_int("chunk", chunk)

    @property
    def tv_weight_z(self) -> float:
        """The weight of ``|D_z x|_1`` used: ``tv_weight * sqrt(dy dx) / dz`` (``tv_weight`` when ``spacing`` is None)."""
        return tv_z_weight(self.tv_weight, self.spacing)

    def _validate(self, y: Tensor, op) -> None:
        img_size = getattr(op, "img_size", None)
        ndim = len(img_size) + 1 if img_size is not None else op.A_adjoint(y).ndim
        if ndim != 5:
            shape = (y.shape[0], *img_size) if img_size is not None else tuple(op.A_adjoint(y).shape)
            raise ValueError(f"DiffusionMBIR needs a volume (B, C, D, H, W); the operator works on images of shape "
                             f"{shape}. Use DDS, DPS or another 2D solver for 2D images.")

    def _sample(self, y: Tensor, op, generator: torch.Generator, progress: bool,
                callback: Callable[[dict], None] | None) -> Tensor:
        admm = ADMMTVz(self.tv_weight_z, self.rho, self.cg_iters)
        if self.mode == "dds":
            return self.dds_loop(y, op, admm, generator, progress, callback, desc="DiffusionMBIR-DDS")
        if self.group is not None and self.group.distributed:
            raise ValueError("mode: only mode='dds' splits a volume over ranks; mode='pc' runs in one process")
        return self._pc_loop(y, op, admm, generator, progress, callback)

    def _pc_loop(self, y: Tensor, op, admm: ADMMTVz, generator: torch.Generator, progress: bool,
                 callback: Callable[[dict], None] | None) -> Tensor:
        sig = ve_sigmas(self.steps, self.sigma_min, self.sigma_max).tolist()
        shape = (y.shape[0], *op.img_size) if getattr(op, "img_size", None) is not None else op.A_adjoint(y).shape
        dt = torch.float64
        AtA = normal_operator(op, y.dtype)
        ATy = op.A_adjoint(y).to(dt)

        def randn() -> Tensor:
            return torch.randn(shape, generator=generator, device=y.device, dtype=dt)

        def slice_norm(v: Tensor) -> Tensor:  # |v| per slice, broadcastable to (B, C, D, H, W)
            return v.square().sum(dim=(1, 3, 4), keepdim=True).sqrt()

        x = sig[0] * randn()
        for i in tqdm(range(self.steps), disable=not progress, desc="DiffusionMBIR", leave=False):
            sigma, sigma_next = sig[i], sig[i + 1]
            # 1. predictor: reverse-diffusion step of the VE SDE from sigma to sigma_next
            x0_hat = self.denoise(x, sigma)
            dvar = sigma**2 - sigma_next**2
            x = x + (dvar / sigma**2) * (x0_hat - x)
            if sigma_next > 0:
                x = x + math.sqrt(dvar) * randn()
                # 2. corrector: one Langevin step at sigma_next, step size from the target snr per slice
                if self.snr > 0:
                    g = (self.denoise(x, sigma_next) - x) / sigma_next**2
                    n = randn()
                    e = 2 * (self.snr * slice_norm(n) / slice_norm(g).clamp_min(1e-30)) ** 2
                    x = x + e * g + (2 * e).sqrt() * n
            # 3. ADMM-TV_z on the whole volume (z, u persist)
            x = admm.step(x, AtA, ATy)
            self.check_iterate("x", x, i)
            if callback is not None:
                callback({"step": i, "sigma": sigma, "sigma_next": sigma_next, "x": x, "x0_hat": x0_hat})
        return x.to(y.dtype)
