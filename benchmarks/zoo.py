"""The model zoo on this CPU: params, multiply-adds, memory traffic, eager latency at batch 1 and 32, MACs per ms;
and MobileNet V1's resources per layer type next to the paper's Table 2.

Every registered ImageNet-size model (input side >= 128) is built once and kept in memory; latency is measured
(PyTorch eager, NCHW, one intra-op thread, ``torch.inference_mode``, the computing thread's CPU time) in rounds:
each round times a short burst of every model in turn, so all models see the same machine conditions, and each speed is also given as a ratio against the named reference (``mobilenet_v2``) repeat by repeat. Batch 32 is
measured only for models up to ``--b32-max-gmacs`` multiply-adds per image (the others would take minutes per
run on this 2-core machine; their cells say "skipped").

    python benchmarks/zoo.py                # writes benchmarks/results/zoo.json (about 10 minutes)
    python benchmarks/zoo.py --quick        # 2 rounds, a few models: smoke run
"""

from __future__ import annotations

import argparse

import _common  # noqa: F401  (puts the repository on sys.path)
import torch
from _common import interleaved, ratio_stats, stats
from records import col, make_record, render, start, table, write_record

import lightnn
from lightnn.profile import profile

REFERENCE = "mobilenet_v2"

# Published multiply-adds (M) to compare with: "tv" = torchvision's `_ops` weights metadata, otherwise the paper's
# table named.
PUBLISHED_MACS = {
    "mobilenet_v1": (569, "MobileNet V1 T6"), "mobilenet_v1_075": (325, "MobileNet V1 T6"),
    "mobilenet_v1_050": (149, "MobileNet V1 T6"), "mobilenet_v1_025": (41, "MobileNet V1 T6"),
    "mobilenet_v2": (301, "tv"), "mobilenet_v3_large": (217, "tv"), "mobilenet_v3_small": (57, "tv"),
    "shufflenet_v2_x0_5": (41, "ShuffleNet V2 T5"), "shufflenet_v2_x1_0": (146, "ShuffleNet V2 T5"),
    "shufflenet_v2_x1_5": (299, "ShuffleNet V2 T5"), "shufflenet_v2_x2_0": (591, "ShuffleNet V2 T5"),
    "shufflenet_v1": (140, "ShuffleNet V2 T8, 1x g=3"), "mnasnet0_5": (104, "tv"), "mnasnet0_75": (215, "tv"),
    "mnasnet1_0": (314, "tv"), "mnasnet1_3": (526, "tv"), "mnasnet_a1": (312, "MnasNet"),
    "inception_v3": (5713, "tv"), "resnet18": (1814, "tv"), "resnet34": (3664, "tv"), "resnet50": (4089, "tv"),
    "alexnet": (714, "tv"), "vgg16": (15300, "MobileNet V1 T8"),
    "igcv2_0_25": (46, "ShuffleNet V2 T8"), "igcv2_0_5": (156, "ShuffleNet V2 T8"),
    "igcv2_1_0": (564, "ShuffleNet V2 T8"), "igcv3_070": (210, "ShuffleNet V2 T8"),
    "igcv3_100": (318, "ShuffleNet V2 T8"), "igcv3_140": (610, "ShuffleNet V2 T8"),
}

# MobileNet V1 Table 2 (Howard et al. 2017): % of mult-adds, % of parameters.
TABLE2 = {"Conv 1x1": (94.86, 74.59), "Conv DW 3x3": (3.06, 1.06), "Conv 3x3": (1.19, 0.02),
          "Fully Connected": (0.18, 24.33)}


