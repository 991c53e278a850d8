"""The built-in coupling rules, registered on import.

- element-wise ops (activations, BN, pooling, dropout, residual ``add``, SE ``mul`` with broadcasting) tie channel
  ``c`` of every input to channel ``c`` of the output;
- ``torch.cat`` on the channel axis ties input channel ``c`` to output channel ``offset + c`` (Inception);
- :class:`~lightnn.ops.ChannelSplit` ties the two outputs to their slices of the input; its ``split`` is recomputed;
- :class:`~lightnn.ops.ChannelPermute` ties ``out[k]`` to ``in[perm[k]]`` and the permutation is re-indexed;
- :class:`~lightnn.ops.ChannelShuffle` ties ``out[k]`` to ``in[p[k]]`` *and* couples the ``g`` input channels
  ``i * C/g + j`` (``i < g``) that share the local index ``j``: removing a channel removes it from every shuffle
  group, so the shrunk tensor is still a (g, C'/g) grid and the new shuffle maps the survivors exactly as the old
  one did (ShuffleNet V2: pruning is symmetric inside shuffle-coupled sets; the branch-internal widths are free);
- a depthwise conv (``groups == in_channels``) ties input ``c`` to its outputs; a group conv is a grouped layer
  whose cut is chosen for the whole graph (:mod:`lightnn.graph.groups`);
- ``flatten`` (or a ``view`` / ``reshape`` to (N, features)) before a linear ties channel ``c`` to the ``h*w``
  features it becomes; reductions over spatial axes, ``pad`` and indexing that keep the channel axis tie through.

:func:`elementwise` and :func:`flatten_into` are the building blocks for rules of new ops.
"""

from __future__ import annotations

import math
import operator

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from ..ops.shuffle import ChannelPermute, ChannelShuffle, ChannelSplit
from .context import CouplingContext
from .registry import register_coupling, register_function_coupling
from .shrink import (shrink_batchnorm, shrink_conv, shrink_linear, shrink_permute, shrink_shuffle,
                     shrink_split)

__all__ = ["elementwise", "flatten_into", "no_channels"]

# Modules whose output channel c depends only on input channel c (shape-preserving in the channel axis).
ELEMENTWISE_MODULES: tuple[type, ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
    nn.Hardsigmoid, nn.Hardtanh, nn.Mish, nn.Softplus, nn.Identity, nn.Dropout, nn.Dropout2d, nn.AlphaDropout,
    nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d, nn.Upsample, nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d,
)
ELEMENTWISE_FUNCTIONS = (
    operator.add, operator.sub, operator.mul, operator.truediv, operator.neg, operator.iadd, operator.imul,
    torch.add, torch.sub, torch.mul, torch.div, torch.sigmoid, torch.tanh, torch.relu, torch.clamp, torch.neg,
    torch.exp, torch.abs, torch.sign, torch.where,
    F.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.sigmoid, F.tanh, F.hardswish, F.hardsigmoid,
    F.hardtanh, F.mish, F.softplus, F.dropout, F.dropout2d, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d, F.interpolate,
)
ELEMENTWISE_METHODS = (
    "add", "sub", "mul", "div", "relu", "relu_", "sigmoid", "tanh", "clamp", "clamp_", "contiguous", "neg", "abs",
    "add_", "mul_", "sigmoid_", "float", "to", "type_as", "exp", "sign", "clone", "detach",
)


# ---------------------------------------------------------------------------------------------------------------
# building blocks


def elementwise(ctx: CouplingContext) -> None:
    """Tie channel c of every same-rank tensor input with channel c of the output (broadcast size 1 skips)."""
    node = ctx.node
    if not ctx.has(node):
        return
    for a in ctx.tensor_args():
        if not ctx.has(a):
            continue
        if len(ctx.shape(a)) != len(ctx.out_shape):
            if math.prod(ctx.shape(a)) == 1:
                continue
            return ctx.unsupported(f"broadcast between ranks {len(ctx.shape(a))} and {len(ctx.out_shape)}")
        if ctx.channels(a) == 1 and ctx.out_ch != 1:
            continue
        if not ctx.tie(a, node):
            return ctx.unsupported(f"channel counts {ctx.channels(a)} and {ctx.out_ch} differ")


def flatten_into(ctx: CouplingContext, src: fx.Node | None) -> None:
    """The node is ``src`` (N, C, H, W) flattened to (N, C*H*W): channel c becomes features c*H*W ... +H*W-1."""
    node = ctx.node
    if (not ctx.has(node) or not ctx.has(src) or len(ctx.out_shape) != 2
            or ctx.out_shape[1] != math.prod(ctx.shape(src)[1:])):
        return ctx.unsupported("flatten/reshape that does not keep the batch axis")
    hw = math.prod(ctx.shape(src)[2:])
    b_src, b_out = ctx.base(src), ctx.out_base
    for c in range(ctx.channels(src)):
        for s in range(hw):
            ctx.union(b_src + c, b_out + c * hw + s)


