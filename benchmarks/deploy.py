"""Deployment on this CPU: PyTorch eager vs ONNX Runtime fp32 vs naive int8 vs lightnn int8 (+ CIFAR accuracy).

For each model every backend is timed in the same run, interleaved round-robin (``_common.interleaved``), and each
speed-up is the ratio to ONNX Runtime fp32 taken repeat by repeat (median and IQR over repeats).

- *naive int8*: ``onnxruntime.quantization.quantize_static`` with its defaults (QDQ, int8 activations, per-tensor
  weights) on the exported model without pre-processing: what people report as "int8 slower than fp32".
- *lightnn int8*: :func:`lightnn.export.quantize_int8` (shape inference + fusion pre-processing, uint8 activations,
  per-channel int8 weights, QDQ); the QOperator format of the same recipe is timed too, to justify the default.

Latency uses random weights (latency does not depend on their values); calibration uses sample images resized to
224. CIFAR-trained checkpoints found in ``--ckpt-dir`` get accuracy rows on the CIFAR-10 validation split.

    python benchmarks/deploy.py                       # the four ImageNet models, batch 1 and 32, 1 and 2 threads
    python benchmarks/deploy.py --models mobilenet_v2 --batches 1 --repeats 3
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# idle OpenMP threads sleep instead of spinning (set before torch loads): PyTorch eager is timed in turn with the
# ONNX Runtime sessions (whose pools are made non-spinning too), and a spinning pool steals the next one's cores
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from _common import interleaved, ratio_stats, stats  # noqa: E402
from records import col, make_record, render, start, table, write_record  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from lightnn.models import model_name, record_update  # noqa: E402

MODELS = ["mobilenet_v2", "shufflenet_v2_x1_0", "resnet18", "mnasnet1_0"]
CIFAR_DATA = [Path("/work/shared/data/cifar10-train-jpeg.tar.gz"), Path("/tmp/cifar")]


def bench_model(name: str, d: Path, batches: list[int], thread_counts: list[int], repeats: int, calib_n: int,
                eager_b32: bool) -> list[dict]:
    import lightnn
    from lightnn.export import OrtSession, export_onnx, load_images, quantize_int8, quantize_naive
    from lightnn.export.quantize import runtime_op_types

    model = lightnn.create_model(name).eval()
    fp32 = export_onnx(model, d / f"{name}.onnx", input_size=224)
    calib = load_images("sample", (3, 224, 224), limit=calib_n, resize=True, split="train")
    t0 = time.perf_counter()
    naive = quantize_naive(fp32, d / f"{name}.naive.onnx", calib)
    t_naive = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = quantize_int8(fp32, d / f"{name}.int8.onnx", calib)
    t_fast = time.perf_counter() - t0
    qop = quantize_int8(fp32, d / f"{name}.qop.onnx", calib, fmt="qoperator")
    paths = {"ort fp32": fp32, "naive int8": naive, "lightnn int8 (QDQ)": fast, "lightnn int8 (QOperator)": qop}
    sessions = {k: OrtSession(p, threads=thread_counts[0], spinning=False) for k, p in paths.items()}
    x_val = calib.images[:32]
    ref = sessions["ort fp32"].run(x_val).argmax(1)
    agree = {k: float(np.mean(s.run(x_val).argmax(1) == ref)) for k, s in sessions.items()}
    kernels = runtime_op_types(fast)
    rows = []
    for threads, b in [(t, b) for t in thread_counts for b in batches]:
        sessions = {k: OrtSession(p, threads=threads, spinning=False) for k, p in paths.items()}
        torch.set_num_threads(threads)
        x = torch.randn(b, 3, 224, 224)
        xn = x.numpy()
        fns = {}
        if b == 1 or eager_b32:
            fns["pytorch eager"] = lambda m=model, x=x: _eager(m, x)
        for k, s in sessions.items():
            feed = {s.input_name: xn}
            fns[k] = lambda s=s, feed=feed: s.session.run([s.output_name], feed)
        runs = 5 if b == 1 else 1
        times = interleaved(fns, repeats=repeats, runs=runs, warmup=2 if b == 1 else 1)
        for k in fns:
            rows.append({"model": name, "batch": b, "threads": threads, "backend": k, "ms": stats(times[k]),
                         "speedup": ratio_stats(times["ort fp32"], times[k]),
                         "bytes": Path(paths[k]).stat().st_size if k in paths else None,
                         "agree": agree.get(k)})
    rows[0]["extra"] = {"quantize_s": {"naive": t_naive, "lightnn": t_fast},
                        "int8_kernels": {k: v for k, v in kernels.items() if k.startswith("Q")}}
    return rows


def _eager(model, x):
    with torch.inference_mode():
        return model(x)


def cifar_rows(ckpt_dir: Path, d: Path, threads: int, repeats: int, qat_steps: int,
               qat_seconds: float) -> list[dict]:
    from lightnn.data import load_dataset
    from lightnn.export import OrtSession, export_onnx, load_images, quantize_int8, quantize_naive
    from lightnn.export.onnx import model_input_size, resolve_model, source_normalization
    from lightnn.export.quantize import evaluate_onnx

    ckpts = sorted(ckpt_dir.glob("*.pt")) if ckpt_dir.is_dir() else []
    if not ckpts:
        return []
    src = next((p for p in CIFAR_DATA if p.exists()), None)
    if src is None:
        return []
    rows = []
    for ck in ckpts:
        model = resolve_model(str(ck)).eval()
        size = model_input_size(model)
        if size != (3, 32, 32):
            continue
        norm = source_normalization(str(ck), model) or {}
        mean, std = norm.get("mean"), norm.get("std")
        fp32 = export_onnx(model if not norm else _with_norm(model, norm), d / f"{ck.stem}.onnx")
        val = load_images(str(src), size, limit=None, mean=mean, std=std, split="val")
        calib = load_images(str(src), size, limit=500, mean=mean, std=std, split="train")
        q = quantize_int8(fp32, d / f"{ck.stem}.int8.onnx", calib)
        naive = quantize_naive(fp32, d / f"{ck.stem}.naive.onnx", calib)
        acc32, acc8 = evaluate_onnx(fp32, val, threads), evaluate_onnx(q, val, threads)
        acc_naive = evaluate_onnx(naive, val, threads)
        sess = {k: OrtSession(p, threads=threads, spinning=False)
                for k, p in (("ort fp32", fp32), ("naive int8", naive), ("lightnn int8", q))}
        torch.set_num_threads(threads)
        speed = {}
        for b in (1, 32):  # all four backends in one interleaved run per batch size
            xn = val.images[:b]
            xt = torch.from_numpy(np.ascontiguousarray(xn))
            fns = {"pytorch eager": lambda xt=xt: _eager(model, xt)}
            fns.update({k: (lambda s=s, xn=xn: s.run(xn)) for k, s in sess.items()})
            times = interleaved(fns, repeats=repeats, runs=10 if b == 1 else 3)
            speed[b] = {k: ratio_stats(times["ort fp32"], times[k]) for k in fns}
        row = {"ckpt": ck.name, "model": model_name(model, "?"), "n_val": len(val), "acc32": acc32,
               "acc8": acc8, "acc_naive": acc_naive, "bytes32": fp32.stat().st_size, "bytes8": q.stat().st_size,
               "speedup": speed[1]["lightnn int8"], "speed": speed, "method": "PTQ minmax"}
        rows.append(row)
        if acc32 - acc8 > 0.5 and qat_steps > 0:  # post-training lost too much: quantization-aware fine-tuning
            from lightnn.export import export_qat_int8, qat_training
            from lightnn.train import fit

            train = load_dataset(str(src), split="train")
            t0 = time.perf_counter()
            qm, qcfg, callbacks = qat_training(model, epochs=1, max_steps=qat_steps, lr=1e-3, batch_size=128,
                                               mean=mean, std=std, max_seconds=qat_seconds)
            fit(qm, train, None, qcfg, callbacks=callbacks)
            qq = export_qat_int8(qm, d / f"{ck.stem}.qat.onnx", calib)
            rows.append({**row, "acc8": evaluate_onnx(qq, val, threads), "bytes8": qq.stat().st_size,
                         "method": f"QAT {qm.qat_steps} steps x 128 ({time.perf_counter() - t0:.0f} s on this CPU)"})
    return rows


def _with_norm(model, norm):
    return record_update(model, normalize=norm)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--threads", default="1,2", help="intra-op thread counts, each timed separately (default 1,2)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--calib", type=int, default=64, help="calibration images (sample, resized to 224)")
    ap.add_argument("--eager-batch32", action="store_true", help="also time PyTorch eager at batch 32 (slow)")
    ap.add_argument("--ckpt-dir", default="/work/artifacts/ckpt")
    ap.add_argument("--qat-steps", type=int, default=300,
                    help="QAT fine-tuning steps for a checkpoint whose PTQ top-1 drop exceeds 0.5 points")
    ap.add_argument("--qat-seconds", type=float, default=150.0, help="time limit of each QAT fine-tuning")
    ap.add_argument("--skip-latency", action="store_true", help="only the CIFAR checkpoint rows")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    logging.getLogger().setLevel(logging.ERROR)  # ORT's quantizer logs a pre-processing hint for the naive run
    batches = [int(b) for b in args.batches.split(",")]
    thread_counts = [int(t) for t in str(args.threads).split(",")]
    torch.manual_seed(0)
    ctx = start(thread_counts[-1], "onnxruntime")
    rows, extras = [], {}
    with tempfile.TemporaryDirectory(prefix="lightnn-deploy-") as d:
        for name in ([] if args.skip_latency else args.models.split(",")):
            t0 = time.perf_counter()
            r = bench_model(name, Path(d), batches, thread_counts, args.repeats, args.calib, args.eager_batch32)
            extras[name] = r[0].pop("extra")
            rows += r
            print(f"{name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        crow = cifar_rows(Path(args.ckpt_dir), Path(d), thread_counts[0], args.repeats, args.qat_steps,
                          args.qat_seconds)
    rec = deploy_record(rows, extras, crow, thread_counts, args.repeats, args.calib, args.ckpt_dir, ctx)
    print(render(rec))
    if not args.no_write:
        print(f"wrote {write_record(rec)}", file=sys.stderr)


COLUMNS = [col("model"), col("batch", "{value}", "images", "r"), col("threads", "{value}", "threads", "r"),
           col("backend"), col("ms per batch, median (IQR)", "{median:.2f} ({iqr:.2f})", "ms", "r"),
           col("speed-up vs ORT fp32, median (IQR)", "{median:.2f} ({iqr:.2f})", "x", "r"),
           col("size on disk (MB)", "{value:.2f}", "MB", "r"), col("size vs fp32", "1/{value:.2f}", "x", "r"),
           col("top-1 agree", "{value:.0f}%", "%", "r")]
_SPEEDS = "{eager:.2f}x / {naive:.2f}x / **{lightnn:.2f}x** ({lightnn_iqr:.2f})"
CIFAR_COLUMNS = [col("checkpoint"), col("model"), col("int8 method"), col("top-1 fp32", "{value:.2f}%", "%", "r"),
                 col("top-1 naive int8", "{value:.2f}%", "%", "r"), col("top-1 lightnn int8", "{value:.2f}%", "%", "r"),
                 col("drop (points)", "{value:.2f}", "points", "r"),
                 col("size fp32 / int8 (MB)", "{fp32:.2f} / {int8:.2f}", "MB", "r"),
                 col("b1: eager / naive / lightnn", _SPEEDS, "x", "r"),
                 col("b32: eager / naive / lightnn", _SPEEDS, "x", "r")]


def _cifar_speeds(c: dict, b: int) -> dict:
    v = c["speed"][b]
    return {"eager": v["pytorch eager"]["median"], "naive": v["naive int8"]["median"],
            "lightnn": v["lightnn int8"]["median"], "lightnn_iqr": v["lightnn int8"]["iqr"]}


def deploy_record(rows: list[dict], extras: dict, crow: list[dict], thread_counts: list[int], repeats: int,
                  calib: int, ckpt_dir: str, ctx: dict) -> dict:
    """The section's record from :func:`bench_model`'s rows (their ``extra`` popped into ``extras`` by model) and
    :func:`cifar_rows`; ``ctx`` from :func:`records.start` (with the onnxruntime version)."""
    intro = (
        f"ONNX Runtime {ctx['software'].get('onnxruntime', '?')} (CPU provider); each thread count "
        f"({', '.join(map(str, thread_counts))} intra-op threads, the same for every backend of a row, PyTorch "
        f"eager included) is a separate interleaved run; random weights at 3x224x224; calibration: {calib} images "
        "of the shipped CIFAR-10 sample resized to 224 (minmax). All backends of a model and batch are timed in the "
        f"same run, interleaved round-robin ({repeats} repeats; a repeat is the median of a burst of 5 runs at batch "
        "1, one run at batch 32). Speed-up = ORT fp32 time / backend time, taken repeat by repeat, then median "
        "(IQR). *naive int8* = `quantize_static` defaults (QDQ, int8 activations, per-tensor weights) without "
        "pre-processing; *lightnn int8* = `lightnn.export.quantize_int8` (pre-processing, uint8 activations, "
        "per-channel int8 weights). Agreement = top-1 agreement with ORT fp32 on 32 calibration images "
        "(random weights, so this only shows the model is not broken). Idle thread pools sleep rather than spin "
        "(ORT `session.intra_op.allow_spinning=0`, `OMP_WAIT_POLICY=PASSIVE`): with spinning pools, whichever "
        "session ran last keeps both cores busy while the next one is timed, and batch-1 ratios swing "
        "between 0.5x and 1.5x.")
    sizes = {(r["model"]): r["bytes"] for r in rows if r["backend"] == "ort fp32"}
    table_rows = [[r["model"], r["batch"], r["threads"], r["backend"], r["ms"], r["speedup"],
                   r["bytes"] / 1e6 if r["bytes"] else "-", sizes[r["model"]] / r["bytes"] if r["bytes"] else "-",
                   100 * r["agree"] if r["agree"] is not None else "-"] for r in rows]
    kernels = "\n".join(f"- {name}: " + ", ".join(f"{op} x{n}" for op, n in sorted(e["int8_kernels"].items()))
                        + f"; quantize {e['quantize_s']['lightnn']:.1f} s (naive {e['quantize_s']['naive']:.1f} s)"
                        for name, e in extras.items())
    parts = [{"text": intro}, table("main", COLUMNS, table_rows),
             {"text": "Which ops ONNX Runtime runs as int8 kernels in the lightnn int8 model (after its QDQ "
                      "fusions), and quantization time:"}]
    parts += [{"text": kernels}] if kernels else []
    parts += [{"text": t} for t in _verdict(rows)] if rows else []
    if crow:
        parts += [{"heading": "CIFAR-10-trained checkpoints: accuracy before/after int8 (lightnn recipe)", "level": 3},
                  {"text": f"Validation split of the CIFAR-10 training set ({crow[0]['n_val']} images, the trainer's "
                           f"seeded split); calibration on 500 images of the train split. Latency at 3x32x32, "
                           f"{thread_counts[0]} thread(s): PyTorch eager, ONNX Runtime fp32, naive int8 and lightnn "
                           "int8 interleaved in one run per batch size; speed-ups vs ORT fp32, median (IQR) over "
                           "repeats."},
                  table("cifar", CIFAR_COLUMNS, [
                      [c["ckpt"], c["model"], c["method"], c["acc32"], c["acc_naive"], c["acc8"],
                       c["acc32"] - c["acc8"], {"fp32": c["bytes32"] / 1e6, "int8": c["bytes8"] / 1e6},
                       _cifar_speeds(c, 1), _cifar_speeds(c, 32)] for c in crow])]
    else:
        parts += [{"text": f"No CIFAR-trained checkpoints in `{ckpt_dir}` at run time: no accuracy rows."}]
    return make_record("deploy", "Deployment: ONNX Runtime fp32 vs int8 on this CPU", "python benchmarks/deploy.py",
                       parts, **ctx)


# issue 5's batch-1 targets for lightnn int8 vs ONNX Runtime fp32 (every other model: faster than fp32)
TARGETS_B1 = {"mobilenet_v2": 1.6, "resnet18": 2.5}


def _verdict(rows: list[dict]) -> tuple[str, str]:
    out, checks = [], []
    for r in rows:
        if r["backend"].startswith("lightnn int8 (QDQ)"):
            naive = next(x for x in rows if x["model"] == r["model"] and x["batch"] == r["batch"]
                         and x["threads"] == r["threads"] and x["backend"] == "naive int8")
            sp = r["speedup"]["median"]
            out.append(f"{r['model']} b{r['batch']} {r['threads']}t: lightnn int8 {sp:.2f}x, naive "
                       f"{naive['speedup']['median']:.2f}x")
            need = TARGETS_B1.get(r["model"], 1.0) if r["batch"] == 1 else 1.0
            checks.append(f"{r['model']} b{r['batch']} {r['threads']}t {sp:.3f}x >= {need:g}x: "
                          f"{'met' if sp >= need else 'NOT met'}")
    return ("Summary (speed-up vs ORT fp32): " + "; ".join(out) + ".", "Targets (lightnn int8 faster than fp32 "
            "everywhere; at batch 1 at least 1.6x for mobilenet_v2 and 2.5x for resnet18): " + "; ".join(checks) + ".")


if __name__ == "__main__":
    main()
