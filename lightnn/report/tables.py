"""Markdown and CSV tables for people, plus the number formats every report shares.

Number conventions: MACs are multiply-adds, FLOPs = 2 x MACs; sizes in bytes use decimal
units (1 MB = 10^6 bytes) so they compare with the papers' "M" counts.
"""

from __future__ import annotations

import csv
import io
from typing import Any, Iterable, Sequence

__all__ = ["markdown_table", "csv_table", "fmt_count", "fmt_si", "fmt_bytes", "fmt_pct", "fmt_ms"]


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"  # markdown is for people: thousands separators (CSV keeps raw numbers)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None) -> str:
    """A GitHub-flavoured markdown table. ``align`` has one letter per column: ``l``, ``r`` or ``c``
    (default: right for columns whose cells are all numbers, left otherwise)."""
    rows = [[_cell(v) for v in r] for r in rows]
    headers = [str(h) for h in headers]
    if any(len(r) != len(headers) for r in rows):
        raise ValueError(f"markdown_table: every row needs {len(headers)} cells")
    if align is None:
        def numeric(s: str) -> bool:
            t = s.replace(",", "").rstrip("%x").strip().split(" ")[0]
            try:
                float(t)
                return True
            except ValueError:
                return s == ""
        align = "".join("r" if rows and all(numeric(r[i]) for r in rows) else "l" for i in range(len(headers)))
    if len(align) != len(headers):
        raise ValueError(f"markdown_table: align needs {len(headers)} letters, got {align!r}")
    widths = [max([3, len(headers[i])] + [len(r[i]) for r in rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(widths[i]) if align[i] == "r" else c.ljust(widths[i])
                                 for i, c in enumerate(cells)) + " |"

    def rule(a: str, w: int) -> str:
        return {"l": ":" + "-" * (w - 1), "r": "-" * (w - 1) + ":", "c": ":" + "-" * (w - 2) + ":"}[a]

    sep = "| " + " | ".join(rule(a, widths[i]) for i, a in enumerate(align)) + " |"
    return "\n".join([line(headers), sep] + [line(r) for r in rows])


def csv_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(headers)
    for r in rows:
        w.writerow(["" if v is None else v for v in r])
    return buf.getvalue()


def fmt_count(n: float, unit: str = "M", digits: int = 2) -> str:
    """``3504872 -> '3.50'`` in millions (``unit='M'``), ``'G'`` for 10^9, ``'K'`` for 10^3, ``''`` for raw."""
    scale = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}[unit]
    return f"{n / scale:,.{digits}f}" if unit else f"{int(n):,}"


def fmt_si(n: float, digits: int = 2) -> str:
    """A count with a decimal prefix for people: ``3504872 -> '3.50 M'``, ``3888 -> '3.89 K'``, ``12 -> '12'``."""
    for scale, p in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:,.{digits}f} {p}"
    return f"{n:g}"


def fmt_bytes(n: float, digits: int = 2) -> str:
    """Bytes with a decimal prefix: ``'12.04 MB'`` (``'1.79 kB'``, ``'512 B'`` for small sizes)."""
    for scale, p in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if abs(n) >= scale:
            return f"{n / scale:,.{digits}f} {p}"
    return f"{n:g} B"


def fmt_pct(part: float, whole: float, digits: int = 2) -> str:
    return f"{100.0 * part / whole:.{digits}f}%" if whole else "-"


def fmt_ms(ms: float) -> str:
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.1f}"
