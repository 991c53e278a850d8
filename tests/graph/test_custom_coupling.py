"""Teaching the channel analysis from outside the package: a module type and a function defined here get coupling
(and shrink) rules, a net using them prunes, and the shrunk model equals the masked one."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lightnn.compress.channel import apply_channel_spec, prune_channels, verify_shrink
from lightnn.errors import UnsupportedOpError
from lightnn.graph import (ChannelTracer, CouplingContext, build_dependency_graph, register_coupling,
                           register_function_coupling, unregister_coupling)
from lightnn.ops import ConvBNAct
from lightnn.models import record_of


class ScaledAdd(nn.Module):
    """A residual join with a learned per-channel scale: ``x + scale[c] * y``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.rand(channels) + 0.5)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + self.scale.view(1, -1, 1, 1) * y


def scaled_add_coupling(ctx: CouplingContext) -> None:
    # both inputs and the output share channel c; the scale is one more per-channel tensor of the group
    ctx.record_layer(members=("out",), produces=False)
    ctx.tie(ctx.src, ctx.node)
    ctx.tie(ctx.node.args[1], ctx.node)


def scaled_add_shrink(m: ScaledAdd, keep_in: list[int] | None, keep_out: list[int] | None, path: str) -> None:
    if keep_out is not None:
        m.scale = nn.Parameter(m.scale.detach()[keep_out])


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBNAct(3, 16)
        self.branch = nn.Sequential(ConvBNAct(16, 24), ConvBNAct(24, 16, act=None))
        self.join = ScaledAdd(16)
        self.tail = ConvBNAct(16, 32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.tail(F.relu(self.join(x, self.branch(x))))
        return self.fc(x.mean((2, 3)))


def _randomize(m: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(3)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
            mod.weight.data.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
    return m.eval()


@pytest.fixture
def scaled_add_registered():
    register_coupling(ScaledAdd, scaled_add_coupling, shrink=scaled_add_shrink)
    yield
    unregister_coupling(ScaledAdd)


def test_unregistered_module_is_named():
    assert not ChannelTracer().is_leaf_module(ScaledAdd(4), "join")
    with pytest.raises(UnsupportedOpError, match=r"at layer 'join' of type ScaledAdd"):
        build_dependency_graph(Net(), torch.randn(1, 3, 8, 8))


def test_registered_module_prunes_and_shrunk_equals_masked(scaled_add_registered):
    assert ChannelTracer().is_leaf_module(ScaledAdd(4), "join")  # a coupling rule makes the type a leaf
    model = _randomize(Net()).double()
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    graph = build_dependency_graph(model, x)
    trunk = next(g for g in graph.groups if ("join", "out") in g.members)
    assert {"stem.conv", "branch.1.conv", "tail.conv", "join"} <= set(trunk.layers()) and trunk.prunable
    assert trunk.name == "branch.1.conv"  # the first producer by path: the join computes no channels, names nothing

    pruned = prune_channels(model, x, 0.5, round_to=1)
    kept = pruned.stem.conv.out_channels
    assert kept == 8 and pruned.join.scale.numel() == kept == pruned.branch[1].conv.out_channels
    assert pruned.tail.conv.in_channels == kept
    assert verify_shrink(model, pruned, x, atol=1e-9, rtol=1e-9) < 1e-8

    # the recorded spec replays on a fresh model (the checkpoint path) with the registered shrink rule
    again = apply_channel_spec(_randomize(Net()).double(), record_of(pruned).transforms[-1])
    again.load_state_dict(pruned.state_dict())
    with torch.no_grad():
        assert torch.equal(again(x), pruned(x))


def test_coupling_without_shrink_rule_is_named():
    register_coupling(ScaledAdd, scaled_add_coupling)
    try:
        with pytest.raises(UnsupportedOpError, match=r"cannot shrink layer 'join' of type ScaledAdd.*register_shrink"):
            prune_channels(_randomize(Net()), torch.randn(1, 3, 8, 8), 0.5, round_to=1)
    finally:
        unregister_coupling(ScaledAdd)


class Rolled(nn.Module):  # a spatial roll: channels pass through unchanged
    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBNAct(3, 16)
        self.mid = ConvBNAct(16, 16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.roll(self.stem(x), 1, dims=2)
        return self.fc(self.mid(x).mean((2, 3)))


def roll_coupling(ctx: CouplingContext) -> None:
    dims = ctx.arg(2, "dims")
    dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
    if not dims or any(d in (1, 1 - len(ctx.in_shape)) for d in dims):
        return ctx.unsupported("roll along the channel axis")
    ctx.tie(ctx.src, ctx.node)


def test_registered_function_prunes():
    model = _randomize(Rolled()).double()
    x = torch.randn(2, 3, 10, 10, dtype=torch.float64)
    with pytest.raises(UnsupportedOpError, match="roll"):
        build_dependency_graph(model, x)
    register_function_coupling(torch.roll, roll_coupling)
    try:
        pruned = prune_channels(model, x, 0.5, round_to=1)
        assert pruned.stem.conv.out_channels == 8
        verify_shrink(model, pruned, x, atol=1e-9, rtol=1e-9)
    finally:
        unregister_coupling(torch.roll)
