"""Grouped layers (group convs): two valid ways to cut each, chosen once for the whole graph.

A layer with ``G`` groups keeps equal per-group counts in one of two ways: "local" couples the channels with the
same local index in every group (``groups`` stays), "whole" ties group ``i``'s inputs to its outputs (whole groups
go, ``groups`` shrinks). The analysis tries a few whole-graph policies and keeps the one that leaves the most
removable sets (IGCV1: whole groups in the spatial primary conv, local in the 1x1 secondary; IGCV2 chains:
alternating; AlexNet's 2-group convs prune finer with "local").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .unionfind import UnionFind

__all__ = ["GroupedLayer", "group_unions", "choose_group_modes"]


@dataclass(frozen=True)
class GroupedLayer:
    """The channel variables of one grouped call: ``groups`` blocks of inputs and outputs; ``spatial`` if k > 1."""

    in_base: int
    in_ch: int
    out_base: int
    out_ch: int
    groups: int
    spatial: bool


def group_unions(parent: list[int], layers: Sequence[GroupedLayer], modes: Sequence[str]) -> list[int]:
    """The union-find ``parent`` (copied) with each layer's coupling applied in its mode ("local" / "whole")."""
    uf = UnionFind()
    uf.parent = list(parent)
    for lay, mode in zip(layers, modes):
        g = lay.groups
        pin, pout = lay.in_ch // g, lay.out_ch // g
        if mode == "local":
            for b, n in ((lay.in_base, pin), (lay.out_base, pout)):
                for j in range(n):
                    for i in range(1, g):
                        uf.union(b + j, b + i * n + j)
        else:
            for i in range(g):
                r = lay.in_base + i * pin
                for c in range(pin):
                    uf.union(r, r + c)
                for c in range(pout):
                    uf.union(r, lay.out_base + i * pout + c)
    return uf.parent


def choose_group_modes(uf: UnionFind, layers: Sequence[GroupedLayer], frozen: dict[int, str]) -> list[int]:
    """The union-find parents under the policy that leaves the most independently removable channel sets."""
    n = len(layers)
    policies = {
        "local": ["local"] * n,
        "spatial-whole": ["whole" if lay.spatial else "local" for lay in layers],
        "whole": ["whole"] * n,
        "pointwise-whole": ["local" if lay.spatial else "whole" for lay in layers],
        # chains of 1x1 group convs (IGCV2): whole groups in the first of each pair, local in the second
        "alternate": ["whole" if i % 2 == 0 else "local" for i in range(n)],
        "alternate-rev": ["local" if i % 2 == 0 else "whole" for i in range(n)],
    }
    best, best_n = uf.parent, -1
    for modes in policies.values():
        parent = group_unions(uf.parent, layers, modes)
        tmp = UnionFind()
        tmp.parent = parent
        frozen_roots = {tmp.find(v) for v in frozen}
        free = len({tmp.find(v) for v in range(len(parent))} - frozen_roots)
        if free > best_n:
            best, best_n = parent, free
    return best
