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
        if name == "search":  # off by default
            assert not any(line.startswith(f"[{i}/7] search") for line in lines)
            continue
        assert any(line.startswith(f"[{i}/7] {name}") and "done" in line or
                   line.startswith(f"[{i}/7] {name}") and "images" in line for line in lines), name


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
    partial = [out / ".state.json.k1l2.tmp", out / "models" / ".resnet20.onnx.x9y8.tmp"]  # as a kill leaves them
    for p in partial:
        p.write_bytes(b"half")
    lines: list[str] = []
    again = pipeline.run(pipeline.resolve_config(TINY), output=out, log=lines.append)
    assert not any(p.exists() for p in partial) and any("removed 2 partial file(s)" in line for line in lines)
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


def test_prune_finetune_epochs_may_be_a_fraction_but_not_zero():
    # the prune stage's fine-tune takes fractional epochs, as PruneConfig and the trainer do
    assert pipeline.resolve_config({"prune": {"finetune_epochs": 0.5}})["prune"]["finetune_epochs"] == 0.5
    with pytest.raises(LightnnError, match="finetune_epochs"):
        pipeline.resolve_config({"prune": {"finetune_epochs": 0}})


def test_report_names_the_shipped_model(tiny_run):
    out, state, lines = tiny_run
    q = state["quantize"]
    b = str(q["deploy_batch"])
    assert b == "4"  # select.latency_batch 32 is not measured in TINY: the largest measured batch is used
    assert (out / q["shipped_onnx"]).is_file()
    # whatever this machine measured, the shipped model is the fastest of fp32, int8 and (when the search found
    # one) the mixed model at the deployment batch; a quantized model ships only when strictly faster than fp32
    speedups = {"fp32": 1.0, "int8": q["speedup_vs_fp32"][b]}
    files = {"fp32": state["prune"]["onnx"], "int8": q["onnx"]}
    if q.get("mixed"):
        speedups["mixed"], files["mixed"] = q["mixed"]["speedup_vs_fp32"][b], q["mixed"]["onnx"]
    fastest = max(speedups, key=speedups.get)
    expect = fastest if speedups[fastest] > 1.0 else "fp32"
    assert q["shipped"] == expect and q["shipped_onnx"] == files[expect]
    md = (out / "report.md").read_text()
    assert f"**Shipped: {q['shipped']}** (`{q['shipped_onnx']}`)" in md
    assert f"{q['speedup_vs_fp32'][b]:.2f}x" in md.split("**Shipped:")[1]
    assert json.loads((out / "report.json").read_text())["stages"][-1]["shipped"] == q["shipped"]
    assert any(f"shipped {q['shipped']}" in line for line in lines)


def _kind(path) -> str:
    """fp32 (no quantization), mixed (quantized, but convolutions keep float weights) or int8, from the graph."""
    import onnx

    g = onnx.load(str(path)).graph
    if not any(n.op_type == "QuantizeLinear" for n in g.node):
        return "fp32"
    weights = {i.name for i in g.initializer}
    return "mixed" if any(n.op_type == "Conv" and n.input[1] in weights for n in g.node) else "int8"


def _rerun_quantize(tiny_run, tmp_path, monkeypatch, ms: dict[str, float], int8_ops_slower: bool = True):
    """The tiny run's quantize and report stages again, in a copy of its folder, with ONNX Runtime's timings
    replaced by fixed ones per kind of model (``ms``), so the int8-vs-fp32 decision does not depend on this machine.
    ``int8_ops_slower``: whether the per-op profile offers Conv to keep in float (the mixed-model search)."""
    import shutil

    from lightnn.export import quantize
    from lightnn.profile.latency import LatencyResult

    src, _, _ = tiny_run
    out = tmp_path / "run"
    shutil.copytree(src, out)
    st = json.loads((out / "state.json").read_text())
    st["done"] = [s for s in st["done"] if s not in ("quantize", "report")]
    q = st.pop("quantize")
    (out / q["onnx"]).unlink()
    if q.get("mixed"):
        (out / q["mixed"]["onnx"]).unlink()
    (out / "state.json").write_text(json.dumps(st))

    def lat(path, size, batch, threads):
        return LatencyResult("fake", (batch, *size), threads, False, 0, [ms[_kind(path)]] * 3)

    def compare(models, size, batch, threads, runs):
        return {k: lat(p, size, batch, threads) for k, p in models.items()}

    def op_times(path, size, batch=1, threads=1, runs=10):
        per_conv = {"fp32": 1.0, "mixed": 1.0, "int8": 2.0 if int8_ops_slower else 0.5}[_kind(path)]
        return {"Conv": per_conv, "QuantizeLinear": 0.1}

    monkeypatch.setattr(quantize, "_compare_latency", compare)
    monkeypatch.setattr(quantize, "op_type_times", op_times)
    lines: list[str] = []
    state = pipeline.run(pipeline.resolve_config(TINY), output=out, log=lines.append)
    return out, state, lines


