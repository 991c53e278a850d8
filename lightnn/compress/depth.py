"""Depth pruning: remove whole residual blocks whose shortcut is the identity.

Channel pruning cannot make every layer faster. On CPUs whose kernels work on channel blocks of 16 (ONNX
Runtime's NCHWc convolutions and oneDNN with AVX-512; see :func:`lightnn.compress.channel.deployment_channel_multiple`)
a 16-channel layer costs what it costs at 9 channels, so a ResNet's first stage keeps all of its time however
hard its channels are cut. Removing a block removes all of its time. A block ``y = act(x + f(x))`` with an
identity shortcut becomes ``y = x`` (exactly the block with ``f`` zeroed when ``act`` is a ReLU-like activation
of a non-negative input, as after a previous block's ReLU).

:func:`removable_blocks` finds such blocks by tracing each submodule with torch.fx (any user model built from
standard layers, not only the zoo); :func:`block_sensitivity` scores each block by what removing it alone costs
(any metric, usually validation accuracy, or a latency); :func:`rank_blocks` orders them by score lost, or by
score lost per millisecond saved; :func:`remove_blocks` replaces the chosen blocks by ``nn.Identity`` and
records the plain-data transform ``{"kind": "blocks", "removed": [...]}`` on the model's record, so
:func:`lightnn.checkpoint.load_model` rebuilds the shallower model from its file. Channel pruning
(:func:`lightnn.compress.channel.prune_channels`) can follow on the result; the transforms replay in order.
"""

from __future__ import annotations

import copy
import operator
from typing import Callable, Mapping, Sequence

import torch
import torch.fx as fx
import torch.nn as nn

from ..errors import LightnnError
from ..models import record_edit
from ..transforms import set_module
from ..transforms.blocks import remove_named_blocks

__all__ = ["removable_blocks", "block_sensitivity", "remove_blocks"]

_ADDS = {operator.add, operator.iadd, torch.add}
# pointwise activations that keep an identity shortcut removable: act(x + f(x)) -> act(x) == x for x >= 0
_ACT_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU, nn.Identity)
_ACT_FUNCTIONS = {torch.relu, torch.nn.functional.relu, torch.nn.functional.relu6, torch.nn.functional.hardtanh}


def _shapes(model: nn.Module, example_input: torch.Tensor) -> dict[str, tuple[tuple, tuple]]:
    """(input shape, output shape) of every submodule called once with one tensor, from one forward pass."""
    seen: dict[str, list] = {}
    hooks = []
    for name, m in model.named_modules():
        if not name:
            continue

        def hook(mod, args, out, name=name):
            if len(args) == 1 and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
                seen.setdefault(name, []).append((tuple(args[0].shape), tuple(out.shape)))
            else:
                seen.setdefault(name, []).append(None)

        hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            was = model.training
            model.eval()
            model(example_input)
            model.train(was)
    finally:
        for h in hooks:
            h.remove()
    return {n: calls[0] for n, calls in seen.items() if len(calls) == 1 and calls[0] is not None}


def _identity_residual(block: nn.Module) -> bool:
    """True when ``block``'s graph ends in ``x + f(x)`` (optionally followed by one ReLU-like activation)."""
    try:
        gm = fx.symbolic_trace(block)
    except Exception:  # data-dependent control flow, unsupported ops: not a candidate
        return False
    modules = dict(gm.named_modules())
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        return False
    x = placeholders[0]

    def is_input(n) -> bool:  # the input itself, or the input through an nn.Identity shortcut
        while isinstance(n, fx.Node) and n.op == "call_module" and isinstance(modules.get(n.target), nn.Identity):
            n = n.args[0]
        return n is x

    out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    if not isinstance(out, fx.Node):
        return False
    node = out
    if node.op == "call_module" and isinstance(modules.get(node.target), _ACT_MODULES) and len(node.args) == 1:
        node = node.args[0]
    elif node.op == "call_function" and node.target in _ACT_FUNCTIONS:
        node = node.args[0]
    elif node.op == "call_method" and node.target in ("relu", "relu_"):
        node = node.args[0]
    if not isinstance(node, fx.Node):
        return False
    is_add = (node.op == "call_function" and node.target in _ADDS) or (
        node.op == "call_method" and node.target in ("add", "add_"))
    if not is_add or len(node.args) != 2 or node.kwargs.get("alpha", 1) != 1:
        return False
    a, b = node.args
    return (is_input(a) and isinstance(b, fx.Node) and not is_input(b)) or (
        is_input(b) and isinstance(a, fx.Node) and not is_input(a))


