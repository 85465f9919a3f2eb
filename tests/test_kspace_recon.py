"""Measured multi-coil k-space from the command line (invdiff.recon.kspace): both fastMRI layouts, SENSE with
ESPIRiT maps for CG and DDS (shipped magnitude prior), a two-channel prior, the noise estimate, errors.

The PSNRs are printed (``pytest -s``); they go into the report with the command that made them.
"""

import math
import re
import types

import h5py
import pytest
import torch

from invdiff import data, metrics, priors, solvers
from invdiff.cli import main
from invdiff.operators import coil_map_error
from invdiff.operators.functional.fft import fft2c, from_complex, to_complex
from invdiff.operators.functional.mri_masks import equispaced_mask
from test_coils import true_maps as coil_maps_on_a_ring
from invdiff.recon.kspace import (calibration_phase, estimate_noise_std, reconstruct_kspace, refine_phase,
                                  rss_zero_filled)

H = W = 64
C = 8
CF = 0.16  # 10 central lines of 64: the calibration band; 4x in all with equispaced outer lines
PHASE = (0.6, 0.3, -0.4)  # smooth image phase 0.6 x + 0.3 y^2 - 0.4 on [-1, 1]^2


def true_maps() -> torch.Tensor:
    return coil_maps_on_a_ring(C, H, W)  # sum_c |S_c|^2 = 1: RSS = |x|


def image_phase() -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    a, b, c = PHASE
    return torch.exp(1j * (a * xx + b * yy**2 + c))


def write_file(path, layout: str, slices: int = 2, noise: float = 0.01, seed: int = 3):
    """A fastMRI multi-coil file of ellipse phantoms: ``test`` (undersampled kspace + mask) or ``train``
    (full kspace + reconstruction_rss). Returns (magnitude truth (S, 1, H, W), true maps, noise std)."""
    S = true_maps()
    x = data.ellipses(slices, H, seed=seed)[:, 0]
    k = fft2c(S[None] * (x * image_phase())[:, None])
    g = torch.Generator().manual_seed(seed)
    sigma = noise * float(k.abs().pow(2).mean().sqrt() / math.sqrt(2))  # per real channel
    k = k + sigma * torch.complex(torch.randn(k.shape, generator=g), torch.randn(k.shape, generator=g))
    with h5py.File(path, "w") as f:
        f.attrs["acquisition"] = "CORPD_FBK"
        if layout == "test":
            m = equispaced_mask(W, 4, CF, seed=0)
            f.create_dataset("kspace", data=(k * m.to(k.dtype)).numpy())
            f.create_dataset("mask", data=m.numpy())
        else:
            f.create_dataset("kspace", data=k.numpy())
            f.create_dataset("reconstruction_rss", data=x.numpy())
    return x[:, None], S, sigma


def run(path, out, solver, *extra):
    assert main(["reconstruct", str(path), "--solver", solver, "--out", str(out), *extra]) == 0
    return data.load(out)[0]


def psnr(x, ref) -> float:
    return float(metrics.psnr(x, ref).mean())


def _printed_psnrs(text: str) -> list[float]:
    return [float(v) for v in re.findall(r"PSNR\s+([-\d.]+) dB", text)]


def test_test_layout_cg_and_dds_with_estimated_maps(tmp_path, capsys):
    """Test-set layout (own mask, 4x equispaced, 10-line calibration band), 8 coils, 1 % noise."""
    f = tmp_path / "file_brain_test.h5"
    truth, S_true, sigma = write_file(f, "test")
    rss = run(f, tmp_path / "rss.h5", "zerofilled")
    cg = run(f, tmp_path / "cg.h5", "cg")
    dds = run(f, tmp_path / "dds.h5", "dds", "--steps", "20")
    text = capsys.readouterr().out
    assert "the file's mask (4.00x)" in text and "ESPIRiT" in text and "magnitude m with the calibration" in text
    p_rss, p_cg, p_dds = psnr(rss, truth), psnr(cg, truth), psnr(dds, truth)
    # the maps the pipeline used, against the true ones (per-pixel phase aside), inside the object
    k, meta = data.load(f)
    r = reconstruct_kspace(k, meta, solvers.CG())
    support = truth[:, 0] > 0.02
    err = coil_map_error(r.maps, S_true[None].expand_as(r.maps), support)
    print(f"\n[test layout] zero-filled RSS {p_rss:.2f} dB | CG (SENSE, ESPIRiT maps) {p_cg:.2f} dB | "
          f"DDS 20 steps (shipped magnitude prior) {p_dds:.2f} dB | map error {err:.4f}")
    assert err < 0.03
    assert p_cg >= p_rss + 3
    assert p_dds > p_cg
    torch.testing.assert_close(cg, r.image, atol=1e-5, rtol=1e-5)  # the command line = the Python path


