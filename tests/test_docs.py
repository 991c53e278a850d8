"""The published tables agree with their sources: BENCHMARKS.md is exactly the assembled benchmark results, the
channel-pruning table's derived columns and verdicts follow from its measured columns, and every MACs / params
figure of a model that can be rebuilt from the registry alone is recomputed here."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch

from lightnn import create_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _assemble():
    spec = importlib.util.spec_from_file_location("lightnn_bench_assemble", ROOT / "benchmarks" / "assemble.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _table(text: str, first_col: str) -> list[dict[str, str]]:
    """The first markdown table whose header's first cell is ``first_col``, as dicts keyed by the header cells."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines)
                 if ln.startswith("|") and ln.strip("|").split("|")[0].strip() == first_col)
    head = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        rows.append(dict(zip(head, (c.strip() for c in ln.strip("|").split("|")))))
    return rows


def _num(cell: str) -> float:
    return float(re.match(r"[-+]?[\d,]*\.?\d+", cell.replace("*", "")).group(0).replace(",", ""))


def test_benchmarks_md_is_the_assembled_results():
    if not RESULTS.is_dir():
        pytest.skip("benchmarks/results is not in this checkout")
    text, n = _assemble().render(RESULTS)
    assert n >= 10
    assert (ROOT / "BENCHMARKS.md").read_text() == text, \
        "BENCHMARKS.md differs from benchmarks/results/*.md: run `python benchmarks/assemble.py`"


def test_assemble_orders_known_sections_first(tmp_path):
    (tmp_path / "zzz_new.md").write_text("# New\n")
    (tmp_path / "zoo.md").write_text("# Zoo\n")
    (tmp_path / "guidelines.md").write_text("# Guidelines\n")
    text, n = _assemble().render(tmp_path)
    assert n == 3 and text.index("# Guidelines") < text.index("# Zoo") < text.index("# New")


@pytest.fixture(scope="module")
def pruning_table() -> tuple[str, list[dict[str, str]]]:
    path = RESULTS / "channel_pruning.md"
    if not path.exists():
        pytest.skip("benchmarks/results/channel_pruning.md is not in this checkout")
    text = path.read_text()
    return text, _table(text, "model")


def test_channel_pruning_derived_columns_follow_from_the_measured_ones(pruning_table):
    _check_pruning_columns(*pruning_table)


def test_channel_pruning_verdicts_follow_from_the_table(pruning_table):
    assert _check_pruning_verdicts(*pruning_table) >= 2


def test_channel_pruning_registry_rows_have_the_quoted_size(pruning_table):
    assert _check_pruning_registry_rows(*pruning_table) >= 4


def _check_pruning_columns(text: str, rows: list[dict[str, str]]) -> None:
    base = {r["model"]: r for r in rows if r["variant"] == "baseline"}
    assert set(base) == {r["model"] for r in rows}, "every model has a baseline row"
    for r in rows:
        b = base[r["model"]]
        delta = _num(r["top-1 (%)"]) - _num(b["top-1 (%)"])
        assert _num(r["Δ top-1"]) == pytest.approx(delta, abs=0.006), r
        for bs in ("b1", "b32"):
            ms, ms0 = _num(r[f"{bs} ms (IQR)"]), _num(b[f"{bs} ms (IQR)"])
            # speed-up = baseline median / model median, both printed to 3 decimals (so each is within 0.0005 of
            # the measured value: tiny models on the sample run in ~0.1 ms), the ratio rounded to 2 decimals
            lo, hi = (ms0 - 5e-4) / (ms + 5e-4) - 0.005, (ms0 + 5e-4) / (ms - 5e-4) + 0.005
            assert lo <= _num(r[f"{bs} speed-up"]) <= hi, (r, bs, lo, hi)


def _check_pruning_verdicts(text: str, rows: list[dict[str, str]]) -> int:
    lines = text.splitlines()
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
            lost = -_num(pruned["Δ top-1"])
            speed = _num(pruned["b32 speed-up"])
            acc_ok, speed_ok = ("met" if lost <= 1 else "NOT met"), ("met" if speed >= 1.5 else "NOT met")
            if targets:
                acc_ok, speed_ok = f"target <= 1: {acc_ok}", f"target >= 1.5x: {speed_ok}"
            assert f"accuracy lost {lost:.2f} points ({acc_ok})" in line, line
            assert f"batch-32 speed-up {speed:.2f}x ({speed_ok})" in line, line
            gap = _num(pruned["top-1 (%)"]) - _num(width["top-1 (%)"])
            assert f"vs width scaling: top-1 {gap:+.2f} points" in line
            assert f"speed-up {speed:.2f}x vs {_num(width['b32 speed-up']):.2f}x" in line
            checked += 1
    return checked


