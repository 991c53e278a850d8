"""Channel importance criteria: plain functions ``(group, model) -> scores`` (one score per channel set), kept in
a registry (``register_criterion(name)(fn)``, ``criteria()`` lists the names) that ``prune_channels`` and the CLI
read.

A :class:`~lightnn.compress.channel.ChannelGroup` lists, per layer and dimension, which channels each removable set
covers; a criterion sums its per-channel statistic over every layer that *produces* the set (conv/linear output
rows, BN channels), so a set spread over several coupled layers (a residual stage) is judged by all of them.

- ``l1`` / ``l2``: norm of the filters (Li et al. 2017, "Pruning Filters for Efficient ConvNets").
- ``bn_scale``: |gamma| of the BN layers (Liu et al. 2017, "Network Slimming"); falls back to L1 without BN.
- ``taylor``: first-order Taylor expansion of the loss change, ``(sum_s g_s w_s)^2`` over the set's parameters
  (Molchanov et al. 2019, eq. 8); needs gradients from a batch of data (:func:`taylor_gradients`).
- ``random``: uniform scores, the control every criterion must beat.

A criterion registered with ``needs_gradients=True`` gets ``.grad`` filled by :func:`taylor_gradients` before it
is called.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import LightnnError
from ..graph import ChannelGroup

__all__ = ["l1_importance", "l2_importance", "bn_scale_importance", "taylor_importance", "random_importance",
           "CRITERIA", "Criterion", "register_criterion", "criteria", "get_criterion", "taylor_gradients"]

Criterion = Callable[[ChannelGroup, nn.Module], torch.Tensor]

# name -> criterion; filled by register_criterion (the built-ins below register themselves)
CRITERIA: dict[str, Criterion] = {}


def register_criterion(name: str, *, needs_gradients: bool = False,
                       replace: bool = False) -> Callable[[Criterion], Criterion]:
    """Decorator registering ``fn(group, model) -> scores`` as criterion ``name`` (refused if the name is taken,
    unless ``replace=True``); ``needs_gradients`` makes :func:`prune_channels` run :func:`taylor_gradients`."""
    if not isinstance(name, str) or not name.isidentifier():
        raise LightnnError(f"importance criterion name must be an identifier, got {name!r}")
    if name in CRITERIA and not replace:
        raise LightnnError(f"importance criterion {name!r} is already registered; pass replace=True to replace it")

    def wrap(fn: Criterion) -> Criterion:
        if not callable(fn):
            raise LightnnError(f"importance criterion {name!r} must be callable, got {type(fn).__name__}")
        if needs_gradients:
            fn.needs_gradients = True
        CRITERIA[name] = fn
        return fn

    return wrap


def criteria() -> list[str]:
    """Names of the registered importance criteria, sorted (the CLI's ``--criterion`` choices)."""
    return sorted(CRITERIA)


_BN = nn.modules.batchnorm._BatchNorm
_WEIGHTED = (nn.modules.conv._ConvNd, nn.Linear)


def _producer_stat(group: ChannelGroup, model: nn.Module, stat: Callable[[nn.Module], torch.Tensor | None],
                   kinds: tuple[type, ...]) -> torch.Tensor | None:
    total = None
    for (path, dim), idx in group.members.items():
        m = model.get_submodule(path)
        if dim != "out" or not isinstance(m, kinds):
            continue
        per_channel = stat(m)
        if per_channel is None:
            continue
        s = per_channel[idx].sum(1)
        total = s if total is None else total + s
    return total


def _norm(p: int) -> Callable[[nn.Module], torch.Tensor]:
    def stat(m: nn.Module) -> torch.Tensor:
        w = m.weight.detach().flatten(1)
        return w.abs().sum(1) if p == 1 else w.pow(2).sum(1).sqrt()

    return stat


@register_criterion("l1")
def l1_importance(group: ChannelGroup, model: nn.Module) -> torch.Tensor:
    """Sum of |W| of the filters producing each set (Li et al. 2017)."""
    s = _producer_stat(group, model, _norm(1), _WEIGHTED)
    if s is None:
        raise LightnnError(f"channel group {group.name!r} has no conv/linear producing it")
    return s


@register_criterion("l2")
def l2_importance(group: ChannelGroup, model: nn.Module) -> torch.Tensor:
    """Sum of the L2 norms of the filters producing each set."""
    s = _producer_stat(group, model, _norm(2), _WEIGHTED)
    if s is None:
        raise LightnnError(f"channel group {group.name!r} has no conv/linear producing it")
    return s


@register_criterion("bn_scale")
def bn_scale_importance(group: ChannelGroup, model: nn.Module) -> torch.Tensor:
    """Sum of |gamma| over the BN layers of each set (Network Slimming); L1 when no BN touches the group."""
    s = _producer_stat(group, model, lambda m: m.weight.detach().abs() if m.affine else None, (_BN,))
    return s if s is not None else l1_importance(group, model)


@register_criterion("taylor", needs_gradients=True)
def taylor_importance(group: ChannelGroup, model: nn.Module) -> torch.Tensor:
    """(sum over the set's weights and BN affine params of grad * weight)^2 (Molchanov et al. 2019, eq. 8)."""

    def stat(m: nn.Module) -> torch.Tensor | None:
        out = None
        for p in (m.weight, m.bias):
            if p is None or p.grad is None:
                continue
            gw = (p.detach() * p.grad.detach())
            gw = gw.flatten(1).sum(1) if gw.dim() > 1 else gw
            out = gw if out is None else out + gw
        return out

    s = _producer_stat(group, model, stat, _WEIGHTED + (_BN,))
    if s is None:
        raise LightnnError("taylor importance needs gradients: call taylor_gradients(model, data) first")
    return s.pow(2)


@register_criterion("random")
def random_importance(group: ChannelGroup, model: nn.Module) -> torch.Tensor:
    """Uniform random scores (the control)."""
    return torch.rand(group.size)


def get_criterion(criterion: str | Callable) -> Criterion:
    """A registered criterion by name, or ``criterion`` itself when it is a function."""
    if callable(criterion):
        return criterion
    try:
        return CRITERIA[criterion]
    except KeyError:
        raise LightnnError(f"unknown importance criterion {criterion!r}; choose from {criteria()}") from None


def taylor_gradients(model: nn.Module, data: Iterable, loss_fn: Callable | None = None,
                     max_batches: int = 8) -> None:
    """Accumulate ``.grad`` of the loss over up to ``max_batches`` batches of ``(inputs, targets)`` (train mode
    off, so BN statistics are untouched)."""
    loss_fn = loss_fn or F.cross_entropy
    was = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    n = 0
    for n, (x, y) in enumerate(data, 1):
        out = model(x)
        out = out[0] if isinstance(out, (tuple, list)) else out
        loss_fn(out, y).backward()
        if n >= max_batches:
            break
    model.train(was)
    if n == 0:
        raise LightnnError("taylor importance got no batches of data")
