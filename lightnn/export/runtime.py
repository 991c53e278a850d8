"""ONNX Runtime sessions and latency measurement (the deployment runtime, fp32 or int8).

Latency follows one protocol everywhere in lightnn: fixed thread count, warm-up runs that are discarded, then
``runs`` timed calls of one batch; we report the median and the inter-quartile range (IQR), because on a shared
machine the mean is dominated by the slowest outliers. Speed claims are ratios of two medians measured in the
same process, back to back.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import LightnnError

__all__ = ["OrtSession", "Latency", "time_fn", "interleaved", "measure_ort_latency", "measure_eager_latency",
           "register_backends"]


@dataclass
class Latency:
    """Wall-clock milliseconds per call of one batch: median and spread over ``runs`` timed calls."""

    median_ms: float
    q1_ms: float
    q3_ms: float
    min_ms: float
    runs: int
    batch: int
    threads: int

    @property
    def iqr_ms(self) -> float:
        return self.q3_ms - self.q1_ms

    @property
    def per_image_ms(self) -> float:
        return self.median_ms / self.batch

    def as_dict(self) -> dict[str, float]:
        d = asdict(self)
        d["iqr_ms"] = self.iqr_ms
        return d

    def __str__(self) -> str:
        return f"{self.median_ms:.2f} ms (IQR {self.iqr_ms:.2f})"


def time_fn(fn: Callable[[], Any], warmup: int = 3, runs: int = 20, batch: int = 1, threads: int = 0,
            min_time_s: float = 0.0) -> Latency:
    """Time ``fn()``: ``warmup`` discarded calls, then at least ``runs`` timed calls (and ``min_time_s``)."""
    for _ in range(max(0, warmup)):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < max(1, runs) or (time.perf_counter() - start) < min_time_s:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    q1, med, q3 = np.percentile(times, [25, 50, 75])
    return Latency(float(med), float(q1), float(q3), float(min(times)), len(times), batch, threads)


class OrtSession:
    """An ``onnxruntime.InferenceSession`` with lightnn's defaults: fixed threads, full graph optimization.

    ``threads`` is the intra-op pool size (0 lets ONNX Runtime use every core); ``inter_threads`` only matters for
    graphs with parallel branches run in parallel mode. ``spinning=False`` makes idle pool threads sleep (fair
    comparisons of several sessions on a shared machine). ``run(x)`` takes a float32 NCHW batch and returns the
    first output as a numpy array.
    """

    def __init__(self, path: str | os.PathLike | bytes, threads: int = 1, inter_threads: int = 1,
                 providers: Sequence[str] | None = None, optimization: str = "all", spinning: bool = True) -> None:
        import onnxruntime as ort

        if not isinstance(path, bytes) and not Path(path).is_file():
            raise LightnnError(f"ONNX model {str(path)!r} does not exist")
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = int(inter_threads)
        so.graph_optimization_level = {
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[optimization]
        so.log_severity_level = 3
        if not spinning:
            # idle pool threads sleep instead of spinning: when several sessions are timed in turn on few cores,
            # the spinning threads of the last session would otherwise steal the CPU from the next one
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        available = ort.get_available_providers()
        providers = list(providers or ["CPUExecutionProvider"])
        missing = [p for p in providers if p not in available]
        if missing:
            raise LightnnError(f"ONNX Runtime providers {missing} are not available here (have {available})")
        try:
            self.session = ort.InferenceSession(path if isinstance(path, bytes) else str(path), so,
                                                providers=providers)
        except Exception as e:  # invalid model, unsupported op or opset
            first = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
            raise LightnnError(f"ONNX Runtime cannot load {str(path)[:200]!r}: {first}") from None
        self.path = path
        self.threads = int(threads)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        shape = inp.shape
        self.input_size = (tuple(int(d) for d in shape[1:])
                           if len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape[1:]) else None)
        self.fixed_batch = shape[0] if shape and isinstance(shape[0], int) and shape[0] > 0 else None

    def run(self, x: Any) -> np.ndarray:
        if hasattr(x, "detach"):
            x = x.detach().cpu().numpy()
        x = np.ascontiguousarray(x, dtype=np.float32)
        return self.session.run([self.output_name], {self.input_name: x})[0]

    __call__ = run

    def latency(self, batch: int = 1, warmup: int = 5, runs: int = 30, input_size: Sequence[int] | None = None,
                min_time_s: float = 0.0) -> Latency:
        size = tuple(input_size or self.input_size or ())
        if len(size) != 3:
            raise LightnnError(f"ONNX model {str(self.path)!r} has no static input size; pass input_size=(C, H, W)")
        if self.fixed_batch is not None and self.fixed_batch != batch:
            raise LightnnError(f"ONNX model {str(self.path)!r} was exported for batch {self.fixed_batch}, not {batch}")
        x = np.random.default_rng(0).standard_normal((batch, *size), dtype=np.float32)
        feed = {self.input_name: x}
        return time_fn(lambda: self.session.run([self.output_name], feed), warmup, runs, batch, self.threads,
                       min_time_s)


def measure_ort_latency(model: Any, input_size: Sequence[int] | None = None, batch: int = 1, threads: int = 1,
                        warmup: int = 5, runs: int = 30, **kwargs: Any) -> Latency:
    """Latency of ``model`` in ONNX Runtime: an ``.onnx`` path is timed as is; a module/name/checkpoint is first
    exported (BN folded) to a temporary file. ``input_size`` is (C, H, W) (or H)."""
    import tempfile

    if isinstance(model, (str, os.PathLike)) and str(model).endswith(".onnx"):
        sess = OrtSession(model, threads=threads)
        size = input_size if input_size is None or not isinstance(input_size, int) else (3, input_size, input_size)
        if size is not None and len(size) == 4:
            size = tuple(size)[1:]
        return sess.latency(batch, warmup, runs, size)
    from .onnx import export_onnx, model_input_size, resolve_model

    net = resolve_model(model)
    size = model_input_size(net, input_size)
    with tempfile.TemporaryDirectory(prefix="lightnn-ort-") as d:
        path = export_onnx(net, Path(d) / "model.onnx", input_size=size)
        sess = OrtSession(path, threads=threads)
        return sess.latency(batch, warmup, runs, size)


def measure_eager_latency(model: Any, input_size: Sequence[int], batch: int = 1, threads: int = 1,
                          warmup: int = 3, runs: int = 20, min_time_s: float = 0.0) -> Latency:
    """Latency of a PyTorch module in eager mode (eval, ``inference_mode``), with ``threads`` intra-op threads."""
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    model = model.eval()
    x = torch.randn(batch, *input_size)
    try:
        with torch.inference_mode():
            return time_fn(lambda: model(x), warmup, runs, batch, threads, min_time_s)
    finally:
        torch.set_num_threads(prev)


def interleaved(fns: dict[str, Callable[[], Any]], batch: int = 1, threads: int = 1, rounds: int = 5,
                runs: int = 10, warmup: int = 3) -> dict[str, Latency]:
    """Time several callables in alternating rounds (A B C, A B C, ...) so load on a shared machine hits each
    alike; each result pools the ``rounds * runs`` samples (median and IQR over all of them)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(max(1, rounds)):
        for k, fn in fns.items():
            for _ in range(max(1, runs)):
                t0 = time.perf_counter()
                fn()
                samples[k].append((time.perf_counter() - t0) * 1e3)
    out = {}
    for k, t in samples.items():
        q1, med, q3 = np.percentile(t, [25, 50, 75])
        out[k] = Latency(float(med), float(q1), float(q3), float(min(t)), len(t), batch, threads)
    return out


