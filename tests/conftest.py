"""Shared test setup: deterministic seeds, few threads (the CI machine has 2 cores), data-path fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "cifar10-train-jpeg.tar.gz"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def cifar_tarball() -> Path:
    """The full CIFAR-10 JPEG archive in ../shared/data; skips when it is absent."""
    if not SHARED_DATA.exists():
        pytest.skip(f"CIFAR-10 archive not found at {SHARED_DATA}")
    return SHARED_DATA
