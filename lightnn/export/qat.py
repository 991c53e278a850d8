"""Quantization-aware training (QAT): fine-tune with simulated int8, then export an int8 ONNX model.

Following Jacob et al. 2018 ("Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference", section 3) and Krishnamoorthi 2018 (section 3.2-3.3):

- BatchNorm is folded into the convolutions first (``fold.py``), so training sees the weights that will be
  quantized; the folded BN statistics stay frozen during fine-tuning (the paper's "freeze BN" phase).
- Weights: per-output-channel symmetric int8, scale_c = max|W_c| / 127, W^ = clamp(round(W / s), -127, 127) s.
- Activations (every Conv/Linear input): affine uint8 with a range tracked by an exponential moving average of the
  batch min/max during training, x^ = (clamp(round(x / s) + z, 0, 255) - z) s, s = (max - min) / 255.
- Rounding uses the straight-through estimator: the gradient of round() is taken as 1 inside the range and 0 for
  clipped values.

Export (:func:`export_qat_int8`): the fine-tuned weights (already on the int8 grid) go to an fp32 ONNX graph, and
ONNX Runtime's static quantizer places Q/DQ nodes with lightnn's fast recipe (``quantize.py``); the activation
ranges learned in training override the calibration ranges (``TensorQuantOverrides``) and the weights quantize
exactly to the training grid (same symmetric per-channel scale), so the ONNX int8 model computes what was
trained. The module types below are registered as a checkpoint transform (``"fake_quant"``), so a QAT model
saves and reloads like any other lightnn model.
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import LightnnError
from ..models import model_normalization, record_edit, record_of, set_record
from ..ops.quant import ActRange, QATConv2d, QATLinear, fake_quant_act, fake_quant_weight
from ..transforms.fold import fold_bn
from ..transforms.quant import fake_quantize, swap_modules
from ..train import MaxSteps, QATObservers, TimeLimit, TrainConfig

__all__ = ["prepare_qat", "convert_qat", "qat_training", "qat_stage", "QAT_RECIPE", "export_qat_int8", "QATConv2d", "QATLinear",
           "fake_quant_weight", "fake_quant_act"]


def prepare_qat(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Fold BN, then replace every Conv2d/Linear with its fake-quantized version (records the transforms)."""
    m = fake_quantize(fold_bn(model, inplace=inplace))  # fold_bn records its own edit
    return record_edit(m, {"kind": "fake_quant", "bits": 8})


def convert_qat(model: nn.Module) -> tuple[nn.Module, dict[str, tuple[float, float]]]:
    """A plain float copy with the weights snapped to their int8 grid, and the learned activation range of
    each quantized layer's input: ``{module name: (lo, hi)}``."""
    m = copy.deepcopy(model).eval()
    ranges: dict[str, tuple[float, float]] = {}
    for name, mod in m.named_modules():
        if isinstance(mod, (QATConv2d, QATLinear)) and int(mod.act_range.seen) > 0:
            ranges[name] = (min(0.0, float(mod.act_range.lo)), max(0.0, float(mod.act_range.hi)))

    def swap(c: nn.Module):
        if isinstance(c, QATConv2d):
            p = nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, c.dilation, c.groups,
                          bias=True, padding_mode=c.padding_mode)
        elif isinstance(c, QATLinear):
            p = nn.Linear(c.in_features, c.out_features, bias=True)
        else:
            return None
        with torch.no_grad():
            p.weight.copy_(fake_quant_weight(c.weight))
            p.bias.copy_(c.bias)
        return p

    swap_modules(m, swap)
    rec = record_of(m)
    if rec is not None:
        set_record(m, rec.replace(transforms=tuple(t for t in rec.transforms if t.get("kind") != "fake_quant")))
    return m, ranges


# the fine-tuning recipe: SGD with plain momentum and a cosine decay, in fp32 (the fake quantization is the
# precision being learned), on the CPU, one epoch at a small learning rate (QAT recovers what int8 loses from a
# model trained in float, it does not train from scratch)
QAT_RECIPE = dict(epochs=1, lr=1e-3, batch_size=64, momentum=0.9, nesterov=False, weight_decay=0.0,
                  schedule="cosine", amp=False, channels_last=False, device="cpu", progress=False, verbose=False)


