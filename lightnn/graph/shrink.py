"""Shrink rules: how a module is rebuilt keeping only some of its input / output channels.

A rule is ``fn(module, keep_in, keep_out, path) -> nn.Module | None``: ``keep_in`` / ``keep_out`` are the kept
channel indices (``None``: that side keeps everything), the result replaces the module (``None``: the module was
adjusted in place or needs no change). Registered with :func:`~lightnn.graph.register_shrink` or together with a
coupling rule (``register_coupling(T, rule, shrink=fn)``).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import LightnnError, UnsupportedOpError
from ..ops.shuffle import ChannelPermute, ChannelShuffle, ChannelSplit
from .registry import shrink_rule

__all__ = ["shrunk_module", "shrink_conv", "shrink_linear", "shrink_batchnorm", "shrink_split", "shrink_permute",
           "shrink_shuffle"]


def shrunk_module(m: nn.Module, keep_in: list[int] | None, keep_out: list[int] | None, path: str) -> nn.Module | None:
    """``m`` rebuilt with the kept channels by its registered shrink rule (``None``: keep ``m`` itself)."""
    rule = shrink_rule(type(m))
    if rule is None:
        raise UnsupportedOpError(f"cannot shrink layer {path!r} of type {type(m).__name__}: no shrink rule is "
                                 "registered for it (lightnn.graph.register_shrink)")
    return rule.fn(m, keep_in, keep_out, path)


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


def shrink_conv(m: nn.modules.conv._ConvNd, keep_in: list[int] | None, keep_out: list[int] | None,
                path: str) -> nn.Module:
    kin = list(range(m.in_channels)) if keep_in is None else keep_in
    kout = list(range(m.out_channels)) if keep_out is None else keep_out
    cols, groups = _conv_in_columns(m, kin, kout)
    new = type(m)(len(kin), len(kout), m.kernel_size, m.stride, m.padding, m.dilation, groups,
                  m.bias is not None, m.padding_mode, device=m.weight.device, dtype=m.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(m.weight[kout][:, cols])
        if m.bias is not None:
            new.bias.copy_(m.bias[kout])
    new.train(m.training)
    return new


def shrink_linear(m: nn.Linear, keep_in: list[int] | None, keep_out: list[int] | None, path: str) -> nn.Module:
    kin = list(range(m.in_features)) if keep_in is None else keep_in
    kout = list(range(m.out_features)) if keep_out is None else keep_out
    new = nn.Linear(len(kin), len(kout), m.bias is not None, device=m.weight.device, dtype=m.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(m.weight[kout][:, kin])
        if m.bias is not None:
            new.bias.copy_(m.bias[kout])
    new.train(m.training)
    return new


def shrink_batchnorm(m: nn.modules.batchnorm._BatchNorm, keep_in: list[int] | None, keep_out: list[int] | None,
                     path: str) -> nn.Module:
    keep = keep_out if keep_out is not None else keep_in
    ref = m.weight if m.affine else m.running_mean
    new = type(m)(len(keep), m.eps, m.momentum, m.affine, m.track_running_stats, device=ref.device, dtype=ref.dtype)
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


def shrink_split(m: ChannelSplit, keep_in: list[int] | None, keep_out: list[int] | None, path: str) -> None:
    if keep_in is not None:  # the split point moves by the channels removed before it
        m.split = sum(1 for c in keep_in if c < m.split)
    return None


def shrink_permute(m: ChannelPermute, keep_in: list[int] | None, keep_out: list[int] | None,
                   path: str) -> nn.Module:
    n = len(m.perm)
    kin = list(range(n)) if keep_in is None else keep_in
    kout = list(range(n)) if keep_out is None else keep_out
    pos = {c: i for i, c in enumerate(kin)}
    return ChannelPermute([pos[int(m.perm[k])] for k in kout])


def shrink_shuffle(m: ChannelShuffle, keep_in: list[int] | None, keep_out: list[int] | None, path: str) -> None:
    if keep_in is not None and len(keep_in) % m.groups:
        raise LightnnError(f"layer {path!r}: {len(keep_in)} channels do not divide into shuffle groups={m.groups}")
    return None
