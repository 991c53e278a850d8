"""The model contract, checked for every registered name (timm-style generic tests).

Small inputs keep it fast: 32x32 models at 32, ImageNet models at their registered ``test_input_size``.
Only one ImageNet-size member per family runs in the default suite (see DEFAULT); all run in the slow suite.
"""

from __future__ import annotations

import pytest
import torch
import torch.fx

import lightnn
from lightnn.checkpoint import save_checkpoint
from lightnn.errors import LightnnError, UnknownModelError

ALL = lightnn.list_models()
# The default suite checks every 32x32 model and one ImageNet-size member of each family; the rest (other widths,
# the big models) run in the slow suite, which CI runs too.
DEFAULT = ("*cifar*", "lenet*", "resnet20", "resnet56", "mobilenet_v1_025", "mobilenet_v2", "mobilenet_v3_small",
           "shufflenet_v2_x0_5", "shufflenet_v1", "mnasnet0_5", "resnet18", "igcv1_l100m2", "igcv2_0_25", "igcv3_050")
SLOW = {"inception_v3_cifar", "xception_cifar", "alexnet_grouped_cifar", "vgg16_cifar"}


def _params(names: list[str]):
    import fnmatch

    fast = {n for n in names if any(fnmatch.fnmatchcase(n, p) for p in DEFAULT)} - SLOW
    return [n if n in fast else pytest.param(n, marks=pytest.mark.slow) for n in names]


def _input(name: str, batch: int = 2) -> torch.Tensor:
    c, h, w = lightnn.model_info(name).test_input_size
    return torch.randn(batch, c, h, w)


@pytest.mark.parametrize("name", _params(ALL))
def test_forward_backward_contract(name):
    model = lightnn.create_model(name, num_classes=7)
    model.train()
    x = _input(name)
    out = model(x)
    logits = out[0] if isinstance(out, tuple) else out
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()
    (sum(o.sum() for o in out) if isinstance(out, tuple) else logits.sum()).backward()  # aux heads too
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient reaches {missing[:5]}"
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape[1] == model.num_features
        assert torch.allclose(model.forward_head(feats), model(x), atol=1e-5)
        assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)
    model.reset_classifier(3)
    with torch.no_grad():
        assert model(x).shape == (2, 3)


@pytest.mark.parametrize("name", _params(ALL))
def test_in_chans_and_fx_trace(name):
    model = lightnn.create_model(name, num_classes=5, in_chans=1).eval()
    c, h, w = lightnn.model_info(name).test_input_size
    x = torch.randn(1, 1, h, w)
    with torch.no_grad():
        assert model(x).shape == (1, 5)
    gm = torch.fx.symbolic_trace(model)  # the pruner and exporter rely on a traceable graph
    with torch.no_grad():
        torch.testing.assert_close(gm(x), model(x))


@pytest.mark.parametrize("name", _params(ALL))
def test_checkpoint_roundtrip(name, tmp_path):
    model = lightnn.create_model(name, num_classes=4).eval()
    path = save_checkpoint(tmp_path / "m.pt", model, meta={"note": "test"})
    rebuilt = lightnn.create_model(name, checkpoint=str(path)).eval()
    x = _input(name, 1)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))


def test_unknown_model_name_is_clear():
    with pytest.raises(UnknownModelError, match="unknown model name 'mobilenet_v9'"):
        lightnn.create_model("mobilenet_v9")


def test_unknown_argument_is_clear():
    name = ALL[0]
    with pytest.raises(LightnnError, match="does not take argument"):
        lightnn.create_model(name, not_an_arg=3)


def test_fixed_width_name_rejects_width_argument():
    with pytest.raises(LightnnError, match="'igcv3_100' fixes 'width_mult'"):
        lightnn.create_model("igcv3_100", width_mult=0.5)


@pytest.mark.parametrize("arg", ["width_mult", "groups"])
def test_width_arguments_build_or_fail_clearly(arg):
    # every registered name either takes the argument or says clearly that it does not (never a bare TypeError)
    for name in ALL:
        try:
            lightnn.create_model(name, num_classes=10, **{arg: 2 if arg == "groups" else 0.5})
        except LightnnError:
            pass


def test_list_models_wildcard():
    assert lightnn.list_models("zzz*") == []
    assert set(lightnn.list_models("*")) == set(ALL)
