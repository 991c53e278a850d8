"""Checked values for flags and configuration files alike."""

from __future__ import annotations

import argparse
import math
from typing import Any

__all__ = ["Number"]


class Number:
    """An argparse ``type=`` that also checks config values: an integer or a finite number within bounds.

    ``Number(int, lo=1)`` accepts ``"8"`` and 8 but not ``"8.5"``, 8.5, ``True`` or ``"ten"``; ``Number(float,
    lo=0, lo_open=True)`` accepts ``"1e-3"`` (which YAML reads as a string) and 0.1, not 0, -1 or ``"fast"``.
    It raises ``argparse.ArgumentTypeError`` (argparse prints it after the flag's name)."""

    def __init__(self, kind: type, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                 hi_open: bool = False, meaning: str = "") -> None:
        self.kind, self.lo, self.hi, self.lo_open, self.hi_open = kind, lo, hi, lo_open, hi_open
        self.meaning = meaning  # what the value is, for the message ("the fraction of the MACs to keep")
        self.__name__ = kind.__name__  # what argparse names in its own messages

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        lo = None if self.lo is None else f"{'>' if self.lo_open else '>='} {self.lo:g}"
        hi = None if self.hi is None else f"{'<' if self.hi_open else '<='} {self.hi:g}"
        if lo and hi:
            return f"{what} in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        return f"{what} {lo or hi}" if (lo or hi) else what

    def __call__(self, value: Any) -> int | float:
        v = self._parse(value)
        if v is None or (self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo)) \
                or (self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi)):
            what = f" ({self.meaning})" if self.meaning else ""
            raise argparse.ArgumentTypeError(f"must be {self.describe()}{what}, got {value!r}")
        return v

    def _parse(self, value: Any) -> int | float | None:
        if isinstance(value, bool):
            return None
        if self.kind is int:
            if isinstance(value, int):
                return value
            if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
                return int(value)
            return None
        if isinstance(value, (int, float)):
            v = float(value)
        elif isinstance(value, str):
            try:
                v = float(value)
            except ValueError:
                return None
        else:
            return None
        return v if math.isfinite(v) else None
