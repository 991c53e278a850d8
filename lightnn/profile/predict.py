"""Predicted latency from a latency table: the sum over a model's units, plus a correction fitted on end-to-end runs.

``predict_latency(model, input_size, table)`` traces the model into units (:func:`~lightnn.profile.latency_units.
model_units`), looks each one up in the table (:class:`~lightnn.profile.latency_table.LatencyTable`) and adds them:
the *raw sum*. A unit the table lacks is measured on the spot and added to the table (``measure_missing=True``) or
reported by an error naming it; it is never counted as zero.

The raw sum misses what happens between units (tensors handed from one kernel to the next, cache effects) and
double-counts nothing but the harness overhead the table already takes off. The correction is linear::

    predicted = constant_ms + sum over units u of
                max(scale_kind(u) x ms(u) + per_unit_ms + per_melem_ms x io(u), 0.2 x ms(u))

fitted by :func:`fit_correction` on end-to-end timings of the models the table was built from (non-negative least
squares in numpy, each model weighted by 1 / its latency so the fit minimizes relative error, and a small ridge
pulling each scale toward 1 and the other terms toward 0, so a kind seen in few models keeps its measured cost; its
weight is chosen by leave-one-out error over the fitted models).
``io(u)`` is the millions of elements the unit takes in and gives out. The two offsets may be negative: a unit timed
alone pays for handing over its input and output (ONNX Runtime reorders them into and out of its blocked NCHWc
layout, int8 quantizes and dequantizes them), which inside a network happens once. It is stored in the table file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch.nn as nn

from ..errors import LightnnError
from .latency_table import LatencyTable
from ..models.record import model_name
from .latency_units import Unit, model_units

__all__ = ["predict_latency", "Prediction", "fit_correction", "nnls", "unit_features", "record_end_to_end",
           "fit_table_correction", "measure_units", "fit_ridge", "build_table", "apply_correction"]


@dataclass
class Prediction:
    """A prediction: ``total_ms`` (corrected), ``raw_ms`` (the table sum), ``correction`` (what was applied),
    ``rows`` (one per unit call: name, kind, key, table ms, ``corrected_ms``, ``io_m``, flagged, measured now) and
    ``sums`` (raw ms by unit kind). ``total_ms`` is the sum of the rows' ``corrected_ms`` plus the constant."""

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


TERMS = (("per_unit_ms", "calls"), ("per_melem_ms", "io_m"))  # signed offsets: (coefficient, feature)
UNIT_FLOOR = 0.2  # a corrected unit costs at least this share of its table value


def apply_correction(features: dict[str, Any], correction: dict[str, Any] | None) -> float:
    """The corrected total of a model's features (``sums`` by kind, ``calls``, ``io_m``), as the fit sees it."""
    raw = float(sum(features["sums"].values()))
    if not correction:
        return raw
    scales = correction.get("scales", {})
    total = sum(scales.get(k, 1.0) * v for k, v in features["sums"].items()) + correction.get("constant_ms", 0.0)
    total += sum(correction.get(c, 0.0) * float(features.get(f, 0.0)) for c, f in TERMS)
    return float(max(total, UNIT_FLOOR * raw))


def _unit_io(u: Unit) -> float:
    """Millions of elements a unit takes in and gives out per sample (what a standalone run hands over)."""
    return (prod(u.in_shape) + prod(u.out_shape or (0,))) / 1e6


def _corrected(row: dict[str, Any], correction: dict[str, Any] | None) -> float:
    if not correction:
        return row["ms"]
    v = (correction.get("scales", {}).get(row["kind"], 1.0) * row["ms"] + correction.get("per_unit_ms", 0.0)
         + correction.get("per_melem_ms", 0.0) * row["io_m"])
    return max(v, UNIT_FLOOR * row["ms"])


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
    rows, corr = [], table.correction
    now = {u.key for u in missing}
    for u in units:
        row = {"name": u.name, "kind": u.kind, "key": u.key, "ms": table.value(u.key), "io_m": _unit_io(u),
               "flagged": bool(table.entries[u.key].get("flagged")), "measured_now": u.key in now}
        row["corrected_ms"] = _corrected(row, corr)
        rows.append(row)
    raw = float(sum(r["ms"] for r in rows))
    total = sum(r["corrected_ms"] for r in rows) + (corr.get("constant_ms", 0.0) if corr else 0.0)
    return Prediction(total_ms=float(total), raw_ms=raw, correction=corr, rows=rows,
                      sums=unit_features(units, table)["sums"], measured=measured)


def unit_features(units: Sequence[Unit], table: LatencyTable) -> dict[str, Any]:
    """What the correction is fitted on: raw table ms summed by kind (``sums``), unit calls (``calls``) and the
    millions of elements the units hand over (``io_m``); every unit must be in the table."""
    sums: dict[str, float] = {}
    for u in units:
        sums[u.kind] = sums.get(u.kind, 0.0) + table.value(_unit_key(u, table))
    return {"sums": sums, "calls": len(units), "io_m": float(sum(_unit_io(u) for u in units))}


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


