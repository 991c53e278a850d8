"""Search storage overhead per trial (memory, journal file, PostgreSQL) and worker processes against threads.

(a) A study of M trials whose objective costs nothing, on each storage, 5 repeats: ms per trial, and the journal's
(and PostgreSQL's) overhead over memory as a share of a 30 s objective (target: under 1%).
(b) A CPU-bound objective (a small conv net forward/backward, about 1 s): K=2 worker processes of 1 thread each
against 1 process of 2 threads, trials per minute.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from records import col, make_record, render, start, table, write_record  # noqa: E402

SPACE = {"x": {"type": "float", "low": 0.0, "high": 1.0}}
OBJECTIVE_S = 30.0


def zero(params, trial):
    return {"top1": params["x"]}


def conv(params, trial):
    import torch

    torch.manual_seed(trial.seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 3, padding=1),
                              torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 10))
    x = torch.randn(32, 3, 32, 32)
    for _ in range(60):
        net(x).sum().backward()
    return {"top1": params["x"]}


def _spread(v):
    q = statistics.quantiles(v, n=4) if len(v) > 1 else [v[0]] * 3
    return {"median": statistics.median(v), "iqr": q[2] - q[0]}


def per_trial_ms(storage_of, m, repeats):
    from lightnn.search import run_study

    out = []
    for r in range(repeats):
        t0 = time.perf_counter()
        run_study(zero, SPACE, objectives="top1", sampler="random", n_trials=m, storage=storage_of(r),
                  study_name=f"s{r}")
        out.append((time.perf_counter() - t0) * 1e3 / m)
    return out


def main() -> int:
    from lightnn.search import run_study
    from lightnn.search._pgtest import PgServer, PgUnavailable

    ctx = start(1, "optuna")
    m, repeats = 100, 5
    tmp = Path(tempfile.mkdtemp(prefix="search-storage-"))
    times = {"memory": per_trial_ms(lambda r: None, m, repeats),
             "journal": per_trial_ms(lambda r: str(tmp / f"j{r}.journal"), m, repeats)}
    pg_note = ""
    try:
        with PgServer.start() as pg:
            times["postgresql"] = per_trial_ms(lambda r: pg.url, m, repeats)
    except PgUnavailable as e:
        pg_note = f" PostgreSQL not measured: {e}."
    rows = []
    verdicts = []
    for kind, v in times.items():
        over = [a - b for a, b in zip(v, times["memory"])]
        share = [o / (OBJECTIVE_S * 1e3) * 100 for o in over]
        row = [kind, _spread(v), None if kind == "memory" else _spread(over),
               None if kind == "memory" else _spread(share)]
        rows.append(row)
        if kind != "memory":
            met = statistics.median(share) < 1.0
            verdicts.append(f"{kind}: {statistics.median(share):.3f}% of a 30 s objective, target under 1% "
                            f"{'met' if met else 'not met'}")
    parts = [{"text": f"A study of {m} trials with a near-zero objective (random sampler, one process), "
                      f"{repeats} repeats per storage; overhead is each repeat's ms per trial minus the memory "
                      f"repeat's with the same index, measured in the same run." + pg_note},
             table("overhead", [col("storage"), col("ms per trial", "{median:.2f} (IQR {iqr:.2f})", "ms", "r"),
                                col("over memory", "{median:+.2f} (IQR {iqr:.2f})", "ms", "r"),
                                col("of a 30 s objective", "{median:.4f}% (IQR {iqr:.4f})", "%", "r")], rows),
             {"text": "; ".join(verdicts) + "."}]

    n = 8
    rates = {}
    for label, kw in (("1 process x 2 threads", {"workers": 1, "threads": 2}),
                      ("2 processes x 1 thread", {"workers": 2, "threads": 1})):
        rep = []
        for r in range(2):
            t0 = time.perf_counter()
            run_study(conv, SPACE, objectives="top1", sampler="random", n_trials=n,
                      storage=str(tmp / f"w{kw['workers']}-{r}.journal"), **kw)
            rep.append(n / (time.perf_counter() - t0) * 60)
        rates[label] = rep
    base = rates["1 process x 2 threads"]
    wrows = [[k, _spread(v), _spread([a / b for a, b in zip(v, base)])] for k, v in rates.items()]
    parts += [{"text": f"{n} trials of a small conv net forward/backward (60 steps of batch 32 at 32x32) on a "
                       "journal, 2 repeats each; the ratio is against 1 process of 2 threads in the same run "
                       "(worker start-up included)."},
              table("workers", [col("layout"), col("trials per minute", "{median:.1f} (IQR {iqr:.1f})", "", "r"),
                                col("ratio", "{median:.2f}x (IQR {iqr:.2f})", "", "r")], wrows)]
    rec = make_record("search_storage", "Search storage overhead per trial, and worker processes against threads",
                      "python benchmarks/search_storage.py", parts, **ctx)
    rec["data"] = {"ms_per_trial": times, "trials_per_minute": rates}
    print(render(rec))
    print("wrote", write_record(rec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
