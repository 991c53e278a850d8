"""Render BENCHMARKS.md from the JSON records in benchmarks/results/ (each written by its benchmark script)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from records import load_records, render as render_record  # noqa: E402

ORDER = ["guidelines", "igc_width", "zoo", "torchvision_side_by_side", "training", "training_runs", "training_levers",
         "training_recipes", "training_compile", "deploy", "latency_model", "deep_compression", "channel_pruning", "channel_block",
         "search_storage", "search_compress", "run"]
HEAD = ("# Benchmarks\n\nEvery table here is printed by a script in `benchmarks/` (named in each section), which "
        "writes its measurements as a JSON record to `benchmarks/results/<topic>.json`; this file is rendered from "
        "those records. Speed figures are ratios against a reference measured in the same run on the same machine "
        "(median and spread over repeated runs), because the machine is shared and noisy.\n\n")


def render(results: Path | None = None) -> tuple[str, int]:
    """BENCHMARKS.md's text from the records in ``results`` (default benchmarks/results/) and the number of
    sections; known topics come first, in :data:`ORDER`, the others after them by name."""
    recs = load_records(results)
    topics = sorted(recs, key=lambda t: (ORDER.index(t) if t in ORDER else len(ORDER), t))
    body = "\n\n".join(render_record(recs[t]).strip() for t in topics)
    return HEAD + body + "\n", len(topics)


def main() -> None:
    from lightnn.utils.io import atomic_write_bytes

    text, n = render()
    atomic_write_bytes(ROOT / "BENCHMARKS.md", text.encode("utf-8"))
    print(f"BENCHMARKS.md: {n} sections")


if __name__ == "__main__":
    main()
