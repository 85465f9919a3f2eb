"""The calibrated-coverage benchmark (invdiff.bench.calibrated_coverage), with a stand-in sampler."""

import torch

from invdiff.bench import calibrated_coverage as cc


def test_calibration_on_tuning_images_restores_coverage_on_test_images(monkeypatch, tmp_path):
    calls = []

    def sample(spec, prior, op, y, seed):
        """16 'samples' 3x too narrow around a noisy copy of the truth (the stand-in measurement is the truth)."""
        calls.append(seed)
        g = torch.Generator().manual_seed(seed)
        centre = y[0] + 0.05 * torch.randn(y[0].shape, generator=g)
        return (centre + 0.05 / 3 * torch.randn(16, *y[0].shape, generator=g))[:, None], 16, {}

    monkeypatch.setattr(cc, "measure", lambda op, x, seed: x)
    monkeypatch.setattr(cc, "_sample", sample)
    n = 4
    rows = cc.run(["inpaint70"], ["dds:n_samples=16"], n_cal=n, n_test=n, prior=object(), cache=tmp_path)
    assert len(rows) == 3 and len(calls) == 2 * n
    r90 = next(r for r in rows if r["level"] == 0.9)
    assert r90["raw"] < 0.5  # 3x too narrow
    assert r90["plug-in"]["scale"] > 2
    assert abs(r90["plug-in"]["cov"] - 0.9) < 0.05
    assert "needs at least 9 calibration images" in r90["risk-control"]
    r50 = next(r for r in rows if r["level"] == 0.5)
    assert isinstance(r50["risk-control"], dict)  # 1 / 0.5 - 1 = 1 image suffices
    md = cc.table(rows)
    assert md.count("\n") == 2 + len(rows) - 1 and "inpaint70" in md
    # a rerun reads every image from the cache
    rows2 = cc.run(["inpaint70"], ["dds:n_samples=16"], n_cal=n, n_test=n, prior=object(), cache=tmp_path)
    assert len(calls) == 2 * n
    assert rows2[1]["plug-in"]["cov"] == r90["plug-in"]["cov"]
    assert len(list(tmp_path.glob("*.pt"))) == 2 * n
