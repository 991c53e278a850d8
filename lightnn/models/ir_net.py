"""The generic inverted-residual network: MobileNet V2/V3, MnasNet and searched nets are stage tables fed to it.

A network is stem rows, a table of :class:`IRStage` rows and a head::

    stem rows -> table rows -> 1x1 conv to head_chs -> pool -> [Linear to head_fc_chs -> act] -> dropout -> FC

A row is ``repeats`` blocks of one op, the first with ``stride``:

- ``"ir"``: the inverted residual with linear bottleneck (MobileNetV2, Sandler et al. 2018, arXiv:1801.04381,
  Table 1; MnasNet's MBConv): 1x1 expansion to ``expansion`` x the block input (none at expansion 1) -> KxK
  depthwise -> squeeze-excite -> 1x1 linear projection;
- ``"ds"``: depthwise-separable (MnasNet's SepConv): KxK depthwise -> squeeze-excite -> 1x1 linear projection;
- ``"conv"``: a KxK conv-BN-act (the stems; a block op of MnasNet's search space).

Each block adds an identity shortcut when its row has ``skip`` and the shapes allow (stride 1, same width). These
are the per-block choices of MnasNet's search space (Tan et al. 2019, arXiv:1807.11626, Sec. 4.1: op, kernel 3/5,
squeeze-excite ratio 0/0.25, skip or not, number of layers, width), so a searched network is the registry name
``ir_net`` plus its table. Rows are plain data (:meth:`IRStage.to_dict`, :func:`parse_table`): a checkpoint stores
the table in ``arch_kwargs`` and rebuilds the network without pickled code.

Widths (stem, table ``channels`` and ``exp_chs``) are scaled by ``width_mult`` and rounded by
:func:`~lightnn.models._base.make_divisible` to a multiple of ``round_to`` (8: torchvision's rule; 1 keeps any
width at ``width_mult=1``). The head widths are taken as given.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Callable

import torch
import torch.nn as nn

from ..errors import LightnnError
from ..ops import ConvBNAct, SqueezeExcite, get_act
from ..ops.conv import ActLike, NormLike, call_flat
from ._base import ClassifierModel, init_weights, make_divisible
from ._registry import register_model

__all__ = ["IRStage", "IRNet", "InvertedResidual", "Residual", "separable_conv", "conv_block", "parse_table",
           "table_to_data", "cifar_table", "OPS", "DEFAULT_STEM"]

OPS = ("ir", "ds", "conv")


class InvertedResidual(nn.Module):
    """1x1 expand -> KxK depthwise -> (squeeze-excite) -> 1x1 linear projection, residual when shapes allow.

    Paper Table 1: a bottleneck with expansion t maps k -> tk -> k' channels; the projection has no activation
    ("linear bottleneck", Sec. 3.2) because ReLU in a low-dimensional space destroys information. The expansion
    conv is skipped when ``exp_chs == in_chs`` (t = 1), as in torchvision; ``skip=False`` drops the shortcut.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int, exp_chs: int, kernel_size: int = 3,
                 act: ActLike = "relu6", se_rd_chs: int = 0, se_gate: ActLike = "sigmoid",
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1, skip: bool = True,
                 norm_layer: NormLike = nn.BatchNorm2d) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise LightnnError(f"InvertedResidual: stride must be 1 or 2, got {stride}")
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum, norm_layer=norm_layer)
        self.use_res = skip and stride == 1 and in_chs == out_chs
        # absent pieces are skipped by flags, not nn.Identity modules: each module call costs time in eager mode
        self.has_pw, self.has_se = exp_chs != in_chs, bool(se_rd_chs)
        self.conv_pw = ConvBNAct(in_chs, exp_chs, 1, act=act, **bn) if self.has_pw else nn.Identity()
        self.conv_dw = ConvBNAct(exp_chs, exp_chs, kernel_size, stride, groups=exp_chs, act=act, **bn)
        self.se = SqueezeExcite(exp_chs, se_rd_chs, act="relu", gate=se_gate) if self.has_se else nn.Identity()
        self.conv_pwl = ConvBNAct(exp_chs, out_chs, 1, act=None, **bn)
        self.in_chs, self.out_chs, self.stride = in_chs, out_chs, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mods = self._modules  # a dict lookup instead of nn.Module.__getattr__ per child: eager batch-1 overhead
        y = call_flat(mods["conv_pw"], x) if self.has_pw else x
        y = call_flat(mods["conv_dw"], y)
        y = call_flat(mods["conv_pwl"], mods["se"](y) if self.has_se else y)
        return x + y if self.use_res else y


