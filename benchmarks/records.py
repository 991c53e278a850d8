"""Benchmark records: the JSON every script in ``benchmarks/`` writes (``benchmarks/results/<topic>.json``), its one
writer and its one renderer (record -> the markdown section of BENCHMARKS.md).

A record (``schema`` 1) is one JSON object:

- ``topic``: the file's stem (``"zoo"``); ``title``: the section heading; ``level``: its markdown level (1-3);
- ``command``: the command that produced it (rendered "Produced by `...`"), or null;
- ``date``: when it was measured (``"YYYY-MM-DD HH:MM UTC"``; older records may give the day only, several
  comma-separated dates when it gathers several runs), or null when each part names its own;
- ``machine``: where its figures were measured, or null: ``cpu`` (model name), ``arch``, ``isa`` (the SIMD / matrix
  flags the CPU reports, null when not recorded), ``cores``, ``threads`` (intra-op threads), ``platform``, ``load``
  (1-minute load average at the start), ``gpu`` (a device name when trained on one); any may be null;
- ``software``: versions (``python``, ``torch``, ``onnxruntime``, ``torchvision`` ... as they apply);
- ``parts``: the section body in order, each ``{"text": markdown}``, ``{"heading": text, "level": n}`` or
  ``{"table": table}``;
- ``notes``: the hand-written analysis, copied from ``benchmarks/notes/<topic>.md`` by :func:`write_record`;
- ``data`` (optional, not rendered): values a script needs to extend its record later (``training_runs``: the
  recipes of its kept rows).

A table is ``{"id": name, "columns": [...], "rows": [[cell, ...], ...]}``. A column is ``{"label": header,
"fmt": format string or null, "unit": unit or {field: unit} or null, "align": "l" | "r"}``. A cell is null (empty),
a string (printed as is), a number (``fmt`` gets it as ``value``) or an object of named values such as
``{"median": 0.548, "iqr": 0.016}`` or ``{"median": 1.002, "p25": 0.986, "p75": 1.017}`` (``fmt`` gets its fields;
a ``fmt`` or ``unit`` key in the cell overrides the column's for that cell). Timed cells carry their median and
spread, so a test or a script reads numbers, never markdown.

Usage from a script in ``benchmarks/``::

    from records import col, make_record, start, table, write_record
    ctx = start(threads=1)                      # machine, date and versions, before the timing starts
    ...                                         # measure
    rec = make_record("zoo", "Model zoo ...", "python benchmarks/zoo.py", [{"text": ...}, table(...)], **ctx)
    write_record(rec)
"""

from __future__ import annotations

import json
import os
import platform
import string
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
NOTES = ROOT / "benchmarks" / "notes"
SCHEMA = 1

__all__ = ["col", "table", "start", "make_record", "machine_info", "software_info", "isa_flags", "cpu_model", "today",
           "write_record", "load_record", "load_records", "validate", "render", "render_cell", "render_table",
           "machine_text", "tables", "find_table", "rows", "dumps", "RESULTS", "NOTES", "SCHEMA"]

from lightnn.utils.machine import ISA_OF_INTEREST, cpu_model, isa_flags  # noqa: E402,F401  (one CPU reader)


def _error(msg: str) -> Exception:
    from lightnn.errors import LightnnError

    return LightnnError(msg)


def col(label: str, fmt: str | None = None, unit: str | Mapping[str, str] | None = None,
        align: str = "l") -> dict[str, Any]:
    """A column: ``fmt`` (``"{value:.2f}"``, ``"{median:.3f} ({iqr:.3f})"``) renders its numeric cells; without
    it the column holds strings."""
    if align not in ("l", "r"):
        raise _error(f"column {label!r}: align must be 'l' or 'r', got {align!r}")
    return {"label": label, "fmt": fmt, "unit": unit, "align": align}


def table(table_id: str, columns: Sequence[Mapping[str, Any]], rows: Iterable[Sequence[Any]]) -> dict[str, Any]:
    """A table part: ``{"table": {...}}`` with one cell per column in every row."""
    t = {"id": table_id, "columns": [dict(c) for c in columns], "rows": [list(r) for r in rows]}
    _check_table(t, f"table {table_id!r}")
    return {"table": t}


