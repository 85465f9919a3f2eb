"""One device story (issue 10, item 1): ``device=`` everywhere, tensors made on the measurement's device.

On a machine without a GPU the wrong-device bug cannot show as a crash, so the central test records
it instead: a ``TorchFunctionMode`` watches every tensor factory (``torch.zeros``, ``randn``,
``arange``, ``tensor``, ...) called from invdiff's code during a reconstruction, for every operator
x solver pair, and fails on any call that does not name its device. Such a call makes a tensor on
the default device (the CPU) whatever the measurement's device, which on a GPU is a crash or a
silent host round trip. Host-side tensors (noise schedules, the FBP filter, ASTRA's CPU buffers)
say ``device="cpu"`` explicitly.
"""

from __future__ import annotations

import sys

import pytest
import torch
from torch.overrides import TorchFunctionMode

import invdiff
from invdiff import data, operators, priors
from invdiff.cli import main
from invdiff.device import check_device, module_device, move_module, place
from invdiff.operators.ct3d import CT3D
from invdiff.operators.functional import astra_cuda
from invdiff.operators.functional.astra_cuda import astra_mode, require_cuda3d
from invdiff.solvers import SOLVERS
from invdiff.solvers.base import Solver, make_generator

N = 16
FACTORIES = {torch.zeros, torch.ones, torch.empty, torch.full, torch.randn, torch.rand, torch.randint, torch.randperm,
             torch.arange, torch.linspace, torch.logspace, torch.eye, torch.tensor, torch.as_tensor, torch.normal}
FAST = {"dps": dict(steps=3), "reddiff": dict(steps=3), "smc": dict(particles=2, steps=3),
        "afdps": dict(particles=2, steps=3), "mbir": dict(steps=3), "dds": dict(steps=3), "daps": dict(steps=3), "diffpir": dict(steps=3), "tv": dict(iters=3),
        "cg": dict(iters=3), "fbp": {}, "zerofilled": {}}
NO_CUDA = not torch.cuda.is_available()


class FactoryRecorder(TorchFunctionMode):
    """Records ``file:line`` of each tensor factory called from invdiff's code without ``device=``."""

    def __init__(self):
        super().__init__()
        self.sites: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and "device" not in kwargs:
            f = sys._getframe(1)
            while f is not None and "/torch/" in f.f_code.co_filename:
                f = f.f_back
            if f is not None and "/invdiff/" in f.f_code.co_filename and "/tests/" not in f.f_code.co_filename:
                self.sites.add(f"{f.f_code.co_filename.split('/invdiff/')[-1]}:{f.f_lineno} ({func.__name__})")
        return func(*args, **kwargs)


def _operators(dim: int) -> dict:
    if dim == 2:
        s = (1, N, N)
        return {"inpaint": lambda: operators.Inpainting(s, 0.5, noise_std=0.01, seed=0),
                "blur": lambda: operators.Blur(s, noise_std=0.01),
                "sr": lambda: operators.SuperResolution(s, factor=2, noise_std=0.01),
                "ct": lambda: operators.CT(s, n_views=8, noise_std=0.01),
                "ct-fan": lambda: operators.CT(s, n_views=8, geometry="fan", noise_std=0.01),
                "ct-torch": lambda: operators.CT(s, n_views=8, backend="torch", noise_std=0.01),
                "mri": lambda: operators.MRI(s, acceleration=2, noise_std=0.01, seed=0)}
    s = (1, 4, N, N)
    return {"ct-vol": lambda: operators.CT(s, n_views=8, noise_std=0.01),
            "mri-vol": lambda: operators.MRI(s, acceleration=2, noise_std=0.01, seed=0)}


PAIRS = [(d, o, s) for d in (2, 3) for o in _operators(d) for s in SOLVERS if not (s == "mbir" and d == 2)]


def _solver(name: str, dim: int, **kw):
    cls = SOLVERS[name]
    if not cls.needs_prior:
        return cls(**FAST[name], **kw)
    shape = (1, N, N) if dim == 2 or name in ("dds", "mbir") else (1, 4, N, N)  # slice-wise solvers take a 2D prior
    return cls(priors.GaussianPrior(torch.zeros(shape), 0.5), **FAST[name], **kw)


