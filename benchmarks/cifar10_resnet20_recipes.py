"""ResNet-20 on CIFAR-10 (45,000 / 5,000 split) for 30 epochs under one named recipe variant (GPU command).

The recipes differ only in label smoothing and bf16 autocast, to find what keeps the 30-epoch run below the
published accuracy (paper_tables.md section 13: 91.25% after 64k iterations):

    python benchmarks/cifar10_resnet20_recipes.py --data .devdata/cifar10-train-jpeg.tar.gz --out $OUT --recipe ls0_bf16

Writes ``resnet20_<recipe>.pt`` and ``resnet20_<recipe>.json`` (per-epoch history, final top-1, wall time).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightnn import create_model  # noqa: E402
from lightnn.checkpoint import save_checkpoint  # noqa: E402
from lightnn.data import load_dataset  # noqa: E402
from lightnn.train import fit  # noqa: E402

RECIPES = {  # name: (label smoothing, bf16 autocast)
    "ls0_bf16": (0.0, True),
    "ls0_fp32": (0.0, False),
    "ls01_fp32": (0.1, False),
    "ls01_bf16": (0.1, True),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--recipe", choices=sorted(RECIPES), required=True)
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()
    ls, amp = RECIPES[args.recipe]
    train = load_dataset(args.data, "train")
    val = load_dataset(args.data, "val")
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10)
    t0 = time.time()
    res = fit(model, train, val, epochs=args.epochs, batch_size=128, lr=0.1, weight_decay=5e-4, schedule="cosine",
              warmup_epochs=1, label_smoothing=ls, amp=amp, channels_last=amp, progress=False, verbose=False)
    wall = time.time() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out / f"resnet20_{args.recipe}.pt", model.cpu(),
                    meta={"normalize": res["normalize"], "epochs": args.epochs, "top1": res["final"]["val_top1"]})
    summary = {"recipe": args.recipe, "label_smoothing": ls, "bf16": amp, "epochs": args.epochs,
               "final_top1": res["final"]["val_top1"], "best_top1": res["best_val_top1"], "wall_s": wall,
               "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
               "torch": torch.__version__, "history": res["history"]}
    (out / f"resnet20_{args.recipe}.json").write_text(json.dumps(summary, indent=1))
    print(args.recipe, summary["final_top1"], f"{wall:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