def today() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def machine_info(threads: int | None = None) -> dict[str, Any]:
    """This machine as a record's ``machine``: CPU model, architecture, ISA flags, cores, intra-op threads,
    platform and the 1-minute load average now (measurements share the machine with other jobs)."""
    import torch

    load = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    return {"cpu": cpu_model(), "arch": platform.machine(), "isa": isa_flags(), "cores": os.cpu_count(),
            "threads": threads if threads is not None else torch.get_num_threads(),
            "platform": platform.platform(terse=True), "load": load}


def software_info(*extra: str) -> dict[str, str]:
    """Python and torch versions, and those of the ``extra`` packages that are importable."""
    import importlib

    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for name in extra:
        try:
            out[name] = importlib.import_module(name).__version__
        except ImportError:
            continue
    return out


def start(threads: int | None = None, *software: str) -> dict[str, Any]:
    """What a record says about where and when it was measured, taken when the measurement starts (the load
    average is the one at the start): ``make_record(..., **start(1, "onnxruntime"))``."""
    return {"machine": machine_info(threads), "date": today(), "software": software_info(*software)}


def make_record(topic: str, title: str, command: str | None, parts: Sequence[Mapping[str, Any]], *,
                machine: Mapping[str, Any] | None, date: str | None, software: Mapping[str, str] | None = None,
                level: int = 2, notes: str = "") -> dict[str, Any]:
    """A checked record (see the module docstring); ``machine`` / ``date`` usually come from :func:`start`."""
    rec = {"schema": SCHEMA, "topic": topic, "title": title, "level": level, "command": command, "date": date,
           "machine": dict(machine) if machine else None, "software": dict(software or {}),
           "parts": [dict(p) for p in parts], "notes": notes}
    validate(rec, f"record {topic!r}")
    return rec


# --- checking -----------------------------------------------------------------------------------------------------

_REQUIRED = {"schema": int, "topic": str, "title": str, "level": int, "parts": list}


def _check_table(t: Mapping[str, Any], where: str) -> None:
    cols = t.get("columns")
    if not isinstance(t.get("id"), str) or not isinstance(cols, list) or not isinstance(t.get("rows"), list):
        raise _error(f"{where}: a table needs 'id' (string), 'columns' and 'rows' (lists)")
    for j, c in enumerate(cols):
        if not isinstance(c, Mapping) or not isinstance(c.get("label"), str):
            raise _error(f"{where}: columns[{j}] needs a 'label'")
        if c.get("align", "l") not in ("l", "r"):
            raise _error(f"{where}: column {c['label']!r} has align {c.get('align')!r} (expected 'l' or 'r')")
    for i, r in enumerate(t["rows"]):
        if not isinstance(r, list) or len(r) != len(cols):
            n = len(r) if isinstance(r, list) else type(r).__name__
            raise _error(f"{where}: rows[{i}] has {n} cells, the table has {len(cols)} columns")
        for j, cell in enumerate(r):
            try:
                render_cell(cols[j], cell)
            except (KeyError, ValueError, TypeError, IndexError) as e:
                fmt = (cell.get("fmt") if isinstance(cell, dict) else None) or cols[j].get("fmt")
                raise _error(f"{where}: rows[{i}] column {cols[j]['label']!r}: cell {cell!r} does not fit "
                             f"format {fmt!r} ({type(e).__name__}: {e})") from None


