"""The latency model checked against end-to-end timings, on networks the table was not built from.

For each configuration (ONNX Runtime fp32 / int8, batch 1 / 32, 1 thread) a latency table
(:class:`lightnn.profile.LatencyTable`) is built from a *training set* of zoo networks: every unit measured alone,
each network timed end to end, the correction fitted on those timings. Then each network of a *validation set* (none
of them in the training set: width / depth variants of the CIFAR and ImageNet zoo families at small resolution,
channel-pruned zoo networks, random stage tables of ``ir_net`` drawn with a fixed seed) is predicted
(:func:`lightnn.profile.predict_latency`; units the table lacks are measured alone and added, the network itself is
never timed before it is predicted) and then timed end to end in the same run. Reported per configuration: the share
predicted within +-10%, Kendall's tau between prediction and measurement, and, on the same networks, the tau of
multiply-adds and of memory traffic (:func:`lightnn.profile.profile`) against measurement.

    python benchmarks/latency_model.py                          # the four configs (about 20 minutes on 2 cores)
    python benchmarks/latency_model.py --configs ort-b1 --quick --results-dir /tmp/lm   # a few networks
    python benchmarks/latency_model.py --resume                 # continue an interrupted run (same --work)

Tables and per-network results go to ``--work`` (default ``runs/latency_model``), saved after every network, so
``--resume`` continues where a run stopped; the record goes to ``--results-dir`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import _common  # noqa: E402,F401  (puts the repository on sys.path)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from records import col, make_record, start, table, write_record  # noqa: E402

import lightnn  # noqa: E402
from lightnn.errors import LightnnError  # noqa: E402
from lightnn.profile import LatencyTable, build_table, load_table, predict_latency, profile  # noqa: E402
from lightnn.utils.io import atomic_write_json  # noqa: E402

CONFIGS = {"ort-b1": ("onnxruntime", 1), "ort-b32": ("onnxruntime", 32), "int8-b1": ("onnxruntime-int8", 1),
           "int8-b32": ("onnxruntime-int8", 32)}
IMNET = 96  # ImageNet families at 96 x 96: their structure, a fraction of the time
# per batch size: (warmup, runs) of each table entry, and of each end-to-end timing
PROTOCOL = {1: {"unit": (3, 30), "e2e": 40}, 32: {"unit": (2, 15), "e2e": 20}}

# the training set: its end-to-end timings fit the correction ((name, kwargs, side))
TRAIN = [("resnet20", {}, 32), ("resnet32", {}, 32), ("mobilenet_v2_cifar", {}, 32), ("mobilenet_v1_cifar", {}, 32),
         ("shufflenet_v2_cifar", {}, 32), ("shufflenet_v1_cifar", {}, 32), ("mnasnet_cifar", {}, 32),
         ("mobilenet_v3_small_cifar", {}, 32), ("mobilenet_v3_large_cifar", {}, 32), ("igcv3_cifar", {}, 32),
         ("alexnet_small_cifar", {}, 32), ("mobilenet_v2", {}, IMNET), ("mobilenet_v3_small", {}, IMNET),
         ("mobilenet_v3_large", {}, IMNET), ("shufflenet_v2_x0_5", {}, IMNET), ("shufflenet_v2_x1_0", {}, IMNET),
         ("mnasnet0_5", {}, IMNET), ("mnasnet1_0", {}, IMNET), ("mobilenet_v1_050", {}, IMNET)]

# validation: width / depth variants (no network of TRAIN), then pruned and random networks are added
VARIANTS = ([("resnet20", {"width": w}, 32) for w in (8, 12, 24)] + [("resnet44", {}, 32), ("resnet56", {}, 32)]
            + [("mobilenet_v2_cifar", {"width_mult": w}, 32) for w in (0.5, 0.75, 1.25)]
            + [("mobilenet_v1_cifar", {"width_mult": w}, 32) for w in (0.5, 0.75)]
            + [("shufflenet_v2_cifar", {"width_mult": w}, 32) for w in (0.5, 1.5)]
            + [("mnasnet_cifar", {"width_mult": w}, 32) for w in (0.5, 0.75)]
            + [("mobilenet_v3_small_cifar", {"width_mult": w}, 32) for w in (0.75, 1.25)]
            + [("mobilenet_v3_large_cifar", {"width_mult": 0.75}, 32), ("igcv3_cifar", {"width_mult": 0.5}, 32)]
            + [("mobilenet_v2", {"width_mult": w}, IMNET) for w in (0.5, 0.75, 1.4)]
            + [("mobilenet_v3_small", {"width_mult": w}, IMNET) for w in (0.75, 1.25)]
            + [("mobilenet_v3_large", {"width_mult": 0.75}, IMNET), ("mnasnet0_75", {}, IMNET), ("mnasnet1_3", {}, IMNET),
               ("shufflenet_v2_x1_5", {}, IMNET), ("mobilenet_v1_025", {}, IMNET), ("mobilenet_v1_075", {}, IMNET)])
PRUNED = [("resnet20", 32, 0.25), ("resnet20", 32, 0.5), ("mobilenet_v2_cifar", 32, 0.3),
          ("mobilenet_v2_cifar", 32, 0.5), ("mobilenet_v1_cifar", 32, 0.5), ("resnet32", 32, 0.4),
          ("mobilenet_v2", IMNET, 0.4), ("mnasnet1_0", IMNET, 0.3)]
N_RANDOM = 14
QUICK = {"train": 4, "variants": 3, "pruned": 1, "random": 2}


def _zoo(name: str, kwargs: dict, side: int):
    torch.manual_seed(0)
    model = lightnn.create_model(name, num_classes=10 if side == 32 else 1000, **kwargs).eval()
    label = name + "".join(f"-{k}{v}" for k, v in kwargs.items()) + ("" if side == 32 else f"@{side}")
    return label, model, (3, side, side)


def _pruned(name: str, side: int, ratio: float):
    from lightnn.compress import prune_channels

    label, model, size = _zoo(name, {}, side)
    pruned = prune_channels(model, torch.randn(1, *size), ratio, round_to=8).eval()
    return f"{label}-pruned{int(ratio * 100)}", pruned, size


def random_table(rng: random.Random) -> list[dict]:
    """A random ir_net stage table: 3 to 6 rows, MnasNet-style choices per row."""
    rows, chs = [], 16
    for i in range(rng.randint(3, 6)):
        chs = max(chs, rng.choice([16, 24, 32, 40, 48, 64, 80, 96]))
        op = rng.choice(["ir", "ir", "ir", "ds"]) if i else "ds"
        row = {"expansion": rng.choice([3, 4, 6]) if op == "ir" else 1, "channels": chs, "op": op,
               "repeats": rng.randint(1, 3), "stride": 2 if i in (1, 3) else rng.choice([1, 1, 2]) if i > 3 else 1,
               "kernel": rng.choice([3, 5]), "se": rng.choice([0, 0, 0.25])}
        rows.append(row)
    return rows


def _random_nets(n: int, seed: int = 0):
    rng = random.Random(seed)
    for j in range(n):
        side = 32 if j % 2 == 0 else IMNET
        table_rows = random_table(rng)
        torch.manual_seed(j)
        model = lightnn.create_model("ir_net", table=table_rows, num_classes=10, head_chs=rng.choice([256, 512, 1024]),
                                     width_mult=rng.choice([0.5, 0.75, 1.0])).eval()
        yield f"random{j}@{side}", model, (3, side, side)


def networks(quick: bool):
    """(training networks, validation networks) as lists of (label, model, (C, H, W))."""
    q = QUICK if quick else None
    train = [_zoo(*t) for t in (TRAIN[: q["train"]] if q else TRAIN)]
    val = [_zoo(*t) for t in (VARIANTS[: q["variants"]] if q else VARIANTS)]
    val += [_pruned(*p) for p in (PRUNED[: q["pruned"]] if q else PRUNED)]
    val += list(_random_nets(q["random"] if q else N_RANDOM))
    names = {t[0] for t in train}
    assert not names & {v[0] for v in val}, "a validation network is in the training set"
    return train, val


def kendall_tau(a, b) -> float:
    """Kendall's tau-b (ties in either ranking count for neither pair direction)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    da = np.sign(a[:, None] - a[None, :])
    db = np.sign(b[:, None] - b[None, :])
    iu = np.triu_indices(len(a), 1)
    da, db = da[iu], db[iu]
    denom = np.sqrt(np.count_nonzero(da) * np.count_nonzero(db))
    return float((da * db).sum() / denom) if denom else float("nan")


