"""`lightnn profile`: params, multiply-adds, memory traffic (and optionally latency) of registered models."""

from __future__ import annotations

import json

from ..errors import LightnnError
from ..profile import latency_backends
from ._common import add_command, expand_models, refuse_inapplicable, track_explicit


def add_parser(sub):
    p = add_command(
        sub, "profile", "count params, MACs (multiply-adds), memory traffic; optionally measure latency",
        ["lightnn profile mobilenet_v2",
         "lightnn profile 'mobilenet*' --input-size 224",
         "lightnn profile mobilenet_v1 --by-type",
         "lightnn profile shufflenet_v2_x1_0 --layers --csv",
         "lightnn profile resnet18 mobilenet_v2 --latency --batch 1 --threads 1 --clock thread",
         "lightnn profile resnet20 --latency --backend onnxruntime --threads 1",
         "lightnn profile 'shufflenet_v2*' --json",
         "lightnn profile mobilenet_v2_cifar --predict ort-b1.json   # a table from `lightnn latency build`"],
        description="Count parameters, MACs (multiply-adds; FLOPs = 2 x MACs) and memory traffic (activations "
                    "read + written + weights, ShuffleNet V2's memory access cost) of registered models, one forward "
                    "pass in eval mode. Model names accept shell wildcards over `lightnn list`.")
    p.add_argument("models", nargs="+", metavar="MODEL", help="registry name(s); wildcards allowed ('mobilenet*')")
    p.add_argument("--input-size", type=int, default=None, metavar="N",
                   help="square input side (default: each model's own input size)")
    p.add_argument("--batch", type=int, default=1, metavar="B", help="batch size (default 1)")
    p.add_argument("--num-classes", type=int, default=1000, help="classifier outputs (default 1000)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON (one object per model)")
    fmt.add_argument("--csv", action="store_true", help="print CSV")
    p.add_argument("--layers", action="store_true", help="per-layer rows")
    p.add_argument("--by-type", action="store_true", help="per-layer-type breakdown (MobileNet V1 Table 2 style)")
    p.add_argument("--latency", action="store_true", help="also measure latency (median and IQR) on --backend")
    p.add_argument("--backend", choices=latency_backends(), default="eager",
                   help="--latency backend, from lightnn.profile.latency_backends() (default eager: PyTorch)")
    p.add_argument("--threads", type=int, default=None, help="threads for --latency (default: torch's setting)")
    p.add_argument("--runs", type=int, default=20, help="timed runs for --latency (default 20)")
    p.add_argument("--clock", choices=["wall", "thread"], default="wall",
                   help="--latency clock: wall (default) or thread (CPU time of the one computing thread; needs "
                        "--threads 1; steady on a busy machine)")
    p.add_argument("--predict", metavar="TABLE", default=None,
                   help="also predict latency from a latency table (`lightnn latency build`); units it lacks are "
                        "measured and added to it; --batch must be the table's")
    p.add_argument("--allow-foreign", action="store_true",
                   help="with --predict: use a table measured on another device or setting (with a warning)")
    p.add_argument("--non-strict", action="store_true",
                   help="list ops the profiler cannot count instead of failing on them")
    track_explicit(p)  # a typed flag this run would not read is refused by name (see run)
    return p


def run(args) -> int:
    if args.batch < 1:
        raise LightnnError(f"--batch must be >= 1, got {args.batch}")
    if args.input_size is not None and args.input_size < 1:
        raise LightnnError(f"--input-size must be >= 1, got {args.input_size}")
    if args.num_classes < 1:
        raise LightnnError(f"--num-classes must be >= 1, got {args.num_classes}")
    refuse_inapplicable(args, [
        *((k, not args.latency, "needs --latency") for k in ("backend", "threads", "runs", "clock")),
        ("by_type", args.json, "does not apply to --json (every JSON object holds by_type)"),
        ("latency", args.csv and (args.layers or args.by_type),
         "is not printed by --csv --layers/--by-type (use --json or the table)"),
        ("allow_foreign", args.predict is None, "applies to --predict TABLE"),
        ("predict", args.csv, "is printed as a table or --json, not --csv"),
    ])
    table = _open_table(args)
    reports, lats, preds = _measure(args, expand_models(args.models), table)
    if args.json:
        _print_json(reports, lats, preds, args.layers)
    elif args.csv:
        _print_csv(args, reports, lats)
    else:
        _print_table(args, reports, lats, preds, table)
    return 0


def _open_table(args):
    """The --predict table (its batch must be --batch), or None."""
    if args.predict is None:
        return None
    from ..profile import load_table

    table = load_table(args.predict, allow_foreign=args.allow_foreign)
    if table.batch != args.batch:
        raise LightnnError(f"--batch {args.batch} differs from the batch {table.batch} the table {args.predict!r} "
                           f"was measured at: pass --batch {table.batch}")
    return table