def qat_training(model: nn.Module, *, max_steps: int | None = None, max_seconds: float | None = None,
                 freeze_observers_after: int | None = None, **settings: Any) -> tuple[nn.Module, TrainConfig, list]:
    """What quantization-aware fine-tuning of ``model`` needs, for :func:`lightnn.train.fit`::

        q, config, callbacks = qat_training(model, epochs=1, lr=1e-3, max_steps=200)
        fit(q, train_data, None, config, callbacks=callbacks)   # q: trained, eval mode, q.qat_steps set

    Returns the fake-quantized copy of ``model`` (:func:`prepare_qat`: BN folded, Conv2d/Linear replaced), the
    :class:`~lightnn.train.TrainConfig` (:data:`QAT_RECIPE` with ``settings`` replacing its fields; ``mean`` /
    ``std`` left out or None: the model's own normalization, else the ImageNet statistics the calibration images
    use) and the callbacks: :class:`~lightnn.train.QATObservers` (optionally freezing the activation ranges after
    ``freeze_observers_after`` steps), :class:`~lightnn.train.MaxSteps` (the cosine schedule then spans
    ``max_steps``) and :class:`~lightnn.train.TimeLimit` when given.
    """
    from ..data import IMAGENET_MEAN, IMAGENET_STD
    from .onnx import model_input_size

    norm = model_normalization(model)
    if not norm:  # lightnn's loader default for this many channels
        c = model_input_size(model)[0]
        norm = {"mean": list(IMAGENET_MEAN)[:c] + [0.5] * max(0, c - 3),
                "std": list(IMAGENET_STD)[:c] + [0.25] * max(0, c - 3)}
    recipe = {**QAT_RECIPE, "mean": norm["mean"], "std": norm["std"]}
    # mean/std None: the default above, not the data's statistics (the model was trained on these)
    settings = {k: v for k, v in settings.items() if not (k in ("mean", "std") and v is None)}
    config = TrainConfig.from_dict(recipe).replace(**settings)
    callbacks: list = [QATObservers(lambda m: isinstance(m, ActRange), freeze_after=freeze_observers_after)]
    if max_steps is not None:
        callbacks.append(MaxSteps(max_steps))
    if max_seconds is not None:
        callbacks.append(TimeLimit(max_seconds))
    return prepare_qat(model), config, callbacks


def _onnx_ranges(onnx_path: Path, ranges: dict[str, tuple[float, float]]) -> dict[str, list[dict[str, Any]]]:
    """Map module-name ranges to the ONNX tensors feeding the Conv/Gemm nodes the exporter named after them."""
    import numpy as np
    import onnx

    g = onnx.load(str(onnx_path)).graph
    out: dict[str, list[dict[str, Any]]] = {}
    inits = {i.name for i in g.initializer}
    for node in g.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        # TorchScript export names nodes "/features/features.3/conv/Conv": the scope path of the module
        scope = node.name.rsplit("/", 1)[0].strip("/")
        parts = scope.split("/")
        mod = parts[-1] if parts else ""
        if mod in ranges and node.input[0] not in inits:
            lo, hi = ranges[mod]
            out[node.input[0]] = [{"rmin": np.array(lo, np.float32), "rmax": np.array(hi, np.float32)}]
    return out


def export_qat_int8(model: nn.Module, path: str | os.PathLike, calibration_data: Any,
                    input_size: Any = None, opset: int = 17) -> Path:
    """Export a QAT model (:func:`prepare_qat`, fine-tuned as :func:`qat_training` says) to an int8 ONNX model that ONNX Runtime runs with QLinear kernels.

    ``calibration_data`` provides ranges for the tensors QAT did not observe (residual adds, pooling outputs);
    the learned ranges of the Conv/Linear inputs override them.
    """
    from .onnx import export_onnx, model_input_size
    from .quantize import quantize_int8

    plain, ranges = convert_qat(model)
    if not ranges:
        raise LightnnError("model has no trained fake-quantized layers (fine-tune it with lightnn.export.qat_training and lightnn.train.fit first)")
    size = model_input_size(plain, input_size)
    with tempfile.TemporaryDirectory(prefix="lightnn-qat-") as d:
        fp32 = export_onnx(plain, Path(d) / "qat_fp32.onnx", input_size=size, opset=opset, fold_bn=False)
        overrides = _onnx_ranges(fp32, ranges)
        return quantize_int8(fp32, path, calibration_data, method="minmax", activation_ranges=overrides)



def qat_stage(model: nn.Module, train: Any, calibration: Any, out: str | os.PathLike, *, check: Any = None,
              input_size: Any = None, opset: int = 17, **training: Any) -> tuple[nn.Module, dict[str, Any]]:
    """Quantization-aware training as one stage: fake-quantize ``model`` (:func:`qat_training`), fine-tune it with
    :func:`lightnn.train.fit`, export the int8 ONNX model to ``out`` (:func:`export_qat_int8`, ``calibration``
    images for the ranges QAT did not observe) and check that model against the fake-quantized PyTorch model it
    came from on ``check`` images (an :class:`~lightnn.export.calib.ImageSet` or array; default: the calibration
    images). ``training`` goes to :func:`qat_training` (``epochs``, ``lr``, ``max_steps``, ``mean``, ``std`` ...).

    Returns the trained fake-quantized model and a report: ``path``, ``bytes``, ``top1_agreement`` with the
    PyTorch model, ``n`` images, ``steps`` taken.
    """
    import numpy as np

    from ..runtime import OrtSession
    from ..train import fit
    from .quantize import file_size

    q, config, callbacks = qat_training(model, **training)
    fit(q, train, None, config, callbacks=callbacks)
    path = export_qat_int8(q, out, calibration, input_size=input_size, opset=opset)
    images = getattr(check if check is not None else calibration, "images", check if check is not None
                     else calibration)
    x = np.ascontiguousarray(images, dtype=np.float32)
    got = OrtSession(path, threads=1).run(x).argmax(1)
    with torch.no_grad():
        ref = q(torch.from_numpy(x)).argmax(1).numpy()
    return q, {"path": str(path), "bytes": file_size(path), "top1_agreement": float(np.mean(got == ref)),
               "n": int(len(x)), "reference": "qat-pytorch", "method": "qat",
               "steps": int(getattr(q, "qat_steps", 0))}