# ShuffleNet V2 Table 8 (Ma et al. 2018): ARM images/s at batch 1, grouped by complexity level; the first
# model of each level is the reference the paper's and our speed ratios are taken against.
TABLE8 = {
    "~40 M": [("shufflenet_v2_x0_5", 57.0), ("mobilenet_v1_025", 36.4), ("igcv2_0_25", 31.5)],
    "~140 M": [("shufflenet_v2_x1_0", 24.4), ("mobilenet_v1_050", 16.5), ("shufflenet_v1", 21.8),
               ("igcv2_0_5", 15.5), ("igcv3_070", 11.7)],
    "~300 M": [("shufflenet_v2_x1_5", 11.8), ("mobilenet_v1_075", 10.6), ("mobilenet_v2", 8.9), ("igcv3_100", 6.3)],
    "~550 M": [("shufflenet_v2_x2_0", 6.7), ("mobilenet_v1", 6.5), ("igcv2_1_0", 4.9), ("igcv3_140", 4.5)],
}


TABLE8_COLUMNS = [col("level"), col("model"), col("MACs (M)", "{value:.1f}", "M", "r"),
                  col("memory traffic (MB)", "{value:.1f}", "MB", "r"),
                  col("ours: speed vs ShuffleNet V2 (IQR)", "{median:.2f} ({iqr:.2f})", "x", "r"),
                  col("paper ARM images/s", "{value:g}", "images/s", "r"),
                  col("paper: speed vs ShuffleNet V2", "{value:.2f}", "x", "r")]


def table8_parts(reps: dict, lat1: dict[str, list[float]]) -> list[dict]:
    rows = []
    for level, entries in TABLE8.items():
        entries = [(n, arm) for n, arm in entries if n in lat1]
        if len(entries) < 2 or entries[0][0] != TABLE8[level][0][0]:
            continue
        ref, ref_arm = entries[0]
        for n, arm in entries:
            rows.append([level, n, reps[n].macs / 1e6, reps[n].memory_bytes / 1e6, ratio_stats(lat1[ref], lat1[n]),
                         arm, arm / ref_arm])
    if not rows:
        return []
    return [
        {"heading": "ShuffleNet V2 Table 8 on this CPU: speed at equal complexity, relative to ShuffleNet V2",
         "level": 3},
        {"text": "Batch-1 speed of each model relative to the ShuffleNet V2 of its complexity level, from the same "
                 "rounds as the table above, next to the paper's ratio on ARM (Snapdragon 810, images/s at batch 1). "
                 "Models are ours (random weights); the paper's MobileNet V2 variants at other widths/resolutions "
                 "are not in the zoo."},
        table("table8", TABLE8_COLUMNS, rows),
    ]


def imagenet_models() -> list[str]:
    return [n for n in lightnn.list_models() if lightnn.model_info(n).input_size[1] >= 128]


def _runner(model: torch.nn.Module, size: tuple, batch: int):
    x = torch.randn(batch, *size)

    def run() -> torch.Tensor:
        with torch.inference_mode():
            return model(x)
    return run


def _rounds(models: dict[str, torch.nn.Module], sizes: dict[str, tuple], batch: int, rounds: int, runs: int,
            clock: str) -> dict[str, list[float]]:
    """Per model, one value per round (the median of a burst of ``runs``), models interleaved round by round."""
    print(f"batch {batch}: {rounds} rounds over {len(models)} models", flush=True)
    return interleaved({n: _runner(m, sizes[n], batch) for n, m in models.items()}, repeats=rounds, runs=runs,
                       warmup=1, reduce="median", clock=clock)


def _spearman(xs: list[float], ys: list[float]) -> float:
    """Rank correlation (no ties expected among these measurements)."""
    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=v.__getitem__)
        r = [0.0] * len(v)
        for i, j in enumerate(order):
            r[j] = float(i)
        return r
    rx, ry = ranks(xs), ranks(ys)
    n = len(xs)
    mx, my = sum(rx) / n, sum(ry) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx = sum((a - mx) ** 2 for a in rx) ** 0.5
    vy = sum((b - my) ** 2 for b in ry) ** 0.5
    return cov / (vx * vy) if vx and vy else float("nan")


