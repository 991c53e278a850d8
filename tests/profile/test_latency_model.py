"""The latency model: units, the table file, prediction, the correction fit and the CLI, on tiny shapes (eager)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch.nn as nn

import lightnn
from lightnn.cli import main
from lightnn.errors import LightnnError
from lightnn.ops import ConvBNAct
from lightnn.profile import LatencyTable, load_table, model_units, predict_latency
from lightnn.profile.predict import apply_correction, build_table, fit_correction, nnls

SIZE = (3, 8, 8)
FAST = dict(warmup=1, runs=3, retries=0)


def tiny(width: int = 8, skip_second: bool = False) -> nn.Module:
    table = [{"expansion": 1, "channels": width}, {"expansion": 2, "channels": width, "repeats": 2, "stride": 2}]
    if skip_second:
        table = table[:1]
    return lightnn.create_model("ir_net", table=table, num_classes=4, head_chs=16,
                                stem=[{"expansion": 1, "channels": 8, "op": "conv", "skip": False}])


@pytest.fixture
def table_path(tmp_path):
    path = tmp_path / "t.json"
    table = LatencyTable.create("eager", threads=1, batch=1, path=path, **FAST)
    build_table(table, [("tiny", tiny(), SIZE), ("tiny-short", tiny(skip_second=True), SIZE)])
    return path


def test_units_fuse_conv_bn_act_and_keep_blocks_whole():
    seq = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(8 * 4 * 4, 4))
    units = model_units(seq, SIZE)
    assert [u.kind for u in units] == ["conv", "pool", "linear"]
    assert len(units[0].members) == 3
    kinds = [u.kind for u in model_units(tiny(), SIZE)]
    assert kinds.count("ir") == 3 and kinds[0] == "conv"
    # equal units share one key, and a standalone copy runs on the traced shape
    a, b = model_units(ConvBNAct(8, 8), SIZE[:0] + (8, 8, 8)), model_units(ConvBNAct(8, 8), (8, 8, 8))
    assert a[0].key == b[0].key
    assert tuple(a[0].build()(lightnn.profile.latency.torch.randn(2, 8, 8, 8)).shape) == (2, 8, 8, 8)


def test_table_round_trips(table_path):
    t = load_table(table_path)
    assert len(t) >= 3 and set(t.end_to_end) == {"tiny", "tiny-short"}
    assert t.correction and set(t.correction["scales"]) >= {"ir", "conv"}
    again = load_table(t.save(table_path.with_name("copy.json")))
    assert again.entries == t.entries and again.correction == t.correction and again.fingerprint == t.fingerprint


def test_tabled_model_predicts_the_table_sum(table_path):
    t = load_table(table_path)
    model = tiny()
    pred = predict_latency(model, SIZE, t, measure_missing=False)
    units = model_units(model, SIZE)
    assert pred.measured == 0 and len(pred.rows) == len(units)
    assert pred.raw_ms == pytest.approx(sum(t.value(u.key) for u in units), rel=1e-12)
    corr = t.correction
    assert pred.total_ms == pytest.approx(sum(r["corrected_ms"] for r in pred.rows) + corr["constant_ms"])
    assert all(r["corrected_ms"] >= 0.2 * r["ms"] for r in pred.rows)
    t.correction = None
    assert predict_latency(model, SIZE, t).total_ms == pytest.approx(pred.raw_ms)
    assert apply_correction({"sums": pred.sums}, None) == pytest.approx(pred.raw_ms)


def test_missing_unit_is_measured_or_reported(table_path):
    t = load_table(table_path)
    wider = tiny(width=16)
    with pytest.raises(LightnnError) as e:
        predict_latency(wider, SIZE, t, measure_missing=False)
    assert "has no entry for unit" in str(e.value) and "features." in str(e.value) and "\n" not in str(e.value)
    n = len(t)
    pred = predict_latency(wider, SIZE, t)
    assert pred.measured > 0 and len(t) == n + pred.measured and all(r["ms"] > 0 for r in pred.rows)
    assert len(load_table(table_path)) == len(t)  # added to the file too


def _one_line_error(path, match):
    with pytest.raises(LightnnError) as e:
        load_table(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and match in msg, msg
    return msg


def test_bad_table_files(table_path, tmp_path):
    data = json.loads(table_path.read_text())
    foreign = dict(data, fingerprint={**data["fingerprint"], "cpu": "Some Other CPU"})
    p = tmp_path / "foreign.json"
    p.write_text(json.dumps(foreign))
    msg = _one_line_error(p, "another device")
    assert "Some Other CPU" in msg and data["fingerprint"]["cpu"] in msg
    with pytest.warns(UserWarning, match="another device"):
        assert len(load_table(p, allow_foreign=True)) == len(data["entries"])
    text = table_path.read_text()
    (tmp_path / "trunc.json").write_text(text[: len(text) // 2])
    _one_line_error(tmp_path / "trunc.json", "truncated or corrupt")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00garbage")
    _one_line_error(tmp_path / "bin.json", "corrupt")
    (tmp_path / "v.json").write_text(json.dumps(dict(data, version=99)))
    _one_line_error(tmp_path / "v.json", "version 99")
    key = next(iter(data["entries"]))
    bad = dict(data, entries={**data["entries"], key: {**data["entries"][key], "kind": "warpdrive"}})
    (tmp_path / "k.json").write_text(json.dumps(bad))
    _one_line_error(tmp_path / "k.json", "unknown unit kind 'warpdrive'")


def test_correction_fit_recovers_known_scales():
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(30):
        sums = {"conv": float(rng.uniform(0.5, 5)), "ir": float(rng.uniform(0.5, 5)), "pool": float(rng.uniform(0, 1))}
        samples.append({"sums": sums, "ms": 1.3 * sums["conv"] + 0.7 * sums["ir"] + 1.0 * sums["pool"] + 0.2})
    corr = fit_correction(samples, ridge=0.0)
    assert corr["scales"] == pytest.approx({"conv": 1.3, "ir": 0.7, "pool": 1.0}, rel=1e-6)
    assert corr["constant_ms"] == pytest.approx(0.2, rel=1e-5) and corr["rel_error_median"] < 1e-6
    a = rng.random((12, 4))
    assert nnls(a, a @ np.array([2.0, 0.0, 0.5, 0.0])) == pytest.approx([2.0, 0.0, 0.5, 0.0], abs=1e-9)
    x = nnls(a, a @ np.array([1.0, -3.0, 1.0, 0.0]))
    assert (x >= 0).all()


def test_cli_build_resume_and_predict(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("input_size: [3, 8, 8]\nnum_classes: 4\nsearch:\n  samples: 2\n  seed: 0\n"
                     "  base: {head_chs: 16, stem: [{expansion: 1, channels: 8, op: conv, skip: false}]}\n"
                     "  rows:\n    - {expansion: [1, 2], channels: [8, 16], stride: 2}\n")
    out = tmp_path / "space-table.json"
    build = ["latency", "build", "--backend", "eager", "--space", str(space), "--output", str(out), "--runs", "3",
             "--warmup", "1", "--retries", "0", "--json"]
    assert main(build) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["networks"] == 2 and first["measured"] > 0 and first["correction"]["models"] == 2
    assert main(build) == 0  # resumed: nothing left to measure
    again = json.loads(capsys.readouterr().out)
    assert again["resumed"] and again["measured"] == 0 and again["timed"] == 0
    assert main([a if a != "3" else "5" for a in build]) == 2
    assert "--runs 5 differs" in capsys.readouterr().err
    assert main(["latency", "show", str(out), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["entries"] == first["entries"] and shown["correction"] == first["correction"]
    assert main(["latency", "show", str(out)]) == 0 and "entries" in capsys.readouterr().out
    assert main(["latency", "build", "--backend", "nope", "--space", str(space), "--output", str(out)]) == 2
    assert "unknown latency backend 'nope'" in capsys.readouterr().err
    assert main(["latency", "build", "--space", str(space), "--output", str(out), "--input-size", "8"]) == 2
    assert "--input-size applies to --models" in capsys.readouterr().err
    lenet = tmp_path / "lenet.json"
    assert main(["latency", "build", "--backend", "eager", "--models", "lenet5", "--output", str(lenet), "--runs", "3",
                 "--warmup", "1", "--retries", "0", "--num-classes", "10"]) == 0
    capsys.readouterr()
    assert main(["profile", "lenet5", "--num-classes", "10", "--predict", str(lenet), "--json"]) == 0
    pred = json.loads(capsys.readouterr().out)["predicted_latency"]
    assert pred["measured"] == 0 and pred["total_ms"] > 0 and pred["raw_ms"] > 0
    assert main(["profile", "lenet5", "--predict", str(lenet), "--batch", "2"]) == 2
    assert "--batch 2 differs" in capsys.readouterr().err
    assert main(["compress", str(tmp_path / "m.pt"), "--method", "channels", "--ratio", "0.3", "--latency-table",
                 str(lenet), "--output", str(tmp_path / "o")]) == 2
    assert "--latency-table applies to --target-latency" in capsys.readouterr().err


def test_correction_fit_recovers_signed_offsets_and_picks_its_ridge():
    rng = np.random.default_rng(1)
    samples = []
    for _ in range(40):
        s = {"sums": {"conv": float(rng.uniform(1, 10)), "block": float(rng.uniform(1, 10))},
             "calls": int(rng.integers(5, 60)), "io_m": float(rng.uniform(0.1, 3))}
        s["ms"] = 0.9 * s["sums"]["conv"] + 1.2 * s["sums"]["block"] + 0.05 - 0.01 * s["calls"] + 0.3 * s["io_m"]
        samples.append(s)
    corr = fit_correction(samples, ridge=0.0)
    assert corr["scales"] == pytest.approx({"conv": 0.9, "block": 1.2}, rel=1e-6)
    assert corr["per_unit_ms"] == pytest.approx(-0.01, rel=1e-5) and corr["per_melem_ms"] == pytest.approx(0.3, rel=1e-5)
    assert corr["constant_ms"] == pytest.approx(0.05, rel=1e-4)
    chosen = fit_correction(samples)  # leave-one-out picks the smallest ridge on exact data
    assert chosen["ridge"] == 0.003 and chosen["scales"]["conv"] == pytest.approx(0.9, abs=0.02)


def test_spread_entries_are_remeasured_then_flagged(tmp_path):
    strict = LatencyTable.create("eager", threads=1, batch=1, warmup=0, runs=3, retries=1, spread_threshold=1e-12)
    unit = model_units(ConvBNAct(4, 4), (4, 4, 4))[0]
    entry = strict.measure_unit(unit)
    assert entry["measurements"] == 2 and entry["flagged"] and entry["ms"] > 0
    loose = LatencyTable.create("eager", threads=1, batch=1, warmup=0, runs=3, retries=1, spread_threshold=1e9)
    loose.measure_unit(unit)
    assert loose.entries[unit.key]["measurements"] == 1 and not loose.entries[unit.key]["flagged"]
    with pytest.raises(LightnnError, match="unknown setting"):
        LatencyTable.create("eager", repeats=3)


def test_space_file_errors_name_the_file_and_key(tmp_path):
    from lightnn.profile.latency_space import space_networks

    bad = tmp_path / "bad.yaml"
    bad.write_text("networks: []\nsamplez: 3\n")
    with pytest.raises(LightnnError, match=r"bad.yaml.*unknown key\(s\) \['samplez'\]"):
        list(space_networks(bad))
    bad.write_text("networks:\n  - {name: x, table: [{expansion: 1, channels: 0}]}\n")
    with pytest.raises(LightnnError, match=r"bad.yaml.*network bad:x.*channels"):
        list(space_networks(bad))
