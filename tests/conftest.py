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


@pytest.fixture
def fit_spy(monkeypatch) -> dict:
    """Records what reaches ``lightnn.train.fit`` (its config fields, the Distillation callbacks' teacher and
    weight) and then trains as usual; the returned dict fills in when a stage calls the trainer."""
    import lightnn.train
    from lightnn.train import Distillation

    seen: dict = {}
    real_fit = lightnn.train.fit

    def spy(model, train, val, config, **kw):
        distill = [c for c in kw.get("callbacks", ()) if isinstance(c, Distillation)]
        seen.update(config.to_dict(), teacher=[c.teacher for c in distill], kd_weight=[c.weight for c in distill])
        return real_fit(model, train, val, config, **kw)

    monkeypatch.setattr(lightnn.train, "fit", spy)
    return seen