def test_training_layout_retrospective_mask(tmp_path, capsys):
    f = tmp_path / "file_knee_train.h5"
    truth, _, _ = write_file(f, "train")
    cg = run(f, tmp_path / "cg.nii", "cg", "--acceleration", "4", "--mask", "random", "--center-fraction", str(CF))
    text = capsys.readouterr().out
    assert "random mask 4x, centre fraction 0.16 (retrospective" in text
    p_rss, p_cg = _printed_psnrs(text)  # against the file's reconstruction_rss
    print(f"\n[training layout, retrospective random 4x] zero-filled RSS {p_rss:.2f} dB | CG {p_cg:.2f} dB")
    assert cg.shape == (2, H, W)
    assert p_cg == pytest.approx(psnr(cg[:, None], truth), abs=0.01)
    assert p_cg >= p_rss + 3


def test_two_channel_prior_uses_the_complex_model(tmp_path):
    """A two-channel prior gets the complex SENSE model, without the phase fold.

    The prior is an exact Gaussian N(0, 0.05^2) on (real, imaginary): a Tikhonov-like regulariser that keeps
    the pixels no coil map covers near 0 (a wider one fills them with its own samples).
    """
    f = tmp_path / "k.h5"
    truth, _, _ = write_file(f, "test", slices=1)
    k, meta = data.load(f)
    prior = priors.GaussianPrior(torch.zeros(2, H, W), 0.05)
    r = reconstruct_kspace(k, meta, solvers.DDS(prior, steps=10, lambda_=1.0))
    assert r.model == "complex" and "complex (real, imaginary channels)" in "\n".join(r.lines)
    assert psnr(r.image, truth) > psnr(r.baseline, truth) + 3
    with pytest.raises(ValueError, match="image_model.*1-channel image.*2 channel"):
        reconstruct_kspace(k, meta, solvers.DDS(prior, steps=2), image_model="magnitude")


def test_calibration_phase_removes_the_maps_per_pixel_phase():
    """Maps with an arbitrary per-pixel phase, times the calibration phase, give S e^{i theta} (theta: the image's)."""
    x = data.ellipses(1, H, seed=5)[:, 0]
    S = true_maps()
    theta = image_phase()
    y = fft2c(S[None] * (x * theta)[:, None])
    M = equispaced_mask(W, 4, CF, seed=0).float().expand(H, W)
    psi = torch.exp(1j * 2 * math.pi * torch.rand(H, W))
    folded = (S * psi)[None] * calibration_phase(y * M, (S * psi)[None], M)[:, None]
    inside = x > 0.3
    d = (folded - S[None] * theta[None, None]).abs().pow(2).sum(1).sqrt()[inside]
    off = (S[None] * psi - S[None] * theta).abs().pow(2).sum(1).sqrt()[inside]
    assert float(d.mean()) < 0.1 and float(off.mean()) > 0.5


def test_refined_phase_is_closer_than_the_calibration_phase():
    """On the full-resolution complex image, demodulation removes the edge bias of the low-resolution phase."""
    x = data.ellipses(2, H, seed=7)[:, 0]
    S = true_maps()
    theta = image_phase()
    z = x * theta
    M = equispaced_mask(W, 4, CF, seed=0).float().expand(H, W)
    p0 = calibration_phase(fft2c(S[None] * z[:, None]) * M, S[None].expand(2, -1, -1, -1), M)
    p1 = refine_phase(z, p0)

    def err(p):  # |x|-weighted mean phase error, radians
        return float(((p * theta.conj()).angle().abs() * x).sum() / x.sum())

    print(f"\nmean phase error: calibration {err(p0):.4f} rad, refined {err(p1):.4f} rad")
    assert err(p1) < err(p0) / 2  # measured: 0.060 -> 0.022 rad


