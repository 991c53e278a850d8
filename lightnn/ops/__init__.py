"""Building blocks (``lightnn.ops``): conv variants, shuffle/split, IGC blocks, Inception modules, versatile and
low-rank convolutions, activations and squeeze-excite."""

from .activations import HSigmoid, HSwish, Swish, get_act
from .conv import ConvBNAct, DepthwiseSeparable, check_groups, conv2d, depthwise_conv, group_conv, pointwise_conv
from .se import SqueezeExcite
from .shuffle import ChannelPermute, ChannelShuffle, ChannelSplit

__all__ = [
    "HSigmoid", "HSwish", "Swish", "get_act",
    "ConvBNAct", "DepthwiseSeparable", "check_groups", "conv2d", "depthwise_conv", "group_conv", "pointwise_conv",
    "SqueezeExcite", "ChannelPermute", "ChannelShuffle", "ChannelSplit",
]
