"""The result of the channel analysis: layer calls, removable channel sets and the groups criteria rank."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch
import torch.nn as nn

from ..errors import LightnnError
from .unionfind import UnionFind

__all__ = ["ChannelGroup", "DependencyGraph", "LayerCall"]


@dataclass
class ChannelGroup:
    """Coupled channels: ``size`` removable sets, each touching the same layers in the same way.

    ``members[(layer, dim)]`` is a ``(size, k)`` index matrix: removing set ``i`` removes channels
    ``members[(layer, dim)][i]`` of dimension ``dim`` ("out" = output channels / features, "in" = input) of the
    module at path ``layer``. ``unit`` is the most channels one set removes from a single layer.
    """

    name: str
    members: dict[tuple[str, str], torch.Tensor]
    roots: list[int] = field(repr=False)
    prunable: bool = True
    reason: str = ""

    @property
    def size(self) -> int:
        return len(self.roots)

    @property
    def unit(self) -> int:
        return max((int(t.shape[1]) for t in self.members.values()), default=1)

    @property
    def channels(self) -> int:
        """Width of the group in its widest layer."""
        return self.size * self.unit

    def layers(self) -> list[str]:
        return sorted({p for p, _ in self.members})


@dataclass
class LayerCall:
    """One call of a module whose channels a rule recorded (``record_layer``).

    ``in_base`` / ``out_base`` index the first channel variable of its input / output (``None``: not recorded);
    ``members`` are the dimensions that make the layer part of a :class:`ChannelGroup` (a conv's "out" and "in",
    a BN's "out"; none for a shuffle); ``produces`` marks layers whose "out" channels are computed by weights
    (conv, linear), which name groups and which criteria score.
    """

    path: str
    module: nn.Module
    in_base: int | None
    in_ch: int
    out_base: int | None
    out_ch: int
    members: tuple[str, ...] = ("out", "in")
    produces: bool = True


class DependencyGraph:
    """The channel-dependency analysis of one model (see :mod:`lightnn.graph`)."""

    def __init__(self, model: nn.Module, uf: UnionFind, calls: list[LayerCall], frozen: dict[int, str],
                 unsupported: list[str]) -> None:
        self.model = model
        self.uf = uf
        self.calls = calls
        self.unsupported = unsupported
        self.frozen_roots: dict[int, str] = {}
        for v, why in frozen.items():
            self.frozen_roots.setdefault(uf.find(v), why)
        self.groups = self._build_groups()

    def _members_by_root(self) -> dict[int, dict[tuple[str, str], list[int]]]:
        find = self.uf.find
        by_root: dict[int, dict[tuple[str, str], list[int]]] = {}
        for call in self.calls:
            for dim, base, n in (("out", call.out_base, call.out_ch), ("in", call.in_base, call.in_ch)):
                if base is None or dim not in call.members:
                    continue
                for c in range(n):
                    lst = by_root.setdefault(find(base + c), {}).setdefault((call.path, dim), [])
                    if c not in lst:
                        lst.append(c)
        return by_root

    def _build_groups(self) -> list[ChannelGroup]:
        by_root = self._members_by_root()
        produces = {c.path: c.produces for c in self.calls}
        keyed: dict[tuple, list[int]] = {}
        for root, mem in by_root.items():
            key = tuple(sorted((p, d, len(ix)) for (p, d), ix in mem.items()))
            keyed.setdefault(key, []).append(root)
        groups = []
        for key, roots in keyed.items():
            roots.sort(key=lambda r: min(by_root[r][(key[0][0], key[0][1])]))
            members = {(p, d): torch.tensor([by_root[r][(p, d)] for r in roots], dtype=torch.long)
                       for p, d, _ in key}
            producers = [p for p, d, _ in key if d == "out" and produces[p]]
            name = producers[0] if producers else key[0][0]
            reasons = {self.frozen_roots[r] for r in roots if r in self.frozen_roots}
            g = ChannelGroup(name, members, roots)
            if reasons:
                g.prunable, g.reason = False, "; ".join(sorted(reasons))
            elif not producers:
                g.prunable, g.reason = False, "no conv/linear produces these channels"
            groups.append(g)
        # Same name for two groups (one layer split into several sets) gets a suffix; order by layer order.
        order = {c.path: i for i, c in enumerate(self.calls)}
        groups.sort(key=lambda g: (order.get(g.name, 0), g.name))
        seen: dict[str, int] = {}
        for g in groups:
            k = seen.get(g.name, 0)
            seen[g.name] = k + 1
            if k:
                g.name = f"{g.name}#{k}"
        return groups

    def prunable_groups(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.prunable]

    def group(self, name: str) -> ChannelGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise LightnnError(f"no channel group named {name!r}; groups: {[g.name for g in self.groups][:20]}")

    def spec_for(self, removed_roots: Iterable[int]) -> dict[str, dict[str, list[int]]]:
        """Kept channel indices per layer and dimension once the sets ``removed_roots`` are gone."""
        removed = set(removed_roots)
        bad = removed & set(self.frozen_roots)
        if bad:
            raise LightnnError(f"cannot remove frozen channels: {self.frozen_roots[next(iter(bad))]}")
        find = self.uf.find
        spec: dict[str, dict[str, list[int]]] = {}
        for call in self.calls:
            entry = {}
            for dim, base, n in (("in", call.in_base, call.in_ch), ("out", call.out_base, call.out_ch)):
                if base is None:
                    continue
                kept = [c for c in range(n) if find(base + c) not in removed]
                if len(kept) != n:
                    if not kept:
                        raise LightnnError(f"pruning would remove every {dim}put channel of layer {call.path!r}")
                    entry[dim] = kept
            if entry:
                prev = spec.setdefault(call.path, {})
                for k, v in entry.items():
                    if k in prev and prev[k] != v:  # a module called twice with different channel maps
                        raise LightnnError(f"layer {call.path!r} is used twice with different channel sets")
                    prev[k] = v
        return spec