def reading(names: list[str], reps: dict, lat1: dict[str, list[float]]) -> str:
    """What the table says, computed from it (nothing here is typed in by hand)."""
    ms = [stats(lat1[n])["median"] for n in names]
    rho_macs = _spearman([reps[n].macs for n in names], ms)
    rho_mem = _spearman([reps[n].memory_bytes for n in names], ms)
    off = [(n, reps[n].macs / 1e6, PUBLISHED_MACS[n][0]) for n in names if n in PUBLISHED_MACS
           and abs(reps[n].macs / 1e6 - PUBLISHED_MACS[n][0]) > 0.02 * PUBLISHED_MACS[n][0]]
    n_pub = sum(1 for n in names if n in PUBLISHED_MACS)
    per_ms = sorted(names, key=lambda n: reps[n].macs / stats(lat1[n])["median"])
    lo, hi = (reps[n].macs / 1e6 / stats(lat1[n])["median"] for n in (per_ms[0], per_ms[-1]))
    lines = [
        f"**Reading.** Over these {len(names)} models, the rank correlation of batch-1 latency with MACs is "
        f"{rho_macs:.2f} and with memory traffic {rho_mem:.2f}. MACs per ms range from {lo:.1f} M ({per_ms[0]}) to "
        f"{hi:.1f} M ({per_ms[-1]}), a factor {hi / lo:.1f}"
        + (": a multiply-add count alone does not give the speed on this CPU." if hi / lo > 2 else "."),
        f"{n_pub - len(off)} of {n_pub} models with a published count are within 2% of it"
        + (("; outside: " + ", ".join(f"{n} {m:.1f} M vs {p:g} M" for n, m, p in off) + ".") if off else "."),
    ]
    return " ".join(lines)


BY_TYPE_COLUMNS = [col("layer type"), col("MACs (M)", "{value:.2f}", "M", "r"),
                   col("ours % mult-adds", "{value:.2f}%", "%", "r"),
                   col("paper % mult-adds", "{value:.2f}%", "%", "r"),
                   col("params", "{value:,}", "params", "r"), col("ours % params", "{value:.2f}%", "%", "r"),
                   col("paper % params", "{value:.2f}%", "%", "r")]
ALL_TYPES_COLUMNS = [col("layer type"), col("layers", "{value}", "layers", "r"),
                     col("% MACs", "{value:.2f}%", "%", "r"), col("% params", "{value:.2f}%", "%", "r"),
                     col("memory traffic (MB)", "{value:.2f}", "MB", "r"),
                     col("% memory traffic", "{value:.2f}%", "%", "r")]


