"""Checkpoint adapters: random networks saved exactly as the public checkpoints are, loaded back.

Each test computes the right-hand side by calling the raw network directly, with the schedule
computed independently of the adapter (NumPy float64 for guided-diffusion; diffusers' own
scheduler objects for diffusers).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from invdiff.priors.adapters import (
    ADMConfig,
    ADMUNet,
    VEScoreDenoiser,
    VPEpsDenoiser,
    load_adm,
    load_diffusers,
    load_ncsnpp,
)
from invdiff.priors.adapters.ncsnpp import NCSNPP_CONFIGS, NCSNpp, NCSNppConfig

RTOL = 1e-4
TINY_ADM = dict(image_size=32, num_channels=32, num_res_blocks=1, channel_mult=(1, 2),
                attention_resolutions=(16,), num_heads=4, num_head_channels=32)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def randomise_(net: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Perturb every parameter (zero-initialised output layers would make eps identically 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return net.eval()


def guided_diffusion_alphas_cumprod() -> np.ndarray:
    """Linear betas 1e-4..0.02, T = 1000, as guided-diffusion computes them (NumPy float64)."""
    return np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000, dtype=np.float64))


# --------------------------------------------------------------------------- ADM (guided-diffusion)
@pytest.fixture(scope="module")
def adm_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    net = randomise_(ADMUNet(ADMConfig(**TINY_ADM)))
    path = tmp_path_factory.mktemp("adm") / "tiny_adm.pt"
    torch.save(net.state_dict(), path)  # what guided-diffusion / DPS distribute: a raw state dict
    return net, path


def test_adm_matches_raw_network_at_timestep_sigmas(adm_ckpt):
    net, path = adm_ckpt
    D = load_adm(path, **TINY_ADM)
    assert isinstance(D, VPEpsDenoiser) and D.data_range == (-1.0, 1.0)
    ab = guided_diffusion_alphas_cumprod()
    sig = np.sqrt((1 - ab) / ab)
    assert D.sigma_min == pytest.approx(sig[0], rel=1e-12) and D.sigma_max == pytest.approx(sig[-1], rel=1e-12)
    g = torch.Generator().manual_seed(1)
    x0 = 2 * torch.rand(2, 3, 32, 32, generator=g) - 1
    for t in (0, 1, 37, 500, 998, 999):
        s = float(sig[t])
        x = x0 + s * torch.randn(x0.shape, generator=g)
        with torch.no_grad():
            eps = net(x * float(np.sqrt(ab[t])), torch.full((2,), float(t)))[:, :3]
            ref = x - s * eps
            out = D(x, s)  # sigma as a float
        assert rel_err(out, ref) < RTOL, t
        assert rel_err((x - out) / s, eps) < RTOL, t  # the eps part itself, not only x


def test_adm_sigma_tensor_per_sample(adm_ckpt):
    net, path = adm_ckpt
    D = load_adm(path, **TINY_ADM)
    ab = guided_diffusion_alphas_cumprod()
    ts = [3, 250, 700, 990]
    sig = torch.tensor(np.sqrt((1 - ab[ts]) / ab[ts]), dtype=torch.float32)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * (1 + sig[:, None, None, None])
    with torch.no_grad():
        x_t = x * torch.tensor(np.sqrt(ab[ts]), dtype=torch.float32)[:, None, None, None]
        eps = net(x_t, torch.tensor(ts, dtype=torch.float32))[:, :3]
        out = D(x, sig)
    assert rel_err((x - out) / sig[:, None, None, None], eps) < RTOL
    # each sample is denoised at its own level: the batch equals the samples one by one
    with torch.no_grad():
        one = torch.cat([D(x[i:i + 1], float(sig[i])) for i in range(4)])
    assert rel_err(out, one) < 1e-5


def test_adm_fractional_and_nearest_timesteps(adm_ckpt):
    net, path = adm_ckpt
    ab = guided_diffusion_alphas_cumprod()
    sig = np.sqrt((1 - ab) / ab)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    # a sigma at 30% of the way (in log sigma) from timestep 400 to 401
    s = float(np.exp(0.7 * np.log(sig[400]) + 0.3 * np.log(sig[401])))
    for mode, t in (("interp", 400.3), ("nearest", 400.0)):
        D = load_adm(path, timestep=mode, **TINY_ADM)
        with torch.no_grad():
            eps = net(x / np.sqrt(1 + s**2), torch.tensor([t]))[:, :3]
            assert rel_err((x - D(x, s)) / s, eps) < RTOL, mode
    # the interpolated timestep is not the nearest one: the two modes differ
    Di, Dn = load_adm(path, **TINY_ADM), load_adm(path, timestep="nearest", **TINY_ADM)
    with torch.no_grad():
        assert rel_err(Di(x, s), Dn(x, s)) > 1e-6


def test_adm_no_clamping_and_gradients(adm_ckpt):
    _, path = adm_ckpt
    D = load_adm(path, **TINY_ADM)
    x = (5 * torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))).requires_grad_()
    out = D(x, 0.02)
    assert out.abs().max() > 1.5  # far outside [-1, 1]: nothing is clipped
    out.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with torch.no_grad():  # sigma = 0 is the identity
        assert torch.equal(D(x.detach(), 0.0), x.detach())
    with pytest.raises(ValueError, match="sigma"):
        D(x.detach(), -0.1)
    with pytest.raises(ValueError, match="sigma"):
        D(x.detach(), torch.ones(3))


def test_adm_key_mismatch_lists_keys(adm_ckpt, tmp_path):
    net, _ = adm_ckpt
    state = dict(net.state_dict())
    del state["out.2.weight"]
    state["label_emb.weight"] = torch.zeros(10, 128)
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    with pytest.raises(ValueError, match=r"missing keys \['out.2.weight'\].*unexpected keys \['label_emb.weight'\]"):
        load_adm(bad, **TINY_ADM)
    # the checkpoint does not fit a network configured otherwise: listed, not silently loaded
    with pytest.raises(ValueError, match="does not match ADMUNet.*missing keys"):
        load_adm(adm_ckpt[1], **(TINY_ADM | dict(num_res_blocks=2)))


def test_adm_missing_file_and_pickle(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_adm(tmp_path / "nope.pt", **TINY_ADM)
    evil = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "obj": ADMConfig()}, evil)  # a pickle that builds an object
    with pytest.raises(ValueError, match="refused"):
        load_adm(evil, **TINY_ADM)
    with pytest.raises(TypeError, match="unknown argument"):
        load_adm(evil, num_chanels=32)
    with pytest.raises(ValueError, match="config"):
        load_adm(evil, config="celeba")


def test_adm_unet_input_checks():
    net = ADMUNet(ADMConfig(**TINY_ADM))
    with pytest.raises(ValueError, match="divisible by 2"):
        net(torch.zeros(1, 3, 31, 32), torch.zeros(1))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        net(torch.zeros(1, 1, 32, 32), torch.zeros(1))


@pytest.mark.slow
def test_adm_unet_is_deepinv_diffunet_at_ffhq_config():
    """At DPS's FFHQ configuration ADMUNet has deepinv DiffUNet's keys and computes the same eps."""
    from deepinv.models import DiffUNet

    ref = DiffUNet(pretrained=None).eval()
    state = {k: v for k, v in ref.state_dict().items() if k not in ("sqrt_1m_alphas_cumprod", "sqrt_alphas_cumprod")}
    randomise_(ref, seed=5, scale=0.02)
    net = ADMUNet().eval()
    assert set(net.state_dict()) == set(state)
    net.load_state_dict(state)  # strict, same shapes
    x, t = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(6)), torch.tensor([10.0, 600.5])
    with torch.no_grad():
        a, b = ref.forward_diffusion(x, t), net(x, t)
    assert a.shape == (2, 6, 32, 32) and a.abs().max() > 1e-3
    assert rel_err(b, a) < 1e-6


def diffunet_buffers(**schedule) -> dict[str, torch.Tensor]:
    """The two schedule buffers deepinv's DiffUNet adds to its state dict, computed by deepinv's own code."""
    from deepinv.models import DiffUNet

    sqrt_1m, sqrt_ab = DiffUNet.get_alpha_prod(None, **schedule)[-2:]  # it does not use self
    return {"sqrt_1m_alphas_cumprod": sqrt_1m, "sqrt_alphas_cumprod": sqrt_ab}


def test_adm_accepts_diffunet_schedule_buffers_and_checks_them(adm_ckpt, tmp_path):
    """A tiny ADM state dict carrying DiffUNet's buffers loads (they are dropped) and denoises exactly as without
    them; buffers of another schedule, or of another length, are refused naming the buffer."""
    from safetensors.torch import save_file

    net, plain = adm_ckpt
    with_buffers = tmp_path / "diffunet_style.safetensors"
    save_file({**net.state_dict(), **diffunet_buffers()}, with_buffers)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        a = load_adm(with_buffers, **TINY_ADM)(x, torch.tensor([0.05, 3.0]))
        b = load_adm(plain, **TINY_ADM)(x, torch.tensor([0.05, 3.0]))
    assert torch.equal(a, b)
    other = tmp_path / "other_schedule.pt"
    torch.save({**net.state_dict(), **diffunet_buffers(beta_end=0.012)}, other)
    with pytest.raises(ValueError, match=r"schedule buffer 'sqrt_alphas_cumprod' disagrees with the schedule .*"
                                         r"beta_start, beta_end and num_train_timesteps"):
        load_adm(other, **TINY_ADM)
    # the same buffers agree with the schedule they came from
    load_adm(other, beta_end=0.012, **TINY_ADM)
    with pytest.raises(ValueError, match="disagrees with the schedule"):  # right buffers, wrong loader schedule
        load_adm(with_buffers, beta_start=2e-4, **TINY_ADM)
    short = tmp_path / "short.pt"
    torch.save({**net.state_dict(), **diffunet_buffers(num_train_timesteps=500)}, short)
    with pytest.raises(ValueError, match="has 500 timesteps, the schedule .* has 1000"):
        load_adm(short, **TINY_ADM)


def test_deepinv_diffunet_state_dict_loads_through_adm(tmp_path):
    """deepinv's DiffUNet (FFHQ configuration, random weights) saved with torch.save(state_dict) loads through
    priors.load(arch="adm", config="ffhq256") and D(x, sigma) = x - sigma eps(x / sqrt(1 + sigma^2), t) with eps
    from deepinv's own forward, at three timesteps."""
    from deepinv.models import DiffUNet

    from invdiff import priors

    ref = randomise_(DiffUNet(pretrained=None), seed=12, scale=0.02)
    path = tmp_path / "diffunet_ffhq.pt"
    torch.save(ref.state_dict(), path)  # carries sqrt_alphas_cumprod and sqrt_1m_alphas_cumprod
    D = priors.load(path, arch="adm", config="ffhq256")
    ab = guided_diffusion_alphas_cumprod()
    ts = [2, 450, 960]
    sig = torch.tensor(np.sqrt((1 - ab[ts]) / ab[ts]), dtype=torch.float32)
    g = torch.Generator().manual_seed(13)
    x = 2 * torch.rand(3, 3, 32, 32, generator=g) - 1 + sig[:, None, None, None] * torch.randn(3, 3, 32, 32, generator=g)
    with torch.no_grad():
        x_t = x / (1 + sig[:, None, None, None] ** 2).sqrt()
        eps = ref.forward_diffusion(x_t, torch.tensor(ts))[:, :3]
        want = x - sig[:, None, None, None] * eps
        out = D(x, sig)
    assert eps.abs().max() > 1e-2
    assert rel_err(out, want) < RTOL


