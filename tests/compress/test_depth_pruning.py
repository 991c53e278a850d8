"""Depth pruning (lightnn.compress.depth): which blocks are removable, removal equals a zeroed residual branch,
the edit survives a checkpoint round trip, and channel pruning composes with it."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import lightnn
from lightnn.checkpoint import load_model, save_checkpoint
from lightnn.compress import (block_sensitivity, prune_channels, rank_blocks, removable_blocks, remove_blocks,
                              verify_shrink)
from lightnn.compress.sensitivity import count_macs
from lightnn.errors import LightnnError
from lightnn.models import record_of

X = torch.randn(2, 3, 32, 32)


def _net(name: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    m = lightnn.create_model(name, num_classes=10, **kw).eval()
    for mod in m.modules():  # non-trivial BN statistics so eval-mode outputs are not degenerate
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
    return m


def test_resnet20_identity_blocks_are_the_removable_ones():
    m = _net("resnet20")
    # stage 1: all three blocks keep 16 channels at 32x32; stages 2 and 3 start with a strided option-A shortcut
    assert removable_blocks(m, X) == ["features.1.0", "features.1.1", "features.1.2", "features.2.1", "features.2.2",
                                      "features.3.1", "features.3.2"]


def test_option_b_projection_blocks_are_not_removable():
    m = _net("resnet20", shortcut="B")
    assert "features.2.0" not in removable_blocks(m, X)


def test_removing_a_block_equals_zeroing_its_residual_branch():
    m = _net("resnet20")
    name = "features.2.1"
    zeroed = _net("resnet20")
    bn = zeroed.get_submodule(name).conv2.bn  # the branch ends in BN: gamma = beta = 0 makes f(x) == 0
    nn.init.zeros_(bn.weight)
    nn.init.zeros_(bn.bias)
    removed = remove_blocks(m, [name], X)
    assert isinstance(removed.get_submodule(name), nn.Identity)
    assert not isinstance(m.get_submodule(name), nn.Identity)  # the input model is left alone
    with torch.no_grad():
        torch.testing.assert_close(removed(X), zeroed(X), rtol=0, atol=1e-6)
    assert count_macs(removed, X[:1]) < count_macs(m, X[:1])


def test_mobilenet_v2_residual_units_are_found_and_removed():
    m = _net("mobilenet_v2_cifar", width_mult=0.5)
    blocks = removable_blocks(m, X)
    assert blocks, "MobileNet V2 has identity-shortcut inverted residuals"
    for b in blocks:
        assert type(m.get_submodule(b)).__name__ == "InvertedResidual"
    out = remove_blocks(m, blocks[:2], X)
    with torch.no_grad():
        assert out(X).shape == (2, 10)


def test_user_model_blocks_are_found():
    class Res(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.f = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c))

        def forward(self, x):
            return torch.relu(x + self.f(x))

    class Scaled(Res):
        def forward(self, x):
            return x * 2 + self.f(x)  # the shortcut is not the identity

    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), Res(8), Scaled(8), nn.Flatten(), nn.LazyLinear(4))
    net(X)
    assert removable_blocks(net, X) == ["2"]


def test_unremovable_name_gets_a_clear_error():
    m = _net("resnet20")
    with pytest.raises(LightnnError, match=r"features\.2\.0"):
        remove_blocks(m, ["features.2.0"], X)
    with pytest.raises(LightnnError, match="no such submodule"):
        remove_blocks(m, ["features.9"])


def test_block_sensitivity_leaves_the_model_unchanged():
    m = _net("resnet20")
    with torch.no_grad():
        ref = m(X)
    scores = block_sensitivity(m, ["features.1.0", "features.3.2"], lambda mm: float(mm(X).detach().abs().sum()))
    assert set(scores) == {"features.1.0", "features.3.2"} and scores["features.1.0"] != scores["features.3.2"]
    with torch.no_grad():
        torch.testing.assert_close(m(X), ref, rtol=0, atol=0)


def test_blocks_then_channels_round_trip_through_a_checkpoint(tmp_path):
    m = _net("resnet20")
    shallow = remove_blocks(m, ["features.1.2", "features.3.1"], X)
    pruned = prune_channels(shallow, X[:1], 0.3)
    assert verify_shrink(shallow, pruned, X[:1]) < 1e-4
    assert [t["kind"] for t in record_of(pruned).transforms] == ["blocks", "channels"]
    save_checkpoint(tmp_path / "p.pt", pruned)
    back = load_model(tmp_path / "p.pt").eval()
    with torch.no_grad():
        torch.testing.assert_close(back(X), pruned.eval()(X), rtol=0, atol=0)
    assert isinstance(back.get_submodule("features.1.2"), nn.Identity)


def test_rank_blocks_by_accuracy_or_by_accuracy_per_ms_saved():
    top1 = {"a": 80.0, "b": 85.0, "c": 84.0, "d": 86.0}  # removed alone; the full model has 86.5
    assert rank_blocks(top1) == ["d", "b", "c", "a"]
    ms = {"a": 10.0, "b": 19.0, "c": 16.0, "d": 20.0}  # the full model takes 20 ms
    # lost per ms saved: a 6.5/10 = 0.65, b 1.5/1 = 1.5, c 2.5/4 = 0.625; d saves nothing and goes last
    assert rank_blocks(top1, baseline=86.5, latency_removed=ms, baseline_latency=20.0) == ["c", "a", "b", "d"]
    with pytest.raises(LightnnError, match="no latency measured for block"):
        rank_blocks(top1, baseline=86.5, latency_removed={"a": 1.0}, baseline_latency=20.0)
    with pytest.raises(LightnnError, match="needs the full model's score and latency"):
        rank_blocks(top1, latency_removed=ms)


@pytest.mark.slow
def test_cli_blocks_ranked_by_latency_under_a_latency_budget(tmp_path, capsys, monkeypatch):
    import json

    import lightnn
    from lightnn.cli import main
    from lightnn.compress import stages

    # the deployment latency is replaced by a deterministic one (multiply-adds at the latency batch, in millions),
    # so what is checked is the rule (rank by accuracy lost per ms saved, meet the budget), not this CPU's timings
    def fake_latency(input_size, batch=1, runs=20):
        return (lambda m: lightnn.profile(m.cpu().eval(), (batch, *input_size)).macs / 1e6), "fake-macs"

    monkeypatch.setattr(stages, "deployment_latency", fake_latency)
    ck = save_checkpoint(tmp_path / "r20.pt", _net("resnet20"))
    out = tmp_path / "lat"
    assert main(["compress", str(ck), "--method", "channels", "--remove-blocks", "1", "--rank-blocks", "latency",
                 "--latency-batch", "4", "--target-latency", "0.8", "--data", "sample", "--eval-limit", "32",
                 "--ratios", "0.5", "--output", str(out), "--json", "--device", "cpu"]) == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    blocks = rep["blocks"]
    assert blocks["rank"] == "latency" and blocks["latency_batch"] == 4 and len(blocks["ms_removed_alone"]) == 7
    order = rank_blocks(blocks["top1_removed_alone"], baseline=rep["top1"]["before"],
                        latency_removed=blocks["ms_removed_alone"], baseline_latency=blocks["ms"])
    assert blocks["removed"] == order[:1]
    assert [t["kind"] for t in record_of(load_model(out / "model.pt")).transforms] == ["blocks", "channels"]


@pytest.mark.slow
def test_cli_remove_blocks_then_target_macs(tmp_path, capsys):
    import json

    from lightnn.cli import main

    ck = save_checkpoint(tmp_path / "r20.pt", _net("resnet20"))
    out = tmp_path / "deep"
    assert main(["compress", str(ck), "--method", "channels", "--remove-blocks", "2", "--target-macs", "0.5",
                 "--data", "sample", "--eval-limit", "64", "--ratios", "0.5,0.75", "--output", str(out), "--json",
                 "--device", "cpu"]) == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(rep["blocks"]["removed"]) == 2 and len(rep["blocks"]["top1_removed_alone"]) == 7
    # the budget is relative to the input model, blocks included
    assert rep["macs"]["after"] <= 0.5 * rep["macs"]["before"]
    back = load_model(out / "model.pt")
    assert [t["kind"] for t in record_of(back).transforms] == ["blocks", "channels"]
    assert main(["compress", str(ck), "--method", "channels", "--remove-blocks", "8", "--ratio", "0.3",
                 "--data", "sample", "--output", str(out)]) == 2
    assert "only 7 removable" in capsys.readouterr().err
