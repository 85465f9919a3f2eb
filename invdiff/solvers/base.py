"""What every invdiff solver shares: the result type, seeding, timing, the counted call of the prior.

Argument checks live in :mod:`invdiff.validate`.

A solver subclasses :class:`Solver` and implements :meth:`Solver._sample`, which draws one batch of
reconstructions. :meth:`Solver.reconstruct` runs it (batched over ``n_samples`` where it can) and
returns a :class:`Reconstruction`; ``solver(y, op)`` returns the mean, as deepinv's reconstructors do.
"""

from __future__ import annotations

import functools
import inspect
import time
from dataclasses import dataclass, field
from typing import Callable

import deepinv as dinv
import torch
from torch import Tensor

from invdiff.device import check_device, move_module, same_device, to_device
from invdiff.priors.slice import SliceDenoiser
from invdiff.solvers.presets import SIGMA_MAX, SIGMA_MIN
from invdiff.solvers.schedules import vp_chain_sigmas
from invdiff.validate import check_interval, check_measurement, check_positive_int, check_prior, check_vp_chain


@dataclass
class Reconstruction:
    """A solver's output.

    Attributes
    ----------
    mean : Tensor
        The estimate, ``(B, C, H, W)`` or ``(B, C, D, H, W)`` (the posterior mean for samplers).
    samples : Tensor
        ``(n_samples, B, ...)`` reconstructions (posterior samples for samplers).
    std : Tensor or None
        Pixel-wise standard deviation across samples (``None`` with a single sample).
    nfe : int
        Number of calls of the prior's network (a batched call counts once).
    seconds : float
        Wall-clock time of the whole reconstruction.
    info : dict
        Solver-specific extras (ESS history for SMC, loss history for RED-Diff, ...).
    """

    mean: Tensor
    samples: Tensor
    std: Tensor | None
    nfe: int
    seconds: float
    info: dict = field(default_factory=dict)

    def intervals(self, level: float = 0.9, calibration=None) -> tuple[Tensor, Tensor]:
        """Per-pixel intervals ``(lower, upper)``, each shaped as :attr:`mean`: the samples' central interval at
        ``level``, or, with ``calibration`` (a :class:`invdiff.conformal.Calibration` fitted on held-out images
        reconstructed the same way), the calibrated one at the calibration's level, which holds the truth at that
        rate on images like the calibration images (``benchmarks/CALIBRATION.md``).

        >>> import torch
        >>> r = Reconstruction(torch.zeros(1, 1, 2, 2), torch.arange(5.0).reshape(5, 1, 1, 1, 1).expand(5, 1, 1, 2, 2),
        ...                    None, 0, 0.0)
        >>> [t.flatten()[0].item() for t in r.intervals(0.5)]
        [1.0, 3.0]
        """
        level = check_interval("level", level, 0.0, 1.0, low_open=True, high_open=True)
        if self.samples.shape[0] < 2:
            raise ValueError(f"intervals: need at least 2 samples, this reconstruction has {self.samples.shape[0]}; "
                             "pass n_samples >= 2 to reconstruct (or use an ensemble solver such as SMC)")
        if calibration is not None:
            from invdiff.conformal import Calibration

            if not isinstance(calibration, Calibration):
                raise TypeError(f"calibration: expected an invdiff.conformal.Calibration (from calibrate), got "
                                f"{type(calibration).__name__}")
            return calibration.intervals(self.samples)
        from invdiff.metrics import central_intervals

        lo, hi = central_intervals(self.samples, [level])
        return lo[0], hi[0]


def sigma_range(prior, sigma_min: float | None = None, sigma_max: float | None = None) -> tuple[float, float]:
    """The noise range to sample over: arguments first, then the prior's attributes, then
    :data:`~invdiff.solvers.presets.SIGMA_MIN` / :data:`~invdiff.solvers.presets.SIGMA_MAX` (EDM's)."""
    lo = sigma_min if sigma_min is not None else getattr(prior, "sigma_min", SIGMA_MIN)
    hi = sigma_max if sigma_max is not None else getattr(prior, "sigma_max", SIGMA_MAX)
    return float(lo), float(hi)


