"""The task benchmark: call counting, tasks, the claim check, and ``invdiff bench --quick`` end to end."""

from __future__ import annotations

import csv
import math

import deepinv as dinv
import pytest
import torch

from invdiff.bench import ct16, harness, run
from invdiff.bench.methods import METHODS, CountingDenoiser, get_method, hparams
from invdiff.bench.report import methodology
from invdiff.bench.tasks import TASKS, get_task, measure, test_images, tuning_images


class ShrinkDenoiser(dinv.models.Denoiser):
    """The exact denoiser of a N(0.5, 0.25 I) prior (a stand-in network for fast adapter tests)."""

    sigma_min, sigma_max, data_range, sigma_data = 0.002, 10.0, (0.0, 1.0), 0.5

    def forward(self, x, sigma, *args, **kwargs):
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, *([1] * (x.ndim - 1)))
        return 0.5 + (x - 0.5) * 0.25 / (0.25 + s**2)


def test_counting_denoiser_counts_calls_and_evaluations():
    c = CountingDenoiser(ShrinkDenoiser())
    assert c.sigma_max == 10.0 and c.data_range == (0.0, 1.0)
    c(torch.zeros(3, 1, 4, 4), 0.5)
    c(torch.zeros(5, 1, 4, 4), torch.full((5,), 0.1))
    assert (c.calls, c.evaluations) == (2, 8)
    c.reset()
    assert (c.calls, c.evaluations) == (0, 0)
    assert c.records == []  # records only when asked


def test_counting_denoiser_records_shapes_and_backward_passes():
    """``record=True`` (the overhead benchmark): one ``[shape, back-propagated]`` per call; the flag turns on only
    for the call whose output a gradient flowed back through."""
    c = CountingDenoiser(ShrinkDenoiser(), record=True)
    x = torch.zeros(2, 1, 4, 4, requires_grad=True)
    c(torch.zeros(3, 1, 4, 4), 0.5)
    out = c(x, 0.5)
    c(x, 0.7)
    torch.autograd.grad(out.sum(), x)
    assert c.records == [[(3, 1, 4, 4), False], [(2, 1, 4, 4), True], [(2, 1, 4, 4), False]]
    assert (c.calls, c.evaluations) == (3, 7)
    c.reset()
    assert c.records == [] and c.calls == 0


@pytest.mark.parametrize("key", ["dps", "reddiff", "daps", "diffpir", "dinv-dps", "dinv-diffpir", "dinv-ddrm",
                                 "dds-mean8", "diffpir-mean8", "dinv-diffpir-mean8", "dinv-ddrm-mean8"])
def test_methods_use_exactly_the_budget(key):
    """Each diffusion adapter makes exactly ``nfe`` network calls (counted in the wrapper, deepinv included); a
    mean-of-8 method pushes its 8 chains per image through each of those calls (8 evaluations per image per call)."""
    op = dinv.physics.Inpainting(img_size=(1, 8, 8), mask=0.5, noise_model=dinv.physics.GaussianNoise(0.05))
    x = torch.rand(2, 1, 8, 8)
    y = measure(op, x, seed=0)
    prior = CountingDenoiser(ShrinkDenoiser())
    out = get_method(key).run(prior, op, y, 7, 0, hparams(key, "inpaint"))
    chains = 8 if key.endswith("-mean8") else 1
    assert prior.calls == 7
    assert prior.evaluations == 14 * chains  # batch of 2, one evaluation per image and chain per call
    assert out.x.shape == x.shape and torch.isfinite(out.x).all()
    if chains > 1:
        assert out.samples.shape == (chains, *x.shape)


def test_measure_is_seeded_and_masked():
    op = dinv.physics.Inpainting(img_size=(1, 8, 8), mask=0.5, noise_model=dinv.physics.GaussianNoise(0.1))
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(measure(op, x, seed=3), measure(op, x, seed=3))
    assert not torch.equal(measure(op, x, seed=3), measure(op, x, seed=4))
    residual = measure(op, x, seed=3) - op.A(x)
    assert 0.05 < float(residual[op.mask.expand_as(x) > 0].std()) < 0.2  # noise of std 0.1 on kept pixels


def test_test_and_tuning_images_differ():
    te, tu = test_images(3), tuning_images(3)
    assert te.shape == tu.shape == (3, 1, 64, 64)
    assert float((te[:2] - tu[:2]).abs().max()) > 0.1
    assert float(te.min()) >= 0 and float(te.max()) <= 1
    with pytest.raises(ValueError, match="n"):
        test_images(0)


