"""lightnn's own zoo families (not in torchvision), checked against the papers' numbers (each table named below).

Counting conventions: MACs are multiply-adds of convolutions and FC layers, as
``lightnn.profile`` counts them; the papers' "Mult-Adds" (MobileNet), "FLOPs" (ShuffleNet, "floating-point
multiplication-adds", classifier included) and ResNet's "FLOPs" are all multiply-adds. Parameter counts include
BN affine parameters and biases; papers that round to 0.1 M (MobileNet Table 6, ResNet Table 6, megvii's
ShuffleNet README) are compared at their printed precision. Models are built on the ``meta`` device where only
shapes matter, so counting an ImageNet-size net costs no arithmetic.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import lightnn
from lightnn.errors import LightnnError
from lightnn.models.resnet_cifar import PadShortcut
from lightnn.models.shufflenet_v1 import ShuffleUnitV1
from lightnn.ops.shuffle import ChannelShuffle

_CACHE: dict = {}


def _report(name: str, size: tuple[int, ...], **kwargs):
    """``lightnn.profile`` of a model built on the meta device (shapes only), cached per configuration."""
    key = (name, size, tuple(sorted(kwargs.items())))
    if key not in _CACHE:
        with torch.device("meta"):
            model = lightnn.create_model(name, **kwargs)
        _CACHE[key] = lightnn.profile(model, size)
    return _CACHE[key]


def _params(name: str, **kwargs) -> int:
    with torch.device("meta"):
        model = lightnn.create_model(name, **kwargs)
    return sum(p.numel() for p in model.parameters())


def _model_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _close(value: float, paper: float, rel: float = 0.02) -> bool:
    return abs(value - paper) <= rel * paper


def _printed(value_m: float, paper_m: float, decimals: int = 1) -> bool:
    """A count in millions equals a paper value printed with ``decimals`` decimals (half a unit either way)."""
    return abs(value_m - paper_m) <= 0.5 * 10 ** -decimals + 1e-9


# ---------------------------------------------------------------------------------------------- MobileNet V1


@pytest.mark.parametrize("width, macs_m, params_m, conv_fc_params_m", [
    # Table 6 (M Mult-Adds, M Params); conv+FC params summed from the layer shapes of Table 1
    (1.0, 569, 4.2, 4.210),
    (0.75, 325, 2.6, 2.569),
    (0.5, 149, 1.3, 1.321),
    (0.25, 41, 0.5, 0.465),
])
def test_mobilenet_v1_width_multiplier(width, macs_m, params_m, conv_fc_params_m):
    r = _report("mobilenet_v1", (1, 3, 224, 224), width_mult=width)
    assert _close(r.macs / 1e6, macs_m), r.macs
    assert _printed(r.params / 1e6, params_m), r.params
    with torch.device("meta"):
        model = lightnn.create_model("mobilenet_v1", width_mult=width)
    conv_fc = sum(m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
                  for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert abs(conv_fc / 1e6 - conv_fc_params_m) < 0.0015


@pytest.mark.parametrize("res, macs_m", [(224, 569), (192, 418), (160, 290), (128, 186)])  # Table 7
def test_mobilenet_v1_resolution(res, macs_m):
    r = _report("mobilenet_v1", (1, 3, res, res))
    assert _close(r.macs / 1e6, macs_m), r.macs
    assert _printed(r.params / 1e6, 4.2)  # resolution does not change the parameters


def test_mobilenet_v1_width_and_resolution_together():
    r = _report("mobilenet_v1", (1, 3, 160, 160), width_mult=0.5)  # Table 8: 0.50 MobileNet-160, 76 M, 1.32 M
    assert _close(r.macs / 1e6, 76), r.macs
    assert _printed(r.params / 1e6, 1.32, 2) or _close(r.params / 1e6, 1.32, rel=0.01)


def test_mobilenet_v1_table4_ablations():
    """Table 4 through the data-driven model: full convs instead of depthwise-separable ones (injected block)
    give 4866 M / 29.3 M; dropping the five 14x14x512 units (a shorter table) gives 307 M / 2.9 M (Table 5)."""
    from lightnn.models.mobilenet_v1 import MOBILENET_V1_CFG, MobileNetV1
    from lightnn.ops.conv import ConvBNAct

    with torch.device("meta"):
        full = MobileNetV1(block=lambda i, o, stride, act: ConvBNAct(i, o, 3, stride, act=act))
        shallow = MobileNetV1(MOBILENET_V1_CFG[:6] + MOBILENET_V1_CFG[11:])
    for model, macs_m, params_m in ((full, 4866, 29.3), (shallow, 307, 2.9)):
        r = lightnn.profile(model, (1, 3, 224, 224))
        assert _close(r.macs / 1e6, macs_m), r.macs
        assert _printed(r.params / 1e6, params_m), r.params


def test_mobilenet_v1_named_widths_equal_width_mult():
    for name, w in (("mobilenet_v1_075", 0.75), ("mobilenet_v1_050", 0.5), ("mobilenet_v1_025", 0.25)):
        assert _params(name) == _params("mobilenet_v1", width_mult=w)


def test_mobilenet_v1_table2_layer_types():
    """Table 2 over conv and FC layers. The paper prints 1.19% for the 3x3 stem conv, but Table 1's stem
    (112x112x3x3x3x32 = 10.8 M of 569 M) is 1.90%; the other rows match to 0.01 (mult-adds) and 0.05 (params)
    percentage points (the paper's params shares are over weights with BN folded or not counted)."""
    r = _report("mobilenet_v1", (1, 3, 224, 224))
    rows = {row["type"]: row for row in r.by_type(only=["Conv 1x1", "Conv DW 3x3", "Conv 3x3", "Fully Connected"])}
    for kind, macs_pct, params_pct in (("Conv 1x1", 94.86, 74.59), ("Conv DW 3x3", 3.06, 1.06),
                                       ("Fully Connected", 0.18, 24.33)):
        assert abs(rows[kind]["macs_pct"] - macs_pct) < 0.015, (kind, rows[kind])
        assert abs(rows[kind]["params_pct"] - params_pct) < 0.05, (kind, rows[kind])
    assert abs(rows["Conv 3x3"]["macs_pct"] - 1.90) < 0.015
    assert abs(rows["Conv 3x3"]["params_pct"] - 0.02) < 0.015


def test_mobilenet_v1_cifar_keeps_a_2x2_map():
    model = lightnn.create_model("mobilenet_v1_cifar", num_classes=10).eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 1024, 2, 2)
    assert model.default_input_size == (3, 32, 32)


