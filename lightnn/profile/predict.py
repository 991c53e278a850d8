"""Predicted latency from a latency table: the sum over a model's units, plus a correction fitted on end-to-end runs.

``predict_latency(model, input_size, table)`` traces the model into units (:func:`~lightnn.profile.latency_units.
model_units`), looks each one up in the table (:class:`~lightnn.profile.latency_table.LatencyTable`) and adds them:
the *raw sum*. A unit the table lacks is measured on the spot and added to the table (``measure_missing=True``) or
reported by an error naming it; it is never counted as zero.

The raw sum misses what happens between units (tensors handed from one kernel to the next, cache effects) and
double-counts nothing but the harness overhead the table already takes off. The correction is linear::

    predicted = sum over unit kinds k of scale_k x (raw sum of the kind-k units) + constant_ms
                + per_unit_ms x (number of unit calls)

fitted by :func:`fit_correction` on end-to-end timings of the models the table was built from (non-negative least
squares in numpy, each model weighted by 1 / its latency so the fit minimizes relative error, and a small ridge
pulling each scale toward 1 and the other terms toward 0, so a kind seen in few models keeps its measured cost).
The per-call offset may be negative: a unit timed alone pays for handing over its input and output, which inside a
network the next kernel finds in cache. It is stored in the table file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch.nn as nn

from ..errors import LightnnError
from .latency_table import LatencyTable
from .latency_units import Unit, model_name, model_units

__all__ = ["predict_latency", "Prediction", "fit_correction", "nnls", "unit_sums", "record_end_to_end",
           "fit_table_correction", "measure_units", "build_table", "apply_correction"]


@dataclass
class Prediction:
    """A prediction: ``total_ms`` (corrected), ``raw_ms`` (the table sum), ``correction`` (what was applied),
    ``rows`` (one per unit call: name, kind, key, ms, measured now) and ``sums`` (raw ms by unit kind)."""

    total_ms: float
    raw_ms: float
    correction: dict[str, Any] | None
    rows: list[dict[str, Any]] = field(repr=False)
    sums: dict[str, float]
    measured: int = 0  # units measured on demand for this prediction

    def to_dict(self) -> dict[str, Any]:
        return {"total_ms": self.total_ms, "raw_ms": self.raw_ms, "correction": self.correction, "sums": self.sums,
                "measured": self.measured, "units": self.rows}


def _size(input_size: Any, table: LatencyTable) -> tuple[int, int, int]:
    if isinstance(input_size, int):
        input_size = (3, input_size, input_size)
    size = tuple(int(s) for s in input_size)
    if len(size) == 4:
        if size[0] != table.batch:
            raise LightnnError(f"predict_latency: input_size {size} has batch {size[0]} but the table {table.path} "
                               f"was measured at batch {table.batch}")
        size = size[1:]
    if len(size) != 3:
        raise LightnnError(f"predict_latency: input_size must be (C, H, W) or (N, C, H, W), got {input_size!r}")
    return size  # type: ignore[return-value]


def _unit_key(unit: Unit, table: LatencyTable) -> str:
    if unit.dtype != table.dtype:
        unit.dtype, unit._key = table.dtype, None
    return unit.key


def measure_units(units: Iterable[Unit], table: LatencyTable, progress: Callable[[Unit], None] | None = None) -> int:
    """Measure every unit the table lacks (each key once); returns how many were measured."""
    n = 0
    for u in units:
        if _unit_key(u, table) not in table:
            table.measure_unit(u)
            n += 1
        if progress is not None:
            progress(u)
    return n


def apply_correction(sums: dict[str, float], correction: dict[str, Any] | None, calls: int = 0) -> float:
    """The corrected total of raw per-kind sums for a model of ``calls`` unit calls (never below a tenth of the
    raw sum: a correction fitted elsewhere cannot make a model free)."""
    raw = float(sum(sums.values()))
    if not correction:
        return raw
    scales = correction.get("scales", {})
    total = (sum(scales.get(k, 1.0) * v for k, v in sums.items()) + correction.get("constant_ms", 0.0)
             + correction.get("per_unit_ms", 0.0) * calls)
    return float(max(total, 0.1 * raw))


def predict_latency(model: nn.Module, input_size: Any, table: LatencyTable, *, measure_missing: bool = True,
                    save: bool = True) -> Prediction:
    """Predicted ms per batch of ``model`` on ``table``'s device, backend, threads and batch.

    ``input_size``: (C, H, W), (N, C, H, W) with N the table's batch, or an int H (3 x H x H). Missing units are
    measured and added to the table (saved to its file when ``save`` and it has one) or, with
    ``measure_missing=False``, reported by a :class:`~lightnn.errors.LightnnError` naming the first one.
    """
    units = model_units(model, _size(input_size, table))
    missing = [u for u in units if _unit_key(u, table) not in table]
    if missing and not measure_missing:
        u = missing[0]
        raise LightnnError(f"latency table {str(table.path)!r} has no entry for unit {u.name} of "
                           f"{model_name(model)} ({u.key}); {len(missing)} unit call(s) missing (measure_missing=True "
                           "measures them)")
    measured = measure_units(missing, table)
    if measured and save and table.path is not None:
        table.save()
    rows, sums = [], unit_sums(units, table)
    now = {u.key for u in missing}
    for u in units:
        rows.append({"name": u.name, "kind": u.kind, "key": u.key, "ms": table.value(u.key),
                     "flagged": bool(table.entries[u.key].get("flagged")), "measured_now": u.key in now})
    raw = float(sum(r["ms"] for r in rows))
    return Prediction(total_ms=apply_correction(sums, table.correction, len(units)), raw_ms=raw, correction=table.correction,
                      rows=rows, sums=sums, measured=measured)


def unit_sums(units: Sequence[Unit], table: LatencyTable) -> dict[str, float]:
    """Raw table ms of ``units`` summed by kind (every unit must be in the table)."""
    sums: dict[str, float] = {}
    for u in units:
        sums[u.kind] = sums.get(u.kind, 0.0) + table.value(_unit_key(u, table))
    return sums


# -- the correction -----------------------------------------------------------------------------------------------

def nnls(a: np.ndarray, b: np.ndarray, max_iter: int | None = None) -> np.ndarray:
    """argmin ||a x - b|| subject to x >= 0 (Lawson and Hanson's active-set method, numpy only)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    m, n = a.shape
    x, passive = np.zeros(n), np.zeros(n, bool)
    w = a.T @ (b - a @ x)
    for _ in range(max_iter or 3 * n):
        if passive.all() or w[~passive].max(initial=-np.inf) <= 1e-12:
            break
        j = int(np.argmax(np.where(passive, -np.inf, w)))
        passive[j] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > 0).all():
                break
            neg = passive & (z <= 0)
            alpha = np.min(x[neg] / (x[neg] - z[neg]))
            x = x + alpha * (z - x)
            passive &= x > 1e-12
            x[~passive] = 0.0
        x = z
        w = a.T @ (b - a @ x)
    return x


