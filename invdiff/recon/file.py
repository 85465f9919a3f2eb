"""One scan file in, one reconstruction file out: the work behind ``invdiff reconstruct``.

:func:`reconstruct_file` reads ``input`` (NIfTI, npy, HDF5, a folder of one DICOM series), decides
what it holds and writes the reconstruction to ``out`` (format from the extension, written whole or
not at all by :func:`invdiff.data.save`):

- a measured CT sinogram (HDF5 with ASTRA geometry, LoDoPaB-CT): reconstructed as it is, in the
  data's units (:func:`invdiff.recon.sinogram.reconstruct_sinogram`);
- measured k-space (fastMRI layout): undersampled retrospectively or by the file's mask, SENSE with
  any solver (:func:`invdiff.recon.kspace.reconstruct_kspace`);
- an image or volume: a simulated measurement ``y = A x + n`` with ``operator`` (``"ct"`` or
  ``"mri"``) and Gaussian noise of std ``noise * rms(A x)``, then reconstructed and scored against
  the input.

``invdiff reconstruct`` parses its arguments and calls this function; a script calling it gets the
same file. The lines the command prints are handed to ``echo``.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from invdiff.device import check_device

PSEUDO_INVERSES = {"fbp", "zerofilled", "zero-filled", "zero_filled"}

DEFAULT_PRIOR = "phantom-ct-64"  # the shipped 2D prior; volumes go through it slice by slice


def load_prior(spec: str | None, device: str = "cpu"):
    """The prior named ``spec`` (embedded name or checkpoint path); ``None``: :data:`DEFAULT_PRIOR`."""
    from invdiff import priors

    if spec is None:
        names = list(priors.available())
        if not names:
            raise ValueError("prior: no embedded prior is shipped; pass a checkpoint path (--prior PATH)")
        spec = DEFAULT_PRIOR if DEFAULT_PRIOR in names else names[0]
    return priors.load(spec, device=device)


def make_solver(name: str, prior: str | None = None, steps: int | None = None, device: str = "cpu",
                spacing: tuple[float, float, float] | None = None, task: str | None = None):
    """Instantiate the solver ``name`` with its class defaults (the presets of :mod:`invdiff.solvers.presets`).

    ``steps`` goes to the solver's ``steps=`` (diffusion) or ``iters=`` (TV, CG); the prior is loaded
    only for solvers that need one (``needs_prior``). ``spacing`` (voxel sizes ``(dz, dy, dx)``) goes to
    solvers that take one (DiffusionMBIR: it sets the TV-along-z weight) and is ignored by the others.
    ``task`` (a name of :data:`invdiff.solvers.presets.TASKS`) goes to solvers with per-task presets (DDS,
    DiffPIR, DAPS, DPS, RED-Diff: their ``task=``), which fall back to the default preset where a task has
    no entry of its own; other solvers ignore it.
    """
    from invdiff.solvers import get_solver

    try:
        cls = get_solver(name)
    except ImportError as err:
        raise ImportError(f"solver {name!r}: not available in this installation ({err})") from None
    params = inspect.signature(cls.__init__).parameters
    kw = {}
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps: expected a positive integer, got {steps!r}")
        kw = {"steps": steps} if "steps" in params else {"iters": steps} if "iters" in params else {}
    if "device" in params:
        kw["device"] = device  # the solver computes there (invdiff.device): y, operator and prior go there
    if spacing is not None and "spacing" in params:
        kw["spacing"] = spacing
    if task is not None and "task" in params:
        kw["task"] = task
    if getattr(cls, "needs_prior", True):
        return cls(load_prior(prior, device), **kw)
    return cls(**kw)


def settings_line(solver) -> str:
    """``  settings: name=value, ...``: the hyperparameters a solver runs with (:meth:`Solver.settings`)."""
    items = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in solver.settings().items())
    return f"  {type(solver).__name__} settings: {items}"


def relative_noise(make_op: Callable[[float], object], x: Tensor, noise: float):
    """Build the operator twice: noise-free to measure ``rms(A x)``, then with ``noise_std = noise * rms(A x)``.

    ``noise = 0.01`` is a measurement signal-to-noise ratio of 40 dB, whatever the operator's scaling.
    """
    if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise: expected a non-negative number (a fraction of rms(A x)), got {noise!r}")
    op = make_op(0.0)
    if noise == 0:
        return op
    with torch.no_grad():  # on x's device: an operator's buffers (MRI's mask) must be where x is
        scale = float(op.to(x.device).A(x).pow(2).mean().sqrt())
    return make_op(noise * scale)


def score_line(label: str, x: Tensor, truth: Tensor | None, nfe: int, seconds: float) -> str:
    """``label PSNR .. dB SSIM .. NFE .. seconds``.

    PSNR/SSIM (data range: the truth's max - min) only when ``truth`` is given and no image of it is
    constant (a blank input is reconstructed and written; it has no score).
    """
    from invdiff import metrics

    if truth is not None:
        flat = truth.flatten(1)
        truth = None if bool((flat.amax(1) == flat.amin(1)).any()) else truth
    if truth is None:
        return f"  {label:<22} NFE {nfe:5d}  {seconds:8.2f} s"
    p = float(metrics.psnr(x, truth).mean())
    s = float(metrics.ssim(x, truth).mean())
    return f"  {label:<22} PSNR {p:6.2f} dB  SSIM {s:.4f}  NFE {nfe:5d}  {seconds:8.2f} s"


def _as_operator_input(x: Tensor, path: Path) -> Tensor:
    """``(H, W)`` -> ``(1, 1, H, W)``; ``(D, H, W)`` -> ``(1, 1, D, H, W)``; 4D/5D as given."""
    if x.ndim in (2, 3):
        return x[None, None]
    if x.ndim in (4, 5):
        return x
    raise ValueError(f"{path}: expected an image (H, W), a volume (D, H, W) or a batch (B, C, [D,] H, W), "
                     f"got shape {tuple(x.shape)}")


def volume_spacing(meta: dict, xb: Tensor) -> tuple[float, float, float] | None:
    """The voxel sizes ``(dz, dy, dx)`` of a volume input ``(B, C, D, H, W)`` from its file (``meta["spacing"]``:
    NIfTI header zooms, DICOM slice step and PixelSpacing); ``None`` for images or files that state none."""
    spacing = meta.get("spacing")
    if xb.ndim != 5 or spacing is None or len(spacing) < 3:
        return None
    return tuple(float(v) for v in tuple(spacing)[-3:])  # type: ignore[return-value]


def output_meta(meta: dict, out: Path) -> dict:
    """The input's descriptive meta (affine, attributes) without datasets or format internals."""
    keep = {k: v for k, v in meta.items() if not torch.is_tensor(v) and k not in ("format", "key", "complex_axis")}
    if out.name.lower().endswith(".h5"):
        keep["key"] = "reconstruction"
    return keep


def _check_operator(operator: str | None, expected: str, path: Path, holds: str) -> None:
    if operator not in (None, expected):
        raise ValueError(f"operator: {operator!r} does not fit {path}, which holds {holds}; use {expected!r} "
                         f"(--operator {expected}) or leave it out")


def intensity_map(x: Tensor, prior=None, quantiles: tuple[float, float] = (0.001, 0.999)):
    """Maps between an input image's units and the prior's ``data_range`` for a simulated measurement.

    An image already inside the range (to 1 % of its width) is used as it is. Otherwise (Hounsfield
    units, say) the ``quantiles`` of its values are mapped linearly onto ``data_range = (lo, hi)``:
    ``x' = lo + (x - a) / s`` with ``a``, ``a + s (hi - lo)`` the two quantiles; the measurement is
    simulated from ``x'`` and the reconstruction mapped back, ``x = a + s (x' - lo)``, so the output
    is in the input's units. Returns ``(to_prior, from_prior, how)``; ``how`` is ``""`` for no map.
    """
    rng = getattr(prior, "data_range", None) or (0.0, 1.0)
    lo, hi = float(rng[0]), float(rng[1])
    tol = 0.01 * (hi - lo)
    if float(x.min()) >= lo - tol and float(x.max()) <= hi + tol:
        return (lambda t: t), (lambda t: t), ""
    flat = x.detach().reshape(-1).double()
    if flat.numel() > 2_000_000:
        flat = flat[:: flat.numel() // 1_000_000 + 1]
    qa, qb = (float(v) for v in torch.quantile(flat, torch.tensor(quantiles, dtype=flat.dtype)))
    if not qb > qa:
        qa, qb = float(flat.min()), float(flat.max())
    if not qb > qa:  # a constant image: shift it into the range
        qb = qa + 1.0
    a, s = qa, (qb - qa) / (hi - lo)
    how = (f"the input's {quantiles[0]:g}-{quantiles[1]:g} quantiles [{qa:.4g}, {qb:.4g}] are mapped linearly onto "
           f"the prior's data_range [{lo:g}, {hi:g}]; the output is in the input's units")
    return (lambda t: lo + (t - a) / s), (lambda t: a + s * (t - lo)), how


def reconstruct_file(input: str | os.PathLike, out: str | os.PathLike, *, solver: str = "fbp",
                     prior: str | None = None, steps: int | None = None, operator: str | None = None,
                     views: int = 60, acceleration: float = 4.0, center_fraction: float = 0.08,
                     mask: str = "random", noise: float = 0.01, scale: float | None = None,
                     noise_std: float | None = None, image_model: str = "auto", seed: int = 0,
                     device: str = "cpu", overwrite: bool = False, progress: bool = False,
                     echo: Callable[[str], None] = print) -> Path:
    """Reconstruct the scan in ``input`` and write it to ``out``; returns ``out`` as a :class:`~pathlib.Path`.

    Parameters
    ----------
    input : path
        ``.nii``/``.nii.gz``/``.npy``/``.h5`` file or a folder of one DICOM series.
    out : path
        Output file; its extension (``.nii``, ``.nii.gz``, ``.npy``, ``.h5``) sets the format. Not
        overwritten unless ``overwrite``; written atomically.
    solver, prior, steps
        Solver name (``fbp``/``zerofilled`` are the operator's ``A_dagger``; ``tv``, ``cg``, ``dps``,
        ``reddiff``, ``smc``, ``mbir``, ``dds``, ...), prior name or checkpoint path (default: the
        first embedded prior; diffusion solvers only), steps (``iters`` for TV and CG).
    operator, views, acceleration, center_fraction, mask, noise
        Images and volumes: the simulated measurement, ``"ct"`` with ``views`` angles over 180
        degrees, or ``"mri"`` (Cartesian, ``mask`` random/equispaced/poisson); Gaussian noise of std
        ``noise * rms(A x)``. k-space: ``acceleration``, ``center_fraction`` and ``mask`` of the
        retrospective undersampling.
    scale, noise_std, image_model
        Measured data: data units per prior unit, noise std in the data's units (default: the
        file's, else estimated) and, for k-space, ``"magnitude"``, ``"complex"`` or ``"auto"``.
    seed, device, progress
        Seed of the noise, masks and sampler; the torch device the solver, operator and prior run on
        (``"cpu"``, ``"cuda"``, ``"cuda:1"``; see :mod:`invdiff.device`); a progress bar.
    echo
        Receives the lines ``invdiff reconstruct`` prints (a description, the scores, ``wrote OUT``).

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()); np.save(d / "x.npy", np.eye(16, dtype=np.float32))
    >>> reconstruct_file(d / "x.npy", d / "r.npy", operator="ct", views=8, echo=lambda s: None).name
    'r.npy'
    """
    from invdiff import data, operators
    from invdiff.distributed.context import launched_rank, launched_world_size, reconstruct_split

    if launched_world_size() > 1 and str(device) == "cuda":  # torchrun: one GPU per rank, cuda:LOCAL_RANK
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    check_device(device)  # a bad or absent device fails before any work, naming `device`
    rank = launched_rank()  # under torchrun: rank 0 prints and writes, every rank reconstructs its slices
    if rank != 0:
        echo = lambda _line: None  # noqa: E731
    path, out = Path(input), Path(out)
    if not (path.is_file() or path.is_dir()):  # checked before the heavy work: a typo fails at once
        raise FileNotFoundError(f"{path}: input file not found" if not path.exists()
                                else f"{path}: is not a file or folder")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: output exists; pass overwrite=True (or --overwrite) to replace it")
    data.io._kind(out)  # an unsupported output extension fails before any work
    x, meta = data.load(path)

    if rank != 0 and (meta.get("format") in ("sinogram-h5", "lodopab-h5") or meta.get("key") == "kspace"):
        return out  # measured data are reconstructed by rank 0 alone
    if meta.get("format") in ("sinogram-h5", "lodopab-h5"):  # a measured sinogram: reconstructed as it is
        from invdiff.recon.sinogram import reconstruct_sinogram

        _check_operator(operator, "ct", path, "a CT sinogram")
        sol = make_solver(solver, prior, steps, device)
        res = reconstruct_sinogram(x, meta, sol, scale=scale, noise_std=noise_std, seed=seed, device=device,
                                   progress=progress)
        echo(f"invdiff reconstruct: {path.name}: " + "\n  ".join(res.lines))
        if sol.settings():
            echo(settings_line(sol))
        out_tensor = res.reconstruction.reshape(*x.shape[:-2], *res.reconstruction.shape[-2:]).cpu()
        data.save(out, out_tensor, overwrite=overwrite, **res.output_meta(out))
        echo(f"wrote {out}")
        return out
    if meta.get("key") == "kspace":  # measured k-space -> magnitude images (S, 1, H, W)
        from invdiff.recon.kspace import reconstruct_kspace

        _check_operator(operator, "mri", path, "k-space")
        sol = None if solver.lower() in PSEUDO_INVERSES else make_solver(solver, prior, steps, device)
        r = reconstruct_kspace(x, meta, sol, acceleration=acceleration, center_fraction=center_fraction, mask=mask,
                               seed=seed, image_model=image_model, scale=scale, noise_std=noise_std, device=device,
                               progress=progress, name=path.name, solver_name=solver)
        echo("\n".join(r.lines))
        if sol is not None and sol.settings():
            echo(settings_line(sol))
        rec = r.image.cpu()
        out_tensor = rec[:, 0] if out.name.lower().endswith((".nii", ".nii.gz")) else rec
    else:
        if operator is None:
            raise ValueError("operator: required for an image input (--operator); expected 'ct' or 'mri'")
        if operator not in ("ct", "mri"):
            raise ValueError(f"operator: expected 'ct' or 'mri', got {operator!r}")
        xb = _as_operator_input(x, path).to(device)
        sol = make_solver(solver, prior, steps, device, spacing=volume_spacing(meta, xb))
        to_prior, from_prior, how = intensity_map(xb, getattr(sol, "prior", None))
        if how:
            echo(f"invdiff reconstruct: {path.name}: intensity: {how}")
        xb_p = to_prior(xb)
        size = tuple(xb.shape[1:])
        if operator == "ct":
            make = lambda s: operators.CT(size, n_views=views, noise_std=s)  # noqa: E731
            desc = f"CT {views} views"
        else:
            make = lambda s: operators.MRI(size, acceleration=acceleration,  # noqa: E731
                                           center_fraction=center_fraction, mask=mask, noise_std=s, seed=seed)
            desc = f"MRI {acceleration}x {mask}"
        op = relative_noise(make, xb_p, noise).to(device)
        torch.manual_seed(seed)
        with torch.no_grad():
            y = op(xb_p)
        echo(f"invdiff reconstruct: {path.name} {tuple(x.shape)} -> simulated {desc}, noise {noise} x rms(Ax)")
        if sol.settings():
            echo(settings_line(sol))
        r = reconstruct_split(sol, y, op, seed=seed, progress=progress)  # sol.reconstruct without torchrun
        if r is None:  # another rank (0) writes the output
            return out
        rec = from_prior(r.mean)
        echo(score_line(solver, rec, xb, r.nfe, r.seconds))
        out_tensor = rec.reshape(x.shape)
    data.save(out, out_tensor.detach().cpu(), overwrite=overwrite, **output_meta(meta, out))
    echo(f"wrote {out}")
    return out