def test_mobilenet_v1_bad_width_is_clear():
    with pytest.raises(LightnnError, match="width_mult must be > 0, got -1"):
        lightnn.create_model("mobilenet_v1", width_mult=-1)


# ---------------------------------------------------------------------------------------------- ShuffleNet V1


@pytest.mark.parametrize("groups, mflops", [(1, 143), (2, 140), (3, 137), (4, 133), (8, 137)])  # Table 1
def test_shufflenet_v1_1x_complexity_per_groups(groups, mflops):
    r = _report("shufflenet_v1", (1, 3, 224, 224), groups=groups)
    assert _close(r.macs / 1e6, mflops), r.macs


@pytest.mark.parametrize("width, groups, mflops, params_m", [
    # megvii-model/ShuffleNet-Series official models (ShuffleNetV1/README.md there): FLOPs (mult-adds), params
    (0.5, 3, 38, 0.7), (0.5, 8, 40, 1.0), (1.0, 3, 138, 1.9), (1.0, 8, 138, 2.4),
    (1.5, 3, 292, 3.4), (1.5, 8, 290, 4.3), (2.0, 3, 524, 5.4), (2.0, 8, 522, 6.5),
    (0.5, 4, 38, None),  # Table 5: ShuffleNet 0.5x (g=4), 38 MFLOPs
])
def test_shufflenet_v1_other_widths(width, groups, mflops, params_m):
    r = _report("shufflenet_v1", (1, 3, 224, 224), groups=groups, width_mult=width)
    assert _close(r.macs / 1e6, mflops), r.macs
    if params_m is not None:  # printed to 0.1 M; 2.0x g=3 is 5.45 M against the README's 5.4 M (within 1%)
        assert _printed(r.params / 1e6, params_m) or _close(r.params / 1e6, params_m, rel=0.01), r.params


