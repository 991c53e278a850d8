"""The profiler's op table: what each aten op costs in multiply-adds (MACs) and whether it moves memory.

Every op the profiler sees falls in exactly one of three kinds:

- ``"mac"``: an op with multiply-adds (convolutions, matrix products, attention); a formula gives its MACs from
  the shapes of its inputs and outputs. Convention (the papers' "Mult-Adds"): one MAC per
  multiply-accumulate of a weight with an activation; bias additions are not counted (MobileNet, ShuffleNet and
  torchvision's ``_ops`` leave them out too).
- ``"memory"``: an op with zero MACs whose whole cost is memory traffic (ShuffleNet V2 guideline G4): element-wise
  activations, add/mul, BatchNorm in eval, pooling and reductions, concatenation, copies, padding, resampling.
- ``"view"``: a metadata op that moves no data (view, transpose, slice, expand, ...). It costs nothing.

An op in none of these tables is *unknown*: in strict mode the profiler raises :class:`UnsupportedOpError` naming it
and the layer, and never counts it as zero silently. :func:`register_op` adds an op (a custom kernel, say).
"""

from __future__ import annotations

from math import prod
from typing import Any, Callable

import torch

from ..errors import LightnnError

MacFormula = Callable[[tuple, dict, Any], int]  # (args, kwargs, out) -> MACs

__all__ = ["op_key", "op_kind", "mac_formula", "register_op", "MAC_OPS", "MEMORY_OPS", "VIEW_OPS"]


def op_key(func: Any) -> str:
    """``aten.convolution`` style name of an OpOverload (the packet, without the overload)."""
    return f"{func.namespace}.{func._opname}"


def _shape(t: Any) -> tuple[int, ...]:
    return tuple(t.shape) if isinstance(t, torch.Tensor) else ()


def _conv_macs(args: tuple, kwargs: dict, out: Any) -> int:
    # Weight (C_out, C_in/g, k...) for a convolution, (C_in, C_out/g, k...) transposed. Each output element of a
    # convolution accumulates C_in/g * prod(k) products; a transposed conv scatters each *input* element into
    # C_out/g * prod(k) products (the same count torch.utils.flop_counter uses).
    x, w = args[0], args[1]
    transposed = bool(args[6]) if len(args) > 6 and isinstance(args[6], bool) else bool(kwargs.get("transposed", False))
    per = prod(w.shape[1:])
    return (x.numel() if transposed else out.numel()) * per


def _mm_macs(args: tuple, kwargs: dict, out: Any) -> int:  # mm(a, b): (m,k) @ (k,n)
    a, b = args[0], args[1]
    return a.shape[0] * a.shape[1] * b.shape[1]


def _addmm_macs(args: tuple, kwargs: dict, out: Any) -> int:  # addmm(bias, a, b)
    return _mm_macs(args[1:], kwargs, out)


def _bmm_macs(args: tuple, kwargs: dict, out: Any) -> int:  # bmm(a, b): (B,m,k) @ (B,k,n)
    a, b = args[0], args[1]
    return a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]


def _baddbmm_macs(args: tuple, kwargs: dict, out: Any) -> int:
    return _bmm_macs(args[1:], kwargs, out)


def _mv_macs(args: tuple, kwargs: dict, out: Any) -> int:  # mv(A, x): (m,n) @ (n,)
    return args[0].numel()


def _addmv_macs(args: tuple, kwargs: dict, out: Any) -> int:
    return args[1].numel()


def _dot_macs(args: tuple, kwargs: dict, out: Any) -> int:
    return args[0].numel()


def _linear_macs(args: tuple, kwargs: dict, out: Any) -> int:  # linear(x, W(out,in), b)
    return out.numel() * args[1].shape[1]


def _sdpa_macs(args: tuple, kwargs: dict, out: Any) -> int:
    # Q (..., Lq, E) K (..., Lk, E) V (..., Lk, Ev): Q K^T then (softmax) V, as torch.utils.flop_counter counts it.
    q, k, v = args[0], args[1], args[2]
    batch = prod(q.shape[:-2])
    lq, e = q.shape[-2], q.shape[-1]
    lk, ev = k.shape[-2], v.shape[-1]
    return batch * lq * lk * (e + ev)


