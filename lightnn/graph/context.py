"""What a coupling rule sees: one fx node, its module, the channel variables of the tensors around it, and the
few operations a rule needs (``tie``, ``union``, ``freeze``, ``unsupported``, ``record_layer``).

Every tensor of rank >= 2 in the traced graph owns one variable per channel (axis 1): ``ctx.base(n) + c`` is
channel ``c`` of node ``n``. A rule joins the variables that must be removed together; anything it cannot map it
reports with ``ctx.unsupported(detail)``, which raises :class:`~lightnn.errors.UnsupportedOpError` naming the op
and the layer (or, with ``on_unsupported="exclude"``, freezes the channels the op touches).
"""

from __future__ import annotations

import fnmatch
from typing import Any

import torch.fx as fx
import torch.nn as nn
from torch.fx.passes.shape_prop import TensorMetadata

from ..errors import UnsupportedOpError
from .dependency import LayerCall
from .groups import GroupedLayer
from .unionfind import UnionFind

__all__ = ["CouplingContext", "AnalysisState", "node_layer", "op_name", "tensor_args"]


def node_layer(node: fx.Node) -> str:
    """Path of the innermost module a node runs in (``"<top>"`` for the model's own forward)."""
    stack = node.meta.get("nn_module_stack")
    if stack:
        last = list(stack.values())[-1]
        path = last[0] if isinstance(last, tuple) else str(last)
        return path or "<top>"
    return node.target if node.op == "call_module" else "<top>"


