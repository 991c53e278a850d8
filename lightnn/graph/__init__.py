"""Channel dependency analysis (``lightnn.graph``): which channels of a CNN must be removed together.

The model is traced with ``torch.fx`` (every zoo model is traceable by contract; a module type with a coupling rule
is a leaf) and shapes are propagated with one example input. Every channel of every intermediate tensor becomes a
variable; each node's registered rule joins the variables that must go together in a union-find
(:mod:`lightnn.graph.rules` lists the built-in rules: convs incl. group / depthwise, BN, linear, shuffle / split /
permute, element-wise ops, concat, flatten, reshape, reductions, pad, indexing).

An equivalence class of variables is one removable unit ("channel set"); classes touching the same layers in the
same way form a :class:`ChannelGroup`, the thing importance criteria rank. Classes that reach the graph input or
output, a parameter used as a tensor, or an op without a rule are frozen. An op without a rule raises
:class:`~lightnn.errors.UnsupportedOpError` naming the op and the layer, or (``on_unsupported="exclude"``) freezes
the channels it touches so the rest of the graph can still be pruned.

Teaching it a new module type takes two registrations (a rule is a function of a :class:`CouplingContext`)::

    def gate_coupling(ctx):                     # y[:, c] = x[:, c] * gate[c]
        ctx.record_layer(members=("out",), produces=False)
        ctx.tie(ctx.src, ctx.node)

    def gate_shrink(m, keep_in, keep_out, path):  # None: the module is adjusted in place
        if keep_out is not None:
            m.gate = nn.Parameter(m.gate.detach()[keep_out])

    register_coupling(ChannelGate, gate_coupling, shrink=gate_shrink)

This layer imports only torch, :mod:`lightnn.ops` and :mod:`lightnn.errors`; pruning
(:mod:`lightnn.compress.channel`) is built on it.
"""

from __future__ import annotations

from .analysis import analyze, build_dependency_graph
from .context import CouplingContext
from .dependency import ChannelGroup, DependencyGraph, LayerCall
from .registry import (Rule, coupling_rules, function_rule, module_rule, register_coupling,
                       register_function_coupling, register_shrink, shrink_rule, unregister_coupling)
from .rules import elementwise, flatten_into, no_channels
from .shrink import shrunk_module
from .trace import ChannelTracer, trace_with_shapes
from .unionfind import UnionFind

__all__ = [
    "build_dependency_graph", "analyze", "DependencyGraph", "ChannelGroup", "LayerCall", "CouplingContext",
    "register_coupling", "register_function_coupling", "register_shrink", "unregister_coupling", "coupling_rules",
    "module_rule", "function_rule", "shrink_rule", "Rule", "elementwise", "flatten_into", "no_channels",
    "shrunk_module", "ChannelTracer", "trace_with_shapes", "UnionFind",
]
