"""Structured channel pruning on CIFAR-10 (45k/5k split): pruned to 50% MACs vs uniform width scaling.

Two stages, because training wants a GPU and latency must be measured on the deployment CPU:

    # stage 1 (GPU): train baselines, sensitivity analysis, prune to the MACs budget, fine-tune with the unpruned
    # model as distillation teacher, train width-scaled baselines of equal MACs for the same number of epochs
    python benchmarks/channel_pruning.py train --data .devdata/cifar10-train-jpeg.tar.gz --out OUT
    # optional stage 1b (CPU is enough for resnet20): remove residual blocks first (depth pruning), chosen by
    # validation top-1 lost per ms of ONNX Runtime batch-32 latency saved, then channel-prune to the same MACs
    # budget and fine-tune the same way; adds <model>_depth.pt to the run
    python benchmarks/channel_pruning.py depth --data .devdata/cifar10-train-jpeg.tar.gz --runs-dir OUT --blocks 2
    # stage 2 (this CPU): ONNX Runtime latency of every checkpoint at batch 1 and 32, all in one run; writes
    # benchmarks/results/channel_pruning.json
    python benchmarks/channel_pruning.py measure --runs-dir OUT

Stage 1 writes ``<model>_{base,pruned,width}.pt`` (lightnn checkpoints; the pruned one rebuilds from its
"channels" transform) and ``results.json`` (accuracies, MACs, the sensitivity analysis and the plan).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import interleaved  # noqa: E402
from records import col, make_record, render, start, table, write_record  # noqa: E402
from lightnn import create_model  # noqa: E402
from lightnn.checkpoint import load_model, save_checkpoint  # noqa: E402
from lightnn.compress.channel import prune_channels, verify_shrink  # noqa: E402
from lightnn.compress.sensitivity import count_macs, plan_ratios, plot_sensitivity, sensitivity_analysis  # noqa: E402
from lightnn.models import model_normalization, record_update  # noqa: E402
from lightnn.utils.io import atomic_write_json  # noqa: E402

# name, width argument, candidate widths for the equal-MACs uniform baseline, baseline epochs, fine-tune epochs
MODELS = [
    ("resnet20", "width", [8, 9, 10, 11, 12, 13, 14, 16], 20, 10),
    ("mobilenet_v2_cifar", "width_mult", [0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 1.0], 8, 4),
]
RATIOS = (0.25, 0.5, 0.75)


def train_stage(args: argparse.Namespace) -> None:
    from lightnn.data import load_dataset
    from lightnn.train import Distillation, TrainConfig, evaluate, fit

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    train = load_dataset(args.data, "train")
    val = load_dataset(args.data, "val")
    if args.limit:  # smoke runs
        train, val = train.subset(torch.arange(args.limit)), val.subset(torch.arange(min(len(val), args.limit)))
    print(f"train {len(train)} val {len(val)} on {dev}", flush=True)
    results = {"device": torch.cuda.get_device_name() if dev == "cuda" else platform.processor(),
               "torch": torch.__version__, "models": {}}
    x = torch.randn(1, 3, 32, 32)
    for name, wkey, widths, base_ep, ft_ep in MODELS[: args.models]:
        base_ep = int(base_ep * args.epoch_scale) or 1
        ft_ep = int(ft_ep * args.epoch_scale) or 1
        t0 = time.time()
        rec: dict = {"base_epochs": base_ep, "ft_epochs": ft_ep}
        given = Path(args.ckpt_dir) / f"{name}.pt" if args.ckpt_dir else None
        if given is not None and given.exists():
            model = load_model(given)
            rec["base_from"] = str(given.name)
            meta = torch.load(given, map_location="cpu", weights_only=True).get("meta", {})
            rec["base_epochs"] = base_ep = int(meta.get("epochs", meta.get("epoch", base_ep)))
            if meta.get("normalize"):
                record_update(model, normalize=meta["normalize"])
        else:
            torch.manual_seed(0)
            model = create_model(name, num_classes=10)
            fit(model, train, val, TrainConfig(epochs=base_ep, batch_size=256, lr=0.2, weight_decay=5e-4, device=dev,
                                               progress=False, verbose=False))
        model.to(dev).eval()
        norm = model_normalization(model)

        def acc(m: torch.nn.Module) -> float:
            return evaluate(m, val, batch_size=1000, device=dev)["top1"]

        rec["base_top1"] = acc(model)
        rec["base_time_s"] = time.time() - t0
        print(name, "base", rec["base_top1"], flush=True)
        xd = x.to(dev)
        t1 = time.time()
        sens = sensitivity_analysis(model, xd, acc, RATIOS, criterion="l1")
        plan = plan_ratios(model, xd, sens, target_macs=args.target_macs)
        rec["sens_time_s"] = time.time() - t1
        rec["plan"] = plan
        rec["sens"] = sens
        pruned = prune_channels(model, xd, plan["ratios"], criterion="l1")
        rec["verify_max_diff"] = verify_shrink(model, pruned, xd)
        rec["pruned_top1_noft"] = acc(pruned)
        t2 = time.time()
        fit(pruned, train, val, TrainConfig(epochs=ft_ep, batch_size=256, lr=0.02, weight_decay=5e-4, device=dev,
                                            progress=False, verbose=False, mean=norm["mean"] if norm else None,
                                            std=norm["std"] if norm else None),
            callbacks=[Distillation(model, weight=0.5)])
        rec["ft_time_s"] = time.time() - t2
        rec["pruned_top1"] = acc(pruned)
        print(name, "pruned", rec["pruned_top1_noft"], "->", rec["pruned_top1"], flush=True)
        m0 = count_macs(model.cpu(), x)
        m1 = count_macs(pruned.cpu(), x)
        rec["macs"] = {"base": m0, "pruned": m1}
        # uniform width scaling: the width whose MACs are closest to the pruned model's, from scratch
        cands = [(abs(count_macs(create_model(name, num_classes=10, **{wkey: w}), x) - m1), w) for w in widths]
        w = min(cands)[1]
        torch.manual_seed(0)
        wm = create_model(name, num_classes=10, **{wkey: w})
        rec["width"] = {wkey: w, "epochs": base_ep + ft_ep}
        rec["macs"]["width"] = count_macs(wm, x)
        t3 = time.time()
        fit(wm, train, val, TrainConfig(epochs=base_ep + ft_ep, batch_size=256, lr=0.2, weight_decay=5e-4,
                                        device=dev, progress=False, verbose=False))
        rec["width_time_s"] = time.time() - t3
        rec["width_top1"] = acc(wm)
        print(name, "width", w, rec["width_top1"], flush=True)
        for tag, m in (("base", model), ("pruned", pruned), ("width", wm)):
            meta = {"top1": rec[f"{tag}_top1"], "normalize": model_normalization(m) or norm}
            save_checkpoint(out / f"{name}_{tag}.pt", m.cpu(), meta=meta)
        results["models"][name] = rec
        atomic_write_json(out / "results.json", results)


def depth_stage(args: argparse.Namespace) -> None:
    """Blocks out, then channels, to the run's MACs budget; fine-tuned like the channel-pruned model."""
    from lightnn.compress.depth import block_sensitivity, remove_blocks, removable_blocks
    from lightnn.data import load_dataset
    from lightnn.export.onnx import export_onnx
    from lightnn.runtime.ort import OrtSession
    from lightnn.train import Distillation, TrainConfig, evaluate, fit

    runs_dir = Path(args.runs_dir)
    res = json.loads((runs_dir / "results.json").read_text())
    name = args.model
    rec = res["models"][name]
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    if dev == "cpu":
        torch.set_num_threads(args.threads)
    train, val = load_dataset(args.data, "train"), load_dataset(args.data, "val")
    model = load_model(runs_dir / f"{name}_base.pt").eval()
    norm = model_normalization(model) or torch.load(
        runs_dir / f"{name}_base.pt", map_location="cpu", weights_only=True).get("meta", {}).get("normalize")
    mean, std = (norm["mean"], norm["std"]) if norm else (None, None)

    def acc(m: torch.nn.Module) -> float:
        return evaluate(m.to(dev), val, batch_size=1000, device=dev, mean=mean, std=std)["top1"]

    def lat32(m: torch.nn.Module, tag: str) -> float:
        path = export_onnx(m.cpu().eval(), Path(args.tmp) / f"{name}_{tag}.onnx", input_size=(3, 32, 32))
        return OrtSession(path, threads=1).latency(32, warmup=3, runs=15, input_size=(3, 32, 32)).median_ms

    Path(args.tmp).mkdir(parents=True, exist_ok=True)
    x = torch.randn(1, 3, 32, 32)
    t0 = time.time()
    base_top1 = acc(model)
    blocks = removable_blocks(model, x)
    top1 = block_sensitivity(model, blocks, acc)
    base_ms = lat32(model, "depth_probe_base")
    ms = block_sensitivity(model, blocks, lambda m: lat32(m, "depth_probe"))
    # top-1 lost per ms saved, smallest first: the cheapest way to buy latency
    cost = {b: max(base_top1 - top1[b], 0.0) / max(base_ms - ms[b], 1e-3) for b in blocks}
    chosen = args.names.split(",") if args.names else sorted(blocks, key=cost.get)[: args.blocks]
    shallow = remove_blocks(model, chosen, x)
    m0 = count_macs(model.cpu(), x)
    scale = m0 / count_macs(shallow, x)
    target = rec["macs"]["pruned"] / m0 * scale  # the channel-pruned model's MACs, relative to the shallow model
    print(f"removed {chosen}: top-1 {acc(shallow):.2f}%, channel budget {target:.1%} of the shallow model", flush=True)
    sens = sensitivity_analysis(shallow.to(dev), x.to(dev), acc, RATIOS, criterion="l1")
    plan = plan_ratios(shallow.cpu(), x, sens, target_macs=min(target, 0.999))
    pruned = prune_channels(shallow.cpu(), x, plan["ratios"], criterion="l1")
    verify = verify_shrink(shallow, pruned, x)
    noft = acc(pruned)
    t1 = time.time()
    ft_ep = args.epochs or rec["ft_epochs"]
    fit(pruned, train, val, TrainConfig(epochs=ft_ep, batch_size=256, lr=args.lr, weight_decay=5e-4, device=dev,
                                        progress=False, verbose=True, mean=mean, std=std),
        callbacks=[Distillation(model, weight=args.kd_weight)])
    rec["depth"] = {"removed": chosen, "block_top1": top1, "block_b32_ms": ms, "base_b32_ms": base_ms,
                    "plan": plan, "verify_max_diff": verify, "top1_noft": noft, "ft_epochs": ft_ep,
                    "ft_lr": args.lr, "kd_weight": args.kd_weight,
                    "ft_time_s": time.time() - t1, "select_time_s": t1 - t0, "device": dev}
    rec["depth_top1"] = acc(pruned)
    rec["macs"]["depth"] = count_macs(pruned.cpu(), x)
    print(f"depth + channels: {rec['macs']['depth'] / m0:.1%} MACs, top-1 {noft:.2f}% -> {rec['depth_top1']:.2f}%",
          flush=True)
    save_checkpoint(runs_dir / f"{name}_depth.pt", pruned.cpu(), meta={"top1": rec["depth_top1"], "normalize": norm})
    atomic_write_json(runs_dir / "results.json", res)


