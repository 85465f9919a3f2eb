"""DiffusionMBIR, DDS and the TV-along-z ADMM step they share.

Unit checks (exact adjoint, soft-threshold, ADMM x-update and convergence to the TV solution), the
DDS data step against its closed form, argument checks, seeding, and a fast end-to-end check with an
analytic prior that TV along z helps on a volume that does not vary along z. The 3D quality claim with
the shipped CT prior (16 x 64 x 64 ellipsoids, 8 views) takes minutes on a CPU and lives in
``python -m invdiff.bench.mbir3d``; a smaller version of it runs here as a ``slow`` test.
"""

from __future__ import annotations

import math

import deepinv as dinv
import pytest
import torch

from invdiff.operators import CT
from invdiff.priors import GaussianPrior
from invdiff.solvers.cg import cg
from invdiff.solvers.dds import DDS
from invdiff.solvers.mbir3d import DiffusionMBIR
from invdiff.solvers.tv_z import ADMMTVz, D_z, D_zT, soft_threshold


class DenseVolumeOp:
    """A random dense float64 operator on ``(B, *shape)`` volumes with ``m`` measurements."""

    def __init__(self, shape=(1, 4, 3, 3), m=20, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.shape, n = shape, math.prod(shape)
        self.M = torch.randn(m, n, generator=g, dtype=torch.float64) / math.sqrt(n)

    def A(self, x):
        return x.flatten(1) @ self.M.T

    def A_adjoint(self, y):
        return (y @ self.M).reshape(y.shape[0], *self.shape)


def gauss_prior(size=16, mean=0.3, std=0.3) -> GaussianPrior:
    return GaussianPrior(torch.full((1, size, size), mean), std)


def psnr(a, b) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


# ---------------------------------------------------------------------------------- TV along z
def test_Dz_adjoint_dot_test():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 5, 4, 3, generator=g, dtype=torch.float64)
    v = torch.randn(2, 1, 4, 4, 3, generator=g, dtype=torch.float64)
    lhs, rhs = (D_z(x) * v).sum(), (x * D_zT(v)).sum()
    err = (lhs - rhs).abs() / (D_z(x).norm() * v.norm())
    assert err < 1e-13, f"dot test error {err:.2e}, ratio {float(lhs / rhs):.15f}"
    assert D_z(x).shape == (2, 1, 4, 4, 3) and D_zT(v).shape == x.shape
    # a volume constant along z has no z-differences; D_z differences neighbouring slices only
    assert D_z(x[:, :, :1].expand_as(x)).abs().max() == 0
    assert torch.equal(D_z(x)[:, :, 1], x[:, :, 2] - x[:, :, 1])


def test_Dz_rejects_images():
    with pytest.raises(ValueError, match="x: expected a volume"):
        D_z(torch.zeros(1, 1, 4, 4))


def test_soft_threshold_values_and_prox_optimality():
    v = torch.tensor([-3.0, -1.0, -0.2, 0.0, 0.5, 1.0, 2.5])
    assert soft_threshold(v, 1.0).tolist() == [-2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.5]
    # soft(v, tau) minimises 1/2 (w - v)^2 + tau |w| elementwise
    g = torch.Generator().manual_seed(1)
    v = 3 * torch.randn(500, generator=g, dtype=torch.float64)
    tau = 0.7
    w = soft_threshold(v, tau)

    def f(w):
        return 0.5 * (w - v) ** 2 + tau * w.abs()

    for d in (1e-3, -1e-3, 0.1, -0.1, 1.0):
        assert (f(w) <= f(w + d) + 1e-12).all()
    with pytest.raises(ValueError, match="tau"):
        soft_threshold(v, -1.0)


