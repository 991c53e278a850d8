"""Trained quantization by weight sharing (Deep Compression stage 2; Han et al. 2016, Sec. 3).

Per layer, the surviving (non-zero) weights are clustered by 1-D k-means into ``k = 2^bits - 1`` shared values;
code 0 is reserved for zero, which the sparse storage uses as the "filler" entry (see :mod:`.encode`). The paper
compares Forgy (random), density-based and **linear** centroid initialization and finds linear best, because it
keeps the few large weights that matter most (Sec. 3.2, Fig. 4); linear is the default here.

Centroids are then fine-tuned: every weight is ``centroids[index]``, so autograd gives each centroid the **sum of
the gradients of its member weights** (paper Eq. 3, Fig. 3). :class:`SharedWeight` is a
:mod:`torch.nn.utils.parametrize` parametrization holding the centroids (trainable) and the index tensor (a
buffer); :func:`finalize_sharing` bakes the shared values back into plain weights.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from ..errors import LightnnError
from .prune import prunable_layers, resolve_setting

__all__ = ["kmeans_1d", "SharedWeight", "share_weights", "finalize_sharing", "centroid_parameters",
           "DEFAULT_BITS"]

DEFAULT_BITS = {"conv": 8, "fc": 5}  # the paper's AlexNet / VGG-16 setting (Table 6: 8/5 loses nothing)


@torch.no_grad()
def kmeans_1d(values: torch.Tensor, k: int, *, init: str = "linear", iters: int = 50,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on scalars. Returns ``(centroids[k'], assignment[len(values)])`` with k' <= k.

    In 1-D the nearest centroid is found exactly by bucketing against the midpoints of sorted centroids.
    ``init``: ``"linear"`` (evenly spaced over [min, max], the paper's best), ``"density"`` (evenly spaced over
    the CDF, i.e. quantiles) or ``"random"`` (Forgy: k distinct values picked at random).
    """
    v = values.detach().flatten().float()
    if v.numel() == 0:
        return torch.zeros(0, dtype=torch.float32, device=v.device), torch.zeros(0, dtype=torch.long, device=v.device)
    uniq = torch.unique(v)
    if uniq.numel() <= k:  # fewer distinct values than clusters: every value is its own centroid, exactly
        return uniq.clone(), torch.bucketize(v, uniq)
    lo, hi = v.min(), v.max()
    if init == "linear":
        c = torch.linspace(0, 1, k, device=v.device) * (hi - lo) + lo
    elif init == "density":
        c = torch.quantile(v[: 2**24] if v.numel() > 2**24 else v, torch.linspace(0, 1, k, device=v.device))
    elif init == "random":
        perm = torch.randperm(uniq.numel(), generator=generator, device="cpu")[:k].to(v.device)
        c = uniq[perm]
    else:
        raise LightnnError(f"k-means init must be 'linear', 'density' or 'random', got {init!r}")
    c = torch.sort(c).values
    assign = None
    for _ in range(iters):
        mids = (c[1:] + c[:-1]) / 2
        new = torch.bucketize(v, mids)
        if assign is not None and torch.equal(new, assign):
            break
        assign = new
        sums = torch.zeros(k, dtype=torch.float64, device=v.device).index_add_(0, assign, v.double())
        cnt = torch.bincount(assign, minlength=k)
        c = torch.where(cnt > 0, (sums / cnt.clamp(min=1)).float(), c)  # empty clusters keep their centroid
        c = torch.sort(c).values
    mids = (c[1:] + c[:-1]) / 2
    assign = torch.bucketize(v, mids)
    # drop empty clusters so every code is used
    used = torch.unique(assign)
    remap = torch.full((k,), -1, dtype=torch.long, device=v.device)
    remap[used] = torch.arange(used.numel(), device=v.device)
    return c[used].contiguous(), remap[assign]


