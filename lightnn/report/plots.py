"""PNG plots for run reports (matplotlib, headless Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..utils.io import atomic_write


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (latency, accuracy) not dominated by another (lower latency AND higher accuracy)."""
    idx = []
    for i, (li, ai) in enumerate(points):
        dominated = any((lj <= li and aj >= ai) and (lj < li or aj > ai) for j, (lj, aj) in enumerate(points) if j != i)
        if not dominated:
            idx.append(i)
    return sorted(idx, key=lambda i: points[i][0])


def plot_pareto(rows: Sequence[dict], path: str | Path, *, latency_key: str = "latency_b32_ms",
                acc_key: str = "top1", macs_key: str = "macs", label_key: str = "name",
                title: str = "Accuracy vs latency (marker area ~ MACs)") -> Path:
    """Scatter accuracy vs measured latency with marker size proportional to MACs; the Pareto front is drawn."""
    plt = _plt()
    rows = [r for r in rows if r.get(latency_key) is not None and r.get(acc_key) is not None]
    fig, ax = plt.subplots(figsize=(7, 4.8), dpi=110)
    if rows:
        macs = [float(r.get(macs_key) or 0) for r in rows]
        mmax = max(macs) or 1.0
        pts = [(float(r[latency_key]), float(r[acc_key])) for r in rows]
        sizes = [40 + 560 * m / mmax for m in macs]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=sizes, alpha=0.55, c=range(len(rows)),
                   cmap="tab10", edgecolors="k", linewidths=0.6)
        for r, (x, y) in zip(rows, pts):
            ax.annotate(f"{r[label_key]}\n{float(r.get(macs_key) or 0) / 1e6:.1f}M MACs", (x, y), fontsize=7,
                        xytext=(6, 4), textcoords="offset points")
        front = pareto_front(pts)
        ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "k--", lw=1, label="Pareto front")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel(f"latency ({latency_key.replace('_', ' ')}, ONNX Runtime, ms)")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)
    return path


def plot_stages(rows: Sequence[dict], path: str | Path, *, title: str = "Size and latency per stage") -> Path:
    """Two bar charts side by side: size on disk (MB) and latency at batch 1 / 32 (ms) for each stage."""
    plt = _plt()
    labels = [r["stage"] for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.8), dpi=110)
    a1.bar(labels, [(r.get("size_bytes") or 0) / 1e6 for r in rows], color="#4C72B0")
    a1.set_ylabel("size on disk (MB)")
    a1.set_title("model file size", fontsize=10)
    x = range(len(rows))
    w = 0.38
    a2.bar([i - w / 2 for i in x], [r.get("latency_b1_ms") or 0 for r in rows], w, label="batch 1", color="#55A868")
    a2.bar([i + w / 2 for i in x], [r.get("latency_b32_ms") or 0 for r in rows], w, label="batch 32", color="#C44E52")
    a2.set_xticks(list(x))
    a2.set_xticklabels(labels)
    a2.set_ylabel("latency (ms, median)")
    a2.set_yscale("log")
    a2.set_title("ONNX Runtime latency", fontsize=10)
    a2.legend(fontsize=8)
    for ax in (a1, a2):
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)
    return path


def plot_search(trials: Sequence[dict], front: Sequence[dict], objectives: Sequence, path: str | Path, *,
                limits: Sequence[tuple[str, float]] = (), title: str = "Search trials and Pareto front") -> Path:
    """A study's complete trials (grey) and its Pareto front (red, numbered), first objective on y against the
    second on x (against the trial number when there is one objective); constraint bounds on the plotted metrics
    are dashed lines."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.8), dpi=110)
    y = objectives[0].name
    x = objectives[1].name if len(objectives) > 1 else None

    def xy(t: dict) -> tuple[float, float]:
        return (float(t["metrics"][x]) if x else float(t["number"])), float(t["metrics"][y])

    pts = [xy(t) for t in trials if y in t["metrics"] and (x is None or x in t["metrics"])]
    if pts:
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=22, c="0.6", label="trials")
    fr = sorted((xy(t) + (t["number"],) for t in front), key=lambda p: p[0])
    if fr:
        ax.plot([p[0] for p in fr], [p[1] for p in fr], "o--", c="tab:red", lw=1, ms=6, label="Pareto front")
        for px, py, n in fr:
            ax.annotate(str(n), (px, py), fontsize=7, xytext=(4, 4), textcoords="offset points")
    for metric, lim in limits:
        if metric == y:
            ax.axhline(lim, ls=":", c="k", lw=1, label=f"{metric} bound")
        elif metric == x:
            ax.axvline(lim, ls=":", c="k", lw=1, label=f"{metric} bound")
    ax.set_xlabel(x or "trial")
    ax.set_ylabel(y)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if pts or fr:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)
    return path
