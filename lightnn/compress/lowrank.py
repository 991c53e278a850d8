"""Low-rank factorization of a trained model's convs and linears by truncated SVD.

Each chosen layer W (out x in K K) becomes a rank-r pair (:class:`~lightnn.ops.lowrank.LowRankConv2d` /
:class:`~lightnn.ops.lowrank.LowRankLinear`). The rank is given per model, per layer, or picked from an energy
threshold: the smallest r keeping ``energy`` of sum(sigma^2) (the squared Frobenius norm). A layer is left alone
when factoring would not save parameters (r (in K^2 + out) >= out in K^2).

The edit is recorded as the plain-data transform ``{"kind": "lowrank", "ranks": {layer: r}}`` on
the model's record, so :func:`lightnn.checkpoint.load_model` rebuilds the factored model from a file.
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch
import torch.nn as nn

from ..errors import LightnnError
from ..models import record_edit
from ..transforms import set_module
from ..ops.lowrank import LowRankConv2d, LowRankLinear, svd

__all__ = ["factorize", "rank_for_energy", "LowRankReport", "LayerRow", "lowrank_table"]


@dataclass
class LayerRow:
    name: str
    type: str
    rank: int
    full_rank: int
    energy_kept: float  # fraction of sum(sigma^2) kept
    rel_error: float  # ||W - W_r||_F / ||W||_F
    params_before: int
    params_after: int
    macs_before: int | None  # per image, at the profiled input size
    macs_after: int | None
    skipped: str = ""  # why the layer was left alone ("" when factored)


@dataclass
class LowRankReport:
    rows: list[LayerRow] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    spec: dict = field(default_factory=dict)

    @property
    def macs_before(self) -> int | None:
        vals = [r.macs_before for r in self.rows]
        return None if any(v is None for v in vals) else sum(vals)

    @property
    def macs_after(self) -> int | None:
        vals = [r.macs_after for r in self.rows]
        return None if any(v is None for v in vals) else sum(vals)

    def to_dict(self) -> dict:
        return {"rows": [asdict(r) for r in self.rows], "params_before": self.params_before,
                "params_after": self.params_after, "macs_before": self.macs_before, "macs_after": self.macs_after,
                "spec": self.spec}

    def table(self) -> str:
        """Markdown table, one row per considered layer (MACs of the listed layers only)."""
        return lowrank_table(self.to_dict())


def lowrank_table(report: dict) -> str:
    """Markdown table of a :meth:`LowRankReport.to_dict` report (what :func:`lightnn.compress.stages.lowrank_stage`
    returns): one row per considered layer, then the model's parameter count before and after."""
    lines = ["| layer | type | rank / full | energy kept | rel. error | params before -> after | "
             "MACs before -> after | note |", "|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        macs = "-" if r["macs_before"] is None else f"{r['macs_before']:,} -> {r['macs_after']:,}"
        lines.append(f"| {r['name']} | {r['type']} | {r['rank']} / {r['full_rank']} | {r['energy_kept']:.4f} | "
                     f"{r['rel_error']:.4f} | {r['params_before']:,} -> {r['params_after']:,} | {macs} | "
                     f"{r['skipped']} |")
    lines.append(f"\nmodel params {report['params_before']:,} -> {report['params_after']:,}")
    return "\n".join(lines)


def rank_for_energy(singular_values: torch.Tensor, energy: float) -> int:
    """Smallest r with sum_{i<r} sigma_i^2 >= energy * sum sigma^2."""
    if not 0.0 < energy <= 1.0:
        raise LightnnError(f"low-rank: energy must be in (0, 1], got {energy}")
    e = singular_values.double() ** 2
    cum = torch.cumsum(e, 0) / e.sum().clamp_min(1e-300)
    return int(torch.searchsorted(cum, torch.tensor(energy, dtype=cum.dtype) - 1e-12).item()) + 1


def _eligible(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules()
            if (isinstance(m, nn.Conv2d) and m.groups == 1 and isinstance(m.padding, tuple)
                and m.padding_mode == "zeros") or isinstance(m, nn.Linear)}


def _matrix(m: nn.Module) -> torch.Tensor:
    return m.weight.reshape(m.weight.shape[0], -1)


def _output_positions(model: nn.Module, names: Sequence[str], input_size: Sequence[int]) -> dict[str, int]:
    """Per-image output positions (H' W' for convs, leading dims for linears) of each named layer."""
    positions: dict[str, int] = {}
    hooks = []
    for n in names:
        def hook(mod, inp, out, n=n):
            channels = out.shape[1] if isinstance(mod, nn.Conv2d) else out.shape[-1]
            positions[n] = out[0].numel() // channels
        hooks.append(model.get_submodule(n).register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters(), None)
        x = torch.zeros(1, *input_size[-3:], device=p.device if p is not None else "cpu",
                        dtype=p.dtype if p is not None else torch.float32)
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return positions


def factorize(model: nn.Module, *, rank: int | dict[str, int] | None = None, energy: float | None = None,
              layers: str | Sequence[str] = "*", exclude: Sequence[str] = (),
              input_size: Sequence[int] | None = None) -> LowRankReport:
    """Replace the chosen convs/linears of ``model`` (in place) by truncated-SVD rank-r factorizations.

    ``rank``: one rank for every layer, or ``{layer_name: rank}``; ``energy``: keep this fraction of each layer's
    squared singular values instead. ``layers``/``exclude``: wildcard patterns over module names (grouped convs
    are never eligible). ``input_size`` (C, H, W), default ``model.default_input_size``, sets the MACs columns.
    Returns a :class:`LowRankReport`; the spec is appended to the model's record.
    """
    if (rank is None) == (energy is None):
        raise LightnnError("low-rank: give exactly one of rank= or energy=")
    pats = [layers] if isinstance(layers, str) else list(layers)
    cands = {n: m for n, m in _eligible(model).items()
             if any(fnmatch.fnmatchcase(n, p) for p in pats) and not any(fnmatch.fnmatchcase(n, p) for p in exclude)}
    if isinstance(rank, dict):
        unknown = sorted(set(rank) - set(_eligible(model)))
        if unknown:
            raise LightnnError(f"low-rank: {unknown} are not factorable layers (ungrouped Conv2d or Linear) "
                               "of the model")
        cands = {n: m for n, m in cands.items() if n in rank}
    if not cands:
        raise LightnnError(f"low-rank: no ungrouped Conv2d/Linear layer matches {pats} (exclude {list(exclude)})")
    size = input_size or getattr(model, "default_input_size", None)
    positions = _output_positions(model, list(cands), size) if size is not None else {}

    report = LowRankReport(params_before=sum(p.numel() for p in model.parameters()))
    ranks: dict[str, int] = {}
    for name, m in cands.items():
        w2 = _matrix(m)
        full = min(w2.shape)
        usv = svd(w2)
        s = usv[1]
        if energy is not None:
            r = rank_for_energy(s, energy)
        else:
            r = min(int(rank[name] if isinstance(rank, dict) else rank), full)
            if r < 1:
                raise LightnnError(f"low-rank: rank for {name} must be >= 1, got {r}")
        e = (s.double() ** 2)
        kept = float(e[:r].sum() / e.sum().clamp_min(1e-300))
        out_f, in_f = w2.shape
        bias = 0 if m.bias is None else m.bias.numel()
        before, after = out_f * in_f + bias, r * (in_f + out_f) + bias
        pos = positions.get(name)
        row = LayerRow(name, type(m).__name__, r, full, kept, float((1 - kept) ** 0.5) if kept < 1 else 0.0,
                       before, after, None if pos is None else pos * out_f * in_f,
                       None if pos is None else pos * r * (in_f + out_f))
        if after >= before and not isinstance(rank, dict):
            row.params_after, row.macs_after, row.skipped = before, row.macs_before, "no saving at this rank"
        else:
            new = (LowRankConv2d.from_conv(m, r, usv) if isinstance(m, nn.Conv2d)
                   else LowRankLinear.from_linear(m, r, usv))
            set_module(model, name, new)
            ranks[name] = r
        report.rows.append(row)
    report.params_after = sum(p.numel() for p in model.parameters())
    report.spec = {"kind": "lowrank", "ranks": ranks}
    if ranks:
        record_edit(model, report.spec)
    return report