def make_generator(seed: int | torch.Generator | None, device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed`` (``None``: 0); a given generator must live on ``device``."""
    if isinstance(seed, torch.Generator):
        if not same_device(torch.device(seed.device), torch.device(device)):
            raise ValueError(f"seed: a torch.Generator on {seed.device} cannot draw on {device}, where the solver "
                             f"computes; expected an int seed or a generator made with torch.Generator(device='{device}')")
        return seed
    g = torch.Generator(device=device)
    g.manual_seed(0 if seed is None else int(seed))
    return g


def _to_home(r: Reconstruction, home: torch.device) -> Reconstruction:
    """``r`` with its tensors (``info``'s too) on ``home``."""
    move = lambda t: to_device(t, home) if isinstance(t, Tensor) else t  # noqa: E731
    r.mean, r.samples, r.std = move(r.mean), move(r.samples), move(r.std)
    r.info = {k: move(v) for k, v in r.info.items()}
    return r


def _placed(reconstruct: Callable) -> Callable:
    """Wrap a ``reconstruct`` method with the device rule of :mod:`invdiff.device`.

    The solver computes on ``self.device``, or on ``y``'s device when that is ``None``: ``y`` is
    copied there, the operator and the prior are moved there in place (``.to``), and the result
    comes back on ``y``'s own device. A subclass's ``reconstruct`` that calls ``super().reconstruct``
    is placed once, by the outermost call.
    """
    @functools.wraps(reconstruct)
    def placed(self, y, op, *args, **kwargs):
        if getattr(self, "_placing", False) or not torch.is_tensor(y):
            return reconstruct(self, y, op, *args, **kwargs)
        home = y.device
        dev = getattr(self, "device", None) or home
        y = to_device(y, dev)
        move_module(op, dev)
        move_module(getattr(self, "prior", None), dev)
        self._placing = True
        try:
            r = reconstruct(self, y, op, *args, **kwargs)
        finally:
            self._placing = False
        return _to_home(r, home) if isinstance(r, Reconstruction) else r

    return placed


class Solver(dinv.models.Reconstructor):
    """Base class: subclasses implement ``_sample(y, op, generator, progress, callback) -> Tensor``.

    ``_sample`` gets ``y`` already repeated ``n_samples`` times along the batch dimension (unless
    the subclass sets ``batch_samples = False``) and returns reconstructions of the same batch size.
    It calls the prior through :meth:`denoise` so that network calls are counted.

    Device (:mod:`invdiff.device`): ``device=None`` (the default) computes on the measurement's
    device; an explicit ``device`` copies ``y`` there and moves the operator and the prior there in
    place. Either way the result comes back on ``y``'s device, and every tensor the solver makes is
    made on the device it computes on. A bad ``device`` fails at construction, naming ``device``.
    """

    batch_samples = True  # repeat y along the batch to draw n_samples at once
    needs_prior = True  # False for the classical baselines (invdiff.reconstruct then passes no prior)
    chunk: int | None = None  # slices per network call when volumes go through the 2D prior slice by slice

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "reconstruct" in cls.__dict__:  # every override of reconstruct follows the device rule
            cls.reconstruct = _placed(cls.__dict__["reconstruct"])

    def __init__(self, prior=None, device: str | torch.device | None = None):
        super().__init__()
        self.device = check_device(device)
        self.prior = check_prior(prior) if prior is not None else None
        self.nfe = 0
        self.info: dict = {}
        self._prior3d = None  # the SliceDenoiser around the prior, built on the first volume

    # -- helpers for subclasses
    def denoise(self, x: Tensor, sigma: Tensor | float, grad: bool = False) -> Tensor:
        """``D(x, sigma)`` through the prior, counted in ``nfe``; the network runs in float32.

        ``grad=False`` runs the network without autograd (no graph is kept); ``grad=True`` keeps the
        graph for a backward pass through the network (DPS, SMC's gradient proposal). A solver that
        sets ``chunk`` (slice-wise solvers: DDS, DiffusionMBIR) sends volumes ``(B, C, D, H, W)``
        through :class:`~invdiff.priors.SliceDenoiser` around its 2D prior (``chunk`` slices per call)
        and counts slice evaluations in ``info["slice_evals"]``; a native volume prior
        (``prior.spatial_dims == 3``) gets volumes as they are.
        """
        net = self.prior
        if x.ndim == 5 and self.chunk is not None and getattr(self.prior, "spatial_dims", 2) != 3:
            if self._prior3d is None:
                wrapped = isinstance(self.prior, SliceDenoiser)
                self._prior3d = self.prior if wrapped else SliceDenoiser(self.prior, chunk=self.chunk)
            net = self._prior3d
            self.info["slice_evals"] = self.info.get("slice_evals", 0) + x.shape[0] * x.shape[2]
        self.nfe += 1
        with torch.set_grad_enabled(grad):
            out = net(x.to(torch.float32), sigma if isinstance(sigma, float) else sigma.to(torch.float32))
        return out.to(x.dtype)

    @staticmethod
    def check_iterate(name: str, x: Tensor, step: int) -> None:
        if not torch.isfinite(x).all():
            raise FloatingPointError(f"{name} became non-finite (NaN/Inf) at step {step}; the solver diverged "
                                     f"(try a smaller step size / learning rate or more steps)")

    def _sample(self, y: Tensor, op, generator: torch.Generator, progress: bool, callback: Callable | None) -> Tensor:
        raise NotImplementedError

    def _validate(self, y: Tensor, op) -> None:
        """Extra solver-specific checks (e.g. 3D only)."""

    # -- public API
    def settings(self) -> dict:
        """The hyperparameters this solver runs with, resolved (presets and the prior's defaults filled in).

        One entry per constructor argument except the prior and ``device``, read back from the solver
        (e.g. ``DDS(prior).settings()["schedule"] == "karras"``, ``tail_average`` as a step count), so
        that a command line or a report can print what was used. Values are plain Python numbers and
        strings; ``inf`` stays ``math.inf``.

        Example
        -------
        >>> from invdiff.solvers import TV
        >>> TV().settings()["weight"]
        0.0005
        """
        skip = {"self", "prior", "prior2d", "device"}
        out = {}
        for name, p in inspect.signature(type(self).__init__).parameters.items():
            if name in skip or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or not hasattr(self, name):
                continue
            value = getattr(self, name)
            if isinstance(value, Tensor):
                value = value.tolist() if value.numel() > 1 else value.item()
            out[name] = value
        return out

    def reconstruct(self, y: Tensor, op, n_samples: int = 1, seed: int | torch.Generator | None = 0,
                    progress: bool = True, callback: Callable[[dict], None] | None = None) -> Reconstruction:
        """Reconstruct ``x`` from ``y = op(x)``.

        Parameters
        ----------
        y : Tensor
            The measurement, ``(B, ...)`` as ``op.A`` produces it.
        op : deepinv.physics.Physics
            The forward operator (any invdiff or deepinv linear operator).
        n_samples : int
            Number of reconstructions to draw per measurement.
        seed : int or torch.Generator
            Seed of every random draw; the same seed gives the same result on the same device.
        progress : bool
            Show a tqdm progress bar.
        callback : callable, optional
            Called with a dict (``step``, ``sigma``, ``x``, ``x0_hat``, ...) after every step.
        """
        check_positive_int("n_samples", n_samples)
        check_measurement(y, op)
        self._validate(y, op)
        g = make_generator(seed, y.device)
        self.nfe = 0
        self.info = {}
        t0 = time.perf_counter()
        B = y.shape[0]
        if self.batch_samples:
            y_rep = y.repeat(n_samples, *([1] * (y.ndim - 1)))
            x = self._sample(y_rep, op, g, progress, callback)
            samples = x.reshape(n_samples, B, *x.shape[1:])
        else:
            samples = torch.stack([self._sample(y, op, g, progress, callback) for _ in range(n_samples)])
        samples = samples.detach()
        seconds = time.perf_counter() - t0
        mean = samples.mean(0)
        std = samples.std(0) if n_samples > 1 else None
        return Reconstruction(mean=mean, samples=samples, std=std, nfe=self.nfe, seconds=seconds, info=dict(self.info))

    reconstruct = _placed(reconstruct)

    def forward(self, y: Tensor, physics, **kwargs) -> Tensor:
        kwargs.setdefault("progress", False)
        return self.reconstruct(y, physics, **kwargs).mean


class VPChainSolver(Solver):
    """A solver that walks DDPM's linear-beta VP chain respaced to ``steps`` levels (DPS, RED-Diff).

    ``sigma_t^2 = (1 - ab_t) / ab_t`` with ``ab_t = prod_{s <= t} (1 - beta_s)``, ``beta`` linear from
    ``beta_start`` to ``beta_end`` over ``T`` steps, capped at the prior's ``sigma_max``
    (:func:`~invdiff.solvers.schedules.vp_chain_sigmas`).
    """

    def __init__(self, prior, steps: int, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 device: str | torch.device | None = None):
        super().__init__(check_prior(prior), device=device)
        self.steps = check_positive_int("steps", steps)
        self.T, self.beta_start, self.beta_end = check_vp_chain(T, beta_start, beta_end)

    def sigmas(self) -> Tensor:
        """The ``steps`` noise levels of the chain (float64, descending), then 0."""
        return vp_chain_sigmas(self.steps, self.T, self.beta_start, self.beta_end,
                               sigma_max=getattr(self.prior, "sigma_max", None))