def _check_pruning_registry_rows(text: str, rows: list[dict[str, str]]) -> int:
    # baselines and the uniform width baselines are plain registry models: recompute their MACs and params
    from lightnn.compress.sensitivity import count_macs

    x = torch.randn(1, 3, 32, 32)
    checked = 0
    for r in rows:
        if r["variant"] == "baseline":
            kw = {}
        elif r["variant"].startswith("uniform "):
            k, v = r["variant"].split()[1].split("=")
            kw = {k: float(v) if "." in v else int(v)}
        else:
            continue  # pruned models need their checkpoints
        m = create_model(r["model"], num_classes=10, **kw).eval()
        assert _num(r["MACs (M)"]) == pytest.approx(count_macs(m, x) / 1e6, abs=0.051), r
        assert _num(r["params (k)"]) == pytest.approx(sum(p.numel() for p in m.parameters()) / 1e3, abs=0.51), r
        checked += 1
    return checked


@pytest.mark.slow
def test_channel_pruning_benchmark_stages_on_the_sample(tmp_path):
    # benchmarks/channel_pruning.py adopt + measure end to end on untrained CIFAR-size checkpoints and the shipped
    # sample: the table it writes passes the same checks as the committed one (retrained row included)
    import subprocess
    import sys

    from lightnn.checkpoint import save_checkpoint
    from lightnn.cli import main

    committed = (RESULTS / "channel_pruning.md").read_bytes() if (RESULTS / "channel_pruning.md").exists() else None
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
    text = (results / "channel_pruning.md").read_text()
    rows = _table(text, "model")
    assert [r["variant"].split(" (")[0] for r in rows] == ["baseline", "channel-pruned", "channel-pruned",
                                                           "uniform width=11"]
    _check_pruning_columns(text, rows)
    assert _check_pruning_verdicts(text, rows) == 2
    assert _check_pruning_registry_rows(text, rows) == 2
    assert (results / "channel_pruning_sensitivity_resnet.png").stat().st_size > 0
    if committed is not None:  # --results-dir kept the committed table untouched
        assert (RESULTS / "channel_pruning.md").read_bytes() == committed


def test_zoo_table_sizes_are_what_the_profiler_counts():
    # every model of the zoo table (BENCHMARKS.md "Model zoo"): params, MACs, memory traffic and peak activations
    # as lightnn.profile counts them today, and MACs per ms = MACs / the quoted median latency
    import lightnn
    from lightnn.profile import profile

    path = RESULTS / "zoo.md"
    if not path.exists():
        pytest.skip("benchmarks/results/zoo.md is not in this checkout")
    rows = _table(path.read_text(), "model")
    assert len(rows) >= 30
    torch.manual_seed(0)
    for r in rows:
        name = r["model"]
        size = tuple(int(v) for v in r["input"].split("x"))
        rep = profile(lightnn.create_model(name).eval(), (1, 3, *size))
        assert r["params (M)"] == f"{rep.params / 1e6:.2f}", name
        assert r["MACs (M)"] == f"{rep.macs / 1e6:.1f}", name
        assert r["memory traffic (MB)"] == f"{rep.memory_bytes / 1e6:.1f}", name
        assert r["peak activations (MB)"] == f"{rep.peak_activation_bytes / 1e6:.1f}", name
        ms = _num(r["batch 1: ms, median (IQR)"])
        # the ratio was taken before the latency was rounded to 2 decimals
        assert _num(r["batch 1: MACs per ms (M)"]) == pytest.approx(rep.macs / 1e6 / ms, rel=0.01, abs=0.051), name


