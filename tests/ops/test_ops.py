"""Building blocks: parameters and multiply-adds against the closed forms (H W N K^2 M / G), shuffle / split /
permute semantics, activations, squeeze-excite, Inception factorizations and versatile filters (merged vs branches)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from lightnn.errors import LightnnError
from lightnn.ops import (ChannelPermute, ChannelShuffle, ChannelSplit, ChannelVersatileConv2d, ConvBNAct,
                         DepthwiseSeparable, Factorized5x5, FactorizedNxN, HSigmoid, HSwish, SpatialVersatileConv2d,
                         SqueezeExcite, Swish, check_groups, conv2d, depthwise_conv, get_act, group_conv,
                         pointwise_conv)
from lightnn.ops.versatile import spatial_masks

H = W = 8


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _macs(m: nn.Module, x: torch.Tensor) -> int:
    """MACs two ways that must agree: torch's FLOP counter / 2 and, when present, lightnn.profile."""
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        m(x)
    macs = fc.get_total_flops() // 2
    try:
        from lightnn.profile import profile
    except ImportError:  # the profiler is another module; its own tests cover it
        return macs
    assert profile(m, tuple(x.shape)).macs == macs
    return macs


# --------------------------------------------------------------------------------------- cost formulas

@pytest.mark.parametrize("N,M,K", [(8, 16, 3), (16, 8, 5), (4, 4, 1)])
def test_standard_conv_cost(N, M, K):
    conv = conv2d(N, M, K)
    assert _params(conv) == K * K * N * M
    assert _macs(conv, torch.randn(1, N, H, W)) == H * W * N * K * K * M


@pytest.mark.parametrize("N,M,K,G", [(8, 16, 3, 2), (12, 24, 3, 4), (16, 16, 1, 8)])
def test_group_conv_cost(N, M, K, G):
    conv = group_conv(N, M, K, groups=G)
    assert _params(conv) == K * K * N * M // G
    assert _macs(conv, torch.randn(1, N, H, W)) == H * W * N * K * K * M // G


@pytest.mark.parametrize("M,K", [(8, 3), (16, 5)])
def test_depthwise_conv_cost(M, K):
    conv = depthwise_conv(M, K)
    assert _params(conv) == K * K * M
    assert _macs(conv, torch.randn(1, M, H, W)) == H * W * K * K * M


@pytest.mark.parametrize("N,M", [(8, 16), (32, 8)])
def test_pointwise_conv_cost(N, M):
    conv = pointwise_conv(N, M)
    assert _params(conv) == N * M
    assert _macs(conv, torch.randn(1, N, H, W)) == H * W * N * M


@pytest.mark.parametrize("N,M,K", [(32, 64, 3), (64, 128, 3), (16, 16, 5)])
def test_depthwise_separable_ratio(N, M, K):
    # H W N K^2 + H W N M versus H W N K^2 M: ratio 1/M + 1/K^2 (N in MobileNet's notation is the output width)
    ds = nn.Sequential(depthwise_conv(N, K), pointwise_conv(N, M))
    std = conv2d(N, M, K)
    x = torch.randn(1, N, H, W)
    macs_ds, macs_std = _macs(ds, x), _macs(std, x)
    assert macs_ds == H * W * N * (K * K + M)
    assert macs_ds / macs_std == pytest.approx(1 / M + 1 / K ** 2)
    block = DepthwiseSeparable(N, M, K)
    assert _params(block) == K * K * N + N * M + 2 * N + 2 * M  # convs + BN affine


def test_width_and_resolution_multipliers_scale_quadratically():
    def cost(a: float, r: float) -> int:
        n, m, h = int(32 * a), int(64 * a), int(16 * r)
        return _macs(conv2d(n, m, 3), torch.randn(1, n, h, h))

    base = cost(1, 1)
    assert cost(0.5, 1) == base // 4
    assert cost(1, 0.5) == base // 4
    assert cost(0.5, 0.5) == base // 16


def test_group_errors_are_clear():
    with pytest.raises(LightnnError, match="divisible by groups=3"):
        group_conv(8, 16, 3, groups=3)
    with pytest.raises(LightnnError, match="groups must be >= 1"):
        check_groups(8, 8, 0)
    with pytest.raises(LightnnError, match="kernel_size"):
        conv2d(8, 8, 0)
    with pytest.raises(LightnnError, match="stride"):
        conv2d(8, 8, 3, stride=0)
    with pytest.raises(LightnnError, match="unknown activation"):
        get_act("gelu7")