def op_name(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return type(modules[node.target]).__name__
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    t = node.target
    return getattr(t, "__qualname__", None) or getattr(t, "__name__", None) or str(t)


def tensor_args(args: Any) -> list[fx.Node]:
    """The fx nodes among (nested) arguments."""
    out: list[fx.Node] = []
    fx.node.map_arg(args, lambda n: out.append(n))
    return out


class AnalysisState:
    """Everything the analysis accumulates while it walks the graph; rules reach it through a context."""

    def __init__(self, model: nn.Module, on_unsupported: str, exclude: tuple[str, ...]) -> None:
        self.modules = dict(model.named_modules())
        self.on_unsupported = on_unsupported
        self.exclude = exclude
        self.uf = UnionFind()
        self.base: dict[fx.Node, int] = {}
        self.nch: dict[fx.Node, int] = {}
        self.shape: dict[fx.Node, tuple[int, ...]] = {}
        self.items: dict[fx.Node, list[int]] = {}  # tuple-valued nodes: first channel variable of each item
        self.frozen: dict[int, str] = {}
        self.calls: list[LayerCall] = []
        self.first_call: dict[str, LayerCall] = {}
        self.unsupported: list[str] = []
        self.grouped: list[GroupedLayer] = []

    def alloc(self, node: fx.Node) -> None:
        meta = node.meta.get("tensor_meta")
        if isinstance(meta, TensorMetadata) and len(meta.shape) >= 2:
            self.shape[node] = tuple(meta.shape)
            self.nch[node] = int(meta.shape[1])
            self.base[node] = self.uf.make(self.nch[node])

    def freeze(self, node: fx.Node, why: str) -> None:
        if node in self.base:
            for c in range(self.nch[node]):
                self.frozen.setdefault(self.base[node] + c, why)


class CouplingContext:
    """The narrow view a coupling rule gets of one node (``rule(ctx) -> None``).

    ``node`` / ``module`` (``None`` for functions and methods) / ``path``; ``src`` is the first positional
    argument when it is a node. ``in_*`` describe ``src``, ``out_*`` the node itself: ``*_base`` (first channel
    variable), ``*_ch`` (channels), ``*_shape``. For other tensors: ``has``, ``base``, ``channels``, ``shape``.
    """

    __slots__ = ("node", "module", "path", "_s")

    def __init__(self, state: AnalysisState, node: fx.Node, module: nn.Module | None) -> None:
        self._s = state
        self.node = node
        self.module = module
        self.path = node.target if module is not None else node_layer(node)

    # -- tensors ----------------------------------------------------------------------------------------------
    @property
    def src(self) -> fx.Node | None:
        a = self.node.args[0] if self.node.args else None
        return a if isinstance(a, fx.Node) else None

    def has(self, n: Any) -> bool:
        """Whether ``n`` is a node whose value carries channel variables (a tensor of rank >= 2)."""
        return isinstance(n, fx.Node) and n in self._s.base

    def base(self, n: fx.Node) -> int:
        return self._s.base[n]

    def channels(self, n: Any) -> int:
        return self._s.nch.get(n, 0) if isinstance(n, fx.Node) else 0

    def shape(self, n: fx.Node) -> tuple[int, ...]:
        return self._s.shape[n]

    @property
    def in_base(self) -> int:
        return self._s.base[self.src]

    @property
    def in_ch(self) -> int:
        return self.channels(self.src)

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self._s.shape[self.src]

    @property
    def out_base(self) -> int:
        return self._s.base[self.node]

    @property
    def out_ch(self) -> int:
        return self.channels(self.node)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self._s.shape[self.node]

    def arg(self, i: int, name: str, default: Any = None) -> Any:
        """Argument ``i`` of the call, by position or by keyword ``name``."""
        args = self.node.args
        return args[i] if len(args) > i else self.node.kwargs.get(name, default)

    def tensor_args(self) -> list[fx.Node]:
        return tensor_args((self.node.args, self.node.kwargs))

    def items(self, n: Any) -> list[int] | None:
        """For a tuple-valued node (a split), the first channel variable of each item; else ``None``."""
        return self._s.items.get(n) if isinstance(n, fx.Node) else None

    def set_items(self, bases: list[int]) -> None:
        """Declare this tuple-valued node's item ``k`` to start at channel variable ``bases[k]`` (read by getitem)."""
        self._s.items[self.node] = list(bases)

    # -- couplings --------------------------------------------------------------------------------------------
    def union(self, a: int, b: int) -> None:
        """Remove channel variables ``a`` and ``b`` together."""
        self._s.uf.union(a, b)

    def tie(self, a: Any, b: Any) -> bool:
        """Tie channel ``c`` of ``a`` to channel ``c`` of ``b``; ``False`` (nothing tied) if the counts differ."""
        s = self._s
        if self.has(a) and self.has(b) and s.nch[a] == s.nch[b]:
            for c in range(s.nch[a]):
                s.uf.union(s.base[a] + c, s.base[b] + c)
            return True
        return False

    def freeze(self, target: fx.Node | int, why: str) -> None:
        """Keep every channel of node ``target`` (or the one variable ``target``); ``why`` is the reported reason."""
        if isinstance(target, int):
            self._s.frozen.setdefault(target, why)
        else:
            self._s.freeze(target, why)

    def unsupported(self, detail: str = "") -> None:
        """Report that this op's channel map is unknown: raise, or freeze what it touches (``"exclude"``)."""
        s = self._s
        layer = node_layer(self.node)
        inside = s.modules.get(layer) if self.module is None and layer != "<top>" else None
        msg = (f"channel pruning cannot handle op {op_name(self.node, s.modules)} at layer {layer!r}"
               + (f" of type {type(inside).__name__}" if inside is not None else "")
               + (f" ({detail})" if detail else ""))
        if s.on_unsupported == "raise":
            raise UnsupportedOpError(msg + "; exclude that layer, teach the analysis the op or its module type "
                                     "(lightnn.graph.register_function_coupling / register_coupling) or use "
                                     "on_unsupported='exclude'")
        s.unsupported.append(msg)
        for a in self.tensor_args():
            s.freeze(a, msg)
        s.freeze(self.node, msg)

    def record_layer(self, inp: fx.Node | bool | None = True, out: fx.Node | bool | None = True, *,
                     members: tuple[str, ...] = ("out", "in"), produces: bool = True) -> LayerCall:
        """Record this module call as a layer whose input (``inp``, default ``src``) and output (``out``, default
        the node) channels the pruning spec lists; ``members`` / ``produces`` as in :class:`LayerCall`."""
        if self.module is None:
            raise TypeError("record_layer is for module rules; function rules only couple channels")
        s = self._s
        inp = self.src if inp is True else (inp or None)
        out = self.node if out is True else (out or None)
        call = LayerCall(self.path, self.module, s.base.get(inp), self.channels(inp), s.base.get(out),
                         self.channels(out), tuple(members), produces)
        prev = s.first_call.get(self.path)
        if prev is not None:  # a shared module: both call sites must keep the same channels
            for b1, b2, n in ((prev.in_base, call.in_base, call.in_ch), (prev.out_base, call.out_base, call.out_ch)):
                if b1 is not None and b2 is not None:
                    for c in range(n):
                        s.uf.union(b1 + c, b2 + c)
        else:
            s.first_call[self.path] = call
        s.calls.append(call)
        if any(fnmatch.fnmatchcase(self.path, p) for p in s.exclude):
            for n in (inp, out):
                if n is not None:
                    s.freeze(n, f"layer {self.path!r} is excluded")
        return call

    def group_coupling(self, groups: int, spatial: bool) -> None:
        """Couple ``src`` -> node as a ``groups``-group layer, cut "local" or "whole" as chosen for the whole
        graph (:mod:`lightnn.graph.groups`)."""
        self._s.grouped.append(GroupedLayer(self.in_base, self.in_ch, self.out_base, self.out_ch, groups, spatial))
