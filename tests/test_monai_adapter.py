"""MONAI ``DiffusionModelUNet`` checkpoints (2D and 3D): random networks saved as a MONAI bundle saves them.

References are MONAI's own objects: the network's forward on the VP state ``x_t``, and
``DDPMScheduler`` (its ``alphas_cumprod`` and its ``step``'s ``pred_original_sample``, clipping off).
"""

from __future__ import annotations

import json
import sys

import pytest
import torch

monai = pytest.importorskip("monai")
from monai.networks.nets import DiffusionModelUNet  # noqa: E402
from monai.networks.schedulers import DDPMScheduler  # noqa: E402

from invdiff import priors  # noqa: E402
from invdiff.priors.adapters.monai import load_monai, monai_alphas_cumprod  # noqa: E402
from invdiff.priors.padding import crop_to, reflect_pad  # noqa: E402

RTOL = 1e-4
TIMESTEPS = (5, 400, 950)
SCHED = dict(num_train_timesteps=1000, schedule="scaled_linear_beta", beta_start=0.0015, beta_end=0.0195)


def net_args(spatial_dims: int) -> dict:
    return dict(spatial_dims=spatial_dims, in_channels=1, out_channels=1, channels=(8, 16),
                attention_levels=(False, True), num_res_blocks=1, num_head_channels=8, norm_num_groups=8)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def random_unet(spatial_dims: int, seed: int = 0) -> DiffusionModelUNet:
    """A MONAI UNet with every parameter perturbed (its zero-initialised output conv would give 0)."""
    torch.manual_seed(seed)
    net = DiffusionModelUNet(**net_args(spatial_dims))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return net.eval()


def save_bundle(tmp_path, net: torch.nn.Module, spatial_dims: int) -> tuple:
    """``models/model.pt`` (torch.save of the state dict) and ``configs/network.json`` as in a MONAI bundle."""
    (tmp_path / "models").mkdir()
    (tmp_path / "configs").mkdir()
    weights = tmp_path / "models" / "model.pt"
    torch.save(net.state_dict(), weights)
    cfg = {"_target_": "monai.networks.nets.DiffusionModelUNet", **net_args(spatial_dims)}
    cfg_path = tmp_path / "configs" / "network.json"
    cfg_path.write_text(json.dumps(cfg))
    return weights, cfg_path


@pytest.mark.parametrize("schedule, kw", [
    ("linear_beta", {}), ("scaled_linear_beta", dict(beta_start=0.0015, beta_end=0.0195)),
    ("sigmoid_beta", dict(sig_range=4.0)), ("cosine", {}), ("linear_beta", dict(beta_start=2e-4, beta_end=0.01)),
])
def test_schedules_are_monai_ddpm_schedules(schedule, kw):
    ref = DDPMScheduler(num_train_timesteps=500, schedule=schedule, **kw).alphas_cumprod.double()
    ab = monai_alphas_cumprod(schedule, 500, **kw)  # MONAI computes it: this checks each schedule's arguments reach it
    assert torch.equal(ab, ref)