def _table(cfg: str, work: Path, resume: bool) -> LatencyTable:
    backend, batch = CONFIGS[cfg]
    path = work / f"{cfg}.json"
    if resume and path.exists():
        return load_table(path)
    warmup, runs = PROTOCOL[batch]["unit"]
    return LatencyTable.create(backend, threads=1, batch=batch, path=path, warmup=warmup, runs=runs, retries=1)


def validate(table: LatencyTable, val: list, done: dict, out: Path) -> dict:
    """Predict, then time end to end, each validation network not yet in ``done`` (saved after each one)."""
    from tqdm import tqdm

    e2e = PROTOCOL[table.batch]["e2e"]
    for label, model, size in tqdm(val, desc=f"validation ({table.backend}, batch {table.batch})", unit="net"):
        if label in done:
            continue
        pred = predict_latency(model, size, table)
        meas = table.measure_model(model, size, runs=e2e)
        rep = profile(model, (table.batch, *size))
        done[label] = {"predicted_ms": pred.total_ms, "raw_ms": pred.raw_ms, "ms": meas.median_ms,
                       "iqr_ms": meas.iqr_ms, "macs": rep.macs, "memory_bytes": rep.memory_bytes,
                       "units_measured": pred.measured, "input": list(size)}
        atomic_write_json(out, done)
    # the measurement's own reproducibility: every network timed again, minutes after its first timing (on a shared
    # machine the load changes between the two); no prediction can agree with a timing better than a second timing
    for label, model, size in tqdm(val, desc=f"repeat timing ({table.backend}, batch {table.batch})", unit="net"):
        if "repeat_ms" not in done[label]:
            done[label]["repeat_ms"] = table.measure_model(model, size, runs=e2e).median_ms
            atomic_write_json(out, done)
    return done


