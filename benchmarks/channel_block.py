"""Why pruned widths must be multiples of the CPU's channel block, and where ResNet-20's time goes.

Two measurements behind structured channel pruning's rounding (``round_to``) and its speed-up ceiling:

1. A 3x3 conv pair ``C_in -> c -> C_in`` (ReLU between) at batch 32 in ONNX Runtime (1 thread) and PyTorch eager
   (1 thread), for inner widths ``c`` in steps of 8. On an AVX-512 CPU both runtimes compute channels in blocks of
   16 floats (ONNX Runtime's MLAS NCHWc kernels, oneDNN's nChw16c), so a width of 24 costs what 32 costs: pruning
   to multiples of 8 buys multiply-adds and no time. ``round_to="auto"`` in :func:`lightnn.compress.prune_channels`
   rounds to this block (:func:`lightnn.compress.channel.deployment_channel_multiple`).
2. ONNX Runtime's per-node profile of ResNet-20 at batch 32 (1 thread), summed by stage: the first stage (16
   channels, a single block, 32x32 maps) holds the largest share and cannot be narrowed by channel pruning, which
   caps the speed-up pruning the other stages can give.

    python benchmarks/channel_block.py     # writes benchmarks/results/channel_block.json (about 2 minutes)
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from pathlib import Path

import _common  # noqa: F401  (puts the repository on sys.path)
import numpy as np
import torch
import torch.nn as nn
from _common import interleaved, ratio_stats, stats
from records import col, make_record, render, start, table, write_record

import lightnn
from lightnn.compress.channel import deployment_channel_multiple
from lightnn.export.onnx import export_onnx
from lightnn.runtime.ort import OrtSession
from lightnn.profile import profile

BATCH = 32
# (outer width C_in, spatial size, inner widths c)
SWEEPS = [(64, 8, (16, 24, 32, 40, 48, 56, 64)), (32, 16, (8, 16, 24, 32))]


def _pair(cin: int, c: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(cin, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, cin, 3, padding=1)).eval()


SWEEP_COLUMNS = [col("C_in -> c -> C_in"), col("map"), col("MACs (M)", "{value:.1f}", "M", "r"),
                 col("ORT ms, median (IQR)", "{median:.3f} ({iqr:.3f})", "ms", "r"),
                 col("ORT time vs c = C_in, median (IQR)", "{median:.2f} ({iqr:.2f})", "x", "r"),
                 col("eager ms, median (IQR)", "{median:.3f} ({iqr:.3f})", "ms", "r"),
                 col("eager time vs c = C_in", "{value:.2f}", "x", "r")]
STAGE_COLUMNS = [col("part of ResNet-20"), col("share of MACs", "{value:.0f}%", "%", "r"),
                 col("ms per batch of 32", "{value:.2f}", "ms", "r"), col("share of time", "{value:.0f}%", "%", "r")]


def width_sweep(tmp: Path, repeats: int, runs: int) -> list[list]:
    measured = []
    for cin, hw, widths in SWEEPS:
        fns, macs = {}, {}
        x = torch.randn(BATCH, cin, hw, hw)
        xn = x.numpy()
        for c in widths:
            m = _pair(cin, c)
            macs[c] = profile(m, (1, cin, hw, hw)).macs * BATCH
            sess = OrtSession(export_onnx(m, tmp / f"pair_{cin}_{c}.onnx", input_size=(cin, hw, hw)),
                              threads=1, spinning=False)
            fns[("ort", c)] = (lambda s=sess: s.run(xn))
            fns[("eager", c)] = (lambda m=m: _eager(m, x))
        measured.append((cin, hw, widths, macs, interleaved(fns, repeats=repeats, runs=runs)))
    return sweep_rows(measured)


def sweep_rows(measured: list[tuple[int, int, tuple, dict, dict]]) -> list[list]:
    """Rows from (C_in, map size, inner widths, MACs per width, per-repeat ms by ("ort" | "eager", width)); each
    width's time is taken over the full width's (the last) repeat by repeat."""
    rows = []
    for cin, hw, widths, macs, res in measured:
        ref = widths[-1]
        for c in widths:
            o, e = res[("ort", c)], res[("eager", c)]
            ro, re_ = ratio_stats(res[("ort", ref)], o), ratio_stats(res[("eager", ref)], e)
            # time ratio = 1 / speed ratio; its IQR to first order
            rows.append([f"{cin} -> {c} -> {cin}", f"{hw}x{hw}", macs[c] / 1e6, stats(o),
                         {"median": 1 / ro["median"], "iqr": ro["iqr"] / ro["median"] ** 2}, stats(e),
                         1 / re_["median"]])
    return rows


@torch.inference_mode()
def _eager(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return m(x)


def stage_profile(tmp: Path, iters: int) -> list[list]:
    import onnxruntime as ort

    m = lightnn.create_model("resnet20", num_classes=10).eval()
    path = export_onnx(m, tmp / "resnet20.onnx", input_size=(3, 32, 32))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.enable_profiling = True
    so.profile_file_prefix = str(tmp / "prof")
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((BATCH, 3, 32, 32), dtype=np.float32)
    name = sess.get_inputs()[0].name
    for _ in range(iters):
        sess.run(None, {name: x})
    events = json.loads(Path(sess.end_profiling()).read_text())
    by_stage: dict[str, float] = collections.defaultdict(float)
    for ev in events:
        if ev.get("cat") != "Node" or not ev["name"].endswith("_kernel_time"):
            continue
        node = ev["name"]
        stage = next((f"stage {i} ({w} channels)" for i, w in ((1, 16), (2, 32), (3, 64))
                      if f"/features.{i}/" in node), "stem, head and layout reorders")
        by_stage[stage] += ev["dur"] / iters / 1000
    macs = profile(m, (1, 3, 32, 32))
    stage_macs = collections.defaultdict(float)
    for layer in macs.layers:
        key = next((f"stage {i} ({w} channels)" for i, w in ((1, 16), (2, 32), (3, 64))
                    if layer.name.startswith(f"features.{i}.")), "stem, head and layout reorders")
        stage_macs[key] += layer.macs
    return stage_rows(by_stage, stage_macs)


def stage_rows(ms_by_stage: dict[str, float], macs_by_stage: dict[str, float]) -> list[list]:
    """Per stage: its share of the MACs, its ms per batch, its share of the time; then the total."""
    total_t, total_m = sum(ms_by_stage.values()), sum(macs_by_stage.values())
    rows = [[k, 100 * macs_by_stage[k] / total_m, ms_by_stage[k], 100 * ms_by_stage[k] / total_t]
            for k in sorted(ms_by_stage, key=lambda k: (k.startswith("stem"), k))]
    return rows + [["total", 100.0, total_t, 100.0]]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats, args.runs = 2, 2
    torch.set_num_threads(1)
    ctx = start(1, "onnxruntime")
    block = deployment_channel_multiple()
    with tempfile.TemporaryDirectory(prefix="lightnn-block-") as d:
        sweep = width_sweep(Path(d), args.repeats, args.runs)
        stages = stage_profile(Path(d), 5 if args.quick else 20)
    rec = block_record(block, sweep, stages, args.repeats, args.runs, ctx)
    print(render(rec))
    print("wrote", write_record(rec))
    return 0


def block_record(block: int, sweep: list[list], stages: list[list], repeats: int, runs: int, ctx: dict) -> dict:
    """The section's record from the channel block, :func:`sweep_rows` and :func:`stage_rows`."""
    parts = [
        {"text": f"`deployment_channel_multiple()` on this machine: **{block}** (what `round_to=\"auto\"` rounds to)."},
        {"text": f"A pair of 3x3 convs C_in -> c -> C_in (ReLU between) at batch {BATCH}, 1 thread, ONNX Runtime "
                 "(idle threads sleeping) and PyTorch eager (`inference_mode`), all widths interleaved round-robin "
                 f"({repeats} repeats, each the median of {runs} runs). *time vs c = C_in* is each width's time "
                 "over the full width's, repeat by repeat (median, IQR): read it against the MACs column."},
        table("sweep", SWEEP_COLUMNS, sweep),
        {"text": f"ONNX Runtime's own per-node profile of ResNet-20 (random weights, BN folded) at batch {BATCH}, 1 "
                 "thread, summed per stage (MACs from `lightnn.profile`):"},
        table("stages", STAGE_COLUMNS, stages),
    ]
    return make_record("channel_block", "Channel pruning on this CPU: widths in whole channel blocks, and where "
                       "ResNet-20's time goes", "python benchmarks/channel_block.py", parts, **ctx)


if __name__ == "__main__":
    raise SystemExit(main())
