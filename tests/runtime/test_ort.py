"""lightnn.runtime.OrtSession: an exported model runs in ONNX Runtime to the PyTorch outputs, from a file or from
bytes, reads its static input size, and a missing or damaged file or an absent provider is a one-line error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lightnn
from lightnn.errors import LightnnError
from lightnn.export import export_onnx
from lightnn.runtime import OrtSession


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = lightnn.create_model("resnet20", num_classes=10, width=4).eval()
    return model, export_onnx(model, tmp_path_factory.mktemp("ort") / "r20.onnx", input_size=(3, 32, 32))


def test_file_and_bytes_sessions_match_pytorch(exported):
    model, path = exported
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ref = model(x).numpy()
    for sess in (OrtSession(path, threads=1), OrtSession(path.read_bytes(), threads=1, spinning=False)):
        np.testing.assert_allclose(sess.run(x), ref, rtol=1e-4, atol=1e-5)
        assert sess.input_size == (3, 32, 32) and sess.threads == 1


def test_missing_damaged_and_unavailable_are_named(exported, tmp_path):
    _, path = exported
    with pytest.raises(LightnnError, match="does not exist"):
        OrtSession(tmp_path / "none.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(path.read_bytes()[: 200])
    with pytest.raises(LightnnError, match=r"ONNX Runtime cannot load .*bad\.onnx"):
        OrtSession(bad)
    with pytest.raises(LightnnError, match="providers .*NoSuchExecutionProvider.* are not available"):
        OrtSession(path, providers=["NoSuchExecutionProvider"])
