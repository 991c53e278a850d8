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
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import LightnnError
from ..ops.quant import QATConv2d, QATLinear, fake_quant_act, fake_quant_weight
from ..transforms.fold import fold_bn
from ..transforms.quant import fake_quantize, swap_modules

__all__ = ["prepare_qat", "convert_qat", "qat_finetune", "export_qat_int8", "QATConv2d", "QATLinear",
           "fake_quant_weight", "fake_quant_act"]


def prepare_qat(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Fold BN, then replace every Conv2d/Linear with its fake-quantized version (records the transforms)."""
    transforms = list(getattr(model, "lightnn_transforms", []))
    m = fake_quantize(fold_bn(model, inplace=inplace))
    m.lightnn_transforms = transforms + [{"kind": "fold_bn"}, {"kind": "fake_quant", "bits": 8}]
    return m


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
    m.lightnn_transforms = [t for t in getattr(m, "lightnn_transforms", []) if t.get("kind") != "fake_quant"]
    return m, ranges


def qat_finetune(model: nn.Module, train_data: Any = "sample", epochs: int = 1, lr: float = 1e-3,
                 batch_size: int = 64, weight_decay: float = 0.0, max_steps: int | None = None,
                 mean: Any = None, std: Any = None, seed: int = 0, verbose: bool = False,
                 max_seconds: float | None = None) -> nn.Module:
    """Fine-tune ``model`` with fake quantization for ``epochs`` epochs (SGD + momentum, cosine decay).

    ``train_data`` is a :class:`lightnn.data.ImageData` or anything :func:`lightnn.data.load_dataset` reads; the
    model must already be trained in float (QAT recovers the accuracy int8 loses, it does not train from scratch).
    ``max_steps`` / ``max_seconds`` stop early (the cosine schedule spans ``max_steps``). Returns the fake-quantized
    model (``prepare_qat`` applied), in eval mode, with ``qat_steps`` set to the steps taken.
    """
    import time
    from ..data import BatchLoader, ImageData, load_dataset

    if epochs < 1 and not max_steps:
        raise LightnnError(f"QAT needs at least one epoch (got {epochs})")
    data = train_data if isinstance(train_data, ImageData) else load_dataset(train_data, split="train")
    from .onnx import model_input_size

    size = model_input_size(model)
    if tuple(data.image_size) != tuple(size):
        raise LightnnError(f"QAT data {data.source!r} has {data.image_size} images but the model takes {size}")
    loader = BatchLoader(data, batch_size, shuffle=True, augment=True, mean=mean, std=std, seed=seed,
                         drop_last=len(data) >= 2 * batch_size)
    q = prepare_qat(model)
    q.train()
    total = max_steps or epochs * len(loader)
    opt = torch.optim.SGD([p for p in q.parameters() if p.requires_grad], lr=lr, momentum=0.9,
                          weight_decay=weight_decay)
    step = 0
    t_start = time.perf_counter()
    for epoch in range(max(1, epochs)):
        loader.set_epoch(epoch)
        for x, y in loader:
            for g in opt.param_groups:
                g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = F.cross_entropy(q(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if verbose and step % 20 == 0:
                print(f"qat step {step}/{total} loss {loss.item():.4f}")
            if step >= total or (max_seconds is not None and time.perf_counter() - t_start > max_seconds):
                break
        if step >= total or (max_seconds is not None and time.perf_counter() - t_start > max_seconds):
            break
    q.qat_steps = step
    return q.eval()


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
    """Export a QAT model (:func:`qat_finetune`) to an int8 ONNX model that ONNX Runtime runs with QLinear kernels.

    ``calibration_data`` provides ranges for the tensors QAT did not observe (residual adds, pooling outputs);
    the learned ranges of the Conv/Linear inputs override them.
    """
    from .onnx import export_onnx, model_input_size
    from .quantize import quantize_int8

    plain, ranges = convert_qat(model)
    if not ranges:
        raise LightnnError("model has no trained fake-quantized layers (run lightnn.export.qat_finetune first)")
    size = model_input_size(plain, input_size)
    with tempfile.TemporaryDirectory(prefix="lightnn-qat-") as d:
        fp32 = export_onnx(plain, Path(d) / "qat_fp32.onnx", input_size=size, opset=opset, fold_bn=False)
        overrides = _onnx_ranges(fp32, ranges)
        return quantize_int8(fp32, path, calibration_data, method="minmax", activation_ranges=overrides)

