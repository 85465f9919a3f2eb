"""The ``invdiff`` command: ``demo``, ``reconstruct``, ``batch`` and ``bench``.

``invdiff demo`` simulates a measurement of an embedded phantom, reconstructs it and writes a PNG
figure (truth / measurement / pseudo-inverse baseline / reconstruction / posterior std), printing
PSNR, SSIM, network calls and seconds. ``invdiff reconstruct`` does the same for an image or
volume read from a file (NIfTI, npy, HDF5), or reconstructs measured k-space from a fastMRI-layout
HDF5 file, and writes the result in the format of the output's extension
(:func:`invdiff.recon.file.reconstruct_file` does that work). ``invdiff batch`` reconstructs every
scan of a folder, one Ray task per scan (:func:`invdiff.distributed.batch.run_batch`). ``invdiff
bench`` hands its arguments to :mod:`invdiff.bench`. This module only parses arguments and prints.

Solvers are looked up by name in :data:`invdiff.solvers.SOLVERS` (``fbp`` and ``zerofilled`` are
the operator's pseudo-inverse ``A_dagger``; ``dps``, ``reddiff``, ``smc``, ``mbir``, ``tv``, ...);
a solver whose module is not available fails with one line. Errors a user can cause (a missing
input, an existing output, a bad argument) print one line on stderr and exit non-zero (2, or 1
for an existing output); ``--traceback`` shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import dis
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

from invdiff.device import check_device
from invdiff.recon.file import PSEUDO_INVERSES  # fbp, zerofilled: the operator's A_dagger

TASKS = ("ct", "mri", "inpaint", "deblur", "sr", "ct3d")
BASELINE_LABEL = {"ct": "FBP", "ct3d": "FBP", "mri": "zero-filled", "inpaint": "masked",
                  "deblur": "Wiener", "sr": "upsampled"}


class CLIError(Exception):
    """A user error reported as one line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


