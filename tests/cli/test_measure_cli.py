"""The measuring subcommands as a thin CLI (`lightnn list`, `profile`, `eval`, `bench`, `run`, `quantize`, `export`):
every flag is read or refused by a one-line error naming it, choices come from the registries, and `lightnn run`
takes an explicit flag over the config file over the default (also when the typed value equals the default)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

import lightnn
from lightnn.cli import build_parser, main
from lightnn.data import Normalization
from lightnn.models import record_update

CLASSES = ("cat", "dog")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A labelled ImageFolder tree: 2 classes x 8 train and 2 x 2 val images, 32x32 RGB."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("data") / "tiny"
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 2)):
        for c in CLASSES:
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    return str(root)


@pytest.fixture(scope="module")
def flat(tmp_path_factory):
    """Unlabelled calibration images: a flat folder of 6 32x32 PNGs."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("flat")
    rng = np.random.default_rng(1)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return str(root)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = record_update(lightnn.create_model("resnet20", num_classes=len(CLASSES), width=4), classes=CLASSES,
                          normalize=Normalization((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    return str(lightnn.save(tmp_path_factory.mktemp("ck") / "r20.pt", model))


@pytest.fixture(scope="module")
def onnx_model(ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "r20.onnx"
    assert main(["export", ckpt, "--output", str(out), "--parity-inputs", "2"]) == 0
    return str(out)


def _choices(command: str, dest: str):
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    return next(a for a in sub._actions if a.dest == dest).choices


def _refused(capsys, argv: list[str], msg: str) -> None:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    head = f"lightnn {argv[0]}: error: "
    assert err.startswith(head) and err.count(f"lightnn {argv[0]}:") == 1 and len(err.strip().splitlines()) == 1, err
    assert msg in err, err


# --- lightnn list ------------------------------------------------------------------------------------------------


def test_list_table_pattern_and_no_match(capsys):
    assert main(["list", "resnet2*"]) == 0
    out = capsys.readouterr().out
    assert "resnet20" in out and "mobilenet_v2" not in out and out.rstrip().endswith("models")
    assert main(["list", "no_such_model*"]) == 1
    assert "no model matches no_such_model*" in capsys.readouterr().out


def test_list_json_fields_and_no_match(capsys):
    assert main(["list", "lenet5", "resnet20", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["lenet5", "resnet20"]
    assert set(rows[0]) == {"name", "family", "input_size", "paper"} and rows[0]["input_size"] == [1, 28, 28]
    assert main(["list", "no_such_model*", "--json"]) == 1
    assert json.loads(capsys.readouterr().out) == []


# --- lightnn profile ---------------------------------------------------------------------------------------------


def test_profile_backend_choices_come_from_the_latency_registry():
    from lightnn.profile import latency_backends

    assert _choices("profile", "backend") == latency_backends()
    assert {"eager", "onnxruntime", "onnxruntime-int8"} <= set(latency_backends())  # ONNX Runtime's, on import


@pytest.mark.parametrize("argv,msg", [
    (["--threads", "1"], "--threads needs --latency"),
    (["--runs", "3"], "--runs needs --latency"),
    (["--clock", "thread"], "--clock needs --latency"),
    (["--backend", "onnxruntime"], "--backend needs --latency"),
    (["--by-type", "--json"], "--by-type does not apply to --json"),
    (["--csv", "--layers", "--latency"], "--latency is not printed by --csv --layers/--by-type"),
])
def test_profile_refuses_flags_it_would_not_read(capsys, argv, msg):
    _refused(capsys, ["profile", "lenet5", *argv], msg)


def test_profile_latency_on_a_registered_backend(capsys):
    assert main(["profile", "lenet5", "--latency", "--backend", "eager", "--runs", "2", "--threads", "1",
                 "--clock", "thread", "--csv"]) == 0
    head, row = capsys.readouterr().out.splitlines()
    assert head.endswith("latency_median_ms,latency_iqr_ms,threads,clock,batch,backend")
    assert row.endswith(",1,thread,1,eager")
    assert main(["profile", "lenet5", "--latency", "--backend", "onnxruntime", "--runs", "2", "--json"]) == 0
    lat = json.loads(capsys.readouterr().out)["latency"]
    assert lat["backend"] == "onnxruntime" and lat["runs"] == 2


# --- lightnn eval ------------------------------------------------------------------------------------------------


def test_eval_choices_come_from_the_library():
    from lightnn.data.datasets import SPLITS
    from lightnn.train.evaluate import TTA_MODES

    assert tuple(_choices("eval", "split")) == SPLITS and _choices("eval", "tta") == [t for t in TTA_MODES if t]


def test_eval_checkpoint_and_onnx(ckpt, onnx_model, data, capsys):
    capsys.readouterr()
    assert main(["eval", ckpt, "--data", data, "--json", "--batch-size", "3", "--device", "cpu"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["model"] == "resnet20" and res["n"] == 4 and res["split"] == "val" and res["classes"] == list(CLASSES)
    assert main(["eval", onnx_model, "--data", data, "--split", "train", "--tta", "flip"]) == 0
    out = capsys.readouterr().out
    assert "onnx on" in out and "(train, 16 images, flip test-time augmentation)" in out and "confusion" in out


@pytest.mark.parametrize("argv,msg", [
    (["m.onnx", "--device", "cpu"], "--device does not apply to an ONNX model"),
    (["m.pt", "--split", "all", "--val-fraction", "0.2"], "--val-fraction does not apply to --split all"),
    (["m.pt", "--split", "test", "--split-seed", "1"], "--split-seed does not apply to --split test"),
])
def test_eval_refuses_flags_it_would_not_read(tmp_path, capsys, argv, msg):
    # refused before the (missing) model file is opened
    _refused(capsys, ["eval", str(tmp_path / argv[0]), *argv[1:]], msg)


# --- lightnn export ----------------------------------------------------------------------------------------------


def test_export_calibration_methods_come_from_the_quantizer():
    from lightnn.export.quantize import CALIBRATION_METHODS

    assert tuple(_choices("export", "calibration_method")) == CALIBRATION_METHODS


@pytest.mark.parametrize("argv,msg", [
    (["m.onnx", "--fp16", "--calibration-data", "sample"], "--calibration-data is not read converting an ONNX"),
    (["m.onnx", "--fp16", "--resize"], "--resize is not read converting an ONNX model to fp16"),
    (["resnet20", "--resize"], "--resize needs --calibration-data"),
    (["resnet20", "--qat-epochs", "1", "--static-batch"], "--static-batch does not apply to --qat-epochs"),
    (["resnet20", "--qat-epochs", "1", "--no-fold-bn"], "--no-fold-bn does not apply to --qat-epochs"),
])
def test_export_refuses_flags_it_would_not_read(tmp_path, capsys, argv, msg):
    _refused(capsys, ["export", *argv, "--output", str(tmp_path / "out.onnx")], msg)


def test_export_refuses_a_negative_qat_epochs(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["export", "resnet20", "--qat-epochs", "-1", "--output", str(tmp_path / "o.onnx")])
    assert e.value.code == 2 and "--qat-epochs: must be an integer >= 0" in capsys.readouterr().err


def test_export_qat_output_takes_the_opset(ckpt, data, tmp_path, capsys):
    import onnx

    out = tmp_path / "r20.qat.onnx"
    assert main(["export", ckpt, "--output", str(out), "--qat-epochs", "1", "--qat-steps", "1", "--opset", "13",
                 "--calibration-data", data, "--calibration-size", "8", "--parity-inputs", "2", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["int8"]["path"] == str(out) and s["int8"]["method"] == "qat"
    opsets = {o.domain: o.version for o in onnx.load(str(out)).opset_import}
    assert opsets.get("", opsets.get("ai.onnx")) == 13  # was 17 whatever --opset said


# --- lightnn quantize --------------------------------------------------------------------------------------------


def test_quantize_choices_come_from_the_quantizer():
    from lightnn.export.quantize import CALIBRATION_METHODS, QUANT_FORMATS

    assert tuple(_choices("quantize", "method")) == CALIBRATION_METHODS
    assert tuple(_choices("quantize", "format")) == QUANT_FORMATS


def test_quantize_checkpoint_with_a_labelled_split(ckpt, data, tmp_path, capsys):
    out = tmp_path / "q"
    assert main(["quantize", ckpt, "--calibration-data", data, "--output", str(out), "--calibration-size", "8",
                 "--val-size", "4", "--batch", "1", "--runs", "2", "--no-auto-mixed", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["source"] == ckpt and d["calibration_images"] == 8 and d["threads"] == 1 and d["format"] == "qdq"
    assert (out / "model.int8.onnx").is_file() and json.loads((out / "report.json").read_text()) == d


@pytest.mark.parametrize("argv,msg", [
    (["--val-size", "4"], "--val-size needs labelled images"),
    (["--input-size", "32"], "--input-size does not apply to an ONNX source"),
])
def test_quantize_refuses_flags_it_would_not_read(onnx_model, flat, tmp_path, capsys, argv, msg):
    _refused(capsys, ["quantize", onnx_model, "--calibration-data", flat, "--output", str(tmp_path / "q"), *argv],
             msg)


# --- lightnn bench -----------------------------------------------------------------------------------------------


def test_bench_eager_and_ort(capsys):
    assert main(["bench", "lenet5", "--backends", "eager,ort", "--rounds", "1", "--runs", "2", "--batch", "1,2",
                 "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["input_size"] == [1, 28, 28]
    assert [(r["backend"], r["batch"], r["runs"]) for r in d["results"]] == [
        ("eager", 1, 2), ("ort", 1, 2), ("eager", 2, 2), ("ort", 2, 2)]


@pytest.mark.parametrize("argv,msg", [
    (["lenet5", "--backends", "eager,ort", "--calibration-data", "sample"],
     "--calibration-data is read by the ort-int8 backend only"),
    (["lenet5", "--backends", "eager,tensorrt"], "--backends: unknown ['tensorrt']"),
])
def test_bench_refuses_flags_it_would_not_read(capsys, argv, msg):
    _refused(capsys, ["bench", *argv], msg)


def test_bench_onnx_source_refuses_a_typed_eager_backend(onnx_model, capsys):
    # the default list drops eager for an ONNX file; typing the same list asks for eager, which it cannot run
    _refused(capsys, ["bench", onnx_model, "--backends", "eager,ort,ort-int8"], "the eager backend needs a model")


# --- lightnn run: explicit flag > config file > default ----------------------------------------------------------


def _run_cfg(tmp_path, monkeypatch, argv: list[str], config: dict | None = None) -> dict:
    """What `lightnn run` hands the pipeline for ``argv`` (and a config file holding ``config``), as the values the
    run would use; the pipeline itself does not run."""
    import lightnn.pipeline

    seen: dict = {}
    monkeypatch.setattr(lightnn.pipeline, "run", lambda cfg, output=None, fresh=False: seen.update(
        cfg=cfg, output=output, fresh=fresh))
    if config is not None:
        (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
        argv = [str(tmp_path / "run.yaml"), *argv]
    assert main(["run", *argv]) == 0
    cfg = seen["cfg"]
    return {"epochs": cfg["train"]["epochs"], "data": cfg["data"]["path"],
            "max_train_images": cfg["data"]["max_train_images"], "models": [m["name"] for m in cfg["models"]],
            "output": str(seen["output"] or cfg["output"]), "skip_corrupt": cfg["data"]["skip_corrupt"],
            "progress": cfg["progress"], "fresh": seen["fresh"]}


DEFAULT_MODELS = "resnet20,mobilenet_v2_cifar,shufflenet_v2_cifar,igcv3_cifar"  # lightnn/configs/run.yaml


RUN_FLAGS = [  # (key, flag, config file, its value there, a typed value, the default as typed)
    ("epochs", "--epochs", {"train": {"epochs": 5}}, 5, "2", "3"),
    ("data", "--data", {"data": {"path": "from_config"}}, "from_config", "from_flag", "sample"),
    ("max_train_images", "--max-train-images", {"data": {"max_train_images": 50}}, 50, "20", None),
    ("models", "--models", {"models": [{"name": "lenet5"}]}, ["lenet5"], "resnet20", DEFAULT_MODELS),
    ("output", "--output", {"output": "runs/from_config"}, "runs/from_config", "runs/from_flag", "runs/lightnn-run"),
]


@pytest.mark.parametrize("level,key,flag,config,in_config,typed,default", [
    (level, *row) for row in RUN_FLAGS for level in ("default", "config", "flag", "flag equal to the default")
    if not (level == "flag equal to the default" and row[-1] is None)])  # a null default cannot be typed
def test_run_precedence(tmp_path, monkeypatch, level, key, flag, config, in_config, typed, default):
    def value(text):  # what a typed (or default) text means in the run config
        if text is None or key in ("data", "output"):
            return text
        return text.split(",") if key == "models" else int(text)

    argv = {"default": [], "config": [], "flag": [flag, typed], "flag equal to the default": [flag, default]}[level]
    got = _run_cfg(tmp_path, monkeypatch, argv, None if level == "default" else config)[key]
    expect = {"default": value(default), "config": in_config, "flag": value(typed),
              "flag equal to the default": value(default)}[level]
    assert got == expect


def test_run_switches_turn_on_over_the_config_file(tmp_path, monkeypatch):
    assert _run_cfg(tmp_path, monkeypatch, [])["skip_corrupt"] is False  # the defaults
    assert _run_cfg(tmp_path, monkeypatch, [])["progress"] is True
    got = _run_cfg(tmp_path, monkeypatch, [], {"data": {"skip_corrupt": True}, "progress": False})
    assert got["skip_corrupt"] is True and got["progress"] is False  # the config file over the defaults
    got = _run_cfg(tmp_path, monkeypatch, ["--skip-corrupt", "--no-progress", "--fresh"],
                   {"data": {"skip_corrupt": False}, "progress": True})
    assert got["skip_corrupt"] is True and got["progress"] is False and got["fresh"] is True  # the flags over it


@pytest.mark.parametrize("argv,msg", [
    (["--models", ""], "--models '' names no model"),
    (["--models", " , "], "--models ' , ' names no model"),
    (["--models", "no_such_model"], "no_such_model"),
    (["--epochs", "0"], None),
])
def test_run_refuses_bad_flags_by_name(tmp_path, monkeypatch, capsys, argv, msg):
    import lightnn.pipeline

    monkeypatch.setattr(lightnn.pipeline, "run", lambda *a, **k: pytest.fail("the pipeline ran"))
    if msg is None:  # argparse's own check of a typed number
        with pytest.raises(SystemExit):
            main(["run", *argv])
        assert "--epochs: must be an integer >= 1" in capsys.readouterr().err
        return
    _refused(capsys, ["run", *argv], msg)


def test_run_config_choices_come_from_the_registries():
    from lightnn import pipeline
    from lightnn.compress import importance
    from lightnn.export.quantize import CALIBRATION_METHODS

    for c in importance.criteria():  # taylor too: the prune stage hands its criterion the training batches
        assert pipeline.resolve_config({"prune": {"criterion": c}})["prune"]["criterion"] == c
    for m in CALIBRATION_METHODS:
        assert pipeline.resolve_config({"quantize": {"method": m}})["quantize"]["method"] == m
    with pytest.raises(lightnn.LightnnError, match="'prune.criterion' must be one of .*got 'l3'"):
        pipeline.resolve_config({"prune": {"criterion": "l3"}})
    importance.register_criterion("test_only_run_criterion")(lambda group, model: None)
    try:  # a criterion registered after import is a valid config value
        assert pipeline.resolve_config({"prune": {"criterion": "test_only_run_criterion"}})
    finally:
        importance.CRITERIA.pop("test_only_run_criterion")
