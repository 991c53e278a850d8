"""``lightnn compress --method channels | lowrank`` and ``--sensitivity``: flags and a YAML ``--config`` ->
a stage config -> one stage of :mod:`lightnn.compress.stages` -> save, print. Also the bookkeeping every method of
``lightnn compress`` shares: which flags were typed (precedence typed flag > config file > default, even when the
typed value equals the default) and which flags a method uses (any other typed flag is refused by name).

    lightnn compress r20.pt --method channels --target-macs 0.5 --data sample --output out/
    lightnn compress r20.pt --method channels --target-latency 0.6 --data sample --output out/
    lightnn compress r20.pt --method channels --target-macs 0.5 --plan uniform --output out/   # no data needed
    lightnn compress r20.pt --method channels --ratio 0.3 --output out/          # uniform, no data needed
    lightnn compress r20.pt --method channels --remove-blocks 2 --target-macs 0.5 --data sample --output out/
    lightnn compress r20.pt --sensitivity --data sample --output out/
    lightnn compress r20.pt --method lowrank --energy 0.9 --output out/
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import LightnnError
from ._common import Number, explicit_flags, track_explicit

__all__ = ["add_arguments", "track_explicit", "explicit_flags", "mode_of", "refuse_unused", "run"]

# what each mode reads; a typed flag outside its mode's set is refused (checkpoint, --method, --output, --config,
# --json apply everywhere)
_DATA = {"data", "val_fraction", "split_seed", "batch_size", "device"}
_DEEP_PRUNE = {"sparsity", "scope", "schedule", "prune_epochs", "prune_lr", "conv_index_bits", "fc_index_bits",
               "other_dtype", "weight_decay", "label_smoothing", "distill", "kd_weight"}
_DEEP_SHARE = {"share_epochs", "share_lr", "share_train", "kmeans_init", "conv_bits", "fc_bits", "conv_index_bits",
               "fc_index_bits", "other_dtype", "label_smoothing", "distill", "kd_weight"}
_SENS = {"sensitivity", "ratios", "criterion", "round_to", "exclude", "eval_limit"}
_CHANNELS = {"target_macs", "target_latency", "ratio", "plan", "scope", "remove_blocks", "rank_blocks",
             "latency_batch", "latency_table", "criterion", "round_to", "ratios", "exclude", "eval_limit", "finetune_epochs", "lr",
             "weight_decay", "label_smoothing", "distill", "kd_weight"}
USES = {"deep": _DATA | _DEEP_PRUNE | _DEEP_SHARE, "prune": _DATA | _DEEP_PRUNE, "share": _DATA | _DEEP_SHARE,
        "channels": _DATA | _CHANNELS, "sensitivity": _DATA | _SENS, "lowrank": {"rank", "energy", "exclude"}}
_EVERYWHERE = {"checkpoint", "method", "output", "config", "json", "seed"}
# plain command-line keys a --config file may also hold (the rest are stage-config fields)
CLI_KEYS = {"data", "output", "val_fraction", "split_seed", "batch_size", "device", "method", "sensitivity"}


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The structured-pruning flags. Defaults live in the stage configs (:class:`~lightnn.compress.stages.PruneConfig`),
    so every flag parses to None unless typed."""
    from ..compress.importance import criteria

    g = p.add_argument_group("structured pruning (--method channels / lowrank, --sensitivity)")
    g.add_argument("--sensitivity", action="store_true", default=None,
                   help="prune each channel group alone at --ratios and report accuracy (table, plot, JSON)")
    g.add_argument("--target-macs", type=Number(float, 0, 1, lo_open=True, hi_open=True, meaning="the fraction of the MACs to keep"), help="keep this fraction of the MACs (per-group ratios planned from a "
                                                     "sensitivity analysis, or one uniform ratio with --plan uniform)")
    g.add_argument("--target-latency", type=Number(float, 0, 1, lo_open=True, hi_open=True, meaning="the fraction of the latency to keep"),
                   help="keep this fraction of the ONNX Runtime latency at --latency-batch (planned like --target-macs)")
    g.add_argument("--ratio", type=Number(float, 0, 1, hi_open=True, meaning="the fraction of each group's channels to remove"), help="prune this fraction of every group (no plan)")
    g.add_argument("--plan", choices=["sensitivity", "uniform"],
                   help="how --target-macs/--target-latency are met: per-group ratios from a sensitivity analysis "
                        "(default; needs --data) or one uniform ratio bisected to the budget")
    g.add_argument("--remove-blocks", type=Number(int, 0),
                   help="first remove this many identity-shortcut residual blocks, those whose removal alone costs "
                        "the least validation accuracy (needs --data); --target-macs stays relative to the input model")
    g.add_argument("--rank-blocks", choices=["accuracy", "latency"],
                   help="choose the blocks by accuracy lost (default), or by accuracy lost per ms of deployment "
                        "latency saved (measured at --latency-batch)")
    g.add_argument("--latency-batch", type=Number(int, 1),
                   help="batch size of the latency measurements (--target-latency, --rank-blocks latency; default 1)")
    g.add_argument("--latency-table", metavar="TABLE",
                   help="predict the latency from this table (`lightnn latency build`, its batch = --latency-batch) "
                        "instead of timing every candidate")
    g.add_argument("--criterion", choices=criteria(), help="channel importance (default l1)")
    g.add_argument("--round-to", help="kept channel counts are multiples of this (default 8); 'auto': this CPU's "
                                      "convolution channel block (16 with AVX-512, else 8)")
    g.add_argument("--ratios", help="sensitivity ratios, comma-separated (default 0.25,0.5,0.75)")
    g.add_argument("--exclude", action="append", help="layer path (wildcards) to leave unpruned / unfactored")
    g.add_argument("--finetune-epochs", type=Number(float, 0), help="fine-tune after pruning (needs --data)")
    g.add_argument("--lr", type=Number(float, 0, lo_open=True),
                   help="fine-tuning peak learning rate (cosine schedule, default 0.01); for as many epochs as training "
                        "from scratch takes, retraining with the from-scratch recipe (learning-rate rewinding, e.g. "
                        "--lr 0.1 --weight-decay 5e-4 --label-smoothing 0.1) beat a small-rate KD fine-tune on "
                        "MobileNetV2-CIFAR: see BENCHMARKS.md")
    g.add_argument("--weight-decay", type=Number(float, 0),
                   help="retraining weight decay, not on norms/biases (channels fine-tuning and --method deep/prune; "
                        "default 5e-4)")
    g.add_argument("--label-smoothing", type=Number(float, 0, 1, hi_open=True), help="retraining label smoothing (channels and deep; default 0)")
    g.add_argument("--distill", action="store_true", default=None,
                   help="retrain with the uncompressed model as teacher (channels fine-tuning and deep)")
    g.add_argument("--kd-weight", type=Number(float, 0, 1), help="with --distill: weight of the distillation loss (default 0.5)")
    g.add_argument("--rank", type=Number(int, 1), help="low-rank: one rank for every layer")
    g.add_argument("--energy", type=Number(float, 0, 1, lo_open=True), help="low-rank: keep this fraction of singular-value energy")
    g.add_argument("--eval-limit", type=Number(int, 0), help="validation images the accuracy checks use (default 2000; 0: all)")


