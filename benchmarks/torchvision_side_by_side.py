"""lightnn vs torchvision, same architecture, same weights, same process: outputs and PyTorch eager latency.

Runs in a peer environment that has torchvision (it is never a lightnn dependency), for example::

    python -m venv peer && peer/bin/pip install torch==2.14.1 torchvision==0.29.2 numpy pyyaml tqdm pillow onnx onnxruntime
    peer/bin/pip install -e . --no-deps && peer/bin/python benchmarks/torchvision_side_by_side.py

For every name lightnn shares with torchvision: torchvision's model (random init) is built, its state dict is
loaded into lightnn's model (``load_foreign_state_dict``), the eval-mode outputs are compared, and both are timed
interleaved round-robin at batch 1 on one thread (CPU time of the computing thread, robust on a shared machine).
Ratio = torchvision time / lightnn time, repeat by repeat (> 1: lightnn is faster).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import interleaved, ratio_stats, stats  # noqa: E402
from records import col, make_record, render, start, table, write_record  # noqa: E402

SHARED = ["mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0",
          "shufflenet_v2_x1_5", "shufflenet_v2_x2_0", "mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3",
          "inception_v3", "resnet18", "resnet34", "resnet50", "alexnet", "vgg16"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(SHARED))
    ap.add_argument("--repeats", type=int, default=8, help="an even number: the order flips every repeat")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--controls", default="mnasnet0_5,resnet18",
                    help="models also timed torchvision against a copy of itself (the noise floor of a ratio)")
    args = ap.parse_args()
    try:
        import torchvision.models as tvm
    except ImportError:
        print("torchvision is not installed in this environment; see this script's docstring for the peer "
              "environment", file=sys.stderr)
        return 2
    import lightnn
    from lightnn.models.convert import load_foreign_state_dict

    torch.set_num_threads(1)
    ctx = start(1, "torchvision")
    rows = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        kw = {"aux_logits": True, "init_weights": True} if name == "inception_v3" else {}
        tv = getattr(tvm, name)(weights=None, **kw).eval()
        ours = lightnn.create_model(name).eval()
        load_foreign_state_dict(ours, tv.state_dict(), source=f"torchvision {name}")
        size = 299 if name == "inception_v3" else 224
        x = torch.randn(1, 3, size, size)
        with torch.inference_mode():
            diff = (ours(x) - tv(x)).abs().max().item()
            t = interleaved({"torchvision": lambda: tv(x), "lightnn": lambda: ours(x)}, repeats=args.repeats,
                            runs=args.runs, clock="cpu", order="alternate")
        r = ratio_stats(t["torchvision"], t["lightnn"])
        rows.append((name, diff, t["torchvision"], t["lightnn"]))
        print(f"{name}: max|diff| {diff:.1e}, ratio {r['median']:.3f}", flush=True)
    controls = []
    for name in [n for n in args.controls.split(",") if n]:
        import copy

        torch.manual_seed(0)
        a = getattr(tvm, name)(weights=None).eval()
        b = copy.deepcopy(a)
        x = torch.randn(1, 3, 224, 224)
        with torch.inference_mode():
            t = interleaved({"a": lambda: a(x), "b": lambda: b(x)}, repeats=args.repeats, runs=args.runs,
                            clock="cpu", order="alternate")
        r = ratio_stats(t["a"], t["b"])
        controls.append((name, t["a"], t["b"]))
        print(f"control {name}: ratio {r['median']:.3f} ({r['p25']:.3f}-{r['p75']:.3f})", flush=True)
    rec = side_by_side_record(rows, controls, args.repeats, args.runs, ctx)
    write_record(rec)
    print(render(rec))
    return 0


COLUMNS = [col("model"), col("max abs diff", "{value:.1e}", "logit", "r"),
           col("torchvision ms, median (IQR)", "{median:.2f} (IQR {iqr:.2f})", "ms", "r"),
           col("lightnn ms, median (IQR)", "{median:.2f} (IQR {iqr:.2f})", "ms", "r"),
           col("ratio tv/lightnn, median (p25-p75)", "{median:.3f} ({p25:.3f}-{p75:.3f})", "x", "r")]


def side_by_side_record(rows: list[tuple[str, float, list[float], list[float]]],
                        controls: list[tuple[str, list[float], list[float]]], repeats: int, runs: int,
                        ctx: dict) -> dict:
    """The section's record from (model, max |diff|, torchvision ms per repeat, lightnn ms per repeat) and the A/A
    controls' (model, ms, ms of the copy); ``ctx`` from :func:`records.start` (with the torchvision version)."""
    table_rows = [[name, diff, stats(a), stats(b), ratio_stats(a, b)] for name, diff, a, b in rows]
    ctl = [(name, ratio_stats(a, b)) for name, a, b in controls]
    table_rows += [[f"control: {name} torchvision vs a copy of itself", "-", stats(a), stats(b), ratio_stats(a, b)]
                   for name, a, b in controls]
    # slower = most paired repeats say so (upper quartile of the ratios below 1) AND the median is past the
    # noise floor the A/A controls show (at least 1%)
    floor = max([0.01] + [abs(1 - r["median"]) for _, r in ctl])
    slower = [r[0] for r in table_rows[:len(rows)] if r[4]["p75"] < 1.0 and r[4]["median"] < 1.0 - floor]
    intro = (f"In a peer environment with torchvision {ctx['software'].get('torchvision', '?')}. Batch 1, 224x224 "
             "(inception_v3 299x299), fp32, `torch.inference_mode`, eval mode, 1 thread; both models "
             f"timed interleaved round-robin ({repeats} repeats, each the median of {runs} runs, CPU time of "
             "the computing thread; the order flips every repeat so neither model always runs first). Ratio = "
             "torchvision time / lightnn time per repeat; > 1 means lightnn is faster. max |diff| = largest "
             "difference of the logits for the same weights and input.")
    verdict = (f"Ratios are median (p25-p75) over the paired repeats. A model counts as slower when the upper "
               f"quartile of its ratios is below 1 (three quarters of the paired repeats have lightnn slower) and its "
               f"median is more than {100 * floor:.1f}% below 1 (the larger of 1% and the A/A controls' deviation). "
               "Slower: " + (", ".join(slower) if slower else "none") + ".")
    return make_record("torchvision_side_by_side", "lightnn vs torchvision: same weights, eager latency side by side",
                       "python benchmarks/torchvision_side_by_side.py",
                       [{"text": intro}, table("main", COLUMNS, table_rows), {"text": verdict}], **ctx)


if __name__ == "__main__":
    raise SystemExit(main())