@pytest.mark.parametrize("mixed_ms,int8_ops_slower,shipped,why", [
    (1.5, True, "fp32", "keeping the slow op types in float helped but not enough"),
    (0.5, True, "mixed", "mixed is faster than fp32"),
    (0.5, False, "fp32", "no mixed model (slow op types kept in float) was faster either"),
])
def test_int8_slower_than_fp32_is_not_shipped(tiny_run, tmp_path, monkeypatch, mixed_ms, int8_ops_slower, shipped,
                                               why):
    out, state, lines = _rerun_quantize(tiny_run, tmp_path, monkeypatch, {"fp32": 1.0, "int8": 2.0, "mixed": mixed_ms},
                                        int8_ops_slower)
    q = state["quantize"]
    assert q["shipped"] == shipped and why in q["shipped_why"]
    assert any("quantize   done" in line and f"shipped {shipped}" in line for line in lines)
    from lightnn.export.quantize import runtime_op_types

    int8_file = out / q["onnx"]
    if shipped == "fp32":
        assert q["shipped_onnx"] == state["prune"]["onnx"] and _kind(out / q["shipped_onnx"]) == "fp32"
    else:
        assert q["shipped_onnx"] == q["mixed"]["onnx"] and q["kept_float"] == ["Conv"]
        # really mixed: every convolution runs in float
        assert "QLinearConv" not in runtime_op_types(out / q["mixed"]["onnx"])
    # the int8 stage row describes the fully quantized model it measured, which is kept whatever ships: about 1/3
    # of the fp32 file, every convolution in int8
    assert _kind(int8_file) == "int8" and "QLinearConv" in runtime_op_types(int8_file)
    assert q["size_bytes"] < 0.4 * (out / state["prune"]["onnx"]).stat().st_size
    assert q["speedup_vs_fp32"]["4"] == pytest.approx(0.5)
    # the mixed model, when the search found one, is measured in the same rounds and reported on its own
    assert bool(q.get("mixed")) == int8_ops_slower
    expect = 1.0 / (mixed_ms if int8_ops_slower else 2.0)
    if int8_ops_slower:
        assert _kind(out / q["mixed"]["onnx"]) == "mixed"
        assert q["mixed"]["speedup_vs_fp32"]["4"] == pytest.approx(expect)
    md = (out / "report.md").read_text()
    ship_line = next(line for line in md.splitlines() if line.startswith("**Shipped:"))
    assert ship_line.startswith(f"**Shipped: {shipped}** (`{q['shipped_onnx']}`)")
    assert f"{expect:.2f}x" in ship_line and "fp32 1.00 ms" in ship_line and why in ship_line
    assert f"the deployable one is `{q['shipped_onnx']}`)" in md


def test_ship_decision_prefers_a_faster_int8():
    from pathlib import Path

    from lightnn.export.quantize import QuantReport

    rep = QuantReport("m.onnx", "m-int8.onnx", "minmax", 1000, 300)
    rep.latency = {"fp32@32": {"median_ms": 4.0}, "int8@32": {"median_ms": 2.0}}
    rep.speedup = {"32": 2.0}
    kind, path, why = pipeline.ship_decision(rep, Path("m.onnx"), 32)
    assert (kind, path) == ("int8", Path("m-int8.onnx"))
    assert why == ("int8 is faster than fp32 at the deployment batch "
                   "(int8 2.00 ms vs fp32 4.00 ms median at batch 32, 2.00x)")
    rep.speedup = {"32": 1.0}  # a tie is not faster: the float model ships
    assert pipeline.ship_decision(rep, Path("m.onnx"), 32)[:2] == ("fp32", Path("m.onnx"))


def test_deployable_file_without_an_int8_stage():
    st = {"candidates": {"a": {"onnx": "models/a.onnx"}}, "select": {"best": "a"}}
    assert pipeline._deployable(st) == "models/a.onnx"  # neither pruned nor quantized: the selected model
    st["prune"] = {"onnx": "models/a-pruned.onnx"}
    assert pipeline._deployable(st) == "models/a-pruned.onnx"
    st["quantize"] = {"onnx": "models/a-pruned-int8.onnx", "shipped_onnx": "models/a-pruned.onnx"}
    assert pipeline._deployable(st) == "models/a-pruned.onnx"
