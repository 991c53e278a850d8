"""ResNet-20 on CIFAR-10: what a moving average of the weights, mirror test-time augmentation and Cutout add.

Each ``lightnn train --ema DECAY`` run (with or without ``--cutout N``) holds two models: ``last.pt`` the trained (raw) weights, ``model.pt`` their
exponential moving average. This script scores both on the validation split with and without flip test-time
augmentation (``lightnn.train.evaluate(tta="flip")``), reads the run's per-epoch log, and writes

- ``benchmarks/runs/<name>.json``: each run's record (recipe, per-epoch raw and EMA validation top-1, epoch times,
  the four scores), committed so the table can be rebuilt and checked without the data or the checkpoints;
- ``benchmarks/results/training_levers.json``: the section's record (its notes are ``notes/training_levers.md``).

    python benchmarks/training_levers.py --run runs/r20_bs32_ema --data ../shared/data/cifar10-train-jpeg.tar.gz
    python benchmarks/training_levers.py     # the table again from the committed records, no data needed
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, cpu_name, machine_line, today  # noqa: E402
from records import col, render, table, write_record  # noqa: E402
from records import make_record as section_record  # noqa: E402  (make_record here is a run's record)

RECORDS = ROOT / "benchmarks" / "runs"



def score_run(run: Path, data, batch_size: int = 500) -> dict:
    """Validation top-1/top-5 of the run's raw (``last.pt``) and averaged (``model.pt``) weights, each with and
    without flip test-time augmentation, on the split the run was trained with (``data``: the dataset's path, or
    the validation :class:`~lightnn.data.ImageData` itself)."""
    import yaml

    from lightnn.checkpoint import load_any, read_checkpoint
    from lightnn.data import ImageData, load_dataset
    from lightnn.train import evaluate

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    val = data if isinstance(data, ImageData) else load_dataset(
        data, "val", val_fraction=cfg.get("val_fraction", 0.1), seed=cfg.get("split_seed", 0))
    scores = {}
    for which, fname in (("raw", "last.pt"), ("ema", "model.pt")):
        path = run / fname
        norm = read_checkpoint(path)["meta"]["normalize"]
        model = load_any(str(path))
        for tta in (None, "flip"):
            r = evaluate(model, val, batch_size=batch_size, tta=tta, **norm)
            scores[f"{which}{'_flip' if tta else ''}"] = {"top1": r["top1"], "top5": r["top5"], "n": r["n"]}
    return scores


def make_record(run: Path, scores: dict) -> dict:
    """The run's record: everything ``benchmarks/training.py`` keeps of a run (its config without the class list
    and every epoch's metrics, so ``training.py --runs`` reads it as a run directory) plus the four scores."""
    import yaml

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    hist = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    if len(hist) != cfg["epochs"]:
        raise SystemExit(f"--run {run}: {len(hist)} of {cfg['epochs']} epochs logged; finish (or --resume) it first")
    return {"name": run.name, "recorded": today(), "machine": machine_line(), "cpu": cpu_name(),
            "config": {k: v for k, v in cfg.items() if k != "classes"}, "epochs": hist, "scores": scores}


def _recipe(c: dict) -> str:
    return (f"momentum {c['momentum']}, Nesterov {c['nesterov']}, weight decay {c['weight_decay']} (not on "
            f"norms/biases), {c['schedule']} schedule ({c['warmup_epochs']} warm-up epoch), label smoothing "
            f"{c['label_smoothing']}, pad-4 crop + flip, {'bf16 + channels-last' if c.get('amp') else 'fp32'}; "
            f"{c['train_images']:,} / {c['val_images']:,} seeded split (seed {c['split_seed']}) of the JPEG "
            f"training images")


def _run_label(c: dict) -> str:
    return f"batch {c['batch_size']}, lr {c['lr']}" + (f", cutout {c['cutout']}" if c.get("cutout") else "")


COLUMNS = [col("run"), col("weights"), col("val top-1 %", "{value:.2f}", "%", "r"),
           col("val top-5 %", "{value:.2f}", "%", "r"), col("with mirror TTA: top-1 %", "{value:.2f}", "%", "r"),
           col("top-5 %", "{value:.2f}", "%", "r"),
           col("train time", "{epochs} epochs, {minutes:.1f} min", {"epochs": "epochs", "minutes": "min"}, "r")]


