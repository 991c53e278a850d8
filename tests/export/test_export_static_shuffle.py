"""ChannelShuffle exports as a constant-shape Reshape -> Transpose -> Reshape (no Shape/Gather/Unsqueeze chain),
keeps the batch axis dynamic, matches PyTorch, and still quantizes to int8."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from onnx import numpy_helper

import lightnn
from lightnn.export import OrtSession, check_parity, export_onnx
from lightnn.export.onnx import _StaticShuffle
from lightnn.models import model_info
from lightnn.ops import ChannelShuffle

SHAPE_OPS = {"Shape", "Gather", "Unsqueeze"}


def _ops(path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def _reshape_targets(path) -> list[list[int]]:
    """The constant shape of every Reshape in the graph (from a Constant node or an initializer)."""
    g = onnx.load(str(path)).graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for n in g.node:
        if n.op_type == "Constant":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return [consts[n.input[1]].tolist() for n in g.node if n.op_type == "Reshape"]


@pytest.mark.parametrize("groups,shape", [(2, (8, 5, 3)), (3, (12, 4, 4)), (4, (8, 1, 1)), (1, (6, 2, 2))])
def test_static_shuffle_matches_channel_shuffle(groups, shape):
    x = torch.randn(3, *shape)
    ref = ChannelShuffle(groups)
    out = _StaticShuffle(groups, shape)(x)
    torch.testing.assert_close(out, ref(x), rtol=0, atol=0)
    torch.testing.assert_close(out, x[:, ref.permutation(shape[0])], rtol=0, atol=0)


@pytest.mark.parametrize("name", ["shufflenet_v2_cifar", "shufflenet_v1_cifar"])
def test_shufflenet_exports_static_shuffle_with_dynamic_batch(name, tmp_path):
    model = lightnn.create_model(name).eval()
    size = model_info(name).test_input_size
    path = export_onnx(model, tmp_path / "m.onnx", input_size=size)
    ops = _ops(path)
    n_shuffle = sum(isinstance(m, ChannelShuffle) for m in model.modules())
    assert n_shuffle > 0
    assert not SHAPE_OPS & set(ops), ops  # every reshape target is a constant
    assert ops["Transpose"] == n_shuffle and ops["Reshape"] == 2 * n_shuffle
    shuffle_shapes = [s for s in _reshape_targets(path) if len(s) == 4]
    assert len(shuffle_shapes) == 2 * n_shuffle and all(s[0] == -1 for s in shuffle_shapes)
    sess = OrtSession(path)
    for b in (1, 4):  # exported at batch 1; other batch sizes run because the batch dim stays -1
        x = torch.randn(b, *size)
        assert sess.run(x.numpy()).shape[0] == b
        rep = check_parity(model, path, x)
        assert rep.max_abs_diff <= rep.tolerance and rep.top1_agreement == 1.0


class _SharedShuffle(nn.Module):
    """One ChannelShuffle instance called at two input shapes: no single static shape fits it."""

    default_input_size = (3, 8, 8)

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.shuffle = ChannelShuffle(2)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        x = self.shuffle(self.b(self.shuffle(self.a(x))))
        return self.fc(x.mean((2, 3)))


def test_shuffle_called_at_two_shapes_keeps_the_dynamic_export(tmp_path):
    model = _SharedShuffle().eval()
    path = export_onnx(model, tmp_path / "m.onnx")
    assert "Shape" in _ops(path)  # left as it was: a fixed (C, H, W) would be wrong for one of the two calls
    for b in (1, 3):
        rep = check_parity(model, path, torch.randn(b, 3, 8, 8))
        assert rep.max_abs_diff <= rep.tolerance and rep.top1_agreement == 1.0
    # the user's model is not modified by the export-time swap
    assert isinstance(model.shuffle, ChannelShuffle)


def test_static_shuffle_int8_quantizes_once_and_runs_any_batch(tmp_path):
    from lightnn.export.quantize import quantize_int8, runtime_op_types

    model = lightnn.create_model("shufflenet_v2_cifar", width_mult=0.5, num_classes=10).eval()
    fp32 = export_onnx(model, tmp_path / "m.onnx", input_size=32)
    calib = np.random.default_rng(0).standard_normal((16, 3, 32, 32), dtype=np.float32)
    int8 = quantize_int8(fp32, tmp_path / "m.int8.onnx", calib, calib_batch=8)
    ops = runtime_op_types(int8)
    assert not SHAPE_OPS & set(ops), ops
    # the whole network runs in int8 between one QuantizeLinear at the input and one DequantizeLinear at the output
    # (with the runtime-shape reshapes, each shuffle left a DequantizeLinear behind)
    assert ops.get("QuantizeLinear") == 1 and ops.get("DequantizeLinear") == 1, ops
    x = np.random.default_rng(1).standard_normal((4, 3, 32, 32), dtype=np.float32)
    ref, sess = OrtSession(fp32).run(x), OrtSession(int8)
    out = sess.run(x)
    assert out.shape == (4, 10) and sess.run(x[:1]).shape == (1, 10)
    assert np.abs(out - ref).max() <= 0.1 * max(1.0, float(np.abs(ref).max()))
