"""Structured channel pruning: shrunk == masked oracle on hand-built nets and every zoo model, MACs go down,
checkpoints rebuild from the "channels" transform, unsupported ops are named, criteria and the budget plan work."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import lightnn
from lightnn.checkpoint import load_model, save_checkpoint
from lightnn.compress.channel import (build_dependency_graph, mask_model, prune_channels, round_keep,
                                      verify_shrink)
from lightnn.compress.importance import CRITERIA
from lightnn.compress.sensitivity import count_macs, plan_ratios, sensitivity_analysis
from lightnn.errors import LightnnError, UnsupportedOpError
from lightnn.ops import ChannelPermute, ChannelShuffle, ChannelSplit, ConvBNAct, SqueezeExcite
from lightnn.models import record_of


def _randomize(m: nn.Module) -> nn.Module:
    """Non-trivial BN statistics and affine terms, so a wrong channel index shows up in the outputs."""
    g = torch.Generator().manual_seed(1)
    for mod in m.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            n = mod.num_features
            mod.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            if mod.affine:
                mod.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
                mod.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return m.eval()


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBNAct(3, 16)
        self.a = ConvBNAct(16, 32)
        self.b = ConvBNAct(32, 16, act=None)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        x = F.relu(x + self.b(self.a(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Concat(nn.Module):  # Inception-style: offsets into a concatenation, flatten of a 2x2 map into the linear
    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBNAct(3, 16)
        self.b1 = ConvBNAct(16, 16, 1)
        self.b2 = nn.Sequential(ConvBNAct(16, 24, (1, 3)), ConvBNAct(24, 24, (3, 1)))
        self.pool = ConvBNAct(16, 8, 1)
        self.fc = nn.Linear(48 * 4, 10)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([self.b1(x), self.b2(x), self.pool(F.avg_pool2d(x, 3, 1, 1))], 1)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 2), 1))


class ShuffleUnit(nn.Module):  # ShuffleNet V2 unit: split -> branch -> concat -> shuffle, twice
    def __init__(self, c: int) -> None:
        super().__init__()
        self.split = ChannelSplit(c // 2)
        self.branch = nn.Sequential(ConvBNAct(c // 2, c // 2, 1), ConvBNAct(c // 2, c // 2, groups=c // 2, act=None),
                                    ConvBNAct(c // 2, c // 2, 1))
        self.shuffle = ChannelShuffle(2)

    def forward(self, x):
        a, b = self.split(x)
        return self.shuffle(torch.cat([a, self.branch(b)], 1))


class Shuffle(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBNAct(3, 32)
        self.units = nn.Sequential(ShuffleUnit(32), ShuffleUnit(32))
        self.head = ConvBNAct(32, 64, 1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.head(self.units(self.stem(x)))
        return self.fc(x.mean((2, 3)))


class GroupSE(nn.Module):  # IGC-style group conv + permutation + depthwise + SE
    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBNAct(3, 32)
        self.g1 = ConvBNAct(32, 64, 1, groups=2)
        self.perm = ChannelPermute(ChannelShuffle(2).permutation(64))
        self.dw = ConvBNAct(64, 64, groups=64)
        self.se = SqueezeExcite(64, 16)
        self.g2 = ConvBNAct(64, 32, 1, groups=2, act=None)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.g2(self.se(self.dw(self.perm(self.g1(x)))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


SMALL = [Residual, Concat, Shuffle, GroupSE]


@pytest.mark.parametrize("cls", SMALL, ids=lambda c: c.__name__)
def test_small_nets_shrunk_equals_masked(cls):
    model = _randomize(cls()).double()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    pruned = prune_channels(model, x, 0.4, round_to=1)
    assert verify_shrink(model, pruned, x, atol=1e-9, rtol=1e-9) < 1e-8
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    assert count_macs(pruned, x) < 0.8 * count_macs(model, x)
    pruned.train()
    pruned(x).sum().backward()  # still trainable


def test_masked_oracle_detects_a_wrong_weight():
    model = _randomize(Residual()).double()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    pruned = prune_channels(model, x, 0.5, round_to=1)
    spec = record_of(pruned).transforms[-1]
    pruned.a.conv.weight.data[0, 0] += 1.0
    with pytest.raises(LightnnError, match="differs from the masked"):
        verify_shrink(model, pruned, x, spec=spec)


def test_masking_changes_outputs():  # the oracle is not trivially the original model
    model = _randomize(Residual())
    x = torch.randn(2, 3, 16, 16)
    pruned = prune_channels(model, x, 0.5, round_to=1)
    with torch.no_grad():
        assert not torch.allclose(model(x), mask_model(model, record_of(pruned).transforms[-1])(x))


def test_groups_residual_concat_shuffle():
    x = torch.randn(1, 3, 16, 16)
    g = build_dependency_graph(Residual(), x)
    trunk = next(gr for gr in g.groups if "b.conv" in gr.layers() and "stem.conv" in gr.layers())
    assert {"stem.conv", "b.conv", "fc"} <= set(trunk.layers()) and trunk.prunable
    assert any(gr.layers() == ["a.bn", "a.conv", "b.conv"] for gr in g.groups)
    assert not g.group("fc").prunable  # logits reach the output
    # the shuffle couples channel j of both concatenated halves: the branch output j goes with passthrough j
    gs = build_dependency_graph(Shuffle(), x)
    br = next(gr for gr in gs.groups if ("units.0.branch.2.conv", "out") in gr.members)
    assert ("stem.conv", "out") in br.members and br.prunable
    # depthwise + group conv: in and out pruned together, per-group counts equal
    gg = build_dependency_graph(GroupSE(), x)
    inner = next(gr for gr in gg.groups if ("dw.conv", "out") in gr.members)
    assert inner.members[("g1.conv", "out")].shape[1] % 2 == 0


def test_round_to_multiples():
    x = torch.randn(1, 3, 16, 16)
    model = Residual()
    g = build_dependency_graph(model, x)
    inner = next(gr for gr in g.groups if gr.layers() == ["a.bn", "a.conv", "b.conv"])
    assert round_keep(inner, 32 * 0.7, 8) == 24 and round_keep(inner, 2, 8) == 8
    pruned = prune_channels(model, x, 0.3)
    assert pruned.a.conv.out_channels == 24 and pruned.stem.conv.out_channels % 8 == 0


@pytest.mark.parametrize("criterion", sorted(CRITERIA))
def test_criteria(criterion):
    model = _randomize(GroupSE())
    x = torch.randn(4, 3, 16, 16)
    data = [(x, torch.randint(0, 10, (4,)))]
    pruned = prune_channels(model, x, 0.5, criterion=criterion, data=data, round_to=1)
    verify_shrink(model, pruned, x)


def test_l1_keeps_the_largest_filters():
    model = Residual().eval()
    with torch.no_grad():
        model.a.conv.weight[5] *= 100
        model.a.conv.weight[7] *= 0.0
    pruned = prune_channels(model, torch.randn(1, 3, 8, 8), {"a.conv": 0.5}, round_to=1)
    kept = record_of(pruned).transforms[-1]["layers"]["a.conv"]["out"]
    assert 5 in kept and 7 not in kept and len(kept) == 16


def test_taylor_needs_data():
    with pytest.raises(LightnnError, match="taylor"):
        prune_channels(Residual(), torch.randn(1, 3, 8, 8), 0.3, criterion="taylor")


def test_global_scope():
    model = _randomize(Concat())
    x = torch.randn(1, 3, 16, 16)
    pruned = prune_channels(model, x, 0.4, scope="global", round_to=1)
    verify_shrink(model, pruned, x)
    assert count_macs(pruned, x) < count_macs(model, x)


class CustomOp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBNAct(3, 16)
        self.mid = ConvBNAct(16, 16)
        self.tail = ConvBNAct(16, 32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.mid(self.stem(x))
        x = torch.roll(x, 1, dims=1)  # an op the analysis cannot map
        return self.fc(self.tail(x).mean((2, 3)))


def test_unsupported_op_is_named_and_rest_still_prunes():
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(UnsupportedOpError, match=r"roll.*<top>|roll"):
        build_dependency_graph(CustomOp(), x)
    model = _randomize(CustomOp())
    g = build_dependency_graph(model, x, on_unsupported="exclude")
    assert any("roll" in msg for msg in g.unsupported)
    assert not next(gr for gr in g.groups if "mid.conv" in gr.layers() and ("mid.conv", "out") in gr.members).prunable
    pruned = prune_channels(model, x, 0.5, round_to=1, on_unsupported="exclude")
    assert pruned.tail.conv.out_channels == 16 and pruned.mid.conv.out_channels == 16
    verify_shrink(model, pruned, x)


def test_unsupported_layer_path_in_message():
    class Inner(nn.Module):
        def forward(self, x):
            return torch.roll(x, 1, dims=1)

    class Net(CustomOp):
        def __init__(self):
            super().__init__()
            self.weird = Inner()

        def forward(self, x):
            return self.fc(self.tail(self.weird(self.mid(self.stem(x)))).mean((2, 3)))

    with pytest.raises(UnsupportedOpError, match="roll at layer 'weird'"):
        build_dependency_graph(Net(), torch.randn(1, 3, 8, 8))


def test_exclude_layers():  # every channel an excluded layer touches stays; the rest is pruned
    pruned = prune_channels(Concat(), torch.randn(1, 3, 8, 8), 0.5, round_to=1, exclude=["b1.*"])
    assert pruned.b1.conv.out_channels == 16 and pruned.stem.conv.out_channels == 16
    assert pruned.b2[0].conv.out_channels == 12 and pruned.pool.conv.out_channels == 4


def test_bad_ratio():
    with pytest.raises(LightnnError, match="ratio"):
        prune_channels(Residual(), torch.randn(1, 3, 8, 8), 1.0)
    with pytest.raises(LightnnError, match="unknown"):
        prune_channels(Residual(), torch.randn(1, 3, 8, 8), {"nope": 0.5})


@pytest.mark.parametrize("name", ["resnet20", "shufflenet_v2_x0_5", "igcv1_cifar_l4m8", "mobilenet_v3_small_cifar"])
def test_checkpoint_round_trip(tmp_path, name):
    model = _randomize(lightnn.create_model(name, num_classes=10))
    x = torch.randn(2, *lightnn.model_info(name).test_input_size)
    pruned = prune_channels(model, x, 0.3)
    path = save_checkpoint(tmp_path / "p.pt", pruned)
    ckpt = torch.load(path, weights_only=True)  # plain data, no pickled modules
    assert ckpt["transforms"][-1]["kind"] == "channels"
    again = lightnn.create_model(name, num_classes=10, checkpoint=str(path)).eval()
    with torch.no_grad():
        assert torch.equal(again(x), pruned.eval()(x))
    assert again.num_features == pruned.num_features
    if name != "resnet20":
        return
    # pruning a pruned model stacks two transforms and still round-trips
    twice = prune_channels(pruned, x[:1], 0.3, round_to=4)
    again2 = load_model(save_checkpoint(tmp_path / "p2.pt", twice)).eval()
    with torch.no_grad():
        assert torch.equal(again2(x), twice.eval()(x))


def test_sensitivity_and_macs_plan():
    model = _randomize(Concat())
    x = torch.randn(8, 3, 16, 16)
    ref = model(x).argmax(1)

    def agreement(m):  # a stand-in metric: top-1 agreement with the unpruned model
        with torch.no_grad():
            return float((m.eval()(x).argmax(1) == ref).float().mean() * 100)

    sens = sensitivity_analysis(model, x[:1], agreement, (0.25, 0.5, 0.75), round_to=1)
    graph = build_dependency_graph(model, x[:1])
    assert sens["baseline"] == 100.0 and set(sens["groups"]) == {g.name for g in graph.prunable_groups()}
    plan = plan_ratios(model, x[:1], sens, target_macs=0.5, round_to=1, graph=graph, iters=10)
    pruned = prune_channels(model, x[:1], plan["ratios"], round_to=1, graph=graph)
    m0, m1 = count_macs(model, x[:1]), count_macs(pruned, x[:1])
    assert m1 <= 0.5 * m0 and abs(plan["cost"] - m1 / m0) < 1e-9
    with pytest.raises(LightnnError, match="exactly one"):
        plan_ratios(model, x[:1], sens)


# ---------------------------------------------------------------------------------------------------------------
# every zoo model

# The default run covers every family at its small (CIFAR) size plus one or two ImageNet widths of the families the
# pruner finds hardest (ShuffleNet V2, IGCV3, MobileNets); the other ImageNet-size variants of the same families (and inception_v3, resnet50, vgg16, alexnet) run with -m slow.
DEFAULT = ("*cifar*", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "igcv3_050", "lenet*", "resnet20", "resnet56",
           "mobilenet_v1_025", "mobilenet_v2", "mnasnet0_5", "mobilenet_v3_small")


def _zoo() -> list:
    import fnmatch

    out = []
    for name in lightnn.list_models():
        fast = any(fnmatch.fnmatchcase(name, p) for p in DEFAULT)
        out.append(name if fast else pytest.param(name, marks=pytest.mark.slow))
    return out


@pytest.mark.parametrize("name", _zoo())
def test_zoo_prune_30_percent(name):
    info = lightnn.model_info(name)
    model = _randomize(lightnn.create_model(name, num_classes=10))
    x = torch.randn(1, *info.test_input_size)
    # LocalResponseNorm mixes neighbouring channels: the channels through it are frozen, the rest is pruned
    graph = build_dependency_graph(model, x, on_unsupported="exclude")
    assert all("LocalResponseNorm" in msg for msg in graph.unsupported), graph.unsupported
    assert graph.prunable_groups(), f"{name}: nothing prunable"
    pruned = prune_channels(model, x, 0.3, graph=graph)
    verify_shrink(model, pruned, x, atol=1e-4, rtol=1e-3)
    m0, m1 = count_macs(model, x), count_macs(pruned, x)
    limit = 1.0 if graph.unsupported else 0.85  # with LRN frozen (AlexNet), only the other layers shrink
    assert m1 < limit * m0, f"{name}: MACs did not go down enough ({m0} -> {m1})"
    with torch.no_grad():
        assert torch.isfinite(pruned(x)).all()


# ---------------------------------------------------------------------------------------------------------------
# CLI: lightnn compress --method channels / lowrank / --sensitivity


@pytest.fixture
def r20_ckpt(tmp_path):
    model = _randomize(lightnn.create_model("resnet20", num_classes=10))
    return save_checkpoint(tmp_path / "r20.pt", model)


def test_cli_channels_ratio(r20_ckpt, tmp_path, capsys):
    import json

    from lightnn.cli import main

    out = tmp_path / "pruned"
    assert main(["compress", str(r20_ckpt), "--method", "channels", "--ratio", "0.3", "--output", str(out),
                 "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["macs"]["after"] < 0.6 * rep["macs"]["before"]
    pruned = load_model(out / "model.pt")
    assert record_of(pruned).transforms[-1]["kind"] == "channels"
    capsys.readouterr()
    assert main(["compress", str(r20_ckpt), "--method", "channels", "--output", str(out)]) == 2
    assert "exactly one of --target-macs" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_target_macs_with_sensitivity(r20_ckpt, tmp_path, capsys):
    import json

    from lightnn.cli import main

    out = tmp_path / "planned"
    assert main(["compress", str(r20_ckpt), "--method", "channels", "--target-macs", "0.6", "--data", "sample",
                 "--eval-limit", "64", "--ratios", "0.5,0.75", "--output", str(out), "--json", "--device", "cpu"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["macs"]["after"] <= 0.6 * rep["macs"]["before"]
    assert (out / "sensitivity.png").stat().st_size > 1000 and (out / "sensitivity.md").exists()


def test_cli_lowrank_dispatch(r20_ckpt, tmp_path):
    pytest.importorskip("lightnn.compress.lowrank")
    from lightnn.cli import main

    out = tmp_path / "lr"
    assert main(["compress", str(r20_ckpt), "--method", "lowrank", "--energy", "0.9", "--output", str(out),
                 "--json"]) == 0
    assert load_model(out / "model.pt") is not None


@pytest.mark.slow
def test_cli_finetune_with_distillation(r20_ckpt, tmp_path, capsys, fit_spy):
    import json

    from lightnn.cli import main

    seen = fit_spy  # what reaches the trainer: its config and callbacks
    out = tmp_path / "ft"
    assert main(["compress", str(r20_ckpt), "--method", "channels", "--ratio", "0.5", "--data", "sample",
                 "--finetune-epochs", "1", "--distill", "--lr", "0.02", "--weight-decay", "4e-5", "--kd-weight",
                 "0.3", "--label-smoothing", "0.1", "--eval-limit", "256", "--output", str(out), "--json",
                 "--device", "cpu"]) == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rep["finetune"] == {"epochs": 1, "distill": True, "lr": 0.02, "weight_decay": 4e-5, "label_smoothing": 0.1,
                               "kd_weight": 0.3}
    assert "finetuned" in rep["top1"]
    assert seen["weight_decay"] == 4e-5 and seen["kd_weight"] == [0.3] and len(seen["teacher"]) == 1
    assert seen["label_smoothing"] == 0.1
    assert record_of(load_model(out / "model.pt")).transforms[-1]["kind"] == "channels"


def test_round_to_auto_follows_the_cpu_channel_block():
    from lightnn.compress.channel import deployment_channel_multiple, resolve_round_to, round_keep

    block = deployment_channel_multiple()
    assert block in (8, 16)
    assert resolve_round_to("auto") == block and resolve_round_to("16") == 16 and resolve_round_to(4) == 4
    m = lightnn.create_model("resnet20", num_classes=10)
    x = torch.randn(1, 3, 32, 32)
    g = next(g for g in build_dependency_graph(m, x).prunable_groups() if g.name == "features.3.0.conv1.conv")
    assert round_keep(g, 40, "auto") * g.unit % block == 0
    pruned = prune_channels(m, x, {"features.3.0.conv1.conv": 0.4}, round_to="auto")
    assert pruned.features[3][0].conv1.conv.out_channels % block == 0
    for bad in ("fast", 0, "-8"):
        with pytest.raises(LightnnError, match="round_to must be a positive integer or 'auto'"):
            resolve_round_to(bad)


@pytest.mark.parametrize("name", ["mobilenet_v3_small_cifar", "mobilenet_v2_cifar", "vgg16_cifar", "alexnet_cifar",
                                  "resnet20", "resnet18_cifar", "shufflenet_v2_cifar"])
def test_num_features_is_the_pruned_feature_map_width(name):
    # num_features (the ClassifierModel contract) must follow the pruned trunk, whatever the head looks like:
    # MobileNetV3's head Linear, VGG/AlexNet's MLP on the flattened map, a plain classifier or fc
    from lightnn import create_model

    torch.manual_seed(0)
    model = create_model(name, num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    pruned = prune_channels(model, x, 0.5, round_to=1)
    with torch.no_grad():
        width = pruned.forward_features(x).shape[1]
    assert width < model.num_features  # the last feature map was pruned too: the check can fail
    assert pruned.num_features == width
    pruned.reset_classifier(5)
    with torch.no_grad():
        assert pruned(x).shape == (1, 5)
