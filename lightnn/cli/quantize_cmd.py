"""`lightnn quantize`: post-training static int8 with a measured report (size, accuracy, latency before/after)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import LightnnError
from ..export.quantize import CALIBRATION_METHODS, QUANT_FORMATS
from ._common import Number, add_command, refuse_inapplicable, track_explicit


def add_parser(sub):
    p = add_command(sub, "quantize", "post-training static int8 (ONNX Runtime, per-channel weights, calibrated) "
                    "with a report: size, accuracy and latency before/after; keeps slow layer types in float",
                    ["lightnn quantize runs/r20/model.pt --calibration-data sample --output q/r20",
                     "lightnn quantize mobilenet_v2 --calibration-data sample --resize --output q/mnv2 --batch 1,32",
                     "lightnn quantize model.onnx --calibration-data calib_images/ --method entropy --output q/m"])
    p.add_argument("source", help="registry name, checkpoint (.pt/.lnz) or fp32 .onnx file")
    p.add_argument("--calibration-data", required=True, help="folder, zip, .npy of images, or 'sample'")
    p.add_argument("--output", "-o", required=True, help="directory for model.fp32.onnx, model.int8.onnx (model.mixed.onnx), report")
    p.add_argument("--method", "--calibration-method", dest="method", default="minmax",
                   choices=CALIBRATION_METHODS)
    p.add_argument("--calibration-size", type=Number(int, 1), default=300)
    p.add_argument("--val-data", default=None,
                   help="labelled images for accuracy before/after (default: the val split of a labelled "
                        "--calibration-data, calibrating on its train split)")
    p.add_argument("--val-size", type=Number(int, 1), default=1000,
                   help="labelled images for accuracy (needs --val-data or a labelled --calibration-data)")
    p.add_argument("--resize", action="store_true", help="resize images to the model's input size")
    p.add_argument("--mean", default=None, help="input normalization mean per channel, comma-separated (default: "
                   "the model's own, from its checkpoint or lightnn ONNX metadata)")
    p.add_argument("--std", default=None, help="input normalization std per channel, comma-separated (with --mean)")
    p.add_argument("--input-size", type=int, default=None)
    p.add_argument("--batch", default="1,32", help="batch sizes for latency, comma-separated")
    p.add_argument("--threads", type=Number(int, 1), default=1)
    p.add_argument("--runs", type=Number(int, 1), default=20)
    p.add_argument("--format", default="qdq", choices=QUANT_FORMATS)
    p.add_argument("--per-tensor", action="store_true", help="per-tensor weights (default: per channel)")
    p.add_argument("--keep-float", default="", help="op types to keep in float, e.g. Add,GlobalAveragePool")
    p.add_argument("--no-auto-mixed", action="store_true",
                   help="do not search for a mixed model when int8 is slower than fp32")
    p.add_argument("--json", action="store_true")
    track_explicit(p)  # a typed flag this run would not read is refused by name (see run)
    return p


def run(args) -> int:
    from ..export import export_onnx, quantize_report, resolve_model
    from ..export.calib import load_images
    from ..export.onnx import check_parity, model_input_size, onnx_input_size, source_normalization
    from ..models import record_update
    from ..utils.io import atomic_write_json, atomic_write_text

    out = Path(args.output)
    if out.suffix == ".onnx":
        raise LightnnError(f"--output {args.output!r} is a directory for the models and the report, not a file")
    batches = _batches(args.batch)
    src = str(args.source)
    refuse_inapplicable(args, [
        ("input_size", src.endswith(".onnx"), "does not apply to an ONNX source (its input size is in the file)"),
    ])
    if src.endswith(".onnx"):
        if not Path(src).is_file():
            raise LightnnError(f"ONNX model {src!r} does not exist")
        fp32 = Path(src)
        size = onnx_input_size(fp32)
        if size is None:
            raise LightnnError(f"ONNX model {src!r} has no static input size")
        norm = source_normalization(src)
        model = None
    else:
        model = resolve_model(src).eval()
        size = model_input_size(model, args.input_size)
        norm = source_normalization(src, model)
        if norm:
            record_update(model, normalize=norm)
        fp32 = out / "model.fp32.onnx"
        export_onnx(model, fp32, input_size=size)
    if (args.mean is None) != (args.std is None):
        raise LightnnError("--mean and --std go together: give both or neither")
    if args.mean is not None:
        from ..data import Normalization

        norm = Normalization(_floats(args.mean, "--mean"), _floats(args.std, "--std")).to_dict()
    mean, std = (norm["mean"], norm["std"]) if norm else (None, None)
    calib = load_images(args.calibration_data, size, limit=args.calibration_size, resize=args.resize, mean=mean,
                        std=std, split="train" if args.val_data is None else "all")
    if args.val_data:
        val = load_images(args.val_data, size, limit=args.val_size, resize=args.resize, mean=mean, std=std,
                          split="val")
    elif calib.labels is not None:
        val = load_images(args.calibration_data, size, limit=args.val_size, resize=args.resize, mean=mean, std=std,
                          split="val")
    else:
        val = None
    refuse_inapplicable(args, [
        ("val_size", val is None, f"needs labelled images: --val-data, or a labelled --calibration-data "
                                  f"({args.calibration_data!r} has no labels)"),
    ])
    if model is not None:
        check_parity(model, fp32, calib.images[:16])
    rep = quantize_report(fp32, out / "model.int8.onnx", calib, val, method=args.method, batches=batches,
                          threads=args.threads, runs=args.runs, auto_mixed=not args.no_auto_mixed,
                          fmt=args.format, per_channel=not args.per_tensor,
                          op_types_to_keep_float=[t for t in args.keep_float.split(",") if t],
                          mixed_path=out / "model.mixed.onnx")
    d = rep.as_dict()
    d.update({"source": src, "calibration_data": str(args.calibration_data), "calibration_images": len(calib),
              "threads": args.threads, "format": args.format})
    atomic_write_json(out / "report.json", d)
    md = f"# int8 report: {src}\n\n{rep.markdown()}"
    atomic_write_text(out / "report.md", md)
    if args.json:
        print(json.dumps(d, indent=1))
    else:
        print(md)
        mixed = f"{rep.mixed_path}, " if rep.mixed_path else ""
        print(f"wrote {out / 'model.int8.onnx'}, {mixed}{out / 'report.json'}, {out / 'report.md'}")
    return 0


def _floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise LightnnError(f"{flag} must be comma-separated numbers, got {text!r}") from None


def _batches(text: str) -> list[int]:
    try:
        b = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise LightnnError(f"--batch must be comma-separated integers, got {text!r}") from None
    if not b or min(b) < 1:
        raise LightnnError(f"--batch must list positive batch sizes, got {text!r}")
    return b