def levers_record(records: list[dict]) -> dict:
    """The section's record from run records alone (one table row per run and weights)."""
    recipes = sorted({_recipe(r["config"]) for r in records})
    cpus = sorted({r["cpu"] for r in records})
    intro = (f"On `lightnn train ... --ema DECAY` runs (records: "
             f"{', '.join('`benchmarks/runs/' + r['name'] + '.json`' for r in records)}); the dates are when each was "
             "scored.")
    recipe = (f"Recipe: {'; or '.join(recipes)}. Weight average: EMA of the weights and BN statistics after every "
              "step. Wall-clock is the sum of the epoch times (training + two validations).")
    rows = []
    for rec in records:
        c, s, ep = rec["config"], rec["scores"], rec["epochs"]
        wall = sum(r["epoch_time_s"] for r in ep)
        for which, label in (("raw", "trained (last step)"), ("ema", f"moving average (decay {c['ema']})")):
            a, b = s[which], s[f"{which}_flip"]
            rows.append([_run_label(c), label, a["top1"], a["top5"], b["top1"], b["top5"],
                         {"epochs": len(ep), "minutes": wall / 60}])
    every = [e["epoch"] for e in records[0]["epochs"] if e["epoch"] % 5 == 0 or e["epoch"] == 1]
    epoch_rows = []
    for rec in records:
        by_epoch = {e["epoch"]: e for e in rec["epochs"]}
        for key, label in (("val_top1_raw", "trained"), ("val_top1", "average")):
            epoch_rows.append([_run_label(rec["config"]), label] + [by_epoch[e][key] for e in every])
    epoch_columns = [col("run"), col("weights")] + [col(str(e), "{value:.2f}", "%", "r") for e in every]
    parts = [{"text": intro}, {"text": recipe}, table("scores", COLUMNS, rows),
             {"text": "Validation top-1 during the runs (every 5th epoch):"},
             table("epochs", epoch_columns, epoch_rows)]
    return section_record("training_levers", "ResNet-20, 30 epochs: what a weight average, mirror test-time "
                       "augmentation and Cutout add", "python benchmarks/training_levers.py --run DIR ... --data PATH",
                       parts, machine={"cpu": ", ".join(cpus)},
                       date=", ".join(sorted({r["recorded"] for r in records})), software={})


def committed_records() -> list[dict]:
    """The run records in ``benchmarks/runs/`` that this script wrote (they hold ``scores``), by name."""
    recs = [json.loads(p.read_text()) for p in sorted(RECORDS.glob("*.json"))]
    return [r for r in recs if "scores" in r]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", nargs="*", default=[], help="finished `lightnn train --ema` run directories "
                    "(config.yaml, metrics.jsonl, last.pt, model.pt): scored and recorded in benchmarks/runs/")
    ap.add_argument("--data", help="the dataset the runs were trained on")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    import yaml

    from lightnn.utils.io import atomic_write_text

    new = []
    for d in args.run:
        run = Path(d)
        if not args.data:
            ap.error("--run needs --data PATH (the dataset the run was trained on)")
        missing = [f for f in ("config.yaml", "metrics.jsonl", "last.pt", "model.pt") if not (run / f).is_file()]
        if missing:
            ap.error(f"--run {run}: not a finished `lightnn train --ema` run directory (missing {', '.join(missing)})")
        if not (yaml.safe_load((run / "config.yaml").read_text()) or {}).get("ema"):
            ap.error(f"--run {run}: trained without --ema (model.pt and last.pt hold the same weights)")
        new.append(make_record(run, score_run(run, args.data)))
    if not args.no_write:
        RECORDS.mkdir(parents=True, exist_ok=True)
        for rec in new:
            atomic_write_text(RECORDS / f"{rec['name']}.json", json.dumps(rec, indent=1) + "\n")
    records = {r["name"]: r for r in committed_records()}
    records.update({r["name"]: r for r in new})
    if not records:
        ap.error("no run records in benchmarks/runs/ yet: give --run DIR ... --data PATH")
    rec = levers_record([records[k] for k in sorted(records)])
    print(render(rec))
    if not args.no_write:
        print(f"wrote {write_record(rec)}")  # with notes/training_levers.md as its notes
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