@pytest.mark.parametrize("groups", [1, 2, 3, 4])
def test_shufflenet_v1_quarter_width(groups):
    """Table 2 prints one nominal 13 MFLOPs for the 0.25x row; its stem width is unpublished (we use 12, as at
    0.5x), which lands within 4% for g <= 4 (g = 8 needs a 16-channel stem and gives 15.7 M)."""
    r = _report("shufflenet_v1", (1, 3, 224, 224), groups=groups, width_mult=0.25)
    assert _close(r.macs / 1e6, 13, rel=0.04), r.macs


def test_shufflenet_v1_table1_widths_and_explicit_shuffles():
    with torch.device("meta"):
        model = lightnn.create_model("shufflenet_v1", groups=8)
    assert model.stage_chs == (384, 768, 1536) and model.stem_chs == 24
    shuffles = [m for m in model.modules() if isinstance(m, ChannelShuffle)]
    assert len(shuffles) == 4 + 8 + 4 - 1  # every unit but the first (its first 1x1 conv is dense)
    assert all(s.groups == 8 for s in shuffles)


def test_shuffle_lets_every_group_see_every_input_group():
    """Oracle for Sec. 3.1: through the unit's residual branch, one output channel depends on input channels of
    every group only because of the shuffle; without it, it sees one group's channels."""
    torch.manual_seed(0)
    unit = ShuffleUnitV1(24, 24, 12, 1, groups=3).eval()
    x = torch.randn(1, 24, 5, 5, requires_grad=True)

    def reached(u: nn.Module) -> set[int]:
        x.grad = None
        u.conv2(u.dwconv(u.shuffle(u.conv1(x))))[0, 0].sum().backward()
        return {c for c in range(24) if x.grad[0, c].abs().sum() > 0}

    assert reached(unit) == set(range(24))
    unit.shuffle = nn.Identity()
    assert reached(unit) == set(range(8))  # only group 0 of the input


def test_shufflenet_v1_impossible_configs_are_clear():
    with pytest.raises(LightnnError, match=r"groups must be one of \[1, 2, 3, 4, 8\].*got 5"):
        lightnn.create_model("shufflenet_v1", groups=5)
    with pytest.raises(LightnnError, match="bottleneck channels 60 .*do not divide into groups=8"):
        lightnn.create_model("shufflenet_v1", groups=8, stage_chs=(240, 480, 960))
    with pytest.raises(LightnnError, match="stage width 962 must be divisible by 4"):
        lightnn.create_model("shufflenet_v1", groups=3, stage_chs=(240, 480, 962))
    with pytest.raises(LightnnError, match="width_mult must be > 0"):
        lightnn.create_model("shufflenet_v1", width_mult=0)


def test_shufflenet_v1_any_width_builds_and_runs():
    model = lightnn.create_model("shufflenet_v1_cifar", groups=8, width_mult=0.3, num_classes=10).eval()
    assert all(c % 32 == 0 for c in model.stage_chs) and model.stem_chs % 8 == 0
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


# ---------------------------------------------------------------------------------------------- CIFAR ResNets


@pytest.mark.parametrize("name, params_m, decimals", [
    ("resnet20", 0.27, 2), ("resnet32", 0.46, 2), ("resnet44", 0.66, 2), ("resnet56", 0.85, 2), ("resnet110", 1.7, 1),
])
def test_resnet_cifar_params_table6(name, params_m, decimals):
    assert _printed(_params(name, num_classes=10) / 1e6, params_m, decimals)


def test_resnet20_macs():
    # 40.55 M multiply-adds at 32x32 (convs 40.54 M + FC); commonly quoted as 41 M
    r = _report("resnet20", (1, 3, 32, 32), num_classes=10)
    assert _close(r.macs / 1e6, 41), r.macs
    assert r.params == 269_722