def test_igc_width_table_sizes_are_the_blocks():
    # BENCHMARKS.md "IGCV1: width at equal parameters": every row's parameters and MACs from the block itself, and
    # the width stays within the regular conv's 9 C^2 parameter budget
    from lightnn import profile
    from lightnn.ops.conv import conv2d
    from lightnn.ops.igc import IGCV1Block

    path = RESULTS / "igc_width.md"
    if not path.exists():
        pytest.skip("benchmarks/results/igc_width.md is not in this checkout")
    rows = [r for r in _table(path.read_text(), "regular C") if r["IGC block"].startswith("L")]
    assert len(rows) >= 10
    for r in rows:
        C = int(r["regular C"])
        L, M = map(int, re.match(r"L(\d+)M(\d+)", r["IGC block"]).groups())
        block = IGCV1Block(L * M, L * M, L, M, 3, norm=False, act=None)
        p_reg, p_igc = (int(v.replace(",", "")) for v in r["params (regular -> IGC)"].split("->"))
        assert p_reg == 9 * C * C == sum(q.numel() for q in conv2d(C, C, 3).parameters())
        assert p_igc == sum(q.numel() for q in block.parameters()) <= p_reg, r
        assert int(r["width G = L M"]) == L * M and r["G / C"] == f"{L * M / C:.2f}"
        macs_reg, macs_igc = (float(v) for v in r["MACs per image (M), regular -> IGC"].split("->"))
        assert macs_reg == pytest.approx(profile(conv2d(C, C, 3), (1, C, 32, 32)).macs / 1e6, abs=0.051)
        assert macs_igc == pytest.approx(profile(block, (1, L * M, 32, 32)).macs / 1e6, abs=0.051)


@pytest.mark.parametrize("name", ["training.md", "training_compile.md"])
def test_training_width_estimates_follow_from_the_speeds(name):
    # "est. 30 epochs" = 30 x 45,000 images at the faster precision's images/s (the speeds are printed rounded)
    path = RESULTS / name
    if not path.exists():
        pytest.skip(f"benchmarks/results/{name} is not in this checkout")
    rows = _table(path.read_text(), "model")
    assert rows
    for r in rows:
        fast = max(_num(r["fp32 img/s"]), _num(r["bf16 + channels-last img/s"]))
        assert r["faster"] == ("bf16" if _num(r["bf16 + channels-last img/s"]) > _num(r["fp32 img/s"]) else "fp32")
        assert _num(r["est. 30 epochs"]) == pytest.approx(30 * 45_000 / fast / 60, abs=1.0), r
        if "compiled fp32 img/s" in r:
            cfast = max(_num(r["compiled fp32 img/s"]), _num(r["compiled bf16 + channels-last img/s"]))
            assert _num(r["est. 30 epochs compiled"]) == pytest.approx(30 * 45_000 / cfast / 60, abs=1.0), r


