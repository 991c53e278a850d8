"""A latency table: measured units of one device and runtime setting, in one versioned JSON file.

The file is only valid where it was measured, so it is keyed by a *device fingerprint*: the CPU model and the ISA
flags that choose the conv / GEMM kernels (``/proc/cpuinfo``), the intra-op threads, the batch size, the backend
(a name of :func:`lightnn.profile.latency_backends`) and the torch / onnxruntime versions. Loading a table from
another fingerprint is refused by a one-line error naming the file and both fingerprints, unless
``allow_foreign=True`` (a warning then).

Each entry is one unit (:mod:`lightnn.profile.latency_units`) timed alone through the one timing core
(:func:`lightnn.profile.measure_latency`): warm-up, ``runs`` timed runs, median and IQR. An entry whose relative
spread (IQR / median) stays above ``spread_threshold`` is re-measured up to ``retries`` times, and if it is still
above, kept and flagged. The per-call cost of the harness itself (one runtime call of an almost empty graph,
``overhead_ms``) is measured once and taken off each entry's median: a model pays it once, not once per unit.

File layout (``version`` 1)::

    {"format": "lightnn-latency-table", "version": 1, "fingerprint": {...}, "settings": {...},
     "overhead_ms": 0.01, "entries": {KEY: {"kind", "desc", "median_ms", "iqr_ms", "spread", "runs", "ms",
     "flagged", "measurements"}}, "end_to_end": {NAME: {"ms", "iqr_ms", "sums"}}, "correction": {...} | null}

Writes are atomic (:mod:`lightnn.utils.io`).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import LightnnError
from ..utils.io import atomic_write_text
from ..utils.machine import cpu_model, isa_flags
from .latency import LatencyResult, latency_backends, measure_latency
from .latency_units import UNIT_KINDS, Unit

__all__ = ["LatencyTable", "device_fingerprint", "resolve_backend", "BACKEND_ALIASES", "TABLE_VERSION",
           "TABLE_FORMAT", "load_table"]

TABLE_FORMAT = "lightnn-latency-table"
TABLE_VERSION = 1
# short names the CLI takes, as `lightnn bench` spells them
BACKEND_ALIASES = {"ort": "onnxruntime", "ort-int8": "onnxruntime-int8"}
DEFAULT_SETTINGS = {"warmup": 3, "runs": 15, "spread_threshold": 0.15, "retries": 2}


def resolve_backend(name: str) -> str:
    """A registered latency backend name from a CLI alias (``ort``, ``ort-int8``) or a registry name."""
    full = BACKEND_ALIASES.get(name, name)
    have = latency_backends()
    if full not in have:
        choices = sorted({a for a, f in BACKEND_ALIASES.items() if f in have} | set(have))
        raise LightnnError(f"unknown latency backend {name!r}; choose from {choices} (the ONNX Runtime ones are "
                           "registered when lightnn is imported)")
    return full


def device_fingerprint(backend: str, threads: int, batch: int) -> dict[str, Any]:
    """What a table's numbers are valid for: CPU model + ISA flags, threads, batch, backend, runtime versions."""
    cpu, isa = cpu_model(), isa_flags() or []
    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = None
    return {"cpu": cpu, "isa": isa, "threads": int(threads), "batch": int(batch), "backend": backend,
            "torch": torch.__version__.split("+")[0], "onnxruntime": ort_version}


def _fp_text(fp: dict[str, Any]) -> str:
    return json.dumps(fp, sort_keys=True, separators=(",", ":"))


