"""ONNX export of any zoo model or checkpoint, and a parity check against PyTorch.

``export_onnx`` folds BatchNorm into the convolutions (``fold.py``), exports with a dynamic batch axis, and records
the model's name and input size in the ONNX metadata so ``lightnn quantize``/``bench`` can take the ``.onnx`` file
alone. ``check_parity`` runs the same inputs through PyTorch and ONNX Runtime and enforces a tolerance on the max
absolute difference and on top-1 agreement.

The exporter is torch's TorchScript-based one (``dynamo=False``): it handles every zoo model in well under a
second and its unsupported-op error names the aten op, which we map back to the layer that calls it.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..errors import LightnnError, UnsupportedOpError
from ..models import model_name, model_normalization
from ..utils.io import atomic_write_bytes

__all__ = ["export_onnx", "check_parity", "resolve_model", "onnx_input_size", "source_normalization", "ParityReport",
           "DEFAULT_OPSET"]

DEFAULT_OPSET = 17  # per-channel QuantizeLinear needs >= 13


def resolve_model(source: str | os.PathLike | nn.Module, **overrides: Any) -> nn.Module:
    """A model from a registry name, a checkpoint path (``.pt``/``.lnz``) or an ``nn.Module`` (returned as is)."""
    if isinstance(source, nn.Module):
        return source
    from ..models import is_model

    src = str(source)
    if is_model(src):
        from ..models import create_model

        return create_model(src, **overrides)
    p = Path(src)
    if p.suffix == ".onnx":
        raise LightnnError(f"{src!r} is already an ONNX model; this step needs a PyTorch model or checkpoint")
    if not p.exists():
        from ..models import model_info

        if not any(ch in src for ch in "/\\."):
            model_info(src)  # unknown name: raises with a hint of similar names
        raise LightnnError(f"{src!r} is neither a registered model name nor an existing checkpoint file")
    from ..checkpoint import load_any

    return load_any(p, **overrides)


def model_input_size(model: nn.Module, input_size: Any = None) -> tuple[int, int, int]:
    """(C, H, W) from an explicit size (int H=W, (H, W) or (C, H, W)), else the model's default input size: the
    instance's ``default_input_size`` when a builder set one, else the registry's, else the class attribute."""
    default = tuple(_default_size(model))
    if input_size is None:
        return default  # type: ignore[return-value]
    if isinstance(input_size, int):
        return (default[0], input_size, input_size)
    size = tuple(int(s) for s in input_size)
    if len(size) == 2:
        return (default[0], *size)
    if len(size) == 4:
        size = size[1:]
    if len(size) != 3 or min(size) < 1:
        raise LightnnError(f"input_size must be H, (H, W) or (C, H, W), got {input_size!r}")
    return size  # type: ignore[return-value]


def source_normalization(source: Any, model: nn.Module | None = None) -> dict[str, list[float]] | None:
    """The input normalization a model was trained with: ``{"mean": [...], "std": [...]}`` from the model
    (its record's), a checkpoint's metadata, or an ONNX file exported by lightnn; None when unknown."""
    norm = model_normalization(model) if model is not None else None
    if norm:
        return norm
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if p.suffix == ".onnx" and p.is_file():
            import onnx

            meta = {q.key: q.value for q in onnx.load(str(p), load_external_data=False).metadata_props}
            if "lightnn.mean" in meta:
                return {"mean": [float(v) for v in meta["lightnn.mean"].split(",")],
                        "std": [float(v) for v in meta["lightnn.std"].split(",")]}
        elif p.suffix == ".pt" and p.is_file():
            from ..checkpoint import read_checkpoint

            obj = read_checkpoint(p)
            norm = obj.get("meta", {}).get("normalize") if isinstance(obj, dict) else None
            if norm and "mean" in norm and "std" in norm:
                return {"mean": list(norm["mean"]), "std": list(norm["std"])}
    return None


def _default_size(model: nn.Module) -> tuple[int, ...]:
    if "default_input_size" in vars(model):
        return model.default_input_size
    name = model_name(model, "")
    if name:
        from ..models import is_model, model_info

        if is_model(name):
            return model_info(name).input_size
    return getattr(model, "default_input_size", None) or (3, 224, 224)


def onnx_input_size(path: str | os.PathLike) -> tuple[int, int, int] | None:
    """(C, H, W) of an ONNX model's first input: from lightnn's metadata, else from static dims, else None."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    meta = {p.key: p.value for p in m.metadata_props}
    if "lightnn.input_size" in meta:
        return tuple(int(v) for v in meta["lightnn.input_size"].split(","))  # type: ignore[return-value]
    dims = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    return tuple(dims[1:]) if len(dims) == 4 and all(d > 0 for d in dims[1:]) else None  # type: ignore[return-value]


def _scope_to_module(scope: str) -> str:
    # TorchScript scope "pkg.Model::/torch.nn.Conv2d::features.3/..." -> "features.3"; empty for the top level.
    parts = [seg.split("::", 1)[1] for seg in scope.split("/") if "::" in seg]
    parts = [p for p in parts if p]
    return parts[-1] if parts else ""


def _layer_in_graph(model: nn.Module, graphs: list, op: str) -> str | None:
    """The module path (and type) whose forward calls aten ``op``, from the scopes of the exporter's graph."""
    for graph in graphs:
        try:
            nodes = list(graph.nodes())
        except Exception:
            continue
        for node in nodes:
            if node.kind() == op:
                name = _scope_to_module(node.scopeName())
                if not name:
                    return f"<forward of {type(model).__name__}>"
                if _has_submodule(model, name):
                    return f"{name} ({type(model.get_submodule(name)).__name__})"
                return name
    return None


def _has_submodule(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
        return True
    except AttributeError:
        return False


def export_onnx(
    model_or_checkpoint: str | os.PathLike | nn.Module,
    path: str | os.PathLike,
    input_size: Any = None,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    fold_bn: bool = True,
    batch_size: int = 1,
) -> Path:
    """Export a model (registry name, checkpoint or module) to ONNX at ``path`` and return the path.

    BatchNorm is folded into the convolutions first (``fold_bn=True``); the batch axis is dynamic unless
    ``dynamic_batch=False``. An op ONNX cannot express raises :class:`UnsupportedOpError` naming the op and the
    layer that calls it.
    """
    model = resolve_model(model_or_checkpoint)
    model.eval()
    norm = source_normalization(model_or_checkpoint, model)
    size = model_input_size(model, input_size)
    x = torch.randn(batch_size, *size)
    net = _export_friendly(_fold(model) if fold_bn else copy.deepcopy(model), x)
    buf = io.BytesIO()
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    graphs: list = []
    try:
        with torch.no_grad(), warnings.catch_warnings(), _no_graph_dump(graphs):
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice and tracer warnings
            torch.onnx.export(net, (x,), buf, dynamo=False, opset_version=opset, input_names=["input"],
                              output_names=["logits"], dynamic_axes=axes, do_constant_folding=True)
    except (torch.onnx.errors.OnnxExporterError, RuntimeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        msg = re.split(r"\s*(?:\[Caused by|Please feel free)", msg)[0]
        m = re.search(r"operator '?(?:aten::)?([A-Za-z0-9_.]+)'?", msg)
        op = m.group(1) if m else None
        layer = _layer_in_graph(net, graphs, f"aten::{op}") if op else None
        name = model_name(model)
        where = f" in layer {layer}" if layer else ""
        what = f"op {op!r}{where}" if op else "the graph"
        raise UnsupportedOpError(f"model {name!r} at input {'x'.join(map(str, size))} does not export to ONNX "
                                 f"(opset {opset}): {what}: {msg[:300]}") from None
    import onnx

    proto = onnx.load_from_string(buf.getvalue())
    meta = {"lightnn.input_size": ",".join(map(str, size)), "lightnn.bn_folded": str(bool(fold_bn))}
    if model_name(model, ""):
        meta["lightnn.model"] = model_name(model)
    if norm:  # repr: the shortest text that reads back as the same float (the model was trained on these)
        meta["lightnn.mean"] = ",".join(repr(float(v)) for v in norm["mean"])
        meta["lightnn.std"] = ",".join(repr(float(v)) for v in norm["std"])
    onnx.helper.set_model_props(proto, meta)
    return atomic_write_bytes(path, proto.SerializeToString())


@contextlib.contextmanager
def _no_graph_dump(captured: list):
    # torch's TorchScript exporter prints the whole IR graph to stdout when export fails (its log switch is
    # always on); we keep the graph instead, to find the layer (its scope) that calls the failing op.
    from torch import _C

    orig = getattr(_C, "_jit_onnx_log", None)
    if orig is not None:
        _C._jit_onnx_log = lambda *args: captured.extend(a for a in args if not isinstance(a, str))
    try:
        yield
    finally:
        if orig is not None:
            _C._jit_onnx_log = orig


class _StaticLRN(nn.Module):
    """``nn.LocalResponseNorm`` as a 1x1 convolution with a fixed banded kernel (the cross-channel window sum)
    instead of torch's ``view``/``pad``/``avg_pool3d``, which loses static shapes in the exported graph (a
    following adaptive pool then fails to export). Same formula: b_c = a_c / (k + alpha/n sum_{window(c)} a^2)^beta
    (Krizhevsky et al. 2012, section 3.3), with torch's window [c - n//2, c + (n-1)//2] and zero padding."""

    def __init__(self, lrn: nn.LocalResponseNorm, channels: int) -> None:
        super().__init__()
        self.alpha, self.beta, self.k = lrn.alpha, lrn.beta, lrn.k
        c = torch.arange(channels)
        d = c.view(1, -1) - c.view(-1, 1)  # d[i, j] = j - i
        band = ((d >= -(lrn.size // 2)) & (d <= (lrn.size - 1) // 2)).float() / lrn.size
        self.register_buffer("band", band.view(channels, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        div = torch.nn.functional.conv2d(x * x, self.band)
        return x / (div * self.alpha + self.k).pow(self.beta)


class _StaticShuffle(nn.Module):
    """:class:`~lightnn.ops.ChannelShuffle` with its input's (C, H, W) fixed at export: Reshape to the constant
    shape (-1, g, C/g, H*W), Transpose, Reshape to (-1, C, H, W). The eager module reshapes with the runtime sizes
    ``x.shape``, which the exporter turns into a Shape -> Gather -> Unsqueeze -> Concat chain per reshape (on
    ShuffleNet V2 1.0x, 64 Shape, 64 Gather and 128 Unsqueeze nodes for 16 shuffles). The -1 keeps the batch axis
    dynamic; C, H and W are static in the exported graph anyway. Same permutation: output channel j*g + i <- input
    channel i*(C/g) + j."""

    def __init__(self, groups: int, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.groups, (self.c, self.h, self.w) = groups, shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.groups
        x = x.reshape(-1, g, self.c // g, self.h * self.w).transpose(1, 2)
        return x.reshape(-1, self.c, self.h, self.w)


class _SliceSplit(nn.Module):
    """:class:`~lightnn.ops.ChannelSplit` as two constant Slice nodes. The eager module's single
    ``tensor_split`` call exports as SplitToSequence + SequenceAt with a shape chain; slicing gives the same two
    tensors with static bounds."""

    def __init__(self, split: int) -> None:
        super().__init__()
        self.split = split

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[:, : self.split], x[:, self.split:]


def _export_friendly(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Swap modules whose torch implementation exports badly for equivalent ones (in the given copy): LRN (see
    :class:`_StaticLRN`) and ChannelShuffle (see :class:`_StaticShuffle`), both built from the input shape each
    one sees in a forward pass at the export size, and ChannelSplit (:class:`_SliceSplit`)."""
    from ..ops.shuffle import ChannelShuffle, ChannelSplit

    for name, mod in list(model.named_modules()):
        if isinstance(mod, ChannelSplit):  # shape-independent: always swapped
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, _SliceSplit(mod.split))
    swap = {name: m for name, m in model.named_modules() if isinstance(m, (nn.LocalResponseNorm, ChannelShuffle))}
    if not swap:
        return model
    shapes: dict[str, set[tuple[int, ...]]] = {n: set() for n in swap}
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: shapes[n].add(tuple(inp[0].shape[1:])))
             for n, m in swap.items()]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    for name, mod in swap.items():
        if len(shapes[name]) != 1:
            continue  # unused, or one instance called at several shapes: a fixed shape would be wrong, keep it
        (shape,) = shapes[name]
        new = (_StaticLRN(mod, shape[0]) if isinstance(mod, nn.LocalResponseNorm)
               else _StaticShuffle(mod.groups, shape) if len(shape) == 3 else mod)
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, new)
    return model


def _fold(model: nn.Module) -> nn.Module:
    from ..transforms.fold import fold_bn as _fold_bn

    return _fold_bn(model)


@dataclass
class ParityReport:
    """PyTorch vs ONNX Runtime on the same inputs."""

    max_abs_diff: float
    max_abs_ref: float
    top1_agreement: float
    n: int
    tolerance: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _as_batches(inputs: Any, size: tuple[int, int, int] | None) -> list[np.ndarray]:
    if isinstance(inputs, int):
        if size is None:
            raise LightnnError("check_parity: give input tensors, or an input size with a number of random inputs")
        g = torch.Generator().manual_seed(0)
        return [torch.randn(inputs, *size, generator=g).numpy()]
    if isinstance(inputs, (torch.Tensor, np.ndarray)):
        inputs = [inputs]
    out = []
    for b in inputs:
        if isinstance(b, (tuple, list)):  # (images, labels) batches from a loader
            b = b[0]
        out.append(np.ascontiguousarray(b.detach().cpu().numpy() if isinstance(b, torch.Tensor) else b,
                                        dtype=np.float32))
    return out


def check_parity(
    model: str | os.PathLike | nn.Module,
    onnx_path: str | os.PathLike,
    inputs: Any = 8,
    atol: float = 1e-4,
    min_top1: float = 0.99,
    raise_on_fail: bool = True,
) -> ParityReport:
    """Compare ``model`` (eval mode) with the ONNX file on ``inputs``: max |diff| and top-1 agreement.

    ``inputs`` is a tensor/array, a list of batches or ``(images, labels)`` pairs, or an int (that many random
    inputs at the ONNX model's input size). The difference must stay within ``atol * max(1, max|logit|)``.
    A top-1 disagreement only counts when the two classes' reference logits differ by more than the measured
    error (an exact tie can flip either way); the agreement must reach ``min_top1``. Raises
    :class:`LightnnError` when either check fails (unless ``raise_on_fail=False``).
    """
    from ..runtime import OrtSession

    net = resolve_model(model).eval()
    sess = OrtSession(onnx_path, threads=1)
    batches = _as_batches(inputs, sess.input_size)
    max_diff = max_ref = 0.0
    refs, outs = [], []
    with torch.no_grad():
        for b in batches:
            ref = net(torch.from_numpy(b)).float().numpy()
            out = sess.run(b)
            max_diff = max(max_diff, float(np.abs(ref - out).max()))
            max_ref = max(max_ref, float(np.abs(ref).max()))
            refs.append(ref)
            outs.append(out)
    ref, out = np.concatenate(refs), np.concatenate(outs)
    rt, ot = ref.argmax(1), out.argmax(1)
    gap = np.abs(ref[np.arange(len(ref)), rt] - ref[np.arange(len(ref)), ot])
    agree = float(np.mean((rt == ot) | (gap <= 2 * max_diff + 1e-7)))
    tol = atol * max(1.0, max_ref)
    rep = ParityReport(max_diff, max_ref, agree, len(ref), tol)
    if raise_on_fail and (max_diff > tol or agree < min_top1 or not np.isfinite(max_diff)):
        raise LightnnError(f"ONNX model {str(onnx_path)!r} does not match PyTorch: max |diff| {max_diff:.3g} "
                           f"(tolerance {tol:.3g}), top-1 agreement {agree:.1%} (need {min_top1:.0%}) "
                           f"on {len(ref)} inputs")
    return rep
