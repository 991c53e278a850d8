"""The ``"onnxruntime"`` and ``"onnxruntime-int8"`` backends of :func:`lightnn.profile.measure_latency`.

A backend exports (and for int8 quantizes) the model it is given, so it lives here, above the profiler, and
registers itself into the profiler's backend registry when :mod:`lightnn.export` is imported (``import lightnn``
does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..profile.latency import register_latency_backend, time_callable
from ..models import model_name
from ..runtime import OrtSession


_SESSION_CACHE: dict[str, Any] = {}


def _session_for(model: Any, example: Any, threads: int, int8: bool) -> OrtSession:
    """Export (and for int8 quantize) ``model`` once per (model, weight shapes and versions, input shape, threads)."""
    import tempfile

    from .onnx import export_onnx

    key = (tuple(example.shape), threads, int8, tuple((tuple(p.shape), p._version) for p in model.parameters()))
    hit = _SESSION_CACHE.get("entry")
    if hit is not None and hit[0] is model and hit[1] == key:
        return hit[2]
    with tempfile.TemporaryDirectory(prefix="lightnn-ortb-") as d:
        path = export_onnx(model, Path(d) / "m.onnx", input_size=tuple(example.shape[1:]))
        if int8:
            from .quantize import quantize_int8

            # latency does not depend on the calibration values; real data matters only for accuracy
            calib = np.random.default_rng(0).standard_normal((8, *example.shape[1:]), dtype=np.float32)
            path = quantize_int8(path, Path(d) / "m.int8.onnx", calib)
        sess = OrtSession(Path(path).read_bytes(), threads=threads)
    sess.path = f"<{model_name(model)}{' int8' if int8 else ''}>"
    _SESSION_CACHE["entry"] = (model, key, sess)  # holding the model keeps another one from reusing its id
    return sess


def _ort_backend(int8: bool):
    def backend(model: Any, example: Any, *, warmup: int, runs: int, threads: int,
                channels_last: bool) -> list[float]:
        sess = _session_for(model, example, threads, int8)
        return time_callable(sess.bind(example.detach().cpu().float().numpy()), warmup, runs)

    backend.__doc__ = (f"ONNX Runtime {'int8 (static, lightnn recipe)' if int8 else 'fp32'} on CPU: export with BN "
                       "folded, one session per (model, shape, threads), `threads` intra-op threads.")
    return backend


register_latency_backend("onnxruntime", _ort_backend(False))
register_latency_backend("onnxruntime-int8", _ort_backend(True))