def by_type_parts() -> list[dict]:
    if not lightnn.models.is_model("mobilenet_v1"):
        return [{"text": "MobileNet V1 is not registered; no per-layer-type table."}]
    rep = profile(lightnn.create_model("mobilenet_v1"), (1, 3, 224, 224))
    four = {t["type"]: t for t in rep.by_type(only=list(TABLE2))}
    rows = [[k, four[k]["macs"] / 1e6, four[k]["macs_pct"], v[0], four[k]["params"], four[k]["params_pct"], v[1]]
            for k, v in TABLE2.items()]
    rows.append(["sum", sum(t["macs"] for t in four.values()) / 1e6, sum(t["macs_pct"] for t in four.values()),
                 sum(v[0] for v in TABLE2.values()), sum(t["params"] for t in four.values()),
                 sum(t["params_pct"] for t in four.values()), sum(v[1] for v in TABLE2.values())])
    all_rows = [[t["type"], t["layers"], t["macs_pct"], t["params_pct"], t["memory_bytes"] / 1e6, t["memory_pct"]]
                for t in rep.by_type()]
    stem = four["Conv 3x3"]["macs_pct"]
    others = max(max(abs(four[k]["macs_pct"] - v[0]), abs(four[k]["params_pct"] - v[1]))
                 for k, v in TABLE2.items() if k != "Conv 3x3")
    whole = {t["type"]: t for t in rep.by_type()}
    eltwise = sum(whole[k]["memory_pct"] for k in ("BatchNorm", "ReLU", "ReLU6") if k in whole)
    eltwise_macs = sum(whole[k]["macs"] for k in ("BatchNorm", "ReLU", "ReLU6") if k in whole)
    return [
        {"heading": "MobileNet V1 (1.0, 224): resources per layer type vs the paper's Table 2", "level": 3},
        {"text": f"Percentages over the four layer types of Table 2 (the paper leaves BatchNorm and biases out). "
                 f"Total {rep.macs / 1e6:.1f} M MACs (paper 569 M), {rep.params:,} params (paper 4.2 M)."},
        table("by_type", BY_TYPE_COLUMNS, rows),
        {"text": f"The paper's four mult-add percentages add up to {sum(v[0] for v in TABLE2.values()):.2f}%; the one "
                 f"stem conv (3x3x3x32 at 112x112 = {four['Conv 3x3']['macs'] / 1e6:.2f} M MACs) is {stem:.2f}%, so "
                 f"the printed 1.19% reads as 1.91% with two digits transposed. Every other cell agrees to within "
                 f"{others:.2f} points (tests/profile/test_profile.py checks 0.5)."},
        {"text": "Every layer type, percentages of the whole model, with the memory traffic each type causes "
                 f"(activations read + written + weights, fp32, batch 1): BatchNorm and ReLU layers cost "
                 f"{eltwise_macs / 1e6:g} M multiply-adds but {eltwise:.1f}% of the traffic (ShuffleNet V2 guideline "
                 "G4)."},
        table("all_types", ALL_TYPES_COLUMNS, all_rows),
    ]


COLUMNS = [col("model"), col("input"), col("params (M)", "{value:.2f}", "M", "r"),
           col("MACs (M)", "{value:.1f}", "M", "r"),
           col("published MACs (M, source)", "{value:g} ({source})", "M", "r"),
           col("memory traffic (MB)", "{value:.1f}", "MB", "r"), col("peak activations (MB)", "{value:.1f}", "MB", "r"),
           col("batch 1: ms, median (IQR)", "{median:.2f} ({iqr:.2f})", "ms", "r"),
           col(f"batch 1: speed vs {REFERENCE}", "{median:.2f} ({iqr:.2f})", "x", "r"),
           col("batch 1: MACs per ms (M)", "{value:.1f}", "M/ms", "r"),
           col("batch 32: ms, median (IQR)", "{median:.1f} ({iqr:.1f})", "ms"),
           col(f"batch 32: speed vs {REFERENCE}", "{median:.2f} ({iqr:.2f})", "x", "r"),
           col("batch 32: MACs per ms (M)", "{value:.1f}", "M/ms", "r")]