RIDGES = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0)


def fit_correction(samples: Sequence[dict[str, Any]], ridge: float | None = None) -> dict[str, Any]:
    """The correction from end-to-end samples (``{"sums", "ms"[, "calls", "io_m"]}``) at ``ridge``, or (None) at
    the ridge of :data:`RIDGES` with the lowest leave-one-out mean relative error (1.0 below 4 samples): with few
    or noisy timings a large ridge wins and the correction stays near the plain table sum. Records ``ridge`` and,
    when chosen, ``loo_error``."""
    samples = list(samples)
    if ridge is not None or len(samples) < 4:
        return {**fit_ridge(samples, 1.0 if ridge is None else ridge), "ridge": 1.0 if ridge is None else ridge}
    best: tuple[float, float] | None = None
    for r in RIDGES:
        errs = [abs(apply_correction(s, fit_ridge(samples[:i] + samples[i + 1:], r)) / float(s["ms"]) - 1.0)
                for i, s in enumerate(samples)]
        loo = float(np.mean(errs))
        if best is None or loo < best[0] - 1e-12:
            best = (loo, r)
    assert best is not None
    return {**fit_ridge(samples, best[1]), "ridge": best[1], "loo_error": best[0]}


def fit_ridge(samples: Sequence[dict[str, Any]], ridge: float = 0.05) -> dict[str, Any]:
    """Per-kind scales (>= 0), a constant (>= 0) and signed offsets per unit call and per million elements handed
    over (when every sample gives ``calls`` / ``io_m``), by non-negative least squares on relative errors. The
    ``ridge`` rows pull each scale toward 1 and the other terms toward 0, each relative to a typical model."""
    if not samples:
        raise LightnnError("fit_correction: no end-to-end measurements to fit on")
    kinds = sorted({k for s in samples for k in s["sums"]})
    ms = np.array([float(s["ms"]) for s in samples])
    if not (ms > 0).all():
        raise LightnnError(f"fit_correction: a measured latency must be > 0, got {ms.min()!r}")
    terms = [(c, f) for c, f in TERMS if all(f in s for s in samples)]
    feats = [np.array([float(s[f]) for s in samples]) for _, f in terms]
    a = np.array([[s["sums"].get(k, 0.0) for k in kinds] for s in samples])
    cols = [a / ms[:, None], (1.0 / ms)[:, None]]
    for x in feats:  # a signed coefficient: the difference of two non-negative ones
        cols += [(x / ms)[:, None], (-x / ms)[:, None]]
    rows = np.hstack(cols)
    nk, m0 = len(kinds), float(np.median(ms))
    reg = np.zeros((nk + 1 + len(terms), rows.shape[1]))
    reg[:nk, :nk] = ridge * np.eye(nk)
    reg[nk, nk] = ridge / m0
    for j, x in enumerate(feats):
        w = ridge * float(np.median(x)) / m0
        reg[nk + 1 + j, nk + 1 + 2 * j: nk + 3 + 2 * j] = [w, -w]
    target = np.concatenate([np.ones(len(samples)), np.full(nk, ridge), np.zeros(1 + len(terms))])
    coef = nnls(np.vstack([rows, reg]), target)
    corr: dict[str, Any] = {"scales": {k: float(c) for k, c in zip(kinds, coef)}, "constant_ms": float(coef[nk]),
                            "models": len(samples)}
    for j, (c, _) in enumerate(terms):
        corr[c] = float(coef[nk + 1 + 2 * j] - coef[nk + 2 + 2 * j])
    corr["rel_error_median"] = float(np.median([abs(apply_correction(s, corr) / float(s["ms"]) - 1.0)
                                                for s in samples]))
    return corr


def record_end_to_end(model: nn.Module, input_size: Any, table: LatencyTable, name: str | None = None,
                      runs: int | None = None) -> dict[str, Any]:
    """Measure ``model`` end to end on the table's setting and keep it (with its raw sums) for the correction fit;
    its units are measured first where missing."""
    size = _size(input_size, table)
    units = model_units(model, size)
    measure_units(units, table)
    res = table.measure_model(model, size, runs=runs)
    rec = {"ms": res.median_ms, "iqr_ms": res.iqr_ms, **unit_features(units, table)}
    table.end_to_end[name or model_name(model)] = rec
    return rec


def fit_table_correction(table: LatencyTable, ridge: float | None = None) -> dict[str, Any]:
    """Fit the correction on the table's end-to-end records and store it in the table."""
    table.correction = fit_correction(list(table.end_to_end.values()), ridge=ridge)
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
