"""`lightnn export`: a model name, checkpoint or .onnx file -> ONNX (fp32, int8, QAT int8 or fp16), parity-checked."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import LightnnError
from ..export.quantize import CALIBRATION_METHODS
from ._common import Number, add_command, refuse_inapplicable, track_explicit


def add_parser(sub):
    p = add_command(sub, "export", "export to ONNX (BN folded, dynamic batch), checked against PyTorch; "
                    "optionally int8 (static or QAT) or fp16",
                    ["lightnn export mobilenet_v2 --output mnv2.onnx",
                     "lightnn export runs/r20/model.pt --output r20.int8.onnx --int8 --calibration-data sample",
                     "lightnn export runs/r20/model.pt --output r20.qat.onnx --qat-epochs 1 --calibration-data sample",
                     "lightnn export mnv2.onnx --output mnv2.fp16.onnx --fp16"])
    p.add_argument("source", help="registry name, checkpoint (.pt/.lnz) or .onnx file (for --int8/--fp16)")
    p.add_argument("--output", "-o", required=True, help="the ONNX file to write")
    p.add_argument("--input-size", type=int, default=None, help="input height = width (default: the model's)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--static-batch", action="store_true", help="fix the batch axis instead of a dynamic one")
    p.add_argument("--no-fold-bn", action="store_true", help="keep BatchNorm nodes")
    q = p.add_mutually_exclusive_group()
    q.add_argument("--int8", action="store_true", help="post-training static int8 (ONNX Runtime, fast recipe)")
    q.add_argument("--qat-epochs", type=Number(int, 0), default=0, help="quantization-aware fine-tuning epochs, then int8")
    q.add_argument("--fp16", action="store_true", help="store the weights as float16 (half the size)")
    p.add_argument("--calibration-data", default=None,
                   help="images for int8 calibration / parity: folder, zip, .npy or 'sample'")
    p.add_argument("--calibration-method", default="minmax", choices=CALIBRATION_METHODS)
    p.add_argument("--calibration-size", type=Number(int, 1), default=300, help="number of calibration images")
    p.add_argument("--resize", action="store_true", help="resize calibration images to the model's input size")
    p.add_argument("--train-data", default=None, help="QAT training data (default: the calibration data)")
    p.add_argument("--qat-lr", type=float, default=1e-3)
    p.add_argument("--qat-steps", type=Number(int, 1), default=None, help="stop QAT after this many steps (quick runs)")
    p.add_argument("--parity-inputs", type=Number(int, 1), default=16, help="images for the PyTorch-vs-ONNX check")
    p.add_argument("--atol", type=float, default=1e-4, help="parity tolerance, relative to max |logit|")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    track_explicit(p)  # a typed flag this export would not read is refused by name (see run)
    return p


def run(args) -> int:
    from ..export import check_parity, export_fp16, export_onnx
    from ..export.quantize import file_size

    out = Path(args.output)
    if out.suffix != ".onnx":
        raise LightnnError(f"--output {args.output!r} must end in .onnx")
    src = str(args.source)
    _refuse_unread(args, src.endswith(".onnx"))
    summary: dict = {"source": src, "output": str(out)}
    model, fp32, size, norm = _source(args, src, out)
    images = _image_reader(args, size, norm)
    if model is not None:
        export_onnx(model if norm is None else _with_norm(model, norm), fp32, input_size=size, opset=args.opset,
                    dynamic_batch=not args.static_batch, fold_bn=not args.no_fold_bn)
        par = check_parity(model, fp32, images(args.parity_inputs).images, atol=args.atol)
        summary["fp32"] = {"path": str(fp32), "bytes": file_size(fp32), **par.as_dict()}
    if args.int8 or args.qat_epochs:
        if not args.calibration_data:
            raise LightnnError("--int8/--qat-epochs need --calibration-data (a folder or zip of images, or 'sample')")
        summary["int8"] = (_qat(args, model, fp32, out, size, norm, images) if args.qat_epochs
                           else _int8(args, fp32, out, images, model is None))
    elif args.fp16:
        export_fp16(fp32, out)
        summary["fp16"] = {"path": str(out), "bytes": file_size(out), "size_ratio": file_size(out) / file_size(fp32)}
    _print(args, summary)
    return 0


def _refuse_unread(args, is_onnx: bool) -> None:
    """A typed flag this export would not read is an error naming it."""
    onnx_in = "does not apply to an ONNX source (it is already exported)"
    qat_out = "does not apply to --qat-epochs (the QAT int8 export sets its own batch axis and BatchNorm folding)"
    refuse_inapplicable(args, [
        *((k, is_onnx, onnx_in) for k in ("input_size", "opset", "static_batch", "no_fold_bn", "parity_inputs",
                                          "atol", "qat_epochs")),
        *((k, bool(args.qat_epochs), qat_out) for k in ("static_batch", "no_fold_bn")),
        ("calibration_method", not args.int8, "applies to --int8 only (QAT learns its ranges)"),
        ("calibration_size", not (args.int8 or args.qat_epochs), "applies to --int8 / --qat-epochs only"),
        *((k, not args.qat_epochs, "needs --qat-epochs") for k in ("train_data", "qat_lr", "qat_steps")),
        ("calibration_data", is_onnx and not args.int8, "is not read converting an ONNX model to fp16"),
        ("resize", is_onnx and not args.int8, "is not read converting an ONNX model to fp16"),
        ("resize", not args.calibration_data, "needs --calibration-data (the shipped sample is always resized)"),
    ])


def _source(args, src: str, out: Path):
    """(model or None for an ONNX source, the fp32 ONNX path, the input size, the normalization or None)."""
    from ..export import resolve_model
    from ..export.onnx import model_input_size, onnx_input_size, source_normalization

    if src.endswith(".onnx"):
        if not (args.int8 or args.fp16):
            raise LightnnError(f"{src!r} is already ONNX: pass --int8 or --fp16 to convert it")
        if not Path(src).is_file():
            raise LightnnError(f"ONNX model {src!r} does not exist")
        return None, Path(src), onnx_input_size(Path(src)), source_normalization(src)
    model = resolve_model(src).eval()
    fp32 = out if not (args.int8 or args.fp16 or args.qat_epochs) else _sibling(out, "fp32")
    return model, fp32, model_input_size(model, args.input_size), source_normalization(src, model)


def _image_reader(args, size, norm):
    """``images(n, split)``: real images for parity/calibration, the given data or else the shipped sample resized
    to the model."""
    from ..export.calib import load_images

    mean, std = (norm["mean"], norm["std"]) if norm else (None, None)

    def images(n: int, split: str = "all"):
        data = args.calibration_data or "sample"
        return load_images(data, size, limit=n, resize=args.resize or not args.calibration_data, mean=mean,
                           std=std, split=split)

    return images


def _qat(args, model, fp32: Path, out: Path, size, norm, images) -> dict:
    from ..data import load_dataset
    from ..export import qat_stage
    from ..export.quantize import file_size

    calib = images(args.calibration_size)
    train = load_dataset(args.train_data or args.calibration_data, split="train")
    if tuple(train.image_size) != tuple(size):
        raise LightnnError(f"QAT data {train.source!r} is {train.image_size}, the model takes {size}")
    check = images(min(64, args.calibration_size), split="val")
    mean, std = (norm["mean"], norm["std"]) if norm else (None, None)
    # the oracle for a QAT export is the fake-quantized PyTorch model it came from
    _, rep = qat_stage(model, train, calib, out, check=check, input_size=size, opset=args.opset,
                       epochs=args.qat_epochs, lr=args.qat_lr, max_steps=args.qat_steps, mean=mean, std=std)
    return {**rep, "size_ratio": rep["bytes"] / file_size(fp32)}


def _int8(args, fp32: Path, out: Path, images, is_onnx: bool) -> dict:
    import numpy as np

    from ..export import quantize_int8
    from ..export.quantize import file_size
    from ..runtime import OrtSession

    quantize_int8(fp32, out, images(args.calibration_size), method=args.calibration_method)
    check = images(min(64, args.calibration_size), split="val" if not is_onnx else "all")
    got = OrtSession(out, threads=1).run(check.images).argmax(1)
    ref = OrtSession(fp32, threads=1).run(check.images).argmax(1)
    return {"path": str(out), "bytes": file_size(out), "size_ratio": file_size(out) / file_size(fp32),
            "top1_agreement": float(np.mean(got == ref)), "n": len(check), "reference": "fp32-onnx",
            "method": args.calibration_method}


def _print(args, summary: dict) -> None:
    if args.json:
        print(json.dumps(summary, indent=1))
        return
    if "fp32" in summary:
        f = summary["fp32"]
        print(f"wrote {f['path']} ({f['bytes'] / 1e6:.2f} MB); parity vs PyTorch on {f['n']} images: "
              f"max |diff| {f['max_abs_diff']:.2e}, top-1 agreement {f['top1_agreement']:.1%}")
    for k in ("int8", "fp16"):
        if k in summary:
            s = summary[k]
            ref = "the QAT PyTorch model" if s.get("reference") == "qat-pytorch" else "fp32"
            extra = f", top-1 agreement with {ref} {s['top1_agreement']:.1%} on {s['n']} images" if k == "int8" else ""
            print(f"wrote {s['path']} ({s['bytes'] / 1e6:.2f} MB, {s['size_ratio']:.3f}x fp32){extra}")


def _with_norm(model, norm):
    from ..models import record_update

    return record_update(model, normalize=norm)


def _sibling(out: Path, tag: str) -> Path:
    """``m.int8.onnx`` -> ``m.fp32.onnx``: where the float model of a converted export goes."""
    stem = out.stem
    for t in (".int8", ".qat", ".fp16"):
        if stem.endswith(t):
            stem = stem[: -len(t)]
    return out.with_name(f"{stem}.{tag}.onnx")