# --------------------------------------------------------------------------- shuffle / split / permute

def test_channel_shuffle_semantics():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    # groups=2: (0 1 2 | 3 4 5) -> 0 3 1 4 2 5
    assert ChannelShuffle(2)(x).flatten().tolist() == [0, 3, 1, 4, 2, 5]
    assert ChannelShuffle(3)(x).flatten().tolist() == [0, 2, 4, 1, 3, 5]
    # the permutation tensor describes the module exactly, and shuffling by g then by C/g is the identity
    x = torch.randn(2, 12, 3, 3)
    sh = ChannelShuffle(3)
    torch.testing.assert_close(sh(x), x[:, sh.permutation(12)])
    torch.testing.assert_close(ChannelShuffle(4)(sh(x)), x)
    with pytest.raises(LightnnError):
        sh.permutation(10)
    with pytest.raises(LightnnError):
        ChannelShuffle(0)


def test_channel_split_and_permute_semantics():
    x = torch.randn(2, 10, 3, 3)
    a, b = ChannelSplit(4)(x)
    assert a.shape[1] == 4 and b.shape[1] == 6
    torch.testing.assert_close(torch.cat([a, b], 1), x)
    perm = [3, 0, 2, 1, 4, 5, 9, 8, 7, 6]
    torch.testing.assert_close(ChannelPermute(perm)(x), x[:, perm])
    inv = torch.argsort(torch.tensor(perm))
    torch.testing.assert_close(ChannelPermute(inv)(ChannelPermute(perm)(x)), x)
    with pytest.raises(LightnnError):
        ChannelSplit(0)
    with pytest.raises(LightnnError):
        ChannelPermute([0, 2])


def test_channel_shuffle_kernel_matches_views(monkeypatch):
    # oracle: the native kernel against reshape -> transpose -> reshape, values and gradients, NCHW and NHWC
    from lightnn.ops.shuffle import shuffle_by_views

    for g, x in [(2, torch.randn(2, 12, 5, 3)), (3, torch.randn(1, 12, 4, 4).to(memory_format=torch.channels_last)),
                 (4, torch.randn(1, 8, 1, 1, dtype=torch.float64))]:
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        y = ChannelShuffle(g)(a)
        assert torch.equal(y, shuffle_by_views(b, g))
        w = torch.randn_like(y)
        (y * w).sum().backward()
        (shuffle_by_views(b, g) * w).sum().backward()
        assert torch.equal(a.grad, b.grad)

    def no_kernel(*args):  # a backend without aten.channel_shuffle (MPS, ...)
        raise NotImplementedError("no kernel")

    x = torch.randn(1, 6, 2, 2)
    monkeypatch.setattr(torch, "channel_shuffle", no_kernel)
    assert torch.equal(ChannelShuffle(3)(x), x[:, ChannelShuffle(3).permutation(6)])


def test_channel_split_is_slicing():
    x = torch.randn(2, 10, 3, 3)
    for s in (1, 4, 9, 12):  # 12 > C: everything left, nothing right, as x[:, :12], x[:, 12:]
        a, b = ChannelSplit(s)(x)
        assert torch.equal(a, x[:, :s]) and torch.equal(b, x[:, s:])
        assert a.data_ptr() == x.data_ptr()  # views, no copy


def test_zero_mac_ops_count_zero():
    x = torch.randn(1, 8, 4, 4)
    for m in (ChannelShuffle(2), ChannelPermute(list(range(8))[::-1])):
        assert _macs(m, x) == 0


# ------------------------------------------------------------------------------- units and activations

def test_activations_match_definitions():
    x = torch.linspace(-8, 8, 161)
    torch.testing.assert_close(HSwish()(x), x * F.relu6(x + 3) / 6)
    torch.testing.assert_close(HSigmoid()(x), F.relu6(x + 3) / 6)
    torch.testing.assert_close(Swish()(x), x * torch.sigmoid(x))
    torch.testing.assert_close(get_act("relu6")(x.clone()), x.clamp(0, 6))
    assert isinstance(get_act(None), nn.Identity)
    assert isinstance(get_act("hswish"), HSwish)


