"""A study runner over Optuna: a search space, named objectives and constraints, a seeded sampler, a storage
that survives a killed process, and K worker processes on one host (or the same command on several hosts over
one PostgreSQL study).

The caller supplies ``evaluate(params, trial) -> metrics``: ``params`` holds one value per knob of the space,
``trial`` (a :class:`TrialInfo`) the trial's number and seed, and ``metrics`` maps metric names (``top1``,
``latency``, ``macs``, ``params``, ``bytes`` ... see :mod:`lightnn.search.objectives`) to numbers; it must
hold every objective and constrained metric. An ``evaluate`` that raises makes that trial a failed trial, with
the error recorded, and the study goes on. For ``workers > 1`` it must be picklable (a module-level function or
an object of a module-level class), because each worker is a fresh process.

Every trial records, as Optuna user attributes: ``seed``, ``worker`` (host:pid), ``wall_s``, ``metrics`` (all
the evaluator reported), ``constraints`` (violations, <= 0 met) and, when it failed, ``error``.

Resuming: the same call on the same storage and study name continues the study up to ``n_trials`` finished
trials in all. Trials left running by a process that died are failed and their parameters queued again (a
file journal: the dead process is found by its pid on this host; PostgreSQL: by its missed heartbeats). A study
whose search space, objectives or constraints differ from the stored one is refused, not mixed.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from .objectives import Constraint, Objective, SearchError, parse_constraints, parse_objectives
from .storage import open_storage, redact, storage_kind, worker_id

__all__ = ["SAMPLERS", "TrialInfo", "StudySpec", "StudyResult", "run_study", "load_result", "suggest",
           "space_fingerprint", "trial_seed", "pareto_indices", "check_space", "recover_orphans"]

SAMPLERS = ("random", "tpe", "cmaes", "nsga2")
_KNOB_TYPES = ("float", "int", "categorical")


@dataclass(frozen=True)
class TrialInfo:
    number: int
    seed: int
    worker: int = 0


def check_space(space: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Validate a search space: ``{knob: {"type": "float"|"int", "low", "high", ["log": bool], ["step"]}`` or
    ``{knob: {"type": "categorical", "choices": [...]}}``. Returns a plain copy."""
    if not space:
        raise SearchError("the search space is empty: give at least one knob")
    out: dict[str, dict[str, Any]] = {}
    for name, k in space.items():
        k = dict(k)
        t = k.get("type")
        if t not in _KNOB_TYPES:
            raise SearchError(f"knob {name!r}: type must be one of {', '.join(_KNOB_TYPES)}, got {t!r}")
        if t == "categorical":
            ch = k.get("choices")
            if not isinstance(ch, (list, tuple)) or not ch:
                raise SearchError(f"knob {name!r}: a categorical knob needs a non-empty list of choices")
            k["choices"] = list(ch)
        else:
            lo, hi = k.get("low"), k.get("high")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi)) or lo > hi:
                raise SearchError(f"knob {name!r}: needs numbers low <= high, got low={lo!r}, high={hi!r}")
            if k.get("log") and lo <= 0:
                raise SearchError(f"knob {name!r}: a log-scaled knob needs low > 0, got {lo}")
        out[str(name)] = k
    return out


def space_fingerprint(space: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(space, sort_keys=True, default=str).encode()).hexdigest()[:16]


