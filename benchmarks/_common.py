"""Shared by every benchmark script: the machine line, timing statistics, interleaved repeats.

The machine is shared and noisy, so a speed figure is a *ratio* against a reference timed in the same run. To keep
slow drifts (another job starting) out of the ratios, :func:`interleaved` times every configuration once per
repeat, round-robin, and :func:`ratio_stats` takes the ratio repeat by repeat before the median and IQR. What a
script measured goes into a record (``records.py``: ``benchmarks/results/<topic>.json``), which
``assemble.py`` renders into BENCHMARKS.md.

Usage from a script in ``benchmarks/``::

    from _common import interleaved, ratio_stats, stats
    from records import col, make_record, table, write_record
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from records import RESULTS, cpu_model, machine_info, machine_text, software_info, today  # noqa: E402

from lightnn.profile.latency import time_callable  # noqa: E402

__all__ = ["machine_line", "cpu_name", "today", "quantile", "stats", "time_ms", "interleaved", "ratio_stats",
           "RESULTS", "ROOT"]


def machine_line(threads: int | None = None) -> str:
    """``Machine: <CPU model> (<arch>; ISA ...), N CPUs, ..., load average L at start; <date>.`` for a run record."""
    return f"Machine: {machine_text(machine_info(threads), software_info())}; {today()}."


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), or the platform's processor string."""
    return cpu_model()


def quantile(xs: list[float], q: float) -> float:
    """Linear-interpolation quantile, ``q`` in [0, 1] (numpy's default)."""
    s = sorted(xs)
    if not s:
        raise ValueError("quantile of no samples")
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def stats(xs: list[float]) -> dict[str, float]:
    """Median, quartiles and IQR of samples."""
    return {"median": statistics.median(xs), "p25": quantile(xs, 0.25), "p75": quantile(xs, 0.75),
            "iqr": quantile(xs, 0.75) - quantile(xs, 0.25), "n": len(xs)}


# The timing core is lightnn's own (lightnn.profile.latency.time_callable); benchmarks name the thread clock "cpu".
_CLOCK_NAMES = {"wall": "wall", "cpu": "thread"}


def time_ms(fn: Callable[[], Any], runs: int = 10, warmup: int = 2, clock: str = "wall") -> list[float]:
    """Time in ms of each of ``runs`` calls after ``warmup`` untimed calls (lightnn's timing core).

    ``clock="wall"``: elapsed time. ``clock="cpu"``: CPU time of the calling thread (``time.thread_time``). With
    one intra-op thread PyTorch computes on the calling thread, so on an idle machine the two agree; on a shared
    machine the CPU time leaves out the slices the OS gives other jobs, which otherwise inflate any run longer than
    a scheduler slice (a few ms) several-fold.
    """
    if clock not in _CLOCK_NAMES:
        raise ValueError(f"time_ms: clock must be one of {sorted(_CLOCK_NAMES)}, got {clock!r}")
    return time_callable(fn, warmup, runs, clock=_CLOCK_NAMES[clock])


def interleaved(configs: Mapping[str, Callable[[], Any]], repeats: int = 7, runs: int = 5,
                warmup: int = 2, reduce: str = "median", clock: str = "wall",
                order: str = "fixed") -> dict[str, list[float]]:
    """Per configuration, ``repeats`` values, each the median (``reduce="median"``) or the fastest
    (``reduce="min"``, the run least disturbed by other jobs on a shared machine) of a burst of ``runs`` calls,
    in ms (``clock`` as in :func:`time_ms`). The bursts of all configurations alternate (round-robin), so all see
    the same machine conditions. ``order="alternate"`` reverses the round every other repeat (A B, B A, ...), so
    neither configuration always runs first or last (caches and the CPU's clock favour a fixed position by a few
    percent, which matters when two models are within a few percent of each other)."""
    if reduce not in ("median", "min"):
        raise ValueError(f"interleaved: reduce must be 'median' or 'min', got {reduce!r}")
    if order not in ("fixed", "alternate"):
        raise ValueError(f"interleaved: order must be 'fixed' or 'alternate', got {order!r}")
    red = statistics.median if reduce == "median" else min
    for fn in configs.values():  # warm every configuration up front (allocator, kernel choice)
        for _ in range(warmup):
            fn()
    out: dict[str, list[float]] = {k: [] for k in configs}
    keys = list(configs)
    for i in range(repeats):
        for k in (keys if order == "fixed" or i % 2 == 0 else keys[::-1]):
            out[k].append(red(time_ms(configs[k], runs=runs, warmup=0, clock=clock)))
    return out


def ratio_stats(ref_ms: list[float], ms: list[float]) -> dict[str, float]:
    """Speed of a configuration relative to the reference (ref time / time, > 1 is faster), repeat by repeat."""
    if len(ref_ms) != len(ms):
        raise ValueError("ratio_stats: the reference and the configuration need the same number of repeats")
    return stats([r / m for r, m in zip(ref_ms, ms)])
