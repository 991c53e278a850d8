"""A model as the *units* its deployment runtime runs: the pieces a latency table measures one by one.

A per-op sum ignores what the runtime fuses (ONNX Runtime folds BN into the conv and runs conv + activation as one
kernel; a whole inverted-residual block stays in cache), so the unit is the fused pattern, not the op:

- ``conv``: a conv (+ BN) (+ activation): :class:`~lightnn.ops.ConvBNAct`, or a bare ``Conv2d`` and the BN /
  activation leaves that consume its output directly (fused after tracing);
- ``ir``: a whole inverted-residual block of the stage-table network (:class:`~lightnn.models.ir_net.InvertedResidual`),
  ``residual``: its shortcut rows (:class:`~lightnn.models.ir_net.Residual`), ``ds``: depthwise-separable;
- ``se`` squeeze-excite, ``shuffle`` channel shuffle / permutation, ``split`` channel split, ``pool``, ``linear``
  (+ activation), ``norm`` and ``act`` leaves not fused into a conv;
- ``block``: any other module with children and a forward of its own (a ResNet or ShuffleNet unit: its residual add,
  concat and shuffle are inside it), measured whole;
- ``leaf``: any other leaf module; ``free``: modules that run nothing in inference (Identity, Dropout, Flatten).

:func:`model_units` traces one forward pass (batch 1) with module hooks and returns the units in call order. Each
:class:`Unit` has a canonical key of what decides its cost (kind, input / output channels, kernel, stride, groups,
expansion, H, W, dtype, and a hash of its exact structure) and :meth:`Unit.build` rebuilds it standalone (copies of
its modules with random weights) so a table can time it alone. New module types map to a kind with
:func:`register_unit_kind`.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from math import prod
from typing import Any, Sequence

import torch
import torch.nn as nn

from ..errors import LightnnError
from ..models.record import model_name

__all__ = ["Unit", "model_units", "register_unit_kind", "UNIT_KINDS", "unit_kind_of"]

UNIT_KINDS = ("conv", "ir", "residual", "ds", "se", "shuffle", "split", "pool", "linear", "norm", "act", "block",
              "leaf", "free")
FREE_KIND = "free"

_POOL = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_NORM = (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)
_ACT = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.Sigmoid, nn.GELU, nn.Tanh, nn.LeakyReLU,
        nn.PReLU, nn.ELU)
_FREE = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.Flatten)
_CONTAINERS = (nn.ModuleList, nn.ModuleDict)

_REGISTERED: list[tuple[type, str]] = []


def register_unit_kind(cls: type, kind: str) -> None:
    """Map a module class (and its subclasses) to a unit kind; checked before the built-in rules."""
    if kind not in UNIT_KINDS:
        raise LightnnError(f"register_unit_kind({cls.__name__}): unknown unit kind {kind!r}; kinds: {list(UNIT_KINDS)}")
    _REGISTERED.insert(0, (cls, kind))


def _defaults() -> list[tuple[type, str]]:
    from ..models.ir_net import InvertedResidual, Residual
    from ..ops import ChannelPermute, ChannelShuffle, ChannelSplit, ConvBNAct, DepthwiseSeparable, SqueezeExcite
    from ..ops import HSigmoid, HSwish, Swish

    return [(InvertedResidual, "ir"), (Residual, "residual"), (ConvBNAct, "conv"), (DepthwiseSeparable, "ds"),
            (SqueezeExcite, "se"), ((ChannelShuffle, ChannelPermute, nn.ChannelShuffle), "shuffle"),
            (ChannelSplit, "split"), (_POOL, "pool"), (nn.Linear, "linear"), (nn.Conv2d, "conv"), (_NORM, "norm"),
            ((*_ACT, HSigmoid, HSwish, Swish), "act"), (_FREE, FREE_KIND)]


_DEFAULTS: list[tuple[Any, str]] | None = None


def unit_kind_of(module: nn.Module, root: bool = False) -> str | None:
    """The unit kind of ``module``, or None for a container whose children are the units (the root model, a plain
    ``nn.Sequential``, ``ModuleList``)."""
    global _DEFAULTS
    if _DEFAULTS is None:
        _DEFAULTS = _defaults()
    for cls, kind in _REGISTERED + _DEFAULTS:
        if isinstance(module, cls):
            return kind
    if root or type(module) is nn.Sequential or isinstance(module, _CONTAINERS):
        return None
    return "block" if next(module.children(), None) is not None else "leaf"


def _signature(m: nn.Module) -> str:
    """Everything about a module's structure that can change its cost (not its weights' values)."""
    t = type(m)
    name = f"{t.__module__}.{t.__qualname__}"
    if isinstance(m, _NORM):
        return f"{name}({getattr(m, 'num_features', getattr(m, 'normalized_shape', ''))})"
    if isinstance(m, _FREE):
        return name
    attrs = sorted((k, v) for k, v in vars(m).items()
                   if not k.startswith("_") and k != "training" and isinstance(v, (bool, int, float, str)))
    direct = [tuple(p.shape) for p in m._parameters.values() if p is not None]
    kids = ",".join(f"{n}:{_signature(c)}" for n, c in m.named_children())
    return f"{name}({m.extra_repr()};{attrs};{direct})[{kids}]"


def _first_conv(mods: Sequence[nn.Module]) -> nn.Conv2d | None:
    for m in mods:
        for s in m.modules():
            if isinstance(s, nn.Conv2d):
                return s
    return None


@dataclass
class Unit:
    """One unit of a traced model: its kind, the modules it runs (``members``, called in this order), its module
    path, and the per-sample input / output shapes it ran at (batch excluded)."""

    kind: str
    members: tuple[nn.Module, ...] = field(repr=False)
    name: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    dtype: str = "float32"
    _key: str | None = field(default=None, repr=False)

    def describe(self) -> dict[str, Any]:
        """The readable part of the key: channels, kernel, stride, groups, expansion, H, W."""
        d: dict[str, Any] = {"cin": self.in_shape[0], "cout": self.out_shape[0] if self.out_shape else 0}
        if len(self.in_shape) == 3:
            d["h"], d["w"] = self.in_shape[1], self.in_shape[2]
        conv = _first_conv(self.members)
        if conv is not None:
            d["k"], d["s"], d["g"] = conv.kernel_size[0], conv.stride[0], conv.groups
        if self.kind == "ir":
            dw = getattr(getattr(self.members[0], "conv_dw", None), "conv", None)
            if isinstance(dw, nn.Conv2d):
                d["exp"] = round(dw.in_channels / max(1, self.in_shape[0]), 3)
                d["k"], d["s"] = dw.kernel_size[0], dw.stride[0]
        return d

    @property
    def key(self) -> str:
        """Canonical, hashable: ``kind|cin=..,cout=..,k=..|in=CxHxW|dtype|structure hash``."""
        if self._key is None:
            sig = "|".join(_signature(m) for m in self.members) + f"|{self.in_shape}"
            digest = hashlib.sha1(sig.encode()).hexdigest()[:12]
            desc = ",".join(f"{k}={v}" for k, v in self.describe().items())
            self._key = f"{self.kind}|{desc}|in={'x'.join(map(str, self.in_shape))}|{self.dtype}|{digest}"
        return self._key

    def build(self, seed: int = 0) -> nn.Module:
        """A standalone copy (random weights, eval mode) taking a 4-d batch of :attr:`input_size`."""
        mods = [copy.deepcopy(m) for m in self.members]
        net: nn.Module = mods[0] if len(mods) == 1 else nn.Sequential(*mods)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in net.parameters():
                if p.dtype.is_floating_point:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
        net = _Standalone(net, self.in_shape)
        return net.eval()

    @property
    def input_size(self) -> tuple[int, int, int]:
        """The (C, H, W) a standalone copy takes (non-image inputs are carried as (numel, 1, 1))."""
        return self.in_shape if len(self.in_shape) == 3 else (prod(self.in_shape), 1, 1)  # type: ignore[return-value]


class _Standalone(nn.Module):
    """A unit's modules behind a 4-d input: reshaped to the traced shape first (a Linear takes (N, F)), and only the
    first output of a module returning several (ChannelSplit) kept, so it exports like any model."""

    def __init__(self, net: nn.Module, in_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.net, self.in_shape, self.reshape = net, tuple(in_shape), len(in_shape) != 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reshape:
            x = x.reshape(x.shape[0], *self.in_shape)
        y = self.net(x)
        return y[0] if isinstance(y, (tuple, list)) else y


# pairs a traced unit may absorb the next one into: (last member type, next unit kind)
def _fusable(a: Unit, b: Unit) -> bool:
    last = a.members[-1]
    if b.kind == "norm":
        return a.kind == "conv" and isinstance(last, nn.Conv2d)
    if b.kind == "act":
        return (a.kind == "conv" and isinstance(last, (nn.Conv2d, *_NORM))) or (
            a.kind == "linear" and isinstance(last, nn.Linear)) or a.kind == "norm"
    return False


def _fuse(calls: list[tuple[Unit, int, int]]) -> list[Unit]:
    """Merge conv -> BN -> act (and linear -> act) leaves where one consumes the previous one's output."""
    out: list[tuple[Unit, int, int]] = []
    for u, in_id, out_id in calls:
        if out and out[-1][2] == in_id and _fusable(out[-1][0], u):
            prev, pin, _ = out.pop()
            merged = Unit(kind=prev.kind, members=prev.members + u.members, name=prev.name, in_shape=prev.in_shape,
                          out_shape=u.out_shape, dtype=prev.dtype)
            out.append((merged, pin, out_id))
        else:
            out.append((u, in_id, out_id))
    return [u for u, _, _ in out]


