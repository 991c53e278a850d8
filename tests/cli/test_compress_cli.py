"""`lightnn compress` as a thin CLI: typed flag > --config file > default for every method (also when the typed value
equals the default), and every flag a method would not read is refused by name."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

import lightnn
from lightnn.checkpoint import save_checkpoint
from lightnn.cli import build_parser, compress_cmd, main


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = lightnn.create_model("resnet20", num_classes=10, width=8)
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "r20.pt", model)


def _yaml(tmp_path, d: dict) -> str:
    p = tmp_path / "recipe.yaml"
    p.write_text(yaml.safe_dump(d))
    return str(p)


def _channels(ckpt, tmp_path, capsys, *argv: str) -> dict:
    capsys.readouterr()
    assert main(["compress", str(ckpt), *argv, "--output", str(tmp_path / "out"), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("level", ["default", "config", "typed flag equal to the default"])
def test_channels_precedence(ckpt, tmp_path, capsys, level):
    argv = ["--method", "channels", "--ratio", "0.25"]
    if level != "default":
        argv += ["--config", _yaml(tmp_path, {"round_to": 4, "criterion": "l2", "ratio": 0.5})]
    if level == "typed flag equal to the default":
        argv += ["--round-to", "8", "--criterion", "l1"]
    cfg = _channels(ckpt, tmp_path, capsys, *argv)["config"]
    expect = {"default": (8, "l1"), "config": (4, "l2"), "typed flag equal to the default": (8, "l1")}[level]
    assert (cfg["round_to"], cfg["criterion"]) == expect
    assert cfg["ratio"] == 0.25  # the typed --ratio beats the file's 0.5


def test_method_and_budget_from_the_config_file(ckpt, tmp_path, capsys):
    rep = _channels(ckpt, tmp_path, capsys, "--config",
                    _yaml(tmp_path, {"method": "channels", "target_macs": 0.6, "plan": "uniform", "round_to": 4,
                                     "search_steps": 3}))
    assert rep["method"] == "channels" and rep["plan"]["kind"] == "uniform"
    assert rep["macs"]["after"] <= 0.6 * rep["macs"]["before"] and len(rep["plan"]["search"]) == 4


def test_deep_config_precedence_and_retraining_flags(tmp_path):
    parse = build_parser().parse_args
    recipe = {"val_fraction": 0.2, "batch_size": 64, "weight_decay": 1e-3, "distill_weight": 0.2}
    args = parse(["compress", "m.pt", "--val-fraction", "0.1", "--label-smoothing", "0.1", "--distill"])
    cfg = compress_cmd._config(args, recipe)
    assert args.val_fraction == 0.1  # typed, equal to the default: the file's 0.2 does not win
    assert args.batch_size == 64 and args.split_seed == 0  # the file, then the parser default
    assert cfg.weight_decay == 1e-3 and cfg.label_smoothing == 0.1 and cfg.distill_weight == 0.2
    args = parse(["compress", "m.pt", "--weight-decay", "5e-4", "--distill", "--kd-weight", "0.3"])
    cfg = compress_cmd._config(args, recipe)
    assert cfg.weight_decay == 5e-4 and cfg.distill_weight == 0.3 and args.val_fraction == 0.2
    cfg = compress_cmd._config(parse(["compress", "m.pt", "--distill"]), {})
    assert cfg.distill_weight == 0.5


@pytest.mark.parametrize("argv,msg", [
    (["--method", "deep", "--lr", "0.1"], "--method deep does not use --lr"),
    (["--finetune-epochs", "1"], "--method deep does not use --finetune-epochs"),
    (["--method", "share", "--weight-decay", "1e-4"], "--method share does not use --weight-decay"),
    (["--method", "prune", "--conv-bits", "4"], "--method prune does not use --conv-bits"),
    (["--method", "lowrank", "--energy", "0.9", "--data", "sample"], "--method lowrank does not use --data"),
    (["--method", "channels", "--ratio", "0.3", "--sparsity", "0.5"], "--method channels does not use --sparsity"),
    (["--method", "channels", "--ratio", "0.3", "--lr", "0.1"], "--lr needs --finetune-epochs > 0"),
    (["--method", "channels", "--target-macs", "0.5", "--scope", "global"], "--scope applies to --ratio only"),
    (["--method", "channels", "--ratio", "0.3", "--plan", "uniform"], "--plan applies to --target-macs"),
    (["--method", "channels", "--target-macs", "0.5", "--plan", "uniform", "--ratios", "0.5"],
     "--ratios is read by the sensitivity plan only"),
    (["--method", "channels", "--ratio", "0.3", "--rank-blocks", "latency"], "--rank-blocks needs --remove-blocks"),
    (["--method", "channels", "--ratio", "0.3", "--latency-batch", "8"], "--latency-batch applies to"),
    (["--method", "channels", "--ratio", "0.3", "--eval-limit", "5"], "--eval-limit needs --data"),
    (["--method", "deep", "--kd-weight", "0.3"], "--kd-weight needs --distill"),
    (["--sensitivity", "--method", "deep"], "does not combine with --method deep"),
    (["--sensitivity", "--target-macs", "0.5"], "--sensitivity does not use --target-macs"),
])
def test_flags_a_method_does_not_read_are_refused(tmp_path, capsys, argv, msg):
    # refused before the (missing) checkpoint is opened
    assert main(["compress", str(tmp_path / "missing.pt"), *argv]) == 2
    err = capsys.readouterr().err
    assert msg in err and "does not exist" not in err


@pytest.mark.parametrize("recipe,argv,msg", [
    ({"sparsity": 0.5}, ["--method", "channels", "--ratio", "0.3"], "unknown key(s) ['sparsity']"),
    ({"method": "pruning"}, [], "method must be one of"),
    ({"target_macs": 2.0}, ["--method", "channels"], "target_macs must be a fraction in (0, 1)"),
    ({}, ["--method", "channels", "--target-macs", "0.5"], "--data is required: a sensitivity-planned budget"),
    ({}, ["--method", "lowrank"], "exactly one of --rank N / --energy F"),
])
def test_bad_structured_configs_are_named(ckpt, tmp_path, capsys, recipe, argv, msg):
    assert main(["compress", str(ckpt), *argv, "--config", _yaml(tmp_path, recipe),
                 "--output", str(tmp_path / "o")]) == 2
    assert msg in capsys.readouterr().err


def test_criterion_choices_come_from_the_criteria_registry():
    from lightnn.compress.importance import criteria, register_criterion

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["compress"]
    assert next(a for a in sub._actions if a.dest == "criterion").choices == criteria()
    assert {"l1", "l2", "bn_scale", "taylor", "random"} <= set(criteria())
    register_criterion("test_only_first_weight")(lambda group, model: None)  # one line teaches the CLI a criterion
    try:
        sub = next(a for a in build_parser()._actions if a.dest == "command").choices["compress"]
        assert "test_only_first_weight" in next(a for a in sub._actions if a.dest == "criterion").choices
    finally:
        from lightnn.compress import importance

        importance.CRITERIA.pop("test_only_first_weight")


def _train_cfg(argv, config=None, tmp_path=None):
    """The merged `lightnn train` configuration for ``argv`` (and a --config file holding ``config``)."""
    import yaml

    from lightnn.cli import build_parser
    from lightnn.cli._common import merge_config

    if config is not None:
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
        argv = [*argv, "--config", str(tmp_path / "c.yaml")]
    args = build_parser().parse_args(["train", "resnet20", *argv])
    return merge_config(args, {} if config is None else config)


def test_train_precedence_flag_over_config_over_default(tmp_path):
    assert _train_cfg([])["epochs"] == 30 and _train_cfg([])["lr"] == 0.1  # the parser defaults
    assert _train_cfg([], {"epochs": 7}, tmp_path)["epochs"] == 7  # a config value beats the default
    assert _train_cfg(["--epochs", "3"], {"epochs": 7}, tmp_path)["epochs"] == 3  # a typed flag beats the config
    # ... even when the typed value equals the default (a value comparison would let the config win)
    assert _train_cfg(["--epochs", "30"], {"epochs": 7}, tmp_path)["epochs"] == 30
    assert _train_cfg(["--no-amp"], {"amp": True}, tmp_path)["amp"] is False
    assert _train_cfg([], {"amp": True}, tmp_path)["amp"] is True and _train_cfg([])["amp"] is None


@pytest.mark.parametrize("argv,message", [
    (["m.onnx", "--int8", "--opset", "13"], "--opset does not apply to an ONNX source"),
    (["m.onnx", "--fp16", "--static-batch"], "--static-batch does not apply to an ONNX source"),
    (["resnet20", "--qat-lr", "0.01"], "--qat-lr needs --qat-epochs"),
    (["resnet20", "--int8", "--train-data", "sample"], "--train-data needs --qat-epochs"),
    (["resnet20", "--fp16", "--calibration-size", "8"], "--calibration-size applies to --int8 / --qat-epochs only"),
    (["resnet20", "--qat-epochs", "1", "--calibration-method", "entropy"], "--calibration-method applies to --int8"),
])
def test_export_refuses_flags_it_would_not_read(tmp_path, capsys, argv, message):
    from lightnn.cli import main

    assert main(["export", *argv, "--output", str(tmp_path / "out.onnx")]) == 2
    assert message in capsys.readouterr().err


def test_quantize_refuses_an_input_size_for_an_onnx_source(tmp_path, capsys):
    from lightnn.cli import main

    assert main(["quantize", "m.onnx", "--calibration-data", "sample", "--output", str(tmp_path / "q"),
                 "--input-size", "32"]) == 2
    assert "--input-size does not apply to an ONNX source" in capsys.readouterr().err
