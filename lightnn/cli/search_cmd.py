"""`lightnn search compress`: an automatic compression search over a trained checkpoint (Optuna study, Pareto
front, the best model per constraint rebuilt and exported, report)."""

from __future__ import annotations

import argparse
import json

from ..errors import LightnnError
from ..utils.checks import Number
from ._common import add_command, load_yaml, merge_config, track_explicit


def _pair(kind):
    def parse(v):
        if isinstance(v, (list, tuple)):
            items = list(v)
        else:
            items = [s for s in str(v).split(",") if s.strip()]
        try:
            vals = [kind(x) for x in items]
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected LOW,HIGH numbers, got {v!r}") from None
        if len(vals) == 1:
            vals = vals * 2
        if len(vals) != 2 or vals[0] > vals[1]:
            raise argparse.ArgumentTypeError(f"expected LOW,HIGH with LOW <= HIGH, got {v!r}")
        return tuple(vals)
    return parse


# flag dest -> CompressSearchConfig field
_CONFIG_KEYS = {"knobs": "knobs", "target_macs": "target_macs", "max_ratio": "max_ratio", "max_blocks": "max_blocks",
                "lowrank_energy": "lowrank_energy", "bits": "bits", "bits_budget": "bits_budget",
                "finetune_epochs": "finetune_epochs", "lr": "lr", "kd_weight": "kd_weight",
                "final_epochs": "final_epochs", "val_fraction": "val_fraction", "search_fraction": "search_fraction",
                "split_seed": "split_seed", "eval_limit": "eval_limit", "round_to": "round_to",
                "batch_size": "batch_size", "latency_batch": "latency_batch", "latency_threads": "latency_threads",
                "latency_runs": "latency_runs", "latency_table": "latency_table", "bn_images": "bn_images"}
_STUDY_KEYS = ("checkpoint", "data", "output", "objectives", "constraint", "trials", "sampler", "seed", "storage",
               "study", "workers", "threads", "no_build", "json")


def add_parser(sub):
    from ..search import SAMPLERS
    from ..search.compress import KNOB_FAMILIES

    p = add_command(
        sub, "search", "automatic searches over Optuna studies (see `lightnn search compress --help`)",
        ["lightnn search compress runs/r20/model.pt --data sample --objectives top1,latency "
         "--constraint 'macs<=0.5x' --trials 30 --output runs/search"])
    ssub = p.add_subparsers(dest="search_command", metavar="ACTION")
    c = add_command(
        ssub, "compress", "search compression knobs of a trained checkpoint: every trial applies the sampled "
        "channel pruning / block removal / low-rank / k-means bits / int8, fine-tunes briefly, is scored on a split "
        "carved from the training images and measured; the best model per constraint is rebuilt with the full "
        "fine-tune, exported and reported. Re-running the same command resumes the study",
        ["lightnn search compress model.pt --data cifar10.tar.gz --objectives top1 --constraint 'macs<=0.5x' "
         "--trials 40",
         "lightnn search compress model.pt --data sample --objectives top1,latency --constraint 'latency<=0.5' "
         "--knobs channels,blocks,finetune --workers 2",
         "lightnn search compress model.pt --data tree/ --storage postgresql://u:p@db:5432/studies --study r20 "
         "--trials 200   # the same command on every machine"])
    c.add_argument("checkpoint", nargs="?", help="a trained lightnn checkpoint (.pt, weights only) or .lnz")
    c.add_argument("--data", help="the training data (what `lightnn train --data` takes; 'sample': the shipped "
                   "CIFAR-10 sample)")
    c.add_argument("--output", default="runs/search", help="the search folder (default runs/search)")
    c.add_argument("--config", metavar="YAML", help="defaults for any flag below (keys as the flags, with '_')")
    c.add_argument("--objectives", default="top1,latency",
                   help="metrics, comma-separated, each optionally :max / :min (default top1,latency)")
    c.add_argument("--constraint", action="append", metavar="METRIC<=N",
                   help="e.g. latency<=0.5, macs<=0.5x (times the input model's value); repeatable")
    c.add_argument("--trials", type=Number(int, 1), default=20, help="finished trials the study reaches (default 20)")
    c.add_argument("--sampler", choices=SAMPLERS, default="tpe",
                   help="Optuna sampler (default tpe: the better arm of BENCHMARKS.md's TPE-vs-random run)")
    c.add_argument("--seed", type=Number(int, 0), default=0)
    c.add_argument("--storage", help="a journal file, 'memory' or postgresql://... (default OUTPUT/study.journal)")
    c.add_argument("--study", default="compress", help="the study name in the storage (default compress)")
    c.add_argument("--workers", type=Number(int, 1), default=1, help="worker processes on this host (default 1)")
    c.add_argument("--threads", type=Number(int, 1), default=None,
                   help="torch threads per worker (default 1 with several workers, torch's own with one)")
    c.add_argument("--knobs", default="channels,finetune",
                   help=f"knob families searched, among {', '.join(KNOB_FAMILIES)} (default channels,finetune)")
    c.add_argument("--target-macs", type=Number(float, 0, 1, lo_open=True, hi_open=True), default=None,
                   help="project every trial onto this fraction of the model's MACs (channels knob)")
    c.add_argument("--max-ratio", type=Number(float, 0, 1, lo_open=True, hi_open=True), default=0.9)
    c.add_argument("--max-blocks", type=Number(int, 0), default=3)
    c.add_argument("--lowrank-energy", type=_pair(float), default=(0.8, 1.0), metavar="LO,HI")
    c.add_argument("--bits", type=_pair(int), default=(2, 8), metavar="LO,HI", help="k-means bits per layer")
    c.add_argument("--bits-budget", type=Number(float, 1), default=None, help="average bits per weight")
    c.add_argument("--finetune-epochs", type=_pair(float), default=(0.05, 0.3), metavar="LO,HI")
    c.add_argument("--lr", type=_pair(float), default=(0.002, 0.05), metavar="LO,HI")
    c.add_argument("--kd-weight", type=_pair(float), default=(0.0, 0.9), metavar="LO,HI")
    c.add_argument("--final-epochs", type=Number(float, 0), default=5.0,
                   help="fine-tune of each shipped model on every training image (default 5)")
    c.add_argument("--val-fraction", type=Number(float, 0, 1, lo_open=True, hi_open=True), default=0.1,
                   help="the validation split the checkpoint was trained with (default 0.1)")
    c.add_argument("--search-fraction", type=Number(float, 0, 1, lo_open=True, hi_open=True), default=0.1,
                   help="share of the training images trials are scored on (default 0.1)")
    c.add_argument("--split-seed", type=Number(int, 0), default=0)
    c.add_argument("--eval-limit", type=Number(int, 1), default=None, help="score trials on this many images")
    c.add_argument("--round-to", type=Number(int, 1), default=4, help="channel counts kept a multiple of this")
    c.add_argument("--batch-size", type=Number(int, 1), default=128)
    c.add_argument("--latency-batch", type=Number(int, 1), default=1)
    c.add_argument("--latency-threads", type=Number(int, 1), default=1)
    c.add_argument("--latency-runs", type=Number(int, 1), default=20)
    c.add_argument("--latency-table", metavar="TABLE", help="a `lightnn latency build` table: adds predicted_latency")
    c.add_argument("--bn-images", type=Number(int, 0), default=1024,
                   help="training images batch-norm statistics are re-estimated on after an edit (0: off)")
    c.add_argument("--no-build", action="store_true", help="run the study and report; rebuild nothing")
    c.add_argument("--json", action="store_true", help="print the summary as JSON")
    track_explicit(c)
    c.set_defaults(_search_run=run_compress)
    return p


