"""benchmarks/records.py: the JSON record every benchmark writes, its writer and its renderer."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from lightnn.errors import LightnnError

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))

import records as R  # noqa: E402

CTX = {"machine": {"cpu": "Test CPU", "arch": "x86_64", "isa": ["avx2"], "cores": 2, "threads": 1},
       "date": "2026-01-02 03:04 UTC", "software": {"python": "3.11.7", "torch": "2.13.0+cpu"}}


def _cell_text(t: dict, label: str, row: int) -> str:
    j = [c["label"] for c in t["columns"]].index(label)
    return R.render_cell(t["columns"][j], t["rows"][row][j])


def _sample_record() -> dict:
    cols = [R.col("model"), R.col("ms, median (IQR)", "{median:.2f} ({iqr:.2f})", "ms", "r"),
            R.col("params", "{value:,}", "params", "r"), R.col("speed-up", "**{value:.2f}x**", "x", "r")]
    rows = [["a", {"median": 1.234, "iqr": 0.05}, 1234567, 1.0],
            ["b", {"median": 2.5, "iqr": 0.1, "fmt": "{median:.1f} ms"}, None, "skipped"]]
    return R.make_record("sample", "Sample", "python benchmarks/sample.py",
                         [{"text": "Intro."}, R.table("main", cols, rows), {"heading": "More", "level": 3},
                          {"text": "End."}], **CTX)


def test_record_renders_its_section_and_survives_a_round_trip(tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "sample.md").write_text("**Notes.** Hand-written.\n")
    path = R.write_record(_sample_record(), tmp_path, notes_dir=notes)
    assert path == tmp_path / "sample.json"
    rec = R.load_record(path)
    assert rec == {**_sample_record(), "notes": "**Notes.** Hand-written."}
    assert R.render(rec) == (
        "## Sample\n\n"
        "Produced by `python benchmarks/sample.py`. Machine: Test CPU (x86_64; ISA avx2), 2 CPUs, Python 3.11.7, "
        "torch 2.13.0+cpu, 1 intra-op thread(s); 2026-01-02 03:04 UTC.\nIntro.\n\n"
        "| model | ms, median (IQR) | params | speed-up |\n|---|---:|---:|---:|\n"
        "| a | 1.23 (0.05) | 1,234,567 | **1.00x** |\n| b | 2.5 ms | | skipped |\n\n"
        "### More\n\nEnd.\n\n**Notes.** Hand-written.\n")
    # one table row per line, so a re-run's diff shows the rows that changed
    lines = path.read_text(encoding="utf-8").splitlines()
    assert any(ln.strip().startswith('["a", {"median": 1.234') for ln in lines)
    assert R.rows(R.find_table(rec, "main"))[0] == {"model": "a", "ms, median (IQR)": {"median": 1.234, "iqr": 0.05},
                                                    "params": 1234567, "speed-up": 1.0}


def test_bad_records_are_refused_with_the_file_and_the_key(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    with pytest.raises(LightnnError, match=r"broken\.json: not JSON"):
        R.load_record(bad)
    rec = _sample_record()
    (tmp_path / "other.json").write_text(json.dumps(rec))
    with pytest.raises(LightnnError, match=r"other\.json: topic 'sample' differs from the file name"):
        R.load_record(tmp_path / "other.json")
    short = json.loads(json.dumps(rec))
    short["parts"][1]["table"]["rows"][1] = ["b"]
    with pytest.raises(LightnnError, match=r"parts\[1\]\.table: rows\[1\] has 1 cells, the table has 4 columns"):
        R.validate(short, "x.json")
    wrong = json.loads(json.dumps(rec))
    wrong["parts"][1]["table"]["rows"][0][1] = {"mean": 1.0}
    with pytest.raises(LightnnError, match=r"column 'ms, median \(IQR\)': cell \{'mean': 1.0\} does not fit"):
        R.validate(wrong, "x.json")
    with pytest.raises(LightnnError, match=r"x\.json: key 'title' missing"):
        R.validate({k: v for k, v in rec.items() if k != "title"}, "x.json")
    with pytest.raises(LightnnError, match=r"no table 'nope' \(it has: main\)"):
        R.find_table(rec, "nope")


def test_machine_info_names_the_cpu_its_isa_flags_and_the_threads():
    m = R.machine_info(3)
    assert m["cpu"] and m["threads"] == 3 and m["cores"] >= 1
    assert m["isa"] is None or set(m["isa"]) <= set(R.ISA_OF_INTEREST)
    ctx = R.start(2, "numpy")
    assert ctx["machine"]["threads"] == 2 and ctx["software"]["numpy"] and ctx["date"].endswith(" UTC")
    assert R.machine_text({"cpu": "x86_64", "arch": "x86_64", "cores": 2, "load": 0.84}, {"torch": "t"}) == \
        "x86_64 (x86_64), 2 CPUs, torch t, load average 0.8 at start"
    assert R.machine_text({"gpu": "NVIDIA H100"}, {"torch": "t"}) == "NVIDIA H100, torch t"
