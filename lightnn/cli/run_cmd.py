"""`lightnn run`: the end-to-end main job (lightnn/pipeline.py)."""

from __future__ import annotations

from ..errors import LightnnError
from ._common import Number, add_command, load_yaml


def add_parser(sub):
    p = add_command(
        sub, "run", "the end-to-end job: profile, train, select, prune, quantize, export and report",
        ["lightnn run                                   # default pipeline on the shipped CIFAR-10 sample",
         "lightnn run my.yaml --output runs/exp1         # your config (keys override lightnn/configs/run.yaml)",
         "lightnn run --epochs 1 --max-train-images 500  # a quick smoke run",
         "lightnn run --data /path/to/imagefolder --output runs/full"],
        description="Profile a handful of efficient architectures, train each briefly, pick the best accuracy per "
                    "latency, prune it to a MACs budget and fine-tune, quantize to int8, export to ONNX, check parity "
                    "and measure everything in ONNX Runtime. Writes report.md, report.json, pareto.png, stages.png "
                    "and the models to the run folder; re-running on the same folder resumes.")
    p.add_argument("config", nargs="?", help="YAML config (default: the built-in lightnn/configs/run.yaml)")
    p.add_argument("--output", "-o", help="run folder (default: runs/lightnn-run)")
    p.add_argument("--data", help="dataset path (default: the shipped sample)")
    p.add_argument("--epochs", type=Number(int, 1), help="training epochs per candidate")
    p.add_argument("--models", help="comma-separated registry names to compare (first = baseline)")
    p.add_argument("--max-train-images", type=Number(int, 1), help="cap on training images")
    p.add_argument("--skip-corrupt", action="store_true", help="skip unreadable image files (with a warning)")
    p.add_argument("--fresh", action="store_true",
                   help="start over instead of resuming: deletes the folder's state.json, models/ and train/ first")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def run(args) -> int:
    from .. import pipeline

    user = load_yaml(args.config) if args.config else {}
    try:
        pipeline.check_keys(user)  # before the flags below are merged into its sections
    except LightnnError as e:
        raise LightnnError(f"config file {args.config!r}: {e}") from None
    cfg = pipeline.resolve_config(_with_flags(args, user))
    pipeline.run(cfg, output=args.output, fresh=args.fresh)
    return 0


def _with_flags(args, user: dict) -> dict:
    """The config file's keys with every typed flag written over them: explicit flag > config file > default
    (lightnn/configs/run.yaml, filled in by :func:`lightnn.pipeline.resolve_config`). The flags have no parser
    defaults, so a typed value equal to the default still wins; ``--output`` wins in :func:`lightnn.pipeline.run`."""
    if args.data is not None:
        user.setdefault("data", {})["path"] = args.data
    if args.epochs is not None:
        user.setdefault("train", {})["epochs"] = args.epochs
    if args.max_train_images is not None:
        user.setdefault("data", {})["max_train_images"] = args.max_train_images
    if args.skip_corrupt:
        user.setdefault("data", {})["skip_corrupt"] = True
    if args.models is not None:
        names = [n.strip() for n in args.models.split(",") if n.strip()]
        if not names:
            raise LightnnError(f"--models {args.models!r} names no model: give comma-separated registry names")
        user["models"] = [{"name": n} for n in names]
    if args.no_progress:
        user["progress"] = False
    return user
