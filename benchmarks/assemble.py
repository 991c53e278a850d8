"""Concatenate benchmarks/results/*.md (each written by its benchmark script) into BENCHMARKS.md."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["guidelines", "igc_width", "zoo", "torchvision_side_by_side", "training", "training_runs", "training_levers", "training_recipes", "training_compile",
         "deploy", "deep_compression", "channel_pruning", "channel_block", "run"]


def render(results: Path | None = None) -> tuple[str, int]:
    """BENCHMARKS.md's text from ``results`` (default benchmarks/results/) and the number of sections."""
    res = results or ROOT / "benchmarks" / "results"
    parts = sorted(res.glob("*.md"), key=lambda p: (ORDER.index(p.stem) if p.stem in ORDER else 99, p.stem))
    head = ("# Benchmarks\n\nEvery table here is printed by a script in `benchmarks/` (named in each section) and "
            "copied from `benchmarks/results/`. Speed figures are ratios against a reference measured in the same "
            "run on the same machine (median and spread over repeated runs), because the machine is shared and "
            "noisy.\n\n")
    body = "\n\n".join(p.read_text().strip() for p in parts)
    return head + body + "\n", len(parts)


def main() -> None:
    text, n = render()
    (ROOT / "BENCHMARKS.md").write_text(text)
    print(f"BENCHMARKS.md: {n} sections")


if __name__ == "__main__":
    main()
