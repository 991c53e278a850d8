"""The model record and lightnn.save / lightnn.load: files written by the session-start main still load into the
same model and record, .pt and .lnz round trips keep the record and the weights, records validate and never
change in place."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import lightnn
from lightnn import ModelRecord
from lightnn.compress.channel import prune_channels
from lightnn.record import build
from lightnn.data import Normalization
from lightnn.errors import CheckpointError, LightnnError
from lightnn.models import model_normalization, record_of, set_record

FIXTURES = Path(__file__).parent / "fixtures"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@pytest.mark.parametrize("suffix,key", [(".pt", "pt_logits"), (".lnz", "lnz_logits")])
def test_files_from_format_version_1_load_into_a_record(suffix, key):
    # written by lightnn's main of 2026-12-03 (format version 1: no digest, normalization in free-form metadata)
    expected = torch.load(FIXTURES / "v1_expected.pt", weights_only=True)
    model, rec = lightnn.load(FIXTURES / f"v1_resnet20_w4_pruned{suffix}")
    with torch.no_grad():
        torch.testing.assert_close(model(expected["input"]), expected[key], rtol=1e-5, atol=1e-6)
    assert rec.name == "resnet20" and rec.arch_kwargs == {"num_classes": 10, "in_chans": 3, "width": 4}
    assert [t["kind"] for t in rec.transforms] == ["channels"] and rec.transforms[0]["layers"]
    assert rec.normalize == Normalization((0.49, 0.48, 0.45), (0.25, 0.24, 0.26)) and rec.classes == CLASSES
    assert rec.metrics == ({"val_top1": 12.5} if suffix == ".pt" else {})
    assert rec.resolved_input_size == (3, 32, 32) and not model.training


@pytest.fixture(scope="module")
def pruned():
    torch.manual_seed(0)
    m = lightnn.create_model("resnet20", num_classes=10, width=8).eval()
    return prune_channels(m, torch.randn(1, 3, 32, 32), 0.25, round_to=1).eval()


@pytest.mark.parametrize("suffix", [".pt", ".lnz"])
def test_save_load_round_trip_keeps_record_and_weights(pruned, tmp_path, suffix):
    rec = ModelRecord.of(pruned, input_size=(3, 32, 32), normalize={"mean": [0.5] * 3, "std": [0.25] * 3},
                         classes=CLASSES, metrics={"val_top1": 41.5})
    lightnn.save(tmp_path / f"m{suffix}", pruned, rec, meta={"note": "kept"})
    model, back = lightnn.load(tmp_path / f"m{suffix}")
    assert back == rec
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), pruned(x), rtol=0, atol=0)  # lossless: .lnz of float32 weights
    assert model_normalization(model) == {"mean": [0.5] * 3, "std": [0.25] * 3}  # handed on to eval/export


def test_record_not_attributes_names_the_architecture(pruned, tmp_path):
    # the record, not whatever the module carries, says what rebuilds the file
    other = ModelRecord.of(pruned).replace(arch_kwargs={**record_of(pruned).arch_kwargs, "num_classes": 100})
    lightnn.save(tmp_path / "other.pt", pruned, other)
    with pytest.raises(CheckpointError, match=r"weights do not fit.*classifier\.weight"):
        lightnn.load(tmp_path / "other.pt")


def test_build_replays_the_transforms(pruned):
    rec = ModelRecord.of(pruned)
    fresh = build(rec)
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {k: v.shape for k, v in pruned.state_dict().items()}
    assert record_of(fresh).transforms == rec.transforms


def test_records_are_frozen_and_edits_make_new_ones(pruned):
    rec = ModelRecord.of(pruned)
    with pytest.raises(Exception):
        rec.name = "resnet32"
    spec = {"kind": "blocks", "removed": ["stages.0.0"]}
    after = rec.with_transform(spec)
    assert after.transforms[-1] == spec and len(after.transforms) == len(rec.transforms) + 1
    assert len(rec.transforms) == 1


@pytest.mark.parametrize("fields,match", [
    ({"name": "nonet"}, "not a registered model"),
    ({"name": "resnet20", "arch_kwargs": [1]}, "arch_kwargs must be a mapping"),
    ({"name": "resnet20", "transforms": ({"nokind": 1},)}, "transform must be a mapping with a 'kind'"),
    ({"name": "resnet20", "input_size": (3, 32)}, r"input_size must be \(C, H, W\)"),
    ({"name": "resnet20", "normalize": {"mean": [0.5], "std": [0.0]}}, "std > 0"),
    ({"name": "resnet20", "normalize": {"mean": [0.5, 0.5], "std": [0.2]}}, "one value per channel"),
    ({"name": "resnet20", "classes": (1, 2)}, "classes must be strings"),
])
def test_bad_records_are_refused_by_field(fields, match):
    with pytest.raises(LightnnError, match=match):
        ModelRecord(**fields)


def test_save_refuses_lnz_options_for_a_pt_file(pruned, tmp_path):
    with pytest.raises(LightnnError, match="apply to .lnz files only"):
        lightnn.save(tmp_path / "m.pt", pruned, index_bits=4)


def test_load_refuses_a_bare_state_dict(tmp_path):
    torch.save(lightnn.create_model("lenet5", num_classes=10).state_dict(), tmp_path / "sd.pt")
    with pytest.raises(CheckpointError, match="bare state dict"):
        lightnn.load(tmp_path / "sd.pt")


def test_an_architecture_argument_that_is_not_plain_data_is_refused_at_save_time(tmp_path):
    import torch.nn as nn

    m = lightnn.create_model("resnet20", num_classes=10, width=4)
    set_record(m, record_of(m).replace(arch_kwargs={**record_of(m).arch_kwargs, "act": nn.ReLU}))  # a class: torch.load(weights_only=True) could not read it
    for suffix in (".pt", ".lnz"):
        with pytest.raises(LightnnError, match=r"cannot be saved.*arch_kwargs\['act'\] of type type"):
            lightnn.save(tmp_path / f"m{suffix}", m)
        assert not (tmp_path / f"m{suffix}").exists()


def _lightnn_attributes(model) -> set[str]:
    return {k for k in vars(model) if k.startswith("lightnn_")}


def test_a_model_carries_one_record_through_every_edit():
    from lightnn.compress.depth import remove_blocks
    from lightnn.compress.lowrank import factorize
    from lightnn.export.qat import convert_qat, prepare_qat
    from lightnn.transforms.fold import fold_bn

    torch.manual_seed(0)
    m = lightnn.create_model("resnet20", num_classes=10, width=8).eval()
    x = torch.randn(1, 3, 32, 32)
    assert _lightnn_attributes(m) == {"lightnn_record"} and record_of(m).transforms == ()
    m = remove_blocks(m, ["features.2.1"], x)
    m = prune_channels(m, x, 0.25, round_to=1)
    factorize(m, energy=0.9)
    kinds = [t["kind"] for t in record_of(m).transforms]
    assert kinds[:2] == ["blocks", "channels"] and set(kinds[2:]) <= {"lowrank"}
    folded = fold_bn(m)
    assert [t["kind"] for t in record_of(folded).transforms] == [*kinds, "fold_bn"]
    assert [t["kind"] for t in record_of(m).transforms] == kinds  # the source's record is untouched
    q = prepare_qat(m)
    assert [t["kind"] for t in record_of(q).transforms] == [*kinds, "fold_bn", "fake_quant"]
    plain, _ = convert_qat(q)
    assert [t["kind"] for t in record_of(plain).transforms] == [*kinds, "fold_bn"]
    for model in (m, folded, q, plain):
        assert _lightnn_attributes(model) == {"lightnn_record"} and record_of(model).name == "resnet20"
    # the recorded edits rebuild the same architecture: a fresh build takes the edited model's weights
    fresh = build(record_of(folded))
    fresh.load_state_dict(folded.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), folded(x), rtol=0, atol=0)


def test_a_users_own_module_gets_a_nameless_record_that_replays_but_is_not_saved(tmp_path):
    import torch.nn as nn

    from lightnn.transforms import apply_transforms

    def net():
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))

    model = net().eval()
    assert record_of(model) is None
    pruned = prune_channels(model, torch.randn(1, 3, 8, 8), 0.5, round_to=1)
    rec = record_of(pruned)
    assert rec.name is None and [t["kind"] for t in rec.transforms] == ["channels"]
    again = apply_transforms(net(), rec.transforms)
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in pruned.state_dict().items()}
    with pytest.raises(LightnnError, match="no registry name"):
        lightnn.save(tmp_path / "m.pt", pruned)
    assert not (tmp_path / "m.pt").exists()