def zoo_rows(names: list[str], sizes: dict, reps: dict, lat1: dict[str, list[float]],
             lat32: dict[str, list[float]], batch32_run: bool) -> list[list]:
    """One row per model (fewest MACs first) from its profile and per-round times (ms) at batch 1 and 32."""
    rows = []
    for n in sorted(names, key=lambda k: reps[k].macs):
        rep = reps[n]
        pub = PUBLISHED_MACS.get(n)
        s1 = stats(lat1[n])
        row = [n, "x".join(map(str, sizes[n][1:])), rep.params / 1e6, rep.macs / 1e6,
               {"value": pub[0], "source": pub[1]} if pub else None, rep.memory_bytes / 1e6,
               rep.peak_activation_bytes / 1e6, s1, ratio_stats(lat1[REFERENCE], lat1[n]),
               rep.macs / 1e6 / s1["median"]]
        if n in lat32 and lat32[n]:
            s32 = stats(lat32[n])
            row += [s32, ratio_stats(lat32[REFERENCE], lat32[n]), 32 * rep.macs / 1e6 / s32["median"]]
        else:
            row += ["skipped" if batch32_run else "not run", None, None]
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, help="rounds at batch 1 (default 5)")
    ap.add_argument("--rounds-b32", type=int, default=3, help="rounds at batch 32 (default 3)")
    ap.add_argument("--runs", type=int, default=3, help="runs per burst at batch 1 (default 3; 1 at batch 32)")
    ap.add_argument("--b32-max-gmacs", type=float, default=1.0,
                    help="measure batch 32 only for models up to this many GMACs per image (default 1.0)")
    ap.add_argument("--models", nargs="*", default=None, help="registry names or wildcards (default: all ImageNet)")
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                    help="cpu: the computing thread's CPU time (default; immune to other jobs' time slices)")
    ap.add_argument("--quick", action="store_true", help="2 rounds, batch 1 only")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    ctx = start(1)
    names = lightnn.list_models(args.models) if args.models else imagenet_models()
    if REFERENCE not in names:
        names = [REFERENCE] + names
    rounds, rounds32 = (2, 0) if args.quick else (args.rounds, args.rounds_b32)

    models, sizes, reps = {}, {}, {}
    for n in names:
        models[n] = lightnn.create_model(n).eval()
        sizes[n] = lightnn.model_info(n).input_size
        reps[n] = profile(models[n], (1, *sizes[n]))
        print(reps[n].summary(), flush=True)
    lat1 = _rounds(models, sizes, 1, rounds, args.runs, args.clock)
    small = {n: m for n, m in models.items() if reps[n].macs <= args.b32_max_gmacs * 1e9}
    lat32 = _rounds(small, sizes, 32, rounds32, 1, args.clock) if rounds32 else {}
    rec = zoo_record(names, sizes, reps, lat1, lat32, rounds, rounds32, args.runs, args.clock, args.b32_max_gmacs,
                     ctx)
    print(render(rec))
    if not args.no_write:
        print(f"\nwrote {write_record(rec)}")
    return rec


def zoo_record(names: list[str], sizes: dict, reps: dict, lat1: dict[str, list[float]],
               lat32: dict[str, list[float]], rounds: int, rounds32: int, runs: int, clock: str,
               b32_max_gmacs: float, ctx: dict) -> dict:
    """The section's record from the models' profiles and per-round times (ms); ``ctx`` from
    :func:`records.start`."""
    intro = (
        f"Counts from `lightnn.profile` (MACs = multiply-adds; FLOPs would be 2x; memory traffic = activations "
        f"read + written + weights, fp32, batch 1; peak activations = the most bytes of activations alive at once). "
        f"Latency: PyTorch eager, NCHW, 1 thread, `torch.inference_mode`, random weights; {rounds} rounds at batch 1 "
        f"({runs}-run bursts, median) and {rounds32} at batch 32 (1 run), every model timed once per round in "
        f"turn; the table gives the median and IQR over rounds. Clock: "
        + ("CPU time of the computing thread (`time.thread_time`; with one intra-op thread PyTorch computes on the "
           "calling thread): on this shared 2-core machine the OS preempts any run longer than a few ms and wall "
           "times swing several-fold, while the thread's CPU time stays put; on an idle machine the two agree. "
           if clock == "cpu" else "wall time. ")
        + f"Speed vs {REFERENCE} = its time / the model's "
        f"time, round by round (> 1 is faster). Batch 32 is skipped above {b32_max_gmacs:g} GMACs per image. "
        "torchvision is not installed here, so the side-by-side torchvision comparison is not in this table.")
    parts = [{"text": intro}, table("main", COLUMNS, zoo_rows(names, sizes, reps, lat1, lat32, bool(rounds32))),
             {"text": reading(names, reps, lat1)}, *table8_parts(reps, lat1), *by_type_parts()]
    return make_record("zoo", "Model zoo: size, multiply-adds, memory traffic and eager latency on this CPU",
                       "python benchmarks/zoo.py", parts, **ctx)


if __name__ == "__main__":
    main()
