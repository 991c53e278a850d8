"""One evaluate for PyTorch modules and ONNX models: a module and its ONNX export score the same on the same data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from lightnn.data import BatchLoader, ImageData
from lightnn.errors import LightnnError
from lightnn.train import array_batches, evaluate
from lightnn.models import model_normalization, record_update


def tiny_data(n: int = 40, k: int = 5, size: int = 8, seed: int = 0) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % k
    imgs = torch.randint(0, 120, (n, 3, size, size), generator=g, dtype=torch.uint8)
    imgs[:, 0] += (labels * 25).to(torch.uint8)[:, None, None]
    imgs[:, 1, :, :4] += 60  # not mirror-symmetric: flip TTA changes the logits
    return ImageData(imgs, labels, [f"c{i}" for i in range(k)], source="tiny")


class Net(nn.Module):
    default_input_size = (3, 8, 8)

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.ReLU(), nn.Flatten())
        self.fc = nn.Linear(8 * 4 * 4, 5)
        self.num_classes = 5

    def forward(self, x):
        return self.fc(self.body(x))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from lightnn.export import export_onnx

    model = Net().eval()
    record_update(model, normalize={"mean": [0.25, 0.2, 0.15], "std": [0.5, 0.5, 0.5]})  # exact in the file's metadata
    path = export_onnx(model, tmp_path_factory.mktemp("ev") / "net.onnx")
    return model, path


@pytest.mark.parametrize("tta", [None, "flip"])
def test_a_module_and_its_onnx_export_score_the_same(exported, tta):
    from lightnn.runtime import OrtSession

    model, path = exported
    data = tiny_data()
    ref = evaluate(model, data, batch_size=16, tta=tta)
    # the ONNX file reads its normalization from its metadata, like the module from its record
    for onnx_model in (path, str(path), OrtSession(path, threads=1)):
        got = evaluate(onnx_model, data, batch_size=16, tta=tta)
        assert got["top1"] == ref["top1"] and got["top5"] == ref["top5"] and got["n"] == ref["n"] == 40
        assert got["confusion"] == ref["confusion"] and got["loss"] == pytest.approx(ref["loss"], rel=1e-4, abs=1e-5)
    assert 0 < ref["top1"] < 100  # a score the comparison can get wrong
    # pre-normalized arrays (an int8 report's images) through array_batches: same counts
    loader = BatchLoader(data, 40, mean=model_normalization(model)["mean"], std=model_normalization(model)["std"])
    x, y = next(iter(loader))
    got = evaluate(OrtSession(path), array_batches(x.numpy(), y.numpy(), 7), tta=tta)
    assert got["top1"] == ref["top1"] and got["n"] == 40


def test_top1_is_the_first_of_tied_logits():
    # int8 models tie often: top-1 follows argmax (the first maximum), as the ONNX callers counted it before
    class Tied(nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[0], 3)

    x, y = torch.zeros(4, 3, 2, 2), torch.tensor([0, 0, 1, 2])
    res = evaluate(Tied(), [(x, y)])
    assert res["top1"] == 50.0 and res["top5"] == 100.0 and res["confusion"][0] == [2, 0, 0]


def test_bad_models_are_named(tmp_path):
    with pytest.raises(LightnnError, match="is not .onnx"):
        evaluate(str(tmp_path / "m.pt"), [(np.zeros((1, 3, 8, 8), np.float32), np.zeros(1, np.int64))])
    with pytest.raises(LightnnError, match="does not exist"):
        evaluate(tmp_path / "missing.onnx", [(np.zeros((1, 3, 8, 8), np.float32), np.zeros(1, np.int64))])
    with pytest.raises(LightnnError, match="got int"):
        evaluate(3, [])


def test_cli_evaluates_an_onnx_file_like_its_module(exported, tmp_path, capsys, monkeypatch):
    import io
    import json
    import zipfile

    from PIL import Image

    from lightnn.cli import main
    from lightnn.data import load_dataset

    monkeypatch.setenv("LIGHTNN_CACHE", str(tmp_path / "cache"))
    model, path = exported
    rng = np.random.default_rng(0)
    zpath = tmp_path / "tiny.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for c in range(5):
            for i in range(4):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, "PNG")
                z.writestr(f"train/c{c}/{i}.png", buf.getvalue())
    assert main(["eval", str(path), "--data", str(zpath), "--split", "all", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    want = evaluate(model, load_dataset(str(zpath), "all"))
    assert got["n"] == want["n"] == 20 and got["top1"] == want["top1"] and got["confusion"] == want["confusion"]
