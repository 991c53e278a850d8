"""`lightnn eval`: top-1, top-5, loss, per-class accuracy and confusion matrix of a checkpoint on a dataset."""

from __future__ import annotations

import json
import warnings

from ..data.datasets import SPLITS
from ..train.evaluate import TTA_MODES
from ._common import add_command, refuse_inapplicable, track_explicit


def add_parser(sub):
    p = add_command(sub, "eval", "evaluate a checkpoint (.pt or .lnz) or an ONNX model: top-1/top-5, loss, per-class, "
                    "confusion",
                    ["lightnn eval runs/r20/model.pt --data sample",
                     "lightnn eval r20.int8.onnx --data sample --json",
                     "lightnn eval runs/r20/model.pt --data ../shared/data/cifar10-train-jpeg.tar.gz --json",
                     "lightnn eval model.lnz --data sample --split all",
                     "lightnn eval runs/r20/model.pt --data ../shared/data/cifar10-train-jpeg.tar.gz --tta flip"])
    p.add_argument("checkpoint", help="a lightnn checkpoint (.pt), Deep Compression file (.lnz) or ONNX model "
                                      "(.onnx, run by ONNX Runtime on the CPU)")
    p.add_argument("--data", default="sample", help="dataset: folder, .zip, .tar.gz, CIFAR pickles, or 'sample'")
    p.add_argument("--split", default="val", choices=SPLITS,
                   help="which split (val: the seeded split carved from train when there is none)")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="fraction of train carved out as val when the data has no val split (--split train/val)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of that carved split (--split train/val)")
    p.add_argument("--image-size", type=int, default=None, help="resize every image to N x N")
    p.add_argument("--skip-corrupt", action="store_true", help="skip unreadable image files (with a warning)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default=None, help="torch device of a checkpoint (default: cuda if available)")
    p.add_argument("--tta", choices=[t for t in TTA_MODES if t], default=None,
                   help="test-time augmentation: average the predictions of each image and its mirror")
    p.add_argument("--json", action="store_true", help="print one JSON object (top1, top5, loss, per_class, ...)")
    track_explicit(p)  # a typed flag this evaluation would not read is refused by name (see run)
    return p


def run(args) -> int:
    import torch

    from ..data import load_dataset
    from ..record import load
    from ..train import evaluate

    onnx = args.checkpoint.endswith(".onnx")
    refuse_inapplicable(args, [
        ("device", onnx, "does not apply to an ONNX model (ONNX Runtime runs it on the CPU)"),
        *((k, args.split in ("all", "test"), f"does not apply to --split {args.split} (no val split is carved out)")
          for k in ("val_fraction", "split_seed")),
    ])
    # an ONNX file is evaluated as it is (its normalization comes from the metadata lightnn's exporter wrote);
    # anything else is read once, verified: weights, classes and normalization
    model, record = (args.checkpoint, None) if onnx else load(args.checkpoint)
    size = (args.image_size, args.image_size) if args.image_size else None
    data = load_dataset(args.data, args.split, val_fraction=args.val_fraction, seed=args.split_seed,
                        image_size=size, skip_corrupt=args.skip_corrupt)
    trained_on = record.classes if record is not None else None
    if trained_on and len(trained_on) == data.num_classes and list(trained_on) != data.classes:
        warnings.warn(f"class names differ from the ones {args.checkpoint} was trained on", stacklevel=1)
    norm = record.normalize.to_dict() if record is not None and record.normalize else {}
    device = None if onnx else args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if not onnx:
        model.to(device)
    res = evaluate(model, data, batch_size=args.batch_size, device=device, mean=norm.get("mean"), std=norm.get("std"),
                   tta=args.tta)
    name = "onnx" if onnx else record.name
    res = {"checkpoint": args.checkpoint, "model": name,
           "data": str(args.data), "split": args.split, "tta": args.tta, **res}
    if args.json:
        print(json.dumps(res))
        return 0
    tta = f", {args.tta} test-time augmentation" if args.tta else ""
    print(f"{res['model']} on {res['data']} ({args.split}, {res['n']} images{tta})")
    print(f"top-1 {res['top1']:.2f}%   top-5 {res['top5']:.2f}%   loss {res['loss']:.4f}")
    w = max(len(c) for c in res["classes"])
    print("\nper-class top-1:")
    for c, a in zip(res["classes"], res["per_class"]):
        print(f"  {c:<{w}}  {a:6.2f}%")
    k = len(res["classes"])
    if k <= 20:
        print("\nconfusion matrix (rows: true, columns: predicted):")
        cw = max(5, len(str(max(max(r) for r in res["confusion"]))) + 1)
        print(" " * (w + 2) + "".join(f"{i:>{cw}}" for i in range(k)))
        for i, (c, r) in enumerate(zip(res["classes"], res["confusion"])):
            print(f"  {c:<{w}}" + "".join(f"{v:>{cw}}" for v in r) + f"   {i}")
    else:
        print(f"\n(confusion matrix {k}x{k}: use --json)")
    return 0
