"""One budget search: bisect a monotone knob until a cost meets a target.

Every "shrink until it fits" loop in lightnn is this search with a different knob and cost: the uniform channel
ratio of ``lightnn run``'s prune stage under a MACs budget, the accuracy-drop tolerance of a sensitivity plan
(:func:`lightnn.compress.sensitivity.plan_ratios`) under a MACs or a measured-latency budget. The caller passes
``apply(knob) -> value`` (e.g. the pruned model) and ``cost(value) -> float`` (e.g. its MACs); the search returns
the knob closest to the unconstrained end that still meets ``cost <= target``, with the value it produced and
the trace of every knob it tried.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import LightnnError

__all__ = ["BudgetResult", "budget_search"]


@dataclass
class BudgetResult:
    """The best feasible knob of a :func:`budget_search`, what ``apply`` made of it, its cost and the trace."""

    knob: float
    value: Any
    cost: float
    target: float
    trace: list[dict[str, Any]] = field(default_factory=list)  # {"knob", "cost", "feasible"} in the order tried
    bracket: tuple[float, float] = (0.0, 0.0)  # the final (infeasible side, feasible side) interval

    def as_dict(self) -> dict[str, Any]:
        """Plain data for reports (the value itself is left out)."""
        return {"knob": self.knob, "cost": self.cost, "target": self.target, "trace": list(self.trace),
                "bracket": list(self.bracket)}


def budget_search(apply: Callable[[float], Any], cost: Callable[[Any], float], target: float, lo: float, hi: float,
                  steps: int = 20, *, cost_falls: bool = True, tol: float = 0.0,
                  infeasible: Callable[[float], str] | None = None) -> BudgetResult:
    """Bisect ``knob`` in ``[lo, hi]`` so that ``cost(apply(knob)) <= target`` with the least change.

    With ``cost_falls`` (the default) the cost does not increase with the knob (a pruning ratio, a tolerance), so
    ``hi`` is the feasible end and the search returns the smallest feasible knob it finds; otherwise (a width
    multiplier) ``lo`` is the feasible end and it returns the largest. The feasible end is tried first: when even
    it misses the target the search raises :class:`~lightnn.errors.LightnnError` with ``infeasible(cost)`` as the
    message (a default one otherwise). Then at most ``steps`` midpoints, stopping early once the bracket is no wider
    than ``tol``; the answer is within ``(hi - lo) / 2**steps`` of the boundary for a monotone cost.
    """
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
        raise LightnnError(f"budget search: the knob range must be finite with lo < hi, got [{lo}, {hi}]")
    if int(steps) != steps or steps < 0:
        raise LightnnError(f"budget search: steps must be a non-negative integer, got {steps!r}")
    if not math.isfinite(target):
        raise LightnnError(f"budget search: the target must be a finite number, got {target}")
    trace: list[dict[str, Any]] = []

    def attempt(knob: float) -> tuple[Any, float, bool]:
        value = apply(knob)
        c = float(cost(value))
        ok = c <= target
        trace.append({"knob": knob, "cost": c, "feasible": ok})
        return value, c, ok

    near, far = (lo, hi) if cost_falls else (hi, lo)  # far: the end that changes the model most (feasible)
    value, c, ok = attempt(far)
    if not ok:
        raise LightnnError(infeasible(c) if infeasible else
                           f"budget search: even the knob at its limit {far:g} costs {c:.4g}, above the target "
                           f"{target:.4g}")
    best = (far, value, c)
    for _ in range(int(steps)):
        if abs(far - near) <= tol:
            break
        mid = (near + far) / 2
        value, c, ok = attempt(mid)
        if ok:
            far, best = mid, (mid, value, c)
        else:
            near = mid
    knob, value, c = best
    return BudgetResult(knob=knob, value=value, cost=c, target=float(target), trace=trace, bracket=(near, far))
