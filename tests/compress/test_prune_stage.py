"""lightnn.compress.stages: prune_to_budget and its configs, called directly on a small zoo model with tiny images
made here; budgets are checked against costs recomputed on the returned model (MACs, or an injected latency)."""

from __future__ import annotations

import pytest
import torch

import lightnn
from lightnn.checkpoint import load_model, save_checkpoint
from lightnn.compress.depth import rank_blocks
from lightnn.compress.sensitivity import count_macs
from lightnn.compress.stages import LowRankConfig, PruneConfig, SensitivityConfig, prune_to_budget, lowrank_stage
from lightnn.data import ImageData
from lightnn.errors import LightnnError
from lightnn.models import model_normalization, record_of


def _images(n: int, seed: int) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    return ImageData(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                     torch.arange(n) % 10, [str(c) for c in range(10)], "tiny", "train")


@pytest.fixture(scope="module")
def data():
    return _images(32, 0), _images(16, 1)


def _r20():
    """ResNet-20 at half width (8/16/32 channels): the same graph as the zoo's, a quarter of its MACs."""
    torch.manual_seed(0)
    model = lightnn.create_model("resnet20", num_classes=10, width=8)
    with torch.no_grad():  # trained-looking BN statistics, so channels differ in importance
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.2, 1.0)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _params(m) -> float:
    return float(sum(p.numel() for p in m.parameters()))


def test_uniform_macs_budget_without_data():
    model = _r20()
    x = torch.randn(1, 3, 32, 32)
    pruned, rep = prune_to_budget(model, PruneConfig(target_macs=0.5, plan="uniform", search_steps=4,
                                                           round_to=4))
    m0, m1 = count_macs(model, x), count_macs(pruned, x)
    assert m1 <= 0.5 * m0 and rep["macs"] == {"before": m0, "after": m1}
    plan = rep["plan"]
    assert plan["kind"] == "uniform" and plan["cost"] == pytest.approx(m1 / m0)
    # the trace: ratio 0.95 first (feasible), then 4 bisection steps; the chosen ratio is the smallest feasible tried
    assert len(plan["search"]) == 5 and plan["search"][0]["ratio"] == 0.95
    assert plan["ratio"] == min(t["ratio"] for t in plan["search"] if t["feasible"])
    assert all(t["feasible"] == (t["cost"] <= 0.5) for t in plan["search"])
    assert rep["verify_max_diff"] < 1e-4 and "top1" not in rep and "finetune" not in rep
    assert count_macs(model, x) == m0  # the input model is left as it was
    assert record_of(pruned).transforms[-1]["kind"] == "channels"


def test_sensitivity_plan_meets_the_macs_budget_and_round_trips(data, tmp_path):
    train, val = data
    model = _r20()
    # the first stage's layers stay (fewer groups to analyse keeps the test fast): their channels are untouched
    cfg = PruneConfig(target_macs=0.8, ratios=(0.5,), exclude=("features.1.*",), round_to=4, search_steps=4,
                      device="cpu")
    pruned, rep = prune_to_budget(model, cfg, train, val)
    x = torch.randn(1, 3, 32, 32)
    assert count_macs(pruned, x) <= 0.8 * count_macs(model, x)
    assert all(not g.startswith(("features.0", "features.1")) for g in rep["sensitivity"]["groups"])
    assert pruned.features[1][0].conv1.conv.out_channels == 8
    assert set(rep["plan"]["ratios"]) <= set(rep["sensitivity"]["groups"]) and rep["plan"]["ratios"]
    assert rep["plan"]["budget"] == {"macs": 0.8} and len(rep["plan"]["search"]) == 5
    assert set(rep["top1"]) == {"before", "pruned"}
    assert model_normalization(pruned)["mean"] == pytest.approx(train.channel_stats()[0])
    back = load_model(save_checkpoint(tmp_path / "p.pt", pruned)).eval()
    with torch.no_grad():
        assert torch.equal(back(x), pruned.eval()(x))


@pytest.mark.parametrize("plan", ["uniform", pytest.param("sensitivity", marks=pytest.mark.slow)])
def test_latency_budget_with_an_injected_latency(data, plan):
    train, val = data
    model = _r20()
    calls = []

    def fake_ms(m):  # a deterministic stand-in for a measured latency: proportional to the parameter count
        calls.append(1)
        return _params(m) / 1e4

    cfg = PruneConfig(target_latency=0.7, plan=plan, ratios=(0.5, 0.75), round_to=4, search_steps=3, device="cpu")
    pruned, rep = prune_to_budget(model, cfg, train if plan == "sensitivity" else None,
                                  val if plan == "sensitivity" else None, latency=fake_ms)
    assert fake_ms(pruned) <= 0.7 * fake_ms(model)
    assert rep["latency_backend"] == "caller-supplied" and rep["plan"]["budget"] == {"latency": 0.7}
    assert calls and len(rep["plan"]["search"]) == 4


