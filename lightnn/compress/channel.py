"""Structured channel pruning that removes channels for real, across every coupling a CNN graph has.

The model is traced with ``torch.fx`` (every zoo model is traceable by contract) and shapes are propagated with
one example input. Every channel of every intermediate tensor becomes a variable; a union-find joins the variables
that must be removed together:

- element-wise ops (activations, BN, pooling, dropout, residual ``add``, SE ``mul`` with broadcasting) tie channel
  ``c`` of every input to channel ``c`` of the output;
- ``torch.cat`` on the channel axis ties input channel ``c`` to output channel ``offset + c`` (Inception);
- :class:`~lightnn.ops.ChannelSplit` ties the two outputs to their slices of the input; its ``split`` is recomputed;
- :class:`~lightnn.ops.ChannelPermute` ties ``out[k]`` to ``in[perm[k]]`` and the permutation is re-indexed;
- :class:`~lightnn.ops.ChannelShuffle` ties ``out[k]`` to ``in[p[k]]`` *and* couples the ``g`` input channels
  ``i * C/g + j`` (``i < g``) that share the local index ``j``: removing a channel removes it from every shuffle
  group, so the shrunk tensor is still a (g, C'/g) grid and the new shuffle maps the survivors exactly as the old
  one did (ShuffleNet V2: pruning is symmetric inside shuffle-coupled sets; the branch-internal widths are free);
- a group conv with ``G`` groups keeps equal per-group counts in one of two ways: "local" couples the channels with
  the same local index in every group (``groups`` stays), "whole" ties group ``i``'s inputs to its outputs (whole
  groups go, ``groups`` shrinks). The analysis picks, for the whole graph, the policy that leaves the most
  removable sets (IGCV1: whole groups in the spatial primary conv, local in the 1x1 secondary; IGCV2 chains:
  alternating); a depthwise conv (``groups == in_channels``) ties input ``c`` to its outputs;
- ``flatten`` before a linear ties channel ``c`` to the ``h*w`` features it becomes.

An equivalence class of variables is one removable unit ("channel set"); classes touching the same layers in the
same way form a :class:`ChannelGroup`, the thing importance criteria rank. Classes that reach the graph input or
output, a parameter used as a tensor, or an op the analysis does not know are frozen. An unknown op raises
:class:`~lightnn.errors.UnsupportedOpError` naming the op and the layer, or (``on_unsupported="exclude"``) freezes
the channels it touches so the rest of the graph can still be pruned.

Shrinking writes new, smaller ``nn.Conv2d`` / ``nn.BatchNorm2d`` / ``nn.Linear`` modules in place. The edit is
recorded as plain data (kept channel indices per layer) in ``model.lightnn_transforms`` under the checkpoint
transform ``"channels"``, so a pruned checkpoint rebuilds with ``create_model(checkpoint=...)``.
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import math
import operator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from ..checkpoint import register_transform
from ..errors import LightnnError, UnsupportedOpError
from ..ops.shuffle import ChannelPermute, ChannelShuffle, ChannelSplit

__all__ = [
    "ChannelGroup", "DependencyGraph", "build_dependency_graph", "prune_channels", "shrink", "apply_channel_spec",
    "mask_model", "verify_shrink", "channel_spec", "deployment_channel_multiple", "resolve_round_to",
]

_LEAVES = (ChannelShuffle, ChannelSplit, ChannelPermute)

# Modules whose output channel c depends only on input channel c (shape-preserving in the channel axis).
_ELEMENTWISE_MODULES: tuple[type, ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
    nn.Hardsigmoid, nn.Hardtanh, nn.Mish, nn.Softplus, nn.Identity, nn.Dropout, nn.Dropout2d, nn.AlphaDropout,
    nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d, nn.Upsample, nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d,
)
_ELEMENTWISE_FUNCS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.neg, operator.iadd, operator.imul,
    torch.add, torch.sub, torch.mul, torch.div, torch.sigmoid, torch.tanh, torch.relu, torch.clamp, torch.neg,
    torch.exp, torch.abs, torch.sign, torch.where,
    F.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.sigmoid, F.tanh, F.hardswish, F.hardsigmoid,
    F.hardtanh, F.mish, F.softplus, F.dropout, F.dropout2d, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d, F.interpolate,
}
_ELEMENTWISE_METHODS = {
    "add", "sub", "mul", "div", "relu", "relu_", "sigmoid", "tanh", "clamp", "clamp_", "contiguous", "neg", "abs",
    "add_", "mul_", "sigmoid_", "float", "to", "type_as", "exp", "sign", "clone", "detach",
}
_REDUCE = {"mean", "sum", "amax", "amin"}


class _Tracer(fx.Tracer):
    """Keeps the shuffle/split/permute modules as leaves: their channel maps are known, their insides are not."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, _LEAVES) or super().is_leaf_module(m, qualname)


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def make(self, n: int) -> int:
        base = len(self.parent)
        self.parent.extend(range(base, base + n))
        return base

    def find(self, a: int) -> int:
        p = self.parent
        while p[a] != a:
            p[a] = p[p[a]]
            a = p[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


@dataclass
class ChannelGroup:
    """Coupled channels: ``size`` removable sets, each touching the same layers in the same way.

    ``members[(layer, dim)]`` is a ``(size, k)`` index matrix: removing set ``i`` removes channels
    ``members[(layer, dim)][i]`` of dimension ``dim`` ("out" = output channels / features, "in" = input) of the
    module at path ``layer``. ``unit`` is the most channels one set removes from a single layer.
    """

    name: str
    members: dict[tuple[str, str], torch.Tensor]
    roots: list[int] = field(repr=False)
    prunable: bool = True
    reason: str = ""

    @property
    def size(self) -> int:
        return len(self.roots)

    @property
    def unit(self) -> int:
        return max((int(t.shape[1]) for t in self.members.values()), default=1)

    @property
    def channels(self) -> int:
        """Width of the group in its widest layer."""
        return self.size * self.unit

    def layers(self) -> list[str]:
        return sorted({p for p, _ in self.members})


@dataclass
class _Call:
    path: str
    module: nn.Module
    in_base: int | None
    in_ch: int
    out_base: int | None
    out_ch: int


class DependencyGraph:
    """The channel-dependency analysis of one model (see the module docstring)."""

    def __init__(self, model: nn.Module, uf: _UnionFind, calls: list[_Call], frozen: dict[int, str],
                 unsupported: list[str]) -> None:
        self.model = model
        self.uf = uf
        self.calls = calls
        self.unsupported = unsupported
        self.frozen_roots = {}
        for v, why in frozen.items():
            self.frozen_roots.setdefault(uf.find(v), why)
        self.groups = self._build_groups()

    def _build_groups(self) -> list[ChannelGroup]:
        find = self.uf.find
        by_root: dict[int, dict[tuple[str, str], list[int]]] = {}
        for call in self.calls:
            if not isinstance(call.module, (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm)):
                continue
            for dim, base, n in (("out", call.out_base, call.out_ch), ("in", call.in_base, call.in_ch)):
                if base is None or (dim == "in" and isinstance(call.module, nn.modules.batchnorm._BatchNorm)):
                    continue
                for c in range(n):
                    lst = by_root.setdefault(find(base + c), {}).setdefault((call.path, dim), [])
                    if c not in lst:
                        lst.append(c)
        keyed: dict[tuple, list[int]] = {}
        for root, mem in by_root.items():
            key = tuple(sorted((p, d, len(ix)) for (p, d), ix in mem.items()))
            keyed.setdefault(key, []).append(root)
        groups = []
        for key, roots in keyed.items():
            roots.sort(key=lambda r: min(by_root[r][(key[0][0], key[0][1])]))
            members = {(p, d): torch.tensor([by_root[r][(p, d)] for r in roots], dtype=torch.long)
                       for p, d, _ in key}
            producers = [p for p, d, _ in key if d == "out" and not isinstance(
                self.model.get_submodule(p), nn.modules.batchnorm._BatchNorm)]
            name = producers[0] if producers else key[0][0]
            reasons = {self.frozen_roots[r] for r in roots if r in self.frozen_roots}
            g = ChannelGroup(name, members, roots)
            if reasons:
                g.prunable, g.reason = False, "; ".join(sorted(reasons))
            elif not producers:
                g.prunable, g.reason = False, "no conv/linear produces these channels"
            groups.append(g)
        # Same name for two groups (one layer split into several sets) gets a suffix; order by layer order.
        order = {c.path: i for i, c in enumerate(self.calls)}
        groups.sort(key=lambda g: (order.get(g.name, 0), g.name))
        seen: dict[str, int] = {}
        for g in groups:
            k = seen.get(g.name, 0)
            seen[g.name] = k + 1
            if k:
                g.name = f"{g.name}#{k}"
        return groups

    def prunable_groups(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.prunable]

    def group(self, name: str) -> ChannelGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise LightnnError(f"no channel group named {name!r}; groups: {[g.name for g in self.groups][:20]}")

    def spec_for(self, removed_roots: Iterable[int]) -> dict[str, dict[str, list[int]]]:
        """Kept channel indices per layer and dimension once the sets ``removed_roots`` are gone."""
        removed = set(removed_roots)
        bad = removed & set(self.frozen_roots)
        if bad:
            raise LightnnError(f"cannot remove frozen channels: {self.frozen_roots[next(iter(bad))]}")
        find = self.uf.find
        spec: dict[str, dict[str, list[int]]] = {}
        for call in self.calls:
            entry = {}
            for dim, base, n in (("in", call.in_base, call.in_ch), ("out", call.out_base, call.out_ch)):
                if base is None:
                    continue
                kept = [c for c in range(n) if find(base + c) not in removed]
                if len(kept) != n:
                    if not kept:
                        raise LightnnError(f"pruning would remove every {dim}put channel of layer {call.path!r}")
                    entry[dim] = kept
            if entry:
                prev = spec.setdefault(call.path, {})
                for k, v in entry.items():
                    if k in prev and prev[k] != v:  # a module called twice with different channel maps
                        raise LightnnError(f"layer {call.path!r} is used twice with different channel sets")
                    prev[k] = v
        return spec


def _node_layer(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack")
    if stack:
        last = list(stack.values())[-1]
        path = last[0] if isinstance(last, tuple) else str(last)
        return path or "<top>"
    return node.target if node.op == "call_module" else "<top>"


def _op_name(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return type(modules[node.target]).__name__
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    t = node.target
    return getattr(t, "__qualname__", None) or getattr(t, "__name__", None) or str(t)


def _tensor_args(args: Any) -> list[fx.Node]:
    out: list[fx.Node] = []
    fx.node.map_arg(args, lambda n: out.append(n))
    return out


def build_dependency_graph(model: nn.Module, example_input: torch.Tensor | Sequence[torch.Tensor], *,
                           on_unsupported: str = "raise", exclude: Sequence[str] = ()) -> DependencyGraph:
    """Trace ``model`` and group the channels that must be removed together.

    ``on_unsupported="raise"`` raises :class:`UnsupportedOpError` at the first op the analysis cannot map (the
    message names the op and the layer); ``"exclude"`` freezes the channels it touches instead and records the
    message in ``graph.unsupported``. ``exclude`` lists layer paths (wildcards allowed) whose channels stay as
    they are.
    """
    if on_unsupported not in ("raise", "exclude"):
        raise LightnnError(f"on_unsupported must be 'raise' or 'exclude', got {on_unsupported!r}")
    inputs = (example_input,) if isinstance(example_input, torch.Tensor) else tuple(example_input)
    modes = {m: m.training for m in model.modules()}
    try:
        # Trace in training mode so train-only branches (Inception's aux head) are part of the graph ...
        model.train()
        try:
            graph = _Tracer().trace(model)
        except Exception as e:
            raise UnsupportedOpError(
                f"channel pruning needs a torch.fx-traceable model; tracing {type(model).__name__} failed: "
                f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
        gm = fx.GraphModule(model, graph)
        # ... but propagate shapes in eval mode so BN running statistics are not touched.
        gm.eval()
        with torch.no_grad():
            ShapeProp(gm).propagate(*inputs)
    finally:
        for m, t in modes.items():
            m.training = t
    return _analyze(model, gm, on_unsupported, tuple(exclude))


def _analyze(model: nn.Module, gm: fx.GraphModule, on_unsupported: str, exclude: tuple[str, ...]) -> DependencyGraph:
    modules = dict(model.named_modules())
    uf = _UnionFind()
    base: dict[fx.Node, int] = {}
    nch: dict[fx.Node, int] = {}
    shape: dict[fx.Node, tuple[int, ...]] = {}
    frozen: dict[int, str] = {}
    calls: list[_Call] = []
    first_call: dict[str, _Call] = {}
    unsupported: list[str] = []
    gconv: list[tuple[int, int, int, int, int, bool]] = []

    def alloc(node: fx.Node) -> None:
        meta = node.meta.get("tensor_meta")
        if isinstance(meta, TensorMetadata) and len(meta.shape) >= 2:
            shape[node] = tuple(meta.shape)
            nch[node] = int(meta.shape[1])
            base[node] = uf.make(nch[node])

    def freeze(node: fx.Node, why: str) -> None:
        if node in base:
            for c in range(nch[node]):
                frozen.setdefault(base[node] + c, why)

    def tie(a: fx.Node, b: fx.Node) -> bool:
        if a in base and b in base and nch[a] == nch[b]:
            for c in range(nch[a]):
                uf.union(base[a] + c, base[b] + c)
            return True
        return False

    def unsupported_op(node: fx.Node, detail: str = "") -> None:
        msg = (f"channel pruning cannot handle op {_op_name(node, modules)} at layer {_node_layer(node)!r}"
               + (f" ({detail})" if detail else ""))
        if on_unsupported == "raise":
            raise UnsupportedOpError(msg + "; exclude that layer or use on_unsupported='exclude'")
        unsupported.append(msg)
        for a in _tensor_args((node.args, node.kwargs)):
            freeze(a, msg)
        freeze(node, msg)

    def record(path: str, m: nn.Module, inp: fx.Node | None, out: fx.Node | None) -> None:
        call = _Call(path, m, base.get(inp) if inp is not None else None, nch.get(inp, 0) if inp is not None else 0,
                     base.get(out) if out is not None else None, nch.get(out, 0) if out is not None else 0)
        prev = first_call.get(path)
        if prev is not None:  # a shared module: both call sites must keep the same channels
            for b1, b2, n in ((prev.in_base, call.in_base, call.in_ch), (prev.out_base, call.out_base, call.out_ch)):
                if b1 is not None and b2 is not None:
                    for c in range(n):
                        uf.union(b1 + c, b2 + c)
        else:
            first_call[path] = call
        calls.append(call)
        if any(fnmatch.fnmatchcase(path, p) for p in exclude):
            for node in (inp, out):
                if node is not None:
                    freeze(node, f"layer {path!r} is excluded")

    def elementwise(node: fx.Node) -> None:
        """Tie channel c of every same-rank tensor input with channel c of the output (broadcast size 1 skips)."""
        if node not in base:
            return
        for a in _tensor_args((node.args, node.kwargs)):
            if a not in shape:
                continue
            if len(shape[a]) != len(shape[node]):
                if math.prod(shape[a]) == 1:
                    continue
                unsupported_op(node, f"broadcast between ranks {len(shape[a])} and {len(shape[node])}")
                return
            if nch[a] == 1 and nch[node] != 1:
                continue
            if not tie(a, node):
                unsupported_op(node, f"channel counts {nch[a]} and {nch[node]} differ")
                return

    def flatten(node: fx.Node, src: fx.Node) -> None:
        """Channel c of (N, C, H, W) becomes features c*H*W ... (c+1)*H*W - 1."""
        if node not in base or src not in base or len(shape[node]) != 2 or shape[node][1] != math.prod(shape[src][1:]):
            unsupported_op(node, "flatten/reshape that does not keep the batch axis")
            return
        hw = math.prod(shape[src][2:])
        for c in range(nch[src]):
            for s in range(hw):
                uf.union(base[src] + c, base[node] + c * hw + s)

    for node in gm.graph.nodes:
        alloc(node)
        if node.op == "placeholder":
            freeze(node, "network input")
            continue
        if node.op == "get_attr":
            freeze(node, f"parameter {node.target!r} used as a tensor")
            continue
        if node.op == "output":
            for a in _tensor_args(node.args):
                freeze(a, "network output")
            continue
        targs = [a for a in _tensor_args((node.args, node.kwargs))
                 if a in base or a.meta.get("tensor_meta") is not None]
        if node.op == "call_module":
            m = modules[node.target]
            src = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
            if isinstance(m, nn.modules.conv._ConvNd) and not m.transposed and src in base and node in base:
                record(node.target, m, src, node)
                g, cin, cout = m.groups, m.in_channels, m.out_channels
                if g > 1 and cin // g == 1:  # depthwise (channel multiplier cout/cin): in c <-> outs c*m..
                    mult = cout // cin
                    for c in range(cin):
                        for k in range(mult):
                            uf.union(base[src] + c, base[node] + c * mult + k)
                elif g > 1:  # group conv: two valid ways to cut it, chosen for the whole graph below
                    gconv.append((base[src], cin, base[node], cout, g, m.kernel_size != (1,) * len(m.kernel_size)))
            elif isinstance(m, nn.Linear) and src in base and node in base and len(shape[src]) == 2:
                record(node.target, m, src, node)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm) and src in base:
                record(node.target, m, src, node)
                tie(src, node)
            elif isinstance(m, ChannelShuffle) and src in base:
                record(node.target, m, src, node)
                n = nch[src]
                p = m.permutation(n)
                for k in range(n):
                    uf.union(base[node] + k, base[src] + int(p[k]))
                cg = n // m.groups
                for j in range(cg):
                    for i in range(1, m.groups):
                        uf.union(base[src] + j, base[src] + i * cg + j)
            elif isinstance(m, ChannelPermute) and src in base:
                record(node.target, m, src, node)
                p = m.permutation(nch[src])
                for k in range(len(p)):
                    uf.union(base[node] + k, base[src] + int(p[k]))
            elif isinstance(m, ChannelSplit) and src in base:
                record(node.target, m, src, None)
            elif isinstance(m, nn.Flatten) and src in base:
                if m.start_dim != 1:
                    unsupported_op(node, f"flatten from dim {m.start_dim}")
                else:
                    flatten(node, src)
            elif isinstance(m, _ELEMENTWISE_MODULES):
                elementwise(node)
            elif not targs and node not in base:
                pass
            else:
                unsupported_op(node)
            continue
        # call_function / call_method
        fn = node.target
        if node.op == "call_function" and fn is operator.getitem:
            src = node.args[0]
            if (isinstance(src, fx.Node) and src.op == "call_module"
                    and isinstance(modules.get(src.target), ChannelSplit)):
                s = modules[src.target].split
                off = 0 if node.args[1] == 0 else s
                for c in range(nch.get(node, 0)):
                    uf.union(base[node] + c, base[src.args[0]] + off + c)
                continue
            if src in base and node in base:
                idx = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
                keeps_channels = (len(idx) >= 2 and idx[0] == slice(None) and idx[1] == slice(None)
                                  and Ellipsis not in idx and None not in idx)
                if keeps_channels or (len(idx) == 1 and idx[0] == slice(None)):
                    tie(src, node)
                else:
                    unsupported_op(node, "indexing that touches the channel axis")
                continue
            if node not in base:
                continue  # x.shape[0] and other non-tensor lookups
            unsupported_op(node)
            continue
        name = fn if node.op == "call_method" else None
        if node.op == "call_function" and isinstance(fn, type) and issubclass(fn, tuple):
            for a in targs:  # a (named) tuple of outputs, e.g. Inception's (logits, aux_logits)
                freeze(a, "network output")
            continue
        if (node.op == "call_function" and fn in (torch.cat, torch.concat)) or name == "cat":
            tensors = node.args[0] if node.args else node.kwargs.get("tensors")
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            if node in base and dim in (1, 1 - len(shape[node])):
                off = 0
                for t in tensors:
                    for c in range(nch[t]):
                        uf.union(base[t] + c, base[node] + off + c)
                    off += nch[t]
            elif node in base and dim not in (0, 1, 1 - len(shape[node])):
                for t in tensors:
                    tie(t, node)
            else:
                unsupported_op(node, f"concatenation along dim {dim}")
            continue
        if (node.op == "call_function" and fn in _ELEMENTWISE_FUNCS) or name in _ELEMENTWISE_METHODS:
            elementwise(node)
            continue
        if (node.op == "call_function" and fn is torch.flatten) or name == "flatten":
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            if start == 1 and end == -1:
                flatten(node, node.args[0])
            else:
                unsupported_op(node, f"flatten(start_dim={start}, end_dim={end})")
            continue
        if name in ("view", "reshape") or (node.op == "call_function" and fn is torch.reshape):
            src = node.args[0]
            if node in base and src in base and len(shape[node]) == 2 and shape[node][0] == shape[src][0]:
                flatten(node, src)
            elif node in base and src in base and shape[node] == shape[src]:
                tie(src, node)
            else:
                unsupported_op(node, "reshape that moves channels")
            continue
        if (name in _REDUCE or (node.op == "call_function" and fn in (torch.mean, torch.sum, torch.amax))):
            dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            dims = (dims,) if isinstance(dims, int) else dims
            src = node.args[0]
            if (dims is not None and src in base and node in base
                    and all(d not in (1, 1 - len(shape[src])) for d in dims)):
                tie(src, node)
            else:
                unsupported_op(node, "reduction over the channel axis")
            continue
        if node.op == "call_function" and fn is F.pad:
            src = node.args[0]
            pad = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad")
            mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
            if src in base and node in base and isinstance(pad, (tuple, list)) and all(isinstance(p, int) for p in pad):
                k = len(pad) // 2
                ch_axis_from_end = len(shape[src]) - 1  # pad pairs run from the last axis backwards
                before = pad[2 * (ch_axis_from_end - 1)] if k >= ch_axis_from_end else 0
                if k >= ch_axis_from_end and mode != "constant":
                    unsupported_op(node, f"{mode} padding of the channel axis")
                    continue
                for c in range(nch[src]):  # zero channels added by the pad are new, frozen
                    uf.union(base[src] + c, base[node] + before + c)
                for c in list(range(before)) + list(range(before + nch[src], nch[node])):
                    frozen.setdefault(base[node] + c, f"zero channels padded at layer {_node_layer(node)!r}")
            else:
                unsupported_op(node)
            continue
        if node.op == "call_method" and name in ("size", "dim"):
            continue
        if node not in base and not any(a in base for a in targs):
            continue  # scalar arithmetic on shapes
        unsupported_op(node)
    if gconv:
        uf.parent = _choose_group_modes(uf, gconv, frozen)
    return DependencyGraph(model, uf, calls, frozen, unsupported)


def _group_unions(parent: list[int], rules: list[tuple], modes: Sequence[str]) -> list[int]:
    """Apply the group-conv couplings to a copy of the union-find.

    ``"local"``: the channels with the same local index in every group go together (groups stay, per-group counts
    equal). ``"whole"``: group ``i``'s inputs and outputs go together (whole groups are removed, ``groups``
    shrinks). IGCV1 needs "whole" on the spatial primary conv and "local" on the 1x1 secondary; AlexNet's
    2-group convs prune finer with "local".
    """
    uf = _UnionFind()
    uf.parent = list(parent)
    for (b_in, cin, b_out, cout, g, _), mode in zip(rules, modes):
        pin, pout = cin // g, cout // g
        if mode == "local":
            for b, n in ((b_in, pin), (b_out, pout)):
                for j in range(n):
                    for i in range(1, g):
                        uf.union(b + j, b + i * n + j)
        else:
            for i in range(g):
                r = b_in + i * pin
                for c in range(pin):
                    uf.union(r, r + c)
                for c in range(pout):
                    uf.union(r, b_out + i * pout + c)
    return uf.parent


def _choose_group_modes(uf: _UnionFind, rules: list[tuple], frozen: dict[int, str]) -> list[int]:
    """Pick the group-conv policy that leaves the most independently removable channel sets."""
    policies = {
        "local": ["local"] * len(rules),
        "spatial-whole": ["whole" if r[5] else "local" for r in rules],
        "whole": ["whole"] * len(rules),
        "pointwise-whole": ["local" if r[5] else "whole" for r in rules],
        # chains of 1x1 group convs (IGCV2): whole groups in the first of each pair, local in the second
        "alternate": ["whole" if i % 2 == 0 else "local" for i in range(len(rules))],
        "alternate-rev": ["local" if i % 2 == 0 else "whole" for i in range(len(rules))],
    }
    best, best_n = None, -1
    for modes in policies.values():
        parent = _group_unions(uf.parent, rules, modes)
        tmp = _UnionFind()
        tmp.parent = parent
        frozen_roots = {tmp.find(v) for v in frozen}
        n = len({tmp.find(v) for v in range(len(parent))} - frozen_roots)
        if n > best_n:
            best, best_n = parent, n
    return best


# ---------------------------------------------------------------------------------------------------------------
# shrinking: plain-data spec -> smaller modules


def _conv_in_columns(m: nn.modules.conv._ConvNd, kept_in: list[int], kept_out: list[int]) -> tuple[list[int], int]:
    """Local weight columns and the new ``groups`` for a conv keeping ``kept_in`` / ``kept_out`` channels."""
    g, cin = m.groups, m.in_channels
    if g == 1:
        return kept_in, 1
    per = cin // g
    if per == 1:  # depthwise: groups follow the channels
        return [0], len(kept_in)
    per_out = m.out_channels // g
    groups_in = sorted({c // per for c in kept_in})
    if (len(kept_in) == len(groups_in) * per and groups_in == sorted({c // per_out for c in kept_out})
            and len(kept_out) == len(groups_in) * per_out):
        return list(range(per)), len(groups_in)  # whole groups removed (or nothing)
    local = sorted({c % per for c in kept_in})
    if len(local) * g != len(kept_in):
        raise LightnnError(f"group conv keeps unequal channel counts per group: {len(kept_in)} over {g} groups")
    return local, g


def _shrunk_module(m: nn.Module, entry: dict[str, list[int]], path: str) -> nn.Module | None:
    kin, kout = entry.get("in"), entry.get("out")
    if isinstance(m, nn.modules.conv._ConvNd):
        kin = list(range(m.in_channels)) if kin is None else kin
        kout = list(range(m.out_channels)) if kout is None else kout
        cols, groups = _conv_in_columns(m, kin, kout)
        new = type(m)(len(kin), len(kout), m.kernel_size, m.stride, m.padding, m.dilation, groups,
                      m.bias is not None, m.padding_mode, device=m.weight.device, dtype=m.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(m.weight[kout][:, cols])
            if m.bias is not None:
                new.bias.copy_(m.bias[kout])
        new.train(m.training)
        return new
    if isinstance(m, nn.Linear):
        kin = list(range(m.in_features)) if kin is None else kin
        kout = list(range(m.out_features)) if kout is None else kout
        new = nn.Linear(len(kin), len(kout), m.bias is not None, device=m.weight.device, dtype=m.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(m.weight[kout][:, kin])
            if m.bias is not None:
                new.bias.copy_(m.bias[kout])
        new.train(m.training)
        return new
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        keep = kout if kout is not None else kin
        ref = m.weight if m.affine else m.running_mean
        new = type(m)(len(keep), m.eps, m.momentum, m.affine, m.track_running_stats, device=ref.device,
                      dtype=ref.dtype)
        idx = torch.tensor(keep, dtype=torch.long)
        with torch.no_grad():
            if m.affine:
                new.weight.copy_(m.weight[idx])
                new.bias.copy_(m.bias[idx])
            if m.track_running_stats:
                new.running_mean.copy_(m.running_mean[idx])
                new.running_var.copy_(m.running_var[idx])
                new.num_batches_tracked.copy_(m.num_batches_tracked)
        new.train(m.training)
        return new
    if isinstance(m, ChannelSplit):
        if kin is not None:
            m.split = sum(1 for c in kin if c < m.split)
        return None
    if isinstance(m, ChannelPermute):
        n = len(m.perm)
        kin = list(range(n)) if kin is None else kin
        kout = list(range(n)) if kout is None else kout
        pos = {c: i for i, c in enumerate(kin)}
        perm = [pos[int(m.perm[k])] for k in kout]
        return ChannelPermute(perm)
    if isinstance(m, ChannelShuffle):
        if kin is not None and len(kin) % m.groups:
            raise LightnnError(f"layer {path!r}: {len(kin)} channels do not divide into shuffle groups={m.groups}")
        return None
    raise UnsupportedOpError(f"cannot shrink layer {path!r} of type {type(m).__name__}")


def apply_channel_spec(model: nn.Module, spec: dict) -> nn.Module:
    """Replace the layers named in ``spec["layers"]`` by smaller ones keeping the listed channels (in place)."""
    layers = spec["layers"] if "layers" in spec else spec
    for path, entry in layers.items():
        try:
            m = model.get_submodule(path)
        except AttributeError:
            raise LightnnError(f"channel spec names layer {path!r}, which the model does not have") from None
        new = _shrunk_module(m, entry, path)
        if new is not None:
            parent_path, _, attr = path.rpartition(".")
            setattr(model.get_submodule(parent_path) if parent_path else model, attr, new)
    # The head's input width is the model's num_features (ClassifierModel contract).
    head = getattr(model, "classifier", None) or getattr(model, "fc", None)
    if isinstance(head, nn.Linear) and isinstance(getattr(model, "num_features", None), int):
        model.num_features = head.in_features
    return model


@register_transform("channels")
def _channels_transform(model: nn.Module, spec: dict) -> nn.Module:
    return apply_channel_spec(model, spec)


def channel_spec(graph: DependencyGraph, removed: dict[str, list[int]]) -> dict:
    """Checkpoint transform spec for removing sets ``removed[group_name]`` (indices into each group)."""
    roots = []
    for name, idx in removed.items():
        g = graph.group(name)
        if idx and not g.prunable:
            raise LightnnError(f"channel group {name!r} cannot be pruned: {g.reason}")
        roots.extend(g.roots[i] for i in idx)
    return {"kind": "channels", "layers": graph.spec_for(roots)}


def shrink(model: nn.Module, graph: DependencyGraph, removed: dict[str, list[int]]) -> nn.Module:
    """Remove the channel sets ``removed[group_name]`` from ``model`` in place and record the transform."""
    spec = channel_spec(graph, removed)
    apply_channel_spec(model, spec)
    model.lightnn_transforms = list(getattr(model, "lightnn_transforms", [])) + [spec]
    return model


def mask_model(model: nn.Module, spec: dict) -> nn.Module:
    """A copy of ``model`` where every removed channel is zeroed where it is consumed (conv/linear input weights).

    Removed channels then contribute nothing downstream, which is exactly what removing them does: the reference
    the shrunk model is checked against.
    """
    masked = copy.deepcopy(model)
    for path, entry in spec["layers"].items():
        m = masked.get_submodule(path)
        kin = entry.get("in")
        if kin is None or not isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
            continue
        n_in = m.in_channels if isinstance(m, nn.modules.conv._ConvNd) else m.in_features
        removed = sorted(set(range(n_in)) - set(kin))
        with torch.no_grad():
            if isinstance(m, nn.Linear) or m.groups == 1:
                m.weight[:, removed] = 0
            else:
                g = m.groups
                per_in, per_out = n_in // g, m.out_channels // g
                for c in removed:
                    i = c // per_in
                    m.weight[i * per_out:(i + 1) * per_out, c % per_in] = 0
    return masked


def verify_shrink(original: nn.Module, pruned: nn.Module, example_input: torch.Tensor, spec: dict | None = None,
                  atol: float = 1e-7, rtol: float = 1e-6) -> float:
    """Check (eval mode) that ``pruned`` equals ``original`` with the removed channels masked; returns max |diff|.

    ``spec`` defaults to the last ``"channels"`` transform recorded on ``pruned``. Raises :class:`LightnnError`
    when the outputs differ beyond the tolerance.
    """
    if spec is None:
        specs = [t for t in getattr(pruned, "lightnn_transforms", []) if t.get("kind") == "channels"]
        if not specs:
            raise LightnnError("pruned model records no 'channels' transform; pass spec=")
        spec = specs[-1]
    # Compare in float64 on the CPU: GPU TF32 convolutions would blur the oracle.
    masked = mask_model(original, spec).cpu().double().eval()
    pruned = copy.deepcopy(pruned).cpu().double().eval()
    with torch.no_grad():
        x = example_input.detach().cpu().double()
        a, b = masked(x), pruned(x)
    a, b = (a[0], b[0]) if isinstance(a, (tuple, list)) else (a, b)
    diff = float((a - b).abs().max())
    if not torch.allclose(a, b, atol=atol, rtol=rtol):
        raise LightnnError(f"shrunk model differs from the masked model: max |diff| = {diff:.3g}")
    return diff


# ---------------------------------------------------------------------------------------------------------------
# the high-level entry point


@functools.lru_cache(maxsize=None)
def deployment_channel_multiple() -> int:
    """The channel block of this CPU's convolution kernels: 16 with AVX-512, else 8.

    ONNX Runtime's CPU convolutions (MLAS, NCHWc layout) and PyTorch's oneDNN ones (nChw16c / nChw8c) compute
    channels in blocks of 16 floats on AVX-512 and 8 on AVX2, padding a partial block: on an AVX-512 CPU a 3x3 conv
    with 24 output channels takes as long as one with 32, and one with 8 as long as one with 16
    (``benchmarks/channel_pruning.py`` measures this). Pruned widths that are not multiples of the block buy MACs on
    paper and no time. ARM CPUs (NEON, 4 floats) get 8.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return 8
    return 16 if " avx512f" in flags else 8


def resolve_round_to(round_to: int | str) -> int:
    """``round_to`` as an int: a positive number, or ``"auto"`` for :func:`deployment_channel_multiple`."""
    if isinstance(round_to, str):
        if round_to.strip().lower() == "auto":
            return deployment_channel_multiple()
        try:
            round_to = int(round_to)
        except ValueError:
            raise LightnnError(f"round_to must be a positive integer or 'auto', got {round_to!r}") from None
    if int(round_to) < 1:
        raise LightnnError(f"round_to must be a positive integer or 'auto', got {round_to!r}")
    return int(round_to)


def round_keep(group: ChannelGroup, keep_channels: float, round_to: int | str = 8) -> int:
    """Number of sets to keep so the group's width is a multiple of ``round_to`` (never below ``round_to``);
    ``round_to="auto"`` uses this CPU's convolution channel block (:func:`deployment_channel_multiple`)."""
    round_to = resolve_round_to(round_to)
    unit = group.unit
    step = math.lcm(max(1, round_to), unit) // unit  # sets per hardware-friendly step
    if group.size <= step:
        return group.size
    k = max(1, round(keep_channels / (step * unit))) * step
    return int(min(group.size, max(step, k)))


def prune_channels(model: nn.Module, example_input: torch.Tensor, ratio: float | dict[str, float] = 0.3, *,
                   criterion: str | Callable = "l1", scope: str = "layer", round_to: int = 8,
                   data: Iterable | None = None, loss_fn: Callable | None = None, exclude: Sequence[str] = (),
                   on_unsupported: str = "raise", inplace: bool = False,
                   graph: DependencyGraph | None = None) -> nn.Module:
    """Remove ``ratio`` of the channels of every prunable group (or ``ratio[group_name]`` per group).

    ``criterion`` is a name from :data:`lightnn.compress.importance.CRITERIA` (l1, l2, bn_scale, taylor, random)
    or a function ``(group, model) -> scores``; ``scope="layer"`` ranks inside each group, ``"global"`` ranks all
    groups together (scores normalized by each group's mean) and removes the overall ``ratio`` of channel sets.
    Taylor needs ``data`` (batches of ``(x, y)``). Kept widths are rounded to multiples of ``round_to``.
    Returns the pruned model (a copy unless ``inplace``) with ``lightnn_transforms`` updated.
    """
    from .importance import get_criterion, taylor_gradients

    if scope not in ("layer", "global"):
        raise LightnnError(f"scope must be 'layer' or 'global', got {scope!r}")
    if not inplace:
        model = copy.deepcopy(model)
    graph = graph if graph is not None else build_dependency_graph(model, example_input,
                                                                    on_unsupported=on_unsupported, exclude=exclude)
    graph.model = model
    fn = get_criterion(criterion)
    if getattr(fn, "needs_gradients", False):
        if data is None:
            raise LightnnError("the taylor criterion needs data: pass data= (batches of (inputs, targets))")
        taylor_gradients(model, data, loss_fn)
    groups = graph.prunable_groups()
    ratios = {g.name: (ratio.get(g.name, 0.0) if isinstance(ratio, dict) else float(ratio)) for g in groups}
    for name, r in ratios.items():
        if not 0.0 <= r < 1.0:
            raise LightnnError(f"pruning ratio for {name!r} must be in [0, 1), got {r}")
    if isinstance(ratio, dict):
        unknown = set(ratio) - set(ratios)
        if unknown:
            raise LightnnError(f"ratio names unknown or unprunable channel groups: {sorted(unknown)[:10]}")
    scores = {g.name: fn(g, model).detach().float().cpu() for g in groups if ratios[g.name] > 0 or scope == "global"}
    removed: dict[str, list[int]] = {}
    if scope == "layer":
        for g in groups:
            if ratios[g.name] <= 0:
                continue
            keep = round_keep(g, g.channels * (1 - ratios[g.name]), round_to)
            order = torch.argsort(scores[g.name], descending=True, stable=True)
            removed[g.name] = sorted(order[keep:].tolist())
    else:
        r = float(ratio) if not isinstance(ratio, dict) else 0.0
        allv = torch.cat([scores[g.name] / (scores[g.name].mean() + 1e-12) for g in groups])
        if len(allv):
            thresh = torch.quantile(allv, r) if r > 0 else allv.min() - 1
            for g in groups:
                s = scores[g.name] / (scores[g.name].mean() + 1e-12)
                want = int((s > thresh).sum())
                keep = round_keep(g, want * g.unit, round_to)
                order = torch.argsort(s, descending=True, stable=True)
                if keep < g.size:
                    removed[g.name] = sorted(order[keep:].tolist())
    for p in model.parameters():
        p.grad = None
    return shrink(model, graph, removed)