def _rnn_layer_macs(args: tuple, kwargs: dict, out: Any) -> int:
    # mkldnn_rnn_layer(input (T, B, in), w_ih (G*H, in), w_hh (G*H, H), ...): every time step of every sequence
    # multiplies the input by w_ih and the previous hidden state by w_hh (G = 4 gates for LSTM).
    x, w_ih, w_hh = args[0], args[1], args[2]
    return (x.numel() // x.shape[-1]) * (w_ih.numel() + w_hh.numel())


def _mha_macs(args: tuple, kwargs: dict, out: Any) -> int:
    # _native_multi_head_attention(q (B, Lq, E), k (B, Lk, E), v, E, heads, qkv_w, qkv_b, proj_w, proj_b, ...):
    # q/k/v projections, Q K^T and A V over all heads, output projection.
    q, k = args[0], args[1]
    e = int(args[3])
    b, lq, lk = prod(q.shape[:-2]) if q.dim() > 2 else 1, q.shape[-2], k.shape[-2]
    return b * (lq * e * e + 2 * lk * e * e + 2 * lq * lk * e + lq * e * e)


MAC_OPS: dict[str, MacFormula] = {
    "aten.convolution": _conv_macs,
    "aten._convolution": _conv_macs,
    "aten.convolution_overrideable": _conv_macs,
    "aten.mkldnn_convolution": lambda a, k, o: o.numel() * prod(a[1].shape[1:]),
    "aten.mm": _mm_macs,
    "aten.addmm": _addmm_macs,
    "aten._addmm_activation": _addmm_macs,
    "aten.bmm": _bmm_macs,
    "aten.baddbmm": _baddbmm_macs,
    "aten.mv": _mv_macs,
    "aten.addmv": _addmv_macs,
    "aten.dot": _dot_macs,
    "aten.vdot": _dot_macs,
    "aten.linear": _linear_macs,
    "aten._scaled_dot_product_flash_attention_for_cpu": _sdpa_macs,
    "aten._scaled_dot_product_efficient_attention": _sdpa_macs,
    "aten._scaled_dot_product_flash_attention": _sdpa_macs,
    "aten._scaled_dot_product_cudnn_attention": _sdpa_macs,
    "aten._native_multi_head_attention": _mha_macs,
    "aten.mkldnn_rnn_layer": _rnn_layer_macs,
}

# Zero-MAC ops whose cost is memory traffic: the bytes of their tensor inputs read plus their outputs written.
MEMORY_OPS: set[str] = {f"aten.{n}" for n in """
    relu relu_ hardtanh hardtanh_ relu6 relu6_ sigmoid sigmoid_ tanh tanh_ silu silu_ hardswish hardswish_
    hardsigmoid hardsigmoid_ gelu gelu_ elu elu_ selu selu_ celu celu_ leaky_relu leaky_relu_ mish mish_ softplus
    _prelu_kernel prelu log_sigmoid_forward threshold threshold_ clamp clamp_ clamp_min clamp_min_ clamp_max
    clamp_max_ abs abs_ neg neg_ exp exp_ log log_ sqrt sqrt_ rsqrt rsqrt_ pow pow_ sign erf reciprocal square
    add add_ sub sub_ rsub mul mul_ div div_ addcmul addcmul_ addcdiv addcdiv_ where maximum minimum lerp lerp_
    masked_fill masked_fill_ floor ceil round trunc remainder fmod bitwise_and bitwise_or bitwise_not logical_not
    eq ne lt le gt ge isnan isinf nan_to_num
    native_batch_norm _native_batch_norm_legit _native_batch_norm_legit_no_training
    _native_batch_norm_legit_functional native_layer_norm native_group_norm _batch_norm_with_update
    _batch_norm_no_update
    max_pool1d max_pool2d max_pool3d max_pool2d_with_indices max_pool3d_with_indices avg_pool1d avg_pool2d
    avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d _adaptive_avg_pool2d _adaptive_avg_pool3d
    adaptive_max_pool2d adaptive_max_pool3d mean sum amax amin max min var var_mean std std_mean norm
    linalg_vector_norm prod cumsum argmax argmin logsumexp
    _softmax _log_softmax softmax log_softmax native_dropout bernoulli bernoulli_
    cat stack index_select gather scatter scatter_add index index_put index_put_ masked_select
    constant_pad_nd reflection_pad1d reflection_pad2d replication_pad1d replication_pad2d replication_pad3d
    upsample_nearest1d upsample_nearest2d upsample_nearest3d upsample_bilinear2d upsample_bicubic2d
    _upsample_nearest_exact2d _upsample_bilinear2d_aa pixel_shuffle pixel_unshuffle channel_shuffle
    native_channel_shuffle flip roll repeat tile im2col col2im
    clone copy copy_ _to_copy contiguous fill fill_ zero_ zeros zeros_like ones ones_like full full_like
    arange scalar_tensor new_zeros new_ones new_full rand rand_like randn randn_like normal_ uniform_
    nll_loss_forward nll_loss2d_forward mse_loss binary_cross_entropy binary_cross_entropy_with_logits
    topk sort embedding embedding_bag _embedding_bag
""".split()}

# Metadata-only ops: no data moves, no cost. (Allocation without writing, e.g. empty, moves nothing either.)
VIEW_OPS: set[str] = {f"aten.{n}" for n in """
    view _unsafe_view reshape _reshape_alias view_as transpose transpose_ t t_ permute slice select expand
    expand_as unsqueeze unsqueeze_ squeeze squeeze_ split split_with_sizes unbind chunk narrow as_strided as_strided_ alias
    unsafe_split unsafe_split_with_sizes unsafe_chunk
    detach detach_ diagonal unfold view_as_real view_as_complex flatten unflatten movedim lift_fresh
    empty empty_like empty_strided new_empty new_empty_strided resize_ _local_scalar_dense is_same_size
    is_contiguous size stride storage_offset numel dim sym_size sym_stride sym_numel sym_storage_offset
    is_strides_like_format is_non_overlapping_and_dense sym_is_contiguous set_ _has_compatible_shallow_copy_type
    result_type _shape_as_tensor item equal
""".split()} | {"prim.device", "prim.layout", "prim.dtype"}

# Ops that write their outputs without reading their (tensor) first argument's values.
WRITE_ONLY_FIRST_ARG: set[str] = {"aten.copy_", "aten.fill_", "aten.zero_", "aten.normal_", "aten.uniform_",
                                  "aten.bernoulli_", "aten.index_put_", "aten.masked_fill_"}


def op_kind(name: str) -> str | None:
    """``"mac"``, ``"memory"``, ``"view"``, or None for an op the profiler does not know."""
    if name in MAC_OPS:
        return "mac"
    if name in MEMORY_OPS:
        return "memory"
    if name in VIEW_OPS:
        return "view"
    return None


def mac_formula(name: str) -> MacFormula:
    return MAC_OPS[name]


def register_op(name: str, kind: str, macs: MacFormula | None = None) -> None:
    """Teach the profiler an op: ``register_op("mylib.fused_conv", "mac", fn)`` with ``fn(args, kwargs, out)``
    returning MACs, or ``kind="memory"`` (zero MACs, traffic counted) or ``kind="view"`` (free).

    ``name`` is ``namespace.op`` without the overload (``aten.cumsum``, ``mylib.myop``).
    """
    if "." not in name:
        raise LightnnError(f"register_op: name must be 'namespace.op' (like 'aten.cumsum'), got {name!r}")
    for table in (MAC_OPS, MEMORY_OPS, VIEW_OPS):
        if isinstance(table, dict):
            table.pop(name, None)
        else:
            table.discard(name)
    if kind == "mac":
        if macs is None:
            raise LightnnError(f"register_op({name!r}, 'mac') needs a macs(args, kwargs, out) formula")
        MAC_OPS[name] = macs
    elif kind == "memory":
        MEMORY_OPS.add(name)
    elif kind == "view":
        VIEW_OPS.add(name)
    else:
        raise LightnnError(f"register_op: kind must be 'mac', 'memory' or 'view', got {kind!r}")
