"""`lightnn latency build`: measure this machine's latency table for the zoo or a search space; `lightnn latency
show`: what a table holds."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import LightnnError
from ..utils.checks import Number
from ._common import add_command, explicit_flags, refuse_inapplicable, track_explicit

SETTINGS = ("warmup", "runs", "spread_threshold", "retries")


def _backend_choices() -> list[str]:
    from ..profile import latency_backends
    from ..profile.latency_table import BACKEND_ALIASES

    have = latency_backends()
    return sorted({a for a, full in BACKEND_ALIASES.items() if full in have} | set(have))


def add_parser(sub):
    p = add_command(
        sub, "latency", "latency tables: measure the units the runtime fuses on this machine (see `lightnn latency "
        "build --help`); `lightnn profile MODEL --predict TABLE` predicts from one",
        ["lightnn latency build --backend ort --threads 1 --batch 1 --models 'mobilenet*_cifar' --output ort-b1.json",
         "lightnn latency build --backend ort-int8 --batch 32 --space space.yaml --output int8-b32.json",
         "lightnn profile mobilenet_v2_cifar --predict ort-b1.json"])
    lsub = p.add_subparsers(dest="latency_command", metavar="ACTION")
    b = add_command(
        lsub, "build", "measure every unit of the given networks alone (warm-up, repeated runs, median, spread), "
        "time each network end to end and fit the correction; re-running with the same --output resumes",
        ["lightnn latency build --backend ort --models 'resnet20,mobilenet_v2_cifar' --output ort-b1.json",
         "lightnn latency build --backend eager --threads 2 --space space.yaml --output eager.json --runs 30"])
    b.add_argument("--backend", default="ort", help=f"latency backend: {', '.join(_backend_choices())} (default ort)")
    b.add_argument("--threads", type=Number(int, 1), default=1, help="intra-op threads (default 1)")
    b.add_argument("--batch", type=Number(int, 1), default=1, help="batch size (default 1)")
    src = b.add_mutually_exclusive_group()
    src.add_argument("--models", metavar="PATTERN", help="registry names, comma-separated wildcards ('resnet2*')")
    src.add_argument("--space", metavar="FILE", help="YAML / JSON of ir_net stage tables or a search space")
    b.add_argument("--output", metavar="TABLE", help="the table file (JSON); an existing one is resumed")
    b.add_argument("--input-size", type=Number(int, 1), default=None, metavar="N",
                   help="with --models: square input side (default: each model's own)")
    b.add_argument("--num-classes", type=Number(int, 1), default=1000, help="with --models: classifier outputs (default 1000)")
    b.add_argument("--warmup", type=Number(int, 0), default=3, help="untimed runs per entry (default 3)")
    b.add_argument("--runs", type=Number(int, 1), default=15, help="timed runs per entry (default 15)")
    b.add_argument("--spread-threshold", type=Number(float, 0, lo_open=True), default=0.15,
                   help="IQR / median above which an entry is re-measured, then flagged (default 0.15)")
    b.add_argument("--retries", type=Number(int, 0), default=2, help="re-measurements of a spread entry (default 2)")
    b.add_argument("--no-end-to-end", action="store_true",
                   help="only the units: no end-to-end timings, no correction fit")
    b.add_argument("--json", action="store_true", help="print the summary as JSON")
    track_explicit(b)
    b.set_defaults(_latency_run=run_build)
    show = add_command(lsub, "show", "what a table holds: fingerprint, entries by unit kind, flagged entries, the "
                       "correction", ["lightnn latency show ort-b1.json", "lightnn latency show ort-b1.json --json"])
    show.add_argument("table", metavar="TABLE", help="a table file")
    show.add_argument("--allow-foreign", action="store_true", help="show a table measured on another device")
    show.add_argument("--json", action="store_true", help="print the summary as JSON")
    show.set_defaults(_latency_run=run_show)
    return p


def _check(args) -> None:
    if not args.output:  # the numbers are bounded by their argparse types (Number)
        raise LightnnError("--output TABLE is required")
    if not (args.models or args.space):
        raise LightnnError("give --models PATTERN or --space FILE")
    refuse_inapplicable(args, [
        ("input_size", bool(args.space), "applies to --models (a space file gives its input_size)"),
        ("num_classes", bool(args.space), "applies to --models (a space file gives its num_classes)")])


def _open_table(args, backend: str):
    from ..profile.latency_table import LatencyTable, device_fingerprint, load_table

    settings = {"warmup": args.warmup, "runs": args.runs, "spread_threshold": args.spread_threshold,
                "retries": args.retries}
    out = Path(args.output)
    if not out.exists():
        return LatencyTable.create(backend, args.threads, args.batch, path=out, **settings), False
    table = load_table(out, expect=device_fingerprint(backend, args.threads, args.batch))
    typed = explicit_flags(args)
    for k in SETTINGS:
        if k in typed and table.settings.get(k) != settings[k]:
            raise LightnnError(f"--{k.replace('_', '-')} {settings[k]} differs from the {table.settings.get(k)} the "
                               f"table {str(out)!r} was built with: resume with the same value or use a new --output")
    return table, True


def run_build(args) -> int:
    from ..profile.latency_space import space_networks, zoo_networks
    from ..profile.latency_table import resolve_backend
    from ..profile.predict import build_table

    _check(args)
    backend = resolve_backend(args.backend)
    table, resumed = _open_table(args, backend)
    nets = (space_networks(args.space) if args.space else
            zoo_networks(args.models, args.input_size, args.num_classes))
    counts = build_table(table, nets, end_to_end=not args.no_end_to_end, progress=not args.json)
    table.save()
    summary = {"table": str(table.path), "resumed": resumed, **counts, "entries": len(table),
               "flagged": sum(1 for e in table.entries.values() if e.get("flagged")),
               "end_to_end": len(table.end_to_end), "correction": table.correction, "fingerprint": table.fingerprint}
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    corr = table.correction
    fit = (f"correction fitted on {corr['models']} networks (median relative error {corr['rel_error_median']:.1%})"
           if corr else "no correction fitted")
    print(f"{table.path}: {len(table)} entries ({counts['measured']} measured now, {summary['flagged']} flagged), "
          f"{len(table.end_to_end)} networks timed end to end; {fit}")
    return 0


def run_show(args) -> int:
    from ..profile.latency_table import load_table

    table = load_table(args.table, allow_foreign=args.allow_foreign)
    kinds: dict[str, int] = {}
    for e in table.entries.values():
        kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
    flagged = sorted(k for k, e in table.entries.items() if e.get("flagged"))
    summary = {"table": str(table.path), "fingerprint": table.fingerprint, "settings": table.settings,
               "entries": len(table), "by_kind": kinds, "flagged": flagged, "end_to_end": sorted(table.end_to_end),
               "overhead_ms": table.overhead_ms, "correction": table.correction}
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    print(f"{table.path}: {len(table)} entries ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))}), "
          f"{len(flagged)} flagged, {len(table.end_to_end)} networks timed end to end")
    print("fingerprint: " + ", ".join(f"{k} {v}" for k, v in table.fingerprint.items()))
    corr = table.correction
    if corr:
        scales = ", ".join(f"{k} x{v:.3f}" for k, v in sorted(corr["scales"].items()))
        print(f"correction ({corr['models']} networks, ridge {corr.get('ridge')}): {scales}; constant "
              f"{corr['constant_ms']:.4f} ms, per unit {corr.get('per_unit_ms', 0):+.4f} ms, per million elements "
              f"{corr.get('per_melem_ms', 0):+.4f} ms")
    for k in flagged:
        print(f"flagged: {k} (spread {table.entries[k].get('spread', float('nan')):.2f})")
    return 0


def run(args) -> int:
    fn = getattr(args, "_latency_run", None)
    if fn is None:
        raise LightnnError("give an action (build, show); see `lightnn latency --help`")
    return fn(args)