class Residual(nn.Sequential):
    """``x + layers(x)``: an ``nn.Sequential`` with an identity shortcut. The layers keep their names, so the state
    dict reads as the plain Sequential's would."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for m in self._modules.values():
            y = call_flat(m, y)
        return x + y


def separable_conv(in_chs: int, out_chs: int, stride: int = 1, kernel_size: int = 3, act: ActLike = "relu",
                   se_rd_chs: int = 0, se_gate: ActLike = "sigmoid", skip: bool = False, bn_eps: float = 1e-5,
                   bn_momentum: float = 0.1, norm_layer: NormLike = nn.BatchNorm2d) -> nn.Sequential:
    """KxK depthwise conv-BN-act -> (squeeze-excite) -> 1x1 linear conv-BN, children ``dw``, ``se``, ``pw``.

    A plain ``nn.Sequential`` (run flat, no module call of its own) unless the shortcut applies (:class:`Residual`).
    """
    bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum, norm_layer=norm_layer)
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        dw=ConvBNAct(in_chs, in_chs, kernel_size, stride, groups=in_chs, act=act, **bn))
    if se_rd_chs:
        layers["se"] = SqueezeExcite(in_chs, se_rd_chs, act="relu", gate=se_gate)
    layers["pw"] = ConvBNAct(in_chs, out_chs, 1, act=None, **bn)
    return Residual(layers) if skip and stride == 1 and in_chs == out_chs else nn.Sequential(layers)


def conv_block(in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1, act: ActLike = "relu",
               skip: bool = False, bn_eps: float = 1e-5, bn_momentum: float = 0.1,
               norm_layer: NormLike = nn.BatchNorm2d) -> nn.Sequential:
    """A KxK :class:`ConvBNAct`; with the shortcut (``skip``, stride 1, same width) ``x + act(bn(conv(x)))``."""
    unit = ConvBNAct(in_chs, out_chs, kernel_size, stride, act=act, bn_eps=bn_eps, bn_momentum=bn_momentum,
                     norm_layer=norm_layer)
    return Residual(OrderedDict(unit.named_children())) if skip and stride == 1 and in_chs == out_chs else unit


def _is_int(v: Any) -> bool:
    return isinstance(v, Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


@dataclass(frozen=True)
class IRStage:
    """One row of a stage table: ``repeats`` blocks of ``op``, the first with ``stride``.

    The positional order is torchvision's ``t, c, n, s`` then kernel, squeeze-excite ratio and activation:
    ``IRStage(6, 24, 2, 2)`` is MobileNetV2's second row. ``channels`` and ``exp_chs`` are widths before
    ``width_mult``. ``exp_chs`` > 0 gives the expanded width directly (MobileNetV3's tables) instead of
    ``expansion`` x the block input. ``se`` is the squeeze-excite ratio (0: none), of the width the network's
    ``se_from`` names. ``act`` None takes the network's activation. ``skip=False`` drops the identity shortcut.
    Invalid values raise :class:`~lightnn.errors.LightnnError` (a ``ValueError``) naming the field.
    """

    expansion: float
    channels: int
    repeats: int = 1
    stride: int = 1
    kernel: int = 3
    se: float = 0.0
    act: str | None = None
    op: str = "ir"
    skip: bool = True
    exp_chs: int = 0

    def __post_init__(self) -> None:
        # numbers are stored as Python int / float (a NumPy scalar would not load with weights_only=True)
        for name in ("channels", "repeats", "stride", "kernel", "exp_chs"):
            if not _is_int(getattr(self, name)):
                self._bad(name, "must be an integer")
            object.__setattr__(self, name, int(getattr(self, name)))
        for name in ("expansion", "se"):
            v = getattr(self, name)
            if not _is_real(v):
                self._bad(name, "must be a number")
            if type(v) not in (int, float):  # np.float64 subclasses float but is not plain data
                object.__setattr__(self, name, float(v))
        if self.op not in OPS:
            self._bad("op", f"must be one of {list(OPS)}")
        for name in ("channels", "repeats"):
            if getattr(self, name) < 1:
                self._bad(name, "must be >= 1")
        if self.stride not in (1, 2):
            self._bad("stride", "must be 1 or 2")
        if self.kernel < 1 or self.kernel % 2 == 0:
            self._bad("kernel", "must be an odd size >= 1 ('same' padding keeps the map size)")
        if not 0 <= self.se <= 1:
            self._bad("se", "is a squeeze-excite ratio in [0, 1] (0: none)")
        if self.expansion <= 0:
            self._bad("expansion", "must be > 0")
        if self.exp_chs < 0:
            self._bad("exp_chs", "must be >= 0 (0: expansion x the block input)")
        if self.exp_chs and self.expansion != 1:
            self._bad("exp_chs", f"and expansion={self.expansion!r} both set the expanded width: give one")
        if self.op != "ir":
            for name, unset in (("expansion", 1), ("exp_chs", 0)):
                if getattr(self, name) != unset:
                    self._bad(name, f"must be {unset}: op {self.op!r} has no expansion")
        if self.op == "conv" and self.se:
            self._bad("se", "must be 0: op 'conv' has no squeeze-excite")
        if not isinstance(self.skip, bool):
            self._bad("skip", "must be true or false")
        if self.act is not None:
            if not isinstance(self.act, str):
                self._bad("act", "must be an activation name (a string) or None")
            try:
                get_act(self.act)
            except LightnnError as e:
                raise LightnnError(f"IRStage.act: {e}") from None

    def _bad(self, name: str, what: str) -> None:
        raise LightnnError(f"IRStage.{name} {what}, got {getattr(self, name)!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IRStage:
        """A row from its plain-data form (the keys of :meth:`to_dict`; ``expansion`` and ``channels`` required)."""
        if not isinstance(data, Mapping):
            raise LightnnError(
                f"a row must be an IRStage or a mapping of its fields, got {type(data).__name__} {data!r}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(str(k) for k in data if k not in names)
        if unknown:
            raise LightnnError(f"unknown field(s) {unknown}; an IRStage has {names}")
        missing = [n for n in ("expansion", "channels") if n not in data]
        if missing:
            raise LightnnError(f"missing field(s) {missing}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain data (JSON / YAML / a checkpoint's ``arch_kwargs``)."""
        return dataclasses.asdict(self)


def parse_table(rows: Sequence[IRStage | Mapping[str, Any]], what: str = "table",
                allow_empty: bool = False) -> tuple[IRStage, ...]:
    """``rows`` (IRStage instances or their dict form) as a tuple of IRStage; errors name ``what`` and the row."""
    if isinstance(rows, (str, bytes, Mapping)) or not isinstance(rows, Sequence):
        raise LightnnError(f"{what} must be a list of rows (IRStage or dicts of its fields), got {type(rows).__name__}")
    if not rows and not allow_empty:
        raise LightnnError(f"{what} must have at least one row")
    out = []
    for i, row in enumerate(rows):
        try:
            out.append(row if isinstance(row, IRStage) else IRStage.from_dict(row))
        except LightnnError as e:
            raise LightnnError(f"{what} row {i}: {e}") from None
    return tuple(out)


def table_to_data(rows: Sequence[IRStage | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The plain-data form of a table: a list of dicts that JSON, YAML and ``torch.load(weights_only=True)`` keep."""
    return [row.to_dict() for row in parse_table(rows)]


def cifar_table(rows: Sequence[IRStage]) -> tuple[IRStage, ...]:
    """The same rows with the first stride-2 row at stride 1. Applied to the stem and to the table of an ImageNet
    network it keeps a 32x32 input at 4x4 by the last stage instead of 1x1."""
    rows = tuple(rows)
    first = next((i for i, row in enumerate(rows) if row.stride == 2), None)
    if first is None:
        return rows
    return rows[:first] + (dataclasses.replace(rows[first], stride=1),) + rows[first + 1:]


# a 3x3 stride-2 conv to 32 channels: the stem of MobileNetV2 and MnasNet
DEFAULT_STEM: tuple[IRStage, ...] = (IRStage(1, 32, 1, 2, op="conv", skip=False),)


@dataclass(frozen=True)
class _Builder:
    """The network-wide rules that turn a row into blocks."""

    width_mult: float
    round_to: int
    act: ActLike
    se_gate: ActLike
    se_from: str
    se_round_to: int
    block: Callable[..., nn.Module]
    norm: dict

    def width(self, chs: int) -> int:
        return make_divisible(chs * self.width_mult, self.round_to)

    def blocks(self, row: IRStage, in_c: int) -> tuple[list[nn.Module], int]:
        out_c = self.width(row.channels)
        act = self.act if row.act is None else row.act
        mods: list[nn.Module] = []
        for i in range(row.repeats):
            stride = row.stride if i == 0 else 1
            if row.op == "conv":
                mods.append(conv_block(in_c, out_c, row.kernel, stride, act, row.skip, **self.norm))
                in_c = out_c
                continue
            exp_c = in_c if row.op == "ds" else (
                self.width(row.exp_chs) if row.exp_chs else int(round(in_c * row.expansion)))
            rd = make_divisible((exp_c if self.se_from == "exp" else in_c) * row.se, self.se_round_to) if row.se else 0
            if row.op == "ds":
                mods.append(separable_conv(in_c, out_c, stride, row.kernel, act, rd, self.se_gate, row.skip,
                                           **self.norm))
            else:
                mods.append(self.block(in_c, out_c, stride, exp_c, row.kernel, act=act, se_rd_chs=rd,
                                       se_gate=self.se_gate, skip=row.skip, **self.norm))
            in_c = out_c
        return mods, out_c


class IRNet(ClassifierModel):
    """Stem rows -> table rows -> 1x1 head conv -> pool -> [Linear -> act] -> dropout -> FC.

    ``act`` is the activation of the stem, the head and every row whose ``act`` is None; ``block`` builds the
    ``"ir"`` rows (called as :class:`InvertedResidual` is) and ``norm_layer`` every norm, so an ablation costs a
    line. Squeeze-excite widths are ``make_divisible(se x base, se_round_to)``, the base being the expanded width
    (``se_from="exp"``, MobileNetV3) or the block input (``"in"``, the official MnasNet code), gated by
    ``se_gate``. ``nest_stages`` puts each table row's blocks in one ``nn.Sequential`` (MnasNet's state-dict
    layout, ``features.2.0...``); otherwise every block sits directly in ``features`` (torchvision's MobileNets).
    ``head_chs=0`` leaves out the head conv. ``num_features`` is the width of the last feature map; with
    ``head_fc_chs`` (MobileNetV3's "efficient last stage": pooled Linear -> act before the classifier)
    ``forward_head(pre_logits=True)`` returns the pooled features before that Linear. ``table`` and ``stem_rows``
    keep the rows the network was built from.
    """

    def __init__(self, table: Sequence[IRStage | Mapping[str, Any]], *,
                 stem: Sequence[IRStage | Mapping[str, Any]] = DEFAULT_STEM, num_classes: int = 1000,
                 in_chans: int = 3, width_mult: float = 1.0, round_to: int = 8, act: ActLike = "relu6",
                 head_chs: int = 1280, head_fc_chs: int = 0, drop_rate: float = 0.2, se_gate: ActLike = "sigmoid",
                 se_from: str = "exp", se_round_to: int = 8, bn_eps: float = 1e-5, bn_momentum: float = 0.1,
                 nest_stages: bool = False, block: Callable[..., nn.Module] = InvertedResidual,
                 norm_layer: NormLike = nn.BatchNorm2d) -> None:
        super().__init__()
        self.table, self.stem_rows = parse_table(table, "table"), parse_table(stem, "stem", allow_empty=True)
        if not _is_real(width_mult) or width_mult <= 0:
            raise LightnnError(f"width_mult must be a number > 0, got {width_mult!r}")
        for name, v, low in (("round_to", round_to, 1), ("se_round_to", se_round_to, 1), ("head_chs", head_chs, 0),
                             ("head_fc_chs", head_fc_chs, 0)):
            if not _is_int(v) or v < low:
                raise LightnnError(f"{name} must be an integer >= {low}, got {v!r}")
        if se_from not in ("exp", "in"):
            raise LightnnError(f"se_from must be 'exp' (the expanded width) or 'in' (the block input), got {se_from!r}")
        if not _is_real(drop_rate) or not 0 <= drop_rate < 1:
            raise LightnnError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        for name, a in (("act", act), ("se_gate", se_gate)):
            try:
                get_act(a)
            except LightnnError as e:
                raise LightnnError(f"{name}: {e}") from None
        norm = dict(bn_eps=bn_eps, bn_momentum=bn_momentum, norm_layer=norm_layer)
        build = _Builder(width_mult, round_to, act, se_gate, se_from, se_round_to, block, norm)
        layers: list[nn.Module] = []
        in_c = in_chans
        for what, rows in (("stem", self.stem_rows), ("table", self.table)):
            for i, row in enumerate(rows):
                try:
                    mods, in_c = build.blocks(row, in_c)
                except LightnnError as e:
                    raise LightnnError(f"{what} row {i}: {e}") from None
                layers += [nn.Sequential(*mods)] if nest_stages and what == "table" else mods
        if head_chs:
            layers.append(ConvBNAct(in_c, head_chs, 1, act=act, **norm))
            in_c = head_chs
        self.features = nn.Sequential(*layers)
        # registered in torchvision's order (pool, [head Linear, act], dropout, classifier): foreign state dicts
        # are paired with ours by position
        self.num_features, self.num_classes, self.drop_rate = in_c, num_classes, drop_rate
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.has_head_fc = bool(head_fc_chs)
        if head_fc_chs:
            self.head_fc = nn.Linear(in_c, head_fc_chs)
            self.head_act = get_act(act)
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.classifier = nn.Linear(head_fc_chs or in_c, num_classes) if num_classes > 0 else nn.Identity()
        init_weights(self)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.global_pool(x), 1)
        if pre_logits:
            return x
        if self.has_head_fc:
            x = self.head_act(self.head_fc(x))
        return self.classifier(self.dropout(x))

    def feature_width(self) -> int:
        # the head Linear (MobileNetV3) reads the pooled feature map; the classifier reads the head's output
        return self.head_fc.in_features if self.has_head_fc else super().feature_width()

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        width = self.head_fc.out_features if self.has_head_fc else self.num_features  # right after pruning too
        self.classifier = nn.Linear(width, num_classes) if num_classes > 0 else nn.Identity()


@register_model
def ir_net(*, table: Sequence[IRStage | Mapping[str, Any]] | None = None,
           stem: Sequence[IRStage | Mapping[str, Any]] | None = None, num_classes: int = 1000, in_chans: int = 3,
           width_mult: float = 1.0, round_to: int = 8, act: str = "relu6", head_chs: int = 1280,
           head_fc_chs: int = 0, drop_rate: float = 0.2, se_gate: str = "sigmoid", se_from: str = "exp",
           se_round_to: int = 8, bn_eps: float = 1e-5, bn_momentum: float = 0.1, nest_stages: bool = False) -> IRNet:
    """Any :class:`IRNet` from plain data, e.g. ``create_model("ir_net", table=[{"expansion": 6, "channels": 24,
    "repeats": 2, "stride": 2}, ...])``. Without a table it is MobileNetV2 (the table torchvision's MobileNetV2
    defaults to); without a stem, :data:`DEFAULT_STEM`."""
    if table is None:
        from .mobilenet_v2 import MOBILENET_V2_TABLE  # here, not at the top: mobilenet_v2 imports this module

        table = MOBILENET_V2_TABLE
    return IRNet(table, stem=DEFAULT_STEM if stem is None else stem, num_classes=num_classes, in_chans=in_chans,
                 width_mult=width_mult, round_to=round_to, act=act, head_chs=head_chs, head_fc_chs=head_fc_chs,
                 drop_rate=drop_rate, se_gate=se_gate, se_from=se_from, se_round_to=se_round_to, bn_eps=bn_eps,
                 bn_momentum=bn_momentum, nest_stages=nest_stages)