def reference_D(net, sched: DDPMScheduler, x0: torch.Tensor, noise: torch.Tensor, prediction_type: str):
    """For each sample b at integer timestep TIMESTEPS[b]: the noisy x, its sigma, and two references for
    E[x0 | x]: the formula x - sigma eps(x_t, t) with eps derived from the prediction type, and MONAI's
    DDPMScheduler.step estimate of x0."""
    ab = sched.alphas_cumprod.double()[list(TIMESTEPS)]
    sigma = ((1 - ab) / ab).sqrt().float()
    s = sigma.reshape(-1, *[1] * (x0.ndim - 1))
    a = ab.float().reshape(s.shape)
    x = x0 + s * noise
    x_t = a.sqrt() * x  # = x / sqrt(1 + sigma^2)
    with torch.no_grad():
        out = net(x_t, torch.tensor(TIMESTEPS))
    if prediction_type == "epsilon":
        eps = out
    elif prediction_type == "v_prediction":  # v = sqrt(ab) eps - sqrt(1-ab) x0  =>  eps = sqrt(ab) v + sqrt(1-ab) x_t
        eps = a.sqrt() * out + (1 - a).sqrt() * x_t
    else:  # x0 given: eps = (x_t - sqrt(ab) x0) / sqrt(1 - ab)
        eps = (x_t - a.sqrt() * out) / (1 - a).sqrt()
    formula = x - s * eps
    step = torch.cat([sched.step(out[b:b + 1], t, x_t[b:b + 1])[1] for b, t in enumerate(TIMESTEPS)])
    return x, sigma, formula, step


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_monai_unet_matches_monai_forward_and_scheduler(tmp_path, spatial_dims, prediction_type):
    net = random_unet(spatial_dims)
    weights, cfg_path = save_bundle(tmp_path, net, spatial_dims)
    D = priors.load(weights, arch="monai", config=cfg_path, scheduler=dict(SCHED, prediction_type=prediction_type))
    assert D.prediction_type == prediction_type and D.data_range == (0.0, 1.0)
    sched = DDPMScheduler(**SCHED, prediction_type=prediction_type, clip_sample=False)
    ab0 = sched.alphas_cumprod[0]
    assert D.sigma_min == pytest.approx(float(((1 - ab0) / ab0).sqrt()), rel=1e-5)

    g = torch.Generator().manual_seed(3)
    shape = (len(TIMESTEPS), 1) + (16,) * spatial_dims
    x0, noise = torch.rand(shape, generator=g), torch.randn(shape, generator=g)
    x, sigma, formula, step = reference_D(net, sched, x0, noise, prediction_type)
    assert rel_err(formula, step) < 1e-5  # the derivation of eps agrees with MONAI's own x0 estimate
    with torch.no_grad():
        out = D(x, sigma)  # one call, a different timestep per sample
    assert out.shape == x.shape
    assert rel_err(out, step) < RTOL
    assert rel_err(out, formula) < RTOL
    with torch.no_grad():  # the prediction type matters: read as another type, the same network disagrees
        other = "sample" if prediction_type != "sample" else "epsilon"
        wrong = load_monai(weights, config=cfg_path, scheduler=dict(SCHED, prediction_type=other))(x, sigma)
    assert rel_err(wrong, step) > 100 * RTOL


def test_bundle_config_with_references_and_scheduler_entry(tmp_path):
    net = random_unet(3, seed=4)
    weights, _ = save_bundle(tmp_path, net, 3)
    args = net_args(3)
    bundle = {"spatial_dims": 3, "channels": list(args["channels"]),
              "network_def": {"_target_": "DiffusionModelUNet", **args, "spatial_dims": "@spatial_dims",
                              "channels": "@channels"},
              "noise_scheduler": {"_target_": "monai.networks.schedulers.DDPMScheduler", **SCHED,
                                  "prediction_type": "v_prediction", "clip_sample": True}}
    path = tmp_path / "configs" / "inference.json"
    path.write_text(json.dumps(bundle))
    D = priors.load(weights, arch="monai", config=path)
    assert D.prediction_type == "v_prediction"
    sched = DDPMScheduler(**SCHED, prediction_type="v_prediction", clip_sample=False)
    g = torch.Generator().manual_seed(5)
    shape = (3, 1, 16, 16, 16)
    x, sigma, _, step = reference_D(net, sched, torch.rand(shape, generator=g), torch.randn(shape, generator=g),
                                    "v_prediction")
    with torch.no_grad():
        assert rel_err(D(x, sigma), step) < RTOL


def test_yaml_bundle_config(tmp_path):
    yaml = pytest.importorskip("yaml")
    net = random_unet(2, seed=10)
    weights, cfg_path = save_bundle(tmp_path, net, 2)
    bundle = {"network_def": {"_target_": "monai.networks.nets.DiffusionModelUNet",
                              **{k: list(v) if isinstance(v, tuple) else v for k, v in net_args(2).items()}},
              "noise_scheduler": {"_target_": "DDPMScheduler", **SCHED, "prediction_type": "sample"}}
    path = tmp_path / "configs" / "inference.yaml"
    path.write_text(yaml.safe_dump(bundle))
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        a = load_monai(weights, config=path)(x, 0.7)
        b = load_monai(weights, config=cfg_path, scheduler=dict(SCHED, prediction_type="sample"))(x, 0.7)
    assert torch.equal(a, b)
    path.write_text("network_def: [unclosed")
    with pytest.raises(ValueError, match="config: .* is not readable YAML"):
        load_monai(weights, config=path)