def mode_of(args: argparse.Namespace, recipe: dict[str, Any]) -> str:
    """``sensitivity`` or the method; --method / --sensitivity typed, else from the config file, else deep."""
    explicit = explicit_flags(args)
    if "method" not in explicit and "method" in recipe:
        if recipe["method"] not in USES or recipe["method"] == "sensitivity":
            raise LightnnError(f"config file {args.config!r}: method must be one of "
                               f"{sorted(set(USES) - {'sensitivity'})}, got {recipe['method']!r}")
        args.method = recipe["method"]
    sens = bool(args.sensitivity) if "sensitivity" in explicit else bool(recipe.get("sensitivity", False))
    if not sens:
        return args.method
    if args.method != "channels" and ("method" in explicit or "method" in recipe):
        raise LightnnError(f"--sensitivity analyses channel pruning; it does not combine with --method {args.method}")
    return "sensitivity"


def refuse_unused(mode: str, args: argparse.Namespace, recipe: dict[str, Any]) -> None:
    """Refuse, by name, every typed flag the mode would not read (and, for channels, flags that only matter in
    another configuration, e.g. --lr without --finetune-epochs)."""
    explicit = explicit_flags(args)
    what = "--sensitivity" if mode == "sensitivity" else f"--method {mode}"
    unused = sorted(explicit - USES[mode] - _EVERYWHERE)
    if unused:
        raise LightnnError(f"{what} does not use {', '.join(map(_flag, unused))}")

    def val(k: str) -> Any:
        return getattr(args, k) if k in explicit else recipe.get(k)

    rules = [("kd_weight", not val("distill"), "needs --distill")]
    if mode in ("channels", "sensitivity"):
        rules += [(k, val("data") is None, "needs --data")
                  for k in ("val_fraction", "split_seed", "eval_limit", "batch_size", "device")]
    if mode == "channels":
        budget = val("target_macs") is not None or val("target_latency") is not None
        tuned = (val("finetune_epochs") or 0) > 0
        rules += [("scope", val("ratio") is None, "applies to --ratio only"),
                  ("plan", not budget, "applies to --target-macs / --target-latency only"),
                  ("ratios", not budget or val("plan") == "uniform", "is read by the sensitivity plan only "
                   "(--target-macs / --target-latency without --plan uniform)"),
                  ("rank_blocks", not val("remove_blocks"), "needs --remove-blocks"),
                  ("latency_batch", val("target_latency") is None and val("rank_blocks") != "latency",
                   "applies to --target-latency and --rank-blocks latency only"),
                  ("latency_table", val("target_latency") is None and val("rank_blocks") != "latency",
                   "applies to --target-latency and --rank-blocks latency only")]
        rules += [(k, not tuned, "needs --finetune-epochs > 0")
                  for k in ("lr", "weight_decay", "label_smoothing", "distill", "kd_weight")]
    # typed flags only: a config file may hold a recipe's settings for several uses (its keys must be known to the
    # method, which _check_keys makes sure of)
    for key, unused_here, why in rules:
        if key in explicit and unused_here:
            raise LightnnError(f"{what}: {_flag(key)} {why}")


