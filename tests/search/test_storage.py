"""Storages: a torn journal record repaired, a lock held by a killed process released, an unreachable URL
refused in one line, and the kill/resume and two-worker cases against a real PostgreSQL server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from optuna.trial import TrialState
from search_helpers import SPACE, STUDY, kill_and_resume, sleepy

from lightnn.search import FlockLock, SearchError, open_storage, repair_journal, run_study


def test_torn_last_record_is_dropped_and_the_study_resumes(tmp_path):
    journal = tmp_path / "s.journal"
    run_study(sleepy, SPACE, objectives="top1", sampler="random", n_trials=3, storage=str(journal))
    size = journal.stat().st_size
    torn = b'{"op_code": 4, "worker_id": "dead", "study_id": 0, "datetime_st'
    with open(journal, "ab") as f:
        f.write(torn)
    res = run_study(sleepy, SPACE, objectives="top1", sampler="random", n_trials=5, storage=str(journal))
    assert len(res.complete) == 5 and [t["number"] for t in res.trials] == list(range(5))
    assert journal.read_bytes().endswith(b"\n") and journal.stat().st_size > size
    with open(journal, "ab") as f:
        f.write(torn)
    assert repair_journal(journal) == len(torn)


def test_a_killed_lock_holder_leaves_no_stale_lock(tmp_path):
    journal = tmp_path / "s.journal"
    code = ("import sys, time; sys.path.insert(0, '.'); from lightnn.search import FlockLock; "
            f"FlockLock({str(journal)!r}).acquire(); print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    proc.stdout.close()
    lock = FlockLock(journal)
    got = threading.Thread(target=lock.acquire, daemon=True)
    got.start()
    got.join(10)
    assert not got.is_alive()
    lock.release()


def test_unreachable_postgres_is_one_line_with_the_password_redacted():
    t0 = time.monotonic()
    with pytest.raises(SearchError) as e:
        open_storage("postgresql://u:p@127.0.0.1:1/x")
    msg = str(e.value)
    assert time.monotonic() - t0 < 15
    assert "\n" not in msg and "postgresql://u:***@127.0.0.1:1/x" in msg and "u:p@" not in msg
    assert "cannot be reached" in msg


def test_postgres_two_workers(pg_url, tmp_path):
    n = 6
    res = run_study(sleepy, SPACE, objectives="top1", sampler="random", n_trials=n, storage=pg_url,
                    study_name="two-workers", workers=2)
    assert len(res.complete) == n and sorted(t["number"] for t in res.trials) == list(range(n))
    assert len({t["worker"] for t in res.trials}) == 2


def test_postgres_sigkilled_trial_fails_after_grace_and_is_retried(pg_url, tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNN_SEARCH_HEARTBEAT_S", "1")  # read by open_storage, inherited by the subprocess
    monkeypatch.setenv("LIGHTNN_SEARCH_GRACE_S", "2")
    n = 5
    out = kill_and_resume(pg_url, n, tmp_path, wait_after_kill=3.0)
    trials = {t.number: t for t in out["trials"]}
    orphan = trials[2]
    assert orphan.state == TrialState.FAIL
    retry = [t for t in trials.values() if t.system_attrs.get("failed_trial") == 2]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].params == orphan.params
    assert all(trials[i].state == TrialState.COMPLETE for i in (0, 1))
    assert out["summary"] == {"complete": n, "failed": 1}