def adopt_stage(args: argparse.Namespace) -> None:
    """Add a model pruned by ``lightnn compress --method channels`` and fine-tuned elsewhere (e.g. on this CPU).

    Every checkpoint is evaluated again here on the same 5k validation split with the baseline's normalization, so
    the row's accuracies come from one evaluation function whichever machine trained the model.
    """
    from lightnn.data import load_dataset
    from lightnn.train import evaluate

    torch.set_num_threads(args.threads)
    runs_dir = Path(args.runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    res_path = runs_dir / "results.json"
    res = json.loads(res_path.read_text()) if res_path.exists() else {
        "device": platform.processor() or platform.machine(), "torch": torch.__version__, "models": {}}
    report = json.loads((Path(args.compress_dir) / "report.json").read_text())
    if report.get("method") != "channels":
        raise SystemExit(f"{args.compress_dir}/report.json: method is {report.get('method')!r}, expected 'channels'")
    val = load_dataset(args.data, "val")
    ckpts = {"base": Path(args.base), "pruned": Path(args.pruned), "width": Path(args.width)}
    if args.retrained:
        if not args.retrain_epochs:
            raise SystemExit("--retrained needs --retrain-epochs")
        ckpts["retrain"] = Path(args.retrained)
    models = {tag: load_model(p).eval() for tag, p in ckpts.items()}
    norm = torch.load(ckpts["base"], map_location="cpu", weights_only=True).get("meta", {}).get("normalize")
    mean, std = (norm["mean"], norm["std"]) if norm else (None, None)
    x = torch.randn(1, 3, 32, 32)
    top1 = {tag: evaluate(m, val, batch_size=500, device="cpu", mean=mean, std=std)["top1"]
            for tag, m in models.items()}
    noft_path = Path(args.compress_dir) / "model.pt"  # the pruned model before fine-tuning, on the same 5k images
    noft = evaluate(load_model(noft_path).eval(), val, batch_size=500, device="cpu", mean=mean,
                    std=std)["top1"] if noft_path.exists() else report["top1"]["pruned"]
    macs = {tag: count_macs(m, x) for tag, m in models.items()}
    wkey, width = args.width_arg.split("=")
    base_meta = torch.load(ckpts["base"], map_location="cpu", weights_only=True).get("meta", {})
    rec = {"base_epochs": int(base_meta.get("epoch", 0)), "ft_epochs": args.ft_epochs, "base_from": ckpts["base"].name,
           "base_top1": top1["base"], "pruned_top1": top1["pruned"], "width_top1": top1["width"],
           "pruned_top1_noft": noft, "plan": report["plan"], "sens": report["sensitivity"],
           "verify_max_diff": report["verify_max_diff"], "macs": macs,
           "width": {wkey: int(width) if width.isdigit() else float(width), "epochs": args.width_epochs}, "device": args.device,
           "adopted_from": {tag: str(p) for tag, p in ckpts.items()}}
    if args.retrained:
        # the same pruned model retrained with the from-scratch recipe (learning-rate rewinding)
        rec["retrain_top1"] = top1["retrain"]
        rec["retrain"] = {"epochs": args.retrain_epochs, "recipe": args.retrain_recipe}
    for tag, m in models.items():
        save_checkpoint(runs_dir / f"{args.model}_{tag}.pt", m, meta={"top1": top1[tag], "normalize": norm})
    res["models"][args.model] = rec
    atomic_write_json(res_path, res)
    print(f"{args.model}: base {top1['base']:.2f}%, pruned {top1['pruned']:.2f}% "
          f"({macs['pruned'] / macs['base']:.1%} MACs), width {args.width_arg} {top1['width']:.2f}% "
          f"({macs['width'] / macs['base']:.1%} MACs)", flush=True)


def _interleaved(paths: dict[str, Path], batch: int, rounds: int, runs: int, threads: int) -> dict[str, list[float]]:
    """Per-round burst medians (ms) of each ONNX model at ``batch``, rounds interleaved so drift hits all alike."""
    from lightnn.runtime.ort import OrtSession

    calls = {}
    for k, p in paths.items():
        sess = OrtSession(p, threads=threads)
        calls[k] = sess.bind(sess.random_input(batch, (3, 32, 32)))
    return interleaved(calls, repeats=rounds, runs=runs, warmup=3)


def _iqr(v: list[float]) -> float:
    q = statistics.quantiles(v, n=4) if len(v) > 1 else [v[0]] * 3
    return q[2] - q[0]


COLUMNS = [col("model"), col("variant"), col("MACs (M)", "{value:.1f}", "M", "r"),
           col("params (k)", "{value:.0f}", "k", "r"), col("top-1 (%)", "{value:.2f}", "%", "r"),
           col("Δ top-1", "{value:+.2f}", "points", "r"), col("b1 ms (IQR)", "{median:.3f} ({iqr:.3f})", "ms", "r"),
           col("b1 speed-up", "{value:.2f}x", "x", "r"), col("b32 ms (IQR)", "{median:.3f} ({iqr:.3f})", "ms", "r"),
           col("b32 speed-up", "{value:.2f}x", "x", "r")]


def sensitivity_part(sens: dict) -> dict:
    """The sensitivity analysis as a table: the metric after pruning each group alone, and its drop."""
    cols = [col("group"), col("channels", "{value}", "channels", "r")] + [
        col(f"prune {r:.0%}", "{value:.2f} ({delta:+.2f})", "%", "r") for r in sens["ratios"]]
    rows = [[name, g["channels"]] + [{"value": m, "delta": m - sens["baseline"]} for m in g["metric"]]
            for name, g in sens["groups"].items()]
    return table("sensitivity", cols, rows)


def measure_stage(args: argparse.Namespace) -> None:
    from lightnn.export.onnx import export_onnx

    torch.set_num_threads(args.threads)
    ctx = start(args.threads, "onnxruntime")
    runs_dir = Path(args.runs_dir)
    res = json.loads((runs_dir / "results.json").read_text())
    tmp = Path(args.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    lat, params = {}, {}
    for name, rec in res["models"].items():
        tags = ("base", "pruned", "width") + tuple(t for t in ("depth", "retrain") if t in rec)
        models = {tag: load_model(runs_dir / f"{name}_{tag}.pt") for tag in tags}
        params[name] = {tag: sum(p.numel() for p in m.parameters()) for tag, m in models.items()}
        paths = {tag: export_onnx(m, tmp / f"{name}_{tag}.onnx", input_size=(3, 32, 32)) for tag, m in models.items()}
        lat[name] = {b: _interleaved(paths, b, args.rounds, args.runs if b == 1 else max(5, args.runs // 3),
                                     args.threads) for b in (1, 32)}
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    resnet = next((n for n in res["models"] if n.startswith("resnet")), None)
    if resnet:
        sens = res["models"][resnet]["sens"]
        plot_sensitivity(sens, results / SENS_PNG, title=f"{resnet} CIFAR-10: each channel group pruned alone (L1)")
    out = pruning_record(res, lat, params, args.rounds, args.runs, args.threads, args.note, ctx)
    print(render(out))
    print("wrote", write_record(out, results))


SENS_PNG = "channel_pruning_sensitivity_resnet.png"


def _variants(rec: dict) -> list[tuple[str, str]]:
    rows = [("base", "baseline"),
            ("pruned", f"channel-pruned ({rec['macs']['pruned'] / rec['macs']['base']:.0%} MACs) + KD fine-tune")]
    if "depth" in rec:
        rows.append(("depth", f"{len(rec['depth']['removed'])} blocks removed + channel-pruned "
                              f"({rec['macs']['depth'] / rec['macs']['base']:.0%} MACs) + KD fine-tune"))
    if "retrain" in rec:
        rows.append(("retrain", f"channel-pruned ({rec['macs']['retrain'] / rec['macs']['base']:.0%} MACs) + "
                                "retrained (LR rewinding)"))
    rows.append(("width", "uniform " + ", ".join(f"{k}={v}" for k, v in rec["width"].items() if k != "epochs")))
    return rows


def pruning_record(res: dict, lat: dict, params: dict, rounds: int, runs: int, threads: int, notes: list[str],
                   ctx: dict) -> dict:
    """The section's record from the run's ``results.json`` (``res``), each model's per-round latencies (ms) by
    batch and tag (``lat[name][batch][tag]``) and parameter counts by tag; ``ctx`` from :func:`records.start`."""
    rows: list[list] = []
    checks: list[str] = []
    for name, rec in res["models"].items():
        med = {b: {tag: statistics.median(v) for tag, v in lat[name][b].items()} for b in (1, 32)}
        for tag, label in _variants(rec):
            top1 = rec[f"{tag}_top1"]
            cells = []
            for b in (1, 32):
                cells += [{"median": med[b][tag], "iqr": _iqr(lat[name][b][tag])}, med[b]["base"] / med[b][tag]]
            rows.append([name, label, rec["macs"][tag] / 1e6, params[name][tag] / 1e3, top1, top1 - rec["base_top1"],
                         *cells])
        sp32_w = med[32]["base"] / med[32]["width"]

        def verdict(tag: str, head: str, named: bool) -> str:
            """One pruned variant against the issue's targets and the width baseline, from the table's numbers."""
            drop = rec["base_top1"] - rec[f"{tag}_top1"]
            sp32 = med[32]["base"] / med[32][tag]
            acc_ok, speed_ok = ("met" if drop <= 1 else "NOT met"), ("met" if sp32 >= 1.5 else "NOT met")
            if named:
                acc_ok, speed_ok = f"target <= 1: {acc_ok}", f"target >= 1.5x: {speed_ok}"
            return (f"- {name} {head}: accuracy lost {drop:.2f} points ({acc_ok}); batch-32 speed-up {sp32:.2f}x "
                    f"({speed_ok}); vs width scaling: top-1 {rec[f'{tag}_top1'] - rec['width_top1']:+.2f} points, "
                    f"speed-up {sp32:.2f}x vs {sp32_w:.2f}x.")

        checks.append(verdict("pruned", "targets", True))
        if "depth" in rec:
            d = rec["depth"]
            checks.append(verdict("depth", f"blocks + channels (removed {', '.join(d['removed'])}, chosen by top-1 "
                                           f"lost per ms of batch-32 latency saved; fine-tuned {d['ft_epochs']} "
                                           f"epochs on {d['device']})", False))
        if "retrain" in rec:
            checks.append(verdict("retrain", f"pruned + retrained (the same pruned model, {rec['retrain']['epochs']} "
                                             f"epochs with {rec['retrain']['recipe']})", False))
    for name, rec in res["models"].items():
        checks.append(f"- {name}: baseline {rec['base_epochs']} epochs"
                      f"{' (' + rec['base_from'] + ')' if rec.get('base_from') else ''}, fine-tune {rec['ft_epochs']} "
                      f"epochs{' on ' + rec['device'] if rec.get('device') else ''}, width baseline "
                      f"{rec['width']['epochs']} epochs; pruned without fine-tuning {rec['pruned_top1_noft']:.2f}%; "
                      f"shrunk vs masked max |diff| {rec['verify_max_diff']:.1e}; plan tolerance "
                      f"{rec['plan']['tolerance']:.2f} points, "
                      f"{len(rec['plan']['ratios'])} groups pruned, MACs kept {rec['plan']['cost']:.1%}.")
    checks += [f"- {note}" for note in notes]
    intro = "\n".join([
        f"Training on {res['device']} (torch {res['torch']}) unless a model's notes say otherwise; latency on the "
        f"machine above: ONNX Runtime (BN folded, {threads} thread).",
        "Data: the CIFAR-10 JPEG training set split 45,000 train / 5,000 val (seed 0); top-1 on the 5k val.",
        "Pruning: L1 filter importance, per-group ratios planned from the sensitivity analysis for 50% of "
        "the MACs (channel counts multiples of 8), fine-tuned with the unpruned model as distillation "
        "teacher (KD weight 0.5, T 4). Width baseline: the registry's width argument giving the closest "
        "MACs, trained from scratch (epochs in each model's line below). Latency: median of per-round medians "
        f"over {rounds} interleaved rounds x {runs} runs (IQR over rounds); speed-up = "
        "baseline median / model median, same run."])
    parts = [{"text": intro}, table("main", COLUMNS, rows), {"text": "\n".join(checks)}]
    resnet = next((n for n in res["models"] if n.startswith("resnet")), None)
    if resnet:
        sens = res["models"][resnet]["sens"]
        parts += [{"text": f"Sensitivity of {resnet} (val top-1, each group pruned alone, no fine-tuning; plot: "
                           f"`{SENS_PNG}`):"}, {"text": f"baseline: {sens['baseline']:.2f}"}, sensitivity_part(sens)]
    return make_record("channel_pruning", "Structured channel pruning on CIFAR-10 vs uniform width scaling at equal "
                       "MACs", "python benchmarks/channel_pruning.py measure --runs-dir DIR", parts, level=1, **ctx)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="stage", required=True)
    t = sub.add_parser("train")
    t.add_argument("--data", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--ckpt-dir", default=None, help="folder with trained <model>.pt baselines to start from")
    t.add_argument("--target-macs", type=float, default=0.5)
    t.add_argument("--epoch-scale", type=float, default=1.0)
    t.add_argument("--models", type=int, default=len(MODELS))
    t.add_argument("--limit", type=int, default=0, help="use only this many train/val images (smoke runs)")
    d = sub.add_parser("depth")
    d.add_argument("--data", required=True)
    d.add_argument("--runs-dir", required=True)
    d.add_argument("--model", default="resnet20")
    d.add_argument("--blocks", type=int, default=2, help="how many residual blocks to remove")
    d.add_argument("--names", default=None, help="comma-separated block names to remove instead of choosing")
    d.add_argument("--epochs", type=int, default=0, help="fine-tune epochs (default: the run's)")
    d.add_argument("--lr", type=float, default=0.02, help="fine-tune peak learning rate (cosine schedule)")
    d.add_argument("--kd-weight", type=float, default=0.5, help="weight of distillation from the unpruned model")
    d.add_argument("--threads", type=int, default=2)
    d.add_argument("--tmp", default="/tmp/lightnn-channel-bench")
    a = sub.add_parser("adopt", help="add a model pruned with `lightnn compress --method channels` to a run")
    a.add_argument("--data", required=True)
    a.add_argument("--runs-dir", required=True)
    a.add_argument("--model", required=True)
    a.add_argument("--compress-dir", required=True, help="the `lightnn compress --output` folder (report.json)")
    a.add_argument("--base", required=True, help="the unpruned checkpoint")
    a.add_argument("--pruned", required=True, help="the pruned checkpoint after fine-tuning")
    a.add_argument("--width", required=True, help="the uniformly width-scaled checkpoint trained from scratch")
    a.add_argument("--width-arg", required=True, help="its width argument, e.g. width_mult=0.65")
    a.add_argument("--ft-epochs", type=int, required=True)
    a.add_argument("--width-epochs", type=int, required=True)
    a.add_argument("--retrained", default=None,
                   help="optional: the same pruned model retrained with the from-scratch recipe (LR rewinding)")
    a.add_argument("--retrain-epochs", type=int, default=0)
    a.add_argument("--retrain-recipe", default="the width baseline's from-scratch recipe",
                   help="how --retrained was trained, for the table's notes")
    a.add_argument("--device", default="cpu", help="where the fine-tuning and width training ran")
    a.add_argument("--threads", type=int, default=2)
    m = sub.add_parser("measure")
    m.add_argument("--runs-dir", required=True)
    m.add_argument("--tmp", default="/tmp/lightnn-channel-bench")
    m.add_argument("--threads", type=int, default=1)
    m.add_argument("--rounds", type=int, default=5)
    m.add_argument("--runs", type=int, default=30)
    m.add_argument("--note", action="append", default=[], help="a line added under the table (what this run did)")
    m.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results"),
                   help="where channel_pruning.json and the sensitivity plot go (default: benchmarks/results)")
    args = ap.parse_args(argv)
    {"train": train_stage, "depth": depth_stage, "adopt": adopt_stage, "measure": measure_stage}[args.stage](args)


if __name__ == "__main__":
    main()
