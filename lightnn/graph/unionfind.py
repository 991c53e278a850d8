"""Union-find over integer channel variables (path halving, the smaller root wins so roots follow graph order)."""

from __future__ import annotations

__all__ = ["UnionFind"]


class UnionFind:
    """Disjoint sets over ``0 .. len(parent) - 1``; :meth:`make` appends a block of fresh singleton variables."""

    def __init__(self) -> None:
        self.parent: list[int] = []

    def make(self, n: int) -> int:
        """Add ``n`` variables and return the index of the first."""
        base = len(self.parent)
        self.parent.extend(range(base, base + n))
        return base

    def find(self, a: int) -> int:
        p = self.parent
        while p[a] != a:
            p[a] = p[p[a]]
            a = p[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)