def test_noise_estimate_from_the_empty_rows():
    """The estimate is within 4 sampling standard deviations (MAD of n values: 1.36 sigma / sqrt(n)) plus 5 %."""
    S = true_maps()
    x = data.ellipses(2, H, seed=3)[:, 0]
    k = fft2c(S[None] * (x * image_phase())[:, None])
    sigma = 1e-3
    g = torch.Generator().manual_seed(1)
    k = k + sigma * torch.complex(torch.randn(k.shape, generator=g), torch.randn(k.shape, generator=g))
    M = equispaced_mask(W, 4, CF, seed=0).float().expand(H, W)
    est = estimate_noise_std(k * M, M)
    n_independent = 2 * 2 * C * round(H / 8) * W * float(M.mean())  # real+imag, slices, coils, rows, sampled lines
    tol = 4 * 1.36 / math.sqrt(n_independent) + 0.05  # 0.05: object leaking into the selected rows
    assert abs(est / sigma - 1) < tol, (est, sigma, tol)


def test_zero_filled_rss_is_exact_at_full_sampling():
    S = true_maps()
    x = data.ellipses(1, H, seed=2)[:, 0]
    y = fft2c(S[None] * (x * image_phase())[:, None])
    torch.testing.assert_close(rss_zero_filled(y, torch.ones(H, W))[:, 0], x, atol=1e-5, rtol=0)


def test_bad_input(tmp_path):
    f = tmp_path / "k.h5"
    write_file(f, "test", slices=1)
    k, meta = data.load(f)
    with pytest.raises(ValueError, match="image_model"):
        reconstruct_kspace(k, meta, solvers.CG(), image_model="phase")
    with pytest.raises(ValueError, match="noise_std"):
        reconstruct_kspace(k, meta, solvers.CG(), noise_std=-1.0)
    with pytest.raises(ValueError, match="kspace"):
        reconstruct_kspace(to_complex(k), meta, solvers.CG())
    bad = dict(meta, mask=torch.ones(7))
    with pytest.raises(ValueError, match="mask"):
        reconstruct_kspace(k, bad, solvers.CG())
    assert from_complex(to_complex(k)).shape == k.shape


def test_prior_channels_of_the_prior_families():
    from invdiff.priors.adapters.adm import ADMConfig, ADMUNet
    from invdiff.priors.adapters.ncsnpp import NCSNpp, NCSNppConfig, VEScoreDenoiser
    from invdiff.recon.kspace import prior_channels

    assert prior_channels(priors.load("phantom-ct-64")) == 1
    assert prior_channels(priors.GaussianPrior(torch.zeros(2, 8, 8), 1.0)) == 2
    complex_ncsnpp = VEScoreDenoiser(NCSNpp(NCSNppConfig(image_size=16, nf=16, num_res_blocks=1, num_channels=2)),
                                     sigma_min=0.01, sigma_max=50.0)
    assert prior_channels(complex_ncsnpp) == 2  # the form of the complex fastMRI NCSN++ checkpoints
    adm = ADMUNet(ADMConfig(image_size=16, num_channels=32, channel_mult=(1, 2), attention_resolutions=(8,),
                            num_head_channels=32))
    assert prior_channels(types.SimpleNamespace(net=adm)) == 3  # ADM: num_channels is the width, not the image's


def test_given_scale_and_noise_and_single_coil(tmp_path, capsys):
    """--scale/--noise-std are used as given (and said so); one-coil k-space goes the same way with S = 1."""
    x = data.ellipses(1, H, seed=4)[:, 0]
    k = fft2c((x * image_phase()).to(torch.complex64))
    with h5py.File(tmp_path / "single.h5", "w") as f:
        f.create_dataset("kspace", data=k.numpy())
        f.create_dataset("reconstruction_rss", data=x.numpy())
    run(tmp_path / "single.h5", tmp_path / "o.npy", "cg", "--acceleration", "2", "--center-fraction", "0.16",
        "--scale", "2", "--noise-std", "0.001")
    text = capsys.readouterr().out
    assert "1 coil(s)" in text and "ESPIRiT" not in text
    assert "given: data = 2 x prior units" in text and "0.001 per real channel (given (--noise-std))" in text
    p_rss, p_cg = _printed_psnrs(text)
    # one coil with S = 1: CG from 0 gives the minimum-norm least-squares image, which is the zero-filled one
    assert p_cg == pytest.approx(p_rss, abs=0.02)
