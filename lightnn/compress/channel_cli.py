"""``lightnn compress --method channels|lowrank`` and ``lightnn compress --sensitivity`` (called by
``lightnn/cli/compress_cmd.py``, which owns the shared flags: checkpoint, --method, --data, --output, --scope,
--batch-size, --device, --val-fraction, --split-seed, --json).

    lightnn compress r20.pt --method channels --target-macs 0.5 --data sample --output out/
    lightnn compress r20.pt --method channels --target-latency 0.6 --data sample --output out/
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
from ..utils.checks import Number

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("structured pruning (--method channels / lowrank, --sensitivity)")
    g.add_argument("--sensitivity", action="store_true",
                   help="prune each channel group alone at --ratios and report accuracy (table, plot, JSON)")
    g.add_argument("--target-macs", default=None,
                   type=Number(float, 0, 1, lo_open=True, hi_open=True, meaning="the fraction of the MACs to keep"),
                   help="keep this fraction of the MACs (per-group ratios planned from a sensitivity analysis)")
    g.add_argument("--target-latency", default=None,
                   type=Number(float, 0, 1, lo_open=True, hi_open=True, meaning="the fraction of the latency to keep"),
                   help="keep this fraction of the ONNX Runtime batch-1 latency (planned like --target-macs)")
    g.add_argument("--ratio", default=None,
                   type=Number(float, 0, 1, hi_open=True, meaning="the fraction of each group's channels to remove"),
                   help="prune this fraction of every group (no plan)")
    g.add_argument("--remove-blocks", type=Number(int, 0), default=0,
                   help="first remove this many identity-shortcut residual blocks, those whose removal alone costs "
                        "the least validation accuracy (needs --data); --target-macs stays relative to the input model")
    g.add_argument("--rank-blocks", default="accuracy", choices=["accuracy", "latency"],
                   help="choose the blocks by accuracy lost (default), or by accuracy lost per ms of deployment "
                        "latency saved (measured at --latency-batch)")
    g.add_argument("--latency-batch", type=Number(int, 1), default=1,
                   help="batch size of the latency measurements (--target-latency, --rank-blocks latency)")
    g.add_argument("--criterion", default="l1", choices=["l1", "l2", "bn_scale", "taylor", "random"],
                   help="channel importance (default l1)")
    g.add_argument("--round-to", default="8", help="kept channel counts are multiples of this (default 8); 'auto': this CPU's convolution channel block (16 with AVX-512, else 8)")
    g.add_argument("--ratios", default="0.25,0.5,0.75", help="sensitivity ratios, comma-separated")
    g.add_argument("--exclude", action="append", default=[], help="layer path (wildcards) to leave unpruned")
    g.add_argument("--finetune-epochs", type=Number(float, 0), default=0.0,
                   help="fine-tune after pruning (needs --data)")
    g.add_argument("--lr", type=Number(float, 0, lo_open=True), default=0.01,
                   help="fine-tuning peak learning rate (cosine schedule); for as many epochs as training from "
                        "scratch takes, retraining with the from-scratch recipe (learning-rate rewinding, e.g. "
                        "--lr 0.1 --weight-decay 5e-4 --label-smoothing 0.1) beat a small-rate KD fine-tune on "
                        "MobileNetV2-CIFAR: see BENCHMARKS.md")
    g.add_argument("--weight-decay", type=Number(float, 0), default=5e-4,
                   help="fine-tuning weight decay (not on norms/biases)")
    g.add_argument("--label-smoothing", type=Number(float, 0, 1, hi_open=True), default=0.0,
                   help="fine-tuning label smoothing (default 0)")
    g.add_argument("--distill", action="store_true", help="fine-tune with the unpruned model as teacher")
    g.add_argument("--kd-weight", type=Number(float, 0, 1), default=0.5,
                   help="with --distill: weight of the distillation loss")
    g.add_argument("--rank", type=Number(int, 1), default=None, help="low-rank: one rank for every layer")
    g.add_argument("--energy", type=Number(float, 0, 1, lo_open=True), default=None,
                   help="low-rank: keep this fraction of singular-value energy")
    g.add_argument("--eval-limit", type=Number(int, 0), default=2000,
                   help="validation images used by the sensitivity analysis")


def _data(args: argparse.Namespace, norm: dict | None, device: str) -> tuple[Any, Any, dict]:
    from ..data import load_dataset

    tr = load_dataset(args.data, "train", val_fraction=args.val_fraction, seed=args.split_seed)
    va = load_dataset(args.data, "val", val_fraction=args.val_fraction, seed=args.split_seed)
    if not norm or norm.get("mean") is None:
        mean, std = tr.channel_stats()
        norm = {"mean": list(mean), "std": list(std)}
    return tr, va, norm


def _latency_fn(size: tuple[int, ...], batch: int = 1):
    """Latency (ms, median) at ``batch`` on the deployment backend: ONNX Runtime when importable, else eager."""
    import importlib.util

    from ..profile.latency import measure_latency

    if batch < 1:
        raise LightnnError(f"--latency-batch must be >= 1, got {batch}")
    backend = "onnxruntime" if importlib.util.find_spec("onnxruntime") else "eager"
    return (lambda m: measure_latency(m.cpu(), size, batch=batch, threads=1, runs=20, backend=backend).median_ms,
            backend)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..checkpoint import read_checkpoint, load_model, save_checkpoint
    from ..utils.io import atomic_write_json, atomic_write_text
    from .channel import build_dependency_graph, prune_channels, verify_shrink
    from .sensitivity import (count_macs, plan_ratios, plot_sensitivity, sensitivity_analysis,
                              sensitivity_table)

    src = Path(args.checkpoint)
    suffix = "sens" if args.sensitivity else args.method
    out = Path(args.output) if args.output else src.with_name(f"{src.stem}_{suffix}")
    # a folder may have a dot in its name (runs/r20.v2); only an existing file or a model-file name is refused
    if out.is_file() or out.suffix in (".pt", ".lnz", ".onnx"):
        raise LightnnError(f"--output {str(out)!r} must be a directory for --method {args.method}/--sensitivity, "
                           f"not a file")
    meta = dict(read_checkpoint(src).get("meta", {}))
    model = load_model(src).eval()
    norm = meta.get("normalize") or getattr(model, "lightnn_normalize", None)
    size = tuple(getattr(model, "default_input_size", (3, 224, 224)))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    log = (lambda s: None) if args.json else (lambda s: print(s, file=sys.stderr))
    report: dict[str, Any] = {"source": str(src), "method": "sensitivity" if args.sensitivity else args.method}

    if args.method == "lowrank" and not args.sensitivity:
        from .lowrank import factorize

        if (args.rank is None) == (args.energy is None):
            raise LightnnError("--method lowrank needs exactly one of --rank N / --energy F")
        rep = factorize(model, rank=args.rank, energy=args.energy, exclude=args.exclude, input_size=size)
        out.mkdir(parents=True, exist_ok=True)
        save_checkpoint(out / "model.pt", model, meta={**meta, "compression": {"lowrank": rep.to_dict()}})
        report.update(rep.to_dict())
        atomic_write_json(out / "report.json", report)
        print(json.dumps(report, default=str) if args.json else rep.table() + f"\nwrote {out / 'model.pt'}")
        return 0

    if args.method != "channels" and not args.sensitivity:
        raise LightnnError(f"channel_cli handles --method channels/lowrank, not {args.method!r}")
    x = torch.randn(1, *size)
    targets = [a for a in ("target_macs", "target_latency", "ratio") if getattr(args, a) is not None]
    if not args.sensitivity and len(targets) != 1:
        raise LightnnError("--method channels needs exactly one of --target-macs, --target-latency, --ratio")
    if args.remove_blocks < 0:
        raise LightnnError(f"--remove-blocks must be >= 0, got {args.remove_blocks}")
    if args.remove_blocks and args.sensitivity:
        raise LightnnError("--remove-blocks combines with --target-macs, --target-latency or --ratio (not "
                           "--sensitivity)")
    needs_data = args.sensitivity or (targets and targets[0] != "ratio") or args.finetune_epochs > 0 \
        or args.criterion == "taylor" or args.remove_blocks > 0
    if needs_data and args.data is None:
        raise LightnnError("--data is required for --sensitivity, --target-macs/--target-latency, fine-tuning "
                           "and the taylor criterion")
    tr = va = None
    if needs_data:
        tr, va, norm = _data(args, norm, device)
        model.lightnn_normalize = norm
    from ..train import evaluate

    sub = va
    if va is not None and args.eval_limit and args.eval_limit < len(va):  # a seeded sample over all classes
        sub = va.subset(torch.randperm(len(va), generator=torch.Generator().manual_seed(0))[: args.eval_limit])

    def acc(m) -> float:
        return evaluate(m.to(device), sub, batch_size=max(256, args.batch_size), device=device,
                        mean=norm["mean"], std=norm["std"])["top1"]

    original, macs_scale, latency_scale = model, 1.0, 1.0
    if args.remove_blocks:
        from .depth import block_sensitivity, rank_blocks, remove_blocks, removable_blocks

        blocks = removable_blocks(model, x)
        if args.remove_blocks > len(blocks):
            raise LightnnError(f"--remove-blocks {args.remove_blocks}: the model has only {len(blocks)} removable "
                               f"residual blocks ({blocks})")
        log(f"accuracy with each of {len(blocks)} removable blocks removed alone ...")
        bsens = block_sensitivity(model, blocks, acc)
        report["blocks"] = {"top1_removed_alone": bsens, "rank": args.rank_blocks}
        if args.rank_blocks == "latency":
            lat, backend = _latency_fn(size, args.latency_batch)
            log(f"{backend} latency at batch {args.latency_batch} with each block removed alone ...")
            base_ms = lat(model)
            ms = block_sensitivity(model, blocks, lat)
            order = rank_blocks(bsens, baseline=acc(model), latency_removed=ms, baseline_latency=base_ms)
            report["blocks"].update(ms_removed_alone=ms, ms=base_ms, latency_backend=backend,
                                    latency_batch=args.latency_batch)
            model = model.to(device)
        else:
            order = rank_blocks(bsens)
        chosen = order[: args.remove_blocks]
        model = remove_blocks(model, chosen, x).cpu()
        macs_scale = count_macs(original.cpu(), x) / count_macs(model, x)
        if args.target_latency is not None:  # the budget stays relative to the input model
            lat, _ = _latency_fn(size, args.latency_batch)
            latency_scale = lat(original) / lat(model)
            model, original = model.to(device), original.to(device)
        report["blocks"]["removed"] = chosen
        log("removed " + ", ".join(f"{b} ({bsens[b]:.2f}%)" for b in chosen))

    # ops the analysis cannot map freeze the channels they touch; the rest of the graph is pruned
    graph = build_dependency_graph(model, x, on_unsupported="exclude", exclude=args.exclude)
    for msg in graph.unsupported:
        log(f"note: {msg}; its channels are left as they are")
    report["unsupported"] = graph.unsupported
    sens = None
    if args.sensitivity or (targets and targets[0] != "ratio"):
        try:
            ratios = [float(r) for r in args.ratios.split(",")]
        except ValueError:
            raise LightnnError(f"--ratios must be comma-separated fractions, got {args.ratios!r}") from None
        log(f"sensitivity analysis of {len(ratios)} ratios per group ...")
        sens = sensitivity_analysis(model.to(device), x.to(device), acc, ratios, criterion=args.criterion,
                                    round_to=args.round_to, graph=graph, progress=not args.json)
        model.cpu()
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "sensitivity.json", sens)
        atomic_write_text(out / "sensitivity.md", sensitivity_table(sens))
        plot_sensitivity(sens, out / "sensitivity.png", title=f"{getattr(model, 'lightnn_name', src.stem)}: "
                                                               "each channel group pruned alone")
        report["sensitivity"] = sens
        if args.sensitivity:
            print(json.dumps(report) if args.json else sensitivity_table(sens) + f"\nwrote {out}/sensitivity.*")
            return 0

    data_iter = None
    if args.criterion == "taylor":
        from ..data import BatchLoader

        data_iter = BatchLoader(tr, 64, shuffle=True, mean=norm["mean"], std=norm["std"])
    model.cpu()
    if targets[0] == "ratio":
        ratio: Any = args.ratio
        scope = args.scope or "layer"
    else:
        lat_fn, backend = _latency_fn(size, args.latency_batch) if args.target_latency is not None else (None, None)
        if backend:
            report["latency_backend"] = backend
            log(f"latency budget measured with {backend}")
        target_macs = None if args.target_macs is None else args.target_macs * macs_scale
        if target_macs is not None and target_macs >= 1.0:
            raise LightnnError(f"removing {args.remove_blocks} blocks already leaves {1 / macs_scale:.1%} of the MACs, "
                               f"at or below --target-macs {args.target_macs}: remove fewer blocks or use --ratio")
        target_latency = None if args.target_latency is None else args.target_latency * latency_scale
        if target_latency is not None and target_latency >= 1.0:
            raise LightnnError(f"removing {args.remove_blocks} blocks already leaves {1 / latency_scale:.1%} of the "
                               f"latency, at or below --target-latency {args.target_latency}: remove fewer blocks or "
                               "use --ratio")
        plan = plan_ratios(model, x, sens, target_macs=target_macs, target_latency=target_latency,
                           latency_fn=lat_fn, criterion=args.criterion, round_to=args.round_to, graph=graph,
                           iters=20 if lat_fn is None else 8)
        report["plan"] = plan
        ratio, scope = plan["ratios"], "layer"
    pruned = prune_channels(model, x, ratio, criterion=args.criterion, scope=scope, round_to=args.round_to,
                            data=data_iter, graph=graph)
    report["verify_max_diff"] = verify_shrink(model, pruned, x)
    report["macs"] = {"before": count_macs(original, x), "after": count_macs(pruned, x)}
    report["params"] = {"before": sum(p.numel() for p in original.parameters()),
                        "after": sum(p.numel() for p in pruned.parameters())}
    if va is not None:
        report["top1"] = {"before": acc(original), **({"blocks_removed": acc(model)} if args.remove_blocks else {}),
                          "pruned": acc(pruned)}
    if args.finetune_epochs > 0:
        from ..train import fit

        res = fit(pruned, tr, va, epochs=max(1, round(args.finetune_epochs)), lr=args.lr, batch_size=args.batch_size,
                  weight_decay=args.weight_decay, label_smoothing=args.label_smoothing, device=device,
                  teacher=original if args.distill else None,
                  kd_weight=args.kd_weight, mean=norm["mean"], std=norm["std"], progress=not args.json,
                  verbose=not args.json)
        report["top1"]["finetuned"] = acc(pruned)
        report["finetune"] = {"epochs": len(res["history"]), "distill": args.distill, "lr": args.lr,
                              "weight_decay": args.weight_decay, "label_smoothing": args.label_smoothing,
                              "kd_weight": args.kd_weight if args.distill else None}
    pruned.cpu()
    pruned.lightnn_normalize = norm
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out / "model.pt", pruned, meta={**meta, "normalize": norm,
                                                    "compression": {"channels": {k: v for k, v in report.items()
                                                                                 if k != "sensitivity"}}})
    atomic_write_json(out / "report.json", report)
    if args.json:
        print(json.dumps(report, default=str))
    else:
        m0, m1 = report["macs"]["before"], report["macs"]["after"]
        print(f"MACs {m0 / 1e6:.2f}M -> {m1 / 1e6:.2f}M ({m1 / m0:.1%}), params {report['params']['before']:,} -> "
              f"{report['params']['after']:,}, shrunk == masked (max |diff| {report['verify_max_diff']:.1e})")
        if "top1" in report:
            print("top-1: " + ", ".join(f"{k} {v:.2f}%" for k, v in report["top1"].items()))
        print(f"wrote {out / 'model.pt'} and {out / 'report.json'}")
    return 0
