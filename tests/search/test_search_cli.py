"""`lightnn search compress` end to end on a tiny ResNet-20 and the shipped sample: the study's trials and their
records, the Pareto front, the shipped model checked against its own report (reloaded from its file and scored
again), resuming, a constraint nobody meets, and the one-line refusals; and `lightnn run`'s optional search stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import lightnn
from lightnn.checkpoint import save_checkpoint
from lightnn.cli import main

FAST = ["--data", "sample", "--finetune-epochs", "0.01,0.02", "--final-epochs", "0.02", "--eval-limit", "100",
        "--bn-images", "64", "--latency-runs", "3", "--batch-size", "64"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = lightnn.create_model("resnet20", num_classes=10, width=8)
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "r20.pt", model)


@pytest.fixture(scope="module")
def searched(ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("search") / "s"
    argv = ["search", "compress", str(ckpt), *FAST, "--objectives", "top1,latency", "--constraint", "macs<=0.6x",
            "--trials", "3", "--output", str(out)]
    assert main(argv) == 0
    return out, argv


def test_trials_are_recorded_and_the_front_is_feasible(searched):
    out, _ = searched
    rep = json.loads((out / "report.json").read_text())
    assert [t["number"] for t in rep["trials"]] == [0, 1, 2]
    ref_macs = rep["reference"]["macs"]
    for t in rep["trials"]:
        assert t["state"] == "COMPLETE"
        assert set(t["params"]) == {"prune_stage0", "prune_stage1", "prune_stage2", "finetune_epochs", "lr",
                                    "kd_weight"}
        assert isinstance(t["seed"], int) and t["wall_s"] > 0
        for k in ("top1", "latency", "macs", "params", "bytes"):
            assert k in t["metrics"]
    assert rep["front"] and rep["feasible"]
    for n in rep["front"]:
        assert rep["trials"][n]["metrics"]["macs"] <= 0.6 * ref_macs
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert "## Pareto front" in md and "macs<=0.6x" in md and "best/macs-le-0.6x/" in md


def test_the_shipped_model_is_what_its_report_says(searched):
    """Oracle: the .lnz written for the constraint, loaded back and scored on the validation split, gives the
    report's validation top-1 and MACs, and meets the constraint."""
    from lightnn.compress.sensitivity import count_macs
    from lightnn.data import load_dataset
    from lightnn.models import model_normalization
    from lightnn.train import evaluate

    out, _ = searched
    rep = json.loads((out / "report.json").read_text())
    b = rep["builds"]["macs-le-0.6x"]
    folder = out / "best" / "macs-le-0.6x"
    assert {"model.lnz", "model.onnx", "build.json"} <= {p.name for p in folder.iterdir()}
    assert b["trial"] in [t["number"] for t in rep["trials"] if t["feasible"]]
    model, _ = lightnn.load(folder / "model.lnz")
    model.eval()
    val = load_dataset("sample", "val", val_fraction=0.1, seed=0)
    norm = model_normalization(model) or b["normalize"]  # the files do not carry it yet; build.json does
    top1 = evaluate(model, val, batch_size=256, mean=norm["mean"], std=norm["std"])["top1"]
    assert top1 == pytest.approx(b["val_metrics"]["top1"], abs=1e-6)
    macs = count_macs(model, torch.randn(1, 3, 32, 32))
    assert macs == pytest.approx(b["val_metrics"]["macs"])
    assert macs <= 0.6 * rep["reference"]["macs"]


def test_rerunning_resumes_and_more_trials_extend(searched, capsys):
    out, argv = searched
    capsys.readouterr()
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "resuming study" in said and "built earlier, kept" in said
    assert len(json.loads((out / "report.json").read_text())["trials"]) == 3
    argv4 = [a if a != "3" else "4" for a in argv]
    assert main(argv4) == 0
    rep = json.loads((out / "report.json").read_text())
    assert [t["number"] for t in rep["trials"]] == [0, 1, 2, 3]


