"""lightnn.transforms: every built-in edit replays from its recorded spec on a fresh model to the same function
(the checkpoint path), the registry takes a new kind from outside and refuses bad specs by name."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import lightnn
from lightnn.compress.channel import prune_channels
from lightnn.compress.depth import remove_blocks
from lightnn.compress.lowrank import factorize
from lightnn.errors import CheckpointError, LightnnError
from lightnn.export.qat import prepare_qat
from lightnn.models import record_of
from lightnn.transforms import apply_transforms, register_transform, transform_kinds
from lightnn.transforms import _TRANSFORMS
from lightnn.transforms.fold import fold_bn

X = torch.randn(2, 3, 32, 32)


def _fresh():
    torch.manual_seed(0)
    return lightnn.create_model("resnet20", num_classes=10, width=8).eval()


def _trained_bn(model):
    # BN statistics away from (0, 1), so folding is not the identity and the check can fail
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return model


EDITS = {
    "channels": lambda m: prune_channels(m, X[:1], 0.5, round_to=1),
    "blocks": lambda m: remove_blocks(m, ["features.2.1"], X[:1]),
    "lowrank": lambda m: (factorize(m, energy=0.8), m)[1],
    "fold_bn": lambda m: fold_bn(m),
    "fake_quant": lambda m: prepare_qat(m).eval(),
}


@pytest.mark.parametrize("kind", list(EDITS))
def test_each_edit_replays_from_its_spec_to_the_same_function(kind):
    with torch.no_grad():
        edited = EDITS[kind](_trained_bn(_fresh()))
        specs = record_of(edited).transforms
        assert specs and specs[-1]["kind"] == kind
        replayed = apply_transforms(_fresh(), specs)
        assert record_of(replayed).transforms == specs
        replayed.load_state_dict(edited.state_dict())  # strict: the same layers, the same shapes
        torch.testing.assert_close(replayed.eval()(X), edited(X), rtol=0, atol=0)


def test_a_kind_registered_from_outside_replays_and_is_recorded():
    @register_transform("test_double_head")
    def double_head(model, spec):
        model.classifier = nn.Sequential(model.classifier, nn.Linear(10, int(spec["out"])))
        return model

    try:
        assert "test_double_head" in transform_kinds()
        m = apply_transforms(_fresh(), [{"kind": "test_double_head", "out": 3}])
        assert m(X).shape == (2, 3) and record_of(m).transforms[-1] == {"kind": "test_double_head", "out": 3}
        with pytest.raises(LightnnError, match="already registered"):
            register_transform("test_double_head")(lambda model, spec: model)
    finally:
        _TRANSFORMS.pop("test_double_head")


@pytest.mark.parametrize("specs,match", [
    ([{"kind": "no_such_edit"}], r"transform #0 'no_such_edit' is not an architecture transform.*known: blocks"),
    ([["channels"]], "transform #0 is a list, not a mapping"),
])
def test_bad_specs_are_refused_by_position_and_name(specs, match):
    with pytest.raises(CheckpointError, match=match):
        apply_transforms(_fresh(), specs)