def options(args) -> dict:
    """The resolved settings (flags over ``--config`` over defaults), config file keys checked by name."""
    cfg = load_yaml(args.config) if args.config else {}
    known = set(_CONFIG_KEYS) | set(_STUDY_KEYS)
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise LightnnError(f"config file {args.config!r} has unknown key(s) {unknown}; known: {sorted(known)}")
    return merge_config(args, cfg)


def run_compress(args) -> int:
    from ..search.compress import CompressSearchConfig
    from ..search.job import infeasible_message, search_compress

    o = options(args)
    if not o.get("checkpoint"):
        raise LightnnError("give the CHECKPOINT to compress")
    if not o.get("data"):
        raise LightnnError("--data PATH is required (the images the checkpoint was trained on)")
    pairs = {"lowrank_energy": float, "bits": int, "finetune_epochs": float, "lr": float, "kd_weight": float}
    conf = {}
    for k, field in _CONFIG_KEYS.items():
        v = o.get(k)
        if v is None and k not in ("target_macs", "bits_budget", "eval_limit", "latency_table"):
            continue
        try:
            conf[field] = _pair(pairs[k])(v) if k in pairs and v is not None else v
        except argparse.ArgumentTypeError as e:
            raise LightnnError(f"{k!r}: {e}") from None
    config = CompressSearchConfig.from_dict(conf)
    summary = search_compress(o["checkpoint"], o["data"], o["output"], config=config, objectives=o["objectives"],
                              constraints=o.get("constraint"), trials=int(o["trials"]), sampler=o["sampler"],
                              seed=int(o["seed"]), storage=o.get("storage"), study_name=o["study"],
                              workers=int(o["workers"]), threads=o.get("threads"), build=not o.get("no_build"),
                              log=(lambda s: None) if o.get("json") else print)
    if o.get("json"):
        print(json.dumps({k: summary[k] for k in ("study", "storage", "front", "closest", "feasible", "targets")},
                         indent=1))
    if not summary["feasible"]:
        raise LightnnError(infeasible_message(summary) + f" (report: {o['output']}/report.md)")
    return 0


def run(args) -> int:
    fn = getattr(args, "_search_run", None)
    if fn is None:
        raise LightnnError("give an action (compress); see `lightnn search --help`")
    return fn(args)
