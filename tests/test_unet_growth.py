"""UNetConfig.extra_blocks and UNet.load_grown: deepening a trained network without changing what it computes."""

import dataclasses

import data_script
import pytest
import torch

from invdiff import priors
from invdiff.priors.edm import EDMDenoiser
from invdiff.priors.unet import ResBlock, UNet, UNetConfig


def _trained_like(cfg: UNetConfig, seed: int = 0) -> UNet:
    """A network whose zero-initialised output convolutions are filled, so that it computes something non-trivial."""
    torch.manual_seed(seed)
    net = UNet(cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("extra", [1, 2])
def test_grown_network_computes_what_the_small_one_did(dims, extra):
    small_cfg = UNetConfig(channels=(8, 16), dims=dims, emb_dim=16, groups=4)
    small = _trained_like(small_cfg)
    big = UNet(dataclasses.replace(small_cfg, extra_blocks=extra))
    missing = big.load_grown(small.state_dict())
    n_small = sum(p.numel() for p in small.parameters())
    assert sum(p.numel() for p in big.parameters()) > n_small
    new_tensors = set(big.state_dict()) - set(small.state_dict())
    assert missing and set(missing) == new_tensors  # exactly the extra blocks' tensors start fresh
    x = torch.randn((2, 1) + (8,) * dims)
    c = torch.tensor([-0.5, 0.3])
    with torch.no_grad():
        torch.testing.assert_close(big(x, c), small(x, c), rtol=0, atol=1e-6)
        # once the new blocks move away from the identity, the output changes: they are in the computation
        for name, p in big.named_parameters():
            if name in missing and name.endswith("conv2.weight"):
                p.add_(0.05 * torch.randn_like(p))
        assert (big(x, c) - small(x, c)).abs().max() > 1e-3


def test_extra_blocks_are_identity_residuals_and_counted():
    cfg = UNetConfig(channels=(8, 16, 24), emb_dim=16, groups=4, extra_blocks=1)
    net = UNet(cfg)
    # 3 encoder levels + 3 decoder levels + the middle gain one block each
    assert sum(isinstance(b, ResBlock) and b.identity for b in net.modules()) == 7
    with pytest.raises(ValueError, match="identity=True needs c_in == c_out"):
        ResBlock(8, 16, 16, 2, 4, 0.0, identity=True)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="extra_blocks must be an int >= 0"):
            UNetConfig(extra_blocks=bad)


def test_load_grown_refuses_other_networks():
    big = UNet(UNetConfig(channels=(8, 16), emb_dim=16, groups=4, extra_blocks=1))
    with pytest.raises(ValueError, match="shape mismatches"):
        big.load_grown(UNet(UNetConfig(channels=(8, 24), emb_dim=16, groups=4)).state_dict())
    bigger = UNet(UNetConfig(channels=(8, 16), emb_dim=16, groups=4, extra_blocks=2))
    with pytest.raises(ValueError, match="unexpected keys"):
        big.load_grown(bigger.state_dict())  # shrinking is not growing
    state = UNet(UNetConfig(channels=(8, 16), emb_dim=16, groups=4)).state_dict()
    del state["conv_in.weight"]
    with pytest.raises(ValueError, match=r"\['conv_in.weight'\] are missing and are not part of an extra block"):
        big.load_grown(state)


def test_grown_prior_saves_and_loads_with_its_config(tmp_path):
    cfg = UNetConfig(channels=(8, 16), emb_dim=16, groups=4, extra_blocks=1)
    D = EDMDenoiser(_trained_like(cfg), name="grown")
    D.save(tmp_path / "g.safetensors")
    E = priors.load(tmp_path / "g.safetensors")
    assert E.net.config.extra_blocks == 1
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(E(x, 0.2), D(x, 0.2))


def test_train_script_grows_an_init_prior(tmp_path):
    """--init from a smaller prior with --extra-blocks: the first export equals the init when the LR is 0."""
    t = data_script.load("train_prior")
    small = EDMDenoiser(_trained_like(UNetConfig(channels=(8, 16))), name="small")
    small.save(tmp_path / "small.safetensors")
    out = tmp_path / "grown.safetensors"
    common = ["--channels", "8,16", "--batch", "2", "--size", "16", "--threads", "1", "--device", "cpu",
              "--init", str(tmp_path / "small.safetensors"), "--out", str(out)]
    t.main(common + ["--extra-blocks", "1", "--run-dir", str(tmp_path / "run"), "--max-steps", "1", "--lr", "0"])
    grown = priors.load(out)
    assert grown.net.config.extra_blocks == 1
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(grown(x, 0.2), small(x, 0.2), rtol=0, atol=1e-6)
    with pytest.raises(SystemExit, match="only a smaller extra_blocks may differ"):
        t.main(common + ["--channels", "8,24", "--run-dir", str(tmp_path / "run2"), "--max-steps", "1"])
