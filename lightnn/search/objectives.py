"""What a study optimizes and what it must respect, by name.

An objective is a metric a trial reports (``top1``, ``latency``, ``macs`` ...) and a direction. The built-in
metrics carry their direction (accuracy up, cost down); a metric registered without one must be written with
it (``score:max``). A constraint bounds a metric: ``latency<=2.5``, ``top1>=90``, or relative to the reference
model the evaluator reports (``macs<=0.5x``: half the original's MACs).

Constraint violations follow Optuna's convention (``constraints_func``): a value <= 0 is feasible. They are
normalized by the bound, so violations of different metrics compare (0.1 = 10% over).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..errors import LightnnError

__all__ = ["Metric", "Objective", "Constraint", "register_metric", "metrics", "parse_objectives",
           "parse_constraints", "SearchError"]


class SearchError(LightnnError):
    """A study that cannot be run as asked: an unknown objective, a bad constraint, a storage that cannot be
    reached, a resumed study whose search space differs."""


@dataclass(frozen=True)
class Metric:
    name: str
    direction: str | None  # "maximize", "minimize" or None (must be given where used as an objective)
    unit: str
    help: str


_METRICS: dict[str, Metric] = {}


def register_metric(name: str, direction: str | None, unit: str = "", help: str = "", *,
                    replace: bool = False) -> Metric:
    """Add a metric name that objectives and constraints may use (``direction`` None: no natural direction)."""
    if direction not in (None, "maximize", "minimize"):
        raise LightnnError(f"metric {name!r}: direction must be 'maximize', 'minimize' or None, got {direction!r}")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise LightnnError(f"metric name {name!r} must be lower-case letters, digits and '_'")
    if name in _METRICS and not replace:
        raise LightnnError(f"metric {name!r} is already registered")
    _METRICS[name] = Metric(name, direction, unit, help)
    return _METRICS[name]


for _name, _dir, _unit, _help in (
        ("top1", "maximize", "%", "top-1 accuracy on the search split"),
        ("latency", "minimize", "ms", "measured latency (ONNX Runtime, the study's batch and threads)"),
        ("predicted_latency", "minimize", "ms", "latency predicted from a latency table (lightnn latency build)"),
        ("macs", "minimize", "", "multiply-accumulates of one input (lightnn's counter)"),
        ("params", "minimize", "", "parameter count"),
        ("bytes", "minimize", "B", "bytes of the deployable file on disk"),
        ("wall_s", None, "s", "seconds the trial took (a cost of the search, not of the model)")):
    register_metric(_name, _dir, _unit, _help)


def metrics() -> dict[str, Metric]:
    """The registered metrics by name."""
    return dict(_METRICS)


def _metric(name: str, what: str) -> Metric:
    if name not in _METRICS:
        raise SearchError(f"unknown {what} {name!r}; known: {', '.join(sorted(_METRICS))}")
    return _METRICS[name]


@dataclass(frozen=True)
class Objective:
    name: str
    direction: str  # "maximize" | "minimize"

    def better(self, a: float, b: float) -> bool:
        return a > b if self.direction == "maximize" else a < b

    def __str__(self) -> str:
        return f"{self.name}:{'max' if self.direction == 'maximize' else 'min'}"


_DIRS = {"max": "maximize", "maximize": "maximize", "min": "minimize", "minimize": "minimize"}


def parse_objectives(spec: str | Sequence[str]) -> list[Objective]:
    """``"top1,latency"`` or ``["top1", "bytes:min"]`` -> objectives; an unknown name, a repeated one, a bad
    direction or a metric without a direction (and none given) is refused by name."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    if not items or any(not s for s in items):
        raise SearchError(f"objectives {spec!r}: give one or more metric names separated by commas")
    out: list[Objective] = []
    for s in items:
        name, _, d = s.partition(":")
        m = _metric(name, "objective")
        if d:
            if d not in _DIRS:
                raise SearchError(f"objective {s!r}: the direction must be max or min, not {d!r}")
            direction = _DIRS[d]
        elif m.direction is None:
            raise SearchError(f"objective {name!r} has no direction: write {name}:max or {name}:min")
        else:
            direction = m.direction
        if any(o.name == name for o in out):
            raise SearchError(f"objective {name!r} is given twice")
        out.append(Objective(name, direction))
    return out


@dataclass(frozen=True)
class Constraint:
    metric: str
    op: str  # "<=" | ">="
    bound: float
    relative: bool = False  # bound x the reference model's value

    def limit(self, reference: Mapping[str, float] | None) -> float:
        if not self.relative:
            return self.bound
        if not reference or self.metric not in reference:
            raise SearchError(f"constraint {self}: a relative bound needs the reference model's {self.metric}, "
                              "which the evaluator did not report")
        return self.bound * float(reference[self.metric])

    def violation(self, metrics_: Mapping[str, float], reference: Mapping[str, float] | None = None) -> float:
        """<= 0 when met; else how far off, as a fraction of the bound."""
        if self.metric not in metrics_:
            raise SearchError(f"constraint {self}: the trial did not report {self.metric!r}")
        v, lim = float(metrics_[self.metric]), self.limit(reference)
        gap = v - lim if self.op == "<=" else lim - v
        return gap / abs(lim) if lim else gap

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.bound:g}{'x' if self.relative else ''}"


_CONSTRAINT = re.compile(r"^\s*([a-z][a-z0-9_]*)\s*(<=|>=)\s*([-+0-9.eE]+)\s*(x?)\s*$")


def parse_constraints(specs: Sequence[str] | str | None) -> list[Constraint]:
    """``["latency<=2.5", "macs<=0.5x"]`` (or one comma-separated string) -> constraints."""
    if not specs:
        return []
    items = [s for s in (specs.split(",") if isinstance(specs, str) else specs)]
    out = []
    for s in items:
        m = _CONSTRAINT.match(s)
        if not m:
            raise SearchError(f"constraint {s!r} must read METRIC<=NUMBER or METRIC>=NUMBER (NUMBERx: times the "
                              "reference model's value), e.g. latency<=2.5 or macs<=0.5x")
        name, op, num, rel = m.groups()
        _metric(name, "constraint metric")
        try:
            bound = float(num)
        except ValueError:
            raise SearchError(f"constraint {s!r}: {num!r} is not a number") from None
        if rel and bound <= 0:
            raise SearchError(f"constraint {s!r}: a relative bound must be positive")
        out.append(Constraint(name, op, bound, bool(rel)))
    return out


def describe(objectives: Sequence[Objective], constraints: Sequence[Constraint]) -> dict[str, Any]:
    """JSON-ready summary (stored with the study, written into reports)."""
    return {"objectives": [str(o) for o in objectives], "constraints": [str(c) for c in constraints]}
