"""Interleaved group convolutions: IGCV1, IGCV2, IGCV3 blocks and the complementary-condition checker.

- IGCV1 (Zhang et al., ICCV 2017, arXiv:1707.02725): x' = P W_d P^T W_p x. W_p is a primary group conv with
  L partitions of M channels and a spatial kernel; P^T interleaves so each secondary partition takes one channel
  from every primary partition; W_d is a secondary 1x1 group conv with M partitions of L channels; P permutes back.
  Parameters L M^2 S + M L^2 = G^2 (S/L + 1/M) for width G = L M and kernel area S.
- IGCV2 (Xie et al., CVPR 2018, arXiv:1804.06202): x' = P_L W_L ... P_1 W_1 x, W_1 depthwise, W_2..W_L 1x1 group
  convs with K_l channels per branch, prod K_l = C (one and only one path per in/out pair) and the balance
  condition K_l = C^(1/(L-1)).
- IGCV3 (Sun et al., BMVC 2018, arXiv:1806.00178): a MobileNetV2 inverted residual whose 1x1 convs are group
  convs (G1 = G2 = 2) with permutations; the loose complementary condition holds over super-channels.

Permutations are explicit :class:`~lightnn.ops.shuffle.ChannelPermute` modules so the profiler, pruner and exporter
see them. Every block exposes ``chain()``: its linear ops in order (convs and permutations, BN/activations left
out), which :func:`complementary_condition` and :func:`dense_equivalent_weight` consume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from ..errors import LightnnError
from .activations import get_act
from .conv import ActLike, check_groups, conv2d
from .shuffle import ChannelPermute, ChannelShuffle

__all__ = [
    "GroupStructure", "ComplementaryReport", "complementary_condition", "dense_equivalent_weight",
    "interleave_perm", "IGCV1Block", "IGCV2Block", "IGCV3Block", "igcv1_params", "igcv1_width_for_params",
    "igcv2_branch_sizes", "igcv2_optimal_depth",
]


def interleave_perm(channels: int, groups: int) -> list[int]:
    """The interleaving permutation ``out[k] = in[perm[k]]`` of a channel shuffle with ``groups`` groups:
    channel ``g * (C/groups) + j`` moves to position ``j * groups + g``."""
    if groups < 1 or channels % groups:
        raise LightnnError(f"interleave: {channels} channels do not divide into {groups} groups")
    return ChannelShuffle(groups).permutation(channels).tolist()


# ---------------------------------------------------------------------------------------------------------------
# Connectivity: group structures, permutations, path counts
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GroupStructure:
    """Block-diagonal connectivity of a group conv: ``groups`` branches, each in/groups -> out/groups channels."""

    in_chs: int
    out_chs: int
    groups: int

    def __post_init__(self) -> None:
        check_groups(self.in_chs, self.out_chs, self.groups, "GroupStructure")

    def matrix(self) -> np.ndarray:
        """(out, in) 0/1 matrix: 1 where output channel o is connected to input channel i."""
        ig, og = self.in_chs // self.groups, self.out_chs // self.groups
        return np.kron(np.eye(self.groups, dtype=np.int64), np.ones((og, ig), dtype=np.int64))


@dataclass
class ComplementaryReport:
    """Result of :func:`complementary_condition`.

    ``paths[o, i]`` is the number of paths from input channel i to output channel o. ``strict``: exactly one path
    for every pair (IGCV1/IGCV2 complementary condition; the product of the block-diagonal factors is dense with
    no redundant path). ``loose``: every output reaches every input (IGCV3's condition over super-channels,
    where several paths are allowed: mid / (G1 G2) per pair in an IGCV3 block, whose secondary branches each
    take a whole super-channel of several channels from every primary branch).
    """

    paths: np.ndarray
    strict: bool
    loose: bool
    min_paths: int
    max_paths: int

    def __str__(self) -> str:
        kind = "strict" if self.strict else ("loose" if self.loose else "not complementary")
        return (f"{kind}: {self.paths.shape[0]}x{self.paths.shape[1]} path counts in "
                f"[{self.min_paths}, {self.max_paths}]")


ChainItem = GroupStructure | nn.Module | Sequence[int] | torch.Tensor


def _as_matrix(item: ChainItem, channels: int) -> np.ndarray:
    """Connectivity matrix (out, in) of one chain element given its input width."""
    if isinstance(item, GroupStructure):
        if item.in_chs != channels:
            raise LightnnError(f"complementary_condition: {item} takes {item.in_chs} channels but receives {channels}")
        return item.matrix()
    if isinstance(item, nn.Conv2d):
        return _as_matrix(GroupStructure(item.in_channels, item.out_channels, item.groups), channels)
    if isinstance(item, (ChannelPermute, ChannelShuffle)):
        perm = item.permutation(channels)
    elif isinstance(item, nn.Module):
        raise LightnnError(f"complementary_condition: cannot read the connectivity of {type(item).__name__}")
    else:
        perm = torch.as_tensor(item, dtype=torch.long)
    perm = np.asarray(perm, dtype=np.int64)
    if len(perm) != channels or sorted(perm.tolist()) != list(range(channels)):
        raise LightnnError(f"complementary_condition: permutation of length {len(perm)} is not a permutation "
                           f"of the {channels} channels it receives")
    m = np.zeros((channels, channels), dtype=np.int64)
    m[np.arange(channels), perm] = 1
    return m


def complementary_condition(chain: Sequence[ChainItem], in_chs: int | None = None) -> ComplementaryReport:
    """Count the paths between every input and output channel of a chain of group convs and permutations.

    ``chain`` holds, in data order, :class:`GroupStructure` s (or ``nn.Conv2d`` s, read as their group structure)
    and permutations (index lists, ``ChannelPermute`` or ``ChannelShuffle``). The path-count matrix is the product
    of the block-diagonal 0/1 factors (IGCV1 section 3: the product W = P W_d P^T W_p must be dense).
    """
    if not chain:
        raise LightnnError("complementary_condition: the chain is empty")
    if in_chs is None:
        first = next((c for c in chain if isinstance(c, (GroupStructure, nn.Conv2d))), None)
        if first is None:
            raise LightnnError("complementary_condition: give in_chs for a chain made only of permutations")
        in_chs = first.in_chs if isinstance(first, GroupStructure) else first.in_channels
    paths = np.eye(in_chs, dtype=np.int64)
    for item in chain:
        paths = _as_matrix(item, paths.shape[0]) @ paths
    return ComplementaryReport(paths=paths, strict=bool((paths == 1).all()), loose=bool((paths >= 1).all()),
                               min_paths=int(paths.min()), max_paths=int(paths.max()))


def _conv_dense_weight(conv: nn.Conv2d) -> torch.Tensor:
    """Expand a group conv's weight (out, in/g, kh, kw) to the dense block-diagonal (out, in, kh, kw)."""
    w = conv.weight.detach()
    out_c, in_g, kh, kw = w.shape
    g = conv.groups
    dense = w.new_zeros(out_c, in_g * g, kh, kw)
    og = out_c // g
    for j in range(g):
        dense[j * og:(j + 1) * og, j * in_g:(j + 1) * in_g] = w[j * og:(j + 1) * og]
    return dense