def summarize(cfg: str, table: LatencyTable, done: dict, seconds: float) -> dict:
    names = sorted(done)
    pred = np.array([done[n]["predicted_ms"] for n in names])
    meas = np.array([done[n]["ms"] for n in names])
    err = pred / meas - 1.0
    again = np.array([done[n]["repeat_ms"] for n in names])
    return {"config": cfg, "backend": table.backend, "batch": table.batch, "train": len(table.end_to_end),
            "validation": len(names), "within10": float(np.mean(np.abs(err) <= 0.10) * 100),
            "tau_pred": kendall_tau(pred, meas), "tau_macs": kendall_tau([done[n]["macs"] for n in names], meas),
            "tau_memory": kendall_tau([done[n]["memory_bytes"] for n in names], meas),
            "repeat_within10": float(np.mean(np.abs(again / meas - 1.0) <= 0.10) * 100),
            "tau_repeat": kendall_tau(again, meas),
            "median_abs_err": float(np.median(np.abs(err)) * 100), "max_abs_err": float(np.max(np.abs(err)) * 100),
            "entries": len(table), "flagged": sum(1 for e in table.entries.values() if e.get("flagged")),
            "fit_err": table.correction["rel_error_median"] * 100 if table.correction else None,
            "seconds": seconds}


def run_config(cfg: str, train: list, val: list, work: Path, resume: bool) -> tuple[dict, dict]:
    t0 = time.perf_counter()
    table = _table(cfg, work, resume)
    build_table(table, train, progress=True, e2e_runs=PROTOCOL[table.batch]["e2e"],
                log=lambda s: print(f"{cfg}: {s}", flush=True))
    out = work / f"{cfg}-validation.json"
    done = json.loads(out.read_text()) if resume and out.exists() else {}
    validate(table, val, done, out)
    table.save()
    clock = work / f"{cfg}-seconds.json"  # time spent over every (resumed) part of the run
    seconds = (json.loads(clock.read_text()) if resume and clock.exists() else 0.0) + time.perf_counter() - t0
    atomic_write_json(clock, seconds)
    summary = summarize(cfg, table, done, seconds)
    print(f"{cfg}: {summary['within10']:.0f}% within +-10%, tau {summary['tau_pred']:.3f} (MACs "
          f"{summary['tau_macs']:.3f}, memory {summary['tau_memory']:.3f}; a second timing: "
          f"{summary['repeat_within10']:.0f}% within +-10%, tau {summary['tau_repeat']:.3f}), "
          f"{summary['seconds']:.0f} s", flush=True)
    return summary, done


SUMMARY_COLUMNS = [col("config"), col("batch", "{value}", None, "r"), col("training nets", "{value}", None, "r"),
                   col("validation nets", "{value}", None, "r"),
                   col("within +-10%", "{value:.0f}%", "%", "r"), col("Kendall tau, prediction", "{value:.3f}", None, "r"),
                   col("tau, MACs", "{value:.3f}", None, "r"), col("tau, memory traffic", "{value:.3f}", None, "r"),
                   col("second timing within +-10%", "{value:.0f}%", "%", "r"),
                   col("tau, second timing", "{value:.3f}", None, "r"),
                   col("median abs. error", "{value:.1f}%", "%", "r"), col("max abs. error", "{value:.0f}%", "%", "r"),
                   col("table entries (flagged)"), col("minutes", "{value:.1f}", "min", "r")]