def suggest(trial: Any, space: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One value per knob, asked of the Optuna ``trial`` (so its sampler chooses)."""
    params: dict[str, Any] = {}
    for name, k in space.items():
        t = k["type"]
        if t == "categorical":
            params[name] = trial.suggest_categorical(name, k["choices"])
        elif t == "int":
            params[name] = trial.suggest_int(name, int(k["low"]), int(k["high"]), step=int(k.get("step", 1)),
                                             log=bool(k.get("log", False)))
        else:
            params[name] = trial.suggest_float(name, float(k["low"]), float(k["high"]), step=k.get("step"),
                                               log=bool(k.get("log", False)))
    return params


def trial_seed(study_seed: int, number: int) -> int:
    """A trial's own seed: fixed by the study seed and the trial number, whatever worker runs it."""
    return int.from_bytes(hashlib.sha256(f"{study_seed}:{number}".encode()).digest()[:4], "little") % (2 ** 31)


@dataclass
class StudySpec:
    """What defines a study; stored with it, and compared when it resumes."""
    space: dict[str, dict[str, Any]]
    objectives: list[Objective]
    constraints: list[Constraint] = field(default_factory=list)
    sampler: str = "tpe"
    seed: int = 0
    name: str = "lightnn"
    reference: dict[str, float] = field(default_factory=dict)  # the uncompressed model's metrics (relative bounds)

    def identity(self) -> dict[str, Any]:
        return {"space": space_fingerprint(self.space), "objectives": [str(o) for o in self.objectives],
                "constraints": [str(c) for c in self.constraints]}


def _sampler(spec: StudySpec, worker: int, n_trials: int) -> Any:
    import optuna

    if spec.sampler not in SAMPLERS:
        raise SearchError(f"unknown sampler {spec.sampler!r}; choose one of {', '.join(SAMPLERS)}")
    seed = spec.seed + 7919 * worker  # workers must not propose the same points
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler == "tpe":
        startup = max(4, min(10, n_trials // 4))  # Optuna's 10 random starts would be half of a 20-trial study
        with warnings.catch_warnings():  # multivariate TPE is still marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True)
    if spec.sampler == "cmaes":
        if len(spec.objectives) > 1:
            raise SearchError("the cmaes sampler optimizes one objective; use nsga2 or tpe for several")
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    return optuna.samplers.NSGAIISampler(seed=seed)  # constraints: Trial.set_constraint (read by every sampler)


def _finite(name: str, v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise SearchError(f"the evaluator reported {name}={v!r}, not a number") from None
    if not math.isfinite(f):
        raise SearchError(f"the evaluator reported a non-finite {name} ({f})")
    return f


class _Objective:
    """The function Optuna calls per trial: sample, evaluate, record, return the objective values."""

    def __init__(self, evaluate: Callable, spec: StudySpec, worker: int) -> None:
        self.evaluate, self.spec, self.worker = evaluate, spec, worker

    def __call__(self, trial: Any) -> Any:
        spec = self.spec
        trial.set_user_attr("worker", worker_id())  # first: a trial without it is an orphan only when stale
        params = suggest(trial, spec.space)
        seed = trial_seed(spec.seed, trial.number)
        trial.set_user_attr("seed", seed)
        t0 = time.perf_counter()
        try:
            out = self.evaluate(params, TrialInfo(trial.number, seed, self.worker))
            if not isinstance(out, Mapping):
                raise SearchError(f"the evaluator returned {type(out).__name__}, not a mapping of metrics")
            metrics = {str(k): _finite(str(k), v) for k, v in out.items()}
            for name in [o.name for o in spec.objectives] + [c.metric for c in spec.constraints]:
                if name not in metrics:
                    raise SearchError(f"the evaluator did not report {name!r} (reported: {sorted(metrics)})")
        except Exception as e:
            trial.set_user_attr("wall_s", time.perf_counter() - t0)
            trial.set_user_attr("error", f"{type(e).__name__}: {e}")
            raise
        metrics.setdefault("wall_s", time.perf_counter() - t0)
        trial.set_user_attr("wall_s", metrics["wall_s"])
        trial.set_user_attr("metrics", metrics)
        violations = [c.violation(metrics, spec.reference) for c in spec.constraints]
        trial.set_user_attr("constraints", violations)
        for c, v in zip(spec.constraints, violations):
            trial.set_constraint(str(c), v)
        values = [metrics[o.name] for o in spec.objectives]
        return values[0] if len(values) == 1 else values


# ---------------------------------------------------------------------------------------------------------
# opening, resuming, recovering


def _create(spec: StudySpec, storage_url: Any, n_trials: int) -> Any:
    import optuna

    storage = open_storage(storage_url)
    directions = [o.direction for o in spec.objectives]
    try:
        study = optuna.create_study(study_name=spec.name, storage=storage, directions=directions,
                                    sampler=_sampler(spec, 0, n_trials), load_if_exists=True)
    except ValueError as e:  # directions differ from the stored study's
        raise SearchError(f"study {spec.name!r} in {redact(str(storage_url))!r} cannot be resumed: {e}") from None
    stored = study.user_attrs.get("lightnn")
    mine = spec.identity()
    if stored is None:
        study.set_user_attr("lightnn", mine)
        study.set_user_attr("lightnn_space", spec.space)
        study.set_user_attr("reference", spec.reference)
        study.set_user_attr("created_on", socket.gethostname())
    elif stored != mine:
        diff = [k for k in mine if stored.get(k) != mine[k]]
        detail = ""
        if "space" in diff:
            old = study.user_attrs.get("lightnn_space", {})
            changed = sorted(set(old) ^ set(spec.space)) or sorted(k for k in spec.space if old.get(k) != spec.space[k])
            detail = f" (knobs that differ: {', '.join(changed[:8])})"
        raise SearchError(f"study {spec.name!r} in {redact(str(storage_url))!r} was made with a different "
                          f"{' and '.join(diff)}{detail}; resuming it would mix two searches: use a new "
                          "output folder or study name")
    return study


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_orphans(study: Any, *, stale_s: float = 120.0) -> list[int]:
    """Fail the RUNNING trials of a file journal whose worker process on this host is dead (or that never
    recorded a worker and are older than ``stale_s``), and queue their parameters again. Returns their numbers.
    (PostgreSQL studies do this through heartbeats inside Optuna.)"""
    from optuna.trial import TrialState

    host = socket.gethostname()
    now = time.time()
    orphans = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        w = t.user_attrs.get("worker")
        if w:
            h, _, pid = w.rpartition(":")
            dead = h == host and pid.isdigit() and not _pid_alive(int(pid))
        else:
            started = t.datetime_start.timestamp() if t.datetime_start else now
            dead = now - started > stale_s
        if not dead:
            continue
        storage = study._storage
        storage.set_trial_user_attr(t._trial_id, "error", f"worker {w or '?'} died while running this trial")
        storage.set_trial_user_attr(t._trial_id, "orphaned", True)
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        if t.params:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
        orphans.append(t.number)
    return orphans


def _superseded(trials: Sequence[Any]) -> set[int]:
    """Numbers of failed trials that were queued again (ours: ``retry_of``; Optuna's heartbeat retry:
    ``failed_trial``) or orphaned: they do not count toward the study's trial budget."""
    out = set()
    for t in trials:
        for key in ("retry_of",):
            if key in t.user_attrs:
                out.add(int(t.user_attrs[key]))
        if "failed_trial" in t.system_attrs:
            out.add(int(t.system_attrs["failed_trial"]))
        if t.user_attrs.get("orphaned"):
            out.add(t.number)
    return out


def _counts(study: Any) -> tuple[int, int]:
    """(finished trials that count, trials running or queued)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    sup = _superseded(trials)
    done = sum(1 for t in trials if t.state in (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
               and t.number not in sup)
    pending = sum(1 for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING))
    return done, pending


# ---------------------------------------------------------------------------------------------------------
# workers


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(int(threads))
        os.environ["OMP_NUM_THREADS"] = str(int(threads))


def _work(evaluate: Callable, spec: StudySpec, storage_url: Any, n: int, worker: int, threads: int | None,
          study: Any = None) -> None:
    """Run ``n`` trials of the study in this process."""
    import optuna

    _set_threads(threads)
    if study is None:
        study = optuna.load_study(study_name=spec.name, storage=open_storage(storage_url),
                                  sampler=_sampler(spec, worker, n))
    else:
        study.sampler = _sampler(spec, worker, n)
    study.optimize(_Objective(evaluate, spec, worker), n_trials=n, catch=(Exception,), gc_after_trial=False)


def _work_entry(args: tuple) -> None:  # a spawned worker's entry point (module level: picklable)
    _work(*args)


def _spread(n: int, k: int) -> list[int]:
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def _run_workers(evaluate: Callable, spec: StudySpec, storage_url: Any, shares: list[int], threads: int | None) -> None:
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_work_entry, args=((evaluate, spec, storage_url, n, i, threads),),
                         name=f"lightnn-search-worker-{i}") for i, n in enumerate(shares) if n > 0]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except BaseException:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(5)
        raise
    bad = [(p.name, p.exitcode) for p in procs if p.exitcode]
    if bad:
        raise SearchError("search worker(s) exited abnormally: " + ", ".join(f"{n} (exit code {c})" for n, c in bad)
                          + "; the trials they finished are kept: run the same command again to resume")


# ---------------------------------------------------------------------------------------------------------
# results


def pareto_indices(values: Sequence[Sequence[float]], objectives: Sequence[Objective]) -> list[int]:
    """Indices of the non-dominated rows (each row one value per objective)."""
    signs = [1.0 if o.direction == "minimize" else -1.0 for o in objectives]
    pts = [[s * v for s, v in zip(signs, row)] for row in values]
    out = []
    for i, a in enumerate(pts):
        dominated = any(all(b[j] <= a[j] for j in range(len(a))) and any(b[j] < a[j] for j in range(len(a)))
                        for k, b in enumerate(pts) if k != i)
        if not dominated:
            out.append(i)
    return out


@dataclass
class StudyResult:
    spec: StudySpec
    storage: str
    trials: list[dict[str, Any]]  # one row per trial (see _row)
    front: list[dict[str, Any]]  # feasible, non-dominated complete trials
    closest: dict[str, Any] | None  # when no trial meets the constraints: the least violating one
    seconds: float = 0.0

    @property
    def complete(self) -> list[dict[str, Any]]:
        return [t for t in self.trials if t["state"] == "COMPLETE"]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [t for t in self.trials if t["state"] == "FAIL"]

    def best(self, constraint: Constraint | None = None) -> dict[str, Any] | None:
        """The best complete trial on the first objective among those meeting ``constraint`` (all of the
        study's constraints when None)."""
        o = self.spec.objectives[0]
        if constraint is None:
            pool = [t for t in self.complete if t["feasible"]]
        else:
            pool = [t for t in self.complete if constraint.violation(t["metrics"], self.spec.reference) <= 0]
        if not pool:
            return None
        key = (lambda t: t["metrics"][o.name]) if o.direction == "minimize" else (lambda t: -t["metrics"][o.name])
        return min(pool, key=lambda t: (key(t), t["number"]))

    def as_dict(self) -> dict[str, Any]:
        return {"study": self.spec.name, "storage": self.storage, "sampler": self.spec.sampler,
                "seed": self.spec.seed, "objectives": [str(o) for o in self.spec.objectives],
                "constraints": [str(c) for c in self.spec.constraints], "reference": self.spec.reference,
                "space": self.spec.space, "trials": self.trials, "front": [t["number"] for t in self.front],
                "closest": self.closest and self.closest["number"], "seconds": self.seconds}


def _row(t: Any, spec: StudySpec) -> dict[str, Any]:
    viol = t.user_attrs.get("constraints")
    return {"number": t.number, "state": t.state.name, "params": dict(t.params), "seed": t.user_attrs.get("seed"),
            "worker": t.user_attrs.get("worker"), "wall_s": t.user_attrs.get("wall_s"),
            "metrics": t.user_attrs.get("metrics", {}), "constraints": viol,
            "feasible": viol is not None and all(v <= 0 for v in viol), "error": t.user_attrs.get("error"),
            "retry_of": t.user_attrs.get("retry_of", t.system_attrs.get("failed_trial"))}


def _result(study: Any, spec: StudySpec, storage_url: Any, seconds: float) -> StudyResult:
    rows = [_row(t, spec) for t in study.get_trials(deepcopy=False)]
    done = [r for r in rows if r["state"] == "COMPLETE"]
    feas = [r for r in done if r["feasible"]]
    vals = [[r["metrics"][o.name] for o in spec.objectives] for r in feas]
    front = [feas[i] for i in pareto_indices(vals, spec.objectives)] if feas else []
    closest = None
    if not feas and done and spec.constraints:
        closest = min(done, key=lambda r: (sum(max(0.0, v) for v in r["constraints"]), r["number"]))
    return StudyResult(spec, redact(str(storage_url)) if storage_url is not None else "memory", rows, front,
                       closest, seconds)


def load_result(spec: StudySpec, storage_url: Any) -> StudyResult:
    """The results of a stored study (no trials run)."""
    study = _create(spec, storage_url, 0)
    return _result(study, spec, storage_url, 0.0)


def run_study(evaluate: Callable[[dict, TrialInfo], Mapping[str, float]], space: Mapping[str, Mapping[str, Any]], *,
              objectives: str | Sequence[str] = "top1", constraints: Sequence[str] | str | None = None,
              sampler: str = "tpe", seed: int = 0, n_trials: int = 20, storage: str | os.PathLike | None = None,
              study_name: str = "lightnn", workers: int = 1, threads: int | None = None,
              reference: Mapping[str, float] | None = None, log: Callable[[str], None] | None = None) -> StudyResult:
    """Run (or resume) a study until it holds ``n_trials`` finished trials; see the module docstring.

    ``workers`` > 1 spawns that many processes (``threads`` torch threads each; default 1 when several
    workers, torch's default for one), sharing ``storage`` (a journal file or PostgreSQL, never memory).
    ``reference`` holds the metrics relative constraints (``macs<=0.5x``) are relative to.
    """
    say = log or (lambda s: None)
    if not isinstance(n_trials, int) or n_trials < 0:
        raise SearchError(f"n_trials must be a whole number >= 0, got {n_trials!r}")
    if not isinstance(workers, int) or workers < 1:
        raise SearchError(f"workers must be a whole number >= 1, got {workers!r}")
    kind = storage_kind(storage)
    if workers > 1 and kind == "memory":
        raise SearchError("several workers need a shared storage: give a journal file path or a postgresql:// URL")
    spec = StudySpec(check_space(space), parse_objectives(objectives), parse_constraints(constraints), sampler,
                     int(seed), study_name, dict(reference or {}))
    for c in spec.constraints:
        c.limit(spec.reference) if c.relative else None
    t0 = time.perf_counter()
    study = _create(spec, storage, n_trials)
    if kind == "journal":
        orphans = recover_orphans(study)
        if orphans:
            say(f"trials {orphans} were left running by a worker that died; their parameters run again")
    done, pending = _counts(study)
    todo = max(0, n_trials - done)
    if done:
        say(f"resuming study {spec.name!r}: {done} of {n_trials} trials finished")
    if todo:
        if workers == 1:
            _work(evaluate, spec, storage, todo, 0, threads, study=study)
        else:
            _run_workers(evaluate, spec, storage, _spread(todo, workers), threads or 1)
            study = _create(spec, storage, n_trials)
    return _result(study, spec, storage, time.perf_counter() - t0)
