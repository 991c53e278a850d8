"""Building blocks (``lightnn.ops``): conv variants, shuffle/split, IGC blocks, Inception modules, versatile and
low-rank convolutions, activations and squeeze-excite."""

from .activations import HSigmoid, HSwish, Swish, get_act
from .conv import ConvBNAct, DepthwiseSeparable, check_groups, conv2d, depthwise_conv, group_conv, pointwise_conv
from .inception import InceptionA, InceptionAux, InceptionB, InceptionC, InceptionD, InceptionE, basic_conv  # noqa: F401
from .factorized import Factorized5x5, FactorizedNxN
from .igc import (ComplementaryReport, GroupStructure, IGCV1Block, IGCV2Block, IGCV3Block, complementary_condition,
                  dense_equivalent_weight, igcv1_params, igcv2_branch_sizes, igcv2_optimal_depth)
from .lowrank import LowRankConv2d, LowRankLinear
from .se import SqueezeExcite
from .shuffle import ChannelPermute, ChannelShuffle, ChannelSplit
from .versatile import ChannelVersatileConv2d, SpatialVersatileConv2d

__all__ = [
    "HSigmoid", "HSwish", "Swish", "get_act",
    "ConvBNAct", "DepthwiseSeparable", "check_groups", "conv2d", "depthwise_conv", "group_conv", "pointwise_conv",
    "SqueezeExcite", "ChannelPermute", "ChannelShuffle", "ChannelSplit",
    "Factorized5x5", "FactorizedNxN",
    "ComplementaryReport", "GroupStructure", "IGCV1Block", "IGCV2Block", "IGCV3Block", "complementary_condition",
    "dense_equivalent_weight", "igcv1_params", "igcv2_branch_sizes", "igcv2_optimal_depth",
    "LowRankConv2d", "LowRankLinear", "ChannelVersatileConv2d", "SpatialVersatileConv2d",
]
