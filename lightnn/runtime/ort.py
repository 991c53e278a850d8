"""ONNX Runtime sessions (the deployment runtime, fp32 or int8).

Latency follows one protocol everywhere in lightnn (:mod:`lightnn.profile.latency`): fixed thread count, warm-up runs
that are discarded, then ``runs`` timed calls of one batch, reported as a
:class:`~lightnn.profile.LatencyResult` (median and inter-quartile range: on a shared machine the mean is dominated
by the slowest outliers). Speed claims are ratios of two medians measured in the same process, back to back
(:func:`lightnn.profile.interleaved`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import LightnnError
from ..profile.latency import LatencyResult, time_callable

__all__ = ["OrtSession"]


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

    def bind(self, x: Any) -> Callable[[], Any]:
        """A no-argument call of the session on the fixed batch ``x`` (no conversion per call): what is timed."""
        feed = {self.input_name: np.ascontiguousarray(x, dtype=np.float32)}
        names = [self.output_name]
        return lambda: self.session.run(names, feed)

    def random_input(self, batch: int = 1, input_size: Sequence[int] | None = None) -> np.ndarray:
        """A seeded random float32 batch of the model's (or the given) (C, H, W) size, checked against the model."""
        size = tuple(input_size or self.input_size or ())
        if len(size) != 3:
            raise LightnnError(f"ONNX model {str(self.path)!r} has no static input size; pass input_size=(C, H, W)")
        if self.fixed_batch is not None and self.fixed_batch != batch:
            raise LightnnError(f"ONNX model {str(self.path)!r} was exported for batch {self.fixed_batch}, not {batch}")
        return np.random.default_rng(0).standard_normal((batch, *size), dtype=np.float32)

    def latency(self, batch: int = 1, warmup: int = 5, runs: int = 30,
                input_size: Sequence[int] | None = None) -> LatencyResult:
        x = self.random_input(batch, input_size)
        return LatencyResult(backend="onnxruntime", input_size=x.shape, threads=self.threads, channels_last=False,
                             warmup=warmup, samples_ms=time_callable(self.bind(x), warmup, runs))
