"""torchvision checkpoints load into lightnn's models and give the same outputs (runs where torchvision is
installed: ``pip install torchvision`` then ``pytest tests/models/test_interop_torchvision.py``).

For every name lightnn shares with torchvision: build torchvision's model with random weights and randomized
BatchNorm statistics, save its state dict, load it with ``create_model(name, checkpoint=file)`` and with
``load_foreign_state_dict``, and compare the eval-mode outputs.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import lightnn
from lightnn.errors import CheckpointError
from lightnn.models.convert import load_foreign_state_dict

tvm = pytest.importorskip("torchvision.models")

SHARED = ["mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0",
          "shufflenet_v2_x1_5", "shufflenet_v2_x2_0", "mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3",
          "inception_v3", "resnet18", "resnet34", "resnet50", "alexnet", "vgg16"]
SIZE = {"inception_v3": 299}


def _torchvision(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = getattr(tvm, name)(weights=None)
    with torch.no_grad():  # make BatchNorm do something, so a mis-paired statistic shows in the outputs
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def test_every_shared_name_is_registered():
    assert set(SHARED) <= set(lightnn.list_models())


@pytest.mark.parametrize("name", SHARED)
def test_torchvision_state_dict_gives_same_outputs(name, tmp_path):
    ref = _torchvision(name)
    path = tmp_path / f"{name}.pth"
    torch.save(ref.state_dict(), path)
    from_file = lightnn.create_model(name, checkpoint=str(path)).eval()
    direct = load_foreign_state_dict(lightnn.create_model(name).eval(), ref.state_dict(), "torchvision")
    size = SIZE.get(name, 128)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = ref(x)
        torch.testing.assert_close(from_file(x), expected, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(direct(x), expected, rtol=1e-4, atol=1e-4)
    assert sum(p.numel() for p in from_file.parameters()) == sum(p.numel() for p in ref.parameters())


@pytest.mark.parametrize("name,width", [("mobilenet_v2", 0.5), ("mobilenet_v3_large", 0.75), ("mobilenet_v3_small", 1.25)])
def test_width_multipliers_match_torchvision(name, width):
    torch.manual_seed(0)
    ref = getattr(tvm, name)(weights=None, width_mult=width).eval()
    ours = load_foreign_state_dict(lightnn.create_model(name, width_mult=width).eval(), ref.state_dict())
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)


def test_inception_v3_training_outputs_match_with_aux():
    ref = _torchvision("inception_v3").train()
    ours = load_foreign_state_dict(lightnn.create_model("inception_v3"), ref.state_dict()).train()
    x = torch.randn(2, 3, 299, 299)
    torch.manual_seed(1)
    r = ref(x)
    torch.manual_seed(1)  # the same dropout mask
    o = ours(x)
    torch.testing.assert_close(o.logits, r.logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(o.aux_logits, r.aux_logits, rtol=1e-4, atol=1e-4)


def test_pretrained_inception_preprocessing_is_available():
    # torchvision turns transform_input on for its Google weights; lightnn exposes the same switch
    ref = _torchvision("inception_v3")
    ref.transform_input = True
    ours = load_foreign_state_dict(lightnn.create_model("inception_v3", transform_input=True).eval(), ref.state_dict())
    x = torch.randn(1, 3, 299, 299)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)


def test_wrong_architecture_is_a_clear_error():
    sd = _torchvision("mobilenet_v2").state_dict()
    with pytest.raises(CheckpointError, match="missing|unexpected"):
        load_foreign_state_dict(lightnn.create_model("mobilenet_v3_large"), sd, "torchvision mobilenet_v2")