# --------------------------------------------------------------------------- diffusers
TINY_UNET = dict(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(32, 32), layers_per_block=1,
                 down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                 norm_num_groups=8)


def save_diffusers_folder(folder, unet_kw: dict, scheduler) -> torch.nn.Module:
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    unet = randomise_(diffusers.UNet2DModel(**unet_kw), seed=7, scale=0.02)
    unet.save_pretrained(folder / "unet")  # config.json + diffusion_pytorch_model.safetensors
    scheduler.save_pretrained(folder / "scheduler")  # scheduler_config.json
    return unet


@pytest.mark.parametrize("beta_schedule, prediction_type", [
    ("linear", "epsilon"), ("scaled_linear", "v_prediction"), ("squaredcos_cap_v2", "sample")])
def test_diffusers_matches_raw_network(tmp_path, beta_schedule, prediction_type):
    diffusers = pytest.importorskip("diffusers")
    kw = dict(beta_start=0.00085, beta_end=0.012) if beta_schedule == "scaled_linear" else {}
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=beta_schedule,
                                    prediction_type=prediction_type, **kw)
    unet = save_diffusers_folder(tmp_path, TINY_UNET, sched)
    D = load_diffusers(tmp_path)
    assert isinstance(D, VPEpsDenoiser) and D.prediction_type == prediction_type
    ab = sched.alphas_cumprod.double()  # the scheduler's own schedule
    sig = ((1 - ab) / ab).sqrt()
    assert D.sigma_min == pytest.approx(float(sig[0]), rel=1e-12)
    assert D.sigma_max == pytest.approx(float(sig[-1]), rel=1e-12)
    g = torch.Generator().manual_seed(8)
    for t in (0, 10, 400, 999):
        s, a = float(sig[t]), float(ab[t])
        x = torch.rand(2, 1, 16, 16, generator=g) * 2 - 1 + s * torch.randn(2, 1, 16, 16, generator=g)
        x_t = x * a**0.5
        with torch.no_grad():
            out = unet(x_t, torch.full((2,), float(t))).sample
            if prediction_type == "epsilon":
                ref = x - s * out
            elif prediction_type == "v_prediction":  # x0 = sqrt(ab) x_t - sqrt(1 - ab) v
                ref = a**0.5 * x_t - (1 - a) ** 0.5 * out
            else:
                ref = out
            got_float = D(x, s)
            got_tensor = D(x, torch.full((2,), s))
        assert rel_err(got_float, ref) < RTOL, t
        assert rel_err(got_tensor, ref) < RTOL, t
        if prediction_type != "sample":  # the network part alone
            assert rel_err(x - got_float, x - ref) < RTOL, t


