"""Registry contracts: every coupling / shrink rule and importance criterion is named and callable, every prunable
built-in type has both rules, a second registration is refused unless it says replace, and lightnn.graph imports
nothing above it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import lightnn.graph as graph
from lightnn.compress.channel import prune_channels, verify_shrink
from lightnn.compress.importance import criteria, get_criterion, l1_importance, register_criterion
from lightnn.errors import LightnnError
from lightnn.graph import (coupling_rules, module_rule, register_coupling, register_function_coupling,
                           register_shrink, shrink_rule, unregister_coupling)
from lightnn.ops import ChannelPermute, ChannelShuffle, ChannelSplit, ConvBNAct
from lightnn.models import record_of


def test_every_rule_is_named_and_callable():
    rules = list(coupling_rules())
    assert len(rules) > 50
    for r in rules:
        assert callable(r.fn) and isinstance(r.name, str) and r.name and r.name != "<lambda>", r
        assert r.kind in ("module", "function", "method", "shrink"), r
        if r.kind in ("module", "shrink"):
            assert issubclass(r.key, nn.Module), r
        if r.kind == "method":
            assert isinstance(r.key, str), r
        if r.kind == "shrink":  # a type that can be shrunk can also be analysed
            assert module_rule(r.key) is not None, r


@pytest.mark.parametrize("cls", [nn.Conv2d, nn.Conv1d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d, ChannelShuffle,
                                 ChannelSplit, ChannelPermute], ids=lambda c: c.__name__)
def test_prunable_builtins_have_coupling_and_shrink(cls):
    assert module_rule(cls) is not None and shrink_rule(cls) is not None


def test_duplicate_registration_is_refused_or_replaces():
    original = module_rule(nn.Linear)

    def other(ctx):
        ctx.unsupported("replaced in a test")

    def keep_all(m, keep_in, keep_out, path):
        return None

    with pytest.raises(LightnnError, match=r"already registered .*'linear'.*replace=True"):
        register_coupling(nn.Linear, other)
    with pytest.raises(LightnnError, match="already registered"):  # the shrink half alone is refused too ...
        register_coupling(nn.Linear, other, shrink=keep_all)
    assert module_rule(nn.Linear) is original  # ... and a refused call changes nothing
    with pytest.raises(LightnnError, match="already registered"):
        register_function_coupling(torch.cat, other)
    with pytest.raises(LightnnError, match="already registered"):
        register_shrink(nn.Linear, keep_all)
    register_coupling(nn.Linear, other, replace=True)
    try:
        assert module_rule(nn.Linear).fn is other and module_rule(nn.Linear).name == "other"
        with pytest.raises(LightnnError, match="replaced in a test"):
            graph.build_dependency_graph(nn.Sequential(nn.Flatten(), nn.Linear(12, 4)), torch.randn(1, 3, 2, 2))
    finally:
        register_coupling(nn.Linear, original.fn, replace=True)
    assert module_rule(nn.Linear).fn is original.fn


def test_bad_registrations_name_the_input():
    def rule(ctx):
        pass

    with pytest.raises(LightnnError, match="nn.Module subclass.*int"):
        register_coupling(int, rule)
    with pytest.raises(LightnnError, match="needs a name"):
        register_function_coupling("my_method", lambda ctx: None)
    with pytest.raises(LightnnError, match="must be callable"):
        register_function_coupling("my_method", 3)
    with pytest.raises(LightnnError, match="not a tensor method name"):
        register_function_coupling("not a name", rule)
    with pytest.raises(LightnnError, match="no coupling rule is registered for Tensor.never_registered"):
        unregister_coupling("never_registered")
    register_function_coupling("my_method", lambda ctx: None, name="my_method_rule")
    unregister_coupling("my_method")
    assert graph.function_rule("call_method", "my_method") is None


def test_subclass_inherits_rule_unless_it_has_its_own():
    class MyConv(nn.Conv2d):
        pass

    assert module_rule(MyConv) is module_rule(nn.Conv2d)

    def mine(ctx):
        ctx.record_layer()

    register_coupling(MyConv, mine)
    try:
        assert module_rule(MyConv).fn is mine and module_rule(nn.Conv2d).fn is not mine
    finally:
        unregister_coupling(MyConv)


def test_graph_imports_nothing_above_it():
    allowed = {"lightnn.ops", "lightnn.errors"}
    root = Path(graph.__file__).parent
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level == 0:
                    mods = [node.module or ""]
                elif node.level == 1:
                    continue  # inside lightnn.graph
                else:
                    mods = ["lightnn." + (node.module or "")]
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            else:
                continue
            for mod in mods:
                if mod.startswith("lightnn"):
                    assert any(mod == a or mod.startswith(a + ".") for a in allowed), f"{path.name} imports {mod}"


def test_criterion_registry():
    assert set(criteria()) >= {"l1", "l2", "bn_scale", "taylor", "random"} and criteria() == sorted(criteria())
    assert get_criterion("taylor").needs_gradients and not getattr(get_criterion("l1"), "needs_gradients", False)
    with pytest.raises(LightnnError, match="'l1' is already registered"):
        register_criterion("l1")(l1_importance)
    with pytest.raises(LightnnError, match="unknown importance criterion 'nope'; choose from"):
        get_criterion("nope")
    with pytest.raises(LightnnError, match="identifier"):
        register_criterion("two words")


def test_registered_criterion_is_used_by_name():
    from lightnn.compress import importance

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = ConvBNAct(3, 16)
            self.b = ConvBNAct(16, 8)

        def forward(self, x):
            return self.b(self.a(x))

    @register_criterion("index_order")
    def index_order(group, model):  # keeps the highest indices: a criterion whose choice the test can predict
        return torch.arange(group.size, dtype=torch.float32)

    try:
        assert "index_order" in criteria()
        model = Net().eval()
        x = torch.randn(1, 3, 8, 8)
        pruned = prune_channels(model, x, {"a.conv": 0.5}, criterion="index_order", round_to=1)
        assert record_of(pruned).transforms[-1]["layers"]["a.conv"]["out"] == list(range(8, 16))
        verify_shrink(model, pruned, x)
    finally:
        importance.CRITERIA.pop("index_order")