def test_admm_x_update_solves_its_normal_equations():
    op = DenseVolumeOp()
    g = torch.Generator().manual_seed(2)
    y = torch.randn(1, 20, generator=g, dtype=torch.float64)
    AtA = lambda v: op.A_adjoint(op.A(v))  # noqa: E731
    b = op.A_adjoint(y)
    state = ADMMTVz(lam=0.1, rho=2.0, cg_iters=60)
    state.z = torch.randn(1, 1, 3, 3, 3, generator=g, dtype=torch.float64)
    state.u = 0.05 * torch.randn(1, 1, 3, 3, 3, generator=g, dtype=torch.float64)
    x0 = torch.randn(1, 1, 4, 3, 3, generator=g, dtype=torch.float64)
    x = state.x_update(x0, AtA, b)
    lhs = AtA(x) + state.rho * D_zT(D_z(x))
    rhs = b + state.rho * D_zT(state.z - state.u)
    assert (lhs - rhs).norm() / rhs.norm() < 1e-9
    # one CG iteration (the official DiffusionMBIR setting) already lowers the residual
    one = ADMMTVz(lam=0.1, rho=2.0, cg_iters=1, z=state.z, u=state.u).x_update(x0, AtA, b)
    res0 = (AtA(x0) + 2.0 * D_zT(D_z(x0)) - rhs).norm()
    res1 = (AtA(one) + 2.0 * D_zT(D_z(one)) - rhs).norm()
    assert res1 < res0


def test_admm_converges_to_the_tv_regularised_least_squares_solution():
    """Repeated ADMM steps minimise 1/2 |A x - y|^2 + lam |D_z x|_1 (residuals, perturbations, the truth)."""
    op = DenseVolumeOp(m=24, seed=3)
    g = torch.Generator().manual_seed(4)
    a, c = torch.randn(2, 1, 1, 1, 3, 3, generator=g, dtype=torch.float64)
    truth = torch.cat([a.expand(1, 1, 2, 3, 3), c.expand(1, 1, 2, 3, 3)], 2)  # one jump along z
    y = op.A(truth) + 0.3 * torch.randn(1, 24, generator=g, dtype=torch.float64)
    AtA = lambda v: op.A_adjoint(op.A(v))  # noqa: E731
    b = op.A_adjoint(y)
    lam = 0.2
    state = ADMMTVz(lam=lam, rho=0.3, cg_iters=10)
    x = torch.zeros_like(truth)
    for _ in range(150):
        z_old = state.z.clone() if state.z is not None else None
        x = state.step(x, AtA, b)
    assert (D_z(x) - state.z).norm() < 1e-9  # primal residual
    assert (state.rho * D_zT(state.z - z_old)).norm() < 1e-9  # dual residual
    n_zero = int((state.z == 0).sum())
    assert 0 < n_zero < state.z.numel()  # a non-trivial solution: some differences vanish, some do not

    def F(v):
        return 0.5 * (op.A(v) - y).square().sum() + lam * D_z(v).abs().sum()

    f_star = F(x)
    for k in range(50):
        d = torch.randn(x.shape, generator=g, dtype=torch.float64)
        assert f_star <= F(x + 1e-3 * d), f"perturbation {k} lowered the objective"
    assert f_star < F(truth)


def test_admm_with_zero_tv_weight_is_plain_cg():
    op = DenseVolumeOp()
    g = torch.Generator().manual_seed(5)
    y = torch.randn(1, 20, generator=g, dtype=torch.float64)
    AtA = lambda v: op.A_adjoint(op.A(v))  # noqa: E731
    x0 = torch.randn(1, 1, 4, 3, 3, generator=g, dtype=torch.float64)
    state = ADMMTVz(lam=0.0, rho=10.0, cg_iters=3)
    x = state.step(x0, AtA, op.A_adjoint(y))
    assert torch.equal(x, cg(AtA, op.A_adjoint(y), x0=x0, iters=3))
    assert state.z is None and state.u is None


