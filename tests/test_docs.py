"""The published tables agree with their sources: BENCHMARKS.md is exactly the rendering of the benchmark records
(``benchmarks/results/*.json``), the channel-pruning table's derived columns and verdicts follow from its measured
columns, and every MACs / params figure of a model that can be rebuilt from the registry alone is recomputed here.
Every check reads the records' typed cells, never markdown."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch

from lightnn import create_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))

import records as R  # noqa: E402  (benchmarks/records.py: the record schema, reader and renderer)


def _bench(name: str):
    """A script of benchmarks/ as a module."""
    spec = importlib.util.spec_from_file_location(f"lightnn_bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _record(topic: str) -> dict:
    path = RESULTS / f"{topic}.json"
    if not path.exists():
        pytest.skip(f"benchmarks/results/{topic}.json is not in this checkout")
    return R.load_record(path)


def _text(t: dict, label: str, cell) -> str:
    """The cell's text as BENCHMARKS.md prints it."""
    return R.render_cell(next(c for c in t["columns"] if c["label"] == label), cell)


def _lines(rec: dict) -> list[str]:
    return [ln for p in rec["parts"] if "text" in p for ln in p["text"].splitlines()]


def test_benchmarks_md_is_the_rendered_records():
    if not RESULTS.is_dir():
        pytest.skip("benchmarks/results is not in this checkout")
    text, n = _bench("assemble").render(RESULTS)
    assert n >= 10
    assert (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8") == text, \
        "BENCHMARKS.md differs from the records in benchmarks/results/: run `python benchmarks/assemble.py`"
    assert not list(RESULTS.glob("*.md")), "the records are the only source of BENCHMARKS.md"


def test_assemble_orders_known_sections_first(tmp_path):
    for topic in ("zzz_new", "zoo", "guidelines"):
        R.write_record(R.make_record(topic, topic.title(), None, [{"text": "x"}], machine=None, date=None),
                       tmp_path, notes_dir=tmp_path)
    text, n = _bench("assemble").render(tmp_path)
    assert n == 3 and text.index("## Guidelines") < text.index("## Zoo") < text.index("## Zzz_New")


def test_every_committed_record_is_well_formed_and_its_speeds_name_machine_and_date():
    # timed cells (a median with its spread) are speed figures: the record must say where and when
    recs = R.load_records(RESULTS) if RESULTS.is_dir() else {}
    if not recs:
        pytest.skip("no records in this checkout")
    for topic, rec in recs.items():
        timed = [c for t in R.tables(rec) for r in t["rows"] for c in r if isinstance(c, dict) and "median" in c]
        if timed:
            assert all("iqr" in c or "p25" in c for c in timed), topic
            m = rec["machine"] or {}
            assert (m.get("cpu") or m.get("gpu")) and rec["date"], topic
        notes = ROOT / "benchmarks" / "notes" / f"{topic}.md"
        if notes.exists():  # the hand-written analysis is the notes file, as write_record copies it
            assert rec["notes"] == notes.read_text(encoding="utf-8").strip(), topic


@pytest.fixture(scope="module")
def pruning() -> dict:
    return _record("channel_pruning")


def test_channel_pruning_derived_columns_follow_from_the_measured_ones(pruning):
    _check_pruning_columns(pruning)


def test_channel_pruning_verdicts_follow_from_the_table(pruning):
    assert _check_pruning_verdicts(pruning) >= 2


def test_channel_pruning_registry_rows_have_the_quoted_size(pruning):
    assert _check_pruning_registry_rows(pruning) >= 4


def _pruning_rows(rec: dict) -> list[dict]:
    return R.rows(R.find_table(rec, "main"))


def _check_pruning_columns(rec: dict) -> None:
    rows = _pruning_rows(rec)
    base = {r["model"]: r for r in rows if r["variant"] == "baseline"}
    assert set(base) == {r["model"] for r in rows}, "every model has a baseline row"
    for r in rows:
        b = base[r["model"]]
        assert r["Δ top-1"] == pytest.approx(r["top-1 (%)"] - b["top-1 (%)"], abs=0.006), r
        for bs in ("b1", "b32"):
            ms, ms0 = r[f"{bs} ms (IQR)"]["median"], b[f"{bs} ms (IQR)"]["median"]
            # speed-up = baseline median / model median; the committed record holds both as printed (3 decimals,
            # so each within 0.0005 of the measured value: tiny models on the sample run in ~0.1 ms), the ratio to 2
            lo, hi = (ms0 - 5e-4) / (ms + 5e-4) - 0.005, (ms0 + 5e-4) / (ms - 5e-4) + 0.005
            assert lo <= r[f"{bs} speed-up"] <= hi, (r, bs, lo, hi)


def _check_pruning_verdicts(rec: dict) -> int:
    rows, lines = _pruning_rows(rec), _lines(rec)
    checked = 0
    for m in {r["model"] for r in rows}:
        width = next(r for r in rows if r["model"] == m and r["variant"].startswith("uniform"))
        # each pruned variant has its own verdict line: (the row's variant ending, the line's prefix, target wording)
        for ending, prefix, targets in ((" + KD fine-tune", f"- {m} targets:", True),
                                        (" + retrained (LR rewinding)", f"- {m} pruned + retrained", False)):
            pruned = next((r for r in rows if r["model"] == m and r["variant"].startswith("channel-pruned")
                           and r["variant"].endswith(ending)), None)
            if pruned is None:
                continue
            line = next(ln for ln in lines if ln.startswith(prefix))
            lost, speed = -pruned["Δ top-1"], pruned["b32 speed-up"]
            acc_ok, speed_ok = ("met" if lost <= 1 else "NOT met"), ("met" if speed >= 1.5 else "NOT met")
            if targets:
                acc_ok, speed_ok = f"target <= 1: {acc_ok}", f"target >= 1.5x: {speed_ok}"
            assert f"accuracy lost {lost:.2f} points ({acc_ok})" in line, line
            assert f"batch-32 speed-up {speed:.2f}x ({speed_ok})" in line, line
            assert f"vs width scaling: top-1 {pruned['top-1 (%)'] - width['top-1 (%)']:+.2f} points" in line
            assert f"speed-up {speed:.2f}x vs {width['b32 speed-up']:.2f}x" in line
            checked += 1
    return checked


def _check_pruning_registry_rows(rec: dict) -> int:
    # baselines and the uniform width baselines are plain registry models: recompute their MACs and params
    from lightnn.compress.sensitivity import count_macs

    x = torch.randn(1, 3, 32, 32)
    checked = 0
    for r in _pruning_rows(rec):
        if r["variant"] == "baseline":
            kw = {}
        elif r["variant"].startswith("uniform "):
            k, v = r["variant"].split()[1].split("=")
            kw = {k: float(v) if "." in v else int(v)}
        else:
            continue  # pruned models need their checkpoints
        m = create_model(r["model"], num_classes=10, **kw).eval()
        assert r["MACs (M)"] == pytest.approx(count_macs(m, x) / 1e6, abs=0.051), r
        assert r["params (k)"] == pytest.approx(sum(p.numel() for p in m.parameters()) / 1e3, abs=0.51), r
        checked += 1
    return checked


@pytest.mark.slow
def test_channel_pruning_benchmark_stages_on_the_sample(tmp_path):
    # benchmarks/channel_pruning.py adopt + measure end to end on untrained CIFAR-size checkpoints and the shipped
    # sample: the record it writes passes the same checks as the committed one (retrained row included)
    import subprocess

    from lightnn.checkpoint import save_checkpoint
    from lightnn.cli import main

    committed_path = RESULTS / "channel_pruning.json"
    committed = committed_path.read_bytes() if committed_path.exists() else None
    torch.manual_seed(0)
    base, width = tmp_path / "base.pt", tmp_path / "width.pt"
    save_checkpoint(base, create_model("resnet20", num_classes=10))
    save_checkpoint(width, create_model("resnet20", num_classes=10, width=11))
    cdir = tmp_path / "compress"
    assert main(["compress", str(base), "--method", "channels", "--target-macs", "0.5", "--data", "sample",
                 "--eval-limit", "64", "--ratios", "0.5", "--output", str(cdir), "--json", "--device", "cpu"]) == 0
    script = [sys.executable, str(ROOT / "benchmarks" / "channel_pruning.py")]
    runs, results = tmp_path / "runs", tmp_path / "results"
    subprocess.run(script + ["adopt", "--data", "sample", "--runs-dir", str(runs), "--model", "resnet20",
                             "--compress-dir", str(cdir), "--base", str(base), "--pruned", str(cdir / "model.pt"),
                             "--width", str(width), "--width-arg", "width=11", "--ft-epochs", "0", "--width-epochs",
                             "0", "--retrained", str(cdir / "model.pt"), "--retrain-epochs", "1", "--threads", "1"],
                   check=True, cwd=ROOT)
    subprocess.run(script + ["measure", "--runs-dir", str(runs), "--rounds", "1", "--runs", "3", "--tmp",
                             str(tmp_path / "onnx"), "--results-dir", str(results)], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    rec = R.load_record(results / "channel_pruning.json")
    rows = _pruning_rows(rec)
    assert [r["variant"].split(" (")[0] for r in rows] == ["baseline", "channel-pruned", "channel-pruned",
                                                           "uniform width=11"]
    _check_pruning_columns(rec)
    assert _check_pruning_verdicts(rec) == 2
    assert _check_pruning_registry_rows(rec) == 2
    assert rec["machine"]["cpu"] and rec["machine"]["threads"] == 1 and rec["date"]
    # every drop in the sensitivity table is against the one baseline the section prints
    bases = {round(r["prune 50%"]["value"] - r["prune 50%"]["delta"], 9) for r in
             R.rows(R.find_table(rec, "sensitivity"))}
    assert len(bases) == 1 and f"baseline: {bases.pop():.2f}" in _lines(rec)
    assert (results / "channel_pruning_sensitivity_resnet.png").stat().st_size > 0
    if committed is not None:  # --results-dir kept the committed record untouched
        assert committed_path.read_bytes() == committed


def test_zoo_table_sizes_are_what_the_profiler_counts():
    # every model of the zoo table (BENCHMARKS.md "Model zoo"): params, MACs, memory traffic and peak activations
    # as lightnn.profile counts them today, and MACs per ms = MACs / the quoted median latency
    import lightnn
    from lightnn.profile import profile

    t = R.find_table(_record("zoo"), "main")
    rows = R.rows(t)
    assert len(rows) >= 30
    torch.manual_seed(0)
    for r in rows:
        name = r["model"]
        size = tuple(int(v) for v in r["input"].split("x"))
        rep = profile(lightnn.create_model(name).eval(), (1, 3, *size))
        assert _text(t, "params (M)", r["params (M)"]) == f"{rep.params / 1e6:.2f}", name
        assert _text(t, "MACs (M)", r["MACs (M)"]) == f"{rep.macs / 1e6:.1f}", name
        assert _text(t, "memory traffic (MB)", r["memory traffic (MB)"]) == f"{rep.memory_bytes / 1e6:.1f}", name
        assert _text(t, "peak activations (MB)", r["peak activations (MB)"]) == \
            f"{rep.peak_activation_bytes / 1e6:.1f}", name
        ms = r["batch 1: ms, median (IQR)"]["median"]
        # the ratio was taken before the latency was rounded to 2 decimals
        assert r["batch 1: MACs per ms (M)"] == pytest.approx(rep.macs / 1e6 / ms, rel=0.01, abs=0.051), name


def test_zoo_mobilenet_v1_layer_types_are_what_the_profiler_counts():
    # BENCHMARKS.md "MobileNet V1 (1.0, 224): resources per layer type": both tables and the sentences that quote
    # them are the profiler's today (nothing in them is timed)
    rec = _record("zoo")
    want = _bench("zoo").by_type_parts()
    start = next(i for i, p in enumerate(rec["parts"]) if p.get("heading", "").startswith("MobileNet V1 (1.0, 224)"))
    got = rec["parts"][start:start + len(want)]
    assert [R.render_table(p["table"]) if "table" in p else p for p in got] == \
        [R.render_table(p["table"]) if "table" in p else p for p in want]


def test_igc_width_table_sizes_are_the_blocks():
    # BENCHMARKS.md "IGCV1: width at equal parameters": every row's parameters and MACs from the block itself, and
    # the width stays within the regular conv's 9 C^2 parameter budget
    from lightnn import profile
    from lightnn.ops.conv import conv2d
    from lightnn.ops.igc import IGCV1Block

    t = R.find_table(_record("igc_width"), "main")
    rows = [r for r in R.rows(t) if r["IGC block"].startswith("L")]
    assert len(rows) >= 10
    for r in rows:
        C = r["regular C"]
        L, M = map(int, re.match(r"L(\d+)M(\d+)", r["IGC block"]).groups())
        block = IGCV1Block(L * M, L * M, L, M, 3, norm=False, act=None)
        params = r["params (regular -> IGC)"]
        assert params["regular"] == 9 * C * C == sum(q.numel() for q in conv2d(C, C, 3).parameters())
        assert params["igc"] == sum(q.numel() for q in block.parameters()) <= params["regular"], r
        assert r["width G = L M"] == L * M and _text(t, "G / C", r["G / C"]) == f"{L * M / C:.2f}"
        macs = r["MACs per image (M), regular -> IGC"]
        assert macs["regular"] == pytest.approx(profile(conv2d(C, C, 3), (1, C, 32, 32)).macs / 1e6, abs=0.051)
        assert macs["igc"] == pytest.approx(profile(block, (1, L * M, 32, 32)).macs / 1e6, abs=0.051)


@pytest.mark.parametrize("topic", ["training", "training_compile"])
def test_training_width_estimates_follow_from_the_speeds(topic):
    # "est. 30 epochs" = 30 x 45,000 images at the faster precision's images/s (the speeds are printed rounded)
    rows = R.rows(R.find_table(_record(topic), "widths"))
    assert rows
    for r in rows:
        fp32, bf16 = r["fp32 img/s"], r["bf16 + channels-last img/s"]
        assert r["faster"] == ("bf16" if bf16 > fp32 else "fp32")
        assert r["est. 30 epochs"] == pytest.approx(30 * 45_000 / max(fp32, bf16) / 60, abs=1.0), r
        if "compiled fp32 img/s" in r:
            cfast = max(r["compiled fp32 img/s"], r["compiled bf16 + channels-last img/s"])
            assert r["est. 30 epochs compiled"] == pytest.approx(30 * 45_000 / cfast / 60, abs=1.0), r


def test_training_pipeline_bounds_quoted_in_the_notes_follow_from_the_table():
    # "even a data pipeline that cost nothing would train at most A x faster ... for ResNet-20 and B x for LeNet-5":
    # the model's time per image is lightnn's end-to-end time minus its data-only time, and the bound adds the
    # per-image pipeline's data time back to it
    rec = _record("training")
    rows = {r["measured"]: r for r in R.rows(R.find_table(rec, "throughput"))}
    ref_col, ours_col = "per-image DataLoader+PIL img/s (IQR)", "lightnn BatchLoader img/s (IQR)"
    data = rows["data pipeline only"]
    t_ref, t_ours = 1 / data[ref_col]["median"], 1 / data[ours_col]["median"]
    hit = re.search(r"at most (\d+\.\d+)x faster than the per-image one for ResNet-20 and (\d+\.\d+)x for LeNet-5, "
                    r"because the per-image\s+pipeline only adds its (\d+) us per image", rec["notes"])
    assert hit, "the bound sentence is not in the notes"
    for quoted, key in ((hit.group(1), "train resnet20"), (hit.group(2), "train lenet5:img_size=32")):
        t_model = 1 / rows[key][ours_col]["median"] - t_ours
        assert float(quoted) == round((t_model + t_ref) / t_model, 2), key
        assert (t_model + t_ref) / t_model < 2.0
    assert int(hit.group(3)) == round(t_ref * 1e6)


def test_training_runs_table_sizes_and_quoted_accuracies():
    # "Full CIFAR-10 on this machine": params and MACs of every row are rebuilt from the registry, and each accuracy the
    # notes quote for a model ("<model> ... NN.NN% validation top-1") is that row's final validation top-1
    from lightnn import profile

    rec = _record("training_runs")
    rows = R.rows(R.find_table(rec, "runs"))
    assert len(rows) >= 3
    for r in rows:
        arch = {} if r["width"] == 1.0 else {"width_mult": r["width"]}  # the table's 1.0 is the default
        m = create_model(r["model"], num_classes=10, **arch)
        assert r["params"] == pytest.approx(sum(p.numel() for p in m.parameters()) / 1e6, abs=0.0006), r
        assert r["MACs (32x32)"] == pytest.approx(profile(m, (1, 3, 32, 32)).macs / 1e6, abs=0.051), r
        assert r["val top-1 % (best)"]["final"] <= r["val top-1 % (best)"]["best"], r
    quoted = {"resnet20": "ResNet-20", "mobilenet_v2_cifar": "MobileNetV2-CIFAR", "shufflenet_v2_cifar":
              "ShuffleNetV2-CIFAR", "igcv3_cifar": "IGCV3-CIFAR"}
    finals: dict[str, set] = {}
    for r in rows:
        finals.setdefault(r["model"], set()).add(r["val top-1 % (best)"]["final"])
    checked = 0
    for model, values in finals.items():
        for hit in re.finditer(re.escape(quoted[model]) + r"[^%]{0,60}?(\d+\.\d\d)% validation top-1", rec["notes"]):
            assert float(hit.group(1)) in values, (model, hit.group(0))  # one of that model's rows
            checked += 1
    assert checked >= 4


def test_training_runs_table_reads_a_run_directory(tmp_path):
    # the row is built from config.yaml + metrics.jsonl alone: an unfinished run says so, a `--compile auto` run
    # names both of its probes' ratios, the wall-clock is the sum of the epochs' times
    import json

    import yaml

    probe = {"amp": True, "channels_last": True, "step_s": 0.2, "fp32_s": 0.5, "bf16_cl_s": 0.2, "compile": True,
             "eager": {"step_s": 0.3}, "compiled": {"step_s": 0.2}}
    cfg = {"model": "resnet20", "arch": {}, "epochs": 3, "batch_size": 64, "lr": 0.1, "warmup_epochs": 1,
           "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "schedule": "cosine", "label_smoothing": 0.1,
           "amp": True, "compile": True, "precision_probe": probe}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    hist = [{"epoch": e, "val_top1": v, "val_top5": 99.0, "images_per_s": 1000.0 + e, "epoch_time_s": 60.0}
            for e, v in ((1, 50.0), (2, 61.5))]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in hist))
    mod = _bench("training")
    parts, _ = mod.runs_parts([str(tmp_path)])
    t = parts[1]["table"]
    row = R.rows(t)[0]
    text = {k: _text(t, k, v) for k, v in row.items()}
    assert text["epochs"] == "2 of 3" and text["val top-1 % (best)"] == "**61.50** (61.50)"
    assert row["precision"] == ("bf16 + channels-last (bf16 step 2.50x fp32's speed), torch.compile "
                                "(step 1.50x eager's speed)")
    assert text["wall-clock (sum of epochs)"] == "2.0 min" and text["params"] == "0.270 M"
    assert "momentum 0.9, Nesterov True, weight decay 0.0005" in parts[0]["text"]
    # the run's record (config + epochs, a few KB) rebuilds the same row once the directory is gone
    rec = mod.save_record(tmp_path, records=tmp_path / "records")
    assert mod.load_run(rec) == mod.load_run(tmp_path)
    assert R.rows(mod.runs_parts([str(rec)])[0][1]["table"])[0] == row and row["CPU"] == mod.cpu_name()
    # --keep-rows: an earlier record's rows stay (without a CPU column they get the earlier machine's), except the
    # one the new run replaces (same model, width, batch)
    cols = [c for c in mod.RUNS_COLUMNS if c["label"] != "CPU"]
    old_rows = [["resnet20", 1.0, 0.27, 40.6, 30, batch, {"lr": 0.1, "warmup": w}, "fp32",
                 {"final": top1, "best": top1}, 99.0, 1, 1.0, 1.0]
                for batch, w, top1 in ((64, 1.0, 80.0), (128, 0, 81.0))]
    old = R.make_record("training_runs", "old", None, [R.table("runs", cols, old_rows)], machine=None, date=None)
    old["data"] = {"recipes": [{"momentum": 0.9, "nesterov": True, "weight_decay": 0.0005, "schedule": "cosine",
                                "label_smoothing": 0.0}]}
    kept, recipes = mod.runs_parts([str(rec)], keep=old)
    t = kept[1]["table"]
    assert [(r["batch"], _text(t, "val top-1 % (best)", r["val top-1 % (best)"]), r["CPU"]) for r in R.rows(t)] == [
        (128, "**81.00** (81.00)", mod.KEPT_CPU), (64, "**61.50** (61.50)", row["CPU"])]
    assert "label smoothing 0.0" in kept[0]["text"] and "label smoothing 0.1" in kept[0]["text"]
    assert len(recipes) == 2
    assert R.validate(mod.runs_record([str(rec)], keep=old))["data"]["recipes"] == recipes