def fit_correction(samples: Sequence[tuple], ridge: float = 0.05) -> dict[str, Any]:
    """Per-kind scales, a constant and (when the samples give unit-call counts) a per-call offset from
    ``(raw sums by kind, measured ms[, unit calls])`` tuples (see the module docstring).

    Rows are weighted by 1 / measured ms (relative error). ``ridge`` adds rows pulling each scale toward 1 and the
    constant and the per-call offset toward 0 (each relative to a typical model), so a poorly determined term stays
    near its neutral value. The offset may be negative (what a unit timed alone pays and a network does not: the
    handing over of its input and output); scales and constant are non-negative. Returns ``{"scales",
    "constant_ms", "per_unit_ms", "models", "rel_error_median"}``."""
    if not samples:
        raise LightnnError("fit_correction: no end-to-end measurements to fit on")
    kinds = sorted({k for s in samples for k in s[0]})
    with_calls = all(len(s) > 2 for s in samples)
    ms = np.array([float(s[1]) for s in samples])
    if not (ms > 0).all():
        raise LightnnError(f"fit_correction: a measured latency must be > 0, got {ms.min()!r}")
    calls = np.array([float(s[2]) if with_calls else 0.0 for s in samples])
    a = np.array([[s[0].get(k, 0.0) for k in kinds] for s in samples]) / ms[:, None]
    cols = [a, (1.0 / ms)[:, None]] + ([(calls / ms)[:, None], (-calls / ms)[:, None]] if with_calls else [])
    rows = np.hstack(cols)
    m0, c0 = float(np.median(ms)), float(np.median(calls)) if with_calls else 0.0
    reg = np.zeros((len(kinds) + 1 + int(with_calls), rows.shape[1]))
    reg[: len(kinds), : len(kinds)] = ridge * np.eye(len(kinds))
    reg[len(kinds), len(kinds)] = ridge / m0
    if with_calls:
        reg[len(kinds) + 1, len(kinds) + 1:] = [ridge * c0 / m0, -ridge * c0 / m0]
    target = np.concatenate([np.ones(len(samples)), [ridge] * len(kinds), np.zeros(reg.shape[0] - len(kinds))])
    coef = nnls(np.vstack([rows, reg]), target)
    corr = {"scales": {k: float(c) for k, c in zip(kinds, coef)}, "constant_ms": float(coef[len(kinds)]),
            "per_unit_ms": float(coef[len(kinds) + 1] - coef[len(kinds) + 2]) if with_calls else 0.0,
            "models": len(samples)}
    errs = [abs(apply_correction(s[0], corr, int(s[2]) if with_calls else 0) / float(s[1]) - 1.0) for s in samples]
    corr["rel_error_median"] = float(np.median(errs))
    return corr