# ---------------------------------------------------------------------------------- DDS
def test_dds_data_step_closed_form_on_inpainting():
    """With a mask, CG converges in one (gamma = inf) or two iterations: the data step has a closed form."""
    img = (1, 8, 8)
    prior = gauss_prior(8)
    op = dinv.physics.Inpainting(img_size=img, mask=0.5, rng=torch.Generator().manual_seed(0))
    x = torch.rand(1, *img, generator=torch.Generator().manual_seed(1))
    y = op.A(x)
    mask = op.mask.bool().expand(1, *img)
    for gamma in (math.inf, 2.0):
        last = {}
        DDS(prior, steps=5, cg_iters=3, gamma=gamma, schedule="vp", tail_average=1).reconstruct(y, op, progress=False, callback=last.update)
        x0_hat, x0_dc = last["x0_hat"], last["x0_dc"]
        expected = y if math.isinf(gamma) else (x0_hat + gamma * y) / (1 + gamma)
        assert torch.allclose(x0_dc[mask], expected[mask].to(x0_dc.dtype), atol=1e-5)
        assert torch.allclose(x0_dc[~mask], x0_hat[~mask], atol=1e-6)  # unobserved pixels keep the prior's estimate


def test_dds_runs_on_2d_ct_and_fits_the_data():
    x = torch.full((1, 1, 16, 16), 0.3)
    x[..., 4:12, 5:11] = 0.8
    op = CT((1, 16, 16), n_views=6)
    y = op.A(x)
    r = DDS(gauss_prior(16), steps=15, gamma=math.inf, schedule="vp", cg_iters=5, tail_average=1).reconstruct(
        y, op, progress=False)
    assert r.mean.shape == x.shape and r.nfe == 15 and "slice_evals" not in r.info
    # the last CG step fits the sinogram far better than the prior mean (0.3 everywhere) does
    rel = (op.A(r.mean) - y).norm() / y.norm()
    rel_prior = (op.A(torch.full_like(x, 0.3)) - y).norm() / y.norm()
    assert rel < 0.1 * rel_prior, f"residual {rel:.3f} vs prior mean {rel_prior:.3f}"


# ---------------------------------------------------------------------------------- DiffusionMBIR
def _volume_problem(D=6, size=16, n_views=4, noise=0.05, seed=0):
    img = torch.full((size, size), 0.3)
    img[4:12, 4:10] = 0.9
    img[9:14, 10:14] = 0.6
    x = img.expand(1, 1, D, size, size).contiguous()  # the same slice at every depth
    op = CT((1, D, size, size), n_views=n_views)
    Ax = op.A(x)
    y = Ax + noise * Ax.abs().max() * torch.randn(Ax.shape, generator=torch.Generator().manual_seed(seed))
    return x, op, y


def test_mbir_refuses_2d_input():
    op = CT((1, 16, 16), n_views=4)
    y = op.A(torch.rand(1, 1, 16, 16))
    for mode in ("pc", "dds"):
        with pytest.raises(ValueError, match=r"DiffusionMBIR needs a volume \(B, C, D, H, W\)"):
            DiffusionMBIR(gauss_prior(), steps=2, mode=mode).reconstruct(y, op, progress=False)


@pytest.mark.parametrize("cls", [DiffusionMBIR, DDS])
@pytest.mark.parametrize("kw,name", [
    ({"steps": 0}, "steps"), ({"steps": 2.5}, "steps"), ({"rho": -1.0}, "rho"), ({"rho": 0.0}, "rho"),
    ({"tv_weight": -0.1}, "tv_weight"), ({"tv_weight": float("nan")}, "tv_weight"), ({"eta": 1.5}, "eta"),
    ({"cg_iters": -1}, "cg_iters"), ({"gamma": 0.0}, "gamma"), ({"gamma": -2.0}, "gamma"),
    ({"schedule": "cosine"}, "schedule"), ({"chunk": 0}, "chunk"),
])
def test_bad_arguments_name_the_argument(cls, kw, name):
    # a value of the wrong type (2.5 steps) is a TypeError, as in Python's own range(2.5); a bad value a ValueError
    exc = TypeError if isinstance(kw.get("steps"), float) else ValueError
    with pytest.raises(exc, match=name):
        cls(gauss_prior(), **kw)


@pytest.mark.parametrize("kw,name", [({"mode": "ddim"}, "mode"), ({"snr": -0.1}, "snr"),
                                     ({"sigma_min": 5.0, "sigma_max": 1.0}, "sigma_min")])
