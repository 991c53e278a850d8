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


def _choices(command: str, dest: str):
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    return next(a for a in sub._actions if a.dest == dest).choices


def _refused(capsys, argv: list[str], msg: str) -> None:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1, err


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
    _refused(capsys, ["profile", "lenet5", *argv], f"lightnn profile: {msg}")


def test_profile_latency_on_a_registered_backend(capsys):
    assert main(["profile", "lenet5", "--latency", "--backend", "eager", "--runs", "2", "--threads", "1",
                 "--clock", "thread", "--csv"]) == 0
    head, row = capsys.readouterr().out.splitlines()
    assert head.endswith("latency_median_ms,latency_iqr_ms,threads,clock,batch,backend")
    assert row.endswith(",1,thread,1,eager")
    assert main(["profile", "lenet5", "--latency", "--backend", "onnxruntime", "--runs", "2", "--json"]) == 0
    lat = json.loads(capsys.readouterr().out)["latency"]
    assert lat["backend"] == "onnxruntime" and lat["runs"] == 2
