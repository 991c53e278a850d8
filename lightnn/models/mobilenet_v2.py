"""MobileNet V2 (Sandler et al., CVPR 2018, arXiv:1801.04381): inverted residuals with linear bottlenecks.

The paper's Table 2 fed to :class:`~lightnn.models.ir_net.IRNet`. Matches torchvision ``mobilenet_v2`` exactly
(3,504,872 parameters, ~300 M MACs at 224): the same layers in the same order, so a torchvision state dict loads
through :func:`lightnn.models.convert.load_foreign_state_dict`.
"""

from __future__ import annotations

from ._base import make_divisible
from ._registry import register_model
from .ir_net import DEFAULT_STEM, IRNet, IRStage, cifar_table

__all__ = ["MOBILENET_V2_TABLE"]

# Paper Table 2 (= torchvision inverted_residual_setting), after the 3x3 stride-2 stem conv to 32 (DEFAULT_STEM)
MOBILENET_V2_TABLE: tuple[IRStage, ...] = (
    # t, c, n, s   (expansion, output channels, repeats, stride of the first)
    IRStage(1, 16, 1, 1),
    IRStage(6, 24, 2, 2),
    IRStage(6, 32, 3, 2),
    IRStage(6, 64, 4, 2),
    IRStage(6, 96, 3, 1),
    IRStage(6, 160, 3, 2),
    IRStage(6, 320, 1, 1),
)


def _mobilenet_v2(cifar: bool, num_classes: int, in_chans: int, width_mult: float, drop_rate: float) -> IRNet:
    stem, table = DEFAULT_STEM, MOBILENET_V2_TABLE
    if cifar:  # 32x32: the stem and the 24-channel stage at stride 1, so 32 -> 4 at the last stage
        stem, table = cifar_table(stem), cifar_table(table)
    return IRNet(table, stem=stem, num_classes=num_classes, in_chans=in_chans, width_mult=width_mult, act="relu6",
                 head_chs=make_divisible(1280 * max(1.0, width_mult)),  # the head never shrinks
                 drop_rate=drop_rate)


@register_model(paper="arXiv:1801.04381")
def mobilenet_v2(*, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0, drop_rate: float = 0.2) -> IRNet:
    return _mobilenet_v2(False, num_classes, in_chans, width_mult, drop_rate)


@register_model(input_size=(3, 32, 32), paper="arXiv:1801.04381")
def mobilenet_v2_cifar(*, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0, drop_rate: float = 0.2) -> IRNet:
    return _mobilenet_v2(True, num_classes, in_chans, width_mult, drop_rate)