def test_diffusers_score_sde_ve(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.ScoreSdeVeScheduler(sigma_min=0.01, sigma_max=50.0)
    unet = save_diffusers_folder(tmp_path, TINY_UNET | dict(time_embedding_type="fourier"), sched)
    D = load_diffusers(tmp_path)
    assert isinstance(D, VEScoreDenoiser) and (D.sigma_min, D.sigma_max, D.data_range) == (0.01, 50.0, (0.0, 1.0))
    sig = torch.tensor([0.02, 0.5, 3.0])
    x = torch.rand(3, 1, 16, 16) + sig[:, None, None, None] * torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        score = unet(x, sig).sample  # the port's UNet returns the score (its output divided by sigma)
        ref = x + sig[:, None, None, None] ** 2 * score
        assert rel_err(D(x, sig), ref) < RTOL
        assert rel_err(D(x[1:2], 0.5), ref[1:2]) < RTOL


def test_diffusers_errors(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    from safetensors.torch import load_file, save_file

    with pytest.raises(FileNotFoundError):
        load_diffusers(tmp_path / "nope")
    save_diffusers_folder(tmp_path, TINY_UNET, diffusers.DDPMScheduler())
    weights = tmp_path / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    removed = sorted(state)[0]
    del state[removed]
    state["extra.weight"] = torch.zeros(2)
    save_file(state, str(weights))
    with pytest.raises(ValueError, match=rf"missing keys \['{removed}'\].*unexpected keys \['extra.weight'\]"):
        load_diffusers(tmp_path)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="weights"):
        load_diffusers(tmp_path)
    (tmp_path / "scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="scheduler"):
        load_diffusers(tmp_path)


def test_vp_denoiser_argument_checks():
    ab = torch.linspace(0.99, 0.01, 10)
    with pytest.raises(ValueError, match="alphas_cumprod"):
        VPEpsDenoiser(lambda x, t: x, ab.flip(0))
    with pytest.raises(ValueError, match="prediction_type"):
        VPEpsDenoiser(lambda x, t: x, ab, prediction_type="eps")
    with pytest.raises(TypeError, match="net_fn"):
        VPEpsDenoiser(None, ab)
    D = VPEpsDenoiser(lambda x, t: torch.zeros(x.shape[0], 5, *x.shape[2:]), ab)
    with pytest.raises(ValueError, match="output shape"):
        D(torch.zeros(1, 2, 4, 4), 0.5)


# --------------------------------------------------------------------------- NCSN++ (score_sde, DiffusionMBIR)
TINY_NCSNPP = dict(image_size=16, nf=16, num_res_blocks=1)  # DiffusionMBIR's AAPM layout, smaller


@pytest.fixture(scope="module")
def ncsnpp_ckpt(tmp_path_factory):
    """A training checkpoint written as score_sde's ``save_checkpoint`` writes it."""
    from collections import OrderedDict

    torch.manual_seed(0)
    net = randomise_(NCSNpp(NCSNppConfig(**TINY_NCSNPP)), seed=9, scale=0.02)
    wrapped = torch.nn.DataParallel(net)  # the training script wraps the net: keys "module.*"
    sigmas = torch.exp(torch.linspace(np.log(378.0), np.log(0.01), 2000))
    model_state = OrderedDict([("module.sigmas", sigmas)] + list(wrapped.state_dict().items()))
    g = torch.Generator().manual_seed(10)
    shadow = [p.detach() + 0.01 * torch.randn(p.shape, generator=g) for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    ckpt = {"optimizer": opt.state_dict(), "model": model_state,
            "ema": {"decay": 0.999, "num_updates": 17, "shadow_params": shadow}, "step": 17}
    path = tmp_path_factory.mktemp("ncsnpp") / "checkpoint_17.pth"
    torch.save(ckpt, path)
    ema_net = NCSNpp(NCSNppConfig(**TINY_NCSNPP)).eval()
    ema_net.load_state_dict(net.state_dict())
    with torch.no_grad():
        for p, s in zip([p for p in ema_net.parameters() if p.requires_grad], shadow):
            p.copy_(s)
    return net, ema_net, path


@pytest.mark.parametrize("use_ema", [True, False])
def test_ncsnpp_matches_raw_network(ncsnpp_ckpt, use_ema):
    net, ema_net, path = ncsnpp_ckpt
    D = load_ncsnpp(path, use_ema=use_ema, **TINY_NCSNPP)
    assert isinstance(D, VEScoreDenoiser)
    assert (D.sigma_min, D.sigma_max, D.data_range) == (0.01, 378.0, (0.0, 1.0))
    assert D.checkpoint_info == {"step": 17, "ema": use_ema}
    raw = ema_net if use_ema else net
    g = torch.Generator().manual_seed(11)
    sig = torch.tensor([0.01, 0.3, 5.0, 378.0])
    x = torch.rand(4, 1, 16, 16, generator=g) + sig[:, None, None, None] * torch.randn(4, 1, 16, 16, generator=g)
    with torch.no_grad():
        score = raw(x, sig)
        ref = x + sig[:, None, None, None] ** 2 * score
        assert rel_err(D(x, sig), ref) < RTOL  # sigma as a (B,) tensor
        for i in range(4):  # sigma as a float; and the score part alone
            out = D(x[i:i + 1], float(sig[i]))
            assert rel_err(out, ref[i:i + 1]) < RTOL
            assert rel_err((out - x[i:i + 1]) / float(sig[i]) ** 2, score[i:i + 1]) < RTOL
        other = ema_net if raw is net else net  # the EMA choice matters: the other weights differ
        assert rel_err(D(x, sig), x + sig[:, None, None, None] ** 2 * other(x, sig)) > 1e-3
        assert torch.equal(D(x, 0.0), x)  # sigma = 0 is the identity
    xg = x.clone().requires_grad_()
    D(xg, sig).square().sum().backward()  # DPS differentiates through the denoiser
    assert torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0


def test_ncsnpp_errors(ncsnpp_ckpt, tmp_path):
    net, _, path = ncsnpp_ckpt
    ckpt = torch.load(path, weights_only=True)
    model = dict(ckpt["model"])
    removed = "module.all_modules.4.Conv_1.weight"
    del model[removed]
    model["module.extra.weight"] = torch.zeros(1)
    torch.save(dict(ckpt, model=model), tmp_path / "bad_keys.pth")
    with pytest.raises(ValueError, match=r"missing keys \['all_modules.4.Conv_1.weight'\].*"
                                         r"unexpected keys \['extra.weight'\]"):
        load_ncsnpp(tmp_path / "bad_keys.pth", use_ema=False, **TINY_NCSNPP)
    short_ema = dict(ckpt["ema"], shadow_params=ckpt["ema"]["shadow_params"][:-1])
    torch.save(dict(ckpt, ema=short_ema), tmp_path / "bad_ema.pth")
    with pytest.raises(ValueError, match="EMA holds"):
        load_ncsnpp(tmp_path / "bad_ema.pth", **TINY_NCSNPP)
    with pytest.raises(ValueError, match="does not match NCSNpp"):  # another configuration
        load_ncsnpp(path, **(TINY_NCSNPP | dict(num_res_blocks=2)), use_ema=False)
    with pytest.raises(FileNotFoundError):
        load_ncsnpp(tmp_path / "nope.pth")
    torch.save({"model": {"w": torch.zeros(1)}, "cfg": ADMConfig()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="refused"):
        load_ncsnpp(tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="progressive"):
        NCSNppConfig(progressive="residual")


def test_ncsnpp_diffusionmbir_layout():
    """DiffusionMBIR's AAPM 256 / fastMRI 320 network, built on the meta device (no memory, no time).

    Reference numbers measured on the original score_sde ``NCSNpp`` with the same configuration:
    521 state-dict entries besides ``sigmas``, 61,433,601 parameters, 520 of them trainable tensors
    (the EMA list), the Gaussian Fourier features ``all_modules.0.W`` (128 values) fixed.
    """
    for name in ("aapm256", "fastmri_knee320"):
        with torch.device("meta"):
            net = NCSNpp(NCSNPP_CONFIGS[name])
        state = net.state_dict()
        assert len(state) == 521
        assert sum(p.numel() for p in net.parameters()) == 61_433_601
        fixed = [n for n, p in net.named_parameters() if not p.requires_grad]
        assert fixed == ["all_modules.0.W"] and state["all_modules.0.W"].shape == (128,)
        assert state["all_modules.1.weight"].shape == (512, 256)  # Linear(2 nf, 4 nf)


# --------------------------------------------------------------------------- shared adapter helpers
def test_config_resolution_is_shared_by_the_loaders(adm_ckpt, ncsnpp_ckpt):
    """``config=`` and single-field overrides go through one resolver: same errors, same text parsing."""
    from invdiff.priors.adapters.adm import ADM_CONFIGS
    from invdiff.priors.adapters.common import resolve_config

    for loader, path, presets, cls in ((load_adm, adm_ckpt[1], "['ffhq256', 'imagenet256']", "ADMConfig"),
                                       (load_ncsnpp, ncsnpp_ckpt[2], "['aapm256', 'fastmri_knee320']", "NCSNppConfig")):
        with pytest.raises(ValueError, match=rf"config: expected one of {re.escape(presets)}, an {cls} or None, "
                                             r"got 'nope'"):
            loader(path, config="nope")
        with pytest.raises(TypeError, match=rf"{cls}: unknown argument\(s\) \['widht'\]"):
            loader(path, widht=3)
    # a preset with overrides; lists and "a,b" text (as in the published YAML configs) become tuples
    cfg = resolve_config("imagenet256", ADM_CONFIGS, ADMConfig, {"attention_resolutions": "16,8", "channel_mult": [1, 2]})
    assert cfg == ADMConfig(num_channels=256, num_res_blocks=2, attention_resolutions=(16, 8), channel_mult=(1.0, 2.0))
    assert NCSNppConfig.from_kwargs(ch_mult="1,2,2", attn_resolutions=[8]) == NCSNppConfig(ch_mult=(1, 2, 2),
                                                                                           attn_resolutions=(8,))
    assert ADMConfig(channel_mult=(1, 2, 2)).pad_multiple == 4 and NCSNPP_CONFIGS["aapm256"].pad_multiple == 8


def test_denoiser_input_checks_are_shared():
    ab = torch.linspace(0.99, 0.01, 10)
    for D in (VPEpsDenoiser(lambda x, t: x, ab), VEScoreDenoiser(lambda x, s: x, 0.01, 10.0)):
        with pytest.raises(TypeError, match="x: expected a torch.Tensor, got list"):
            D([1.0], 0.5)
        with pytest.raises(ValueError, match="sigma: expected non-negative noise levels, got min -0.5"):
            D(torch.zeros(1, 1, 4, 4), -0.5)
    with pytest.raises(TypeError, match=r"score_fn: expected a callable score_fn\(x, sigma\), got int"):
        VEScoreDenoiser(3, 0.01, 10.0)


def test_diffusers_missing_names_the_pip_extra(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "diffusers", None)  # as if not installed
    (tmp_path / "unet").mkdir()
    with pytest.raises(ImportError, match=r"pip install 'invdiff\[diffusers\]'"):
        from invdiff.priors.adapters.diffusers import build_unet

        build_unet(tmp_path / "unet")
