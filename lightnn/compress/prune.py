"""Unstructured magnitude pruning (Deep Compression stage 1; Han et al. 2015 "Learning both weights and
connections", Han et al. 2016 Sec. 2).

The smallest-magnitude weights of every conv / linear layer are set to zero and kept at zero while the network is
retrained, so the survivors learn to compensate. Pruning is

- **per layer** (each layer loses its own fraction) or **global** (one magnitude threshold over all layers, so
  redundant layers such as large FC layers lose more than sensitive ones such as the first conv);
- **one-shot** or **gradual** with the AGP schedule of Zhu & Gupta (2017)::

      s_t = s_f + (s_i - s_f) * (1 - t / n) ** 3        (t = 0 .. n)

  which prunes fast while redundancy is high and slowly near the final sparsity ``s_f``.

Masks live in :class:`MagnitudePruner`; call :meth:`MagnitudePruner.step` after every optimizer step (or
:meth:`MagnitudePruner.attach` it to the optimizer, which does that automatically; with the project trainer,
``lightnn.train.fit(..., callbacks=[Masks(lambda: pruner.masks)])``) so pruned weights stay zero through
retraining.
"""

from __future__ import annotations

import fnmatch
from typing import Iterable, Mapping

import torch
import torch.nn as nn

from ..errors import LightnnError

__all__ = [
    "prunable_layers", "layer_kind", "resolve_setting", "agp_sparsity", "magnitude_masks", "apply_masks",
    "MagnitudePruner", "layer_density",
]

SparsitySpec = float | Mapping[str, float]


def layer_kind(module: nn.Module) -> str:
    """``"fc"`` for linear layers, ``"depthwise"`` for depthwise convs, ``"conv"`` for other convs."""
    if isinstance(module, nn.Linear):
        return "fc"
    if isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels \
            and module.out_channels % module.in_channels == 0:
        return "depthwise"
    return "conv"


def prunable_layers(model: nn.Module, layers: Iterable[str] | None = None) -> dict[str, nn.Module]:
    """The conv (1d/2d/3d) and linear layers of ``model`` by qualified name; ``layers`` restricts to those
    names or wildcard patterns."""
    found = {n: m for n, m in model.named_modules()
             if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) and m.weight is not None}
    if layers is None:
        return found
    pats = list(layers)
    out = {n: m for n, m in found.items() if any(fnmatch.fnmatchcase(n, p) for p in pats)}
    missing = [p for p in pats if not any(fnmatch.fnmatchcase(n, p) for n in found)]
    if missing:
        raise LightnnError(f"layer pattern(s) {missing} match no conv/linear layer; layers are: {list(found)[:12]}")
    return out


def resolve_setting(name: str, module: nn.Module, spec, what: str = "setting"):
    """Look up a per-layer setting: a plain value applies to every layer; a mapping is searched by exact layer
    name, then wildcard pattern, then layer kind (``conv`` / ``depthwise`` / ``fc``; ``depthwise`` falls back to
    ``conv``), then ``default``. Returns ``None`` when nothing matches."""
    if not isinstance(spec, Mapping):
        return spec
    if name in spec:
        return spec[name]
    for pat, v in spec.items():
        if any(ch in pat for ch in "*?[") and fnmatch.fnmatchcase(name, pat):
            return v
    kind = layer_kind(module)
    if kind in spec:
        return spec[kind]
    if kind == "depthwise" and "conv" in spec:
        return spec["conv"]
    return spec.get("default")


def agp_sparsity(t: float, n: float, final: float, initial: float = 0.0) -> float:
    """Automated gradual pruning (Zhu & Gupta 2017, Eq. 1): ``s_f + (s_i - s_f)(1 - t/n)^3``, clamped to t in [0, n]."""
    if n <= 0:
        return final
    frac = min(max(t / n, 0.0), 1.0)
    return final + (initial - final) * (1.0 - frac) ** 3


def _check_fraction(name: str, s: float) -> float:
    s = float(s)
    if not 0.0 <= s < 1.0:
        raise LightnnError(f"sparsity for layer {name!r} must be in [0, 1), got {s}")
    return s


def _smallest_mask(w: torch.Tensor, k: int) -> torch.Tensor:
    """Mask that zeroes exactly the ``k`` smallest-magnitude entries (ties broken by position, deterministic)."""
    mask = torch.ones(w.numel(), dtype=torch.bool, device=w.device)
    if k > 0:
        order = torch.argsort(w.detach().abs().flatten(), stable=True)
        mask[order[:k]] = False
    return mask.view_as(w)