def test_conv_bn_act_structure_and_output():
    m = ConvBNAct(4, 8, 3, stride=2, act="relu6").eval()
    assert [n for n, _ in m.named_children()] == ["conv", "bn", "act"]
    assert m.conv.bias is None  # BN follows: the bias would be redundant
    x = torch.randn(2, 4, 9, 9)
    ref = F.relu6(m.bn(m.conv(x)))
    torch.testing.assert_close(m(x), ref)
    assert m(x).shape == (2, 8, 5, 5)
    assert ConvBNAct(4, 8, bn=False).conv.bias is not None


def test_squeeze_excite_matches_formula():
    se = SqueezeExcite(8, 2, act="relu", gate="hsigmoid")
    x = torch.randn(2, 8, 5, 5)
    s = x.mean((2, 3), keepdim=True)
    gate = F.relu6(se.fc2(F.relu(se.fc1(s))) + 3) / 6
    torch.testing.assert_close(se(x), x * gate)
    assert _params(se) == 8 * 2 + 2 + 2 * 8 + 8


# ---------------------------------------------------------------------------- Inception factorizations

def test_factorized_5x5_saves_28_percent():
    C = 16
    x = torch.randn(1, C, H, W)
    fact = Factorized5x5(C, C, bn=False, act=None)
    five = conv2d(C, C, 5, bias=True)
    ratio = _macs(fact, x) / _macs(five, x)
    assert ratio == pytest.approx(18 / 25)  # 28% fewer
    assert fact(x).shape == five(x).shape


def test_factorized_nxn_saves_33_percent_for_3x3():
    C = 16
    x = torch.randn(1, C, H, W)
    fact = FactorizedNxN(C, C, 3, bn=False, act=None)
    ratio = _macs(fact, x) / _macs(conv2d(C, C, 3), x)
    assert ratio == pytest.approx(6 / 9)  # 33% fewer
    assert fact.conv1.conv.kernel_size == (1, 3) and fact.conv2.conv.kernel_size == (3, 1)
    assert fact(x).shape == (1, C, H, W)
    # linear 1xn then nx1 with rank-1 filters equals one n x n conv with the outer-product kernel
    lin = FactorizedNxN(1, 1, 5, bn=False, act=None)
    k = lin.conv2.conv.weight[0, 0, :, 0:1] @ lin.conv1.conv.weight[0, 0, 0:1, :]
    bias = lin.conv2.conv.bias + lin.conv1.conv.bias * lin.conv2.conv.weight.sum()
    xi = torch.randn(1, 1, 9, 9)
    # interior only: the first conv's bias is zero-padded at the border before the second conv
    torch.testing.assert_close(lin(xi)[..., 2:-2, 2:-2],
                               F.conv2d(xi, k[None, None], bias, padding=2)[..., 2:-2, 2:-2], atol=1e-5, rtol=1e-5)
    with pytest.raises(LightnnError, match="odd"):
        FactorizedNxN(4, 4, 4)


# ----------------------------------------------------------------------------------- versatile filters

def test_spatial_masks_definition():
    m = spatial_masks(5)
    assert m.shape == (3, 5, 5)  # s = ceil(5/2)
    assert m[0].sum() == 25 and m[1].sum() == 9 and m[2].sum() == 1
    assert m[2, 2, 2] == 1 and m[1, 0, 2] == 0
    assert spatial_masks(4).shape[0] == 2 and spatial_masks(1).shape[0] == 1