class _CodebookLookup(torch.autograd.Function):
    """``centroids[index]`` at the kept positions, with a deterministic backward: member gradients are gathered in
    cluster order and summed per cluster by a float64 prefix sum (no atomics on a handful of addresses, which on a
    GPU serialize when hundreds of thousands of weights share 32 centroids)."""

    @staticmethod
    def forward(ctx, centroids, index, mask, perm, ends):
        ctx.save_for_backward(perm, ends)
        ctx.k = centroids.numel()
        w = centroids[index]
        return torch.where(mask, w, torch.zeros((), dtype=w.dtype, device=w.device))

    @staticmethod
    def backward(ctx, grad):
        perm, ends = ctx.saved_tensors
        g = grad.reshape(-1)[perm].double()
        csum = torch.cat([torch.zeros(1, dtype=g.dtype, device=g.device), torch.cumsum(g, 0)])
        at = csum[ends]
        gc = torch.diff(at, prepend=csum[:1]).to(grad.dtype)
        return gc, None, None, None, None


class SharedWeight(nn.Module):
    """Parametrization ``weight = where(mask, centroids[index], 0)``.

    The incoming original weight is ignored: the layer's weight *is* the codebook lookup, so the gradient that
    reaches ``centroids`` is the member-wise sum of the weight gradient (Han et al. 2016, Eq. 3).
    """

    def __init__(self, centroids: torch.Tensor, index: torch.Tensor, mask: torch.Tensor, bits: int) -> None:
        super().__init__()
        self.centroids = nn.Parameter(centroids.detach().clone().float())
        self.register_buffer("index", index.detach().clone().long())
        self.register_buffer("mask", mask.detach().clone().bool())
        # kept positions sorted by cluster, and where each cluster's run ends (for the backward's segment sums)
        pos = torch.nonzero(self.mask.reshape(-1)).squeeze(1)
        cl = self.index.reshape(-1)[pos]
        order = torch.argsort(cl, stable=True)
        self.register_buffer("perm", pos[order], persistent=False)
        counts = torch.bincount(cl, minlength=self.centroids.numel())
        self.register_buffer("ends", torch.cumsum(counts, 0), persistent=False)
        self.bits = bits

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        w = _CodebookLookup.apply(self.centroids, self.index, self.mask, self.perm, self.ends)
        return w.to(original.dtype)


def share_weights(model: nn.Module, bits: int | Mapping[str, int] | None = None, *, init: str = "linear",
                  iters: int = 50, layers: Iterable[str] | None = None) -> dict[str, SharedWeight]:
    """Cluster the non-zero weights of each conv/linear layer and make the layer use the shared values.

    ``bits`` is a number for all layers or a mapping by layer name / pattern / kind (``conv``, ``depthwise``,
    ``fc``, ``default``; default ``{"conv": 8, "fc": 5}``); a layer resolved to ``None`` or 0 is left alone.
    Zero weights (pruned) stay zero and take no centroid. Returns the parametrizations by layer name.
    """
    bits = DEFAULT_BITS if bits is None else bits
    out: dict[str, SharedWeight] = {}
    for name, m in prunable_layers(model, layers).items():
        b = resolve_setting(name, m, bits)
        if not b:
            continue
        b = int(b)
        if not 1 <= b <= 16:
            raise LightnnError(f"weight-sharing bits for layer {name!r} must be in 1..16, got {b}")
        if parametrize.is_parametrized(m, "weight"):
            raise LightnnError(f"layer {name!r} already shares its weights")
        w = m.weight.detach()
        mask = w != 0
        cents, assign = kmeans_1d(w[mask], 2**b - 1, init=init, iters=iters)
        index = torch.zeros(w.shape, dtype=torch.long, device=w.device)
        index[mask] = assign
        p = SharedWeight(cents, index, mask, b)
        parametrize.register_parametrization(m, "weight", p, unsafe=True)
        m.parametrizations.weight.original.requires_grad_(False)
        out[name] = p
    return out


def centroid_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable centroids of every shared layer (to fine-tune them alone, as in the paper)."""
    return [mod.centroids for mod in model.modules() if isinstance(mod, SharedWeight)]


@torch.no_grad()
def finalize_sharing(model: nn.Module) -> None:
    """Replace every shared parametrization by a plain weight holding exactly the shared values."""
    for m in list(model.modules()):
        if parametrize.is_parametrized(m) and "weight" in m.parametrizations:
            if any(isinstance(p, SharedWeight) for p in m.parametrizations.weight):
                parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
