"""Post-training static int8 with ONNX Runtime's quantizer, on the recipe that is actually fast on CPU.

Run naively (``quantize_static`` defaults: QDQ with int8 activations, per-tensor weights, no pre-processing), ONNX
Runtime's quantizer produces a MobileNetV2 that is *slower* than fp32 on x86 (0.4-0.6x in ``benchmarks/deploy.py``):
without constant folding and shape inference first, the exported ReLU6 (Clip with constant-node bounds) and its
neighbours are not matched, so after ONNX Runtime's fusions only 28 of the 52 convolutions run as QLinearConv; the
other 24 run in float between 98 DequantizeLinear and 40 QuantizeLinear nodes and 32 layout transposes (measured with
:func:`runtime_op_types`). With the recipe below all 52 are QLinearConv and the graph quantizes once at the input
and dequantizes once at the output. lightnn always takes the fast path:

1. ``quant_pre_process``: symbolic + ONNX shape inference and graph optimization (fusions) before quantization,
   so every tensor has a shape and Conv/BN/ReLU/Clip are single nodes when Q/DQ pairs are placed;
2. uint8 (affine) activations and int8 symmetric per-channel weights (Jacob et al. 2018; Krishnamoorthi 2018,
   "Quantizing deep convolutional networks for efficient inference", per-channel weights recover most accuracy);
3. ``reduce_range`` (7-bit weights) only on x86 without VNNI, where u8 x s8 products can saturate;
4. the QDQ format, which ONNX Runtime fuses into QLinear kernels at load (``benchmarks/deploy.py`` measures the
   alternative QOperator format too).

Calibration observes activations on a few hundred real images with min-max, percentile or entropy (KL) ranges.
:func:`quantize_report` measures what the int8 model gives (size on disk, accuracy, latency at batch 1 and 32)
and, when int8 is not faster than fp32, searches for a *mixed* model that keeps the slow op types in float —
it never ships a slower model silently. Float16 (weights stored as half) is a third option, :func:`export_fp16`.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import DataError, LightnnError
from ..utils.io import atomic_write_bytes
from .calib import ImageSet, load_images
from ..profile.latency import LatencyResult, interleaved
from ..runtime import OrtSession

__all__ = ["quantize_int8", "quantize_naive", "quantize_report", "export_fp16", "cpu_has_vnni", "QuantReport",
           "CALIBRATION_METHODS", "QUANT_FORMATS", "as_image_set", "evaluate_onnx", "op_type_times", "file_size", "runtime_op_types"]

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
QUANT_FORMATS = ("qdq", "qoperator")  # what quantize_int8(fmt=...) writes


def cpu_has_vnni() -> bool:
    """True where the CPU has 8-bit dot-product instructions (AVX512-VNNI / AVX-VNNI / AMX, or any ARM)."""
    import platform

    if platform.machine().lower() in ("arm64", "aarch64"):
        return True
    from ..utils.machine import cpu_flags

    flags = cpu_flags()
    if flags is None:
        return True  # cannot tell: 8-bit weights are the better default on modern CPUs
    return any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def file_size(path: str | os.PathLike) -> int:
    return Path(path).stat().st_size


class _Reader:
    """A ``CalibrationDataReader`` over an in-memory array, in batches (the model's batch axis is dynamic)."""

    def __init__(self, input_name: str, images: np.ndarray, batch_size: int) -> None:
        self.input_name, self.images, self.batch_size = input_name, images, batch_size
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter({self.input_name: self.images[i:i + self.batch_size]}
                        for i in range(0, len(self.images), self.batch_size))


def _reader_class():
    from onnxruntime.quantization import CalibrationDataReader

    # ORT checks isinstance(reader, CalibrationDataReader); subclass lazily so importing lightnn stays light.
    return type("LightnnCalibrationReader", (_Reader, CalibrationDataReader), {})


def _input_meta(path: str | os.PathLike) -> tuple[str, tuple[int, int, int] | None, int | None]:
    import onnx

    from .onnx import onnx_input_size

    m = onnx.load(str(path), load_external_data=False)
    inp = m.graph.input[0]
    d0 = inp.type.tensor_type.shape.dim[0] if inp.type.tensor_type.shape.dim else None
    fixed = d0.dim_value if d0 is not None and d0.HasField("dim_value") and d0.dim_value > 0 else None
    return inp.name, onnx_input_size(path), fixed


def as_image_set(data: Any, input_size: Sequence[int], limit: int | None = 300, resize: bool = False,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 split: str = "all") -> ImageSet:
    """Calibration/validation data as an :class:`ImageSet`: an ImageSet, an (N, C, H, W) array, or a path."""
    if isinstance(data, ImageSet):
        return data
    if hasattr(data, "detach"):
        data = data.detach().cpu().numpy()
    if isinstance(data, np.ndarray):
        if data.ndim != 4 or tuple(data.shape[1:]) != tuple(input_size):
            raise DataError(f"calibration array has shape {tuple(data.shape)}, expected (N, *{tuple(input_size)})")
        if len(data) == 0:
            raise DataError("calibration array holds no images")
        return ImageSet(np.ascontiguousarray(data[:limit] if limit else data, np.float32), None, [], "<array>")
    if data is None:
        raise DataError("static int8 needs calibration data (a folder or zip of images, an array, or 'sample')")
    return load_images(data, input_size, limit=limit, resize=resize, mean=mean, std=std, split=split)


def _method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    table = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
             "entropy": CalibrationMethod.Entropy}
    if name not in table:
        raise LightnnError(f"calibration method must be one of {list(table)}, got {name!r}")
    return table[name]