def _training_bench():
    spec = importlib.util.spec_from_file_location("lightnn_bench_training", ROOT / "benchmarks" / "training.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_training_pipeline_bounds_quoted_in_the_notes_follow_from_the_table():
    # "even a data pipeline that cost nothing would train at most A x faster ... for ResNet-20 and B x for LeNet-5":
    # the model's time per image is lightnn's end-to-end time minus its data-only time, and the bound adds the
    # per-image pipeline's data time back to it
    path = RESULTS / "training.md"
    if not path.exists():
        pytest.skip("benchmarks/results/training.md is not in this checkout")
    text = path.read_text()
    rows = {r["measured"]: r for r in _table(text, "measured")}
    ref_col, ours_col = "per-image DataLoader+PIL img/s (IQR)", "lightnn BatchLoader img/s (IQR)"
    data = rows["data pipeline only"]
    t_ref, t_ours = 1 / _num(data[ref_col]), 1 / _num(data[ours_col])
    hit = re.search(r"at most (\d+\.\d+)x faster than the per-image one for ResNet-20 and (\d+\.\d+)x for LeNet-5, "
                    r"because the per-image\s+pipeline only adds its (\d+) us per image", text)
    assert hit, "the bound sentence is not in the notes"
    for quoted, key in ((hit.group(1), "train resnet20"), (hit.group(2), "train lenet5:img_size=32")):
        t_model = 1 / _num(rows[key][ours_col]) - t_ours
        assert float(quoted) == round((t_model + t_ref) / t_model, 2), key
        assert (t_model + t_ref) / t_model < 2.0
    assert int(hit.group(3)) == round(t_ref * 1e6)


def test_training_runs_table_sizes_and_quoted_accuracies():
    # "Full CIFAR-10 on this machine": params and MACs of every row are rebuilt from the registry, and each accuracy the
    # notes quote for a model ("<model> ... NN.NN% validation top-1") is that row's final validation top-1
    path = RESULTS / "training_runs.md"
    if not path.exists():
        pytest.skip("benchmarks/results/training_runs.md is not in this checkout")
    from lightnn import profile

    text = path.read_text()
    rows = _table(text, "model")
    assert len(rows) >= 3
    for r in rows:
        arch = {} if r["width"] == "1.0" else {"width_mult": float(r["width"])}  # the table's 1.0 is the default
        m = create_model(r["model"], num_classes=10, **arch)
        assert _num(r["params"]) == pytest.approx(sum(p.numel() for p in m.parameters()) / 1e6, abs=0.0006), r
        assert _num(r["MACs (32x32)"]) == pytest.approx(profile(m, (1, 3, 32, 32)).macs / 1e6, abs=0.051), r
        assert _num(r["val top-1 % (best)"]) <= _num(r["val top-1 % (best)"].split("(")[1]), r
    notes = text[text.index("## What the runs say"):]
    quoted = {"resnet20": "ResNet-20", "mobilenet_v2_cifar": "MobileNetV2-CIFAR", "shufflenet_v2_cifar":
              "ShuffleNetV2-CIFAR", "igcv3_cifar": "IGCV3-CIFAR"}
    finals = {}
    for r in rows:
        finals.setdefault(r["model"], set()).add(_num(r["val top-1 % (best)"]))
    checked = 0
    for model, values in finals.items():
        for hit in re.finditer(re.escape(quoted[model]) + r"[^%]{0,60}?(\d+\.\d\d)% validation top-1", notes):
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
    text = _training_bench().runs_table([str(tmp_path)])
    row = _table(text, "model")[0]
    assert row["epochs"] == "2 of 3" and row["val top-1 % (best)"] == "**61.50** (61.50)"
    assert row["precision"] == ("bf16 + channels-last (bf16 step 2.50x fp32's speed), torch.compile "
                                "(step 1.50x eager's speed)")
    assert row["wall-clock (sum of epochs)"] == "2.0 min" and row["params"] == "0.270 M"
    assert "momentum 0.9, Nesterov True, weight decay 0.0005" in text
    # the run's record (config + epochs, a few KB) rebuilds the same row once the directory is gone
    mod = _training_bench()
    rec = mod.save_record(tmp_path, records=tmp_path / "records")
    assert mod.load_run(rec) == mod.load_run(tmp_path)
    assert _table(mod.runs_table([str(rec)]), "model")[0] == row and row["CPU"] == mod.cpu_name()
    # --keep-rows: an earlier table's rows stay (without a CPU column they get the earlier machine's), except the
    # one the new run replaces (same model, width, batch)
    old = ("Recipe: momentum 0.9, Nesterov True, weight decay 0.0005 (not on norms/biases), cosine schedule, label "
           "smoothing 0.0; ...\n\n| model | width | params | MACs (32x32) | epochs | batch | lr (warm-up) | precision | "
           "val top-1 % (best) | val top-5 % | train img/s (median) | wall-clock (sum of epochs) | median epoch x "
           "epochs |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
           "| resnet20 | 1.0 | 0.270 M | 40.6 M | 30 | 64 | 0.1 (1.0) | fp32 | **80.00** (80.00) | 99.00 | 1 | 1 min "
           "| 1 min |\n"
           "| resnet20 | 1.0 | 0.270 M | 40.6 M | 30 | 128 | 0.1 (0) | fp32 | **81.00** (81.00) | 99.00 | 1 | 1 min "
           "| 1 min |\n")
    kept = mod.runs_table([str(rec)], keep=old)
    rows = _table(kept, "model")
    assert [(r["batch"], r["val top-1 % (best)"], r["CPU"]) for r in rows] == [
        ("128", "**81.00** (81.00)", mod.KEPT_CPU), ("64", "**61.50** (61.50)", row["CPU"])]
    assert "label smoothing 0.0" in kept and "label smoothing 0.1" in kept


def test_deploy_table_sizes_and_ratios_are_consistent():
    # BENCHMARKS.md "Deployment": every model's size ratio follows from the sizes on disk, and the ORT fp32 row of each
    # (model, batch, threads) is the 1.00 reference the other rows of the same run are divided by
    path = RESULTS / "deploy.md"
    if not path.exists():
        pytest.skip("benchmarks/results/deploy.md is not in this checkout")
    rows = _table(path.read_text(), "model")
    fp32 = {(r["model"], r["batch"], r["threads"]): r for r in rows if r["backend"] == "ort fp32"}
    assert fp32
    for r in rows:
        ref = fp32[(r["model"], r["batch"], r["threads"])]
        assert _num(ref["speed-up vs ORT fp32, median (IQR)"]) == 1.0
        if r["size on disk (MB)"] != "-":
            ratio = _num(ref["size on disk (MB)"]) / _num(r["size on disk (MB)"])
            assert _num(r["size vs fp32"].split("/")[1]) == pytest.approx(ratio, abs=0.02), r


def _levers_bench():
    spec = importlib.util.spec_from_file_location("lightnn_bench_levers", ROOT / "benchmarks" / "training_levers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_training_levers_scores_a_run_and_rebuilds_its_table(tmp_path):
    # a tiny `fit(..., ema=...)` run: the four scores are evaluate()'s on last.pt / model.pt with and without the
    # mirror, the record keeps every epoch, and the table prints exactly those numbers
    from lightnn.checkpoint import load_any, read_checkpoint
    from lightnn.data import ImageData
    from lightnn.train import evaluate, fit

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(48) % 4
    imgs = torch.randint(0, 120, (48, 3, 8, 8), generator=g, dtype=torch.uint8)
    imgs[:, 0] += (labels * 40).to(torch.uint8)[:, None, None]
    imgs[:, 1, :, :4] += (labels * 30).to(torch.uint8)[:, None, None]  # not mirror-symmetric: TTA changes scores
    tr = ImageData(imgs[:32], labels[:32], [f"c{i}" for i in range(4)], source="tiny")
    va = ImageData(imgs[32:], labels[32:], [f"c{i}" for i in range(4)], source="tiny")
    run = tmp_path / "r20_tiny"
    torch.manual_seed(0)
    fit(create_model("resnet20", num_classes=4), tr, va, epochs=2, batch_size=16, lr=0.05, amp=False, ema=0.9,
        progress=False, verbose=False, output_dir=run,
        config={"model": "resnet20", "arch": {}, "val_fraction": 0.1, "split_seed": 0, "train_images": 32,
                "val_images": 16})
    assert "cutout: 0" in (run / "config.yaml").read_text()
    mod = _levers_bench()
    scores = mod.score_run(run, va, batch_size=5)
    for which, fname in (("raw", "last.pt"), ("ema", "model.pt")):
        m = load_any(str(run / fname))
        for tta, key in ((None, which), ("flip", which + "_flip")):
            want = evaluate(m, va, tta=tta, **read_checkpoint(run / fname)["meta"]["normalize"])
            assert scores[key]["top1"] == want["top1"] and scores[key]["n"] == 16, key
    rec = mod.make_record(run, scores)
    assert [e["epoch"] for e in rec["epochs"]] == [1, 2] and rec["config"]["ema"] == 0.9
    text = mod.levers_table([rec])
    rows = _table(text, "run")
    assert [r["weights"] for r in rows] == ["trained (last step)", "moving average (decay 0.9)"]
    assert rows[0]["run"] == "batch 16, lr 0.05" and rows[0]["train time"].startswith("2 epochs, ")
    for r, which in zip(rows, ("raw", "ema")):
        assert _num(r["val top-1 %"]) == round(scores[which]["top1"], 2)
        assert _num(r["with mirror TTA: top-1 %"]) == round(scores[which + "_flip"]["top1"], 2)
    # an unfinished run is refused with the reason
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text(lines[0] + "\n")
    with pytest.raises(SystemExit, match="1 of 2 epochs logged"):
        mod.make_record(run, scores)


def test_training_levers_section_is_its_committed_record():
    # BENCHMARKS.md "what a weight average and mirror TTA add": the table is rebuilt from the committed run record,
    # and each figure the notes quote as "<what> NN.NN%" is one of the record's scores
    import json

    path = RESULTS / "training_levers.md"
    mod = _levers_bench()
    records = mod.committed_records()
    if not path.exists() or not records:
        pytest.skip("benchmarks/results/training_levers.md or its records are not in this checkout")
    text = path.read_text()
    assert text.startswith(mod.levers_table(records).strip())
    # each quoted "<run label>: <weights> NN.NN%" in the notes is that run's score
    notes = text[text.index("## What the runs say"):]
    checked = 0
    for rec in records:
        s = rec["scores"]
        assert s["raw"]["n"] == rec["config"]["val_images"] == 5000
        assert rec["epochs"][-1]["val_top1"] == s["ema"]["top1"]
        assert rec["epochs"][-1]["val_top1_raw"] == s["raw"]["top1"]
        label = mod._run_label(rec["config"])
        for what, key in (("trained", "raw"), ("average", "ema"), ("trained + mirror", "raw_flip"),
                          ("average + mirror", "ema_flip")):
            for hit in re.finditer(re.escape(f"({label}: {what} ") + r"(\d+\.\d\d)%", notes):
                assert float(hit.group(1)) == round(s[key]["top1"], 2), hit.group(0)
                checked += 1
    assert checked >= 4