def dense_equivalent_weight(chain: Sequence[nn.Module]) -> tuple[torch.Tensor, int, tuple[int, int]]:
    """The single dense conv equal to a chain of bias-free convs and permutations (the oracle for IGC blocks).

    Returns ``(weight, stride, padding)`` with ``F.conv2d(x, weight, stride=stride, padding=padding)`` equal to
    running the chain. 1x1 convs and permutations are channel-mixing matrices, so the product of the factors is
    taken tap-wise around the one spatial conv the chain may hold (the only one allowed a stride).
    """
    spatial = [m for m in chain if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
    if len(spatial) > 1:
        raise LightnnError("dense_equivalent_weight: the chain holds more than one spatial (k > 1) conv")
    for m in chain:
        if isinstance(m, nn.Conv2d):
            if m.bias is not None:
                raise LightnnError("dense_equivalent_weight: convs with bias are not supported")
            if m.kernel_size == (1, 1) and m.stride != (1, 1):
                raise LightnnError("dense_equivalent_weight: a strided 1x1 conv does not fold into one conv")
        elif not isinstance(m, (ChannelPermute, ChannelShuffle)):
            raise LightnnError(f"dense_equivalent_weight: {type(m).__name__} is not linear conv or permutation")
    first = next(m for m in chain if isinstance(m, nn.Conv2d))
    c = first.in_channels
    kh, kw = spatial[0].kernel_size if spatial else (1, 1)
    weight = torch.zeros(c, c, kh, kw, dtype=first.weight.dtype)
    weight[:, :, kh // 2, kw // 2] = torch.eye(c)  # identity, then left-multiply each factor
    for m in chain:
        if isinstance(m, nn.Conv2d):
            dense = _conv_dense_weight(m)
            if m.kernel_size == (1, 1):
                weight = torch.einsum("oi,ijhw->ojhw", dense[:, :, 0, 0], weight)
            else:
                # weight so far is a channel matrix (only at the centre tap): compose tap-wise
                weight = torch.einsum("oihw,ij->ojhw", dense, weight[:, :, kh // 2, kw // 2])
        else:
            perm = m.permutation(weight.shape[0])
            weight = weight[perm]
    stride = spatial[0].stride[0] if spatial else 1
    padding = tuple(spatial[0].padding) if spatial else (0, 0)
    return weight, stride, padding


# ---------------------------------------------------------------------------------------------------------------
# IGCV1
# ---------------------------------------------------------------------------------------------------------------

def igcv1_params(L: int, M: int, kernel_size: int = 3) -> int:
    """IGCV1 block parameters L M^2 S + M L^2 (IGCV1 eq. 5; S = kernel area)."""
    return L * M * M * kernel_size * kernel_size + M * L * L


def igcv1_width_for_params(params: float, L: int, kernel_size: int = 3) -> tuple[int, int]:
    """Largest (M, width G = L M) whose IGCV1 block has at most ``params`` parameters (fixed L)."""
    M = 1
    while igcv1_params(L, M + 1, kernel_size) <= params:
        M += 1
    return M, L * M


class IGCV1Block(nn.Module):
    """IGCV1: primary kxk group conv (L partitions) -> interleave -> secondary 1x1 group conv (M partitions)
    -> permute back -> BN -> activation, as in the official ``get_igc`` (conv, reorder, conv, reorder, BN, ReLU).

    With ``out_chs = L * M`` each secondary partition holds exactly one channel from every primary partition
    (strict complementary condition). ``secondary_partitions`` defaults to ``out_chs // L``.
    """

    def __init__(self, in_chs: int, out_chs: int, primary_partitions: int, secondary_partitions: int | None = None,
                 kernel_size: int = 3, stride: int = 1, norm: bool = True, act: ActLike = "relu") -> None:
        super().__init__()
        L = primary_partitions
        M = out_chs // L if secondary_partitions is None else secondary_partitions
        check_groups(in_chs, out_chs, L, f"IGCV1 primary group conv (L={L})")
        if M < 1:
            raise LightnnError(f"IGCV1: secondary partitions must be >= 1, got {M} (out_chs={out_chs}, L={L})")
        check_groups(out_chs, out_chs, M, f"IGCV1 secondary group conv (M={M})")
        self.in_chs, self.out_chs, self.L, self.M, self.stride = in_chs, out_chs, L, M, stride
        self.primary = conv2d(in_chs, out_chs, kernel_size, stride, groups=L)
        self.permute = ChannelPermute(interleave_perm(out_chs, L))
        self.secondary = conv2d(out_chs, out_chs, 1, groups=M)
        self.permute_back = ChannelPermute(interleave_perm(out_chs, M))
        self.bn = nn.BatchNorm2d(out_chs) if norm else nn.Identity()
        self.act = get_act(act)

    def chain(self) -> list[nn.Module]:
        return [self.primary, self.permute, self.secondary, self.permute_back]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.permute_back(self.secondary(self.permute(self.primary(x))))
        return self.act(self.bn(x))


# ---------------------------------------------------------------------------------------------------------------
# IGCV2
# ---------------------------------------------------------------------------------------------------------------

def _factorizations(n: int, parts: int, smallest: int) -> list[list[int]]:
    """All non-decreasing factor lists of length ``parts`` (each >= smallest, >= 2) whose product is n."""
    if parts == 1:
        return [[n]] if n >= smallest else []
    out = []
    f = smallest
    while f ** parts <= n:
        if n % f == 0:
            out += [[f] + rest for rest in _factorizations(n // f, parts - 1, f)]
        f += 1
    return out


def igcv2_branch_sizes(channels: int, L: int) -> list[int]:
    """Channels per branch K_2..K_L of the L-1 group 1x1 convs of an IGCV2 block with ``L`` convs in all.

    Complementary condition: prod K_l = C. Balance condition: all K_l equal to C^(1/(L-1)), which minimizes the
    1x1 parameters sum_l K_l C. For C that is not a perfect power, the integer factorization with the smallest
    sum (then the smallest spread) is returned.
    """
    if L < 2:
        raise LightnnError(f"IGCV2: L must be >= 2 (one depthwise conv plus at least one group conv), got {L}")
    if channels < 2:
        raise LightnnError(f"IGCV2: channels must be >= 2, got {channels}")
    cands = _factorizations(channels, L - 1, 2)
    if not cands:
        raise LightnnError(f"IGCV2: {channels} channels cannot be written as a product of {L - 1} branch sizes >= 2")
    return list(min(cands, key=lambda k: (sum(k), max(k) - min(k))))


def igcv2_optimal_depth(channels: int) -> int:
    """The L minimizing the 1x1 parameter count (L-1) C^(1/(L-1)) C: L - 1 = ln C, so L ~ ln C + 1 (IGCV2 sec. 3)."""
    if channels < 2:
        raise LightnnError(f"IGCV2: channels must be >= 2, got {channels}")
    n = math.log(channels)
    cands = {max(1, math.floor(n)), max(1, math.ceil(n))}
    return 1 + min(cands, key=lambda k: k * channels ** (1.0 / k))


def _axis_to_last(sizes: list[int], order: list[int], axis: int) -> tuple[list[int] | None, list[int]]:
    """Permutation moving digit ``axis`` to the fastest position of the current layout ``order``."""
    new_order = [a for a in order if a != axis] + [axis]
    if new_order == order:
        return None, order
    cur = np.arange(int(np.prod(sizes))).reshape([sizes[a] for a in order])
    perm = cur.transpose([order.index(a) for a in new_order]).reshape(-1)
    return perm.tolist(), new_order


class IGCV2Block(nn.Module):
    """IGCV2: depthwise kxk conv (W_1) then L-1 group 1x1 convs W_2..W_L with permutations P_l between them, then
    BN -> activation.

    Channel c is read as mixed-radix digits (d_2, ..., d_L) with radices K_l; group conv l mixes exactly digit l
    (its groups are the contiguous runs of K_l channels after P_{l-1} moves digit l to the fastest position), so
    each output reaches each input by one and only one path. The last conv may widen to ``out_chs`` (its
    branches then give out_chs / (C / K_L) channels each); the final permutation restores the canonical order.
    """

    def __init__(self, in_chs: int, out_chs: int | None = None, L: int | None = None,
                 branch_sizes: Sequence[int] | None = None, kernel_size: int = 3, stride: int = 1,
                 norm: bool = True, act: ActLike = "relu") -> None:
        super().__init__()
        out_chs = in_chs if out_chs is None else out_chs
        if branch_sizes is None:
            branch_sizes = igcv2_branch_sizes(in_chs, L if L is not None else igcv2_optimal_depth(in_chs))
        ks = [int(k) for k in branch_sizes]
        if int(np.prod(ks)) != in_chs or any(k < 1 for k in ks):
            raise LightnnError(f"IGCV2: branch sizes {ks} must multiply to the {in_chs} input channels "
                               "(complementary condition)")
        last_groups = in_chs // ks[-1]
        if out_chs % last_groups:
            raise LightnnError(f"IGCV2: out_chs={out_chs} must be divisible by the last conv's {last_groups} groups")
        self.in_chs, self.out_chs, self.stride, self.branch_sizes = in_chs, out_chs, stride, ks
        self.dw = conv2d(in_chs, in_chs, kernel_size, stride, groups=in_chs)
        layers: list[nn.Module] = []
        sizes, order = list(ks), list(range(len(ks)))
        # Mix the fastest digit first so the first permutation is the identity and is left out.
        for step, axis in enumerate(reversed(range(len(ks)))):
            perm, order = _axis_to_last(sizes, order, axis)
            if perm is not None:
                layers.append(ChannelPermute(perm))
            last = step == len(ks) - 1
            c_in = int(np.prod(sizes))
            if last:
                sizes[axis] = out_chs // (c_in // sizes[axis])
            layers.append(conv2d(c_in, int(np.prod(sizes)), 1, groups=c_in // ks[axis]))
        back = list(range(len(ks)))
        if order != back:
            cur = np.arange(int(np.prod(sizes))).reshape([sizes[a] for a in order])
            layers.append(ChannelPermute(cur.transpose([order.index(a) for a in back]).reshape(-1).tolist()))
        self.pw = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(out_chs) if norm else nn.Identity()
        self.act = get_act(act)

    def chain(self) -> list[nn.Module]:
        return [self.dw, *self.pw]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.pw(self.dw(x))))


# ---------------------------------------------------------------------------------------------------------------
# IGCV3
# ---------------------------------------------------------------------------------------------------------------

class IGCV3Block(nn.Module):
    """IGCV3 inverted residual (official ``inverted_residual_unit``): 1x1 group conv (G1 groups) expanding to
    ``in_chs * expand_ratio`` -> BN -> interleave (G1) -> kxk depthwise -> BN -> ReLU6 -> 1x1 group conv (G2 groups)
    projecting to ``out_chs`` -> BN (linear bottleneck) -> permutation (shuffle with out_chs / G2 groups);
    identity shortcut when stride 1 and in_chs == out_chs.

    ``expand_act`` is None as in the official MXNet code (the PyTorch ports put a ReLU6 there).
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, expand_ratio: float = 6.0, groups1: int = 2,
                 groups2: int = 2, kernel_size: int = 3, act: ActLike = "relu6", expand_act: ActLike = None,
                 norm: bool = True) -> None:
        super().__init__()
        mid = int(round(in_chs * expand_ratio))
        check_groups(in_chs, mid, groups1, f"IGCV3 expand group conv (G1={groups1})")
        check_groups(mid, out_chs, groups2, f"IGCV3 project group conv (G2={groups2})")
        if stride not in (1, 2):
            raise LightnnError(f"IGCV3: stride must be 1 or 2, got {stride}")
        self.in_chs, self.out_chs, self.mid_chs, self.stride = in_chs, out_chs, mid, stride
        self.use_res = stride == 1 and in_chs == out_chs
        bn = (lambda c: nn.BatchNorm2d(c)) if norm else (lambda c: nn.Identity())
        self.conv_exp = conv2d(in_chs, mid, 1, groups=groups1)
        self.bn1 = bn(mid)
        self.act1 = get_act(expand_act)
        self.permute1 = ChannelPermute(interleave_perm(mid, groups1))
        self.conv_dw = conv2d(mid, mid, kernel_size, stride, groups=mid)
        self.bn2 = bn(mid)
        self.act2 = get_act(act)
        self.conv_pwl = conv2d(mid, out_chs, 1, groups=groups2)
        self.bn3 = bn(out_chs)
        self.permute2 = ChannelPermute(interleave_perm(out_chs, out_chs // groups2))

    def chain(self) -> list[nn.Module]:
        return [self.conv_exp, self.permute1, self.conv_dw, self.conv_pwl, self.permute2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.permute1(self.act1(self.bn1(self.conv_exp(x))))
        y = self.act2(self.bn2(self.conv_dw(y)))
        y = self.permute2(self.bn3(self.conv_pwl(y)))
        return x + y if self.use_res else y