@pytest.mark.parametrize("d,stride,bias", [(3, 1, False), (5, 2, True), (7, 1, True)])
def test_spatial_versatile_merged_equals_branches(d, stride, bias):
    m = SpatialVersatileConv2d(6, 4, d, stride=stride, bias=bias)
    s = (d + 1) // 2
    assert m.out_chs == 4 * s
    assert _params(m) == 4 * 6 * d * d + (4 * s if bias else 0)  # n primary filters only
    x = torch.randn(2, 6, 11, 11)
    y = m(x)
    torch.testing.assert_close(m.merge()(x), y, atol=1e-5, rtol=1e-4)
    # branch i of filter j is the masked filter convolved with the input
    j, i = 1, s - 1
    w = m.weight[j] * spatial_masks(d)[i]
    ref = F.conv2d(x, w[None], None, stride, (d - 1) // 2)[:, 0]
    if bias:
        ref = ref + m.bias[j * s + i]
    torch.testing.assert_close(y[:, j * s + i], ref, atol=1e-5, rtol=1e-4)
    # the naive version sums each filter's secondary outputs into one channel
    summed = y.view(2, 4, s, *y.shape[2:]).sum(2)
    torch.testing.assert_close(m.merge("sum")(x), summed, atol=1e-5, rtol=1e-4)
    # the branch form skips the zero rings: fewer MACs than the merged conv
    assert _macs(m, x) < _macs(m.merge(), x)


@pytest.mark.parametrize("c,c_hat,g", [(8, 4, 2), (8, 8, 1), (9, 3, 3), (6, 1, 1)])
def test_channel_versatile_merged_equals_branches(c, c_hat, g):
    m = ChannelVersatileConv2d(c, 3, c_hat, g, kernel_size=3, bias=True)
    n = (c - c_hat) // g + 1
    assert m.n == n and m.out_chs == 3 * n
    assert _params(m) == 3 * c_hat * 9 + 3 * n
    x = torch.randn(2, c, 7, 7)
    y = m(x)
    torch.testing.assert_close(m.merge()(x), y, atol=1e-5, rtol=1e-4)
    t = n - 1
    ref = F.conv2d(x[:, t * g:t * g + c_hat], m.weight[2:3], m.bias[2 * n + t:2 * n + t + 1], padding=1)
    torch.testing.assert_close(y[:, 2 * n + t:2 * n + t + 1], ref, atol=1e-5, rtol=1e-4)


def test_versatile_errors_are_clear():
    with pytest.raises(LightnnError, match="channel stride"):
        ChannelVersatileConv2d(8, 2, 3, 2)
    with pytest.raises(LightnnError, match="active_chs"):
        ChannelVersatileConv2d(8, 2, 9)
    with pytest.raises(LightnnError, match="padding"):
        SpatialVersatileConv2d(4, 2, 5, padding=1)
    with pytest.raises(LightnnError, match="mode"):
        SpatialVersatileConv2d(4, 2, 3).merge("avg")


def test_call_flat_equals_a_normal_call_and_respects_hooks():
    from lightnn.ops.conv import call_flat

    torch.manual_seed(0)
    seq = nn.Sequential(ConvBNAct(3, 8, 3), nn.Sequential(ConvBNAct(8, 8, 1, act=None), nn.ReLU()))
    seq.eval()
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(call_flat(seq, x), seq(x))
    seen = []
    h = seq[1][0].register_forward_hook(lambda m, i, o: seen.append(o.shape))  # a hook on an inner ConvBNAct
    call_flat(seq, x)
    assert seen == [torch.Size([2, 8, 8, 8])]
    h.remove()
    g = nn.modules.module.register_module_forward_hook(lambda m, i, o: seen.append(type(m).__name__))
    try:
        seen.clear()
        call_flat(seq, x)
        assert seen.count("ConvBNAct") == 2 and seen.count("Sequential") == 2  # global hooks see every container
    finally:
        g.remove()


def test_call_flat_respects_backward_hooks_of_a_container():
    from lightnn.ops.conv import call_flat

    torch.manual_seed(0)
    seq = nn.Sequential(ConvBNAct(3, 8, 3), ConvBNAct(8, 4, 1, act=None))
    grads = []
    seq[1].register_full_backward_hook(lambda m, gi, go: grads.append(go[0].shape))  # on an inner container
    call_flat(seq, torch.randn(2, 3, 8, 8, requires_grad=True)).sum().backward()
    assert grads == [torch.Size([2, 4, 8, 8])]


def test_classifier_features_run_flat_but_fire_stage_hooks():
    import lightnn

    m = lightnn.create_model("mnasnet0_5", num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref, stage_out = m(x), m.features[:4](x).shape
        seen = []
        h = m.features[3].register_forward_hook(lambda mod, i, o: seen.append(o.shape))  # a whole stage
        assert torch.equal(m(x), ref) and seen == [stage_out]
        h.remove()


def test_blocks_fire_hooks_of_their_units():
    # InvertedResidual and ShuffleV2Block run their units flat, but a hook put on a unit still fires
    import lightnn

    for name, unit in (("mobilenet_v2", "features.2.conv_dw"), ("shufflenet_v2_x0_5", "features.stage2.1.branch2.pw1")):
        m = lightnn.create_model(name, num_classes=10).eval()
        fired = []
        m.get_submodule(unit).register_forward_hook(lambda mod, i, o: fired.append(1))
        with torch.no_grad():
            m(torch.randn(1, 3, 64, 64))
        assert fired == [1], name