# --- the "onnxruntime" backends of lightnn.profile.measure_latency -------------------------------------------

_SESSION_CACHE: dict[str, Any] = {}


def _session_for(model: Any, example: Any, threads: int, int8: bool) -> OrtSession:
    """Export (and for int8 quantize) ``model`` once per (model, weights version, shape, threads)."""
    import tempfile

    from .onnx import export_onnx

    key = (id(model), tuple(example.shape), threads, int8, tuple(p._version for p in model.parameters()))
    hit = _SESSION_CACHE.get("entry")
    if hit is not None and hit[0] == key:
        return hit[1]
    with tempfile.TemporaryDirectory(prefix="lightnn-ortb-") as d:
        path = export_onnx(model, Path(d) / "m.onnx", input_size=tuple(example.shape[1:]))
        if int8:
            from .quantize import quantize_int8

            # latency does not depend on the calibration values; real data matters only for accuracy
            calib = np.random.default_rng(0).standard_normal((8, *example.shape[1:]), dtype=np.float32)
            path = quantize_int8(path, Path(d) / "m.int8.onnx", calib)
        sess = OrtSession(Path(path).read_bytes(), threads=threads)
    sess.path = f"<{getattr(model, 'lightnn_name', type(model).__name__)}{' int8' if int8 else ''}>"
    _SESSION_CACHE["entry"] = (key, sess)
    return sess


def _ort_backend(int8: bool):
    def backend(model: Any, example: Any, *, warmup: int, runs: int, threads: int,
                channels_last: bool) -> list[float]:
        sess = _session_for(model, example, threads, int8)
        x = example.detach().cpu().float().contiguous().numpy()
        feed = {sess.input_name: x}
        for _ in range(warmup):
            sess.session.run([sess.output_name], feed)
        out = []
        for _ in range(runs):
            t0 = time.perf_counter()
            sess.session.run([sess.output_name], feed)
            out.append((time.perf_counter() - t0) * 1e3)
        return out

    backend.__doc__ = (f"ONNX Runtime {'int8 (static, lightnn recipe)' if int8 else 'fp32'} on CPU: export with BN "
                       "folded, one session per (model, shape, threads), `threads` intra-op threads.")
    return backend


def register_backends() -> bool:
    """Register ``"onnxruntime"`` and ``"onnxruntime-int8"`` with :func:`lightnn.profile.measure_latency`."""
    try:
        from ..profile import register_latency_backend
    except ImportError:
        return False
    register_latency_backend("onnxruntime", _ort_backend(False))
    register_latency_backend("onnxruntime-int8", _ort_backend(True))
    return True


register_backends()
