"""Count params, multiply-adds, memory traffic and activation memory of any ``nn.Module``.

How it sees everything: a :class:`~torch.utils._python_dispatch.TorchDispatchMode` (the mechanism
``torch.utils.flop_counter`` uses) intercepts every aten op the forward pass runs, whatever Python produced it
(modules, ``torch.*`` functions, tensor methods), and forward pre/post hooks on every submodule keep a stack of
the modules being run, so each op is attributed to the innermost module: that gives the per-layer rows.

Costs (ShuffleNet V2 Sec. 2):

- MACs = multiply-adds of convolutions and matrix products (:mod:`lightnn.profile.ops`); FLOPs = 2 x MACs.
- Memory traffic (ShuffleNet V2's "MAC", here ``memory_bytes`` to avoid the clash of names) = bytes of every
  tensor an op reads (activations *and* weights) plus the bytes it writes. For a 1x1 conv that is
  ``hw(c1 + c2) + c1 c2`` elements (guideline G1). Element-wise ops (ReLU, add, BatchNorm in eval, shuffle, concat)
  have zero MACs and this traffic as their whole cost (G4). Views (reshape, transpose, slice) move nothing.
  Explicit data-movement modules (:class:`~lightnn.ops.ChannelShuffle`, :class:`~lightnn.ops.ChannelSplit`,
  :class:`~lightnn.ops.ChannelPermute`) are charged at least one read and one write of their tensors even where
  eager PyTorch returns a view: the copy then happens inside the consumer's kernel (a channel slice of a batch is
  not contiguous), and the paper counts them as element-wise ops.
- Peak activation memory: the largest total size of non-parameter tensors alive at once during the forward pass
  (storages are tracked from the op that allocates them to the moment they are freed).

Strict mode (default) raises :class:`UnsupportedOpError` for an op not in the op table, naming the op and the
layer; ``strict=False`` leaves it uncounted and lists it in ``report.coverage``.
"""

from __future__ import annotations

import weakref
from collections import Counter
from dataclasses import dataclass, field
from math import prod
from typing import Any, Sequence

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..errors import LightnnError, UnsupportedOpError
from ..models.record import model_name
from ..report.tables import csv_table, fmt_bytes, fmt_count, fmt_si, markdown_table
from . import ops as _ops

__all__ = ["profile", "ProfileReport", "LayerRow", "DATA_MOVEMENT_MODULES", "register_data_movement_module"]

ROOT = "(root)"


def _data_movement_defaults() -> list[type]:
    from ..ops.shuffle import ChannelPermute, ChannelShuffle, ChannelSplit

    return [ChannelShuffle, ChannelSplit, ChannelPermute, nn.ChannelShuffle, nn.PixelShuffle, nn.PixelUnshuffle]


DATA_MOVEMENT_MODULES: list[type] = _data_movement_defaults()


def register_data_movement_module(cls: type) -> None:
    """Mark a module class as pure data movement (charged one read + one write of its tensors, zero MACs)."""
    if cls not in DATA_MOVEMENT_MODULES:
        DATA_MOVEMENT_MODULES.append(cls)


# ----------------------------------------------------------------------------------------------------------------
# results