def magnitude_masks(model: nn.Module, sparsity: SparsitySpec, *, scope: str = "layer",
                    layers: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """Boolean keep-masks for the weights of ``model``'s conv/linear layers.

    ``scope="layer"``: each layer loses ``sparsity`` (a float, or a mapping as in :func:`resolve_setting`) of
    its weights. ``scope="global"``: ``sparsity`` must be a float; the weights of all selected layers are ranked
    together and the smallest fraction is pruned. Layers whose setting resolves to ``None`` or 0 are skipped.
    """
    mods = prunable_layers(model, layers)
    if scope == "layer":
        masks = {}
        for name, m in mods.items():
            s = resolve_setting(name, m, sparsity)
            if s is None or float(s) == 0.0:
                continue
            s = _check_fraction(name, s)
            masks[name] = _smallest_mask(m.weight, int(round(s * m.weight.numel())))
        return masks
    if scope == "global":
        if isinstance(sparsity, Mapping):
            raise LightnnError("global pruning takes one sparsity for all layers, not a per-layer mapping")
        s = _check_fraction("<global>", sparsity)
        if not mods:
            return {}
        flat = torch.cat([m.weight.detach().abs().flatten() for m in mods.values()])
        k = int(round(s * flat.numel()))
        keep = _smallest_mask(flat, k)
        masks, start = {}, 0
        for name, m in mods.items():
            n = m.weight.numel()
            masks[name] = keep[start:start + n].view_as(m.weight).clone()
            start += n
        return masks
    raise LightnnError(f"pruning scope must be 'layer' or 'global', got {scope!r}")


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero the pruned weights in place."""
    mods = dict(model.named_modules())
    for name, mask in masks.items():
        w = mods[name].weight
        w.masked_fill_(~mask.to(w.device), 0.0)  # +0.0 (multiplying would leave -0.0 for negative weights)


def layer_density(model: nn.Module, layers: Iterable[str] | None = None) -> dict[str, float]:
    """Fraction of non-zero weights per conv/linear layer."""
    return {n: float((m.weight != 0).sum()) / m.weight.numel() for n, m in prunable_layers(model, layers).items()}


class MagnitudePruner:
    """Holds pruning masks for a model and keeps pruned weights at zero during retraining.

    ``schedule="oneshot"``: :meth:`update` prunes to the final sparsity at once. ``schedule="agp"``:
    :meth:`update(t, n)` moves along the AGP curve from ``initial_sparsity`` to ``sparsity``; masks only ever
    grow (a weight once pruned is zero and so stays among the smallest).
    """

    def __init__(self, model: nn.Module, sparsity: SparsitySpec, *, scope: str = "layer",
                 schedule: str = "oneshot", initial_sparsity: float = 0.0,
                 layers: Iterable[str] | None = None) -> None:
        if schedule not in ("oneshot", "agp"):
            raise LightnnError(f"pruning schedule must be 'oneshot' or 'agp', got {schedule!r}")
        self.model = model
        self.sparsity = sparsity
        self.scope = scope
        self.schedule = schedule
        self.initial_sparsity = float(initial_sparsity)
        self.layers = list(layers) if layers is not None else None
        self.masks: dict[str, torch.Tensor] = {}
        self._modules = prunable_layers(model, self.layers)
        self.current: SparsitySpec = 0.0

    def _scaled(self, t: float, n: float) -> SparsitySpec:
        if isinstance(self.sparsity, Mapping):
            return {k: agp_sparsity(t, n, float(v), min(self.initial_sparsity, float(v)))
                    for k, v in self.sparsity.items() if v is not None}
        return agp_sparsity(t, n, float(self.sparsity), min(self.initial_sparsity, float(self.sparsity)))

    def update(self, t: float = 1.0, n: float = 1.0) -> SparsitySpec:
        """Recompute masks for progress ``t`` of ``n`` (ignored for one-shot) and zero the pruned weights."""
        target = self.sparsity if self.schedule == "oneshot" else self._scaled(t, n)
        self.current = target
        self.masks = magnitude_masks(self.model, target, scope=self.scope, layers=self.layers)
        apply_masks(self.model, self.masks)
        return target

    @torch.no_grad()
    def step(self) -> None:
        """Re-zero pruned weights; call after every optimizer step."""
        for name, mask in self.masks.items():
            w = self._modules[name].weight
            if mask.device != w.device:
                self.masks[name] = mask = mask.to(w.device)
            w.masked_fill_(~mask, 0.0)

    def attach(self, optimizer: torch.optim.Optimizer):
        """Call :meth:`step` after every ``optimizer.step()``; returns the hook handle (``.remove()`` it)."""
        return optimizer.register_step_post_hook(lambda *_: self.step())

    def density(self) -> dict[str, float]:
        return {n: float(m.float().mean()) for n, m in self.masks.items()}