def validate(rec: Any, where: str = "record") -> dict[str, Any]:
    """``rec`` if it is a well-formed record; otherwise a :class:`~lightnn.errors.LightnnError` naming the key."""
    if not isinstance(rec, dict):
        raise _error(f"{where}: a record is a JSON object, got {type(rec).__name__}")
    for key, typ in _REQUIRED.items():
        if not isinstance(rec.get(key), typ):
            raise _error(f"{where}: key {key!r} missing or not a {typ.__name__}")
    if rec["schema"] != SCHEMA:
        raise _error(f"{where}: schema {rec['schema']} is not the supported {SCHEMA}")
    for key in ("machine", "software", "data"):
        if rec.get(key) is not None and not isinstance(rec[key], dict):
            raise _error(f"{where}: key {key!r} must be an object or null")
    for key in ("command", "date", "notes"):
        if rec.get(key) is not None and not isinstance(rec[key], str):
            raise _error(f"{where}: key {key!r} must be a string or null")
    for i, p in enumerate(rec["parts"]):
        w = f"{where}: parts[{i}]"
        if not isinstance(p, dict) or len({"text", "heading", "table"} & set(p)) != 1:
            raise _error(f"{w} needs exactly one of 'text', 'heading', 'table'")
        if "table" in p:
            _check_table(p["table"], f"{w}.table")
        elif not isinstance(p.get("text", p.get("heading")), str):
            raise _error(f"{w}: text and headings are strings")
    return rec


