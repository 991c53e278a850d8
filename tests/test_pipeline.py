"""`lightnn run` end to end on a tiny configuration: every output file and every table row is checked."""

from __future__ import annotations

import json

import pytest

from lightnn import pipeline
from lightnn.cli import main
from lightnn.errors import LightnnError

TINY = {
    "data": {"max_train_images": 64, "max_val_images": 40},
    "models": [{"name": "resnet20"}, {"name": "shufflenet_v2_cifar", "width_mult": 0.5}],
    "train": {"epochs": 1, "batch_size": 32},
    "prune": {"finetune_epochs": 1, "search_steps": 5},
    "latency": {"batches": [1, 4], "runs": 3, "warmup": 1, "threads": 1},
    "quantize": {"calibration_images": 16},
    "threads": 1,
    "progress": False,
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    lines: list[str] = []
    state = pipeline.run(pipeline.resolve_config(TINY), output=out, log=lines.append)
    return out, state, lines


def test_outputs_exist(tiny_run):
    out, state, lines = tiny_run
    for f in ["report.md", "report.json", "state.json", "config.yaml", "pareto.png", "stages.png"]:
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    for m in ["resnet20", "shufflenet_v2_cifar"]:
        assert (out / "models" / f"{m}.pt").is_file()
        assert (out / "models" / f"{m}.onnx").is_file()
    best = state["select"]["best"]
    assert (out / "models" / f"{best}-pruned.onnx").is_file()
    assert (out / "models" / f"{best}-pruned-int8.onnx").is_file()
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # one clear line per stage
    for i, name in enumerate(pipeline.STAGES, 1):
        assert any(line.startswith(f"[{i}/6] {name}") and "done" in line or
                   line.startswith(f"[{i}/6] {name}") and "images" in line for line in lines), name


def test_report_tables(tiny_run):
    out, state, _ = tiny_run
    md = (out / "report.md").read_text()
    rep = json.loads((out / "report.json").read_text())
    assert [r["name"] for r in rep["candidates"]] == ["resnet20", "shufflenet_v2_cifar"]
    assert [r["stage"] for r in rep["stages"]] == ["baseline", "selected", "pruned", "int8"]
    for r in rep["candidates"]:
        assert f"| {r['name']}" in md
        assert r["params"] > 0 and r["macs"] > 0 and r["memory_bytes"] > 0
        assert 0.0 <= r["top1"] <= 100.0
        assert r["parity_top1_agreement"] >= 0.99
        for b in (1, 4):
            assert r[f"latency_b{b}_ms"] > 0
    for r in rep["stages"]:
        assert f"| {r['stage']} | {r['name']} |" in md
        assert r["size_bytes"] > 0
    base, sel, pruned, int8 = rep["stages"]
    # the pruned model met the MACs budget and really has fewer parameters
    assert pruned["macs"] <= 0.5 * sel["macs"] + 1
    assert pruned["params"] < sel["params"]
    # the int8 file is at most ~1/3 of the fp32 one
    assert int8["size_bytes"] < 0.4 * pruned["size_bytes"]
    assert int8["top1_agreement"] >= 80.0


def test_resume_skips_done_stages(tiny_run):
    out, state, _ = tiny_run
    lines: list[str] = []
    again = pipeline.run(pipeline.resolve_config(TINY), output=out, log=lines.append)
    assert any("resuming" in line for line in lines)
    assert any("candidates done earlier, skipped" in line for line in lines)
    assert any("prune      done earlier, skipped" in line for line in lines)
    assert again["select"] == state["select"]


def test_other_config_in_same_folder_is_refused(tiny_run):
    out, _, _ = tiny_run
    other = dict(TINY, seed=1)
    with pytest.raises(LightnnError, match="another configuration"):
        pipeline.run(pipeline.resolve_config(other), output=out, log=lambda s: None)


def test_bad_config_is_clear(tmp_path):
    with pytest.raises(LightnnError, match="unknown model name 'nonet'"):
        pipeline.resolve_config({"models": [{"name": "nonet"}]})
    with pytest.raises(LightnnError, match="target_macs"):
        pipeline.resolve_config({"prune": {"target_macs": 2}})
    cfg = tmp_path / "c.yaml"
    cfg.write_text("models: [")
    assert main(["run", str(cfg), "--output", str(tmp_path / "o")]) == 2
