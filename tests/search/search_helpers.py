"""Evaluators and a command line for the search tests. Module-level (picklable) so spawned workers import them;
run as a script, it is the search a test kills and runs again:

    python tests/search/search_helpers.py STORAGE N_TRIALS [HOLD_FILE]

Each trial sleeps 0.05 s; while HOLD_FILE exists, trials numbered 2 and up block until it is removed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

SPACE = {"x": {"type": "float", "low": 0.0, "high": 1.0}, "k": {"type": "categorical", "choices": [1, 3, 5]}}
STUDY = "t"


def quick(params, trial):
    """top1 rises and macs grow with x (a trade-off for two objectives)."""
    return {"top1": 50.0 + 40.0 * params["x"], "macs": 1e6 * params["x"] + params["k"]}


def sleepy(params, trial):
    time.sleep(0.05)
    hold = os.environ.get("LIGHTNN_TEST_HOLD")
    if hold and trial.number >= 2:
        while Path(hold).exists():
            time.sleep(0.05)
    return quick(params, trial)


def main(argv: list[str]) -> None:
    from lightnn.search import run_study

    storage, n = argv[0], int(argv[1])
    if len(argv) > 2:
        os.environ["LIGHTNN_TEST_HOLD"] = argv[2]
    res = run_study(sleepy, SPACE, objectives="top1", sampler="random", seed=1, n_trials=n, storage=storage,
                    study_name=STUDY, log=lambda s: print(s, flush=True))
    print(json.dumps({"complete": len(res.complete), "failed": len(res.failed)}), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # lightnn from this checkout
    main(sys.argv[1:])


def wait_running(storage: str, number: int, proc, timeout: float = 60.0) -> None:
    """Block until trial ``number`` of the study is RUNNING in ``storage`` inside the evaluator (its worker, seed
    and parameters recorded), or fail if ``proc`` exits first."""
    import optuna
    from optuna.trial import TrialState

    from lightnn.search import open_storage

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"the search exited early ({proc.returncode}): {proc.stdout.read()}")
        try:
            study = optuna.load_study(study_name=STUDY, storage=open_storage(storage))
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if any(t.number == number and "seed" in t.user_attrs for t in running):
                return
        except KeyError:  # the study is not created yet
            pass
        time.sleep(0.1)
    raise AssertionError(f"trial {number} never ran within {timeout} s")


def kill_and_resume(storage: str, n: int, tmp: Path, wait_after_kill: float = 0.0) -> dict:
    """Run the search in a subprocess, SIGKILL it while trial 2 runs, run the same command again; return the
    second run's summary and the stored trials."""
    import signal
    import subprocess

    import optuna

    from lightnn.search import open_storage

    hold = tmp / "hold"
    hold.touch()
    cmd = [sys.executable, str(Path(__file__).resolve()), storage, str(n), str(hold)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_running(storage, 2, proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    hold.unlink()
    time.sleep(wait_after_kill)
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stdout + again.stderr
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    study = optuna.load_study(study_name=STUDY, storage=open_storage(storage))
    return {"summary": summary, "log": again.stdout, "trials": study.get_trials(deepcopy=False)}