@pytest.mark.parametrize("dim, op_name, solver_name", PAIRS, ids=[f"{o}-{s}" for _, o, s in PAIRS])
def test_every_tensor_a_reconstruction_makes_names_its_device(dim, op_name, solver_name):
    op = _operators(dim)[op_name]()
    x = data.shepp_logan(N) if dim == 2 else data.shepp_logan(N)[:, :, None].expand(1, 1, 4, N, N).contiguous()
    y = op(x)
    solver = _solver(solver_name, dim)
    with FactoryRecorder() as rec:
        r = solver.reconstruct(y, op, progress=False)
    assert not rec.sites, f"tensors made without device= (on the default device, not the measurement's): {rec.sites}"
    assert r.mean.device == y.device and torch.isfinite(r.mean).all()


def test_the_recorder_catches_a_factory_without_device():
    with FactoryRecorder() as rec:
        invdiff.utils.append_dims(0.5, 4)  # a number: made on the host, and said so
        from invdiff.solvers import schedules
        schedules.karras_sigmas(3, 0.1, 1.0)
    assert not rec.sites
    code = compile("torch.zeros(3)", "/x/invdiff/fake.py", "eval")  # a call "from invdiff" without device=
    with FactoryRecorder() as rec:
        eval(code, {"torch": torch})
    assert rec.sites == {"fake.py:1 (zeros)"}


# ----------------------------------------------------------------------------- the device argument
@pytest.mark.parametrize("device", ["cpu", torch.device("cpu"), None])
def test_cpu_spellings_give_the_same_reconstruction(device):
    op = operators.CT((1, N, N), n_views=8, noise_std=0.01)
    y = op(data.shepp_logan(N))
    ref = _solver("dds", 2).reconstruct(y, op, progress=False, seed=3)
    r = _solver("dds", 2, device=device).reconstruct(y, op, progress=False, seed=3)
    assert r.mean.device == y.device and r.samples.device == y.device
    assert torch.equal(r.mean, ref.mean)


@pytest.mark.parametrize("bad, kind", [("gpu", ValueError), ("cuda:x", ValueError), (3, TypeError), (True, TypeError)])
def test_a_bad_device_fails_naming_device(bad, kind):
    with pytest.raises(kind, match=r"device: expected a torch device"):
        check_device(bad)
    for name, cls in SOLVERS.items():  # at construction, before any work
        with pytest.raises(kind, match=r"^device: "):
            cls(priors.GaussianPrior(torch.zeros(1, 4, 4), 1.0), device=bad) if cls.needs_prior else cls(device=bad)
    with pytest.raises(kind, match=r"^device: "):
        operators.CT((1, 8, 8), n_views=4, device=bad)
    with pytest.raises(kind, match=r"^device: "):
        priors.load("phantom-ct-64", device=bad)


