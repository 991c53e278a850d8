"""ONNX export: parity with PyTorch for the zoo, BN folding, op errors, fp16, the ORT latency backend, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

import lightnn
from lightnn.errors import LightnnError, UnsupportedOpError
from lightnn.export import OrtSession, check_parity, export_fp16, export_onnx, fold_bn
from lightnn.models import model_info

# the default suite exports a few small models that cover the ops deployment cares about (depthwise, channel
# shuffle/split, squeeze-excite + hard-swish, residual adds, group convs + permutations, LRN); every other zoo
# model runs in the slow suite
DEFAULT_SUITE = {"mobilenet_v2_cifar", "shufflenet_v2_cifar", "mobilenet_v3_small_cifar", "resnet20", "igcv2_cifar",
                 "alexnet_grouped_cifar", "lenet5"}
# the adaptive 6x6/7x7 pool of AlexNet/VGG only exports when its input is a multiple of the output
FULL_SIZE_ONLY = {"alexnet", "alexnet_grouped", "vgg16"}


def _zoo_params():
    return [pytest.param(n, id=n, marks=() if n in DEFAULT_SUITE else pytest.mark.slow)
            for n in lightnn.list_models()]


@pytest.mark.parametrize("name", _zoo_params())
def test_zoo_model_exports_with_parity(name, tmp_path):
    model = lightnn.create_model(name).eval()
    size = model_info(name).input_size if name in FULL_SIZE_ONLY else model_info(name).test_input_size
    path = export_onnx(model, tmp_path / "m.onnx", input_size=size)
    x = torch.randn(3, *size)  # batch 3 != the export batch 1: the batch axis is dynamic
    rep = check_parity(model, path, x)
    assert rep.n == 3 and rep.max_abs_diff <= rep.tolerance and rep.top1_agreement == 1.0


class _ConvBNNet(nn.Module):
    default_input_size = (3, 16, 16)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.shared = nn.Conv2d(8, 8, 1)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)
        self.bn1d = nn.BatchNorm1d(5)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = self.bn2(self.shared(x)) + self.shared(x)  # shared conv used twice: must not be folded
        return self.bn1d(self.fc(x.mean((2, 3))))


def _randomize_bn(model):
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 2)
            m.bias.data.uniform_(-1, 1)
    return model


def test_fold_bn_is_exact_and_skips_shared_convs():
    model = _randomize_bn(_ConvBNNet()).eval()
    folded = fold_bn(model)
    x = torch.randn(4, 3, 16, 16)
    torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)
    assert isinstance(folded.bn, nn.Identity) and isinstance(folded.bn1d, nn.Identity)
    assert isinstance(folded.bn2, nn.BatchNorm2d)  # its conv has two consumers
    assert isinstance(model.bn, nn.BatchNorm2d)  # the original is untouched


def test_export_folds_bn_and_has_dynamic_batch(tmp_path):
    import onnx

    model = _randomize_bn(_ConvBNNet()).eval()
    path = export_onnx(model, tmp_path / "m.onnx")
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("BatchNormalization") == 1  # only the one after the shared conv remains
    sess = OrtSession(path)
    for b in (1, 5):
        assert sess.run(np.zeros((b, 3, 16, 16), np.float32)).shape == (b, 5)
    assert check_parity(model, path, 6).top1_agreement == 1.0


class _Zeta(nn.Module):
    def forward(self, x):
        return torch.special.zeta(x.abs() + 2, x.abs() + 1)


class _NoOnnx(nn.Module):
    default_input_size = (3, 8, 8)

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3)
        self.body = nn.Sequential(nn.ReLU(), _Zeta())

    def forward(self, x):
        return self.body(self.stem(x)).mean((2, 3))


def test_unsupported_op_error_names_op_and_layer(tmp_path):
    with pytest.raises(UnsupportedOpError) as e:
        export_onnx(_NoOnnx(), tmp_path / "m.onnx")
    msg = str(e.value)
    assert "special_zeta" in msg and "body.1" in msg and "_Zeta" in msg
    assert not (tmp_path / "m.onnx").exists()


def test_parity_check_fails_when_model_differs(tmp_path):
    model = _randomize_bn(_ConvBNNet()).eval()
    path = export_onnx(model, tmp_path / "m.onnx")
    with torch.no_grad():
        model.fc.bias += 1.0
    with pytest.raises(LightnnError, match="does not match PyTorch"):
        check_parity(model, path, 4)
    rep = check_parity(model, path, 4, raise_on_fail=False)
    assert rep.max_abs_diff > 0.5


def test_fp16_halves_size_and_keeps_outputs(tmp_path):
    model = lightnn.create_model("resnet20").eval()
    fp32 = export_onnx(model, tmp_path / "m.onnx")
    fp16 = export_fp16(fp32, tmp_path / "m.fp16.onnx")
    ratio = fp16.stat().st_size / fp32.stat().st_size
    assert 0.45 < ratio < 0.56
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32), dtype=np.float32)
    a, b = OrtSession(fp32).run(x), OrtSession(fp16).run(x)
    assert np.abs(a - b).max() <= 2e-3 * max(1.0, np.abs(a).max())


def test_onnxruntime_latency_backend():
    from lightnn.profile import measure_latency

    model = lightnn.create_model("resnet20")
    for backend in ("onnxruntime", "onnxruntime-int8"):
        res = measure_latency(model, (3, 32, 32), batch=2, threads=1, warmup=1, runs=3, backend=backend,
                              channels_last=False)
        assert len(res.samples_ms) == 3 and res.median_ms > 0 and res.batch == 2


def test_latency_sessions_follow_the_model(tmp_path):
    from lightnn.export.backends import _session_for

    x = torch.randn(2, 3, 8, 8)

    def check(width: int) -> nn.Module:
        m = nn.Sequential(nn.Conv2d(3, width, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
        with torch.no_grad():
            np.testing.assert_allclose(_session_for(m, x, 1, False).run(x), m(x).numpy(), rtol=1e-4, atol=1e-5)
        return m

    for width in (4, 4, 6):  # a new model each time, the last one freed (as when a pruner times candidates)
        check(width)
    m = check(4)
    lat = OrtSession(export_onnx(m, tmp_path / "m.onnx", input_size=(3, 8, 8))).latency(2, warmup=1, runs=3)
    assert lat.backend == "onnxruntime" and lat.input_size == (2, 3, 8, 8) and len(lat.samples_ms) == 3


def test_cli_export_int8_fp16_and_bad_calibration(tmp_path, capsys):
    from lightnn.cli import main

    out = tmp_path / "r20.int8.onnx"
    assert main(["export", "resnet20", "-o", str(out), "--int8", "--calibration-data", "sample",
                 "--calibration-size", "32", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["fp32"]["top1_agreement"] == 1.0 and (tmp_path / "r20.fp32.onnx").exists()
    assert summary["int8"]["size_ratio"] < 0.4 and summary["int8"]["top1_agreement"] >= 0.9
    assert OrtSession(out).run(np.zeros((2, 3, 32, 32), np.float32)).shape == (2, 1000)

    (tmp_path / "empty").mkdir()
    assert main(["export", "resnet20", "-o", str(out), "--int8", "--calibration-data", str(tmp_path / "empty")]) == 2
    assert "contains no images" in capsys.readouterr().err
    # 32x32 sample images for a 64x64 model: refused unless --resize
    assert main(["export", "resnet20", "-o", str(out), "--input-size", "64", "--int8",
                 "--calibration-data", "sample"]) == 2
    err = capsys.readouterr().err
    assert "32x32" in err and "64x64" in err and "--resize" in err
    assert main(["export", str(tmp_path / "nothere.pt"), "-o", str(out)]) == 2
    assert "nothere.pt" in capsys.readouterr().err


def test_cli_bench_json(capsys):
    from lightnn.cli import main

    assert main(["bench", "resnet20", "--backends", "eager,ort,ort-int8", "--batch", "1,2", "--rounds", "1",
                 "--runs", "2", "--calibration-data", "sample", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)["results"]
    assert {(r["backend"], r["batch"]) for r in res} == {(b, n) for b in ("eager", "ort", "ort-int8") for n in (1, 2)}
    assert all(r["median_ms"] > 0 and r["iqr_ms"] >= 0 for r in res)
    assert main(["bench", "resnet20", "--backends", "tensorrt"]) == 2
