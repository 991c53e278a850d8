"""Deployment runtimes: :class:`OrtSession` (ONNX Runtime, fp32 or int8) and its latency backends.

Importing this package registers the ``"onnxruntime"`` and ``"onnxruntime-int8"`` backends of
:func:`lightnn.profile.measure_latency` (``import lightnn`` does, so they are always there); the profiler owns the
backend registry and never imports a runtime itself.
"""

from .ort import OrtSession

__all__ = ["OrtSession"]
