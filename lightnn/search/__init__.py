"""Search (``lightnn.search``): studies over Optuna (samplers random, TPE, CMA-ES, NSGA-II; journal-file and
PostgreSQL storage; worker processes), named objectives and constraints, and the automatic compression search
behind ``lightnn search compress``; AMC's DDPG agent (:mod:`lightnn.search.ddpg`).

Optuna proposes the points and stores the trials; lightnn supplies the metrics, the knobs, the recovery of a
killed search and the reports."""

from .ddpg import DDPGAgent, DDPGConfig, ReplayBuffer, truncated_normal
from .objectives import (Constraint, Metric, Objective, SearchError, metrics, parse_constraints, parse_objectives,
                         register_metric)
from .storage import FlockLock, open_storage, redact, repair_journal, storage_kind
from .study import (SAMPLERS, StudyResult, StudySpec, TrialInfo, check_space, load_result, pareto_indices,
                    recover_orphans, run_study, space_fingerprint, suggest, trial_seed)

__all__ = [
    "run_study", "load_result", "StudyResult", "StudySpec", "TrialInfo", "SAMPLERS", "check_space", "suggest",
    "space_fingerprint", "trial_seed", "pareto_indices", "recover_orphans",
    "Objective", "Constraint", "Metric", "SearchError", "metrics", "register_metric", "parse_objectives",
    "parse_constraints",
    "open_storage", "storage_kind", "redact", "repair_journal", "FlockLock",
    "DDPGAgent", "DDPGConfig", "ReplayBuffer", "truncated_normal",
]