def resolved(args: argparse.Namespace, recipe: dict[str, Any], keys) -> dict[str, Any]:
    """Typed flag > config file value; keys neither typed nor in the file are left to the stage config's default."""
    explicit = explicit_flags(args)
    out = {k: recipe[k] for k in keys if k in recipe}
    out.update({k: getattr(args, k) for k in keys if k in explicit})
    return out


def _apply_cli_keys(args: argparse.Namespace, recipe: dict[str, Any]) -> None:
    for k in CLI_KEYS - explicit_flags(args) - {"method", "sensitivity"}:
        if k in recipe:
            setattr(args, k, recipe[k])


def _check_keys(recipe: dict[str, Any], cls, path: str | None) -> None:
    from dataclasses import fields

    unknown = sorted(set(recipe) - {f.name for f in fields(cls)} - CLI_KEYS)
    if unknown:
        raise LightnnError(f"config file {path!r} has unknown key(s) {unknown} for this method; known: "
                           f"{sorted({f.name for f in fields(cls)} | CLI_KEYS)}")


# -- the runs -----------------------------------------------------------------------------------------------------

def _load(args: argparse.Namespace) -> tuple[Path, Path, dict, Any]:
    from ..record import load

    src = Path(args.checkpoint)
    suffix = {"sensitivity": "sens"}.get(args._mode, args._mode)
    out = Path(args.output) if args.output else src.with_name(f"{src.stem}_{suffix}")
    # a folder may have a dot in its name (runs/r20.v2); only an existing file or a model-file name is refused
    if out.is_file() or out.suffix in (".pt", ".lnz", ".onnx"):
        raise LightnnError(f"--output {str(out)!r} must be a directory for "
                           f"{'--sensitivity' if args._mode == 'sensitivity' else '--method ' + args._mode}, not a file")
    model, record = load(src)  # one verified read; the record hands the model its normalization
    return src, out, record.meta(), model


def _data(args: argparse.Namespace) -> tuple[Any, Any]:
    if args.data is None:
        return None, None
    from ..data import load_dataset

    return (load_dataset(args.data, "train", val_fraction=args.val_fraction, seed=args.split_seed),
            load_dataset(args.data, "val", val_fraction=args.val_fraction, seed=args.split_seed))


def _run_lowrank(args: argparse.Namespace, recipe: dict[str, Any]) -> int:
    from ..checkpoint import save_checkpoint
    from ..compress.lowrank import lowrank_table
    from ..compress.stages import LowRankConfig, lowrank_stage
    from ..utils.io import atomic_write_json

    _check_keys(recipe, LowRankConfig, args.config)
    kw = resolved(args, recipe, ("rank", "energy", "exclude", "layers"))
    if ("rank" in kw) == ("energy" in kw):
        raise LightnnError("--method lowrank needs exactly one of --rank N / --energy F")
    cfg = LowRankConfig(**kw)
    src, out, meta, model = _load(args)
    model, rep = lowrank_stage(model, cfg)
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out / "model.pt", model, meta={**meta, "compression": {"lowrank": rep}})
    report = {"source": str(src), "method": "lowrank", **rep}
    atomic_write_json(out / "report.json", report)
    print(json.dumps(report, default=str) if args.json else lowrank_table(rep) + f"\nwrote {out / 'model.pt'}")
    return 0