def _shape(t: Any) -> tuple[int, ...]:
    if isinstance(t, torch.Tensor):
        return tuple(t.shape[1:])
    if isinstance(t, (tuple, list)) and t and isinstance(t[0], torch.Tensor):
        return tuple(t[0].shape[1:])
    return ()


def model_units(model: nn.Module, input_size: Sequence[int], include_free: bool = False) -> list[Unit]:
    """The units ``model`` runs on one input of ``input_size`` ((C, H, W) or (N, C, H, W); traced at batch 1), in
    call order; a unit called twice appears twice. Free units (Identity, Dropout, Flatten) only with
    ``include_free``."""
    size = tuple(int(s) for s in input_size)
    if len(size) == 4:
        size = size[1:]
    if len(size) != 3 or any(s < 1 for s in size):
        raise LightnnError(f"model_units: input_size must be (C, H, W) or (N, C, H, W), got {tuple(input_size)}")
    names = {m: n or "(root)" for n, m in model.named_modules()}
    state: dict[str, Any] = {"open": None}
    calls: list[tuple[Unit, int, int]] = []
    keep: list[Any] = []  # outputs held until the end, so no id() is reused by another tensor while tracing

    def pre(m: nn.Module, args: tuple) -> None:
        if state["open"] is not None:
            return
        kind = unit_kind_of(m, root=m is model)
        if kind is None:
            return
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if len(tensors) != 1:
            raise LightnnError(f"model_units: unit {names.get(m, type(m).__name__)} ({type(m).__name__}) takes "
                               f"{len(tensors)} tensor inputs; a unit takes one (register its parent with "
                               "register_unit_kind)")
        state["open"], state["in"] = m, tensors[0]

    def post(m: nn.Module, args: tuple, out: Any) -> None:
        if state["open"] is not m:
            return
        x = state["in"]
        state["open"] = None
        keep.extend([x, out])
        u = Unit(kind=unit_kind_of(m, root=m is model), members=(m,), name=names.get(m, type(m).__name__),
                 in_shape=tuple(x.shape[1:]), out_shape=_shape(out), dtype=str(x.dtype).replace("torch.", ""))
        calls.append((u, id(x), id(out[0] if isinstance(out, (tuple, list)) else out)))

    handles = []
    for m in model.modules():
        handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    modes = {m: m.training for m in model.modules()}
    p = next(model.parameters(), None)
    try:
        model.eval()
        x = torch.randn(1, *size, device=p.device if p is not None else "cpu",
                        dtype=p.dtype if p is not None and p.dtype.is_floating_point else torch.float32)
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        for m, t in modes.items():
            m.train(t)
    units = _fuse(calls)
    return units if include_free else [u for u in units if u.kind != FREE_KIND]
