"""prune_to_budget with PruneConfig(latency_table=...): the table's prediction is the latency cost."""

from __future__ import annotations

import pytest
import torch

import lightnn
import lightnn.compress.stages as stages
from lightnn.compress.stages import PruneConfig, prune_to_budget
from lightnn.errors import LightnnError
from lightnn.profile import LatencyResult, LatencyTable, build_table, load_table, predict_latency


def _synthetic_time(self, module, input_size, runs=None):
    """A deterministic stand-in for a timing: 0.01 ms + 1 ms per 10k parameters (the search must not be flaky)."""
    ms = 0.01 + sum(p.numel() for p in module.parameters()) / 1e4
    n = int(runs or self.settings["runs"])
    return LatencyResult(backend=self.backend, input_size=(self.batch, *input_size), threads=self.threads,
                         channels_last=False, warmup=0, samples_ms=[ms] * n)


@pytest.fixture
def r20_table(tmp_path, monkeypatch):
    monkeypatch.setattr(LatencyTable, "_time", _synthetic_time)
    torch.manual_seed(0)
    model = lightnn.create_model("resnet20", num_classes=10, width=8).eval()
    path = tmp_path / "eager-b1.json"
    table = LatencyTable.create("eager", threads=1, batch=1, path=path, warmup=1, runs=3, retries=0)
    build_table(table, [("r20w8", model, (3, 32, 32))])
    return model, path


def test_latency_budget_from_a_table(r20_table, monkeypatch):
    model, path = r20_table

    def no_measuring(*a, **k):
        raise AssertionError("the deployment measurement must not be used when a latency table is given")

    monkeypatch.setattr(stages, "deployment_latency", no_measuring)
    cfg = PruneConfig(target_latency=0.6, plan="uniform", round_to=4, search_steps=3, latency_table=path)
    pruned, rep = prune_to_budget(model, cfg)
    assert str(path) in rep["latency_backend"] and rep["config"]["latency_table"] == str(path)
    table = load_table(path)  # the pruned widths' units were measured on demand and added to the file
    before = predict_latency(model, (3, 32, 32), table, measure_missing=False).total_ms
    after = predict_latency(pruned, (3, 32, 32), table, measure_missing=False).total_ms
    assert after <= 0.6 * before
    assert rep["plan"]["cost"] == pytest.approx(after / before, rel=1e-9)


def test_latency_table_must_match_the_batch_and_be_a_path(r20_table):
    model, path = r20_table
    cfg = PruneConfig(target_latency=0.7, plan="uniform", latency_batch=8, latency_table=path)
    with pytest.raises(LightnnError, match=r"latency_table .* measured at batch 1, but latency_batch is 8"):
        prune_to_budget(model, cfg)
    with pytest.raises(LightnnError, match="latency_table must be a path"):
        PruneConfig(target_latency=0.7, plan="uniform", latency_table=3)