def removable_blocks(model: nn.Module, example_input: torch.Tensor) -> list[str]:
    """Names of the submodules ``act(x + f(x))`` with an identity shortcut and equal input and output shapes.

    Outermost first is not needed: a removable block never contains another removable block's shortcut, and
    nested candidates (a removable block inside a removable block) keep only the outer one.
    """
    shapes = _shapes(model, example_input)
    found: list[str] = []
    for name, m in model.named_modules():
        if not name or name not in shapes or isinstance(m, nn.Identity):
            continue
        if any(name.startswith(f + ".") for f in found):
            continue
        s_in, s_out = shapes[name]
        if s_in == s_out and _identity_residual(m):
            found.append(name)
    return found


def block_sensitivity(model: nn.Module, blocks: Sequence[str], score: Callable[[nn.Module], float]) -> dict[str, float]:
    """``score`` of the model with each block removed alone (the model is left unchanged)."""
    out: dict[str, float] = {}
    for name in blocks:
        kept = model.get_submodule(name)
        set_module(model, name, nn.Identity())
        try:
            out[name] = float(score(model))
        finally:
            set_module(model, name, kept)
    return out


def rank_blocks(score_removed: Mapping[str, float], *, baseline: float | None = None,
                latency_removed: Mapping[str, float] | None = None,
                baseline_latency: float | None = None) -> list[str]:
    """Blocks in the order to remove them, cheapest first.

    ``score_removed`` is a higher-is-better score (validation accuracy) with each block removed alone
    (:func:`block_sensitivity`). Without latencies, blocks whose removal keeps the most score come first. With
    ``latency_removed`` (ms with each block removed alone, e.g. ``block_sensitivity`` over a latency measurement)
    and ``baseline_latency`` (ms of the full model), blocks are ordered by score lost per ms saved, the cheapest way
    to buy speed; a block that saves no measurable time goes after every block that does.
    """
    if latency_removed is None:
        return sorted(score_removed, key=lambda b: -score_removed[b])
    if baseline is None or baseline_latency is None:
        raise LightnnError("ranking blocks by latency needs the full model's score and latency (baseline, "
                           "baseline_latency)")
    missing = sorted(set(score_removed) - set(latency_removed))
    if missing:
        raise LightnnError(f"no latency measured for block(s) {missing}")

    def cost(b: str) -> tuple[int, float]:
        saved = baseline_latency - latency_removed[b]
        lost = max(baseline - score_removed[b], 0.0)
        return (0, lost / saved) if saved > 0 else (1, lost)

    return sorted(score_removed, key=cost)


def remove_blocks(model: nn.Module, names: Sequence[str], example_input: torch.Tensor | None = None, *,
                  inplace: bool = False) -> nn.Module:
    """Replace the residual blocks ``names`` by ``nn.Identity`` and record the edit as a checkpoint transform.

    With ``example_input`` every name is checked to be a removable block (:func:`removable_blocks`) first, so a
    typo or a block whose shortcut is not the identity gets an error naming it instead of a broken model.
    """
    names = list(dict.fromkeys(names))
    if example_input is not None:
        ok = set(removable_blocks(model, example_input))
        bad = [n for n in names if n not in ok]
        if bad:
            raise LightnnError(f"not removable residual block(s) {bad}: a block must compute act(x + f(x)) with an "
                               f"identity shortcut and keep its input shape; removable here: {sorted(ok)}")
    if not inplace:
        model = copy.deepcopy(model)
    remove_named_blocks(model, names)
    return record_edit(model, {"kind": "blocks", "removed": names})