def _summary_row(s: dict) -> list:
    return [s["config"], s["batch"], s["train"], s["validation"], s["within10"], s["tau_pred"], s["tau_macs"],
            s["tau_memory"], s["repeat_within10"], s["tau_repeat"], s["median_abs_err"], s["max_abs_err"], f"{s['entries']} ({s['flagged']})",
            s["seconds"] / 60]


def _error_table(configs: list[str], per: dict) -> dict:
    names = sorted(set().union(*(per[c] for c in configs)))
    cols = [col("validation network"), col("MACs (M)", "{value:.1f}", "M", "r")] + [
        col(f"{c}: measured ms, median (IQR)", "{median:.3f} ({iqr:.3f})", "ms", "r") for c in configs] + [
        col(f"{c}: error", "{value:+.1f}%", "%", "r") for c in configs] + [
        col(f"{c}: second timing", "{value:+.1f}%", "%", "r") for c in configs]
    rows = []
    for n in names:
        any_c = next(per[c][n] for c in configs if n in per[c])
        row = [n, any_c["macs"] / 1e6 / CONFIGS[next(c for c in configs if n in per[c])][1]]
        row += [{"median": per[c][n]["ms"], "iqr": per[c][n]["iqr_ms"]} if n in per[c] else None for c in configs]
        row += [(per[c][n]["predicted_ms"] / per[c][n]["ms"] - 1) * 100 if n in per[c] else None for c in configs]
        row += [(per[c][n]["repeat_ms"] / per[c][n]["ms"] - 1) * 100 if n in per[c] else None for c in configs]
        rows.append(row)
    return table("networks", cols, rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["int8-b1", "int8-b32", "ort-b1", "ort-b32"],
                    choices=sorted(CONFIGS))
    ap.add_argument("--quick", action="store_true", help=f"a few networks ({QUICK}), to check the script works")
    ap.add_argument("--work", default=str(_common.ROOT / "runs" / "latency_model"),
                    help="tables and per-network results (default runs/latency_model)")
    ap.add_argument("--resume", action="store_true", help="continue the run in --work")
    ap.add_argument("--results-dir", default=None, help="where the record goes (default benchmarks/results)")
    args = ap.parse_args()
    work = Path(args.work) / ("quick" if args.quick else "full")
    work.mkdir(parents=True, exist_ok=True)
    ctx = start(1, "onnxruntime")
    print(f"CPU: {ctx['machine']['cpu']}; ISA: {' '.join(ctx['machine']['isa'] or [])}; {ctx['date']}", flush=True)
    torch.set_num_threads(1)
    train, val = networks(args.quick)
    print(f"{len(train)} training networks, {len(val)} validation networks", flush=True)
    summaries, per = [], {}
    for cfg in args.configs:
        s, per[cfg] = run_config(cfg, train, val, work, args.resume)
        summaries.append(s)
    write(args, ctx, summaries, per, len(train), len(val))


def write(args, ctx: dict, summaries: list, per: dict, n_train: int, n_val: int) -> None:
    cmd = "python benchmarks/latency_model.py" + (" --quick" if args.quick else "") + (
        f" --configs {' '.join(args.configs)}" if args.configs != ["int8-b1", "int8-b32", "ort-b1", "ort-b32"] else "")
    text = (f"A latency table per configuration (ONNX Runtime fp32 / int8, 1 thread) built from {n_train} zoo "
            f"networks (every unit timed alone; their end-to-end timings fit the correction), checked on {n_val} "
            "other networks (width / depth variants of the CIFAR and ImageNet zoo families, ImageNet ones at "
            f"{IMNET} x {IMNET}; channel-pruned zoo networks; random ir_net stage tables, seed 0), each predicted "
            "and then timed end to end in the same run. Kendall's tau of MACs and of memory traffic against the "
            "same measurements is the baseline a latency model must beat. Each network is timed a second time after "
            "all of them were timed once: how often that second timing lands within +-10% of the first is the "
            "ceiling any predictor meets on this machine." + (" Quick run: a few networks only."
                                                                                if args.quick else ""))
    parts = [{"text": text}, table("summary", SUMMARY_COLUMNS, [_summary_row(s) for s in summaries]),
             _error_table(args.configs, per)]
    rec = make_record("latency_model", "Latency model: predicted vs measured end to end", cmd, parts, **ctx)
    rec["data"] = {"summaries": summaries}
    path = write_record(rec, args.results_dir)
    print(f"wrote {path}")


if __name__ == "__main__":
    try:
        main()
    except LightnnError as e:
        raise SystemExit(f"latency_model: error: {e}")