def test_option_a_shortcut_is_parameter_free_and_explicit():
    model = lightnn.create_model("resnet20", num_classes=10)
    pads = [m for m in model.modules() if isinstance(m, PadShortcut)]
    assert [(m.stride, m.extra) for m in pads] == [(2, 16), (2, 32)]
    assert sum(len(list(m.parameters())) for m in pads) == 0
    b = _params("resnet20", num_classes=10, shortcut="B")
    assert b - _model_params(model) == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)  # option B adds 1x1 conv + BN


@pytest.mark.parametrize("front", [None, 0, 16])
def test_pad_shortcut_oracle(front):
    """Against a hand-built reference: subsample by 2, zeros around; ``channel_map`` says where inputs land."""
    x = torch.randn(2, 16, 8, 8)
    sc = PadShortcut(2, 16, front=front)
    f = 8 if front is None else front
    ref = torch.cat([torch.zeros(2, f, 4, 4), x[:, :, ::2, ::2], torch.zeros(2, 16 - f, 4, 4)], dim=1)
    out = sc(x)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(out[:, sc.channel_map(16)], x[:, :, ::2, ::2])


def test_resnet_cifar_bad_depth_is_clear():
    from lightnn.models.resnet_cifar import ResNetCifar

    with pytest.raises(LightnnError, match="6n \\+ 2.*got 21"):
        ResNetCifar(21)
    with pytest.raises(LightnnError, match="shortcut must be 'A'"):
        lightnn.create_model("resnet20", shortcut="C")


# ---------------------------------------------------------------------------------------------- LeNets


def _weights_and_biases(model: nn.Module) -> tuple[int, int]:
    w = sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight"))
    b = sum(p.numel() for n, p in model.named_parameters() if n.endswith("bias"))
    return w, b


@pytest.mark.parametrize("name, weights, paper_k, size_kb", [
    # Deep Compression: Table 2-3 "#Weights" 266K / 431K; Table 1 reference sizes 1070 KB / 1720 KB (fp32)
    ("lenet_300_100", 266_200, 266, 1070),
    ("lenet5", 430_500, 431, 1720),
])
def test_lenet_weights_deep_compression(name, weights, paper_k, size_kb):
    model = lightnn.create_model(name, num_classes=10)
    assert model.default_input_size == (1, 28, 28)
    w, b = _weights_and_biases(model)
    assert w == weights
    assert (w + b) // 1000 == paper_k  # 266,610 / 431,080 with biases, truncated to thousands as the paper does
    assert _close(4 * (w + b) / 1000, size_kb, rel=0.01)
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("name, first_fc_in", [("lenet_300_100", 3 * 32 * 32), ("lenet5", 50 * 5 * 5)])
def test_lenet_on_cifar_input(name, first_fc_in):
    model = lightnn.create_model(name, num_classes=10, in_chans=3, img_size=32).eval()
    assert model.default_input_size == (3, 32, 32)
    assert model.pre_logits[1].in_features == first_fc_in
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_lenet5_is_caffe_variant():
    model = lightnn.create_model("lenet5", num_classes=10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(20, (5, 5)), (50, (5, 5))]
    assert not any(isinstance(m, nn.ReLU) for m in model.features)  # Caffe lenet.prototxt: no conv activation
    r = _report("lenet5", (1, 1, 28, 28), num_classes=10)
    assert r.macs == 24 * 24 * 20 * 25 + 8 * 8 * 50 * 20 * 25 + 800 * 500 + 500 * 10


def test_lenet_too_small_input_is_clear():
    with pytest.raises(LightnnError, match="img_size=8 is too small"):
        lightnn.create_model("lenet5", img_size=8)


# ---------------------------------------------------------------------------------------------- AlexNet


