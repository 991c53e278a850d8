"""Channel importance criteria: plain functions ``(group, model) -> scores`` (one score per channel set).

A :class:`~lightnn.compress.channel.ChannelGroup` lists, per layer and dimension, which channels each removable set
covers; a criterion sums its per-channel statistic over every layer that *produces* the set (conv/linear output
rows, BN channels), so a set spread over several coupled layers (a residual stage) is judged by all of them.

- ``l1`` / ``l2``: norm of the filters (Li et al. 2017, "Pruning Filters for Efficient ConvNets").
- ``bn_scale``: |gamma| of the BN layers (Liu et al. 2017, "Network Slimming"); falls back to L1 without BN.
- ``taylor``: first-order Taylor expansion of the loss change, ``(sum_s g_s w_s)^2`` over the set's parameters
  (Molchanov et al. 2019, eq. 8); needs gradients from a batch of data (:func:`taylor_gradients`).
- ``random``: uniform scores, the control every criterion must beat.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import LightnnError
from ..graph import ChannelGroup

__all__ = ["l1_importance", "l2_importance", "bn_scale_importance", "taylor_importance", "random_importance",
           "CRITERIA", "get_criterion", "taylor_gradients"]

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


def l1_importance(group: ChannelGroup, model: nn.Module) -> torch.Tensor:
    """Sum of |W| of the filters producing each set (Li et al. 2017)."""
    s = _producer_stat(group, model, _norm(1), _WEIGHTED)
    if s is None:
        raise LightnnError(f"channel group {group.name!r} has no conv/linear producing it")
    return s


def l2_importance(group: ChannelGroup, model: nn.Module) -> torch.Tensor:
    """Sum of the L2 norms of the filters producing each set."""
    s = _producer_stat(group, model, _norm(2), _WEIGHTED)
    if s is None:
        raise LightnnError(f"channel group {group.name!r} has no conv/linear producing it")
    return s


def bn_scale_importance(group: ChannelGroup, model: nn.Module) -> torch.Tensor:
    """Sum of |gamma| over the BN layers of each set (Network Slimming); L1 when no BN touches the group."""
    s = _producer_stat(group, model, lambda m: m.weight.detach().abs() if m.affine else None, (_BN,))
    return s if s is not None else l1_importance(group, model)


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


taylor_importance.needs_gradients = True  # prune_channels runs taylor_gradients first


def random_importance(group: ChannelGroup, model: nn.Module) -> torch.Tensor:
    """Uniform random scores (the control)."""
    return torch.rand(group.size)


CRITERIA: dict[str, Callable[[ChannelGroup, nn.Module], torch.Tensor]] = {
    "l1": l1_importance, "l2": l2_importance, "bn_scale": bn_scale_importance, "taylor": taylor_importance,
    "random": random_importance,
}


def get_criterion(criterion: str | Callable) -> Callable[[ChannelGroup, nn.Module], torch.Tensor]:
    if callable(criterion):
        return criterion
    try:
        return CRITERIA[criterion]
    except KeyError:
        raise LightnnError(f"unknown importance criterion {criterion!r}; choose from {sorted(CRITERIA)}") from None


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