def test_task_table_and_noise():
    assert {"ct8", "ct16", "ct-limited90", "mri4-random", "mri8-equispaced", "inpaint70", "deblur", "sr4",
            "ct3d8"} <= set(TASKS)
    t = get_task("inpaint70")
    op = t.operator()
    assert math.isclose(op.noise_std, 0.01, rel_tol=1e-6)  # stored in float32
    assert math.isclose(float(op.mask.mean()), 0.3, abs_tol=0.03)
    with pytest.raises(ValueError, match="task"):
        get_task("nope")
    with pytest.raises(ValueError, match="method"):
        get_method("nope")


def test_plane_psnr_is_the_mean_slice_psnr_along_each_axis():
    """``plane_psnr(x, ref, axis)`` = mean over volumes and slices along ``axis`` of the slice PSNR (data range 1).

    Reference in closed form: the error is ``c_d`` (a constant) on axial slice ``d`` of volume 0 and
    ``2 c_d`` on volume 1, so no slice is exact. An axial slice has PSNR ``-20 log10(k c_d)``; every
    coronal and sagittal slice crosses all axial slices and has ``-10 log10(k^2 mean_d c_d^2)``.
    """
    c = torch.tensor([0.01, 0.02, 0.05, 0.1], dtype=torch.float64)
    ref = torch.rand(2, 1, 4, 6, 8, dtype=torch.float64)
    err = torch.stack([c, 2 * c]).reshape(2, 1, 4, 1, 1)
    est = ref + err
    axial = float(torch.cat([-20 * torch.log10(c), -20 * torch.log10(2 * c)]).mean())
    across = float((-10 * torch.log10(c.pow(2).mean()) - 10 * torch.log10(4 * c.pow(2).mean())) / 2)
    assert run.plane_psnr(est, ref, 2) == pytest.approx(axial, rel=1e-9)
    assert run.plane_psnr(est, ref, 3) == pytest.approx(across, rel=1e-9)
    assert run.plane_psnr(est, ref, 4) == pytest.approx(across, rel=1e-9)
    assert axial > across + 1.0  # mean of logs > log of mean (Jensen): the two references differ
    assert harness.plane_psnr is run.plane_psnr  # the old name still works


def test_ct16_verdict():
    def row(key, family, psnr, evals=100):
        return {"key": key, "method": key, "family": family, "psnr": psnr, "calls_per_image": 100,
                "evals_per_image": evals, "params": ""}

    def images(key, psnr):
        return [{"key": key, "image": i, "psnr": psnr + 0.01 * i} for i in range(3)]

    rows = [row("fbp", "classical", 22.0), row("reddiff", "invdiff", 26.0), row("smc", "invdiff", 40.0, evals=800),
            row("dinv-diffpir", "deepinv", 25.0), row("dinv-dps", "deepinv", 15.0)]
    per = images("fbp", 22.0) + images("reddiff", 26.0) + images("dinv-diffpir", 25.0) + images("dinv-dps", 15.0)
    ok, lines = ct16.verdict(rows, per, 100)
    assert ok and "reddiff" in lines[0]  # SMC's 800 evaluations per image keep it out of the claim
    ok, _ = ct16.verdict([r if r["key"] != "dinv-diffpir" else row("dinv-diffpir", "deepinv", 25.7) for r in rows],
                         images("fbp", 22.0) + images("reddiff", 26.0) + images("dinv-diffpir", 25.7), 100)
    assert not ok


def test_bench_quick_cli(tmp_path):
    """``invdiff bench --quick --out DIR``: table, CSV and PNG with invdiff and deepinv rows, finite PSNRs."""
    from invdiff.cli import main

    assert main(["bench", "--quick", "--out", str(tmp_path), "--no-exact"]) == 0
    md = (tmp_path / "RESULTS.md").read_text()
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["family"] for r in rows} >= {"invdiff", "deepinv", "classical"}
    assert all(math.isfinite(float(r["psnr"])) for r in rows)
    for r in rows:
        if r["family"] != "classical":
            assert int(r["calls_per_image"]) == 20  # the quick budget, counted in the wrapper
    assert "deepinv DiffPIR" in md and "invdiff RED-Diff" in md and "torch" in md and "deepinv" in md
    assert methodology("cpu") in md  # the one statement of the methodology, printed into the report
    png = (tmp_path / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert set(METHODS) >= {r["key"] for r in rows}


def test_emit_markdown_prints_writes_and_keeps_an_existing_file(tmp_path, capsys):
    from invdiff.bench.report import emit_markdown

    out = tmp_path / "t.md"
    emit_markdown("| a |", str(out))
    assert capsys.readouterr().out == "| a |\n" and out.read_text() == "| a |\n"
    with pytest.raises(FileExistsError):
        emit_markdown("| b |", str(out))
    assert out.read_text() == "| a |\n"
    emit_markdown("| b |", str(out), overwrite=True)
    assert out.read_text() == "| b |\n"
    emit_markdown("| c |", None)  # print only
    assert capsys.readouterr().out.endswith("| c |\n")