def test_alexnet_grouped_params_and_macs():
    """Two-tower AlexNet (Caffe bvlc_alexnet): 60,965,224 params, Deep Compression's "61M"; 724 M multiply-adds,
    MobileNet Table 8's "720" (that table rounds AlexNet's params to 60 M)."""
    r = _report("alexnet_grouped", (1, 3, 224, 224))
    assert r.params == 60_965_224 and round(r.params / 1e6) == 61
    assert _close(4 * r.params / 1e6, 240)  # Deep Compression Table 1: 240 MB reference model (fp32)
    assert _close(r.macs / 1e6, 720), r.macs
    # the towers halve conv2/4/5's weights: 5x5x96x256, 3x3x384x384 and 3x3x384x256 in one tower would be double
    assert _params("alexnet_grouped", groups=1) - r.params == (5 * 5 * 96 * 256 + 9 * 384 * 384 + 9 * 384 * 256) // 2


def test_grouped_conv_is_two_towers():
    """Oracle: conv2 with groups=2 equals two independent convs on the two GPUs' halves, concatenated."""
    torch.manual_seed(0)
    model = lightnn.create_model("alexnet_grouped_cifar", num_classes=10).eval()
    conv2 = [m for m in model.features if isinstance(m, nn.Conv2d)][1]
    assert conv2.groups == 2
    x = torch.randn(1, conv2.in_channels, 7, 7)
    towers = []
    for t in range(2):
        tower = nn.Conv2d(conv2.in_channels // 2, conv2.out_channels // 2, 5, padding=2)
        tower.weight.data = conv2.weight.data[t * 128:(t + 1) * 128].clone()
        tower.bias.data = conv2.bias.data[t * 128:(t + 1) * 128].clone()
        towers.append(tower(x[:, t * 48:(t + 1) * 48]))
    with torch.no_grad():
        torch.testing.assert_close(conv2(x), torch.cat(towers, 1))


def test_alexnet_grouped_bad_groups_is_clear():
    with pytest.raises(LightnnError, match="from 96 to 256 channels cannot be split into groups=3"):
        lightnn.create_model("alexnet_grouped", groups=3)


def test_alexnet_small_cifar_is_fc_heavy():
    # Zhang et al. 2017 ("rethinking generalization") Table 1: small AlexNet on 28x28 crops, 1,387,786 params
    assert _params("alexnet_small_cifar", num_classes=10, img_size=28) == 1_387_786
    model = lightnn.create_model("alexnet_small_cifar", num_classes=10)
    fc = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    assert fc / _model_params(model) > 0.9


# ---------------------------------------------------------------------------------------------- Xception


def test_xception_params_and_maps():
    # Chollet 2017, Table 3: 22,855,952 parameters; Fig. 5: 19x19x728 middle flow, 10x10x2048 exit from 299x299
    assert _params("xception") == 22_855_952
    with torch.device("meta"):
        model = lightnn.create_model("xception").eval()
        mid = model.features[:5](torch.empty(1, 3, 299, 299))
        out = model.forward_features(torch.empty(1, 3, 299, 299))
    assert tuple(mid.shape) == (1, 728, 19, 19)
    assert tuple(out.shape) == (1, 2048, 10, 10)


def test_xception_shortcut_sees_pre_activation_input():
    """The block's leading ReLU must not overwrite the input the shortcut adds (Fig. 5: ReLU is on the branch)."""
    from lightnn.models.xception import XceptionBlock

    torch.manual_seed(0)
    block = XceptionBlock(16, (16, 16, 16)).eval()
    x = torch.randn(1, 16, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(block(x.clone()), block.body(x.clone()) + x)


def test_xception_cifar_small_variant():
    model = lightnn.create_model("xception_cifar", num_classes=10, width_mult=0.25, middle_blocks=2).eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, model.num_features, 2, 2)
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert model.num_features == 512


# ---------------------------------------------------------------------------------------------- registry


def test_own_families_are_listed():
    names = set(lightnn.list_models())
    expected = {"mobilenet_v1", "mobilenet_v1_cifar", "shufflenet_v1", "shufflenet_v1_cifar", "xception",
                "xception_cifar", "lenet_300_100", "lenet5", "alexnet_grouped", "alexnet_grouped_cifar",
                "alexnet_small_cifar", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110"}
    assert expected <= names
    for n in ("mobilenet_v1_cifar", "shufflenet_v1_cifar", "xception_cifar", "alexnet_grouped_cifar", "resnet20"):
        assert lightnn.model_info(n).input_size == (3, 32, 32)