@pytest.mark.slow
def test_blocks_ranked_by_injected_latency_then_fine_tuned(data, fit_spy):
    train, val = data
    model = _r20()
    seen = fit_spy  # what reaches the trainer: its config and callbacks
    cfg = PruneConfig(ratio=0.25, remove_blocks=1, rank_blocks="latency", round_to=4, finetune_epochs=1, lr=0.02,
                      distill=True, kd_weight=0.3, batch_size=16, schedule="onecycle", seed=3, device="cpu")
    pruned, rep = prune_to_budget(model, cfg, train, val, latency=lambda m: _params(m) / 1e4)
    b = rep["blocks"]
    assert len(b["top1_removed_alone"]) == 7 and b["latency_backend"] == "caller-supplied"
    order = rank_blocks(b["top1_removed_alone"], baseline=rep["top1"]["before"], latency_removed=b["ms_removed_alone"],
                        baseline_latency=b["ms"])
    assert b["removed"] == order[:1]
    assert [t["kind"] for t in record_of(pruned).transforms] == ["blocks", "channels"]
    assert set(rep["top1"]) == {"before", "blocks_removed", "pruned", "finetuned"}
    assert rep["finetune"] == {"epochs": 1, "distill": True, "lr": 0.02, "weight_decay": 5e-4, "label_smoothing": 0.0,
                               "kd_weight": 0.3}
    assert len(seen["teacher"]) == 1 and seen["kd_weight"] == [0.3] and seen["schedule"] == "onecycle"
    assert seen["seed"] == 3 and seen["batch_size"] == 16 and rep["finetune_final"]["val_top1"] >= 0.0


@pytest.mark.parametrize("kw,msg", [
    (dict(target_macs=1.5), r"target_macs must be a fraction in \(0, 1\)"),
    (dict(target_macs=0.5, ratio=0.3), "exactly one of target_macs, target_latency, ratio"),
    (dict(), "exactly one of"),
    (dict(ratio=0.3, plan="greedy"), "plan must be one of"),
    (dict(ratio=0.3, criterion="l3"), "criterion must be one of"),
    (dict(ratio=0.3, round_to="fast"), "round_to"),
    (dict(ratio=0.3, ratios="0.5,x"), "ratios must be comma-separated"),
    (dict(ratio=0.3, ratios=(0.5, 1.2)), r"ratios must be a fraction in \(0, 1\)"),
    (dict(ratio=0.3, remove_blocks=-1), "remove_blocks must be an integer >= 0"),
    (dict(ratio=0.3, latency_batch=0), "latency_batch must be an integer >= 1"),
    (dict(ratio=0.3, kd_weight=2.0), r"kd_weight must be in \[0, 1\]"),
    (dict(ratio=0.3, lr=0.0), "lr must be > 0"),
])
def test_bad_config_names_the_field(kw, msg):
    with pytest.raises(LightnnError, match=msg):
        PruneConfig(**kw)


def test_config_parsing_and_data_needs():
    cfg = PruneConfig.from_dict({"target_macs": 0.5, "ratios": "0.3,0.6", "round_to": "16", "exclude": "fc"})
    assert cfg.ratios == (0.3, 0.6) and cfg.round_to == 16 and cfg.exclude == ("fc",)
    assert set(cfg.data_needs()) == {"val"}
    assert PruneConfig(ratio=0.3).data_needs() == {} and PruneConfig(target_macs=0.5, plan="uniform").data_needs() == {}
    assert set(PruneConfig(ratio=0.3, finetune_epochs=1).data_needs()) == {"train", "val"}
    with pytest.raises(LightnnError, match=r"unknown PruneConfig key\(s\) \['target'\]"):
        PruneConfig.from_dict({"target": 0.5})
    with pytest.raises(LightnnError, match="val data is required: a sensitivity-planned budget"):
        prune_to_budget(_r20(), PruneConfig(target_macs=0.5))
    assert SensitivityConfig(eval_limit=None).eval_limit is None


def test_lowrank_stage():
    model = _r20()
    model, rep = lowrank_stage(model, LowRankConfig(energy=0.9, exclude=["fc"]))
    assert rep["params_after"] < rep["params_before"] and "fc" not in rep["spec"]["ranks"]
    assert record_of(model).transforms[-1]["kind"] == "lowrank"
    with pytest.raises(LightnnError, match="exactly one of rank / energy"):
        LowRankConfig()
    with pytest.raises(LightnnError, match=r"energy must be in \(0, 1\]"):
        LowRankConfig(energy=1.5)
