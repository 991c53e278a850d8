"""Per-group pruning sensitivity and a per-layer ratio plan for a MACs or latency budget.

Sensitivity analysis (Li et al. 2017, "Pruning Filters for Efficient ConvNets", section 3.3): prune each channel
group alone at several ratios and measure the metric (validation accuracy) without fine-tuning. Groups whose
accuracy barely moves are pruned harder. The plan picks, for one accuracy-drop tolerance ``t``, the largest ratio
of every group whose (linearly interpolated) drop stays within ``t``, and bisects ``t`` until the pruned model
meets the budget: ``target_macs`` (fraction of the original multiply-adds to keep) or ``target_latency`` (fraction
of the original latency, measured with a caller-supplied function, e.g. ONNX Runtime).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
import torch.nn as nn

from ..errors import LightnnError
from .budget import budget_search
from .channel import build_dependency_graph, prune_channels, round_keep

if TYPE_CHECKING:
    from .channel import DependencyGraph

__all__ = ["sensitivity_analysis", "sensitivity_table", "plot_sensitivity", "write_sensitivity", "plan_ratios",
           "count_macs"]


def count_macs(model: nn.Module, example_input: torch.Tensor) -> float:
    """Multiply-adds of one forward pass (``lightnn.profile`` when available, else torch's FLOP counter / 2)."""
    was = model.training
    model.eval()
    try:
        try:
            from ..profile import profile

            return float(profile(model, tuple(example_input.shape), strict=False, inputs=example_input).macs)
        except (ImportError, AttributeError, TypeError):
            from torch.utils.flop_counter import FlopCounterMode

            with FlopCounterMode(display=False) as fc, torch.no_grad():
                model(example_input)
            return fc.get_total_flops() / 2
    finally:
        model.train(was)


def sensitivity_analysis(model: nn.Module, example_input: torch.Tensor, evaluate: Callable[[nn.Module], float],
                         ratios: Sequence[float] = (0.25, 0.5, 0.75), *, criterion: str | Callable = "l1",
                         round_to: int = 8, groups: Sequence[str] | None = None,
                         graph: DependencyGraph | None = None, exclude: Sequence[str] = (),
                         on_unsupported: str = "raise", progress: bool = False) -> dict[str, Any]:
    """Metric of the model with each prunable group pruned alone at each ratio (no fine-tuning).

    ``evaluate(model) -> float`` scores a model (higher is better, e.g. top-1 %). Returns
    ``{"baseline": m0, "ratios": [...], "criterion": ..., "groups": {name: {"channels": c, "layers": [...],
    "metric": [m(r) for r in ratios], "kept": [channels kept]}}}``.
    """
    graph = graph or build_dependency_graph(model, example_input, on_unsupported=on_unsupported, exclude=exclude)
    todo = [g for g in graph.prunable_groups() if groups is None or g.name in groups]
    if groups is not None and len(todo) != len(set(groups)):
        missing = set(groups) - {g.name for g in todo}
        raise LightnnError(f"unknown or unprunable channel groups: {sorted(missing)[:10]}")
    base = float(evaluate(model))
    out: dict[str, Any] = {"baseline": base, "ratios": [float(r) for r in ratios],
                           "criterion": criterion if isinstance(criterion, str) else criterion.__name__,
                           "groups": {}}
    it = todo
    if progress:
        from tqdm import tqdm

        it = tqdm(todo, desc="sensitivity", leave=False)
    for g in it:
        metrics, kept = [], []
        for r in ratios:
            pruned = prune_channels(model, example_input, {g.name: float(r)}, criterion=criterion,
                                    round_to=round_to, graph=graph)
            metrics.append(float(evaluate(pruned)))
            kept.append(round_keep(g, g.channels * (1 - r), round_to) * g.unit)
        out["groups"][g.name] = {"channels": g.channels, "layers": g.layers(), "metric": metrics, "kept": kept}
    return out


def sensitivity_table(sens: dict[str, Any]) -> str:
    """Markdown table: one row per group, the metric at each ratio (and the drop from the baseline)."""
    ratios = sens["ratios"]
    head = "| group | channels | " + " | ".join(f"prune {r:.0%}" for r in ratios) + " |"
    sep = "|---|---:|" + "---:|" * len(ratios)
    rows = [head, sep]
    for name, g in sens["groups"].items():
        cells = " | ".join(f"{m:.2f} ({m - sens['baseline']:+.2f})" for m in g["metric"])
        rows.append(f"| {name} | {g['channels']} | {cells} |")
    return f"baseline: {sens['baseline']:.2f}\n\n" + "\n".join(rows) + "\n"


def plot_sensitivity(sens: dict[str, Any], path: str | os.PathLike, title: str = "pruning sensitivity") -> Path:
    """Metric vs pruning ratio, one line per group (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..utils.io import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(8, 5))
    xs = [0.0] + list(sens["ratios"])
    for name, g in sens["groups"].items():
        ax.plot(xs, [sens["baseline"]] + g["metric"], marker="o", ms=3, lw=1, label=name)
    ax.set_xlabel("fraction of the group's channels pruned (alone, no fine-tuning)")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(sens["groups"]) <= 40:
        ax.legend(fontsize=5, ncol=2, loc="lower left")
    import io

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _curve(g: dict[str, Any], ratios: list[float], base: float) -> tuple[list[float], list[float]]:
    """(effective ratio, accuracy drop) points of one group, from the channel counts actually kept (rounding to
    multiples of 8 makes a nominal 25% of 16 channels prune nothing and 30% prune half)."""
    pts = {0.0: 0.0}
    for r, m, k in zip(ratios, g["metric"], g.get("kept", [None] * len(ratios))):
        eff = r if k is None else 1.0 - k / g["channels"]
        pts.setdefault(round(eff, 6), base - m)
    xs = sorted(pts)
    return xs, [pts[x] for x in xs]


def _drop_at(curve: tuple[list[float], list[float]], r: float) -> float:
    """Accuracy drop at effective ratio ``r``, linearly interpolated; beyond the last measured point: infinite."""
    xs, ds = curve
    if r > xs[-1] + 1e-9:
        return float("inf")
    i = max(j for j in range(len(xs)) if xs[j] <= r + 1e-9)
    if i == len(xs) - 1:
        return ds[i]
    w = (r - xs[i]) / (xs[i + 1] - xs[i])
    return ds[i] * (1 - w) + ds[i + 1] * w


# A tiny cost per unit of ratio breaks ties between equally harmless ratios, so a flat sensitivity curve gives a
# uniform plan that just meets the budget rather than every group at its largest measured ratio.
_TIE = 1e-3


def plan_ratios(model: nn.Module, example_input: torch.Tensor, sens: dict[str, Any], *,
                target_macs: float | None = None, target_latency: float | None = None,
                latency_fn: Callable[[nn.Module], float] | None = None, criterion: str | Callable = "l1",
                round_to: int = 8, step: float = 0.05, graph: DependencyGraph | None = None,
                iters: int = 20) -> dict[str, Any]:
    """Per-group ratios meeting a budget with the least predicted accuracy drop (see the module docstring).

    Exactly one of ``target_macs`` / ``target_latency`` (fractions of the unpruned model's cost to keep);
    ``latency_fn(model) -> ms`` is required for a latency budget. The tolerance is bisected by
    :func:`lightnn.compress.budget.budget_search` in ``iters`` steps. Returns ``{"ratios": {group: r},
    "tolerance": t, "cost": achieved fraction, "predicted_drop": sum of per-group drops, "budget": {...},
    "search": [{"tolerance", "cost", "feasible"} per tolerance tried]}``.
    """
    if (target_macs is None) == (target_latency is None):
        raise LightnnError("give exactly one of target_macs / target_latency")
    target = float(target_macs if target_macs is not None else target_latency)
    if not 0.0 < target < 1.0:
        raise LightnnError(f"the budget must be a fraction in (0, 1) of the original cost, got {target}")
    if target_latency is not None and latency_fn is None:
        raise LightnnError("a latency budget needs latency_fn(model) -> milliseconds")
    graph = graph or build_dependency_graph(model, example_input)
    cost_fn = (lambda m: count_macs(m, example_input)) if target_macs is not None else latency_fn
    c0 = cost_fn(model)
    ratios_list = list(sens["ratios"])
    base = sens["baseline"]
    groups = {g.name: g for g in graph.prunable_groups()}
    unknown = set(sens["groups"]) - set(groups)
    if unknown:
        raise LightnnError(f"sensitivity lists channel groups this model does not have: {sorted(unknown)[:5]}")
    grid = [round(step * k, 6) for k in range(1, int(0.95 / step + 1e-9) + 1)]
    # per group: the nominal ratios that give distinct kept widths, with their effective ratio and predicted drop
    options: dict[str, list[tuple[float, float]]] = {}
    for n, gs in sens["groups"].items():
        g, curve, seen = groups[n], _curve(gs, ratios_list, base), set()
        opts = []
        for r in grid:
            keep = round_keep(g, g.channels * (1 - r), round_to)
            if keep in seen or keep >= g.size:
                continue
            seen.add(keep)
            eff = 1.0 - keep / g.size
            opts.append((r, max(0.0, _drop_at(curve, eff)) + _TIE * eff))
        options[n] = opts

    def plan(tol: float) -> dict[str, float]:
        out = {}
        for n, opts in options.items():
            best = 0.0
            for r, d in opts:
                if d > tol:
                    break  # monotone plan: once a width costs too much accuracy, narrower ones are not considered
                best = r
            if best > 0:
                out[n] = best
        return out

    costs: dict[tuple, float] = {}

    def cost(rs: dict[str, float]) -> float:
        key = tuple(sorted(rs.items()))
        if not rs:
            return 1.0
        if key not in costs:  # nearby tolerances often give the same plan: prune (and time) it once
            pruned = prune_channels(model, example_input, rs, criterion=criterion, round_to=round_to, graph=graph)
            costs[key] = cost_fn(pruned) / c0
        return costs[key]

    finite = [d for opts in options.values() for _, d in opts if d != float("inf")]
    # bisect the tolerance: the smallest one meeting the budget
    found = budget_search(plan, cost, target, -1e-9, max(finite, default=0.0) + 1e-6, iters,
                          infeasible=lambda c: f"even pruning every group to its largest measured ratio keeps "
                                               f"{c:.0%} of the cost; the budget {target:.0%} needs larger ratios "
                                               "in the sensitivity analysis")
    tol, c, rs = found.knob, found.cost, found.value
    pred = sum(next(d for r2, d in options[n] if r2 == r) for n, r in rs.items())
    return {"ratios": rs, "tolerance": tol, "cost": c, "predicted_drop": pred,
            "budget": {"macs" if target_macs is not None else "latency": target},
            "search": [{"tolerance": t["knob"], "cost": t["cost"], "feasible": t["feasible"]} for t in found.trace]}


def write_sensitivity(sens: dict[str, Any], folder: str | os.PathLike, title: str) -> list[Path]:
    """``sensitivity.json`` (the analysis), ``sensitivity.md`` (:func:`sensitivity_table`) and ``sensitivity.png``
    (:func:`plot_sensitivity`) in ``folder``; returns their paths."""
    from ..utils.io import atomic_write_json, atomic_write_text

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    return [atomic_write_json(out / "sensitivity.json", sens),
            atomic_write_text(out / "sensitivity.md", sensitivity_table(sens)),
            plot_sensitivity(sens, out / "sensitivity.png", title=title)]
