"""Shared test setup: a fixed global seed per test and a non-interactive matplotlib backend."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same global torch seed (tests that need randomness pass seeds anyway)."""
    torch.manual_seed(0)
    yield
