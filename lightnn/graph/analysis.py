"""The analysis driver: trace, give every channel a variable, run each node's registered rule, pick the group-conv
cuts, and collect the removable sets into a :class:`~lightnn.graph.dependency.DependencyGraph`."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.fx as fx
import torch.nn as nn

from ..errors import LightnnError
from . import rules as _rules  # noqa: F401  (registers the built-in rules)
from .context import AnalysisState, CouplingContext, tensor_args
from .dependency import DependencyGraph
from .groups import choose_group_modes
from .registry import function_rule, module_rule
from .trace import trace_with_shapes

__all__ = ["build_dependency_graph", "analyze"]


def build_dependency_graph(model: nn.Module, example_input: torch.Tensor | Sequence[torch.Tensor], *,
                           on_unsupported: str = "raise", exclude: Sequence[str] = ()) -> DependencyGraph:
    """Trace ``model`` and group the channels that must be removed together.

    ``on_unsupported="raise"`` raises :class:`~lightnn.errors.UnsupportedOpError` at the first op the analysis
    cannot map (the message names the op and the layer); ``"exclude"`` freezes the channels it touches instead
    and records the message in ``graph.unsupported``. ``exclude`` lists layer paths (wildcards allowed) whose
    channels stay as they are.
    """
    if on_unsupported not in ("raise", "exclude"):
        raise LightnnError(f"on_unsupported must be 'raise' or 'exclude', got {on_unsupported!r}")
    inputs = (example_input,) if isinstance(example_input, torch.Tensor) else tuple(example_input)
    gm = trace_with_shapes(model, inputs)
    return analyze(model, gm, on_unsupported=on_unsupported, exclude=tuple(exclude))


def analyze(model: nn.Module, gm: fx.GraphModule, *, on_unsupported: str = "raise",
            exclude: tuple[str, ...] = ()) -> DependencyGraph:
    """Run the registered rules over a traced, shape-propagated ``gm`` of ``model``."""
    state = AnalysisState(model, on_unsupported, exclude)
    for node in gm.graph.nodes:
        state.alloc(node)
        _visit(state, node)
    if state.grouped:
        state.uf.parent = choose_group_modes(state.uf, state.grouped, state.frozen)
    return DependencyGraph(model, state.uf, state.calls, state.frozen, state.unsupported)


def _visit(state: AnalysisState, node: fx.Node) -> None:
    if node.op == "placeholder":
        return state.freeze(node, "network input")
    if node.op == "get_attr":
        return state.freeze(node, f"parameter {node.target!r} used as a tensor")
    if node.op == "output":
        for a in tensor_args(node.args):
            state.freeze(a, "network output")
        return
    module = state.modules[node.target] if node.op == "call_module" else None
    rule = module_rule(type(module)) if module is not None else function_rule(node.op, node.target)
    ctx = CouplingContext(state, node, module)
    if rule is not None:
        return rule.fn(ctx)
    # No rule: harmless only if no channels flow through (shape arithmetic such as x.size(0) // 2).
    targs = [a for a in tensor_args((node.args, node.kwargs))
             if a in state.base or a.meta.get("tensor_meta") is not None]
    if node not in state.base and not (targs if module is not None else any(a in state.base for a in targs)):
        return
    ctx.unsupported()
