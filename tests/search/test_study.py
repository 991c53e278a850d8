"""run_study: worker processes on one journal, a killed search resumed, seeds, failed trials, constraints,
refused resumes and objectives (tiny evaluators: no model is trained)."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState
from search_helpers import SPACE, STUDY, kill_and_resume, quick, sleepy

from lightnn.search import SearchError, run_study


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


def test_two_workers_share_a_journal(tmp_path):
    n = 6
    res = run_study(sleepy, SPACE, objectives="top1", sampler="random", n_trials=n,
                    storage=str(tmp_path / "s.journal"), workers=2)
    numbers = [t["number"] for t in res.trials]
    assert len(res.complete) == n == len(res.trials)
    assert sorted(numbers) == list(range(n))
    assert len({t["worker"] for t in res.trials}) == 2  # both processes ran trials


def test_sigkilled_search_resumes_from_its_journal(tmp_path):
    journal = str(tmp_path / "s.journal")
    n = 5
    out = kill_and_resume(journal, n, tmp_path)
    trials = {t.number: t for t in out["trials"]}
    orphan = trials[2]
    assert orphan.state == TrialState.FAIL and orphan.user_attrs["orphaned"]
    assert "died while running" in orphan.user_attrs["error"]
    retry = [t for t in trials.values() if t.user_attrs.get("retry_of") == 2]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].params == orphan.params
    assert all(trials[i].state == TrialState.COMPLETE for i in (0, 1))  # finished before the kill: kept
    assert out["summary"] == {"complete": n, "failed": 1}
    assert "left running by a worker that died" in out["log"]


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_fixed_seed_one_worker_is_reproducible(sampler):
    def params(seed):
        res = run_study(quick, SPACE, objectives="top1", sampler=sampler, seed=seed, n_trials=8)
        return [t["params"] for t in res.trials]

    first = params(3)
    assert params(3) == first
    assert params(4) != first


def _fails_at_one(params, trial):
    if trial.number == 1:
        raise RuntimeError("boom")
    return quick(params, trial)


def test_a_trial_that_raises_is_a_failed_trial_and_the_study_goes_on(tmp_path):
    journal = str(tmp_path / "s.journal")
    res = run_study(_fails_at_one, SPACE, objectives="top1", sampler="random", n_trials=4, storage=journal)
    assert [t["state"] for t in res.trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert res.failed[0]["error"] == "RuntimeError: boom"
    # a failed trial counts toward n_trials: run again, nothing more runs
    again = run_study(_fails_at_one, SPACE, objectives="top1", sampler="random", n_trials=4, storage=journal)
    assert len(again.trials) == 4


def test_nsga2_front_holds_only_feasible_points():
    res = run_study(quick, SPACE, objectives="top1,macs", constraints="macs<=0.5x", sampler="nsga2", seed=0,
                    n_trials=24, reference={"macs": 1e6})
    assert res.front and res.closest is None
    assert all(t["metrics"]["macs"] <= 5e5 and t["feasible"] for t in res.front)
    assert any(not t["feasible"] for t in res.complete)  # the constraint did cut some


def test_constraint_no_trial_meets_gives_empty_front_and_closest():
    res = run_study(quick, SPACE, objectives="top1,macs", constraints="top1>=99", sampler="nsga2", n_trials=10)
    assert res.front == []
    assert res.closest is not None
    assert res.closest["metrics"]["top1"] == max(t["metrics"]["top1"] for t in res.complete)


def test_resume_with_another_space_or_objectives_is_refused(tmp_path):
    journal = str(tmp_path / "s.journal")
    run_study(quick, SPACE, objectives="top1", sampler="random", n_trials=2, storage=journal, study_name=STUDY)
    other = dict(SPACE, x={"type": "float", "low": 0.0, "high": 2.0})
    with pytest.raises(SearchError) as e:
        run_study(quick, other, objectives="top1", sampler="random", n_trials=4, storage=journal, study_name=STUDY)
    assert "different space" in _one_line(e) and "x" in str(e.value)
    with pytest.raises(SearchError) as e:  # same number of objectives, another metric
        run_study(quick, SPACE, objectives="macs:max", sampler="random", n_trials=4, storage=journal,
                  study_name=STUDY)
    assert "objectives" in _one_line(e)
    with pytest.raises(SearchError) as e:  # another number of objectives
        run_study(quick, SPACE, objectives="top1,macs", sampler="random", n_trials=4, storage=journal,
                  study_name=STUDY)
    assert "objectives" in _one_line(e)
    res = run_study(quick, SPACE, objectives="top1", sampler="random", n_trials=2, storage=journal,
                    study_name=STUDY)
    assert len(res.trials) == 2  # nothing was mixed in


@pytest.mark.parametrize("objectives, words", [("nope", "unknown objective 'nope'"),
                                               ("wall_s", "wall_s:max or wall_s:min")])
def test_bad_objective_is_one_line(objectives, words):
    with pytest.raises(SearchError) as e:
        run_study(quick, SPACE, objectives=objectives, n_trials=1)
    assert words in _one_line(e)