def test_mbir_bad_arguments(kw, name):
    with pytest.raises(ValueError, match=name):
        DiffusionMBIR(gauss_prior(), **kw)


def test_bad_prior_and_measurement():
    with pytest.raises(TypeError, match="prior"):
        DiffusionMBIR("not a denoiser")
    x, op, y = _volume_problem(D=3)
    y_bad = y.clone()
    y_bad[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="y"):
        DiffusionMBIR(gauss_prior(), steps=2).reconstruct(y_bad, op, progress=False)


@pytest.mark.parametrize("mode", ["pc", "dds"])
def test_mbir_same_seed_same_result(mode):
    x, op, y = _volume_problem(D=3)
    solver = DiffusionMBIR(gauss_prior(), steps=6, tv_weight=0.04, mode=mode)
    a = solver.reconstruct(y, op, seed=3, progress=False)
    b = solver.reconstruct(y, op, seed=3, progress=False)
    c = solver.reconstruct(y, op, seed=4, progress=False)
    assert torch.equal(a.mean, b.mean)
    assert not torch.equal(a.mean, c.mean)
    assert a.nfe == (6 if mode == "dds" else 2 * 6 - 1)  # pc: predictor + corrector, no corrector at sigma = 0
    assert a.info["slice_evals"] == a.nfe * 3


def test_mbir_tv_off_is_plain_slice_wise_dds():
    """tv_weight = 0: the same loop with CG data consistency only; DiffusionMBIR's fast mode is DDS on volumes."""
    x, op, y = _volume_problem(D=4)
    kw = dict(steps=8, cg_iters=5, eta=0.85, gamma=math.inf, tv_weight=0.0, schedule="vp", tail_average=1,
              sigma_max=2.0)  # stated: DDS's preset sets its own (1.0), DiffusionMBIR's leaves the prior's
    a = DiffusionMBIR(gauss_prior(), mode="dds", **kw).reconstruct(y, op, seed=1, progress=False)
    b = DDS(gauss_prior(), **kw).reconstruct(y, op, seed=1, progress=False)
    assert torch.equal(a.mean, b.mean)
    # with TV switched on the result changes (same seed)
    c = DiffusionMBIR(gauss_prior(), mode="dds", **{**kw, "tv_weight": 0.5}).reconstruct(y, op, seed=1, progress=False)
    assert not torch.allclose(a.mean, c.mean)


def test_mbir_pc_tv_off_replays_predictor_corrector_and_one_cg_step():
    """tv_weight = 0, mode="pc": every step is the VE predictor, the Langevin corrector (step size from
    ``snr`` per slice) and one CG iteration on ``A^T A x = A^T y`` from the iterate. Replayed here from the
    equations of the DiffusionMBIR docstring with the same random draws, slice by slice through the 2D prior."""
    x, op, y = _volume_problem(D=3)
    prior, steps, snr, seed = gauss_prior(), 6, 0.16, 5
    out = DiffusionMBIR(prior, mode="pc", steps=steps, tv_weight=0.0, snr=snr, cg_iters=1).reconstruct(
        y, op, seed=seed, progress=False).mean

    def D(v, s):  # the 2D prior on each axial slice of (1, 1, D, H, W)
        return torch.cat([prior(v[:, :, k].float(), s) for k in range(v.shape[2])]).double()[None, :].transpose(1, 2)

    def AtA(v):
        return op.A_adjoint(op.A(v.float())).double()

    def slice_norm(v):  # |v| over each slice
        return v.square().sum(dim=(1, 3, 4), keepdim=True).sqrt()

    g = torch.Generator().manual_seed(seed)
    randn = lambda: torch.randn(x.shape, generator=g, dtype=torch.float64)  # noqa: E731
    s_min, s_max = prior.sigma_min, prior.sigma_max
    sig = [s_max * (s_min / s_max) ** (i / (steps - 1)) for i in range(steps)] + [0.0]
    ATy = op.A_adjoint(y).double()
    v = sig[0] * randn()
    for i in range(steps):
        s, s_next = sig[i], sig[i + 1]
        v = v + (s**2 - s_next**2) / s**2 * (D(v, s) - v)  # predictor mean
        if s_next > 0:
            v = v + math.sqrt(s**2 - s_next**2) * randn()
            score = (D(v, s_next) - v) / s_next**2  # corrector at the new level
            n = randn()
            e = 2 * (snr * slice_norm(n) / slice_norm(score)) ** 2
            v = v + e * score + (2 * e).sqrt() * n
        r = ATy - AtA(v)  # one CG iteration from v = one exact line search along the residual
        v = v + (r * r).sum() / (r * AtA(r)).sum() * r
    err = float((out.double() - v).abs().max())
    assert err < 1e-5 * float(v.abs().max()), f"max deviation from the replay {err:.3e}"


