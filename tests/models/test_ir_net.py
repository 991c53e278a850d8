"""The generic inverted-residual network (lightnn.models.ir_net): rows, counts, validation, plain-data tables.

The MobileNet V2/V3 and MnasNet parity tests (parameter counts, MACs, torchvision keys) live in test_zoo_tv.py;
here the same network is checked on tables the tests make themselves.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.fx
import torch.nn as nn
import yaml

import lightnn
from lightnn.checkpoint import save_checkpoint
from lightnn.errors import LightnnError
from lightnn.models.ir_net import InvertedResidual, IRNet, IRStage, Residual, cifar_table, parse_table, table_to_data
from lightnn.models.mnasnet import BN_MOMENTUM, MNASNET_A1_TABLE, MNASNET_STEM
from lightnn.models.mobilenet_v3 import MOBILENET_V3_SMALL_TABLE, MOBILENET_V3_STEM

STEM = [{"expansion": 1, "channels": 8, "stride": 1, "op": "conv", "skip": False}]


def _net(table, stem=STEM, **kw) -> nn.Module:
    kw = {"num_classes": 3, "head_chs": 32, "round_to": 1, **kw}
    return lightnn.create_model("ir_net", table=table, stem=stem, **kw)


ROW_OPTIONS = {
    "t1_no_expansion_conv": {"expansion": 1, "channels": 8},
    "t3": {"expansion": 3, "channels": 16},
    "t6": {"expansion": 6, "channels": 16},
    "kernel5": {"expansion": 6, "channels": 16, "kernel": 5},
    "kernel7": {"expansion": 3, "channels": 8, "kernel": 7},
    "se": {"expansion": 6, "channels": 16, "se": 0.25},
    "relu": {"expansion": 3, "channels": 16, "act": "relu"},
    "relu6": {"expansion": 3, "channels": 16, "act": "relu6"},
    "hswish": {"expansion": 3, "channels": 16, "act": "hswish"},
    "swish": {"expansion": 3, "channels": 16, "act": "swish"},
    "repeats3": {"expansion": 6, "channels": 16, "repeats": 3},
    "stride2": {"expansion": 6, "channels": 16, "repeats": 2, "stride": 2},
    "no_skip": {"expansion": 6, "channels": 8, "skip": False},
    "exp_chs": {"expansion": 1, "channels": 16, "exp_chs": 40},
    "ds": {"expansion": 1, "channels": 16, "op": "ds"},
    "ds_se_skip": {"expansion": 1, "channels": 8, "op": "ds", "se": 0.25},
    "conv": {"expansion": 1, "channels": 16, "op": "conv", "kernel": 5, "stride": 2},
    "conv_skip": {"expansion": 1, "channels": 8, "op": "conv"},
}


@pytest.mark.parametrize("row", ROW_OPTIONS.values(), ids=ROW_OPTIONS.keys())
def test_every_row_option_builds_runs_and_backpropagates(row):
    model = _net([row, {"expansion": 6, "channels": 24, "stride": 2}]).train()
    x = torch.randn(2, 3, 16, 16)
    out = model(x)
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    out.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    model.eval()
    gm = torch.fx.symbolic_trace(model)  # the pruner and the exporter trace the graph
    with torch.no_grad():
        torch.testing.assert_close(gm(x), model(x))


def _conv(cin: int, cout: int, k: int = 1, groups: int = 1) -> int:
    return cin // groups * cout * k * k


def _bn(c: int) -> int:
    return 2 * c  # weight and bias (running statistics are buffers)


def _linear(cin: int, cout: int) -> int:
    return cin * cout + cout


def _ir(cin: int, exp: int, cout: int, k: int, se_rd: int = 0) -> int:
    expand = _conv(cin, exp) + _bn(exp) if exp != cin else 0
    se = _conv(exp, se_rd) + se_rd + _conv(se_rd, exp) + exp if se_rd else 0
    return expand + _conv(exp, exp, k, exp) + _bn(exp) + se + _conv(exp, cout) + _bn(cout)


TINY = [
    IRStage(1, 8),                                   # t = 1: no expansion conv, shortcut
    IRStage(6, 16, 2, 2, 5, 0.25, "hswish"),         # SE width make_divisible(0.25 x expanded, 8)
    IRStage(1, 16, 1, 1, 3, 0.25, op="ds"),          # depthwise-separable with SE and shortcut
    IRStage(1, 24, op="conv", act="relu"),           # a plain 3x3 conv
    IRStage(3, 24, act="swish", skip=False),         # no shortcut although the shapes allow one
    IRStage(1, 32, 1, 2, 5, exp_chs=40),             # an absolute expanded width
]


def test_parameter_count_of_a_tiny_table_by_formula():
    model = _net(TINY, head_chs=48, head_fc_chs=20, num_classes=5)
    expected = (
        _conv(3, 8, 3) + _bn(8)                                            # stem
        + _ir(8, 8, 8, 3)                                                  # row 0
        + _ir(8, 48, 16, 5, se_rd=16) + _ir(16, 96, 16, 5, se_rd=24)       # row 1: 48/4 = 12 -> 16, 96/4 = 24
        + _conv(16, 16, 3, 16) + _bn(16) + _conv(16, 8) + 8 + _conv(8, 16) + 16 + _conv(16, 16) + _bn(16)  # row 2
        + _conv(16, 24, 3) + _bn(24)                                       # row 3
        + _ir(24, 72, 24, 3)                                               # row 4
        + _ir(24, 40, 32, 5)                                               # row 5
        + _conv(32, 48) + _bn(48) + _linear(48, 20) + _linear(20, 5)       # head conv, head Linear, classifier
    )
    assert sum(p.numel() for p in model.parameters()) == expected == 30_061
    # with the blocks nested per row the count and the computation stay, only the names change
    nested = _net(TINY, head_chs=48, head_fc_chs=20, num_classes=5, nest_stages=True)
    assert sum(p.numel() for p in nested.parameters()) == expected
    assert "features.2.1.conv_pw.conv.weight" in nested.state_dict()
    assert "features.3.conv_pw.conv.weight" in model.state_dict()


def test_shortcuts_follow_skip_stride_and_width():
    model = _net(TINY).eval()
    f = model.features
    blocks = [f[1], f[2], f[3], f[4], f[5], f[6], f[7]]  # row 1 has two blocks
    assert [b.use_res for b in (f[1], f[2], f[3], f[6], f[7])] == [True, False, True, False, False]
    assert isinstance(f[4], Residual) and type(f[5]) is not Residual and type(f[0]) is not Residual
    assert [type(b).__name__ for b in blocks] == ["InvertedResidual"] * 3 + ["Residual", "ConvBNAct"] + [
        "InvertedResidual"] * 2
    # a Residual is x + (its layers run as a plain Sequential)
    x = torch.randn(2, 16, 8, 8)
    plain = nn.Sequential(OrderedDict(f[4].named_children()))
    with torch.no_grad():
        torch.testing.assert_close(f[4](x), x + plain(x), rtol=0, atol=0)


BAD_ROWS = [
    ({"expansion": 6, "channels": 24, "kernel": 4}, r"IRStage\.kernel must be an odd size.*got 4"),
    ({"expansion": 6, "channels": 24, "stride": 3}, r"IRStage\.stride must be 1 or 2, got 3"),
    ({"expansion": 6, "channels": 0}, r"IRStage\.channels must be >= 1, got 0"),
    ({"expansion": 6, "channels": 24, "repeats": 0}, r"IRStage\.repeats must be >= 1"),
    ({"expansion": 0, "channels": 24}, r"IRStage\.expansion must be > 0"),
    ({"expansion": 6, "channels": "24"}, r"IRStage\.channels must be an integer, got '24'"),
    ({"expansion": 6, "channels": 24.0}, r"IRStage\.channels must be an integer"),
    ({"expansion": 6, "channels": 24, "se": 1.5}, r"IRStage\.se is a squeeze-excite ratio"),
    ({"expansion": 6, "channels": 24, "op": "dw"}, r"IRStage\.op must be one of \['ir', 'ds', 'conv'\]"),
    ({"expansion": 6, "channels": 24, "op": "ds"}, r"IRStage\.expansion must be 1: op 'ds' has no expansion"),
    ({"expansion": 1, "channels": 24, "op": "conv", "se": 0.25}, r"IRStage\.se must be 0: op 'conv'"),
    ({"expansion": 6, "channels": 24, "exp_chs": 72}, r"IRStage\.exp_chs and expansion=6 both set"),
    ({"expansion": 6, "channels": 24, "act": "gelu9"}, r"IRStage\.act: unknown activation 'gelu9'"),
    ({"expansion": 6, "channels": 24, "skip": "yes"}, r"IRStage\.skip must be true or false"),
    ({"expansion": 6, "chans": 24}, r"unknown field\(s\) \['chans'\]"),
    ({"channels": 24}, r"missing field\(s\) \['expansion'\]"),
    ([6, 24, 2, 2], r"a row must be an IRStage or a mapping of its fields, got list"),
]


@pytest.mark.parametrize("row,match", BAD_ROWS, ids=[f"bad_row{i}" for i in range(len(BAD_ROWS))])
def test_bad_rows_name_the_row_and_the_field(row, match):
    with pytest.raises(ValueError, match=r"^table row 1: " + match):  # LightnnError is a ValueError
        _net([{"expansion": 1, "channels": 8}, row])


def test_bad_tables_and_network_arguments_are_clear():
    with pytest.raises(LightnnError, match=r"^stem row 0: IRStage\.stride"):
        _net([{"expansion": 1, "channels": 8}], stem=[{"expansion": 1, "channels": 8, "op": "conv", "stride": 4}])
    with pytest.raises(LightnnError, match="table must be a list of rows"):
        _net("6,24,2,2")
    with pytest.raises(LightnnError, match="table must be a list of rows"):
        _net({"expansion": 6, "channels": 24})
    with pytest.raises(LightnnError, match="table must have at least one row"):
        _net([])
    # a row that validates but cannot be built at its place in the network
    with pytest.raises(LightnnError, match=r"^table row 0: .*channel counts must be positive"):
        _net([{"expansion": 0.01, "channels": 8}])
    for kw, match in (({"width_mult": 0}, "width_mult must be a number > 0"), ({"se_from": "out"}, "se_from"),
                      ({"head_chs": -1}, "head_chs must be an integer >= 0"), ({"round_to": 0}, "round_to"),
                      ({"drop_rate": 1.0}, "drop_rate"), ({"act": "relu7"}, "^act: unknown activation 'relu7'")):
        with pytest.raises(LightnnError, match=match):
            _net([{"expansion": 1, "channels": 8}], **kw)


def test_tables_round_trip_through_dict_json_and_yaml():
    for table in (TINY, MNASNET_STEM + MNASNET_A1_TABLE, MOBILENET_V3_SMALL_TABLE):
        data = table_to_data(table)
        assert all(type(d) is dict for d in data)
        assert parse_table(json.loads(json.dumps(data))) == tuple(table)
        assert parse_table(yaml.safe_load(yaml.safe_dump(data))) == tuple(table)
        assert all(IRStage.from_dict(row.to_dict()) == row for row in table)
    # a dict gives only what differs from the defaults
    assert parse_table([{"expansion": 6, "channels": 24, "repeats": 2, "stride": 2}]) == (IRStage(6, 24, 2, 2),)
    # NumPy numbers (a search strategy's samples) are stored as Python numbers, which weights_only loading accepts
    row = IRStage(np.float32(6), np.int64(24), se=np.float64(0.25))
    assert type(row.expansion) is float and type(row.channels) is int and type(row.se) is float


def test_cifar_table_sets_the_first_stride_2_row_to_stride_1():
    rows = (IRStage(1, 16), IRStage(6, 24, 2, 2), IRStage(6, 32, 3, 2))
    assert cifar_table(rows) == (IRStage(1, 16), IRStage(6, 24, 2, 1), IRStage(6, 32, 3, 2))
    assert cifar_table(rows[:1]) == rows[:1]


def test_custom_table_checkpoint_rebuilds_without_pickled_code(tmp_path):
    model = _net(TINY, se_from="in", se_round_to=1, nest_stages=True, act="hswish", num_classes=4).eval()
    with torch.no_grad():  # non-trivial statistics so that a wrong rebuild shows in the outputs
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = save_checkpoint(tmp_path / "m.pt", model)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt["model"] == "ir_net"
    assert [dict(r) for r in ckpt["arch_kwargs"]["table"]] == table_to_data(TINY)  # rows stored as dicts
    rebuilt = lightnn.create_model("ir_net", checkpoint=str(path)).eval()
    assert rebuilt.table == tuple(TINY) and list(rebuilt.state_dict()) == list(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)


def test_ir_net_without_a_table_is_mobilenet_v2():
    ours = lightnn.create_model("ir_net", num_classes=10).eval()
    ref = lightnn.create_model("mobilenet_v2", num_classes=10).eval()
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in ref.state_dict().items()]
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=0)


@pytest.mark.parametrize("name,kwargs", [
    ("mnasnet_a1", dict(table=table_to_data(MNASNET_A1_TABLE), stem=table_to_data(MNASNET_STEM), act="relu",
                        se_from="in", se_round_to=1, bn_momentum=BN_MOMENTUM, nest_stages=True)),
    ("mobilenet_v3_small", dict(table=table_to_data(MOBILENET_V3_SMALL_TABLE), stem=table_to_data(MOBILENET_V3_STEM),
                                act="hswish", head_chs=576, head_fc_chs=1024, se_gate="hsigmoid", bn_eps=1e-3,
                                bn_momentum=0.01)),
])
def test_a_family_is_ir_net_plus_plain_data(name, kwargs):
    # what a searched network will be: the registry name ir_net and arguments a YAML file can hold
    with torch.device("meta"):
        ours, ref = lightnn.create_model("ir_net", **kwargs), lightnn.create_model(name)
    assert isinstance(ref, IRNet)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in ref.state_dict().items()]
    assert ours.features[-1].bn.momentum == ref.features[-1].bn.momentum
    assert repr(ours) == repr(ref)


# sha256 of the ordered (state-dict key, shape) list: lightnn checkpoints load by these names and torchvision's
# by this order, so the tables must keep rebuilding it (values taken from the per-family classes they replaced)
LAYOUT = {
    "mnasnet0_5": "93deb926f2d19836",
    "mnasnet0_75": "6e4458a8c15bec62",
    "mnasnet1_0": "c62c7463e703ac3e",
    "mnasnet1_3": "f27ff20b27d48c2a",
    "mnasnet_a1": "bc939016e30552e1",
    "mnasnet_a1_cifar": "bc939016e30552e1",
    "mnasnet_b1": "c62c7463e703ac3e",
    "mnasnet_cifar": "c62c7463e703ac3e",
    "mobilenet_v2": "40adff095609cb54",
    "mobilenet_v2_cifar": "40adff095609cb54",
    "mobilenet_v3_large": "eba367202b749366",
    "mobilenet_v3_large_cifar": "eba367202b749366",
    "mobilenet_v3_small": "a08d890671877f25",
    "mobilenet_v3_small_cifar": "a08d890671877f25",
}


@pytest.mark.parametrize("name", sorted(LAYOUT))
def test_state_dict_layout_of_the_families_is_unchanged(name):
    with torch.device("meta"):
        model = lightnn.create_model(name)
    text = "".join(f"{k}:{tuple(v.shape)};" for k, v in model.state_dict().items())
    assert hashlib.sha256(text.encode()).hexdigest()[:16] == LAYOUT[name]


def test_injected_block_and_norm_are_used():
    class Tagged(InvertedResidual):
        pass

    model = IRNet(TINY[:2], stem=STEM, num_classes=3, round_to=1, block=Tagged, norm_layer=nn.SyncBatchNorm)
    assert sum(isinstance(m, Tagged) for m in model.modules()) == 3
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(isinstance(m, nn.SyncBatchNorm) for m in norms)


def test_a_custom_table_prunes_and_exports(tmp_path):
    from lightnn.compress.channel import prune_channels, verify_shrink
    from lightnn.export import check_parity, export_onnx

    model = _net(TINY, num_classes=4).eval()
    x = torch.randn(1, 3, 32, 32)
    pruned = prune_channels(model, x, 0.5, round_to=1)
    verify_shrink(model, pruned, x, atol=1e-4, rtol=1e-3)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    path = export_onnx(model, tmp_path / "m.onnx", input_size=(3, 32, 32))
    rep = check_parity(model, path, torch.randn(2, 3, 32, 32))
    assert rep.max_abs_diff <= rep.tolerance