def _preprocess(src: Path, dst: Path) -> Path:
    """Shape inference + graph optimization before quantization (the step naive recipes skip)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
    except Exception:  # symbolic shape inference does not know every op; ONNX's own inference still helps
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    return dst


def quantize_int8(
    onnx_fp32_path: str | os.PathLike,
    out_path: str | os.PathLike,
    calibration_data: Any,
    method: str = "minmax",
    per_channel: bool = True,
    fmt: str = "qdq",
    percentile: float = 99.999,
    reduce_range: bool | None = None,
    op_types_to_keep_float: Sequence[str] = (),
    nodes_to_exclude: Sequence[str] = (),
    preprocess: bool = True,
    calib_limit: int = 300,
    calib_batch: int = 16,
    resize: bool = False,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    activation_ranges: dict[str, list[dict[str, Any]]] | None = None,
) -> Path:
    """Quantize an fp32 ONNX model to static int8 with the fast recipe (module docstring) and return the path.

    ``calibration_data``: an :class:`ImageSet`, an (N, C, H, W) normalized array, a folder/zip of images or
    ``"sample"`` (at most ``calib_limit`` images are used). ``method``: ``"minmax"``, ``"percentile"`` (clip at
    ``percentile``) or ``"entropy"`` (KL divergence, TensorRT's method). ``op_types_to_keep_float`` (e.g.
    ``["Add"]``) and ``nodes_to_exclude`` give a mixed model (in the QDQ format an op whose neighbours are both
    quantized, such as a residual Add, is still fused into its int8 kernel by ONNX Runtime: check with
    :func:`runtime_op_types`, or use ``fmt="qoperator"``). ``activation_ranges``
    (``{tensor: [{"rmin": .., "rmax": ..}]}``, e.g. ranges learned by QAT) override calibration for those tensors.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    src = Path(onnx_fp32_path)
    if not src.is_file():
        raise LightnnError(f"ONNX model {str(src)!r} does not exist")
    if fmt not in QUANT_FORMATS:
        raise LightnnError(f"format must be 'qdq' or 'qoperator', got {fmt!r}")
    input_name, size, fixed_batch = _input_meta(src)
    if size is None:
        raise LightnnError(f"ONNX model {str(src)!r} has no static (C, H, W) input size to calibrate at")
    data = as_image_set(calibration_data, size, calib_limit, resize, mean, std)
    if reduce_range is None:
        reduce_range = not cpu_has_vnni()
    keep = {t.strip() for t in op_types_to_keep_float if t.strip()}
    with tempfile.TemporaryDirectory(prefix="lightnn-q-") as d:
        model_in = _preprocess(src, Path(d) / "pre.onnx") if preprocess else src
        op_types = None
        if keep:
            from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

            reg = QDQRegistry if fmt == "qdq" else QLinearOpsRegistry
            op_types = [t for t in reg if t not in keep]
        extra: dict[str, Any] = {"CalibPercentile": percentile, "ActivationSymmetric": False, "WeightSymmetric": True}
        if activation_ranges:
            names = _tensor_names(model_in)
            kept = {k: v for k, v in activation_ranges.items() if k in names}
            if kept:
                extra["TensorQuantOverrides"] = kept
        bs = fixed_batch or min(calib_batch, len(data))
        # equal batches: the histogram calibrators (percentile, entropy) stack per-batch outputs
        images = data.images[: len(data) // bs * bs]
        reader = _reader_class()(input_name, images, bs)
        tmp_out = Path(d) / "int8.onnx"
        try:
            quantize_static(
                str(model_in), str(tmp_out), reader,
                quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
                op_types_to_quantize=op_types,
                per_channel=per_channel,
                reduce_range=reduce_range,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=list(nodes_to_exclude) or None,
                calibrate_method=_method(method),
                extra_options=extra,
            )
        except LightnnError:
            raise
        except Exception as e:
            raise LightnnError(f"ONNX Runtime could not quantize {str(src)!r}: {type(e).__name__}: "
                               f"{str(e).splitlines()[0][:300]}") from None
        out = Path(out_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_bytes(out, _compact(tmp_out, _tensor_names(model_in)))


def _compact(path: Path, keep: set[str]) -> bytes:
    """The quantized model without what only bloats the file: value_info (ONNX Runtime infers shapes at load),
    doc strings, and the long names the quantizer derives for its Q/DQ tensors and nodes ("<tensor>_QuantizeLinear_
    Output" ...), which become short ids. Tensors of the float model keep their names. On ShuffleNet V2 the names
    alone were 8% of the int8 file."""
    import onnx

    m = onnx.load(str(path))
    g = m.graph
    del g.value_info[:]
    outer = {i.name for i in g.input} | {o.name for o in g.output} | keep
    new: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in outer:
            return name
        if name not in new:
            new[name] = f"q{len(new)}"
        return new[name]

    for init in g.initializer:
        init.name = short(init.name)
        init.doc_string = ""
    for node in g.node:
        node.input[:] = [short(t) for t in node.input]
        node.output[:] = [short(t) for t in node.output]
        node.doc_string = ""
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            node.name = ""
    return m.SerializeToString()


def _tensor_names(path: Path) -> set[str]:
    import onnx

    g = onnx.load(str(path)).graph
    return {t for n in g.node for t in (*n.input, *n.output)} | {i.name for i in g.input}


def quantize_naive(onnx_fp32_path: str | os.PathLike, out_path: str | os.PathLike, calibration_data: Any,
                   calib_limit: int = 300) -> Path:
    """``quantize_static`` with its defaults and no pre-processing: the slow baseline people report."""
    from onnxruntime.quantization import quantize_static

    src = Path(onnx_fp32_path)
    input_name, size, fixed_batch = _input_meta(src)
    data = as_image_set(calibration_data, size, calib_limit)
    with tempfile.TemporaryDirectory(prefix="lightnn-qn-") as d:
        tmp = Path(d) / "naive.onnx"
        quantize_static(str(src), str(tmp), _reader_class()(input_name, data.images, fixed_batch or 16))
        return atomic_write_bytes(out_path, tmp.read_bytes())


def export_fp16(onnx_fp32_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Store every float32 weight as float16 (half the size on disk); compute stays float32.

    Each converted initializer feeds a ``Cast(to=float)`` that ONNX Runtime constant-folds at load, so the model
    runs on every CPU (x86 ONNX Runtime has few fp16 kernels) with the accuracy of fp16-rounded weights.
    Written with ``onnx`` + numpy (onnxconverter-common is not a dependency).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(str(onnx_fp32_path))
    g = m.graph
    new_inits, casts = [], []
    for init in g.initializer:
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < 16:
            new_inits.append(init)  # small tensors (shapes, scalars) stay as they are
            continue
        arr = numpy_helper.to_array(init).astype(np.float16)
        half_name = init.name + "_fp16"
        new_inits.append(numpy_helper.from_array(arr, half_name))
        casts.append(helper.make_node("Cast", [half_name], [init.name], to=TensorProto.FLOAT,
                                      name=f"{init.name}_cast"))
    del g.initializer[:]
    g.initializer.extend(new_inits)
    nodes = list(g.node)
    del g.node[:]
    g.node.extend(casts + nodes)
    # drop value_info / graph inputs that shadow converted initializers (old IR versions list them as inputs)
    names = {c.output[0] for c in casts}
    keep_inputs = [i for i in g.input if i.name not in names]
    del g.input[:]
    g.input.extend(keep_inputs)
    onnx.checker.check_model(m)
    return atomic_write_bytes(out_path, m.SerializeToString())


def runtime_op_types(path: str | os.PathLike) -> dict[str, int]:
    """Op-type counts of the graph ONNX Runtime actually executes (after its QDQ -> QLinear fusions): the honest
    answer to "which layers run in int8" (``QLinearConv``, ``QGemm`` ...) and which stay float."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="lightnn-opt-") as d:
        so = ort.SessionOptions()
        so.optimized_model_filepath = str(Path(d) / "opt.onnx")
        so.log_severity_level = 3
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        counts: dict[str, int] = {}
        for n in onnx.load(so.optimized_model_filepath).graph.node:
            counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


def evaluate_onnx(path: str | os.PathLike, data: ImageSet, threads: int = 1, batch: int = 64) -> float | None:
    """Top-1 accuracy (%) of an ONNX classifier on labelled images (:func:`lightnn.train.evaluate`), or None
    without labels."""
    if data.labels is None:
        return None
    from ..train import array_batches, evaluate

    return float(evaluate(OrtSession(path, threads=threads), array_batches(data.images, data.labels, batch))["top1"])


def op_type_times(path: str | os.PathLike, input_size: Sequence[int], batch: int = 1, threads: int = 1,
                  runs: int = 10) -> dict[str, float]:
    """Milliseconds per run spent in each op type (ONNX Runtime's profiler, after its fusions).

    Quantized kernels are mapped to the float op they replace (QLinearConv -> Conv ...) so fp32 and int8
    profiles compare layer type by layer type; Q/DQ conversions are listed as ``QuantizeLinear`` /
    ``DequantizeLinear``.
    """
    import json

    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    with tempfile.TemporaryDirectory(prefix="lightnn-prof-") as d:
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(d) / "p")
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        x = np.random.default_rng(0).standard_normal((batch, *input_size), dtype=np.float32)
        for _ in range(3):
            sess.run(None, {name: x})
        for _ in range(runs):
            sess.run(None, {name: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    totals: dict[str, float] = {}
    for e in events:
        args = e.get("args", {})
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        op = _float_op(args.get("op_name", "?"))
        totals[op] = totals.get(op, 0.0) + e.get("dur", 0) / 1e3
    n = runs + 3
    return {k: v / n for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


_QOPS = {"QLinearConv": "Conv", "QLinearAdd": "Add", "QLinearMul": "Mul",
         "QLinearGlobalAveragePool": "GlobalAveragePool",
         "QLinearAveragePool": "AveragePool", "QGemm": "Gemm", "QLinearMatMul": "MatMul", "QLinearConcat": "Concat",
         "QLinearSigmoid": "Sigmoid", "QLinearLeakyRelu": "LeakyRelu", "FusedConv": "Conv", "FusedGemm": "Gemm",
         "NhwcMaxPool": "MaxPool", "QLinearSoftmax": "Softmax", "QLinearReduceMean": "ReduceMean"}


def _float_op(op: str) -> str:
    return _QOPS.get(op, op)


@dataclass
class QuantReport:
    """What the int8 model gives, measured: size on disk, accuracy and latency before/after.

    ``int8_*`` always describe the fully quantized model. When int8 was not fast enough and the mixed-model search
    found op types worth keeping in float, that model is written next to it (``mixed_path``) and measured in the
    same interleaved rounds: ``latency["mixed@<batch>"]``, ``mixed_speedup``, ``mixed_top1``.
    """

    fp32_path: str
    int8_path: str
    method: str
    fp32_bytes: int
    int8_bytes: int
    fp32_top1: float | None = None
    int8_top1: float | None = None
    top1_agreement: float | None = None
    n_val: int = 0
    latency: dict[str, dict[str, Any]] = field(default_factory=dict)  # "fp32@1" -> LatencyResult.to_dict()
    speedup: dict[str, float] = field(default_factory=dict)  # "1" -> fp32 median / int8 median
    kept_float: list[str] = field(default_factory=list)  # op types the mixed model keeps in float
    mixed_path: str | None = None
    mixed_bytes: int | None = None
    mixed_top1: float | None = None
    mixed_agreement: float | None = None
    mixed_speedup: dict[str, float] = field(default_factory=dict)  # "1" -> fp32 median / mixed median
    verdict: str = ""

    @property
    def size_ratio(self) -> float:
        return self.int8_bytes / self.fp32_bytes

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["size_ratio"] = self.size_ratio
        return d

    def markdown(self) -> str:
        def acc(v):
            return "-" if v is None else f"{v:.2f}%"

        mixed = self.mixed_path is not None
        head = "| | fp32 | int8 |" + (f" mixed ({', '.join(self.kept_float)} in float) |" if mixed else "")
        lines = [head, "|---|---|---|" + ("---|" if mixed else ""),
                 f"| size on disk | {self.fp32_bytes / 1e6:.2f} MB | {self.int8_bytes / 1e6:.2f} MB "
                 f"({self.size_ratio:.3f}x) |"
                 + (f" {self.mixed_bytes / 1e6:.2f} MB ({self.mixed_bytes / self.fp32_bytes:.3f}x) |" if mixed else ""),
                 f"| top-1 ({self.n_val} val images) | {acc(self.fp32_top1)} | {acc(self.int8_top1)} |"
                 + (f" {acc(self.mixed_top1)} |" if mixed else "")]
        if self.top1_agreement is not None:
            lines.append(f"| top-1 agreement with fp32 | | {self.top1_agreement:.2f}% |"
                         + (f" {self.mixed_agreement:.2f}% |" if mixed and self.mixed_agreement is not None
                            else " |" if mixed else ""))
        for b, s in self.speedup.items():
            f, q = self.latency[f"fp32@{b}"], self.latency[f"int8@{b}"]
            row = (f"| latency batch {b} (median, IQR) | {f['median_ms']:.2f} ms ({f['iqr_ms']:.2f}) | "
                   f"{q['median_ms']:.2f} ms ({q['iqr_ms']:.2f}), {s:.2f}x |")
            if mixed:
                m = self.latency[f"mixed@{b}"]
                row += f" {m['median_ms']:.2f} ms ({m['iqr_ms']:.2f}), {self.mixed_speedup[b]:.2f}x |"
            lines.append(row)
        return "\n".join(lines) + (f"\n\n{self.verdict}\n" if self.verdict else "\n")


def _compare_latency(models: dict[str, str | Path], size: Sequence[int], batch: int, threads: int,
                     runs: int) -> dict[str, LatencyResult]:
    # Interleave the models in rounds so machine noise hits them alike; each ratio is of the pooled medians.
    sessions = {k: OrtSession(p, threads=threads, spinning=False) for k, p in models.items()}
    x = next(iter(sessions.values())).random_input(batch, size)
    return interleaved({k: s.bind(x) for k, s in sessions.items()}, x.shape, threads, rounds=3,
                       runs=max(3, runs // 3), warmup=2)


def _default_mixed_path(out: Path) -> Path:
    return out.with_name(out.name[:-len(".onnx")] + ".mixed.onnx" if out.name.endswith(".onnx")
                         else out.name + ".mixed.onnx")


def quantize_report(
    onnx_fp32_path: str | os.PathLike,
    out_path: str | os.PathLike,
    calibration_data: Any,
    val_data: Any = None,
    method: str = "minmax",
    batches: Sequence[int] = (1, 32),
    threads: int = 1,
    runs: int = 20,
    auto_mixed: bool = True,
    min_speedup: float = 1.0,
    mixed_path: str | os.PathLike | None = None,
    **quant_kwargs: Any,
) -> QuantReport:
    """Quantize with :func:`quantize_int8`, then measure size, accuracy (when ``val_data`` has labels) and latency
    before/after at each batch size in the same process.

    When the int8 model is not at least ``min_speedup`` times faster than fp32 at the first batch size and
    ``auto_mixed`` is set, the op types int8 spends more time on than fp32 (ONNX Runtime's per-node profile) are
    kept in float one by one while that makes the model faster; the result is written to ``mixed_path`` (default:
    ``<out>.mixed.onnx``) and the int8 model at ``out_path`` is kept as it is. fp32, int8 and the mixed model are
    then timed in the same interleaved rounds at every batch size. If nothing beats fp32 the report says so in
    ``verdict`` — the caller decides what to ship (the pipeline ships the fastest).
    """
    fp32 = Path(onnx_fp32_path)
    _, size, _ = _input_meta(fp32)
    if size is None:
        raise LightnnError(f"ONNX model {str(fp32)!r} has no static (C, H, W) input size")
    calib = as_image_set(calibration_data, size, quant_kwargs.pop("calib_limit", 300),
                         quant_kwargs.pop("resize", False), quant_kwargs.get("mean"), quant_kwargs.get("std"))
    out = quantize_int8(fp32, out_path, calib, method=method, **quant_kwargs)
    b0 = batches[0]
    models: dict[str, Path] = {"fp32": fp32, "int8": Path(out)}
    kept: list[str] = []
    first = _compare_latency(models, size, b0, threads, runs)
    verdict = ""
    if auto_mixed and first["fp32"].median_ms / first["int8"].median_ms < min_speedup:
        mixed = Path(mixed_path) if mixed_path is not None else _default_mixed_path(Path(out))
        kept = _search_mixed(fp32, Path(out), mixed, calib, size, b0, threads, runs, method, first["int8"],
                             quant_kwargs)
        if kept:
            models["mixed"] = mixed
            verdict = (f"int8 was not faster than fp32 for every layer type; a mixed model keeps "
                       f"{', '.join(kept)} in float ({mixed.name}).")
    rep = QuantReport(str(fp32), str(out), method, file_size(fp32), file_size(out), kept_float=kept)
    if "mixed" in models:
        rep.mixed_path, rep.mixed_bytes = str(models["mixed"]), file_size(models["mixed"])
    for i, b in enumerate(batches):
        res = _compare_latency(models, size, b, threads, runs if i == 0 else max(6, runs // 3))
        for k, r in res.items():
            rep.latency[f"{k}@{b}"] = r.to_dict()
        rep.speedup[str(b)] = res["fp32"].median_ms / res["int8"].median_ms
        if "mixed" in res:
            rep.mixed_speedup[str(b)] = res["fp32"].median_ms / res["mixed"].median_ms
    best = {b: max(s, rep.mixed_speedup.get(b, 0.0)) for b, s in rep.speedup.items()}
    slow = [b for b, s in best.items() if s < min_speedup]
    if slow:
        need = "faster than fp32" if min_speedup == 1.0 else f"{min_speedup:.2f}x faster than fp32 (required)"
        what = "int8 (nor the mixed model) is NOT" if "mixed" in models else "int8 is NOT"
        verdict += (f" {what} {need} at batch {', '.join(slow)} on this CPU "
                    f"({', '.join(f'{best[b]:.2f}x' for b in slow)}); prefer the fp32 model there.")
    rep.verdict = verdict.strip()
    if val_data is not None:
        val = as_image_set(val_data, size, None, quant_kwargs.get("resize", False), quant_kwargs.get("mean"),
                           quant_kwargs.get("std"))
        rep.n_val = len(val)
        rep.fp32_top1 = evaluate_onnx(fp32, val, threads)
        rep.int8_top1 = evaluate_onnx(out, val, threads)
        rep.top1_agreement = _agreement(fp32, out, val, threads)
        if "mixed" in models:
            rep.mixed_top1 = evaluate_onnx(models["mixed"], val, threads)
            rep.mixed_agreement = _agreement(fp32, models["mixed"], val, threads)
    return rep


def _agreement(ref: Path, other: str | Path, val: ImageSet, threads: int) -> float:
    """Top-1 agreement (%) of ``other`` with ``ref`` on ``val``."""
    a, b = OrtSession(ref, threads=threads), OrtSession(other, threads=threads)
    agree = [np.mean(a.run(x).argmax(1) == b.run(x).argmax(1)) * len(x) for x in val.batches(64)]
    return 100.0 * float(np.sum(agree)) / len(val)


def _search_mixed(fp32: Path, int8: Path, mixed: Path, calib: ImageSet, size, batch: int, threads: int, runs: int,
                  method: str, best: LatencyResult, quant_kwargs: dict) -> list[str]:
    """Greedy: keep in float the op types whose int8 kernels take longer than their float ones, while it helps.
    The best model found is written to ``mixed``; returns the op types it keeps in float ([] = none helped)."""
    tf = op_type_times(fp32, size, batch, threads)
    tq = op_type_times(int8, size, batch, threads)
    candidates = [op for op, t in sorted(tq.items(), key=lambda kv: -kv[1])
                  if op not in ("QuantizeLinear", "DequantizeLinear") and t > tf.get(op, 0.0)]
    kept: list[str] = []
    current = int8
    base_keep = list(quant_kwargs.get("op_types_to_keep_float", ()))
    kw = {k: v for k, v in quant_kwargs.items() if k != "op_types_to_keep_float"}
    with tempfile.TemporaryDirectory(prefix="lightnn-mix-") as d:
        for op in candidates:
            trial = Path(d) / f"mixed_{len(kept)}_{op}.onnx"
            quantize_int8(fp32, trial, calib, method=method, op_types_to_keep_float=base_keep + kept + [op], **kw)
            lat = _compare_latency({"current": current, "trial": trial}, size, batch, threads, runs)["trial"]
            if lat.median_ms < best.median_ms * 0.97:
                kept.append(op)
                best = lat
                atomic_write_bytes(mixed, trial.read_bytes())
                current = mixed
    return kept
