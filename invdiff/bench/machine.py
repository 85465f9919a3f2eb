"""The benchmark's prior and the machine it runs on: what RESULTS.md reports under "Setup"."""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import os
import platform
from pathlib import Path

import torch

DEFAULT_PRIOR = "phantom-ct-64"


def load_prior(spec: str = DEFAULT_PRIOR, device: str = "cpu") -> torch.nn.Module:
    """The benchmark prior: ``invdiff.priors.load(spec)`` if available, else the shipped weights file."""
    from invdiff import priors

    if hasattr(priors, "load"):
        return priors.load(spec, device=device).eval()
    path = Path(spec)
    if not path.exists():
        path = Path(priors.__file__).parent / "weights" / f"{spec}.safetensors"
    return priors.EDMDenoiser.from_file(path).to(device).eval()


def prior_meta(prior) -> dict:
    """The shipped prior's JSON metadata (train steps, ...) when the prior has a name."""
    from invdiff import priors

    name = getattr(prior, "name", None)
    if not name:
        return {}
    path = Path(priors.__file__).parent / "weights" / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _version(module: str) -> str:
    try:
        return str(importlib.import_module(module).__version__)
    except Exception:  # noqa: BLE001 - a missing optional package is reported as such
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device: str) -> dict:
    """Platform, CPU, thread counts and package versions."""
    import invdiff

    info = {
        "date (UTC)": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": f"{_cpu_model()} ({os.cpu_count()} logical cores; torch threads {torch.get_num_threads()})",
        "device": device if not device.startswith("cuda") else f"{device} ({torch.cuda.get_device_name(device)})",
        "torch": torch.__version__,
        "deepinv": _version("deepinv"),
        "invdiff": invdiff.__version__,
        "astra-toolbox": _version("astra"),
        "numpy": _version("numpy"),
    }
    try:
        import subprocess

        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(invdiff.__file__).parent)
        if rev.returncode == 0:
            info["invdiff git commit"] = rev.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info
