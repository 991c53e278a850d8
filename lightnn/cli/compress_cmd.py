"""`lightnn compress`: Deep Compression (prune -> share -> Huffman into a .lnz file) and, through
``lightnn.cli._compress_structured``, structured channel pruning / low-rank factorization / sensitivity.

Flags parse to None unless typed, so a ``--config`` value never overrides a typed flag (even one typed at its
default value), and a flag the chosen method does not read is refused by name."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import LightnnError
from . import _compress_structured as structured
from ._common import Number, add_command, load_yaml

UNSTRUCTURED = ("deep", "prune", "share")
STRUCTURED = ("channels", "lowrank")

# flag -> DeepConfig field; flags default to None so a YAML recipe fills what the command line leaves out
_CFG_FLAGS = {
    "sparsity": "sparsity", "scope": "scope", "schedule": "schedule", "prune_epochs": "prune_epochs",
    "prune_lr": "prune_lr", "share_epochs": "share_epochs", "share_lr": "share_lr", "kmeans_init": "kmeans_init",
    "share_train": "share_train", "other_dtype": "other_dtype", "weight_decay": "weight_decay",
    "label_smoothing": "label_smoothing",
}
_CLI_KEYS = {"data", "output", "val_fraction", "split_seed", "batch_size", "device", "conv_bits", "fc_bits",
             "conv_index_bits", "fc_index_bits", "method"}


def add_parser(sub):
    p = add_command(
        sub, "compress", "compress a checkpoint: Deep Compression (.lnz), pruning, weight sharing, channels, low-rank",
        ["lightnn compress runs/r20/model.pt --method deep --data sample --output r20.lnz",
         "lightnn compress runs/r20/model.pt --method deep --data ../shared/data/cifar10-train-jpeg.tar.gz "
         "--config recipe.yaml --output r20.lnz",
         "lightnn compress runs/r20/model.pt --method prune --sparsity 0.8 --data sample --output r20_pruned.pt",
         "lightnn compress r20_pruned.pt --method share --conv-bits 6 --share-epochs 0 --output r20.lnz",
         "lightnn compress runs/r20/model.pt --method channels --remove-blocks 2 --target-macs 0.5 --data sample "
         "--output runs/r20-pruned",
         "lightnn eval r20.lnz --data sample"])
    p.add_argument("checkpoint", help="a lightnn checkpoint (.pt) or a .lnz file")
    p.add_argument("--method", default="deep", choices=UNSTRUCTURED + STRUCTURED,
                   help="deep: prune + share + Huffman; prune / share: one stage; channels / lowrank: structured")
    p.add_argument("--data", default=None, help="dataset for retraining and accuracy ('sample', folder, archive)")
    p.add_argument("--output", "-o", default=None, help="output file (.lnz; .pt for --method prune; "
                                                        "default: CHECKPOINT stem + .lnz)")
    p.add_argument("--config", default=None, help="YAML recipe (DeepConfig fields for deep/prune/share, PruneConfig "
                                                   "fields for channels); flags override it")
    g = p.add_argument_group("Deep Compression")
    g.add_argument("--sparsity", type=float, default=None, help="fraction of weights pruned (every layer, or "
                   "globally with --scope global); a YAML recipe can give a mapping by layer/kind")
    g.add_argument("--scope", choices=["layer", "global"], default=None)
    g.add_argument("--schedule", choices=["agp", "oneshot"], default=None, help="gradual (AGP) or one-shot pruning")
    g.add_argument("--prune-epochs", type=float, default=None, help="retraining epochs while/after pruning")
    g.add_argument("--prune-lr", type=float, default=None)
    g.add_argument("--share-epochs", type=float, default=None, help="centroid fine-tuning epochs")
    g.add_argument("--share-lr", type=float, default=None)
    g.add_argument("--share-train", choices=["centroids", "all"], default=None)
    g.add_argument("--kmeans-init", choices=["linear", "density", "random"], default=None)
    g.add_argument("--other-dtype", choices=["float32", "float16"], default=None,
                   help="storage of batch norm and biases; float16 rounds them after the last retraining (exact "
                        "in the file, halves their bytes)")
    g.add_argument("--conv-bits", type=int, default=None, help="weight-sharing bits for conv layers (paper: 8)")
    g.add_argument("--fc-bits", type=int, default=None, help="weight-sharing bits for fc layers (paper: 5)")
    g.add_argument("--conv-index-bits", type=int, default=None, help="relative-index bits, conv (paper: 8)")
    g.add_argument("--fc-index-bits", type=int, default=None, help="relative-index bits, fc (paper: 5)")
    d = p.add_argument_group("data")
    d.add_argument("--val-fraction", type=float, default=0.1)
    d.add_argument("--split-seed", type=int, default=0)
    d.add_argument("--batch-size", type=Number(int, 1), default=128)
    d.add_argument("--seed", type=Number(int, 0), default=0,
                   help="seed of the global random generators (the random importance criterion, dropout)")
    d.add_argument("--device", default=None)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    structured.add_arguments(p)
    structured.track_explicit(p)
    return p


def _config(args, recipe: dict) -> "DeepConfig":  # noqa: F821
    from ..compress import DeepConfig

    unknown = sorted(k for k in recipe if k not in DeepConfig.__dataclass_fields__ and k not in _CLI_KEYS)
    if unknown:
        raise LightnnError(f"config file {args.config!r} has unknown key(s) {unknown}")
    typed = structured.explicit_flags(args)
    for k in _CLI_KEYS:  # recipe values for plain flags apply where the flag was not typed
        if k in recipe and k != "method" and k not in typed:
            setattr(args, k, recipe[k])
    cfg = {k: v for k, v in recipe.items() if k in DeepConfig.__dataclass_fields__}
    for flag, field in _CFG_FLAGS.items():
        v = getattr(args, flag)
        if v is not None:
            cfg[field] = v
    if args.distill:  # the uncompressed model teaches every retraining stage
        cfg["distill_weight"] = args.kd_weight if args.kd_weight is not None else \
            (cfg.get("distill_weight") or 0.5)
    base = DeepConfig()
    wb = dict(cfg.get("weight_bits", base.weight_bits)) if isinstance(cfg.get("weight_bits", base.weight_bits), dict) \
        else {"default": cfg["weight_bits"]}
    ib = dict(cfg.get("index_bits", base.index_bits)) if isinstance(cfg.get("index_bits", base.index_bits), dict) \
        else {"default": cfg["index_bits"]}
    for flag, target, key in (("conv_bits", wb, "conv"), ("fc_bits", wb, "fc"),
                              ("conv_index_bits", ib, "conv"), ("fc_index_bits", ib, "fc")):
        v = getattr(args, flag, None)
        if v is not None:
            target[key] = v
    cfg["weight_bits"], cfg["index_bits"] = wb, ib
    return DeepConfig.from_dict(cfg)


def run(args) -> int:
    from ..train import seed_everything

    structured.explicit_flags(args)
    seed_everything(args.seed)  # the same command gives the same compressed model
    recipe = load_yaml(args.config) if args.config else {}
    mode = structured.mode_of(args, recipe)
    structured.refuse_unused(mode, args, recipe)
    if mode in STRUCTURED or mode == "sensitivity":
        return structured.run(args, mode, recipe)

    import torch

    from ..checkpoint import save_checkpoint
    from ..compress import deep_compress, report_markdown
    from ..models import record_update
    from ..record import load
    from ..utils.io import atomic_write_json, atomic_write_text

    cfg = _config(args, recipe)
    src = Path(args.checkpoint)
    out = Path(args.output) if args.output else src.with_name(src.stem + ("_pruned.pt" if args.method == "prune"
                                                                             else ".lnz"))
    if out.suffix not in (".lnz", ".pt"):
        raise LightnnError(f"output {str(out)!r} must end in .lnz (or .pt for --method prune)")
    if out.suffix == ".pt" and args.method != "prune":
        raise LightnnError(f"--method {args.method} writes a .lnz file, not {str(out)!r}")
    if out.resolve() == src.resolve():
        raise LightnnError(f"output {str(out)!r} would overwrite the input checkpoint")
    model, record = load(src)  # one verified read: weights, classes and normalization
    meta = record.meta()
    norm = meta.get("normalize") or {}
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)

    stages = {"deep": ("prune", "share"), "prune": ("prune",), "share": ("share",)}[args.method]
    train = val = None
    if args.data is not None:
        from ..data import BatchLoader, load_dataset

        tr = load_dataset(args.data, "train", val_fraction=args.val_fraction, seed=args.split_seed)
        va = load_dataset(args.data, "val", val_fraction=args.val_fraction, seed=args.split_seed)
        mean, std = norm.get("mean"), norm.get("std")
        if mean is None or std is None:
            mean, std = tr.channel_stats()
            norm = {"mean": mean, "std": std}
        train = BatchLoader(tr, args.batch_size, shuffle=True, augment=True, mean=mean, std=std, device=device,
                            drop_last=True)
        val = BatchLoader(va, max(256, args.batch_size), mean=mean, std=std, device=device)
    else:
        if "prune" in stages:
            cfg.prune_epochs = 0.0
        cfg.share_epochs = 0.0
    meta = {"source": str(src), "method": args.method, "normalize": norm or None, "classes": meta.get("classes")}
    lnz_out = out if out.suffix == ".lnz" else None
    quiet = args.json
    model, report = deep_compress(model, cfg, train=train, val=val, output=lnz_out, stages=stages, meta=meta,
                                  log=None if quiet else (lambda s: print(s, file=sys.stderr)))
    if out.suffix == ".pt":
        record_update(model, normalize=norm or None)
        save_checkpoint(out, model, meta={**meta, "compression": report["stages"]})
        report["stages"].append({"stage": "checkpoint (dense .pt)", "bytes": out.stat().st_size,
                                 "ratio": report["stages"][0]["bytes"] / out.stat().st_size, "accuracy": None,
                                 "seconds": 0.0, "file": str(out)})
    report["source"] = str(src)
    report["method"] = args.method
    report_path = out.with_name(out.stem + ".report.json")
    atomic_write_json(report_path, report)
    atomic_write_text(out.with_name(out.stem + ".report.md"), report_markdown(report))
    if args.json:
        print(json.dumps(report, default=str))
    else:
        print(report_markdown(report))
        print(f"wrote {out} and {report_path}")
    return 0