def test_a_changed_space_is_refused(searched, capsys):
    out, argv = searched
    capsys.readouterr()
    assert main([*argv, "--knobs", "channels"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "made with a different" in err and "would mix two searches" in err


def test_a_constraint_nobody_meets_reports_the_closest(ckpt, tmp_path, capsys):
    out = tmp_path / "none"
    rc = main(["search", "compress", str(ckpt), *FAST, "--objectives", "top1", "--constraint", "macs<=0.001x",
               "--trials", "2", "--output", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "no trial meets macs<=0.001x" in err and "closest is trial" in err
    md = (out / "report.md").read_text()
    assert "No complete trial meets the constraints" in md and "The closest is trial" in md
    assert not (out / "best").exists()
    assert json.loads((out / "report.json").read_text())["closest"] in (0, 1)


@pytest.mark.parametrize("argv, msg", [
    (["--objectives", "top5"], "unknown objective 'top5'"),
    (["--objectives", "wall_s"], "has no direction"),
    (["--constraint", "latency<2"], "must read METRIC<=NUMBER"),
    (["--storage", "postgresql://u:secret@127.0.0.1:1/x"], "cannot be reached"),
    (["--knobs", "channels,colour"], "knobs must name families"),
])
def test_bad_input_is_one_line(ckpt, tmp_path, capsys, argv, msg):
    rc = main(["search", "compress", str(ckpt), *FAST, "--trials", "1", "--output", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and msg in err, err
    assert "secret" not in err


def test_missing_checkpoint_or_data_is_named(tmp_path, capsys):
    assert main(["search", "compress", "--data", "sample"]) == 2
    assert "CHECKPOINT" in capsys.readouterr().err
    assert main(["search", "compress", str(tmp_path / "nope.pt"), "--data", "sample", "--output",
                 str(tmp_path / "o")]) == 2
    assert "nope.pt" in capsys.readouterr().err


def test_config_file_keys_are_checked_and_flags_win(ckpt, tmp_path, capsys):
    import yaml

    from lightnn.cli import build_parser
    from lightnn.cli.search_cmd import options

    cfg = tmp_path / "s.yaml"
    cfg.write_text(yaml.safe_dump({"trials": 7, "sampler": "random", "knobs": "channels"}))
    args = build_parser().parse_args(["search", "compress", str(ckpt), "--config", str(cfg), "--trials", "2"])
    from lightnn.cli._common import explicit_flags

    explicit_flags(args)
    o = options(args)
    assert o["trials"] == 2 and o["sampler"] == "random" and o["knobs"] == "channels"
    cfg.write_text(yaml.safe_dump({"trails": 7}))
    assert main(["search", "compress", str(ckpt), "--data", "sample", "--config", str(cfg)]) == 2
    assert "unknown key(s) ['trails']" in capsys.readouterr().err


def test_run_search_stage_ships_the_best_model(ckpt, tmp_path):
    """`lightnn run`'s optional search stage on the selected model: the same job, its folder inside the run's."""
    import shutil

    from lightnn import pipeline

    cfg = pipeline.resolve_config({"search": {"enabled": True, "trials": 2, "constraints": ["macs<=0.7x"],
                                              "finetune_epochs": [0.01, 0.01], "final_epochs": 0.0,
                                              "eval_limit": 100}})
    out = tmp_path / "run"
    (out / "models").mkdir(parents=True)
    shutil.copy(ckpt, out / "models" / "r20.pt")
    ctx = pipeline.Ctx(cfg, out, {"select": {"best": "r20"}, "candidates": {"r20": {"checkpoint": "models/r20.pt"}}},
                       lambda m: None)
    pipeline._stage_search(ctx)
    se = ctx.state["search"]
    assert se["trials"] == 2 and se["feasible"]
    shipped = se["shipped"]["macs-le-0.7x"]
    assert (out / shipped["folder"] / "model.onnx").is_file()
    assert shipped["macs"] <= 0.7 * json.loads((out / "search" / "report.json").read_text())["reference"]["macs"]


@pytest.mark.parametrize("search, msg", [
    ({"trails": 3}, "unknown key 'search.trails'"),
    ({"sampler": "grid"}, "config 'search.sampler' must be one of"),
    ({"trials": 0}, "config 'search.trials'"),
])
def test_run_search_config_is_checked(search, msg):
    from lightnn import pipeline
    from lightnn.errors import LightnnError

    with pytest.raises(LightnnError, match=msg.replace(".", r"\.").replace("(", r"\(")):
        pipeline.resolve_config({"search": search})
