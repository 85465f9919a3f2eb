"""ESPIRiT coil maps (invdiff.operators.coils): accuracy against known maps, batching, the phase-blind error, errors."""

import math

import pytest
import torch

from invdiff import data, operators
from invdiff.operators.coils import calibration_region, coil_map_error, estimate_coil_maps
from invdiff.operators.functional.fft import fft2c, from_complex
from invdiff.operators.functional.mri_masks import equispaced_mask

H = W = 64


def true_maps(C: int = 8, H: int = H, W: int = W) -> torch.Tensor:
    """Smooth maps of coils on a ring around the image, with smooth phase, normalised to sum_c |S_c|^2 = 1."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H, dtype=torch.float64), torch.linspace(-1, 1, W, dtype=torch.float64),
                            indexing="ij")
    maps = []
    for c in range(C):
        a = 2 * math.pi * c / C
        mag = torch.exp(-((xx - 1.3 * math.cos(a)) ** 2 + (yy - 1.3 * math.sin(a)) ** 2) / 1.5)
        maps.append(mag * torch.exp(1j * (0.8 * (xx * math.cos(a + 1) + yy * math.sin(a + 1)) + a)))
    S = torch.stack(maps)
    return (S / (S.abs() ** 2).sum(0).sqrt()).to(torch.complex64)


def kspace(slices: int = 2, noise: float = 0.01, seed: int = 3):
    """Multi-coil k-space of ellipse phantoms with a smooth phase: (slices, C, H, W) complex, images, maps."""
    S = true_maps()
    x = data.ellipses(slices, H, seed=seed)[:, 0]
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    k = fft2c(S[None] * (x * torch.exp(1j * (0.6 * xx + 0.3 * yy**2 - 0.4)))[:, None])
    g = torch.Generator().manual_seed(seed)
    sig = noise * float(k.abs().pow(2).mean().sqrt() / math.sqrt(2))
    k = k + sig * torch.complex(torch.randn(k.shape, generator=g), torch.randn(k.shape, generator=g))
    return k, x, S


def test_maps_match_the_true_ones_inside_the_object():
    k, x, S = kspace()
    M = equispaced_mask(W, 4, 0.16, seed=0).float().expand(H, W)
    est = estimate_coil_maps(k * M, mask=M)
    support = x > 0.02
    err = coil_map_error(est, S[None].expand_as(est), support)
    wrong = coil_map_error(est.roll(1, dims=1), S[None].expand_as(est), support)  # coils swapped round
    print(f"ESPIRiT map error inside the object: {err:.4f} (coils rolled by one: {wrong:.3f})")
    assert err < 0.03 and wrong > 0.3  # the metric sees a wrong coil assignment
    # unit norm over coils where kept, zero where cropped
    n = (est.abs() ** 2).sum(1)
    kept = n > 0
    torch.testing.assert_close(n[kept], torch.ones_like(n[kept]), atol=1e-4, rtol=0)
    assert kept[support].float().mean() > 0.99


def test_more_calibration_lines_give_better_maps():
    k, x, S = kspace(slices=1)
    errs = []
    for cf in (0.125, 0.25):
        M = equispaced_mask(W, 4, cf, seed=0).float().expand(H, W)
        errs.append(coil_map_error(estimate_coil_maps(k * M, mask=M), S[None], x > 0.02))
    assert errs[1] < errs[0]


def test_batched_equals_slice_by_slice_and_two_channel_layout():
    k, _, _ = kspace(slices=3)
    M = equispaced_mask(W, 4, 0.16, seed=0).float().expand(H, W)
    k = k * M
    batched = estimate_coil_maps(k, mask=M, chunk=2)
    single = torch.cat([estimate_coil_maps(k[i:i + 1], mask=M) for i in range(3)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)
    two = estimate_coil_maps(from_complex(k), mask=M[0])  # (S, 2, C, H, W) and a (W,) line mask
    torch.testing.assert_close(two, batched, atol=1e-5, rtol=0)


def test_error_is_blind_to_a_per_pixel_phase_only():
    S = true_maps()
    psi = torch.rand(H, W) * 2 * math.pi
    assert coil_map_error(S * torch.exp(1j * psi), S) < 1e-6
    assert coil_map_error(S * 1.1, S) == pytest.approx(0.1, rel=1e-4)  # a gain is an error
    assert operators.coil_map_error is coil_map_error and operators.estimate_coil_maps is estimate_coil_maps


def test_against_sigpy_espirit():
    """Same calibration region and kernel as sigpy's EspiritCalib (the reference implementation): errors agree."""
    sigpy_mri = pytest.importorskip("sigpy.mri")
    k, x, S = kspace(slices=1)
    M = equispaced_mask(W, 4, 0.25, seed=0).float().expand(H, W)  # 16 central lines
    k = k * M
    ours = estimate_coil_maps(k, calib=(slice(24, 40), slice(24, 40)), kernel=6)
    ref = torch.from_numpy(sigpy_mri.app.EspiritCalib(k[0].numpy(), calib_width=16, kernel_width=6,
                                                      show_pbar=False).run()).to(torch.complex64)[None]
    support = x > 0.02
    e_ours, e_ref = coil_map_error(ours, S[None], support), coil_map_error(ref, S[None], support)
    print(f"map error: invdiff {e_ours:.4f}, sigpy {e_ref:.4f}; between them {coil_map_error(ours, ref, support):.4f}")
    assert e_ours == pytest.approx(e_ref, rel=0.05)
    assert coil_map_error(ours, ref, support) < 1e-3  # the same maps, up to the per-pixel phase convention


def test_calibration_region_of_masks():
    M = equispaced_mask(W, 4, 0.16, seed=0).float().expand(H, W)
    rows, cols = calibration_region(M)
    assert (rows.start, rows.stop) == (0, H) and cols.stop - cols.start == 10 and M[:, cols].all()
    rows, cols = calibration_region(M, max_size=8)
    assert rows.stop - rows.start == 8 and cols.stop - cols.start == 8


def test_bad_input_is_named():
    k, _, _ = kspace(slices=1)
    with pytest.raises(ValueError, match="kspace"):
        estimate_coil_maps(k[0])
    bad = k.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        estimate_coil_maps(bad)
    M = torch.ones(H, W)
    M[:, W // 2] = 0
    with pytest.raises(ValueError, match="centre of k-space"):
        estimate_coil_maps(k * M, mask=M)
    with pytest.raises(ValueError, match="crop"):
        estimate_coil_maps(k, crop=1.5)
    with pytest.raises(ValueError, match="mask"):
        estimate_coil_maps(k, mask=torch.ones(5))