@dataclass
class LayerRow:
    """One module call. Costs are the ops run directly by this module (not by its children)."""

    name: str
    type: str  # module class name
    kind: str  # per-layer-type label (MobileNet V1 Table 2 style): "Conv 1x1", "Conv DW 3x3", "Fully Connected"...
    input_shape: str
    output_shape: str
    params: int
    macs: int
    memory_bytes: int
    ops: dict[str, int] = field(default_factory=dict)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ProfileReport:
    """What :func:`profile` measured. ``macs`` are multiply-adds; ``flops`` = 2 x ``macs``."""

    model: str
    input_size: tuple[int, ...]
    dtype: str
    params: int
    macs: int
    memory_bytes: int
    peak_activation_bytes: int
    layers: list[LayerRow] = field(repr=False)
    ops: dict[str, int] = field(repr=False)  # counted aten ops -> calls (views included, counted as free)
    uncounted: dict[str, list[str]] = field(default_factory=dict)  # unknown op -> layers (non-strict mode only)
    strict: bool = True
    unrun_params: int = 0  # parameters of modules the forward pass never called (e.g. an aux head in eval)

    @property
    def flops(self) -> int:
        """FLOPs = 2 x MACs (one multiply and one add per multiply-add)."""
        return 2 * self.macs

    @property
    def coverage(self) -> dict[str, Any]:
        """Which ops were counted and which were not (non-strict mode)."""
        calls = sum(self.ops.values())
        missed = {k: len(v) for k, v in self.uncounted.items()}
        total = calls + sum(missed.values())
        return {"counted_ops": dict(self.ops), "uncounted_ops": {k: sorted(set(v)) for k, v in self.uncounted.items()},
                "counted_calls": calls, "uncounted_calls": sum(missed.values()),
                "fraction_counted": calls / total if total else 1.0, "complete": not self.uncounted}

    def by_type(self, only: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Resources per layer type, the shape of MobileNet V1 Table 2 (% of mult-adds, % of parameters).

        ``only``: keep these types and take percentages over them (Table 2 lists conv and FC layers only);
        default: every type, percentages over the whole model.
        """
        agg: dict[str, dict[str, Any]] = {}
        for r in self.layers:
            a = agg.setdefault(r.kind, {"type": r.kind, "layers": 0, "macs": 0, "params": 0, "memory_bytes": 0})
            a["layers"] += 1
            a["macs"] += r.macs
            a["params"] += r.params
            a["memory_bytes"] += r.memory_bytes
        if self.unrun_params:
            agg["(not run)"] = {"type": "(not run)", "layers": 0, "macs": 0, "params": self.unrun_params,
                                "memory_bytes": 0}
        rows = list(agg.values())
        if only is not None:
            missing = [t for t in only if t not in agg]
            if missing:
                raise LightnnError(f"by_type(only=...): no layer of type {missing}; types are {sorted(agg)}")
            rows = [agg[t] for t in only]
        tm, tp, tb = (sum(r[k] for r in rows) for k in ("macs", "params", "memory_bytes"))
        for r in rows:
            r["macs_pct"] = 100.0 * r["macs"] / tm if tm else 0.0
            r["params_pct"] = 100.0 * r["params"] / tp if tp else 0.0
            r["memory_pct"] = 100.0 * r["memory_bytes"] / tb if tb else 0.0
        return sorted(rows, key=lambda r: (-r["macs"], -r["params"], -r["memory_bytes"], r["type"]))

    def to_dict(self, layers: bool = True) -> dict[str, Any]:
        d = {"model": self.model, "input_size": list(self.input_size), "dtype": self.dtype, "params": self.params,
             "macs": self.macs, "flops": self.flops, "memory_bytes": self.memory_bytes,
             "peak_activation_bytes": self.peak_activation_bytes, "unrun_params": self.unrun_params,
             "conventions": {"macs": "multiply-adds of conv/matmul (bias adds not counted)", "flops": "2 x macs",
                             "memory_bytes": "bytes read (activations + weights) + bytes written, per op"},
             "by_type": self.by_type(), "ops": dict(self.ops), "coverage": self.coverage, "strict": self.strict}
        if layers:
            d["layers"] = [r.to_dict() for r in self.layers]
        return d

    def summary(self) -> str:
        return (f"{self.model} @ {'x'.join(map(str, self.input_size))}: params {fmt_si(self.params)}, "
                f"MACs (multiply-adds) {fmt_si(self.macs)}, FLOPs (2xMACs) {fmt_si(self.flops)}, "
                f"memory traffic {fmt_bytes(self.memory_bytes)}, "
                f"peak activations {fmt_bytes(self.peak_activation_bytes)}"
                + ("" if not self.uncounted else f", UNCOUNTED ops: {', '.join(sorted(self.uncounted))}"))

    def layer_rows(self) -> tuple[list[str], list[list[Any]]]:
        headers = ["layer", "type", "kind", "input", "output", "params", "MACs (multiply-adds)", "memory (bytes)"]
        rows = [[r.name, r.type, r.kind, r.input_shape, r.output_shape, r.params, r.macs, r.memory_bytes]
                for r in self.layers]
        return headers, rows

    def table(self, layers: bool = False, by_type: bool = False) -> str:
        """Markdown: the totals, optionally the per-layer rows and the per-type breakdown."""
        parts = [markdown_table(["metric", "value"], [
            ["input", "x".join(map(str, self.input_size))],
            ["params", f"{self.params:,} ({fmt_si(self.params)})"],
            ["MACs (multiply-adds)", f"{self.macs:,} ({fmt_si(self.macs)})"],
            ["FLOPs (= 2 x MACs)", f"{self.flops:,}"],
            ["memory traffic", fmt_bytes(self.memory_bytes)],
            ["peak activation memory", fmt_bytes(self.peak_activation_bytes)],
            ["ops counted / uncounted", f"{sum(self.ops.values())} / {sum(len(v) for v in self.uncounted.values())}"],
        ], align="ll")]
        if by_type:
            parts.append(markdown_table(
                ["layer type", "layers", "MACs (M)", "% MACs", "params (M)", "% params", "memory (MB)", "% memory"],
                [[r["type"], r["layers"], fmt_count(r["macs"]), f"{r['macs_pct']:.2f}%", fmt_count(r["params"], "M", 3),
                  f"{r['params_pct']:.2f}%", f"{r['memory_bytes'] / 1e6:.2f}", f"{r['memory_pct']:.2f}%"]
                 for r in self.by_type()]))
        if layers:
            h, rows = self.layer_rows()
            parts.append(markdown_table(h, rows))
        return "\n\n".join(parts)

    def csv(self) -> str:
        h, rows = self.layer_rows()
        return csv_table(h, rows)

    def __str__(self) -> str:
        return self.summary()


# ----------------------------------------------------------------------------------------------------------------
# the counting machinery


def _tensors(obj: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(obj)[0] if isinstance(t, torch.Tensor)]


def _read_bytes(t: torch.Tensor) -> int:
    # A broadcast (stride-0) dimension is read once, not once per repeat.
    n = prod(s for s, st in zip(t.shape, t.stride()) if st != 0) if t.dim() else 1
    return n * t.element_size() if t.numel() else 0


def _shapes(obj: Any) -> str:
    return ", ".join("x".join(map(str, t.shape)) for t in _tensors(obj))


def _conv_kind(args: tuple) -> str:
    x, w = args[0], args[1]
    transposed = len(args) > 6 and isinstance(args[6], bool) and args[6]
    k = "x".join(map(str, w.shape[2:])) or "1"
    if transposed:
        return f"ConvTranspose {k}"
    cin = x.shape[1] if x.dim() > 1 else x.shape[0]
    groups = max(1, cin // w.shape[1])
    if groups > 1 and w.shape[1] == 1:
        return f"Conv DW {k}"
    if groups > 1:
        return f"Group Conv {k}"
    return f"Conv {k}"


def _mac_kind(name: str, args: tuple) -> str:
    if "convolution" in name:
        return _conv_kind(args)
    if name in ("aten.mm", "aten.addmm", "aten._addmm_activation", "aten.linear", "aten.mv", "aten.addmv"):
        return "Fully Connected"
    if "attention" in name:
        return "Attention"
    if "rnn" in name:
        return "Recurrent"
    return "MatMul"


class _Frame:
    __slots__ = ("name", "module", "seq", "start_op", "first_op", "in_shapes", "out_shapes", "in_bytes", "out_bytes",
                 "macs", "memory", "ops", "kind_macs", "params", "has_children", "note")

    def __init__(self, name: str, module: nn.Module, seq: int, params: int, has_children: bool) -> None:
        self.name, self.module, self.seq = name, module, seq
        self.first_op: int | None = None
        self.start_op = 0
        self.in_shapes = self.out_shapes = ""
        self.in_bytes = self.out_bytes = 0
        self.macs = self.memory = 0
        self.ops: Counter[str] = Counter()
        self.kind_macs: Counter[str] = Counter()
        self.params = params
        self.has_children = has_children
        self.note = ""


class _Tracker(TorchDispatchMode):
    def __init__(self, model: nn.Module, strict: bool) -> None:
        super().__init__()
        self.strict = strict
        self.names = {id(m): n or ROOT for n, m in model.named_modules()}
        self.stack: list[_Frame] = []
        self.frames: list[_Frame] = []
        self.seen_params: set[int] = set()
        self.op_seq = 0
        self.ops: Counter[str] = Counter()
        self.uncounted: dict[str, list[str]] = {}
        self.root = _Frame(ROOT, model, -1, 0, True)
        # activation lifetimes: storage pointer -> live tensor refs
        self.static_ptrs = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
        self.refs: Counter[int] = Counter()
        self.sizes: dict[int, int] = {}
        self.live = self.peak = 0
        self.finalizers: list[weakref.finalize] = []

    # --- module stack -------------------------------------------------------------------------------------------
    def pre_hook(self, module: nn.Module, args: Any) -> None:
        own = [p for p in module.parameters(recurse=False) if id(p) not in self.seen_params]
        self.seen_params.update(id(p) for p in own)
        f = _Frame(self.names.get(id(module), type(module).__name__), module, len(self.frames),
                   sum(p.numel() for p in own), any(True for _ in module.children()))
        f.start_op = self.op_seq
        f.in_shapes = _shapes(args)
        f.in_bytes = sum(_read_bytes(t) for t in _tensors(args))
        self.stack.append(f)
        self.frames.append(f)

    def post_hook(self, module: nn.Module, args: Any, output: Any) -> None:
        if not self.stack or self.stack[-1].module is not module:
            return  # an exception unwound the stack
        f = self.stack.pop()
        f.out_shapes = _shapes(output)
        f.out_bytes = sum(t.numel() * t.element_size() for t in _tensors(output))
        if isinstance(module, tuple(DATA_MOVEMENT_MODULES)):
            modelled = f.in_bytes + f.out_bytes
            if f.memory < modelled:
                f.note = "eager returns a view; charged one read + one write (the consumer's copy)"
                f.memory = modelled

    # --- activation lifetimes -----------------------------------------------------------------------------------
    def track(self, t: torch.Tensor) -> None:
        try:
            st = t.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return
        ptr, nbytes = st.data_ptr(), st.nbytes()
        if not nbytes or ptr in self.static_ptrs:
            return
        if self.refs[ptr] == 0:
            self.sizes[ptr] = nbytes
            self.live += nbytes
            self.peak = max(self.peak, self.live)
        self.refs[ptr] += 1
        self.finalizers.append(weakref.finalize(t, self._release, ptr))

    def _release(self, ptr: int) -> None:
        self.refs[ptr] -= 1
        if self.refs[ptr] <= 0:
            del self.refs[ptr]
            self.live -= self.sizes.pop(ptr, 0)

    # --- every aten op ------------------------------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if isinstance(func, torch._ops.HigherOrderOperator):
            kind, name = None, str(func.name())
        else:
            name = _ops.op_key(func)
            kind = _ops.op_kind(name)
            if kind is None:
                # A composite op with a decomposition: count the ops it decomposes into instead.
                with self:
                    r = func.decompose(*args, **kwargs)
                if r is not NotImplemented:
                    return r
        frame = self.stack[-1] if self.stack else self.root
        if kind is None:
            if self.strict:
                where = frame.name if frame is not self.root else ROOT
                raise UnsupportedOpError(
                    f"profile: op {name!r} in layer {where!r} ({type(frame.module).__name__}) is not in the "
                    f"profiler's op table, so its cost is unknown; pass strict=False to list it as uncounted, or "
                    f"teach it with lightnn.profile.register_op({name!r}, kind, macs)")
            out = func(*args, **kwargs)
            self.uncounted.setdefault(name, []).append(frame.name)
            for t in _tensors(out):
                self.track(t)
            return out
        out = func(*args, **kwargs)
        self.ops[name] += 1
        outs = _tensors(out)
        frame.ops[name] += 1
        if frame.first_op is None and kind != "view":
            frame.first_op = self.op_seq
        self.op_seq += 1
        if kind != "view":
            ins = _tensors((args, kwargs))
            if name in _ops.WRITE_ONLY_FIRST_ARG and ins:
                ins = ins[1:]
            frame.memory += sum(_read_bytes(t) for t in ins) + sum(t.numel() * t.element_size() for t in outs)
            if kind == "mac":
                m = int(_ops.mac_formula(name)(args, kwargs, out))
                frame.macs += m
                frame.kind_macs[_mac_kind(name, args)] += m
        for t in outs:
            self.track(t)
        return out

    def close(self) -> None:
        for f in self.finalizers:
            f.detach()
        self.finalizers.clear()


def _leaf_kind(module: nn.Module) -> str:
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return "BatchNorm"
    return type(module).__name__


def _rows(tracker: _Tracker) -> list[LayerRow]:
    rows: list[tuple[tuple[int, int], LayerRow]] = []
    for f in [tracker.root, *tracker.frames]:
        own_ops = any(n not in _ops.VIEW_OPS for n in f.ops)
        costly = f.macs or f.memory or own_ops
        if not (costly or f.params or (not f.has_children and f is not tracker.root)):
            continue
        if f.kind_macs:
            kind = f.kind_macs.most_common(1)[0][0]
        elif not f.has_children:
            kind = _leaf_kind(f.module)
        else:  # a container's own functional ops (a residual add, a concat)
            short = sorted({n.split(".", 1)[1].rstrip("_") for n in f.ops if n not in _ops.VIEW_OPS})
            kind = f"Functional ({', '.join(short)})" if short else type(f.module).__name__
        typ = type(f.module).__name__ + (" (own ops)" if f.has_children and own_ops else "")
        row = LayerRow(f.name, typ, kind, f.in_shapes, f.out_shapes, f.params, f.macs, f.memory,
                       {k: v for k, v in f.ops.items() if k not in _ops.VIEW_OPS}, f.note)
        # execution order: a container's own ops sit where they ran (after its children, for a residual add)
        rows.append(((f.first_op if f.first_op is not None and f.has_children else f.start_op, f.seq), row))
    return [r for _, r in sorted(rows, key=lambda x: x[0])]


def _make_input(input_size: Any, dtype: torch.dtype, device: torch.device) -> Any:
    if isinstance(input_size, torch.Tensor):
        return input_size
    if isinstance(input_size, int):
        input_size = (1, 3, input_size, input_size)
    size = tuple(int(s) for s in input_size)
    if len(size) == 3:
        size = (1, *size)
    if len(size) < 2 or any(s < 1 for s in size):
        raise LightnnError(f"profile: input_size must be (N, C, H, W), (C, H, W) or an int, got {input_size!r}")
    if dtype.is_floating_point:
        return torch.randn(size, dtype=dtype, device=device)
    return torch.zeros(size, dtype=dtype, device=device)


def profile(model: nn.Module, input_size: Any = (1, 3, 224, 224), strict: bool = True, *,
            dtype: torch.dtype = torch.float32, inputs: Any = None, threads: int | None = 1) -> ProfileReport:
    """Profile one inference forward pass of ``model`` (any ``nn.Module``).

    Args:
        model: the network; run in eval mode under ``torch.no_grad`` (its training flags are restored after).
        input_size: ``(N, C, H, W)``, ``(C, H, W)`` (batch 1) or an int ``H`` (``1 x 3 x H x H``).
        strict: raise :class:`UnsupportedOpError` on any op the profiler cannot count (default). With ``False``,
            such ops are left uncounted and listed in ``report.coverage`` / ``report.uncounted``.
        dtype: dtype of the random input (and hence the bytes of activations).
        inputs: explicit input(s) instead of a random tensor: a tensor or a tuple of positional arguments.
        threads: intra-op threads for the counting pass (restored after). Counts do not depend on it; one thread
            (default) avoids OpenMP spin-waits that make a pass tens of times slower on a busy machine. None keeps
            torch's setting.

    Returns:
        a :class:`ProfileReport`. MACs are multiply-adds (the papers' Mult-Adds); ``flops`` = 2 x MACs.
    """
    if not isinstance(model, nn.Module):
        raise LightnnError(f"profile: expected an nn.Module, got {type(model).__name__}")
    try:
        p0 = next(model.parameters())
        device = p0.device
    except StopIteration:
        device = torch.device("cpu")
    x = inputs if inputs is not None else _make_input(input_size, dtype, device)
    call_args = x if isinstance(x, tuple) else (x,)
    in_size = tuple(call_args[0].shape) if call_args and isinstance(call_args[0], torch.Tensor) else ()

    tracker = _Tracker(model, strict)
    handles = []
    modes = {m: m.training for m in model.modules()}
    for m in model.modules():
        handles.append(m.register_forward_pre_hook(tracker.pre_hook))
        handles.append(m.register_forward_hook(tracker.post_hook, always_call=True))
    old_threads = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(int(threads))
        model.eval()
        with torch.no_grad():
            for t in _tensors(call_args):
                tracker.track(t)
            with tracker:
                out = model(*call_args)
            del out
    finally:
        torch.set_num_threads(old_threads)
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.train(training)
        tracker.close()

    total_params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    rows = _rows(tracker)
    macs = sum(r.macs for r in rows)
    memory = sum(r.memory_bytes for r in rows)
    counted_params = sum(r.params for r in rows)
    name = model_name(model)
    return ProfileReport(model=name, input_size=in_size, dtype=str(dtype).replace("torch.", ""),
                         params=total_params, macs=macs, memory_bytes=memory,
                         peak_activation_bytes=tracker.peak, layers=rows, ops=dict(tracker.ops),
                         uncounted=tracker.uncounted, strict=strict, unrun_params=total_params - counted_params)

