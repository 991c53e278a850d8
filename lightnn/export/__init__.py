"""Deployment: ONNX export with parity checks, ONNX Runtime sessions and latency, int8 (static and QAT), float16.

- :func:`export_onnx` (BN folded, dynamic batch) and :func:`check_parity` (max |diff|, top-1 agreement, enforced);
- :class:`OrtSession` (also the ``"onnxruntime"`` and ``"onnxruntime-int8"`` backends of
  :func:`lightnn.profile.measure_latency`);
- :func:`quantize_int8` (ONNX Runtime's static quantizer on the recipe that is fast on CPU) and
  :func:`quantize_report` (size, accuracy and latency before/after, mixed model when int8 is slower);
- :func:`qat_stage`: quantization-aware training as one stage (:func:`qat_training`'s fake-quantized model and
  callbacks, fine-tuned by ``lightnn.train.fit``, exported by :func:`export_qat_int8` as a QDQ int8 model, checked
  against the PyTorch model);
- :func:`export_fp16` (weights stored as float16).
"""

from . import backends  # noqa: F401  (registers the ONNX Runtime latency backends)
from .calib import ImageSet, load_images
from ..transforms.fold import fold_bn
from .onnx import DEFAULT_OPSET, ParityReport, check_parity, export_onnx, onnx_input_size, resolve_model
from .qat import convert_qat, export_qat_int8, prepare_qat, qat_stage, qat_training
from .quantize import (CALIBRATION_METHODS, QuantReport, export_fp16, op_type_times, quantize_int8, quantize_naive,
                       quantize_report, runtime_op_types)
from ..runtime import OrtSession

__all__ = ["export_onnx", "check_parity", "ParityReport", "resolve_model", "onnx_input_size", "DEFAULT_OPSET",
           "fold_bn", "OrtSession", "quantize_int8", "quantize_naive", "quantize_report", "QuantReport", "export_fp16",
           "op_type_times", "CALIBRATION_METHODS", "runtime_op_types", "prepare_qat", "qat_training", "qat_stage", "convert_qat",
           "export_qat_int8", "load_images", "ImageSet"]