def no_channels(ctx: CouplingContext) -> None:
    """For ops that read only shapes (``x.size()``, ``x.dim()``): nothing to couple."""


def _is_channel_axis(dim: object, rank: int) -> bool:
    return dim in (1, 1 - rank)


# ---------------------------------------------------------------------------------------------------------------
# modules


def conv(ctx: CouplingContext) -> None:
    """Dense conv: a layer, nothing tied; depthwise: input c with its outputs; group conv: a grouped layer."""
    m = ctx.module
    if m.transposed or not (ctx.has(ctx.src) and ctx.has(ctx.node)):
        return ctx.unsupported()
    ctx.record_layer()
    g, cin, cout = m.groups, m.in_channels, m.out_channels
    if g > 1 and cin // g == 1:  # depthwise (channel multiplier cout/cin): in c <-> outs c*mult ...
        mult = cout // cin
        for c in range(cin):
            for k in range(mult):
                ctx.union(ctx.in_base + c, ctx.out_base + c * mult + k)
    elif g > 1:
        ctx.group_coupling(g, spatial=m.kernel_size != (1,) * len(m.kernel_size))


def linear(ctx: CouplingContext) -> None:
    if not (ctx.has(ctx.src) and ctx.has(ctx.node) and len(ctx.in_shape) == 2):
        return ctx.unsupported()
    ctx.record_layer()


def batchnorm(ctx: CouplingContext) -> None:
    """Per-channel affine: input c is output c; its channels join the groups but do not name them."""
    if not ctx.has(ctx.src):
        return ctx.unsupported()
    ctx.record_layer(members=("out",), produces=False)
    ctx.tie(ctx.src, ctx.node)


def _permuted(ctx: CouplingContext, perm: torch.Tensor) -> None:
    for k in range(len(perm)):
        ctx.union(ctx.out_base + k, ctx.in_base + int(perm[k]))


def channel_shuffle(ctx: CouplingContext) -> None:
    if not ctx.has(ctx.src):
        return ctx.unsupported()
    ctx.record_layer(members=(), produces=False)
    n, g = ctx.in_ch, ctx.module.groups
    _permuted(ctx, ctx.module.permutation(n))
    cg = n // g  # channel j of every shuffle group goes together, so the shrunk tensor is still a grid
    for j in range(cg):
        for i in range(1, g):
            ctx.union(ctx.in_base + j, ctx.in_base + i * cg + j)


def channel_permute(ctx: CouplingContext) -> None:
    if not ctx.has(ctx.src):
        return ctx.unsupported()
    ctx.record_layer(members=(), produces=False)
    _permuted(ctx, ctx.module.permutation(ctx.in_ch))


def channel_split(ctx: CouplingContext) -> None:
    """Item 0 is the input's first ``split`` channels, item 1 the rest (tied by the getitem rule)."""
    if not ctx.has(ctx.src):
        return ctx.unsupported()
    ctx.record_layer(out=False, members=(), produces=False)
    ctx.set_items([ctx.in_base, ctx.in_base + ctx.module.split])


def flatten_module(ctx: CouplingContext) -> None:
    if not ctx.has(ctx.src):
        return ctx.unsupported()
    if ctx.module.start_dim != 1:
        return ctx.unsupported(f"flatten from dim {ctx.module.start_dim}")
    flatten_into(ctx, ctx.src)


# ---------------------------------------------------------------------------------------------------------------
# functions and methods


def getitem(ctx: CouplingContext) -> None:
    """An item of a split, or indexing that keeps the batch and channel axes whole."""
    src, node, idx = ctx.node.args[0], ctx.node, ctx.node.args[1]
    items = ctx.items(src)
    if items is not None and isinstance(idx, int):
        for c in range(ctx.out_ch):
            ctx.union(ctx.out_base + c, items[idx] + c)
        return
    if ctx.has(src) and ctx.has(node):
        idx = idx if isinstance(idx, tuple) else (idx,)
        keeps_channels = (len(idx) >= 2 and idx[0] == slice(None) and idx[1] == slice(None)
                          and Ellipsis not in idx and None not in idx)
        if keeps_channels or (len(idx) == 1 and idx[0] == slice(None)):
            ctx.tie(src, node)
        else:
            ctx.unsupported("indexing that touches the channel axis")
        return
    if ctx.has(node):
        ctx.unsupported()
    # else: x.shape[0] and other non-tensor lookups


def tuple_output(ctx: CouplingContext) -> None:
    """A (named) tuple of outputs, e.g. Inception's (logits, aux_logits): what it holds reaches the output."""
    for a in ctx.tensor_args():
        ctx.freeze(a, "network output")


