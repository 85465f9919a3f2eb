"""Benchmark tasks: a forward operator, held-out test images and a measurement-noise level.

Every task is built at 64x64 (the shipped ``phantom-ct-64`` prior's size). Test images are held-out
random-ellipse phantoms, :func:`invdiff.data.ellipses` with ``seed=777001`` (the prior's training
never uses this seed), followed by the Shepp-Logan phantom; hyperparameters are tuned on a separate
tuning set, ``seed=777002`` (:func:`tuning_images`), never on the test images.

Noise. Operators whose output is in image units (inpainting, blur, super-resolution, and MRI, whose
centred FFT is orthonormal) get Gaussian noise of standard deviation ``noise = 0.01`` (1 % of the
[0, 1] data range). CT sinograms are line integrals in pixel units, so for CT the noise std is
``0.01 * max |A x_SL|``, 1 % of the Shepp-Logan phantom's largest projection value (a fixed number
per operator, the same for every test image). Measurements are drawn with a seeded generator:
``y = A x + noise_std * n`` (:func:`measure`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from invdiff.data.phantoms import ellipses, ellipsoids, shepp_logan

SIZE = 64
TEST_SEED = 777001
TUNE_SEED = 777002
VOLUME_SEED = 777003


@dataclass(frozen=True)
class Task:
    """One inverse problem of the benchmark.

    Attributes
    ----------
    name : str
        Short identifier (``ct16``, ``mri4-random``, ...), used by ``--tasks``.
    description : str
        One line for the results table.
    make_operator : callable
        ``noise_std -> operator`` (a deepinv ``LinearPhysics``) for images of ``img_size``.
    relative_noise : float
        Noise std as a fraction: of the data range (image-unit operators) or of ``max |A x_SL|`` (CT).
    noise_reference : str
        ``"image"`` (noise std = ``relative_noise``) or ``"projection"`` (times ``max |A x_SL|``).
    group : str
        Hyperparameter group (``ct``, ``ct-limited``, ``mri``, ``inpaint``, ``deblur``, ``sr``, ``ct3d``;
        :data:`invdiff.solvers.presets.TASKS`): tasks of one group share the tuned hyperparameters.
    volume : bool
        A 3D task (one ``(1, 1, D, H, W)`` volume per test item).
    img_size : tuple
        ``(C, H, W)`` or ``(C, D, H, W)``.
    """

    name: str
    description: str
    make_operator: Callable[[float], object]
    relative_noise: float = 0.01
    noise_reference: str = "image"
    group: str = "ct"
    volume: bool = False
    img_size: tuple = (1, SIZE, SIZE)
    notes: dict = field(default_factory=dict)

    def noise_std(self) -> float:
        """The absolute measurement-noise std of this task (see the module docstring)."""
        if self.noise_reference == "image":
            return float(self.relative_noise)
        op = self.make_operator(0.0)
        ref = shepp_logan(self.img_size[-1])
        if self.volume:
            ref = ref[:, :, None].expand(1, 1, self.img_size[1], *ref.shape[-2:]).contiguous()
        with torch.no_grad():
            return float(self.relative_noise * op.A(ref).abs().max())

    def operator(self):
        """The operator with this task's noise level."""
        return self.make_operator(self.noise_std())


def _ct(n_views: int, limited_angle: float | None = None, volume: bool = False):
    def make(noise_std: float):
        CT = importlib.import_module("invdiff.operators.ct").CT
        size = (1, 16, SIZE, SIZE) if volume else (1, SIZE, SIZE)
        kw = {} if limited_angle is None else {"limited_angle": limited_angle}
        return CT(size, n_views=n_views, noise_std=noise_std, **kw)

    return make


def _mri(acceleration: int, mask: str):
    def make(noise_std: float):
        from invdiff.operators.mri import MRI

        return MRI((1, SIZE, SIZE), acceleration=acceleration, mask=mask, noise_std=noise_std, seed=0)

    return make


def _inpaint(noise_std: float):
    from invdiff.operators.inpainting import Inpainting

    return Inpainting((1, SIZE, SIZE), mask=0.3, noise_std=noise_std, seed=0)


def _deblur(noise_std: float):
    from invdiff.operators.blur import Blur

    return Blur((1, SIZE, SIZE), kernel="gaussian", kernel_std=2.0, noise_std=noise_std)


def _sr(noise_std: float):
    from invdiff.operators.superres import SuperResolution

    return SuperResolution((1, SIZE, SIZE), factor=4, noise_std=noise_std)


