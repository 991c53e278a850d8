"""Structured channel pruning that removes channels for real, across every coupling a CNN graph has.

Which channels must go together is the analysis of :mod:`lightnn.graph` (:func:`build_dependency_graph`: an fx
trace, a union-find over channel variables and one registered coupling rule per op; see that package to teach it
a new module type). This module turns its removable sets into edits:

- :func:`prune_channels` ranks each :class:`ChannelGroup` with an importance criterion
  (:mod:`lightnn.compress.importance`), keeps hardware-friendly widths (:func:`round_keep`) and shrinks the model;
- :func:`shrink` / :func:`apply_channel_spec` write new, smaller modules in place, each rebuilt by the shrink rule
  registered for its type (``nn.Conv2d`` / ``nn.BatchNorm2d`` / ``nn.Linear`` / shuffle, split, permute built in).
  The edit is recorded as plain data (kept channel indices per layer) in the model's record (``record_of(model).transforms``) under the
  checkpoint transform ``"channels"``, so a pruned checkpoint rebuilds with ``create_model(checkpoint=...)``;
- :func:`mask_model` / :func:`verify_shrink` are the oracle: the shrunk model must equal the original with the
  removed channels zeroed where they are consumed.
"""

from __future__ import annotations

import copy
import functools
import math
from typing import Callable, Iterable, Sequence

import torch
import torch.nn as nn

from ..errors import LightnnError
from ..models import record_edit, record_of
from ..utils.machine import cpu_flags
from ..graph import ChannelGroup, DependencyGraph, build_dependency_graph
from ..transforms.channels import apply_channel_spec
from .importance import get_criterion, taylor_gradients

__all__ = [
    "ChannelGroup", "DependencyGraph", "build_dependency_graph", "prune_channels", "shrink", "apply_channel_spec",
    "mask_model", "verify_shrink", "channel_spec", "deployment_channel_multiple", "resolve_round_to", "round_keep",
]


# ---------------------------------------------------------------------------------------------------------------
# shrinking: plain-data spec -> smaller modules


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
    return record_edit(model, spec)


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
        rec = record_of(pruned)
        specs = [t for t in (rec.transforms if rec is not None else ()) if t.get("kind") == "channels"]
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
    return 16 if "avx512f" in (cpu_flags() or ()) else 8


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

    ``criterion`` is a registered name (:func:`lightnn.compress.importance.criteria`: l1, l2, bn_scale, taylor,
    random, and any added with ``register_criterion``) or a function ``(group, model) -> scores``; ``scope="layer"`` ranks inside each group, ``"global"`` ranks all
    groups together (scores normalized by each group's mean) and removes the overall ``ratio`` of channel sets.
    Taylor needs ``data`` (batches of ``(x, y)``). Kept widths are rounded to multiples of ``round_to``.
    Returns the pruned model (a copy unless ``inplace``) with the edit added to its record.
    """
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