# ----------------------------------------------------------------------------- helpers
def _check_output(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise CLIError(f"{path}: output exists; pass --overwrite to replace it", code=1)


def _device_arg(text: str) -> str:
    """``--device``: a torch device string (kept as given; availability is checked where it is used)."""
    try:
        torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a torch device such as 'cpu', 'cuda' or 'cuda:1', got {text!r}") from None
    return text


# ----------------------------------------------------------------------------- demo
def _phantom(name: str, size: int, seed: int) -> Tensor:
    from invdiff import data

    if name == "shepp-logan":
        return data.shepp_logan(size)
    return data.ellipses(1, size, seed=seed)


def _demo_operator(args, x: Tensor):
    from invdiff import operators

    size = tuple(x.shape[1:])
    t = args.task
    if t in ("ct", "ct3d"):
        return lambda s: operators.CT(size, n_views=args.views, noise_std=s)
    if t == "mri":
        return lambda s: operators.MRI(size, acceleration=args.acceleration, noise_std=s, seed=args.seed)
    if t == "inpaint":
        return lambda s: operators.Inpainting(size, mask=args.keep, noise_std=s, seed=args.seed)
    if t == "deblur":
        return lambda s: operators.Blur(size, kernel_std=args.kernel_std, noise_std=s)
    return lambda s: operators.SuperResolution(size, factor=args.factor, noise_std=s)


def _show(ax, img: Tensor, title: str, cmap: str = "gray", aspect="equal", clim=None) -> None:
    vmin, vmax = clim if clim is not None else (None, None)
    ax.imshow(img.detach().cpu().float().numpy(), cmap=cmap, aspect=aspect, vmin=vmin, vmax=vmax)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def _middle(t: Tensor) -> Tensor:
    """First image of a batch, first channel; the middle slice of a volume."""
    t = t[0]
    if t.ndim == 4:  # (C, D, H, W)
        t = t[:, t.shape[1] // 2]
    return t[0]


def _measurement_image(task: str, y: Tensor) -> tuple[Tensor, str]:
    if task == "mri":  # (B, 2, H, W): log-magnitude of centred k-space
        return torch.log1p(y[0].pow(2).sum(0).sqrt() / y.abs().max().clamp_min(1e-12) * 1e3), "log |k-space|"
    if task in ("ct", "ct3d"):
        return _middle(y), "sinogram"
    return _middle(y), "measurement"


def _figure(path: Path, panels: list[tuple[Tensor, str, str, object]], overwrite: bool, clim=None) -> None:
    """One row of panels ``(image, title, cmap, aspect)``; grey images with ``equal`` aspect share ``clim``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from invdiff.utils import atomic_path

    fig = Figure(figsize=(2.6 * len(panels), 2.9), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels))
    for ax, (img, title, cmap, aspect) in zip(axes, panels):
        _show(ax, img, title, cmap, aspect, clim if (cmap == "gray" and aspect == "equal") else None)
    with atomic_path(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


def cmd_demo(args) -> int:
    from invdiff import metrics
    from invdiff.recon.file import make_solver, relative_noise, score_line

    out_dir = Path(args.out)
    png = out_dir / f"demo_{args.task}_{args.solver.lower()}.png"
    _check_output(png, args.overwrite)
    check_device(args.device)  # 'cuda' without CUDA fails here, naming the device
    # an unknown or unavailable solver or prior fails before any work
    # the ct3d phantom squeezes a whole ellipsoid phantom into --depth slices: voxels size/depth times as tall
    spacing = (args.size / args.depth, 1.0, 1.0) if args.task == "ct3d" else None
    solver = None if args.solver.lower() in PSEUDO_INVERSES else make_solver(args.solver, args.prior, args.steps,
                                                                              args.device, spacing=spacing,
                                                                              task=args.task)
    if args.task == "ct3d":
        from invdiff import data

        x = data.ellipsoids((args.depth, args.size, args.size), seed=args.seed)
    else:
        x = _phantom(args.phantom, args.size, args.seed)
    x = x.to(args.device)
    op = relative_noise(_demo_operator(args, x), x, args.noise).to(args.device)
    torch.manual_seed(args.seed)
    with torch.no_grad():
        y = op(x)  # A x plus Gaussian noise from the global generator

    desc = {"ct": f"{args.views} views", "ct3d": f"{args.views} views, {args.depth} slices",
            "mri": f"{args.acceleration}x", "inpaint": f"{args.keep:.0%} kept",
            "deblur": f"kernel std {args.kernel_std}", "sr": f"x{args.factor}"}[args.task]
    name = "ellipsoids" if args.task == "ct3d" else args.phantom
    print(f"invdiff demo: {args.task} ({desc}), {name} {args.size}x{args.size}, noise {args.noise} x rms(Ax)")
    t0 = time.perf_counter()
    with torch.no_grad():
        base = op.A_dagger(y)
    t_base = time.perf_counter() - t0
    print(score_line(f"{BASELINE_LABEL[args.task]} (A_dagger)", base, x, 0, t_base))
    panels = [(_middle(x), "truth", "gray", "equal")]
    meas, title = _measurement_image(args.task, y)
    panels.append((meas, title, "gray", "auto"))
    panels.append((_middle(base), f"{BASELINE_LABEL[args.task]}  {float(metrics.psnr(base, x)):.2f} dB", "gray", "equal"))
    if solver is not None:
        r = solver.reconstruct(y, op, n_samples=args.samples, seed=args.seed, progress=sys.stderr.isatty())
        print(score_line(args.solver, r.mean, x, r.nfe, r.seconds))
        panels.append((_middle(r.mean), f"{args.solver}  {float(metrics.psnr(r.mean, x)):.2f} dB", "gray", "equal"))
        if r.std is not None and float(r.std.abs().max()) > 0:
            panels.append((_middle(r.std), f"posterior std ({args.samples} samples)", "magma", "equal"))
    _figure(png, panels, args.overwrite, clim=(float(x.min()), float(x.max())))  # the truth's grey range
    print(f"wrote {png}")
    return 0


# ----------------------------------------------------------------------------- reconstruct
RECONSTRUCT_OPTIONS = ("solver", "prior", "steps", "operator", "views", "acceleration", "center_fraction", "mask",
                       "noise", "scale", "noise_std", "image_model", "seed", "device", "overwrite")


def reconstruct_kwargs(args) -> dict:
    """The keyword arguments of :func:`invdiff.recon.file.reconstruct_file` from parsed arguments."""
    return {k: getattr(args, k) for k in RECONSTRUCT_OPTIONS}


def cmd_reconstruct(args) -> int:
    """:func:`invdiff.recon.file.reconstruct_file` with the parsed arguments; it prints what it reports."""
    from invdiff.recon.file import reconstruct_file

    reconstruct_file(args.input, args.out, **reconstruct_kwargs(args), progress=sys.stderr.isatty(), echo=print)
    return 0


# ----------------------------------------------------------------------------- batch
def cmd_batch(args) -> int:
    """:func:`invdiff.distributed.batch.run_batch`; failed scans are named on stderr, exit status 1."""
    from invdiff.distributed.batch import run_batch

    if args.workers is not None and args.workers < 1:
        raise CLIError(f"--workers: expected a positive integer, got {args.workers}")
    if args.retries < 0:
        raise CLIError(f"--retries: expected a non-negative integer, got {args.retries}")
    res = run_batch(args.input, args.out, workers=args.workers, address=args.address, ext=args.ext,
                    max_retries=args.retries, gpus_per_task=args.gpus_per_task, progress=sys.stderr.isatty(),
                    echo=print, **reconstruct_kwargs(args))
    for name, reason in res.failed.items():
        print(f"invdiff: error: {name}: {reason}", file=sys.stderr)
    return 1 if res.failed else 0


# ----------------------------------------------------------------------------- bench
def cmd_bench(argv: list[str]) -> int:
    from invdiff.bench.__main__ import main as bench_main

    code = bench_main(argv)
    return int(code or 0)


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from invdiff import __version__

    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(prog="invdiff", description="Reconstruct scientific images from incomplete, noisy "
                                "measurements with diffusion priors.", formatter_class=fmt)
    p.add_argument("--version", action="version", version=f"invdiff {__version__}")
    p.add_argument("--traceback", action="store_true", help="show full tracebacks instead of one-line errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="{demo,reconstruct,batch,bench}")

    def reconstruct_options(q):  # shared by reconstruct and batch
        q.add_argument("--operator", choices=("ct", "mri"), default=None, help="forward operator (required for images)")
        q.add_argument("--views", type=int, default=60, help="CT projection angles over 180 degrees")
        q.add_argument("--mask", choices=("random", "equispaced", "poisson"), default="random", help="MRI mask")
        q.add_argument("--center-fraction", type=float, default=0.08, help="MRI fully sampled centre fraction")
        q.add_argument("--noise", type=float, default=0.01, help="Gaussian noise std as a fraction of rms(A x) "
                       "(simulated measurements only)")
        q.add_argument("--scale", type=float, default=None, help="measured data (sinogram, k-space): data units per "
                       "prior unit (default: the 0.995 quantile of |FBP| or |CG SENSE| is mapped to the prior's "
                       "data_range max)")
        q.add_argument("--noise-std", type=float, default=None, help="measured data: noise std in the data's units "
                       "(default: the file's noise_std, else estimated on the data)")
        q.add_argument("--image-model", choices=("auto", "magnitude", "complex"), default="auto",
                       help="measured k-space: 'magnitude' (real image, calibration phase folded into the coil maps) "
                       "or 'complex' (two channels); auto: the prior's channel count, complex for cg/tv")

    def common(q):
        q.add_argument("--solver", default="fbp", help="fbp/zerofilled (A_dagger), tv, cg, dps, reddiff, smc, mbir, dds")
        q.add_argument("--prior", default=None, help="embedded prior name or checkpoint path (default: the first "
                       "embedded prior); only for diffusion solvers")
        q.add_argument("--steps", type=int, default=None, help="solver steps (iterations for tv/cg); default: the solver's")
        q.add_argument("--seed", type=int, default=0, help="seed of the noise, masks and sampler")
        q.add_argument("--device", type=_device_arg, default="cpu", help="torch device where the solver, operator "
                       "and prior run: cpu, cuda, cuda:N (CT on CUDA uses ASTRA's GPU projectors when ASTRA has CUDA)")
        q.add_argument("--overwrite", action="store_true", help="replace existing outputs")
        q.add_argument("--acceleration", type=float, default=4.0, help="MRI undersampling factor")

    d = sub.add_parser("demo", help="reconstruct an embedded phantom and write a PNG figure", formatter_class=fmt,
                       description="Simulate a measurement of an embedded phantom, reconstruct it, write "
                       "OUT/demo_TASK_SOLVER.png and print PSNR and SSIM (data range: the truth's max - min), "
                       "network calls (NFE) and seconds.")
    d.add_argument("--task", choices=TASKS, default="ct", help="forward problem")
    d.add_argument("--out", required=True, help="output folder")
    d.add_argument("--size", type=int, default=64, help="image side in pixels")
    d.add_argument("--phantom", choices=("shepp-logan", "ellipses"), default="shepp-logan", help="2D phantom")
    d.add_argument("--views", type=int, default=16, help="CT projection angles over 180 degrees")
    d.add_argument("--depth", type=int, default=8, help="slices of the ct3d volume")
    d.add_argument("--keep", type=float, default=0.3, help="inpainting: fraction of pixels kept")
    d.add_argument("--kernel-std", type=float, default=2.0, help="deblur: Gaussian kernel std in pixels")
    d.add_argument("--factor", type=int, default=4, help="super-resolution factor")
    d.add_argument("--noise", type=float, default=0.01, help="Gaussian noise std as a fraction of rms(A x) "
                   "(0.01: 40 dB measurement SNR)")
    d.add_argument("--samples", type=int, default=1, help="posterior samples (std panel when > 1)")
    common(d)
    d.set_defaults(solver="dds")  # the demo runs a diffusion solver on the embedded prior
    d.set_defaults(func=cmd_demo)

    r = sub.add_parser("reconstruct", help="reconstruct an image/volume file or measured k-space", formatter_class=fmt,
                       description="INPUT an image or volume (.nii/.nii.gz, .npy, .h5 reconstruction): simulate "
                       "its measurement with --operator, reconstruct, print PSNR/SSIM against INPUT and save OUT "
                       "(format from the extension; a NIfTI input's affine is kept). INPUT an .h5 with 'kspace' "
                       "(fastMRI layout): undersample it retrospectively (or use the file's 'mask'), estimate "
                       "coil maps (ESPIRiT) and reconstruct by SENSE with any solver (fbp/zerofilled: zero-filled "
                       "root-sum-of-squares); OUT holds (slices, 1, H, W) magnitude images ((slices, H, W) for NIfTI). "
                       "INPUT an .h5 with 'sinogram' and ASTRA geometry (docs/sinogram_format.md) or a LoDoPaB-CT "
                       "observation: reconstruct the measured sinogram as it is, in the data's units.")
    r.add_argument("input", help="input file: .nii, .nii.gz, .npy or .h5, or a folder of one DICOM series")
    r.add_argument("--out", required=True, help="output file: .nii, .nii.gz, .npy or .h5")
    reconstruct_options(r)
    common(r)
    r.set_defaults(func=cmd_reconstruct)

    bt = sub.add_parser("batch", help="reconstruct every scan of a folder, one Ray task per scan", formatter_class=fmt,
                        description="Reconstruct every scan in IN_DIR (.nii/.nii.gz/.npy/.h5 files, sub-folders "
                        "holding one DICOM series) as 'invdiff reconstruct' does, one task per scan on Ray: a local "
                        "Ray cluster of --workers CPUs by default, or an existing Ray cluster with --address (after "
                        "'ray start --head'). Outputs OUT_DIR/NAME.EXT are written atomically; a rerun skips those "
                        "that exist (finished); a scan that fails is named on stderr, the others finish, and the "
                        "exit status is 1. Ray reruns a task whose worker died (--retries). Needs Ray: "
                        "pip install 'invdiff[ray]'.")
    bt.add_argument("input", help="input folder")
    bt.add_argument("--out", required=True, help="output folder")
    bt.add_argument("--ext", choices=(".npy", ".nii", ".nii.gz", ".h5"), default=None,
                    help="output format (default: the input's; .nii.gz for a DICOM folder)")
    bt.add_argument("--workers", type=int, default=None, help="Ray tasks at once (local cluster: its CPUs; "
                    "default: all CPUs)")
    bt.add_argument("--address", default=None, help="join the Ray cluster at this address ('auto' or HOST:PORT) "
                    "instead of starting a local one")
    bt.add_argument("--retries", type=int, default=3, help="Ray reruns of a task whose worker process died")
    bt.add_argument("--gpus-per-task", type=float, default=None, help="GPUs Ray gives each task (a fraction shares "
                    "a GPU; default: 1 with --device cuda, else 0)")
    reconstruct_options(bt)
    common(bt)
    bt.set_defaults(func=cmd_batch)

    b = sub.add_parser("bench", help="benchmark against deepinv (arguments go to python -m invdiff.bench)",
                       add_help=False)
    b.add_argument("args", nargs=argparse.REMAINDER)
    return p


def _raised_by_invdiff_check(err: BaseException) -> bool:
    """Whether ``err`` comes from a ``raise`` statement in invdiff's own code (an argument or file check).

    invdiff's checks raise ``ValueError`` / ``TypeError`` / ``ImportError`` with a message naming the
    argument, the value and what was expected. The same types raised anywhere else (by torch, by Python
    for a call with wrong arguments, by the import system for a broken module) are bugs: the innermost
    frame is then not invdiff's, or its instruction is not a ``raise``.
    """
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    package = Path(__file__).resolve().parent
    if code.co_filename.startswith("<") or not Path(code.co_filename).resolve().is_relative_to(package):
        return False  # "<frozen importlib...>", "<string>" or a library's file
    return dis.opname[code.co_code[tb.tb_lasti]] == "RAISE_VARARGS"


def main(argv: list[str] | None = None) -> int:
    """Run the ``invdiff`` command; returns the exit status (0 on success).

    User errors print one line on stderr: a :class:`CLIError` (exit status its ``code``), an existing
    output (1), a missing file (2), a bad value found by invdiff's own checks (2, see
    :func:`_raised_by_invdiff_check`). Any other exception is an internal error and propagates with its
    traceback; ``--traceback`` shows the traceback of user errors too.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    show_tb = "--traceback" in argv
    if show_tb:
        argv.remove("--traceback")
    try:
        if argv[:1] == ["bench"]:  # everything after 'bench' belongs to the benchmark's own parser
            return cmd_bench(argv[1:])
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # argparse: --help, --version or a usage error (already printed)
            return int(exc.code or 0)
        return args.func(args)
    except CLIError as err:
        if show_tb:
            raise
        print(f"invdiff: error: {err}", file=sys.stderr)
        return err.code
    except FileExistsError as err:
        if show_tb:
            raise
        print(f"invdiff: error: {err}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError, TypeError, ImportError) as err:
        if show_tb or not (isinstance(err, FileNotFoundError) or _raised_by_invdiff_check(err)):
            raise  # --traceback, or an internal error: the same types raised by torch or a bug
        print(f"invdiff: error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