@pytest.mark.parametrize("mode,steps,rho", [("dds", 30, 10.0), ("pc", 40, 2.0)])
def test_tv_along_z_helps_on_a_volume_constant_along_z(mode, steps, rho):
    """A Gaussian prior knows nothing about z; TV along z ties the slices together and must win by >= 1 dB.

    (Here |A^T A| is about 50; ``pc`` with only 40 steps needs ``rho`` well below it, see DiffusionMBIR.)
    """
    x, op, y = _volume_problem(D=6, n_views=4, noise=0.05)
    prior = gauss_prior(16)
    res = {}
    for lam in (0.0, 2.0):
        solver = DiffusionMBIR(prior, steps=steps, tv_weight=lam, rho=rho, mode=mode)
        res[lam] = solver.reconstruct(y, op, seed=0, progress=False).mean
    p0, p1 = psnr(res[0.0], x), psnr(res[2.0], x)
    assert p1 > p0 + 1.0, f"{mode}: TV {p1:.2f} dB vs no TV {p0:.2f} dB"


# ---------------------------------------------------------------------------------- benchmark
def test_plane_psnr_definition():
    from invdiff.bench.mbir3d import plane_psnr

    ref = torch.zeros(1, 1, 4, 6, 8)
    out = plane_psnr(ref + 0.1, ref)  # MSE 0.01 everywhere: 20 dB on every plane
    for key in ("volume", "axial", "coronal", "sagittal", "axial_central", "coronal_central", "sagittal_central"):
        assert out[key] == pytest.approx(20.0)
    x = ref.clone()
    x[:, :, 1] = 0.1  # error in one axial slice only: the axial mean sees 3 perfect slices (inf dB)
    x[:, :, :, :, :] += 0.01
    out = plane_psnr(x, ref)
    # coronal/sagittal slices all cross the bad axial slice: each has MSE (0.11^2 + 3 * 0.01^2) / 4
    expected = 10 * math.log10(4 / (0.11**2 + 3 * 0.01**2))
    assert out["coronal"] == pytest.approx(expected, rel=1e-6) and out["sagittal"] == pytest.approx(expected, rel=1e-6)
    assert out["axial"] == pytest.approx((3 * 40.0 + 10 * math.log10(1 / 0.11**2)) / 4, rel=1e-6)


def test_benchmark_smoke(tmp_path):
    """The benchmark runs end to end on a 2-slice volume with 2 steps and writes its figure and JSON."""
    import json

    from invdiff.bench.mbir3d import main

    fig, js = tmp_path / "mbir3d.png", tmp_path / "mbir3d.json"
    main(["--depth", "2", "--steps", "2", "--out", str(fig), "--json", str(js)])
    assert fig.stat().st_size > 10_000
    res = json.loads(js.read_text())
    assert set(res["methods"]) == {"fbp", "tv0", "mbir"}
    assert res["methods"]["mbir"]["nfe"] == 2 and res["methods"]["mbir"]["slice_evals"] == 4
    assert set(res["margins_db"]) == {"axial", "coronal", "sagittal", "volume"}
    with pytest.raises(FileExistsError):
        main(["--depth", "2", "--steps", "1", "--out", str(fig)])