def cat(ctx: CouplingContext) -> None:
    tensors, dim = ctx.arg(0, "tensors"), ctx.arg(1, "dim", 0)
    if not ctx.has(ctx.node) or not all(ctx.has(t) for t in tensors):
        return ctx.unsupported(f"concatenation along dim {dim}")
    rank = len(ctx.out_shape)
    if _is_channel_axis(dim, rank):
        off = 0
        for t in tensors:
            for c in range(ctx.channels(t)):
                ctx.union(ctx.base(t) + c, ctx.out_base + off + c)
            off += ctx.channels(t)
    elif dim not in (0, 1, 1 - rank):
        for t in tensors:
            ctx.tie(t, ctx.node)
    else:
        ctx.unsupported(f"concatenation along dim {dim}")


def flatten_function(ctx: CouplingContext) -> None:
    start, end = ctx.arg(1, "start_dim", 0), ctx.arg(2, "end_dim", -1)
    if start == 1 and end == -1:
        flatten_into(ctx, ctx.src)
    else:
        ctx.unsupported(f"flatten(start_dim={start}, end_dim={end})")


def reshape(ctx: CouplingContext) -> None:
    """(N, C, ...) -> (N, features) is a flatten; an unchanged shape ties through; anything else moves channels."""
    src, node = ctx.src, ctx.node
    if ctx.has(node) and ctx.has(src) and len(ctx.out_shape) == 2 and ctx.out_shape[0] == ctx.in_shape[0]:
        flatten_into(ctx, src)
    elif ctx.has(node) and ctx.has(src) and ctx.out_shape == ctx.in_shape:
        ctx.tie(src, node)
    else:
        ctx.unsupported("reshape that moves channels")


def reduction(ctx: CouplingContext) -> None:
    """Mean / sum / max over axes other than the channel axis keep channel c as channel c."""
    dims, src = ctx.arg(1, "dim"), ctx.src
    dims = (dims,) if isinstance(dims, int) else dims
    if (dims is not None and ctx.has(src) and ctx.has(ctx.node)
            and not any(_is_channel_axis(d, len(ctx.in_shape)) for d in dims)):
        ctx.tie(src, ctx.node)
    else:
        ctx.unsupported("reduction over the channel axis")


def pad(ctx: CouplingContext) -> None:
    """Spatial padding ties through; zero channels padded onto the channel axis are new and frozen."""
    src, node = ctx.src, ctx.node
    widths, mode = ctx.arg(1, "pad"), ctx.arg(2, "mode", "constant")
    if not (ctx.has(src) and ctx.has(node) and isinstance(widths, (tuple, list))
            and all(isinstance(p, int) for p in widths)):
        return ctx.unsupported()
    ch_axis_from_end = len(ctx.in_shape) - 1  # pad pairs run from the last axis backwards
    pads_channels = len(widths) // 2 >= ch_axis_from_end
    if pads_channels and mode != "constant":
        return ctx.unsupported(f"{mode} padding of the channel axis")
    before = widths[2 * (ch_axis_from_end - 1)] if pads_channels else 0
    for c in range(ctx.in_ch):
        ctx.union(ctx.in_base + c, ctx.out_base + before + c)
    for c in list(range(before)) + list(range(before + ctx.in_ch, ctx.out_ch)):
        ctx.freeze(ctx.out_base + c, f"zero channels padded at layer {ctx.path!r}")


# ---------------------------------------------------------------------------------------------------------------
# the table


def _register_builtins() -> None:
    register_coupling(nn.modules.conv._ConvNd, conv, shrink=shrink_conv)
    register_coupling(nn.Linear, linear, shrink=shrink_linear)
    register_coupling(nn.modules.batchnorm._BatchNorm, batchnorm, shrink=shrink_batchnorm)
    register_coupling(ChannelShuffle, channel_shuffle, shrink=shrink_shuffle)
    register_coupling(ChannelPermute, channel_permute, shrink=shrink_permute)
    register_coupling(ChannelSplit, channel_split, shrink=shrink_split)
    register_coupling(nn.Flatten, flatten_module)
    for t in ELEMENTWISE_MODULES:
        register_coupling(t, elementwise)
    for fn in dict.fromkeys(ELEMENTWISE_FUNCTIONS):  # dict.fromkeys: aliases of one function register once
        register_function_coupling(fn, elementwise)
    for name in ELEMENTWISE_METHODS:
        register_function_coupling(name, elementwise)
    register_function_coupling(operator.getitem, getitem)
    register_function_coupling(tuple, tuple_output)
    for target in dict.fromkeys((torch.cat, torch.concat, "cat")):
        register_function_coupling(target, cat)
    for target in (torch.flatten, "flatten"):
        register_function_coupling(target, flatten_function)
    for target in (torch.reshape, "view", "reshape"):
        register_function_coupling(target, reshape)
    for target in (torch.mean, torch.sum, torch.amax, "mean", "sum", "amax", "amin"):
        register_function_coupling(target, reduction)
    register_function_coupling(F.pad, pad)
    for name in ("size", "dim"):
        register_function_coupling(name, no_channels)


_register_builtins()
