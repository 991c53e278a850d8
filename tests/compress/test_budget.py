"""lightnn.compress.budget.budget_search: the one bisection behind sensitivity plans and the run's prune stage,
checked against synthetic monotone costs whose answer is known in closed form."""

from __future__ import annotations

import pytest

from lightnn.compress.budget import budget_search
from lightnn.errors import LightnnError


def test_falling_cost_finds_the_smallest_feasible_knob():
    calls = []

    def apply(k):
        calls.append(k)
        return {"knob": k}

    res = budget_search(apply, lambda v: 1.0 - v["knob"] ** 2, 0.36, 0.0, 1.0, steps=20)
    # 1 - k^2 <= 0.36  <=>  k >= 0.8: feasible, and no more than one bisection step past the boundary
    assert 0.8 - 1e-12 <= res.knob <= 0.8 + 2.0 ** -20
    assert res.value == {"knob": res.knob} and res.cost == pytest.approx(1.0 - res.knob ** 2)
    assert res.cost <= 0.36
    # the trace: the feasible end first, then exactly the bisection midpoints, each with its cost and verdict
    assert [t["knob"] for t in res.trace] == calls and len(calls) == 21 and calls[:3] == [1.0, 0.5, 0.75]
    for t in res.trace:
        assert t["cost"] == pytest.approx(1.0 - t["knob"] ** 2) and t["feasible"] == (t["cost"] <= 0.36)
    near, far = res.bracket
    assert near < 0.8 <= far and far - near == pytest.approx(2.0 ** -20) and far == res.knob
    assert res.as_dict()["trace"] == res.trace and "value" not in res.as_dict()


def test_rising_cost_finds_the_largest_feasible_knob():
    res = budget_search(lambda k: k, lambda k: k ** 3, 0.125, 0.0, 1.0, steps=16, cost_falls=False)
    assert 0.5 - 2.0 ** -16 <= res.knob <= 0.5 and res.trace[0] == {"knob": 0.0, "cost": 0.0, "feasible": True}


def test_tolerance_stops_early_and_steps_zero_keeps_the_limit():
    res = budget_search(lambda k: k, lambda k: 1 - k, 0.3, 0.0, 1.0, steps=100, tol=1e-3)
    assert len(res.trace) == 1 + 10  # 2^-10 < 1e-3 <= 2^-9
    assert 0.7 <= res.knob <= 0.7 + 1e-3
    assert budget_search(lambda k: k, lambda k: 1 - k, 0.3, 0.0, 1.0, steps=0).knob == 1.0


def test_infeasible_target_is_a_clear_error():
    with pytest.raises(LightnnError, match=r"even the knob at its limit 0.95 costs 0.2, above the target 0.1"):
        budget_search(lambda k: k, lambda k: 0.2, 0.1, 0.0, 0.95)
    with pytest.raises(LightnnError, match="^ratio 0.95 still keeps 20%$"):
        budget_search(lambda k: k, lambda k: 0.2, 0.1, 0.0, 0.95, infeasible=lambda c: f"ratio 0.95 still keeps {c:.0%}")


@pytest.mark.parametrize("kw,msg", [(dict(lo=1.0, hi=0.0), "lo < hi"), (dict(steps=-1), "steps"),
                                    (dict(steps=2.5), "steps"), (dict(target=float("nan")), "target")])
def test_bad_arguments_are_named(kw, msg):
    args = dict(target=0.5, lo=0.0, hi=1.0) | kw
    with pytest.raises(LightnnError, match=msg):
        budget_search(lambda k: k, lambda k: 1 - k, args.pop("target"), args.pop("lo"), args.pop("hi"), **args)