TASKS: dict[str, Task] = {t.name: t for t in [
    Task("ct8", "sparse-view CT, 8 views over 180 deg, parallel beam", _ct(8), noise_reference="projection"),
    Task("ct16", "sparse-view CT, 16 views over 180 deg, parallel beam", _ct(16), noise_reference="projection"),
    Task("ct-limited90", "limited-angle CT, 60 views over 90 deg, parallel beam", _ct(60, limited_angle=90.0),
         noise_reference="projection", group="ct-limited"),
    Task("mri4-random", "MRI 4x, random Cartesian lines, 8 % centre", _mri(4, "random"), group="mri"),
    Task("mri4-equispaced", "MRI 4x, equispaced Cartesian lines, 8 % centre", _mri(4, "equispaced"), group="mri"),
    Task("mri8-random", "MRI 8x, random Cartesian lines, 8 % centre", _mri(8, "random"), group="mri"),
    Task("mri8-equispaced", "MRI 8x, equispaced Cartesian lines, 8 % centre", _mri(8, "equispaced"), group="mri"),
    Task("inpaint70", "inpainting, 70 % of pixels missing (random)", _inpaint, group="inpaint"),
    Task("deblur", "Gaussian deblurring, kernel std 2 px", _deblur, group="deblur"),
    Task("sr4", "4x super-resolution (box average)", _sr, group="sr"),
    Task("ct3d8", "3D sparse-view CT, 16x64x64 ellipsoids, 8 views per slice", _ct(8, volume=True),
         noise_reference="projection", group="ct3d", volume=True, img_size=(1, 16, SIZE, SIZE)),
]}

QUICK_TASKS = ("ct16", "mri4-random", "inpaint70")


def get_task(name: str) -> Task:
    """The task called ``name`` (a key of :data:`TASKS`)."""
    if name not in TASKS:
        raise ValueError(f"task: unknown task {name!r}; expected one of {list(TASKS)}")
    return TASKS[name]


def test_images(n: int, size: int = SIZE, shepp: bool = True) -> Tensor:
    """``n`` held-out test images ``(n, 1, size, size)``: ``n - 1`` ellipse phantoms (seed 777001), then Shepp-Logan.

    With ``shepp=False`` all ``n`` are ellipse phantoms.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive number of test images, got {n!r}")
    if not shepp:
        return ellipses(n, size, seed=TEST_SEED)
    parts = [ellipses(n - 1, size, seed=TEST_SEED)] if n > 1 else []
    return torch.cat([*parts, shepp_logan(size)])


test_images.__test__ = False  # not a pytest test


def tuning_images(n: int, size: int = SIZE) -> Tensor:
    """``n`` tuning images (seed 777002), disjoint from the test images and the training data."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive number of tuning images, got {n!r}")
    return ellipses(n, size, seed=TUNE_SEED)


def test_volumes(n: int, depth: int = 16, size: int = SIZE) -> Tensor:
    """``n`` held-out ellipsoid volumes ``(n, 1, depth, size, size)`` (seeds 777003, 777004, ...).

    Each is a slab of ``depth`` consecutive central slices of a cubic ``size^3`` ellipsoid phantom,
    so voxels are isotropic: slices are as thin as pixels are wide, as in the thin-slice CT volumes
    that slice-wise 3D methods are meant for. (``ellipsoids((depth, size, size))`` would instead
    squeeze the whole phantom into ``depth`` slices, 4x thicker than a pixel at 16 slices of 64.)
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= size:
        raise ValueError(f"depth: expected an integer in [1, size={size}], got {depth!r}")
    lo = (size - depth) // 2
    return torch.cat([ellipsoids((size, size, size), seed=VOLUME_SEED + i)[:, :, lo:lo + depth]
                      for i in range(n)]).contiguous()


test_volumes.__test__ = False


def measure(op, x: Tensor, seed: int = 0) -> Tensor:
    """``y = A x + noise_std * n``, ``n`` from a generator seeded by ``seed``; masked operators zero the unsampled entries."""
    s = _noise_std_of(op)
    with torch.no_grad():
        Ax = op.A(x)
    g = torch.Generator(device=Ax.device).manual_seed(int(seed))
    n = torch.randn(Ax.shape, generator=g, device=Ax.device, dtype=Ax.dtype)
    y = Ax + s * n
    mask = getattr(op, "mask", None)
    if type(op).__name__ in ("MRI", "Inpainting") and torch.is_tensor(mask):
        y = y * mask  # unsampled k-space entries / missing pixels are 0, as these operators' forward gives
    return y


def _noise_std_of(op) -> float:
    s = getattr(op, "noise_std", None)
    if s is None:
        s = getattr(getattr(op, "noise_model", None), "sigma", 0.0)
    return float(torch.as_tensor(s).reshape(-1)[0])
