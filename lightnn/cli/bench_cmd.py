"""`lightnn bench`: latency of one model on PyTorch eager, ONNX Runtime fp32 and ONNX Runtime int8, side by side."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ..errors import LightnnError
from ._common import Number, add_command, explicit_flags, refuse_inapplicable, track_explicit

BACKENDS = ("eager", "ort", "ort-int8")
DEFAULT_BACKENDS = ",".join(BACKENDS)


def add_parser(sub):
    p = add_command(sub, "bench", "latency (median, IQR) on PyTorch eager, ONNX Runtime fp32 and int8, "
                    "measured in alternating rounds; speed-ups against the first backend",
                    ["lightnn bench mobilenet_v2 --batch 1,32 --threads 2",
                     "lightnn bench runs/r20/model.pt --backends ort,ort-int8 --calibration-data sample --json",
                     "lightnn bench model.onnx --backends ort --batch 8"])
    p.add_argument("source", help="registry name, checkpoint (.pt/.lnz) or .onnx file")
    p.add_argument("--batch", default="1", help="batch sizes, comma-separated (e.g. 1,32)")
    p.add_argument("--threads", type=Number(int, 1), default=1, help="intra-op threads for every backend")
    p.add_argument("--backends", default=DEFAULT_BACKENDS, help=f"comma-separated, from {', '.join(BACKENDS)}")
    p.add_argument("--input-size", type=int, default=None, help="input height = width (default: the model's)")
    p.add_argument("--rounds", type=Number(int, 1), default=5, help="alternating rounds over the backends")
    p.add_argument("--runs", type=Number(int, 1), default=10, help="timed runs per backend per round")
    p.add_argument("--calibration-data", default=None,
                   help="images to calibrate ort-int8 (default: the shipped sample, resized)")
    p.add_argument("--json", action="store_true", help="print median ms and spread per backend as JSON")
    track_explicit(p)  # a typed flag this run would not read is refused by name (see run)
    return p


def run(args) -> int:
    import numpy as np
    import torch

    from ..export import OrtSession, export_onnx, quantize_int8, resolve_model
    from ..export.calib import load_images
    from ..export.onnx import model_input_size, onnx_input_size, source_normalization
    from ..export.quantize import file_size
    from ..profile import interleaved
    from .quantize_cmd import _batches

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    bad = [b for b in backends if b not in BACKENDS]
    if bad or not backends:
        raise LightnnError(f"--backends: unknown {bad or args.backends!r}; choose from {', '.join(BACKENDS)}")
    refuse_inapplicable(args, [
        ("calibration_data", "ort-int8" not in backends, "is read by the ort-int8 backend only"),
    ])
    batches = _batches(args.batch)
    src = str(args.source)
    model = None
    with tempfile.TemporaryDirectory(prefix="lightnn-bench-") as d:
        if src.endswith(".onnx"):
            if "eager" in backends and "backends" not in explicit_flags(args):
                backends.remove("eager")  # the default list; an explicit eager request is an error below
            if "eager" in backends:
                raise LightnnError(f"{src!r} is an ONNX file: the eager backend needs a model name or checkpoint "
                                   "(use --backends ort,ort-int8)")
            if not Path(src).is_file():
                raise LightnnError(f"ONNX model {src!r} does not exist")
            fp32 = Path(src)
            size = onnx_input_size(fp32)
            if args.input_size:
                size = (size[0] if size else 3, args.input_size, args.input_size)
            if size is None:
                raise LightnnError(f"ONNX model {src!r} has no static input size: pass --input-size")
            norm = source_normalization(src)
        else:
            model = resolve_model(src).eval()
            size = model_input_size(model, args.input_size)
            norm = source_normalization(src, model)
            fp32 = Path(d) / "model.onnx"
            if "ort" in backends or "ort-int8" in backends:
                export_onnx(model, fp32, input_size=size)
        paths = {"ort": fp32}
        if "ort-int8" in backends:
            calib = load_images(args.calibration_data or "sample", size, limit=100,
                                resize=not args.calibration_data, mean=norm and norm["mean"],
                                std=norm and norm["std"])
            paths["ort-int8"] = quantize_int8(fp32, Path(d) / "model.int8.onnx", calib)
        sessions = {b: OrtSession(paths[b], threads=args.threads, spinning=False) for b in backends if b != "eager"}
        rows = []
        prev = torch.get_num_threads()
        torch.set_num_threads(args.threads)
        try:
            for bs in batches:
                x = torch.randn(bs, *size)
                xn = x.numpy()
                fns = {b: (lambda m=model, x=x: _eager(m, x)) if b == "eager" else sessions[b].bind(xn)
                       for b in backends}
                res = interleaved(fns, (bs, *size), args.threads, rounds=args.rounds, runs=args.runs)
                ref = res[backends[0]].median_ms
                for b in backends:
                    r = res[b]
                    rows.append({"backend": b, "batch": bs, "median_ms": r.median_ms, "iqr_ms": r.iqr_ms,
                                 "q1_ms": r.p25_ms, "q3_ms": r.p75_ms, "runs": len(r.samples_ms),
                                 "threads": args.threads,
                                 f"speedup_vs_{backends[0]}": ref / r.median_ms,
                                 "bytes": file_size(paths[b]) if b in paths else None})
        finally:
            torch.set_num_threads(prev)
    if args.json:
        print(json.dumps({"source": src, "input_size": list(size), "results": rows}, indent=1))
        return 0
    print(f"{src} at {'x'.join(map(str, size))}, {args.threads} thread(s), {args.rounds} rounds x {args.runs} runs")
    print(f"{'backend':<10} {'batch':>5} {'median ms':>10} {'IQR ms':>8} {'vs ' + backends[0]:>10}")
    for r in rows:
        print(f"{r['backend']:<10} {r['batch']:>5} {r['median_ms']:>10.2f} {r['iqr_ms']:>8.2f} "
              f"{r[f'speedup_vs_{backends[0]}']:>9.2f}x")
    return 0


def _eager(model, x):
    import torch

    with torch.inference_mode():
        return model(x)