def load_record(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check one record; a bad file raises a LightnnError naming it."""
    p = Path(path)
    try:
        rec = json.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise _error(f"{p}: cannot read the benchmark record ({e.strerror or e})") from None
    except json.JSONDecodeError as e:
        raise _error(f"{p}: not JSON ({e.msg} at line {e.lineno})") from None
    validate(rec, str(p))
    if rec["topic"] != p.stem:
        raise _error(f"{p}: topic {rec['topic']!r} differs from the file name")
    return rec


def load_records(results: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """Every record in ``results`` (default ``benchmarks/results/``), by topic."""
    return {p.stem: load_record(p) for p in sorted(Path(results or RESULTS).glob("*.json"))}


# --- writing ------------------------------------------------------------------------------------------------------

def dumps(obj: Any, indent: int = 0, width: int = 118, key: str | None = None) -> str:
    """JSON with a table row per line and every other list or object on one line when it fits in ``width``,
    nested otherwise, so a diff of a re-run shows the rows that changed."""
    flat = json.dumps(obj, ensure_ascii=False)
    pad = " " * (indent + 1)
    if key == "rows" and isinstance(obj, list) and obj:
        return "[\n" + ",\n".join(pad + json.dumps(r, ensure_ascii=False) for r in obj) + "\n" + " " * indent + "]"
    if len(flat) + indent <= width or not isinstance(obj, (dict, list)) or not obj:
        return flat
    if isinstance(obj, dict):
        items = [f"{pad}{json.dumps(k, ensure_ascii=False)}: {dumps(v, indent + 1, width, k)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    return "[\n" + ",\n".join(pad + dumps(v, indent + 1, width) for v in obj) + "\n" + " " * indent + "]"


def write_record(rec: Mapping[str, Any], results: str | os.PathLike | None = None,
                 notes_dir: str | os.PathLike | None = None) -> Path:
    """Write ``<results>/<topic>.json`` atomically (default ``benchmarks/results/``) and return its path. The
    hand-written analysis in ``benchmarks/notes/<topic>.md``, when there is one, becomes the record's ``notes``, so
    re-running a script keeps it."""
    from lightnn.utils.io import atomic_write_bytes

    rec = dict(rec)
    notes = Path(notes_dir or NOTES) / f"{rec['topic']}.md"
    if notes.is_file():
        rec["notes"] = notes.read_text(encoding="utf-8").strip()
    validate(rec, f"record {rec.get('topic')!r}")
    out = Path(results or RESULTS) / f"{rec['topic']}.json"
    return atomic_write_bytes(out, (dumps(rec) + "\n").encode("utf-8"))


# --- reading ------------------------------------------------------------------------------------------------------

def tables(rec: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [p["table"] for p in rec["parts"] if "table" in p]


def find_table(rec: Mapping[str, Any], table_id: str) -> dict[str, Any]:
    """The record's table ``table_id``; a LightnnError names the record and the ids it has."""
    for t in tables(rec):
        if t["id"] == table_id:
            return t
    raise _error(f"record {rec.get('topic')!r}: no table {table_id!r} (it has: "
                 f"{', '.join(t['id'] for t in tables(rec)) or 'none'})")


def rows(t: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The table's rows as dicts keyed by column label (the typed cells, not their text)."""
    labels = [c["label"] for c in t["columns"]]
    return [dict(zip(labels, r)) for r in t["rows"]]


# --- rendering ----------------------------------------------------------------------------------------------------

def render_cell(column: Mapping[str, Any], cell: Any) -> str:
    """A cell's markdown text: strings as they are, numbers and named values through the format."""
    if cell is None:
        return ""
    if isinstance(cell, str):
        return cell
    if isinstance(cell, bool):
        raise TypeError("a cell is not a boolean (write 'yes' / 'no')")
    values = dict(cell) if isinstance(cell, dict) else {"value": cell}
    fmt = values.pop("fmt", None) or column.get("fmt")
    values.pop("unit", None)
    if fmt is None:
        raise ValueError(f"column {column.get('label')!r} has no format for a non-string cell")
    return string.Formatter().vformat(fmt, (), values)


def render_table(t: Mapping[str, Any]) -> str:
    cols = t["columns"]
    lines = ["| " + " | ".join(c["label"] for c in cols) + " |",
             "|" + "|".join("---:" if c.get("align") == "r" else "---" for c in cols) + "|"]
    for r in t["rows"]:
        lines.append("|" + "|".join(f" {render_cell(c, v)} " if v not in (None, "") else " "
                                    for c, v in zip(cols, r)) + "|")
    return "\n".join(lines)


def machine_text(machine: Mapping[str, Any], software: Mapping[str, str] | None = None) -> str:
    """``AMD EPYC 7B13 (x86_64; ISA avx2, fma), 2 CPUs, Linux-..., Python 3.11.7, torch 2.13.0+cpu, 1 intra-op
    thread(s), load average 0.8 at start``: the fields the record has, in this order."""
    sw = software or {}
    desc = machine.get("cpu") or ""
    inner = [machine["arch"]] if machine.get("arch") else []
    if machine.get("isa"):
        inner.append("ISA " + ", ".join(machine["isa"]))
    if inner:
        desc += f" ({'; '.join(inner)})"
    if machine.get("gpu"):
        desc = f"{desc}, {machine['gpu']}" if desc else machine["gpu"]
    parts = [desc] if desc else []
    if machine.get("cores") is not None:
        parts.append(f"{machine['cores']} CPUs")
    if machine.get("platform"):
        parts.append(machine["platform"])
    if sw.get("python"):
        parts.append(f"Python {sw['python']}")
    if sw.get("torch"):
        parts.append(f"torch {sw['torch']}")
    if machine.get("threads") is not None:
        parts.append(f"{machine['threads']} intra-op thread(s)")
    if machine.get("load") is not None:
        parts.append(f"load average {machine['load']:.1f} at start")
    return ", ".join(parts)


def _provenance(rec: Mapping[str, Any]) -> str:
    out = []
    if rec.get("command"):
        out.append(f"Produced by `{rec['command']}`.")
    if rec.get("machine"):
        out.append(f"Machine: {machine_text(rec['machine'], rec.get('software'))}"
                   + (f"; {rec['date']}." if rec.get("date") else "."))
    elif rec.get("date"):
        out.append(f"Measured {rec['date']}.")
    return " ".join(out)


def render(rec: Mapping[str, Any]) -> str:
    """The record's BENCHMARKS.md section: heading, provenance (command, machine, date) opening the first
    paragraph, the parts in order, then the notes."""
    blocks = []
    for p in rec["parts"]:
        if "table" in p:
            blocks.append(render_table(p["table"]))
        elif "heading" in p:
            blocks.append(f"{'#' * p.get('level', rec['level'] + 1)} {p['heading']}")
        else:
            blocks.append(p["text"].strip())
    prov = _provenance(rec)
    if prov:
        if rec["parts"] and "text" in rec["parts"][0]:
            blocks[0] = prov + "\n" + blocks[0]
        else:
            blocks.insert(0, prov)
    if rec.get("notes"):
        blocks.append(rec["notes"].strip())
    return "\n\n".join([f"{'#' * rec['level']} {rec['title']}"] + blocks) + "\n"
