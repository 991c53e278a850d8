"""ResNet-20 on CIFAR-10 (45,000 / 5,000 split) for 30 epochs under one named recipe variant (GPU command).

The recipes differ only in label smoothing and bf16 autocast, to find what keeps the 30-epoch run below the
published accuracy (He et al. 2016, Table 6: 91.25% after 64k iterations):

    python benchmarks/cifar10_resnet20_recipes.py --data .devdata/cifar10-train-jpeg.tar.gz --out $OUT --recipe ls0_bf16

Writes ``resnet20_<recipe>.pt`` and ``resnet20_<recipe>.json`` (per-epoch history, final top-1, wall time).
``--table $OUT/resnet20_*.json`` then writes the section's record, ``benchmarks/results/training_recipes.json``
(its notes are ``benchmarks/notes/training_recipes.md``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from records import col, cpu_model, make_record, render, table, today, write_record  # noqa: E402

from lightnn import create_model  # noqa: E402
from lightnn.checkpoint import save_checkpoint  # noqa: E402
from lightnn.data import load_dataset  # noqa: E402
from lightnn.train import TrainConfig, fit  # noqa: E402

RECIPES = {  # name: (label smoothing, bf16 autocast)
    "ls0_bf16": (0.0, True),
    "ls0_fp32": (0.0, False),
    "ls01_fp32": (0.1, False),
    "ls01_bf16": (0.1, True),
}


def _columns(n: int) -> list[dict]:
    return [col("recipe"), col("label smoothing", "{value}", None, "r"), col("bf16 autocast"),
            col("val top-1 after 30 epochs", "{value:.2f}", "%", "r"), col("best epoch top-1", "{value:.2f}", "%", "r"),
            col(f"wall time (s, {n} runs sharing the GPU)", "{value:.0f}", "s", "r")]


def recipes_record(summaries: list[dict]) -> dict:
    """The section's record from the runs' ``resnet20_<recipe>.json`` summaries (run side by side on one device)."""
    first = summaries[0]
    for s in summaries:
        if (s["device"], s["torch"]) != (first["device"], first["torch"]):
            raise SystemExit(f"--table: {s['recipe']} ran on {s['device']} / torch {s['torch']}, the others on "
                             f"{first['device']} / torch {first['torch']}: not one side-by-side run")
    rows = [[s["recipe"], s["label_smoothing"], "yes" if s["bf16"] else "no", s["final_top1"], s["best_top1"],
             s["wall_s"]] for s in sorted(summaries, key=lambda s: s["recipe"])]
    text = (f"{len(rows)} variants run side by side in one command; same split (45,000 / 5,000, seed 0), batch 128, "
            "SGD Nesterov lr 0.1 cosine with 1 warm-up epoch, weight decay 5e-4 (not on norms/biases), pad-4 crop + "
            "flip.")
    machine = {"gpu" if first.get("cuda", True) else "cpu": first["device"]}
    return make_record("training_recipes", "ResNet-20, 30 epochs: which recipe choice costs accuracy?",
                       "python benchmarks/cifar10_resnet20_recipes.py",
                       [{"text": text}, table("main", _columns(len(rows)), rows)], machine=machine,
                       date=max(s.get("date", "?") for s in summaries), software={"torch": first["torch"]}, level=3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data")
    ap.add_argument("--out")
    ap.add_argument("--recipe", choices=sorted(RECIPES))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--table", nargs="+", default=None, metavar="JSON",
                    help="only write results/training_recipes.json from these runs' resnet20_<recipe>.json")
    ap.add_argument("--no-write", action="store_true", help="with --table: print only")
    args = ap.parse_args(argv)
    if args.table:
        summaries = []
        for p in args.table:
            try:
                summaries.append(json.loads(Path(p).read_text()))
            except (OSError, json.JSONDecodeError) as e:
                ap.error(f"--table {p}: cannot read the run summary ({e})")
        rec = recipes_record(summaries)
        print(render(rec))
        if not args.no_write:
            print("wrote", write_record(rec))
        return 0
    if not (args.data and args.out and args.recipe):
        ap.error("a training run needs --data, --out and --recipe (or --table JSON ... for the record)")
    ls, amp = RECIPES[args.recipe]
    train = load_dataset(args.data, "train")
    val = load_dataset(args.data, "val")
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10)
    t0 = time.time()
    res = fit(model, train, val, TrainConfig(epochs=args.epochs, batch_size=128, lr=0.1, weight_decay=5e-4,
                                             schedule="cosine", warmup_epochs=1, label_smoothing=ls, amp=amp,
                                             channels_last=amp, progress=False, verbose=False))
    wall = time.time() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out / f"resnet20_{args.recipe}.pt", model.cpu(),
                    meta={"normalize": res["normalize"], "epochs": args.epochs, "top1": res["final"]["val_top1"]})
    summary = {"recipe": args.recipe, "label_smoothing": ls, "bf16": amp, "epochs": args.epochs,
               "final_top1": res["final"]["val_top1"], "best_top1": res["best_val_top1"], "wall_s": wall,
               "device": torch.cuda.get_device_name() if torch.cuda.is_available() else cpu_model(),
               "cuda": torch.cuda.is_available(), "torch": torch.__version__, "date": today(),
               "history": res["history"]}
    (out / f"resnet20_{args.recipe}.json").write_text(json.dumps(summary, indent=1))
    print(args.recipe, summary["final_top1"], f"{wall:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