class LatencyTable:
    """Measured units (and end-to-end timings, and the fitted correction) of one fingerprint; see the module
    docstring. Build one with :meth:`create`, open one with :func:`load_table`."""

    def __init__(self, fingerprint: dict[str, Any], settings: dict[str, Any] | None = None,
                 path: str | os.PathLike | None = None) -> None:
        self.fingerprint = dict(fingerprint)
        self.settings = {**DEFAULT_SETTINGS, **(settings or {})}
        self.path = Path(path) if path is not None else None
        self.entries: dict[str, dict[str, Any]] = {}
        self.end_to_end: dict[str, dict[str, Any]] = {}
        self.correction: dict[str, Any] | None = None
        self.overhead_ms: float | None = None

    @classmethod
    def create(cls, backend: str = "onnxruntime", threads: int = 1, batch: int = 1,
               path: str | os.PathLike | None = None, **settings: Any) -> LatencyTable:
        """An empty table for this machine (``settings``: warmup, runs, spread_threshold, retries)."""
        unknown = sorted(set(settings) - set(DEFAULT_SETTINGS))
        if unknown:
            raise LightnnError(f"LatencyTable.create: unknown setting(s) {unknown}; settings: {sorted(DEFAULT_SETTINGS)}")
        for name, low in (("threads", 1), ("batch", 1)):
            v = {"threads": threads, "batch": batch}[name]
            if not isinstance(v, int) or v < low:
                raise LightnnError(f"LatencyTable.create: {name} must be an integer >= {low}, got {v!r}")
        return cls(device_fingerprint(resolve_backend(backend), threads, batch), settings, path)

    # -- properties of the fingerprint ---------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        return self.fingerprint["backend"]

    @property
    def batch(self) -> int:
        return int(self.fingerprint["batch"])

    @property
    def threads(self) -> int:
        return int(self.fingerprint["threads"])

    @property
    def dtype(self) -> str:
        return "int8" if self.backend.endswith("int8") else "float32"

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def value(self, key: str) -> float:
        """The cost (ms per batch) a prediction adds for one call of the unit ``key``."""
        return float(self.entries[key]["ms"])

    # -- measuring -----------------------------------------------------------------------------------------------
    def _time(self, module: nn.Module, input_size: tuple[int, ...], runs: int | None = None) -> LatencyResult:
        s = self.settings
        return measure_latency(module, input_size, batch=self.batch, threads=self.threads, warmup=int(s["warmup"]),
                               runs=int(runs or s["runs"]), backend=self.backend, channels_last=False)

    def overhead(self) -> float:
        """The harness's per-call cost (ms): a 1x1 conv on a 1x1 map, timed once per table."""
        if self.overhead_ms is None:
            probe = nn.Conv2d(1, 1, 1)
            self.overhead_ms = min(self._time(probe, (1, 1, 1), runs=30).median_ms for _ in range(2))
        return float(self.overhead_ms)

    def measure_unit(self, unit: Unit) -> dict[str, Any]:
        """Time ``unit`` alone (re-measured while its spread is above the threshold), store and return its entry."""
        key = unit.key
        module, limit = unit.build(), float(self.settings["spread_threshold"])
        best: LatencyResult | None = None
        tries = 0
        def spread(r: LatencyResult) -> float:
            return r.iqr_ms / max(r.median_ms, 1e-9)

        for tries in range(1, int(self.settings["retries"]) + 2):
            res = self._time(module, unit.input_size)
            if best is None or spread(res) < spread(best):
                best = res
            if spread(best) <= limit:
                break
        assert best is not None
        med = best.median_ms
        entry = {"kind": unit.kind, "desc": unit.describe(), "median_ms": med, "iqr_ms": best.iqr_ms,
                 "spread": spread(best), "runs": len(best.samples_ms), "ms": max(med - self.overhead(), 0.05 * med),
                 "flagged": spread(best) > limit, "measurements": tries}
        self.entries[key] = entry
        return entry

    def measure_model(self, model: nn.Module, input_size: tuple[int, ...], runs: int | None = None) -> LatencyResult:
        """End-to-end latency of ``model`` on this table's backend, threads and batch (the same protocol)."""
        return self._time(model, tuple(input_size), runs=runs)

    # -- file ----------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format": TABLE_FORMAT, "version": TABLE_VERSION, "fingerprint": self.fingerprint,
                "settings": self.settings, "overhead_ms": self.overhead_ms, "entries": self.entries,
                "end_to_end": self.end_to_end, "correction": self.correction}

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the table atomically to ``path`` (default: where it was loaded from / created for)."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise LightnnError("LatencyTable.save: no path (give one, or create the table with path=...)")
        self.path = target
        return atomic_write_text(target, json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n")


def _corrupt(path: Path, why: str) -> LightnnError:
    return LightnnError(f"latency table {str(path)!r} is corrupt: {why}")


def _check_entries(path: Path, entries: Any) -> None:
    if not isinstance(entries, dict):
        raise _corrupt(path, "'entries' is not a mapping")
    for key, e in entries.items():
        if not isinstance(e, dict) or not {"kind", "ms", "median_ms"} <= set(e):
            raise _corrupt(path, f"entry {key!r} lacks kind / ms / median_ms")
        if e["kind"] not in UNIT_KINDS:
            raise LightnnError(f"latency table {str(path)!r}: entry {key!r} has unknown unit kind {e['kind']!r} "
                               f"(this lightnn knows {', '.join(UNIT_KINDS)})")
        if not isinstance(e["ms"], (int, float)) or not e["ms"] >= 0:
            raise _corrupt(path, f"entry {key!r} has a bad ms {e['ms']!r}")


def load_table(path: str | os.PathLike, allow_foreign: bool = False,
               expect: dict[str, Any] | None = None) -> LatencyTable:
    """Open a table file. Its fingerprint must match this machine's for the table's own backend, threads and batch
    (or ``expect``, a fingerprint to match instead); ``allow_foreign=True`` turns a mismatch into a warning."""
    p = Path(path)
    if not p.is_file():
        raise LightnnError(f"latency table {str(p)!r} does not exist")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise _corrupt(p, "not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise LightnnError(f"latency table {str(p)!r} is truncated or corrupt (not valid JSON: {e.msg} at line "
                           f"{e.lineno})") from None
    if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
        raise _corrupt(p, f"not a lightnn latency table (no format {TABLE_FORMAT!r})")
    if data.get("version") != TABLE_VERSION:
        raise LightnnError(f"latency table {str(p)!r} has version {data.get('version')!r}; this lightnn reads "
                           f"version {TABLE_VERSION} (rebuild it with `lightnn latency build`)")
    fp = data.get("fingerprint")
    if not isinstance(fp, dict) or not {"backend", "threads", "batch"} <= set(fp):
        raise _corrupt(p, "missing or incomplete 'fingerprint'")
    _check_entries(p, data.get("entries"))
    here = expect or device_fingerprint(fp["backend"], int(fp["threads"]), int(fp["batch"]))
    if _fp_text(here) != _fp_text(fp):
        msg = (f"latency table {str(p)!r} was measured on another device/setting: table {_fp_text(fp)} vs here "
               f"{_fp_text(here)}")
        if not allow_foreign:
            raise LightnnError(msg + " (pass allow_foreign=True / --allow-foreign to use it anyway)")
        warnings.warn(msg + "; using it anyway (allow_foreign)", stacklevel=2)
    table = LatencyTable(fp, data.get("settings") or {}, p)
    table.entries = dict(data["entries"])
    table.end_to_end = dict(data.get("end_to_end") or {})
    table.correction = data.get("correction")
    table.overhead_ms = data.get("overhead_ms")
    return table