@pytest.mark.skipif(not NO_CUDA, reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_fails_naming_device():
    with pytest.raises(ValueError, match=r"device: 'cuda' asks for a CUDA GPU, but CUDA is not available"):
        check_device("cuda")
    with pytest.raises(ValueError, match=r"device: 'cuda:1'"):
        invdiff.solvers.DDS(priors.GaussianPrior(torch.zeros(1, 4, 4), 1.0), device="cuda:1")


def test_an_explicit_device_moves_measurement_operator_and_prior():
    """A probe solver reports where ``y``, the operator and the prior are when its ``reconstruct`` runs.

    "meta" stands in for a second device (tensors there have shapes but no data).
    """
    class Probe(Solver):
        def reconstruct(self, y, op, **kw):
            return {"y": y.device, "op": module_device(op), "prior": module_device(self.prior)}

    op = operators.Inpainting((1, 4, 4), 0.5, seed=0)
    y = torch.ones(1, 1, 4, 4)
    seen = Probe(priors.GaussianPrior(torch.zeros(1, 4, 4), 1.0)).reconstruct(y, op)
    assert set(seen.values()) == {torch.device("cpu")}  # device=None: the measurement's
    seen = Probe(priors.GaussianPrior(torch.zeros(1, 4, 4), 1.0), device="meta").reconstruct(y, op)
    assert set(seen.values()) == {torch.device("meta")}
    assert y.device.type == "cpu" and module_device(op).type == "meta"  # y copied; modules moved in place


def test_place_and_move_module():
    prior = priors.GaussianPrior(torch.zeros(1, 4, 4), 1.0, device="meta")
    assert module_device(prior).type == "meta"
    op = place(operators.Blur((1, 16, 16)), None)
    assert module_device(op).type == "cpu"
    assert module_device(move_module(op, torch.device("meta"))).type == "meta"
    for make in (lambda d: operators.Inpainting((1, 8, 8), device=d), lambda d: operators.SuperResolution((1, 8, 8), 2, device=d),
                 lambda d: operators.MRI((1, 8, 8), device=d, seed=0), lambda d: operators.Blur((1, 16, 16), device=d)):
        assert module_device(make("meta")).type == "meta" and module_device(make(None)).type == "cpu"


def test_a_generator_on_another_device_is_refused_naming_seed():
    with pytest.raises(ValueError, match=r"^seed: a torch.Generator on cpu cannot draw on cuda"):
        make_generator(torch.Generator(), torch.device("cuda"))
    g = torch.Generator()
    assert make_generator(g, torch.device("cpu")) is g


# ----------------------------------------------------------------------------- command line
def test_cli_device_errors(tmp_path, capsys):
    np_in = tmp_path / "x.npy"
    import numpy as np

    np.save(np_in, np.eye(8, dtype=np.float32))
    assert main(["reconstruct", str(np_in), "--out", str(tmp_path / "r.npy"), "--operator", "ct", "--device", "gpu"]) == 2
    assert "argument --device: expected a torch device such as 'cpu', 'cuda' or 'cuda:1', got 'gpu'" in capsys.readouterr().err
    if NO_CUDA:
        assert main(["reconstruct", str(np_in), "--out", str(tmp_path / "r.npy"), "--operator", "ct",
                     "--device", "cuda"]) == 2
        assert "device: 'cuda' asks for a CUDA GPU" in capsys.readouterr().err
    assert main(["reconstruct", str(np_in), "--out", str(tmp_path / "r.npy"), "--operator", "ct", "--views", "8",
                 "--solver", "cg", "--steps", "3", "--device", "cpu"]) == 0
    assert (tmp_path / "r.npy").exists()


def test_make_solver_passes_the_task_to_solvers_with_task_presets():
    from invdiff.recon.file import make_solver
    from invdiff.solvers.presets import preset

    for key in ("dds", "dps", "reddiff"):
        s = make_solver(key, steps=2, task="deblur")
        assert s.task == "deblur"
        knobs = preset(key, "deblur").knobs()
        same = {k: s.settings()[k] for k in knobs if k != "tail_average"}  # tail_average: a fraction -> steps
        assert same == {k: v for k, v in knobs.items() if k != "tail_average"}, key
        assert make_solver(key, steps=2).settings() != s.settings()
    assert make_solver("dps", steps=2).task == "default"
    assert not hasattr(make_solver("tv", steps=2, task="deblur"), "task")  # ignored where there are no presets


def test_make_solver_passes_the_device():
    from invdiff.recon.file import make_solver

    assert make_solver("cg", device="cpu").device == torch.device("cpu")
    assert make_solver("dds", steps=2, device="cpu").device == torch.device("cpu")


# ----------------------------------------------------------------------------- ASTRA: which projector runs
def test_astra_mode_picks_the_gpu_only_for_cuda_tensors_and_a_cuda_astra():
    assert astra_mode("cpu", cuda=True) == "cpu"  # CPU tensors keep the CPU projectors even with a GPU
    assert astra_mode(torch.device("cuda", 0), cuda=True) == "cuda"
    assert astra_mode("cuda", cuda=False) == "cpu"
    assert astra_mode("meta", cuda=True) == "cpu"


def test_cpu_tensors_never_reach_astra_cuda_even_when_astra_has_cuda(monkeypatch):
    op = operators.CT((1, N, N), n_views=8, geometry="fan")
    x = data.shepp_logan(N)
    ref_y, ref_x = op.A(x), op.A_adjoint(op.A(x))

    def boom(*a, **k):
        raise AssertionError("ASTRA's CUDA path called for a CPU tensor")
    monkeypatch.setattr(astra_cuda, "astra_has_cuda", lambda: True)
    monkeypatch.setattr("invdiff.operators.functional.astra_ct.cuda2d_apply", boom)
    assert torch.equal(op.A(x), ref_y) and torch.equal(op.A_adjoint(op.A(x)), ref_x)


def test_3d_geometries_select_cuda3d_and_refuse_without_cuda():
    import astra

    vol = astra.create_vol_geom(16, 20, 8)
    cone = astra.create_proj_geom("cone", 1.5, 1.5, 12, 30, [0.0, 1.0, 2.0], 40.0, 20.0)
    op = operators.CT.from_astra(cone, vol)
    assert isinstance(op, CT3D) and op.img_size == (1, 8, 16, 20) and op.meas_size == (1, 12, 3, 30)
    assert op.projector(cuda=True) == "cuda3d"
    with pytest.raises(RuntimeError, match=r"proj_geom: a 'cone' geometry needs ASTRA's CUDA projectors"):
        op.projector(cuda=False)
    par = CT3D((1, 8, 16, 20), n_views=5, geometry="parallel3d")
    assert par.meas_size == (1, 8, 5, 26) and par.projector(cuda=True) == "cuda3d"
    with pytest.raises(RuntimeError, match="parallel3d"):
        require_cuda3d("parallel3d", cuda=False)
    with pytest.raises(ValueError, match="projector"):
        operators.CT.from_astra(cone, vol, projector="strip")
    if not astra_cuda.astra_has_cuda():  # the guard stands before ASTRA's 3D call, which would abort the process
        with pytest.raises(RuntimeError, match="astra.use_cuda\\(\\) is False"):
            op.A(torch.zeros(1, 1, 8, 16, 20))
        with pytest.raises(RuntimeError, match="astra.use_cuda\\(\\) is False"):
            op.A_adjoint(torch.zeros(1, *op.meas_size))


def test_ct3d_autograd_wiring_with_a_stand_in_for_astras_3d_projector(monkeypatch):
    """CT3D's plumbing (reshapes, autograd, ``cuda3d_apply`` on CPU tensors) against a dense matrix ``M``
    standing in for ASTRA's ``cuda3d`` calls, which cannot run without CUDA: ``A = M``, ``A^T = M^T``,
    and the gradients of ``<A x, g>`` and ``<A^T y, h>`` are ``A^T g`` and ``A h``."""
    import astra

    op = CT3D((2, 3, 4, 5), n_views=3, geometry="parallel3d")
    n_x, n_y = 3 * 4 * 5, op.proj_shape[0] * op.proj_shape[1] * op.proj_shape[2]
    M = torch.randn(n_y, n_x, generator=torch.Generator().manual_seed(0))

    def fp(pid, src, *, out):
        out.copy_((M @ src.reshape(-1)).reshape(out.shape))

    def bp(pid, src, *, out):
        out.copy_((M.T @ src.reshape(-1)).reshape(out.shape))
    monkeypatch.setattr(astra_cuda, "astra_has_cuda", lambda: True)
    monkeypatch.setattr(astra, "create_projector", lambda *a: 7)
    monkeypatch.setattr(astra.projector3d, "direct_FP", fp)
    monkeypatch.setattr(astra.projector3d, "direct_BP", bp)
    monkeypatch.setattr(astra.projector3d, "delete", lambda pid: None)

    x = torch.randn(2, *op.img_size, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, *op.meas_size, dtype=torch.float64, requires_grad=True)
    Ax, Aty = op.A(x), op.A_adjoint(y)
    assert Ax.shape == (2, *op.meas_size) and Aty.shape == (2, *op.img_size) and Ax.dtype == torch.float64
    Md = M.double()
    torch.testing.assert_close(Ax.reshape(4, -1), x.detach().reshape(4, -1) @ Md.T, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(Aty.reshape(4, -1), y.detach().reshape(4, -1) @ Md, rtol=1e-5, atol=1e-5)
    g, h = torch.randn_like(Ax), torch.randn_like(Aty)
    gx, = torch.autograd.grad((Ax * g).sum(), x)
    gy, = torch.autograd.grad((Aty * h).sum(), y)
    torch.testing.assert_close(gx.reshape(4, -1), g.reshape(4, -1) @ Md, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gy.reshape(4, -1), h.reshape(4, -1) @ Md.T, rtol=1e-5, atol=1e-5)


def test_relative_noise_measures_rms_ax_on_the_inputs_device():
    """``invdiff reconstruct --device cuda --operator mri`` measured ``rms(A x)`` with the operator still on the
    CPU (its mask a CPU buffer) and ``x`` on the GPU: a device mismatch. The probe fails the same way on ``meta``."""
    from invdiff.recon.file import relative_noise

    class Probe(torch.nn.Module):
        def __init__(self, s):
            super().__init__()
            self.register_buffer("mask", torch.ones(4))
            self.s = s

        def A(self, x):
            assert self.mask.device == x.device, (self.mask.device, x.device)
            return torch.full((4,), 2.0)
    op = relative_noise(Probe, torch.zeros(4, device="meta"), 0.5)
    assert op.s == 1.0  # noise * rms(A x) = 0.5 * 2