def _run_sensitivity(args: argparse.Namespace, recipe: dict[str, Any]) -> int:
    from dataclasses import fields

    from ..compress.sensitivity import sensitivity_table, write_sensitivity
    from ..compress.stages import SensitivityConfig, sensitivity_stage

    _check_keys(recipe, SensitivityConfig, args.config)
    cfg = SensitivityConfig(**resolved(args, recipe, [f.name for f in fields(SensitivityConfig)]))
    if args.data is None:
        raise LightnnError("--sensitivity needs --data: it measures validation accuracy")
    src, out, _, model = _load(args)
    train, val = _data(args)
    log = None if args.json else (lambda s: print(s, file=sys.stderr))
    from ..models import model_name

    model, rep = sensitivity_stage(model, cfg, train, val, log=log, progress=not args.json)
    write_sensitivity(rep["sensitivity"], out, f"{model_name(model, src.stem)}: each channel group "
                                               "pruned alone")
    report = {"source": str(src), "method": "sensitivity", **rep}
    print(json.dumps(report) if args.json else sensitivity_table(rep["sensitivity"]) + f"\nwrote {out}/sensitivity.*")
    return 0


def _prune_config(args: argparse.Namespace, recipe: dict[str, Any]):
    from dataclasses import fields

    from ..compress.stages import PruneConfig

    _check_keys(recipe, PruneConfig, args.config)
    kw = resolved(args, recipe, [f.name for f in fields(PruneConfig)])
    if sum(kw.get(k) is not None for k in ("target_macs", "target_latency", "ratio")) != 1:
        raise LightnnError("--method channels needs exactly one of --target-macs, --target-latency, --ratio")
    cfg = PruneConfig(**kw)
    for split, why in cfg.data_needs().items():
        if args.data is None:
            raise LightnnError(f"--data is required: {why}")
    return cfg


def _run_channels(args: argparse.Namespace, recipe: dict[str, Any]) -> int:
    from ..checkpoint import save_checkpoint
    from ..compress.sensitivity import write_sensitivity
    from ..compress.stages import prune_to_budget
    from ..models import model_name, model_normalization
    from ..utils.io import atomic_write_json

    cfg = _prune_config(args, recipe)
    src, out, meta, model = _load(args)
    train, val = _data(args)
    log = None if args.json else (lambda s: print(s, file=sys.stderr))
    pruned, rep = prune_to_budget(model, cfg, train, val, log=log, progress=not args.json)
    report = {"source": str(src), "method": "channels", **rep}
    out.mkdir(parents=True, exist_ok=True)
    if "sensitivity" in rep:
        write_sensitivity(rep["sensitivity"], out, f"{model_name(model, src.stem)}: each channel group "
                                                   "pruned alone")
    save_checkpoint(out / "model.pt", pruned, meta={**meta, "normalize": model_normalization(pruned), "compression": {
        "channels": {k: v for k, v in report.items() if k != "sensitivity"}}})
    atomic_write_json(out / "report.json", report)
    if args.json:
        print(json.dumps(report, default=str))
        return 0
    m0, m1 = report["macs"]["before"], report["macs"]["after"]
    print(f"MACs {m0 / 1e6:.2f}M -> {m1 / 1e6:.2f}M ({m1 / m0:.1%}), params {report['params']['before']:,} -> "
          f"{report['params']['after']:,}, shrunk == masked (max |diff| {report['verify_max_diff']:.1e})")
    if "top1" in report:
        print("top-1: " + ", ".join(f"{k} {v:.2f}%" for k, v in report["top1"].items()))
    print(f"wrote {out / 'model.pt'} and {out / 'report.json'}")
    return 0


def run(args: argparse.Namespace, mode: str, recipe: dict[str, Any]) -> int:
    """One structured mode (``channels``, ``lowrank`` or ``sensitivity``) after :func:`refuse_unused`."""
    _apply_cli_keys(args, recipe)
    args._mode = mode
    return {"channels": _run_channels, "lowrank": _run_lowrank, "sensitivity": _run_sensitivity}[mode](args, recipe)
