"""priors.load / priors.available: embedded names, invdiff files, dispatch to adapters, safe and strict loading."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from invdiff import priors
from invdiff.priors import EDMDenoiser, UNet, UNetConfig, registry
from invdiff.priors.checkpoint import load_state_dict_strict, read_state_dict


def small_prior(seed=0, name=None):
    torch.manual_seed(seed)
    net = UNet(UNetConfig(channels=(16, 32)))
    with torch.no_grad():  # a freshly built network may zero its output layer; make the output depend on weights
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return EDMDenoiser(net, sigma_max=20.0, data_range=(0.0, 2.0), name=name).eval()


def assert_same_prior(a, b):
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([0.1, 3.0])
    with torch.no_grad():
        torch.testing.assert_close(a(x, sigma), b(x, sigma), rtol=0, atol=0)
    assert (a.sigma_min, a.sigma_max, a.data_range) == (b.sigma_min, b.sigma_max, b.data_range)


def test_invdiff_file_roundtrip(tmp_path):
    prior = small_prior()
    path = prior.save(tmp_path / "tiny.safetensors")
    for loaded in (priors.load(path), priors.load(str(path), arch="invdiff"), priors.load(path.with_suffix(".json"))):
        assert isinstance(loaded, EDMDenoiser)
        assert_same_prior(prior, loaded)
    # a different network gives different outputs (the comparison above can fail)
    with torch.no_grad():
        x = torch.randn(1, 1, 16, 16)
        assert not torch.allclose(small_prior(seed=5)(x, 0.5), priors.load(path)(x, 0.5))


def test_embedded_names(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    assert priors.available() == []
    prior = small_prior(name="tiny")
    prior.save(tmp_path / "tiny.safetensors")
    (tmp_path / "orphan.safetensors").write_bytes(b"")  # no JSON beside it: not a prior
    assert priors.available() == ["tiny"]
    assert_same_prior(prior, priors.load("tiny"))
    with pytest.raises(ValueError, match=r"embedded priors: \['tiny'\]"):
        priors.load("no-such-prior")


def test_shipped_weights_are_listed_with_their_config():
    for name in priors.available():  # whatever is shipped has both files and a readable config
        meta = json.loads((registry.WEIGHTS_DIR / f"{name}.json").read_text())
        assert meta["arch"] == "invdiff" and "unet" in meta


def test_missing_and_unknown(tmp_path):
    with pytest.raises(FileNotFoundError):
        priors.load(tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError):
        priors.load(str(tmp_path / "nope.pt"), arch="adm")
    with pytest.raises(ValueError, match="neither an embedded prior"):
        priors.load("definitely-not-a-prior")
    with pytest.raises(ValueError, match="arch: expected one of"):
        priors.load("definitely-not-a-prior", arch="vqgan")
    torch.save({"w": torch.zeros(2)}, tmp_path / "model.pt")
    with pytest.raises(ValueError, match="arch: cannot tell"):
        priors.load(tmp_path / "model.pt")


def test_dispatch_to_adapters(tmp_path, monkeypatch):
    import invdiff.priors.adapters.adm as adm
    import invdiff.priors.adapters.diffusers as diffusers
    import invdiff.priors.adapters.ncsnpp as ncsnpp

    calls = []
    for module, fn in ((adm, "load_adm"), (ncsnpp, "load_ncsnpp"), (diffusers, "load_diffusers")):
        monkeypatch.setattr(module, fn, lambda path, device, _fn=fn, **kw: calls.append((_fn, path, device, kw)) or _fn)
    ckpt = tmp_path / "ffhq.pt"
    torch.save({"w": torch.zeros(1)}, ckpt)
    assert priors.load(ckpt, arch="adm", config="ffhq256") == "load_adm"
    assert priors.load(ckpt, arch="ncsnpp", device="meta") == "load_ncsnpp"
    (tmp_path / "pipe" / "unet").mkdir(parents=True)
    assert priors.load(tmp_path / "pipe") == "load_diffusers"  # inferred from unet/
    assert calls == [("load_adm", ckpt, "cpu", {"config": "ffhq256"}), ("load_ncsnpp", ckpt, "meta", {}),
                     ("load_diffusers", tmp_path / "pipe", "cpu", {})]


class RunsCode:
    """Unpickling this calls a function (os.getcwd: harmless, but it is code execution)."""

    def __reduce__(self):
        return (os.getcwd, ())


def test_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"net.weight": torch.zeros(2), "payload": RunsCode()}, path)
    with pytest.raises(ValueError, match="refused to load"):
        read_state_dict(path)
    torch.save({"net.weight": torch.zeros(2)}, tmp_path / "plain.pt")
    assert set(read_state_dict(tmp_path / "plain.pt")) == {"net.weight"}


def test_mismatched_state_dict_lists_keys(tmp_path):
    prior = small_prior()
    state = {k: v.clone() for k, v in prior.net.state_dict().items()}
    first = sorted(state)[0]
    renamed = dict(state)
    renamed["renamed." + first] = renamed.pop(first)
    with pytest.raises(ValueError, match="missing keys") as err:
        load_state_dict_strict(UNet(UNetConfig(channels=(16, 32))), renamed)
    assert first in str(err.value) and "unexpected keys" in str(err.value) and "renamed." + first in str(err.value)
    # through priors.load: a saved prior whose weights file lost a key
    path = prior.save(tmp_path / "broken.safetensors")
    weights = load_file(str(path))
    dropped = sorted(weights)[-1]
    del weights[dropped]
    save_file(weights, str(path))
    with pytest.raises(ValueError, match="missing keys") as err:
        priors.load(path)
    assert dropped in str(err.value)


def test_adapter_errors_are_not_rewrapped(tmp_path, monkeypatch):
    """The registry imports its adapters directly: an error raised inside one reaches the caller as it is,
    not as 'adapter not available'."""
    import invdiff.priors.adapters.ncsnpp as ncsnpp

    def broken(path, device, **kw):
        raise ImportError("No module named 'scipy.special' (raised inside the adapter)")

    monkeypatch.setattr(ncsnpp, "load_ncsnpp", broken)
    torch.save({"w": torch.zeros(1)}, tmp_path / "ckpt.pth")
    with pytest.raises(ImportError) as err:
        priors.load(tmp_path / "ckpt.pth", arch="ncsnpp")
    assert str(err.value) == "No module named 'scipy.special' (raised inside the adapter)"
    assert "not available" not in str(err.value)
