"""IGC blocks against their dense oracle, the complementary-condition checker, and the IGC models' paper figures."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import lightnn
from lightnn.errors import LightnnError
from lightnn.ops.igc import (GroupStructure, IGCV1Block, IGCV2Block, IGCV3Block, complementary_condition,
                             dense_equivalent_weight, igcv1_params, igcv1_width_for_params, igcv2_branch_sizes,
                             igcv2_optimal_depth, interleave_perm)
from lightnn.ops.shuffle import ChannelPermute


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _dense_conv(chain, x):
    w, s, p = dense_equivalent_weight(chain)
    return F.conv2d(x, w, stride=s, padding=p)


# ---------------------------------------------------------------------------------------- dense oracle

@pytest.mark.parametrize("L,M,k,stride", [(2, 3, 3, 1), (4, 8, 3, 2), (3, 5, 5, 1), (8, 2, 1, 1)])
def test_igcv1_equals_dense_product_of_factors(L, M, k, stride):
    block = IGCV1Block(L * M, L * M, L, kernel_size=k, stride=stride, norm=False, act=None)
    x = torch.randn(2, L * M, 11, 11)
    torch.testing.assert_close(block(x), _dense_conv(block.chain(), x), atol=1e-5, rtol=1e-4)


def test_igcv1_dense_weight_is_block_product_by_hand():
    # Build W = P2 Wd P1 Wp explicitly as matrices for a 1x1 primary kernel and compare.
    L, M = 3, 4
    C = L * M
    block = IGCV1Block(C, C, L, kernel_size=1, norm=False, act=None)
    wp = torch.block_diag(*block.primary.weight[:, :, 0, 0].split(M))
    wd = torch.block_diag(*block.secondary.weight[:, :, 0, 0].split(L))
    p1 = torch.eye(C)[block.permute.perm]
    p2 = torch.eye(C)[block.permute_back.perm]
    w, _, _ = dense_equivalent_weight(block.chain())
    torch.testing.assert_close(w[:, :, 0, 0], p2 @ wd @ p1 @ wp)
    assert (w[:, :, 0, 0] != 0).all()  # complementary: the product is dense


@pytest.mark.parametrize("C,out,L,stride", [(24, 24, 3, 1), (64, 64, 4, 2), (16, 32, 2, 1), (30, 30, 3, 1)])
def test_igcv2_equals_dense_product_of_factors(C, out, L, stride):
    block = IGCV2Block(C, out, L=L, stride=stride, norm=False, act=None)
    x = torch.randn(2, C, 9, 9)
    torch.testing.assert_close(block(x), _dense_conv(block.chain(), x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cin,cout,t,stride", [(16, 16, 6, 1), (16, 24, 6, 2), (32, 32, 1, 1)])
def test_igcv3_equals_dense_product_plus_identity(cin, cout, t, stride):
    block = IGCV3Block(cin, cout, stride, expand_ratio=t, act=None, norm=False).eval()
    x = torch.randn(2, cin, 10, 10)
    ref = _dense_conv(block.chain(), x)
    if block.use_res:
        ref = ref + x
    torch.testing.assert_close(block(x), ref, atol=1e-5, rtol=1e-4)


def test_dense_equivalent_rejects_nonlinear_and_two_spatial_convs():
    with pytest.raises(LightnnError, match="not linear"):
        dense_equivalent_weight([nn.Conv2d(4, 4, 3, bias=False), nn.ReLU()])
    with pytest.raises(LightnnError, match="more than one spatial"):
        dense_equivalent_weight([nn.Conv2d(4, 4, 3, bias=False), nn.Conv2d(4, 4, 3, bias=False)])


# --------------------------------------------------------------------------------------------- checker

def test_checker_accepts_igcv1_with_interleaving_permutation():
    L, M = 4, 3
    rep = complementary_condition(IGCV1Block(12, 12, L, norm=False).chain())
    assert rep.strict and rep.loose
    assert rep.paths.shape == (12, 12) and (rep.paths == 1).all()


def test_checker_rejects_igcv1_without_a_valid_permutation():
    L, M = 4, 3
    C = L * M
    chain = [GroupStructure(C, C, L), list(range(C)), GroupStructure(C, C, M), list(range(C))]
    rep = complementary_condition(chain)
    assert not rep.strict and not rep.loose
    assert rep.min_paths == 0
    # a "valid-looking" permutation that keeps two channels of one primary partition together also fails strictness
    bad = interleave_perm(C, L)  # [0, 3, 6, 9, 1, 4, ...]: secondary partition 0 takes channels 0, 3, 6, 9
    bad[1], bad[4] = bad[4], bad[1]  # now it takes 0 and 1, both from primary partition 0
    rep = complementary_condition([GroupStructure(C, C, L), bad, GroupStructure(C, C, M)])
    assert not rep.strict


def test_checker_counts_paths_by_hand():
    # L = 2 primary partitions {0,1} {2,3}; interleaving [0, 2, 1, 3]; M = 2 secondary partitions {0,2} {1,3}
    rep = complementary_condition([GroupStructure(4, 4, 2), [0, 2, 1, 3], GroupStructure(4, 4, 2)])
    assert rep.strict
    # without the interleaving the secondary partitions repeat the primary ones: half the pairs have no path
    rep = complementary_condition([GroupStructure(4, 4, 2), [0, 1, 2, 3], GroupStructure(4, 4, 2)])
    assert not rep.loose and (rep.paths == torch.block_diag(*[torch.full((2, 2), 2)] * 2).numpy()).all()
    # a dense secondary conv after the primary one: 2 paths per pair (loose, not strict)
    rep = complementary_condition([GroupStructure(4, 4, 2), GroupStructure(4, 4, 1)])
    assert rep.loose and not rep.strict and rep.max_paths == 2
    # two dense convs: 4 paths per pair
    rep = complementary_condition([GroupStructure(4, 4, 1), GroupStructure(4, 4, 1)])
    assert rep.loose and not rep.strict and rep.max_paths == 4


def test_checker_igcv2_strict_and_igcv3_loose():
    assert complementary_condition(IGCV2Block(64, L=4).chain()).strict
    assert complementary_condition(IGCV2Block(24, 48, branch_sizes=[2, 3, 4]).chain()).strict
    rep = complementary_condition(IGCV3Block(16, 16, expand_ratio=6).chain())
    assert rep.loose and not rep.strict
    assert rep.min_paths == rep.max_paths == 96 // (2 * 2)  # mid / (G1 G2) paths: super-channels
    # IGCV3 without the interleaving permutation is not even loosely complementary
    b = IGCV3Block(16, 16, expand_ratio=6)
    chain = [b.conv_exp, b.conv_dw, b.conv_pwl]
    assert not complementary_condition(chain).loose


def test_checker_errors_are_clear():
    with pytest.raises(LightnnError, match="not a permutation"):
        complementary_condition([GroupStructure(4, 4, 2), [0, 0, 1, 2]])
    with pytest.raises(LightnnError, match="receives"):
        complementary_condition([GroupStructure(4, 4, 2), GroupStructure(6, 6, 2)])
    with pytest.raises(LightnnError, match="divisible"):
        GroupStructure(6, 6, 4)


# -------------------------------------------------------------------------------------------- formulas

@pytest.mark.parametrize("L,M,k", [(2, 3, 3), (4, 8, 3), (24, 2, 3), (3, 5, 5)])
def test_igcv1_params_formula(L, M, k):
    G, S = L * M, k * k
    block = IGCV1Block(G, G, L, kernel_size=k, norm=False, act=None)
    assert _n_params(block) == igcv1_params(L, M, k) == L * M * M * S + M * L * L
    assert igcv1_params(L, M, k) == round(G * G * (S / L + 1 / M))


def test_igcv1_wider_than_regular_conv_at_equal_params():
    # L/(L-1) < M S  <=>  the IGC block is wider than a regular conv with the same parameters
    C = 64
    budget = 9 * C * C
    for L in (2, 4, 8, 16):
        M, G = igcv1_width_for_params(budget, L)
        assert igcv1_params(L, M) <= budget < igcv1_params(L, M + 1)
        assert (G > C) == (L / (L - 1) < M * 9)


def test_igcv2_balance_condition():
    assert igcv2_branch_sizes(64, 4) == [4, 4, 4]  # K = C^(1/(L-1))
    assert igcv2_branch_sizes(27, 4) == [3, 3, 3]
    assert igcv2_branch_sizes(64, 3) == [8, 8]
    assert math.prod(igcv2_branch_sizes(96, 3)) == 96
    assert igcv2_branch_sizes(96, 3) == [8, 12]  # the most balanced factorization (smallest sum)
    # the depth that minimizes (L-1) C^(1/(L-1)) is about ln C + 1
    for C in (16, 64, 256, 1024):
        L = igcv2_optimal_depth(C)
        assert abs(L - (math.log(C) + 1)) < 1
        cost = lambda n: n * C ** (1 / n)  # noqa: E731
        assert cost(L - 1) <= min(cost(n) for n in range(1, 20)) + 1e-9
    with pytest.raises(LightnnError, match="product"):
        igcv2_branch_sizes(7, 3)  # a prime cannot be split into two branch sizes >= 2
    with pytest.raises(LightnnError, match="multiply"):
        IGCV2Block(24, branch_sizes=[4, 4])


def test_igcv2_block_params():
    C = 64
    block = IGCV2Block(C, L=4, norm=False, act=None)
    assert _n_params(block) == 9 * C + sum(k * C for k in [4, 4, 4])


def test_igc_shape_errors_are_clear():
    with pytest.raises(LightnnError, match="divisible by groups=5"):
        IGCV1Block(12, 12, 5)
    with pytest.raises(LightnnError, match="G1=2"):
        IGCV3Block(15, 16, expand_ratio=1)
    with pytest.raises(LightnnError, match="stride"):
        IGCV3Block(16, 16, stride=3)
    with pytest.raises(LightnnError, match="permutation"):
        ChannelPermute([0, 0, 1])


def test_permutations_are_explicit_modules():
    block = IGCV1Block(12, 12, 3).eval()
    assert [type(m).__name__ for m in block.chain()] == ["Conv2d", "ChannelPermute", "Conv2d", "ChannelPermute"]
    gm = torch.fx.symbolic_trace(block)
    x = torch.randn(1, 12, 5, 5)
    torch.testing.assert_close(gm(x), block(x))


# ---------------------------------------------------------------------------------------------- models

def _count(name: str, size: int, **kw) -> tuple[int, float]:
    from torch.utils.flop_counter import FlopCounterMode

    m = lightnn.create_model(name, **kw).eval().to("meta")  # shapes only: counting needs no arithmetic
    x = torch.empty(1, 3, size, size, device="meta")
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        m(x)
    return _n_params(m), fc.get_total_flops() / 2


def test_igcv3_d_matches_paper():
    # IGCV3 README: IGCV3-D 3.5 M params; ShuffleNet V2 Table 8 quotes 318 M MACs.
    params, macs = _count("igcv3_100", 224)
    assert abs(params / 3.5e6 - 1) < 0.02
    assert abs(macs / 318e6 - 1) < 0.02


def test_igcv1_imagenet_params_match_official_readme():
    # README table: IGC-L100M2+Ident. 8.61 M params (all layers). The L4M32/L16M16 rows (11.205 / 11.329 M)
    # match the body without the 1000-way classifier (see the module docstring).
    params, _ = _count("igcv1_l100m2", 64)
    assert abs(params / 8.61e6 - 1) < 0.01
    for name, ref in (("igcv1_l4m32", 11.205e6), ("igcv1_l16m16", 11.329e6)):
        m = lightnn.create_model(name)
        body = _n_params(m) - _n_params(m.classifier)
        assert abs(body / ref - 1) < 0.015, (name, body)


def test_igcv1_cifar_structure():
    m = lightnn.create_model("igcv1_cifar_l24m2", num_classes=10, depth=8)
    blocks = [b for b in m.modules() if isinstance(b, IGCV1Block)]
    assert len(blocks) == 6 and {b.L for b in blocks} == {24}
    assert [b.out_chs for b in blocks[::2]] == [48, 96, 192]
    with pytest.raises(LightnnError, match="6n"):
        lightnn.create_model("igcv1_cifar_l4m8", depth=21)


def test_zoo_blocks_meet_their_complementary_condition():
    for name, kind, cond in (("igcv2_cifar", IGCV2Block, "strict"), ("igcv3_cifar", IGCV3Block, "loose"),
                             ("igcv1_cifar_l4m8", IGCV1Block, "loose")):
        m = lightnn.create_model(name, num_classes=10)
        blocks = [b for b in m.modules() if isinstance(b, kind)]
        assert blocks
        assert all(getattr(complementary_condition(b.chain()), cond) for b in blocks), name
    # IGC-L4M8: every non-widening block is strictly complementary (secondary partitions of exactly L channels)
    m = lightnn.create_model("igcv1_cifar_l4m8", num_classes=10)
    square = [b for b in m.modules() if isinstance(b, IGCV1Block) and b.out_chs == b.L * b.M]
    assert square and all(complementary_condition(b.chain()).strict for b in square)
