"""Deep Compression end to end on CIFAR-10 (45,000 train / 5,000 val split of the training set).

For each network: train a baseline (or load a checkpoint), then prune with the AGP schedule while retraining,
share weights by per-layer k-means (linear init) and fine-tune the centroids, and Huffman-encode into a ``.lnz``
file; the file is decoded again and evaluated. Each row gives size, top-1 and wall time after every stage; the last
size is the file on disk. Paper reference (Han et al. 2016, Table 1): LeNet-5 39x, AlexNet 35x, no accuracy loss.

    # the real run (one GPU command): writes deep_compression.json (the measurements) and the .lnz files into --out
    python benchmarks/deep_compression.py --data .devdata/cifar10-train-jpeg.tar.gz --out $OUT
    # a CPU smoke run of the same code on the shipped 5,000-image sample
    python benchmarks/deep_compression.py --tiny

Then ``python benchmarks/deep_compression.py --from-json OUT/deep_compression.json`` rewrites the section's record
``benchmarks/results/deep_compression.json`` from a device run's measurements. lenet5 also fits a 2-core CPU with a
shorter schedule (the trained baseline is kept as ``OUT/lenet5_baseline.pt``; pass ``--lenet5-ckpt`` to retry a recipe):

    python benchmarks/deep_compression.py --nets lenet5 --out .devout/deep_compression_cpu --no-write \
        --baseline-epochs 12 --prune-epochs 4 --share-epochs 0.5
    python benchmarks/deep_compression.py --merge-json .devout/deep_compression/deep_compression.json \
        .devout/deep_compression_cpu/deep_compression.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, today  # noqa: E402
from records import col, make_record, render, table, write_record  # noqa: E402

from lightnn import create_model  # noqa: E402
from lightnn.checkpoint import load_model, read_checkpoint, save_checkpoint  # noqa: E402
from lightnn.compress import DeepConfig, deep_compress  # noqa: E402
from lightnn.data import BatchLoader, load_dataset  # noqa: E402
from lightnn.models import model_normalization  # noqa: E402
from lightnn.train import TrainConfig, fit  # noqa: E402

# targets (issue 6): at least this compression with at most this many top-1 points lost
TARGETS = {"lenet5": (35.0, 0.5), "alexnet_small_cifar": (35.0, 0.5), "alexnet_cifar": (35.0, 0.5),
           "resnet20": (10.0, 1.0), "resnet56": (10.0, 1.0), "mobilenet_v2_cifar": (10.0, 1.0)}

# name, arch kwargs, baseline (epochs, lr), Deep Compression recipe
NETS = [
    ("lenet5", {"in_chans": 3, "img_size": 32, "conv_act": "relu"}, (30, 0.05), dict(
        # FC-heavy (95% of the weights in fc1): prune fc1 hard (paper: LeNet-5 8% kept). One-shot sensitivity of
        # the 30-epoch CPU baseline (79.7%): conv1 at 30% sparsity alone costs 2.1 points and the classifier at 60%
        # 1.6, for 1.5 + 2 KB of file; so conv1 stays dense and the classifier loses 30%. Retraining distils from
        # the dense model (with conv1 0.3 / classifier 0.6 every try lost 1.3-1.8 points, with or without it)
        sparsity={"features.0": 0.0, "features.3": 0.5, "pre_logits.1": 0.94, "classifier": 0.3},
        weight_bits={"conv": 8, "fc": 5}, index_bits={"conv": 8, "fc": 5},
        prune_epochs=24, ramp_fraction=0.5, share_epochs=3, prune_lr=0.01, share_lr=5e-5,
        distill_weight=0.7, distill_temperature=4.0)),
    ("alexnet_small_cifar", {}, (20, 0.05), dict(
        # the AlexNet-style CIFAR net (two 5x5 convs of 64, FC 4096 -> 384 -> 192 -> 10; 90% of its 1.76 M weights in
        # fc1), the CIFAR counterpart of the paper's AlexNet row (9-11% of the FC weights kept, conv 8 / fc 5 bits).
        # conv1 (4,800 weights) stays dense: lenet5's conv1 lost 2 points at 30% sparsity for 1.5 KB of file
        sparsity={"features.0": 0.0, "features.4": 0.65, "pre_logits.1": 0.94, "pre_logits.3": 0.9, "classifier": 0.5},
        weight_bits={"conv": 8, "fc": 5}, index_bits={"conv": 8, "fc": 5},
        prune_epochs=10, ramp_fraction=0.5, share_epochs=3, prune_lr=0.01, share_lr=5e-5,
        distill_weight=0.5, distill_temperature=4.0)),
    ("resnet20", {}, (30, 0.1), dict(
        # all-conv and already small: 70% sparsity, 5-bit shared weights (paper Table 6: 8/4 bits lose nothing)
        sparsity={"features.0.conv": 0.3, "classifier": 0.5, "conv": 0.7},
        weight_bits={"conv": 5, "fc": 5}, index_bits={"conv": 8, "fc": 5},
        prune_epochs=15, share_epochs=3, prune_lr=0.01, share_lr=5e-5)),
    ("mobilenet_v2_cifar", {}, (30, 0.1), dict(
        # most weights sit in the 1x1 convs (the last one alone, 320 -> 1280, holds 19%): prune those to 35% kept at
        # 5 bits; depthwise filters (9 weights per channel, 3% of the net) stay dense at 6 bits, the stem dense. The
        # 68k batch-norm and bias values, a third of the file in float32 (273 KB), are rounded to float16 after the
        # last retraining (other_dtype). Sized for a 2-core CPU starting from the GPU-trained checkpoint (~11 min per
        # retraining epoch): 4 AGP epochs, half a centroid epoch. Session 4's 25%-kept recipe (pointwise 0.75,
        # depthwise 0.2, float32 batch norm) gave 11.0x at -1.38 points; one-shot 70% pointwise sparsity costs 8.4
        sparsity={"features.0.conv": 0.0, "depthwise": 0.0, "conv": 0.65, "classifier": 0.5},
        weight_bits={"conv": 5, "depthwise": 6, "fc": 5}, index_bits={"conv": 5, "fc": 5},
        prune_epochs=4, ramp_fraction=0.4, share_epochs=0.5, prune_lr=0.02, share_lr=5e-5, distill_weight=0.5,
        other_dtype="float16")),
]


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def merge(paths: list[str]) -> dict:
    """Combine the nets of several runs' JSON (a later file's net replaces an earlier one of the same name).

    Each net keeps the machine, torch version and date of the run that measured it.
    """
    merged: dict = {}
    nets: dict[str, dict] = {}
    for path in paths:
        res = json.loads(Path(path).read_text())
        if not merged:
            merged = {k: v for k, v in res.items() if k != "nets"}
        if res["split"] != merged["split"]:
            raise SystemExit(f"{path}: split {res['split']} differs from {merged['split']}")
        for net in res["nets"]:
            for key in ("device", "torch", "date"):
                net.setdefault(key, res[key])
            nets[net["model"]] = net
    order = [n for n, *_ in NETS]
    merged["nets"] = sorted(nets.values(), key=lambda r: order.index(r["model"]) if r["model"] in order else len(order))
    return merged


def run(args) -> dict:
    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cpu":
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    train = load_dataset(args.data, "train", val_fraction=0.1, seed=0)
    val = load_dataset(args.data, "val", val_fraction=0.1, seed=0)
    data_s = time.perf_counter() - t0
    print(f"data: {len(train)} train / {len(val)} val in {data_s:.1f}s on {_device_name(dev)}", flush=True)
    results = {"device": _device_name(dev), "torch": torch.__version__, "date": today(), "data": str(args.data),
               "split": [len(train), len(val)], "data_seconds": data_s, "tiny": args.tiny, "nets": []}
    bs = 64 if args.tiny else 256
    start = time.perf_counter()
    for name, arch, (epochs, lr), recipe in NETS:
        if args.nets and name not in args.nets:
            continue
        if args.budget and time.perf_counter() - start > args.budget:
            print(f"skipping {name}: the {args.budget:.0f}s budget is spent", flush=True)
            results.setdefault("skipped", []).append(name)
            continue
        t0 = time.perf_counter()
        ckpt = getattr(args, f"{name}_ckpt", None)
        if ckpt and Path(ckpt).exists():
            model = load_model(ckpt)
            ck_meta = read_checkpoint(ckpt).get("meta", {})
            norm = dict(model_normalization(model) or ck_meta.get("normalize") or {})
            baseline = {**ck_meta.get("baseline", {}), "source": str(ckpt)}  # how it was trained, if recorded
            mean, std = norm.get("mean"), norm.get("std")
            if mean is None:
                mean, std = train.channel_stats()
        else:
            model = create_model(name, num_classes=train.num_classes, **arch)
            ep = 1 if args.tiny else (args.baseline_epochs or epochs)
            hist = fit(model, train, val, TrainConfig(epochs=ep, batch_size=bs, lr=lr, weight_decay=5e-4, device=dev,
                                                      progress=False, verbose=not args.tiny, seed=0))
            mean, std = hist["normalize"]["mean"], hist["normalize"]["std"]
            baseline = {"epochs": ep, "lr": lr, "train_seconds": hist["train_time_s"]}
            # keep the trained baseline so a recipe can be retried with --<net>-ckpt without retraining
            save_checkpoint(out / f"{name}_baseline.pt", model,
                            meta={"normalize": {"mean": mean, "std": std}, "baseline": baseline})
        model.to(dev)
        base_s = time.perf_counter() - t0
        rcp = dict(recipe)
        if args.tiny:
            rcp.update(prune_epochs=0.3, share_epochs=0.1)
        for key in ("prune_epochs", "share_epochs"):  # a shorter schedule for a CPU run
            if getattr(args, key) is not None:
                rcp[key] = getattr(args, key)
        cfg = DeepConfig(**rcp)
        tl = BatchLoader(train, bs, shuffle=True, augment=True, mean=mean, std=std, device=dev, drop_last=True)
        vl = BatchLoader(val, 500, mean=mean, std=std, device=dev)
        model, report = deep_compress(model, cfg, train=tl, val=vl, output=out / f"{name}.lnz",
                                      meta={"normalize": {"mean": mean, "std": std}},
                                      log=lambda s: print(f"  {name}: {s}", flush=True))
        report["baseline"] = {**baseline, "seconds": base_s}
        report["params"] = sum(p.numel() for p in model.parameters())
        report["device"], report["date"], report["torch"] = _device_name(dev), today(), torch.__version__
        results["nets"].append(report)
        atomic_json(out / "deep_compression.json", results)  # partial results survive a time-out
    return results


def atomic_json(path: Path, obj) -> None:
    from lightnn.utils.io import atomic_write_json

    atomic_write_json(path, obj)


_SIZE = "{kb:.1f} KB ({ratio:.1f}x) / {top1:.2f}%"
COLUMNS = [col("net"), col("params", "{value:,}", "params"), col("top-1 baseline", "{top1:.2f}% ({kb:.0f} KB)",
                                                                 {"top1": "%", "kb": "KB"}),
           col("P: size / top-1", _SIZE, {"kb": "KB", "ratio": "x", "top1": "%"}),
           col("P+Q: size / top-1", _SIZE, {"kb": "KB", "ratio": "x", "top1": "%"}),
           col("file: size / top-1", _SIZE, {"kb": "KB", "ratio": "x", "top1": "%"}),
           col("compression", "**{value:.1f}x**", "x"), col("top-1 change", "{value:+.2f}", "points"),
           col("target met", "{met} (>= {min_ratio:.0f}x, <= {max_drop} pt)", {"min_ratio": "x", "max_drop": "points"}),
           col("time baseline / P / P+Q / file (s, on its machine)", "{baseline:.0f} / {p:.0f} / {pq:.0f} / {file:.1f}",
               "s")]
STAGE_COLUMNS = [col("stage"), col("size", "{kb:.1f} KB", {"kb": "KB", "mb": "MB"}),
                 col("compression", "{value:.1f}x", "x"), col("top-1 (%)", "{value:.2f}", "%"),
                 col("time (s)", "{value:.1f}", "s")]
LAYER_COLUMNS = [col("layer"), col("#weights", "{value:,}", "weights"), col("weights % (P)", "{value:.1f}%", "%"),
                 col("weight bits (P+Q)", "{value}", "bits"), col("weight bits (P+Q+H)", "{value:.2f}", "bits"),
                 col("index bits (P+Q)", "{value}", "bits"), col("index bits (P+Q+H)", "{value:.2f}", "bits"),
                 col("compress (P+Q)", "{value:.2f}%", "%"), col("compress (P+Q+H)", "{value:.2f}%", "%")]


def _size_cell(nbytes: float) -> dict:
    """KB below 1 MB, MB above (as the stage log prints it)."""
    return {"mb": nbytes / 1e6, "fmt": "{mb:.2f} MB"} if nbytes >= 1e6 else {"kb": nbytes / 1e3}


def _net_tables(r: dict) -> list[dict]:
    """Paper Tables 2-5 layout for one net: the size / accuracy / time per stage and the per-layer table."""
    stages = [[st["stage"], _size_cell(st["bytes"]), st["ratio"], st.get("accuracy"), st.get("seconds", 0.0)]
              for st in r["stages"]]
    layers = []
    for x in r.get("layers", []):
        rpq = 100 * x["rate_pq"] if "rate_pq" in x else {"value": 100 * x.get("rate_p", 1), "fmt": "{value:.2f}% (P)"}
        layers.append([x["layer"], x["weights"], 100 * x["density"], x.get("weight_bits"), x.get("weight_bits_h", "32"),
                       x["index_bits"], x["index_bits_h"], rpq, 100 * x["rate_pqh"]])
    return [{"heading": f"{r['model']}: per stage and per layer (paper Tables 2-5 layout)", "level": 4},
            table(f"{r['model']}_stages", STAGE_COLUMNS, stages), table(f"{r['model']}_layers", LAYER_COLUMNS, layers)]


def _row(r: dict) -> list:
    o, p, q, f = r["stages"][0], r["stages"][1], r["stages"][2], r["stages"][-1]
    base = r["baseline"]
    bsec = base.get("train_seconds")
    times = {"baseline": bsec or base.get("seconds", 0.0), "p": p["seconds"], "pq": q["seconds"], "file": f["seconds"]}
    if bsec is None and base.get("source"):
        times.update(baseline="ckpt", fmt="{baseline} / {p:.0f} / {pq:.0f} / {file:.1f}")
    drop = f["accuracy"] - o["accuracy"]
    tgt = TARGETS.get(r["model"])
    met = None if tgt is None else {"met": "yes" if f["ratio"] >= tgt[0] and -drop <= tgt[1] else "no",
                                    "min_ratio": tgt[0], "max_drop": tgt[1]}
    size = lambda s: {"kb": s["bytes"] / 1e3, "ratio": s["ratio"], "top1": s["accuracy"]}  # noqa: E731
    return [r["model"], r["params"], {"top1": o["accuracy"], "kb": o["bytes"] / 1e3}, size(p), size(q), size(f),
            f["ratio"], drop, met, times]


def deep_record(results: dict) -> dict:
    """The section's record from a run's measurements (``deep_compression.json``, or several merged)."""
    devs = sorted({r.get("device", results["device"]) for r in results["nets"]})
    one = len(devs) == 1
    where = (f"training on {devs[0]}, torch {results['torch']}" if one else
             "each net's machine, torch version and date are given with its recipe below")
    intro = (f"On CIFAR-10 ({results['split'][0]:,} train / {results['split'][1]:,} val images, the seeded split of "
             f"the training set); {where}." + (" **Tiny smoke configuration (not a result).**" if results.get("tiny")
                                               else ""))
    sizes = ("Sizes: *original* is the dense float32 state dict; *P* stores pruned layers as relative indices with "
             "filler zeros plus float32 values; *P+Q* as relative indices plus codebook indices plus a float32 "
             "codebook (the paper's accounting); *file* is the `.lnz` file on disk after Huffman coding (header, "
             "tables, block offsets and checksums included), decoded again and evaluated. Accuracy is top-1 on the "
             f"{results['split'][1]:,} validation images; times are wall seconds per stage (P and P+Q include their "
             "retraining).")
    baselines = ("Baselines: " + "; ".join(
        f"{r['model']} " + (f"trained {r['baseline']['epochs']} epochs (lr {r['baseline']['lr']}, cosine, batch 256)"
                            if "epochs" in r["baseline"] else
                            f"from the checkpoint {Path(str(r['baseline'].get('source'))).name} (trained before "
                            "this run: 'ckpt' in the time column)")
        for r in results["nets"]) + ", all with SGD (lightnn.train.fit); these short runs sit below published "
        "accuracy (ResNet-20: 91.25%, He et al. 2016 Table 6) and the change column is against them. "
        "Paper (Table 1, ImageNet/MNIST): LeNet-5 39x, AlexNet 35x, VGG-16 49x at no accuracy loss.")
    parts = [{"text": intro}, {"text": sizes}, table("main", COLUMNS, [_row(r) for r in results["nets"]]),
             {"text": baselines}]
    for r in results["nets"]:
        c = r["config"]
        parts.append({"text": (
            f"Recipe {r['model']} (measured on {r.get('device', results['device'])}, torch "
            f"{r.get('torch', results['torch'])}, {r.get('date', results['date'])}): sparsity {c['sparsity']}, "
            f"{c['schedule']} over {c['prune_epochs']} epochs (lr {c['prune_lr']}, ramp over the first "
            f"{c['ramp_fraction']:.0%}), weight bits {c['weight_bits']}, index bits {c['index_bits']}, "
            f"{c['kmeans_init']} k-means init, centroid fine-tuning {c['share_epochs']} epochs (lr {c['share_lr']})"
            + (f"; every retraining stage distils from the uncompressed model (weight {c['distill_weight']}, "
               f"T {c['distill_temperature']})" if c.get("distill_weight") else "")
            + (f"; batch norm and biases ({r['float16_others']['values']:,} values) rounded to float16 after the "
               "last retraining and stored in 16 bits (counted from P+Q on)" if c.get("other_dtype") == "float16"
               else "") + ".")})
        parts += _net_tables(r)
    # one machine: the record names it; several: each recipe line does
    machine = {"gpu" if devs[0].startswith("NVIDIA") else "cpu": devs[0]} if one else None
    return make_record("deep_compression", "Deep Compression (prune -> share -> Huffman, real .lnz files)",
                       "python benchmarks/deep_compression.py", parts, machine=machine,
                       date=results["date"] if one else None, software={"torch": results["torch"]} if one else {})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="CIFAR-10 archive/folder (default: ../shared/data tarball)")
    ap.add_argument("--out", default=None, help="where the .lnz files and deep_compression.json go")
    ap.add_argument("--device", default=None)
    ap.add_argument("--nets", nargs="*", default=None, help="subset of: " + ", ".join(n for n, *_ in NETS))
    ap.add_argument("--resnet20-ckpt", default=None, help="use this trained resnet20 instead of training one")
    ap.add_argument("--lenet5-ckpt", default=None)
    ap.add_argument("--alexnet-small-cifar-ckpt", default=None)
    ap.add_argument("--mobilenet-v2-cifar-ckpt", default=None)
    ap.add_argument("--baseline-epochs", type=int, default=None, help="train baselines this many epochs instead")
    ap.add_argument("--prune-epochs", type=float, default=None, help="override every recipe's pruning epochs")
    ap.add_argument("--share-epochs", type=float, default=None, help="override every recipe's centroid epochs")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke run on the shipped sample (1 epoch)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget", type=float, default=None, help="start no further network after this many seconds")
    ap.add_argument("--from-json", default=None, help="only rewrite results/deep_compression.json from this JSON")
    ap.add_argument("--merge-json", nargs="+", default=None,
                    help="only rewrite results/deep_compression.json from these runs' JSON, nets combined")
    ap.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/deep_compression.json")
    args = ap.parse_args(argv)
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
    elif args.merge_json:
        results = merge(args.merge_json)
    else:
        if args.data is None:
            args.data = "sample" if args.tiny else str(ROOT.parent / "shared" / "data" / "cifar10-train-jpeg.tar.gz")
        args.out = args.out or os.environ.get("OUT") or str(ROOT / ".devout" / "deep_compression")
        results = run(args)
    rec = deep_record(results)
    print(render(rec))
    if not args.no_write and not results.get("tiny"):
        print("wrote", write_record(rec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