def test_deploy_table_sizes_and_ratios_are_consistent():
    # BENCHMARKS.md "Deployment": every model's size ratio follows from the sizes on disk, and the ORT fp32 row of each
    # (model, batch, threads) is the 1.00 reference the other rows of the same run are divided by
    rows = R.rows(R.find_table(_record("deploy"), "main"))
    fp32 = {(r["model"], r["batch"], r["threads"]): r for r in rows if r["backend"] == "ort fp32"}
    assert fp32
    for r in rows:
        ref = fp32[(r["model"], r["batch"], r["threads"])]
        assert ref["speed-up vs ORT fp32, median (IQR)"]["median"] == 1.0
        if r["size on disk (MB)"] != "-":
            ratio = ref["size on disk (MB)"] / r["size on disk (MB)"]
            assert r["size vs fp32"] == pytest.approx(ratio, abs=0.02), r


def test_training_levers_scores_a_run_and_rebuilds_its_table(tmp_path):
    # a tiny `fit(..., callbacks=[EMA(...)])` run: the four scores are evaluate()'s on last.pt / model.pt with and without the
    # mirror, the record keeps every epoch, and the table holds exactly those numbers
    from lightnn.checkpoint import load_any, read_checkpoint
    from lightnn.data import ImageData
    from lightnn.train import EMA, evaluate, fit

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(48) % 4
    imgs = torch.randint(0, 120, (48, 3, 8, 8), generator=g, dtype=torch.uint8)
    imgs[:, 0] += (labels * 40).to(torch.uint8)[:, None, None]
    imgs[:, 1, :, :4] += (labels * 30).to(torch.uint8)[:, None, None]  # not mirror-symmetric: TTA changes scores
    tr = ImageData(imgs[:32], labels[:32], [f"c{i}" for i in range(4)], source="tiny")
    va = ImageData(imgs[32:], labels[32:], [f"c{i}" for i in range(4)], source="tiny")
    run = tmp_path / "r20_tiny"
    torch.manual_seed(0)
    fit(create_model("resnet20", num_classes=4), tr, va, epochs=2, batch_size=16, lr=0.05, amp=False,
        callbacks=[EMA(0.9)], progress=False, verbose=False, output_dir=run,
        extra_config={"model": "resnet20", "arch": {}, "val_fraction": 0.1, "split_seed": 0, "train_images": 32,
                      "val_images": 16})
    assert "cutout: 0" in (run / "config.yaml").read_text()
    mod = _bench("training_levers")
    scores = mod.score_run(run, va, batch_size=5)
    for which, fname in (("raw", "last.pt"), ("ema", "model.pt")):
        m = load_any(str(run / fname))
        for tta, key in ((None, which), ("flip", which + "_flip")):
            want = evaluate(m, va, tta=tta, **read_checkpoint(run / fname)["meta"]["normalize"])
            assert scores[key]["top1"] == want["top1"] and scores[key]["n"] == 16, key
    rec = mod.make_record(run, scores)
    assert [e["epoch"] for e in rec["epochs"]] == [1, 2] and rec["config"]["ema"] == 0.9
    t = R.find_table(mod.levers_record([rec]), "scores")
    rows = R.rows(t)
    assert [r["weights"] for r in rows] == ["trained (last step)", "moving average (decay 0.9)"]
    assert rows[0]["run"] == "batch 16, lr 0.05" and _text(t, "train time", rows[0]["train time"]).startswith(
        "2 epochs, ")
    for r, which in zip(rows, ("raw", "ema")):
        assert r["val top-1 %"] == scores[which]["top1"]
        assert r["with mirror TTA: top-1 %"] == scores[which + "_flip"]["top1"]
    # an unfinished run is refused with the reason
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text(lines[0] + "\n")
    with pytest.raises(SystemExit, match="1 of 2 epochs logged"):
        mod.make_record(run, scores)


