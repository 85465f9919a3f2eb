"""ASTRA's CUDA projectors: which backend runs a projection, 2D slices on the GPU, and 3D geometries.

Selection (:func:`astra_mode`)
------------------------------
* 2D geometries (``parallel``, ``fanflat`` and their ``_vec`` forms, and volumes as stacks of such
  slices): a tensor on a CUDA device is projected by ASTRA's ``cuda`` projector, in place on the GPU
  (DLPack, no host copy), **when ASTRA was built with CUDA** (``astra.use_cuda()``). Everything else
  (CPU tensors, or an ASTRA without CUDA) takes the CPU projectors of
  :mod:`invdiff.operators.functional.astra_ct`, unchanged: a CPU run gives the same numbers whether
  or not a GPU is present.
* 3D geometries (``parallel3d``, ``cone`` and their ``_vec`` forms; :class:`invdiff.operators.CT3D`):
  ASTRA has only CUDA projectors for them (``cuda3d``), and calling them without CUDA aborts the whole
  process. :func:`require_cuda3d` is called first and raises a ``RuntimeError`` instead; no 3D call
  is made on a machine without CUDA.

Numerics. ASTRA's GPU forward projector is ray-driven (Joseph-style, with the GPU's linear texture
interpolation) and its back-projector voxel-driven, so on the GPU ``A^T`` is ASTRA's matched
back-projection but not the exact transpose of ``A`` (the CPU projectors are exact pairs); the GPU
tests in ``tests/test_gpu.py`` report the dot-test ratio ``<A x, y> / <x, A^T y>``. Both run in
float32; results come back in the input's dtype, on the input's device.

Layouts. 2D: ``(N, H, W) <-> (N, K, n)``, one ASTRA call per slice. 3D: a volume ``(D, H, W)``
(ASTRA's ``(slices, rows, cols)``) ``<-> (rows, K, cols)`` (ASTRA's projection layout, detector rows
first).
"""

from __future__ import annotations

import astra
import torch
from torch import Tensor


def astra_has_cuda() -> bool:
    """Whether this ASTRA was built with CUDA and sees a GPU (``astra.use_cuda()``)."""
    try:
        return bool(astra.use_cuda())
    except Exception:  # noqa: BLE001  (an ASTRA without CUDA support may raise instead of returning False)
        return False


def astra_mode(device: torch.device | str, cuda: bool | None = None) -> str:
    """``"cuda"`` (ASTRA's GPU projector) for a CUDA ``device`` when ASTRA has CUDA, else ``"cpu"``.

    ``cuda`` overrides the check of ASTRA's build (``None``: :func:`astra_has_cuda`); tests pass it.

    Examples
    --------
    >>> astra_mode("cpu", cuda=True), astra_mode("cuda:0", cuda=True), astra_mode("cuda", cuda=False)
    ('cpu', 'cuda', 'cpu')
    """
    if torch.device(device).type != "cuda":
        return "cpu"
    return "cuda" if (astra_has_cuda() if cuda is None else cuda) else "cpu"


def require_cuda3d(kind: str, cuda: bool | None = None) -> None:
    """Raise unless ASTRA can run 3D projections (CUDA); never let ASTRA abort the process."""
    if not (astra_has_cuda() if cuda is None else cuda):
        raise RuntimeError(f"proj_geom: a {kind!r} geometry needs ASTRA's CUDA projectors (3D projection has no "
                           f"CPU implementation in ASTRA), but astra.use_cuda() is False here; run on a machine "
                           f"with a CUDA GPU and an ASTRA built with CUDA, or use a 2D geometry (slice by slice)")


_GPU = {"index": None}


def _select_gpu(device: torch.device) -> None:
    """Point ASTRA at ``device``'s GPU (ASTRA keeps one current GPU per process)."""
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if _GPU["index"] != idx:
        astra.set_gpu_index(idx)
        _GPU["index"] = idx


def _cuda_apply(z: Tensor, kind: str, vol_geom: dict, proj_geom: dict, out_shape: tuple, adjoint: bool) -> Tensor:
    """``A z`` or ``A^T z`` with ASTRA's ``kind`` projector (``"cuda"``: 2D, ``"cuda3d"``: 3D), one call per item
    of ``z``'s first axis, in float32; the result is on ``z``'s device, in its dtype."""
    module = astra.projector3d if kind == "cuda3d" else astra.projector
    src = z.detach().to(torch.float32).contiguous()
    if src.is_cuda:
        _select_gpu(src.device)
        torch.cuda.synchronize(src.device)  # src written by torch's stream before ASTRA reads it
    out = torch.empty((src.shape[0], *out_shape), dtype=torch.float32, device=src.device)
    pid = astra.create_projector(kind, proj_geom, vol_geom)
    try:
        run = module.direct_BP if adjoint else module.direct_FP
        for i in range(src.shape[0]):
            run(pid, src[i], out=out[i])
    finally:
        module.delete(pid)
    if src.is_cuda:
        torch.cuda.synchronize(src.device)  # ASTRA may run on its own stream
    return out.to(z.dtype)


def cuda2d_apply(z: Tensor, vol_geom: dict, proj_geom: dict, out_shape: tuple[int, int], adjoint: bool) -> Tensor:
    """``A z`` (``(N, H, W) -> (N, K, n)``) or ``A^T z`` with ASTRA's 2D ``cuda`` projector on ``z``'s GPU."""
    return _cuda_apply(z, "cuda", vol_geom, proj_geom, out_shape, adjoint)


def cuda3d_apply(z: Tensor, vol_geom: dict, proj_geom: dict, out_shape: tuple[int, int, int], adjoint: bool) -> Tensor:
    """``A z`` (``(N, D, H, W) -> (N, rows, K, cols)``) or ``A^T z`` with ASTRA's ``cuda3d`` projector.

    Works on CPU or GPU tensors (ASTRA copies host data to the GPU); the result is on ``z``'s device.
    Call :func:`require_cuda3d` first.
    """
    return _cuda_apply(z, "cuda3d", vol_geom, proj_geom, out_shape, adjoint)