def test_any_size_volume_is_padded_to_the_network(tmp_path):
    net = random_unet(3, seed=6)
    weights, cfg_path = save_bundle(tmp_path, net, 3)
    D = load_monai(weights, config=cfg_path, scheduler=SCHED)
    assert D.pad_multiple == 2  # channels (8, 16): one halving
    x = torch.randn(2, 1, 9, 12, 7, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        out = D(x, torch.tensor([0.3, 2.0]))
        ref = crop_to(D(reflect_pad(x, 2), torch.tensor([0.3, 2.0])), tuple(x.shape[2:]), 2)
    assert out.shape == x.shape
    assert torch.allclose(out, ref, atol=1e-6)
    with pytest.raises(ValueError, match=r"3D; expected shape \(B, C, D, H, W\)"):
        D(torch.zeros(1, 1, 16, 16), 0.5)


def test_safetensors_and_nested_key(tmp_path):
    from safetensors.torch import save_file

    net = random_unet(2, seed=8)
    cfg = net_args(2)
    save_file(net.state_dict(), tmp_path / "w.safetensors")
    torch.save({"model": net.state_dict()}, tmp_path / "ckpt.pt")
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        a = load_monai(tmp_path / "w.safetensors", config=cfg)(x, 1.0)
        b = load_monai(tmp_path / "ckpt.pt", config=cfg, key="model")(x, 1.0)
    assert torch.equal(a, b)


def test_errors_name_the_argument(tmp_path):
    net = random_unet(2)
    weights, cfg_path = save_bundle(tmp_path, net, 2)
    with pytest.raises(ValueError, match="config: arch='monai' needs"):
        priors.load(weights, arch="monai")
    with pytest.raises(ValueError, match="config: missing 'out_channels'"):
        load_monai(weights, config={k: v for k, v in net_args(2).items() if k != "out_channels"})
    with pytest.raises(ValueError, match="config: DiffusionModelUNet rejects"):
        load_monai(weights, config=dict(net_args(2), channels=(8, 12)))  # not multiples of norm_num_groups
    with pytest.raises(ValueError, match="bundle expression"):
        load_monai(weights, config=dict(net_args(2), in_channels="$1 + 0"))
    with pytest.raises(ValueError, match="conditional networks"):
        load_monai(weights, config=dict(net_args(2), with_conditioning=True, cross_attention_dim=8))
    with pytest.raises(ValueError, match="only MONAI's DiffusionModelUNet"):
        load_monai(weights, config=dict(net_args(2), _target_="monai.networks.nets.UNet"))
    with pytest.raises(ValueError, match="scheduler: unknown argument"):
        load_monai(weights, config=cfg_path, scheduler=dict(SCHED, beta_stop=0.02))
    with pytest.raises(ValueError, match="schedule: expected one of"):
        load_monai(weights, config=cfg_path, scheduler=dict(schedule="quadratic"))
    with pytest.raises(ValueError, match="prediction_type: expected one of"):
        load_monai(weights, config=cfg_path, prediction_type="score")
    with pytest.raises(FileNotFoundError, match="config: .*no such file"):
        load_monai(weights, config=tmp_path / "nope.json")
    # a three-level config for two-level weights: the keys are listed
    with pytest.raises(ValueError, match=r"not match DiffusionModelUNet; missing keys \['down_blocks\.1\.downsampler"):
        load_monai(weights, config=dict(net_args(2), channels=(8, 16, 16), attention_levels=(False, True, True)))


def test_missing_monai_names_the_pip_extra(tmp_path, monkeypatch):
    for name in ("monai", "monai.networks", "monai.networks.nets"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'invdiff\[monai\]'"):
        load_monai(tmp_path / "model.pt", config=net_args(2))