def test_training_levers_section_is_its_committed_record():
    # BENCHMARKS.md "what a weight average and mirror TTA add": the record is rebuilt from the committed run records,
    # and each figure the notes quote as "<what> NN.NN%" is one of the record's scores
    mod = _bench("training_levers")
    records = mod.committed_records()
    rec = _record("training_levers")
    if not records:
        pytest.skip("the run records of benchmarks/runs/ are not in this checkout")
    assert {**mod.levers_record(records), "notes": rec["notes"]} == rec
    checked = 0
    for run in records:
        s = run["scores"]
        assert s["raw"]["n"] == run["config"]["val_images"] == 5000
        assert run["epochs"][-1]["val_top1"] == s["ema"]["top1"]
        assert run["epochs"][-1]["val_top1_raw"] == s["raw"]["top1"]
        label = mod._run_label(run["config"])
        for what, key in (("trained", "raw"), ("average", "ema"), ("trained + mirror", "raw_flip"),
                          ("average + mirror", "ema_flip")):
            for hit in re.finditer(re.escape(f"({label}: {what} ") + r"(\d+\.\d\d)%", rec["notes"]):
                assert float(hit.group(1)) == round(s[key]["top1"], 2), hit.group(0)
                checked += 1
    assert checked >= 4


def test_latency_model_summary_follows_from_its_rows_and_the_notes_quote_it():
    rec = _record("latency_model")
    summaries = {s["config"]: s for s in rec["data"]["summaries"]}
    nets = next(t for t in R.tables(rec) if any(c["label"] == "validation network" for c in t["columns"]))
    labels = [c["label"] for c in nets["columns"]]
    for cfg, s in summaries.items():
        assert s["validation"] >= 50 and s["train"] >= 19  # the validation set size
        err = [r[labels.index(f"{cfg}: error")] for r in nets["rows"]]
        again = [r[labels.index(f"{cfg}: second timing")] for r in nets["rows"]]
        assert len(err) == s["validation"]
        assert s["within10"] == pytest.approx(100 * sum(abs(e) <= 10 for e in err) / len(err))
        assert s["repeat_within10"] == pytest.approx(100 * sum(abs(e) <= 10 for e in again) / len(again))
    notes = rec["notes"]
    order = ["int8-b1", "int8-b32", "ort-b1", "ort-b32"]
    for key, fmt in (("within10", "{:.0f}%"), ("repeat_within10", "{:.0f}%"), ("tau_pred", "{:.3f}"),
                     ("tau_macs", "{:.3f}"), ("tau_memory", "{:.3f}"), ("tau_repeat", "{:.3f}")):
        for cfg in order:
            assert fmt.format(summaries[cfg][key]) in notes, (cfg, key)
    assert f"{summaries['ort-b1']['fit_err']:.1f}% median error" in notes
    assert rec["machine"]["cpu"] == "AMD EPYC" and "avx512_vnni" in rec["machine"]["isa"]  # the CPU the notes name


