"""The automatic compression search as a job: ``lightnn search compress`` and the optional ``search`` stage of
``lightnn run`` both call :func:`search_compress`.

A study (:func:`lightnn.search.run_study` over :class:`~lightnn.search.compress.CompressEvaluator`) runs in the
output folder's journal (``study.journal``) unless another storage is given, so a killed search resumes with the
same command. Then, for each constraint (and for all of them together), the best trial meeting it is rebuilt with
the full fine-tune on every training image, scored on the validation split and written as a deployable folder
``best/<slug>/`` (``model.lnz``, ``model.onnx``, ``model.int8.onnx`` when its int8 knob asks for it, ``build.json``).
The Pareto front goes to ``report.md`` (a table), ``pareto.png`` and ``report.json``. When no trial meets the
constraints the report names the closest one and nothing is built.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from .compress import CompressEvaluator, CompressSearchConfig
from .objectives import Constraint, SearchError, metrics, parse_constraints, parse_objectives
from .study import StudyResult, run_study

__all__ = ["search_compress", "build_targets", "slug", "write_search_report"]


def slug(c: Constraint | None) -> str:
    """A folder name for a constraint: ``latency<=2.5`` -> ``latency-le-2.5``; None -> ``all-constraints``."""
    if c is None:
        return "all-constraints"
    s = f"{c.metric}-{'le' if c.op == '<=' else 'ge'}-{c.bound:g}{'x' if c.relative else ''}"
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", s)


def build_targets(res: StudyResult) -> list[tuple[str, str, dict[str, Any]]]:
    """``(slug, what it is best for, trial row)`` for every model the search ships: the best trial (on the first
    objective) meeting each constraint, and meeting all of them; with no constraints, the best trial."""
    cons = res.spec.constraints
    out: list[tuple[str, str, dict[str, Any]]] = []
    if not cons:
        best = res.best()
        return [("best", f"best {res.spec.objectives[0].name}", best)] if best else []
    for c in cons:
        t = res.best(c)
        if t is not None:
            out.append((slug(c), str(c), t))
    if len(cons) > 1:
        t = res.best()
        if t is not None:
            out.append((slug(None), ", ".join(str(c) for c in cons), t))
    return out


def _build_one(ev: CompressEvaluator, folder: Path, trial: dict[str, Any], epochs: float, log) -> dict[str, Any]:
    """Rebuild one trial into ``folder`` (skipped when its ``build.json`` holds the same trial and epochs)."""
    from ..utils.io import atomic_write_json

    stamp = folder / "build.json"
    if stamp.exists():
        try:
            old = json.loads(stamp.read_text())
            if old.get("trial") == trial["number"] and old.get("params") == trial["params"] \
                    and old.get("epochs") == epochs:
                log(f"  {folder.name}: trial {trial['number']} built earlier, kept")
                return old
        except ValueError:
            pass  # a torn stamp: build again
    log(f"  {folder.name}: rebuilding trial {trial['number']} with {epochs:g} fine-tune epoch(s) on every "
        "training image ...")
    seed = int(trial.get("seed") or 0)
    _, info = ev.build(trial["params"], seed=seed, epochs=epochs, output=folder)
    int8 = trial["params"].get("int8", "none") not in (None, "none")
    deploy = "model.int8.onnx" if int8 else "model.onnx"
    rec = {"trial": trial["number"], "params": trial["params"], "seed": seed, "epochs": epochs,
           "search_metrics": trial["metrics"], "val_metrics": info["metrics"], "applied": info["applied"],
           "finetune": info["finetune"], "seconds": info["seconds"], "scored_on": info["scored_on"],
           "deploy": deploy, "normalize": {k: list(v) for k, v in ev.state.norm.items()}, "files": sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix in
                                             (".lnz", ".onnx"))}
    atomic_write_json(stamp, rec)
    return rec


def _fmt_metric(name: str, v: Any) -> str:
    if v is None:
        return "-"
    v = float(v)
    if name in ("macs", "params"):
        return f"{v / 1e6:.2f} M"
    if name in ("bytes", "lnz_bytes"):
        return f"{v / 1e3:.1f} kB"
    if name in ("latency", "predicted_latency"):
        return f"{v:.3f}"
    return f"{v:.2f}"


def _columns(res: StudyResult) -> list[str]:
    cols = [o.name for o in res.spec.objectives] + [c.metric for c in res.spec.constraints]
    for extra in ("top1", "macs", "params", "bytes", "latency", "predicted_latency"):
        cols.append(extra)
    have = set().union(*(t["metrics"] for t in res.complete)) if res.complete else set()
    return [c for c in dict.fromkeys(cols) if c in have]


def _units() -> dict[str, str]:
    u = {n: m.unit for n, m in metrics().items()}
    u.update(macs="", params="", bytes="", latency="ms", predicted_latency="ms")
    return u


def _knobs(params: dict[str, Any], limit: int = 6) -> str:
    items = [f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
             if not k.startswith("bits:")]
    bits = [int(round(v)) for k, v in params.items() if k.startswith("bits:")]
    if bits:
        items.append(f"bits {min(bits)}-{max(bits)} over {len(bits)} layers")
    return ", ".join(items[:limit]) + (" ..." if len(items) > limit else "")


def write_search_report(out: Path, res: StudyResult, ev: CompressEvaluator, builds: dict[str, dict[str, Any]],
                        targets: Sequence[tuple[str, str, dict]], extra: dict[str, Any]) -> dict[str, Any]:
    """``report.md``, ``report.json`` and ``pareto.png`` in ``out``; returns the JSON summary."""
    from ..report.plots import plot_search
    from ..utils.io import atomic_write_json, atomic_write_text

    spec = res.spec
    cols = _columns(res)
    units = _units()
    head = " | ".join(f"{c} ({units[c]})" if units.get(c) else c for c in cols)
    front = sorted(res.front, key=lambda t: (t["metrics"][spec.objectives[0].name]
                                             * (-1 if spec.objectives[0].direction == "maximize" else 1)))
    lines = [f"# lightnn search compress: {ev.checkpoint}", "",
             f"Study `{spec.name}` in `{res.storage}`: sampler {spec.sampler}, seed {spec.seed}; objectives "
             f"{', '.join(str(o) for o in spec.objectives)}; constraints "
             f"{', '.join(str(c) for c in spec.constraints) or 'none'}. "
             f"{len(res.complete)} trials complete, {len(res.failed)} failed "
             f"({len(res.trials)} recorded). Trials are scored on a search split of "
             f"{extra['images']['search']} training images; the models below are rebuilt with the full fine-tune on "
             f"{extra['images']['final_train']} images and scored on the {extra['images']['val']} validation images.",
             "", "## Reference (uncompressed)", "", f"| {head} |", "|" + "---|" * len(cols),
             "| " + " | ".join(_fmt_metric(c, spec.reference.get(c)) for c in cols) + " |", ""]
    lines += ["## Pareto front (feasible trials, search split)", ""]
    if front:
        lines += [f"| trial | {head} | knobs |", "|---|" + "---:|" * len(cols) + "---|"]
        for t in front:
            lines.append(f"| {t['number']} | " + " | ".join(_fmt_metric(c, t["metrics"].get(c)) for c in cols)
                         + f" | {_knobs(t['params'])} |")
    else:
        lines.append("No complete trial meets the constraints.")
        if res.closest:
            c = res.closest
            viol = ", ".join(f"{k} {v:+.1%}" for k, v in zip((str(x) for x in spec.constraints), c["constraints"]))
            lines.append(f"The closest is trial {c['number']} (violations as a fraction of the bound: {viol}): "
                         + ", ".join(f"{k} {_fmt_metric(k, c['metrics'].get(k))}" for k in cols) + ".")
    lines.append("")
    if builds:
        lines += ["## Shipped models (rebuilt, validation split)", "",
                  "| for | trial | folder | search top-1 (%) | val top-1 (%) | MACs (M) | latency (ms) | file |",
                  "|---|---|---|---:|---:|---:|---:|---|"]
        for s, what, t in targets:
            b = builds[s]
            vm = b["val_metrics"]
            lines.append(f"| {what} | {b['trial']} | `best/{s}/` | {b['search_metrics'].get('top1', float('nan')):.2f} "
                         f"| {vm['top1']:.2f} | {vm['macs'] / 1e6:.2f} | {vm['latency']:.3f} | `{b['deploy']}` |")
        lines.append("")
    if res.failed:
        lines += ["## Failed trials", ""] + [f"- trial {t['number']}: {t['error']}" for t in res.failed] + [""]
    lines += ["Files: `report.json` (every trial: parameters, seed, wall time, metrics), `pareto.png`, "
              "`best/<constraint>/` (`model.lnz`, `model.onnx`, `build.json`).", ""]
    plot_search(res.complete, res.front, spec.objectives, out / "pareto.png",
                limits=[(c.metric, c.limit(spec.reference)) for c in spec.constraints])
    summary = {**res.as_dict(), "feasible": bool(res.front), "builds": builds,
               "targets": {s: {"for": what, "trial": t["number"]} for s, what, t in targets}, **extra}
    atomic_write_text(out / "report.md", "\n".join(lines))
    atomic_write_json(out / "report.json", summary)
    return summary


def search_compress(checkpoint: str | os.PathLike, data: str | os.PathLike, output: str | os.PathLike, *,
                    config: CompressSearchConfig | None = None, objectives: str | Sequence[str] = "top1,latency",
                    constraints: Sequence[str] | str | None = None, trials: int = 20, sampler: str = "tpe",
                    seed: int = 0, storage: str | None = None, study_name: str = "compress", workers: int = 1,
                    threads: int | None = None, build: bool = True, log: Callable[[str], None] = print
                    ) -> dict[str, Any]:
    """Run (or resume) the search, rebuild the best model per constraint, write the report; returns the
    summary (``report.json``'s content). ``summary["feasible"]`` is False when no trial met the constraints."""
    from ..utils.runfolder import lock_folder

    out = Path(output)
    parse_objectives(objectives)  # bad names fail before the model and data load
    parse_constraints(constraints)
    ev = CompressEvaluator(checkpoint, data, config or CompressSearchConfig(), log=log)
    space = ev.space()
    ref = ev.reference()
    store = storage if storage is not None else str(out / "study.journal")
    out.mkdir(parents=True, exist_ok=True)
    log(f"searching {len(space)} knobs ({', '.join(ev.config.knobs)}) over {trials} trials, storage {store}")
    t0 = time.perf_counter()
    res = run_study(ev, space, objectives=objectives, constraints=constraints, sampler=sampler, seed=seed,
                    n_trials=trials, storage=None if store == "memory" else store, study_name=study_name,
                    workers=workers, threads=threads, reference=ref, log=log)
    extra = {"describe": ev.describe(), "images": ev.describe()["images"], "search_s": time.perf_counter() - t0}
    with lock_folder(out, "search folder"):
        targets = build_targets(res) if build else []
        builds = {s: _build_one(ev, out / "best" / s, t, float(ev.config.final_epochs), log) for s, _, t in targets}
        summary = write_search_report(out, res, ev, builds, targets, extra)
    log(f"{len(res.complete)} trials complete, {len(res.failed)} failed; front of {len(res.front)}; "
        f"report {out / 'report.md'}")
    return summary


def infeasible_message(summary: dict[str, Any]) -> str:
    """The one line a caller raises when no trial met the constraints."""
    c = next((t for t in summary["trials"] if t["number"] == summary.get("closest")), None)
    cons = ", ".join(summary["constraints"])
    if c is None:
        return f"no trial completed, so none meets {cons}"
    viol = ", ".join(f"{k} off by {v:.1%}" for k, v in zip(summary["constraints"], c["constraints"]) if v > 0)
    return f"no trial meets {cons}; the closest is trial {c['number']} ({viol})"