def _print_json(reports: list, lats: list, preds: list, layers: bool) -> None:
    out = []
    for rep, lat, pred in zip(reports, lats, preds):
        d = rep.to_dict(layers=layers)
        if lat is not None:
            d["latency"] = lat.to_dict()
        if pred is not None:  # per-unit rows with --layers
            d["predicted_latency"] = {k: v for k, v in pred.to_dict().items() if layers or k != "units"}
        out.append(d)
    print(json.dumps(out[0] if len(out) == 1 else out, indent=1))


def _measure(args, names: list[str], table) -> tuple[list, list, list]:
    """A profile report per model, its latency on ``--backend`` (None without ``--latency``) and its prediction
    from ``table`` (None without ``--predict``)."""
    from .. import create_model
    from ..models import model_info
    from ..models.size_check import check_model_args
    from ..profile import measure_latency, predict_latency, profile

    reports, lats, preds = [], [], []
    for name in names:
        c, h, w = model_info(name).input_size
        if args.input_size is not None:
            h = w = args.input_size
        check_model_args(name, num_classes=args.num_classes, bytes_per_param=4, lower="--num-classes")
        model = create_model(name, num_classes=args.num_classes)
        rep = profile(model, (args.batch, c, h, w), strict=not args.non_strict)
        rep.model = name
        reports.append(rep)
        lats.append(measure_latency(model, (c, h, w), batch=args.batch, threads=args.threads, runs=args.runs,
                                    backend=args.backend, clock=args.clock)
                    if args.latency else None)
        preds.append(predict_latency(model, (c, h, w), table) if table is not None else None)
    return reports, lats, preds


def _print_csv(args, reports: list, lats: list) -> None:
    from ..report.tables import csv_table

    if not (args.layers or args.by_type):  # raw numbers for machines
        h = ["model", "input", "params", "macs", "flops", "memory_bytes", "peak_activation_bytes"]
        if args.latency:
            h += ["latency_median_ms", "latency_iqr_ms", "threads", "clock", "batch", "backend"]
        raw = []
        for rep, lat in zip(reports, lats):
            r = [rep.model, "x".join(map(str, rep.input_size)), rep.params, rep.macs, rep.flops, rep.memory_bytes,
                 rep.peak_activation_bytes]
            if lat is not None:
                r += [round(lat.median_ms, 4), round(lat.iqr_ms, 4), lat.threads, lat.clock, lat.batch, lat.backend]
            raw.append(r)
        print(csv_table(h, raw), end="")
        return
    keys = ("type", "layers", "macs", "macs_pct", "params", "params_pct", "memory_bytes", "memory_pct")
    for rep in reports:
        if args.layers:
            h, r = rep.layer_rows()
            print(csv_table(["model"] + h, [[rep.model] + x for x in r]), end="")
        if args.by_type:
            print(csv_table(["model", *keys], [[rep.model] + [t[k] for k in keys] for t in rep.by_type()]), end="")


def _print_table(args, reports: list, lats: list, preds: list, table) -> None:
    from ..report.tables import fmt_bytes, fmt_count, markdown_table

    headers = ["model", "input", "params (M)", "MACs (multiply-adds, M)", "FLOPs (2xMACs, G)", "memory traffic (MB)",
               "peak activations (MB)"]
    if args.latency:
        headers += [f"latency median (ms, {args.backend}, {args.clock} clock, batch {args.batch})", "IQR (ms)",
                    "threads"]
    if table is not None:
        headers += [f"predicted ms ({table.backend}, batch {table.batch}, {table.threads} threads)", "table sum (ms)"]
    rows = []
    for rep, lat, pred in zip(reports, lats, preds):
        row = [rep.model, "x".join(map(str, rep.input_size)), fmt_count(rep.params), fmt_count(rep.macs),
               fmt_count(rep.flops, "G", 3), f"{rep.memory_bytes / 1e6:.2f}", f"{rep.peak_activation_bytes / 1e6:.2f}"]
        if lat is not None:
            row += [f"{lat.median_ms:.2f}", f"{lat.iqr_ms:.2f}", lat.threads]
        if pred is not None:
            row += [f"{pred.total_ms:.3f}", f"{pred.raw_ms:.3f}"]
        rows.append(row)
    print(markdown_table(headers, rows))
    for rep in reports:
        if rep.uncounted:
            print(f"\n{rep.model}: NOT COUNTED (non-strict): "
                  + ", ".join(f"{k} x{len(v)}" for k, v in sorted(rep.uncounted.items())))
        if rep.unrun_params:
            print(f"\n{rep.model}: {rep.unrun_params:,} parameters belong to modules the forward pass did not run")
        if args.by_type:
            print(f"\n{rep.model}: resources per layer type\n")
            print(rep.table(by_type=True).split("\n\n", 1)[1])
        if args.layers:
            print(f"\n{rep.model}: layers (memory = bytes read + written, {fmt_bytes(rep.memory_bytes)} in all)\n")
            h, r = rep.layer_rows()
            print(markdown_table(h, r))