def test_search_compress_verdicts_and_defaults_follow_from_the_tables():
    """The TPE-vs-random and mixed-bits verdicts are recomputed from the typed cells, the record re-renders
    identically from its own data, and the defaults it names are the code's defaults."""
    import argparse

    from lightnn.cli import build_parser
    from lightnn.search.compress import CompressSearchConfig

    rec = _record("search_compress")
    s = R.rows(R.find_table(rec, "sampler"))
    for r in s:
        assert r["TPE - random (val)"] == pytest.approx(r["TPE: val top-1 after final fine-tune"]
                                                       - r["random: val top-1 after final fine-tune"])
        assert r["largest trial MACs"] <= 50.0  # every trial met the 50% budget
    wins = sum(r["TPE - random (val)"] >= 0.3 for r in s)
    text = " ".join(p["text"] for p in rec["parts"] if "text" in p)
    assert f"{'met' if wins >= 2 else '**not met**'} ({wins} of {len(s)} seeds)" in text
    mean = sum(r["TPE - random (val)"] for r in s) / len(s)
    assert f"{mean:+.2f} points" in text
    b = R.rows(R.find_table(rec, "bits"))
    for r in b:
        assert r["mixed - 4 bits"] == pytest.approx(r["mixed: val top-1"] - r["4 bits: val top-1"])
        assert r["mixed file smaller by"] == pytest.approx((1 - r["mixed: .lnz kB"] / r["4 bits: .lnz kB"]) * 100)
        assert r["mixed: average bits"] <= 4.0 + 1e-9
    gain = sum(r["mixed - 4 bits"] for r in b) / len(b)
    smaller = sum(r["mixed file smaller by"] for r in b) / len(b)
    met = gain >= 0.3 or (smaller >= 10 and gain >= -0.1)
    assert f"mean {gain:+.2f} points, file {smaller:.1f}% smaller" in text
    # the better arms are the defaults
    args = build_parser().parse_args(["search", "compress", "x.pt"])
    sampler = args._defaults["sampler"] if hasattr(args, "_defaults") else args.sampler
    assert sampler == ("tpe" if mean > 0 else "random") and f"**{sampler.upper() if sampler == 'tpe' else sampler}**" in text
    assert ("bits" in CompressSearchConfig().knobs) == met
    # re-rendered from the data it holds, the record is the same
    mod = _bench("search_compress")
    ns = argparse.Namespace(final_epochs=1.0, budget_s=0.0, bits_search_epochs=0.02, bits_final_epochs=0.3)
    again = mod.build_record(rec["data"], ns, {"machine": rec["machine"], "date": rec["date"],
                                               "software": rec["software"]})
    assert again["parts"] == rec["parts"]


def test_search_docs_quote_the_storage_constants():
    from lightnn.search.storage import GRACE_S, HEARTBEAT_S

    text = (ROOT / "docs" / "search.md").read_text()
    assert f"heartbeats ({HEARTBEAT_S} s), a trial silent for {GRACE_S} s" in text