def record_end_to_end(model: nn.Module, input_size: Any, table: LatencyTable, name: str | None = None,
                      runs: int | None = None) -> dict[str, Any]:
    """Measure ``model`` end to end on the table's setting and keep it (with its raw sums) for the correction fit;
    its units are measured first where missing."""
    size = _size(input_size, table)
    units = model_units(model, size)
    measure_units(units, table)
    res = table.measure_model(model, size, runs=runs)
    rec = {"ms": res.median_ms, "iqr_ms": res.iqr_ms, "sums": unit_sums(units, table), "calls": len(units)}
    table.end_to_end[name or model_name(model)] = rec
    return rec


def fit_table_correction(table: LatencyTable, ridge: float = 0.05) -> dict[str, Any]:
    """Fit the correction on the table's end-to-end records and store it in the table."""
    table.correction = fit_correction([(r["sums"], r["ms"], r.get("calls", 0)) for r in table.end_to_end.values()],
                                      ridge=ridge)
    return table.correction


def build_table(table: LatencyTable, networks: Iterable[tuple[str, nn.Module, tuple[int, int, int]]], *,
                end_to_end: bool = True, fit: bool = True, progress: bool = False, e2e_runs: int | None = None,
                log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure every unit of ``networks`` (``(name, model, (C, H, W))``) the table lacks, then (``end_to_end``)
    each network end to end, then (``fit``) the correction; the table is saved after every network when it has a
    path, so an interrupted build resumes where it stopped (measured entries and timed networks are skipped).
    Returns counts: ``networks``, ``units`` (calls), ``measured`` (new entries), ``timed`` (new end-to-end runs)."""
    nets = list(networks)
    traced = [(name, model, size, model_units(model, size)) for name, model, size in nets]
    todo = {_unit_key(u, table): u for *_, units in traced for u in units if _unit_key(u, table) not in table}
    steps = len(todo) + (sum(1 for name, *_ in traced if name not in table.end_to_end) if end_to_end else 0)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, desc=f"latency table ({table.backend}, batch {table.batch})", unit="step")
    counts = {"networks": len(nets), "units": sum(len(t[3]) for t in traced), "measured": 0, "timed": 0}
    try:
        for name, model, size, units in traced:
            pending = {u.key: u for u in units if u.key in todo and u.key not in table}
            n = measure_units(list(pending.values()), table,
                              progress=(lambda u: bar.update(1)) if bar is not None else None)
            counts["measured"] += n
            if end_to_end and name not in table.end_to_end:
                record_end_to_end(model, size, table, name, runs=e2e_runs)
                counts["timed"] += 1
                if bar is not None:
                    bar.update(1)
            if table.path is not None and (n or end_to_end):
                table.save()
    finally:
        if bar is not None:
            bar.close()
    if fit and end_to_end and table.end_to_end:
        corr = fit_table_correction(table)
        if log:
            log(f"correction fitted on {corr['models']} networks: median relative error {corr['rel_error_median']:.1%}")
        if table.path is not None:
            table.save()
    return counts
