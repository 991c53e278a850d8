"""The Deep Compression pipeline (Han, Mao, Dally, ICLR 2016): prune -> retrain -> share -> retrain centroids ->
Huffman-encode into a ``.lnz`` file, with a per-stage report of size, accuracy and time.

Sizes follow the paper's accounting (Tables 2-5), per tensor:

- **original**: the dense state dict (float32 weights);
- **P** (pruned): sparse conv/linear weights as ``entries x (32 + index_bits)`` bits (entries include filler
  zeros), or dense when that is smaller; everything else raw;
- **P+Q** (pruned + quantized): shared layers as ``entries x (weight_bits + index_bits)`` plus a float32
  codebook;
- **P+Q+H**: the size of the ``.lnz`` file on disk (header and checksums included).

Everything that is not a conv/linear weight (batch norm, biases) is stored raw. With ``other_dtype="float16"`` the
pipeline rounds those tensors to float16 after the last retraining, before the stage's accuracy is measured, and
the file stores them in 16 bits (exactly: the decoded model has the rounded values the reported accuracy used).
In a MobileNet that halves a third of the file.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
import torch.nn as nn

from ..errors import LightnnError
from ..models import model_name
from .fileformat import DEFAULT_INDEX_BITS, encode_model, load, save_lnz
from .prune import MagnitudePruner, layer_density, prunable_layers
from .share import DEFAULT_BITS, finalize_sharing, share_weights
from ..train import AGPSchedule, Callback, Distillation, Masks, SharedWeights, TrainConfig, bf16_is_fast, fit
from ..train import evaluate as evaluate_model

__all__ = ["DeepConfig", "deep_compress", "evaluate", "size_breakdown", "report_markdown", "layer_table",
           "round_others_to_half"]

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class DeepConfig:
    """Recipe for :func:`deep_compress` (every field can come from a YAML ``--config``).

    ``sparsity``, ``weight_bits`` and ``index_bits`` take a number or a mapping by layer name / wildcard / kind
    (``conv``, ``depthwise``, ``fc``, ``default``).
    """

    sparsity: Any = field(default_factory=lambda: {"conv": 0.6, "fc": 0.9})
    scope: str = "layer"  # layer | global
    schedule: str = "agp"  # agp | oneshot
    prune_epochs: float = 4.0
    ramp_fraction: float = 0.6  # AGP reaches the final sparsity after this fraction of the pruning epochs
    mask_updates: int = 20  # how many times AGP recomputes the masks along the ramp
    prune_lr: float = 0.01
    weight_bits: Any = field(default_factory=lambda: dict(DEFAULT_BITS))
    index_bits: Any = field(default_factory=lambda: dict(DEFAULT_INDEX_BITS))
    kmeans_init: str = "linear"  # linear | density | random
    share_epochs: float = 1.0
    share_lr: float = 1e-4  # centroid gradients are sums over members (Eq. 3): keep the step small
    share_train: str = "all"  # centroids | all (centroids + biases/batch norm, stored raw anyway)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    # retrain against the uncompressed model's soft targets too: loss = (1 - w) CE + w T^2 KL (0 turns it off)
    distill_weight: float = 0.0
    distill_temperature: float = 4.0
    amp: bool = True  # bf16 autocast where it is fast (CUDA, CPUs with AMX)
    # storage of batch norm and biases: float32, or float16 (rounded after the last retraining; halves their bytes)
    other_dtype: str = "float32"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DeepConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise LightnnError(f"unknown Deep Compression setting(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(d))

    def __post_init__(self) -> None:
        if self.other_dtype not in ("float32", "float16"):
            raise LightnnError(f"other_dtype must be 'float32' or 'float16', got {self.other_dtype!r}")
        if not isinstance(self.distill_weight, (int, float)) or not 0.0 <= self.distill_weight <= 1.0:
            raise LightnnError(f"distill_weight must be in [0, 1], got {self.distill_weight}")
        if self.share_train not in ("centroids", "all"):
            raise LightnnError(f"share_train must be 'centroids' or 'all', got {self.share_train!r}")


def evaluate(model: nn.Module, batches: Batches, *, amp: bool = True) -> float:
    """Top-1 accuracy (%) of ``model`` over ``batches`` (:func:`lightnn.train.evaluate`, bf16 autocast when ``amp``
    and bf16 is fast on the model's device)."""
    dev = next(model.parameters()).device
    return float(evaluate_model(model, batches, amp=amp and bf16_is_fast(dev), device=dev)["top1"])


class _FreshEpochs:
    """The retraining batches with ``set_epoch(10_000 + e)``: fresh augmentation, not a replay of the epochs the
    baseline was trained on."""

    def __init__(self, batches: Batches) -> None:
        if not hasattr(batches, "__len__"):
            raise LightnnError("Deep Compression retraining needs a sized batch iterable (len(batches))")
        self.batches = batches
        self.data = getattr(batches, "data", batches)  # what fit names and counts classes of

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.batches, "set_epoch"):
            self.batches.set_epoch(10_000 + epoch)


def _retrain(model: nn.Module, batches: Batches, epochs: float, lr: float, cfg: "DeepConfig",
             callbacks: list[Callback], teacher: nn.Module | None, weight_decay: float) -> None:
    """SGD with Nesterov momentum and a cosine schedule for ``epochs`` (fractions allowed) through
    :func:`lightnn.train.fit`, on the batches as given, with the uncompressed ``teacher`` when distilling."""
    dev = next(model.parameters()).device
    tc = TrainConfig(epochs=epochs, lr=lr, momentum=cfg.momentum, weight_decay=weight_decay, schedule="cosine",
                     label_smoothing=cfg.label_smoothing, amp=bool(cfg.amp and bf16_is_fast(dev)), channels_last=False,
                     device=str(dev), progress=False, verbose=False)
    if cfg.distill_weight > 0:
        callbacks = callbacks + [Distillation(teacher, temperature=cfg.distill_temperature, weight=cfg.distill_weight)]
    fit(model, _FreshEpochs(batches), None, tc, callbacks=callbacks)
    model.eval()


@torch.no_grad()
def round_others_to_half(model: nn.Module) -> dict:
    """Round, in place, every float32 state-dict tensor that is not a conv/linear weight (batch norm parameters and
    statistics, biases) to the nearest float16 value, so the ``.lnz`` encoder stores it in 16 bits. A tensor with
    a value outside float16's range is left as it is. Returns ``{"rounded": tensors, "values": n, "kept": [keys]}``."""
    weights = {f"{n}.weight" for n in prunable_layers(model)}
    done = values = 0
    kept = []
    for key, t in model.state_dict().items():
        if key in weights or t.dtype != torch.float32:
            continue
        h = t.half()
        if not torch.isfinite(h).all() and torch.isfinite(t).all():
            kept.append(key)
            continue
        t.copy_(h.float())
        done += 1
        values += t.numel()
    return {"rounded": done, "values": values, "kept": kept}


def size_breakdown(model: nn.Module, *, index_bits: Any, weight_bits: Any | None) -> dict:
    """Per-tensor encoding stats and total bytes at the paper's stages (see module docstring)."""
    recs = encode_model(model, index_bits=index_bits, weight_bits=weight_bits)
    orig = pruned = shared = payload = 0
    for r in recs:
        s = r.stats
        dense = s.get("dense_bits", s.get("raw_bits", 0))
        raw = s.get("raw_bits")
        if "pruned_bits" in s:
            p = min(s["pruned_bits"], s["dense_bits"])
            q = s["shared_bits"] if s.get("kind") == "shared" else p
        else:
            p = q = raw
        orig += dense if raw is None else raw
        pruned += p
        shared += q
        payload += s.get("huffman_bits", raw or 0)
    return {"tensors": {r.key: r.stats for r in recs}, "original_bytes": orig / 8, "pruned_bytes": pruned / 8,
            "shared_bytes": shared / 8, "huffman_payload_bytes": payload / 8}


def layer_table(tensors: Mapping[str, dict]) -> list[dict]:
    """Rows like the paper's Tables 2-5, one per sparse/shared weight tensor."""
    rows = []
    for key, s in tensors.items():
        if "entries" not in s:
            continue
        e = max(1, s["entries"])
        row = {"layer": key.removesuffix(".weight"), "weights": s["numel"], "density": s["nnz"] / max(1, s["numel"]),
               "kind": s.get("kind"), "index_bits": s["index_bits"], "fillers": s["fillers"]}
        if s.get("kind") == "shared":
            row.update(weight_bits=s["weight_bits"], codebook=s["codebook_size"],
                       weight_bits_h=s["weight_huffman_bits"] / e, index_bits_h=s["index_huffman_bits"] / e,
                       rate_pq=s["shared_bits"] / s["dense_bits"], rate_pqh=s["huffman_bits"] / s["dense_bits"])
        elif s.get("kind") == "sparse":
            row.update(weight_bits=32, index_bits_h=s["index_huffman_bits"] / e,
                       rate_p=s["pruned_bits"] / s["dense_bits"], rate_pqh=s["huffman_bits"] / s["dense_bits"])
        rows.append(row)
    return rows


def _fmt_bytes(b: float) -> str:
    return f"{b / 1e6:.2f} MB" if b >= 1e6 else f"{b / 1e3:.1f} KB"


def report_markdown(report: Mapping[str, Any]) -> str:
    """The stage table and the per-layer table (paper Tables 1 and 2-5) as markdown."""
    lines = [f"### {report.get('model', 'model')}", "",
             "| stage | size | compression | top-1 (%) | time (s) |", "|---|---|---|---|---|"]
    for st in report["stages"]:
        acc = "" if st.get("accuracy") is None else f"{st['accuracy']:.2f}"
        lines.append(f"| {st['stage']} | {_fmt_bytes(st['bytes'])} | {st['ratio']:.1f}x | {acc} | "
                     f"{st.get('seconds', 0.0):.1f} |")
    lines += ["", "| layer | #weights | weights % (P) | weight bits (P+Q) | weight bits (P+Q+H) | index bits (P+Q) | "
              "index bits (P+Q+H) | compress (P+Q) | compress (P+Q+H) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in report.get("layers", []):
        wq = r.get("weight_bits", "")
        wh = f"{r['weight_bits_h']:.2f}" if "weight_bits_h" in r else "32"
        rpq = f"{100 * r['rate_pq']:.2f}%" if "rate_pq" in r else f"{100 * r.get('rate_p', 1):.2f}% (P)"
        lines.append(f"| {r['layer']} | {r['weights']:,} | {100 * r['density']:.1f}% | {wq} | {wh} | {r['index_bits']} | "
                     f"{r['index_bits_h']:.2f} | {rpq} | {100 * r['rate_pqh']:.2f}% |")
    return "\n".join(lines) + "\n"


def deep_compress(model: nn.Module, config: DeepConfig | None = None, *, train: Batches | None = None,
                  val: Batches | None = None, output: str | Path | None = None, stages: tuple[str, ...] = ("prune", "share"),
                  log: Callable[[str], None] | None = print, meta: Mapping[str, Any] | None = None) -> tuple[nn.Module, dict]:
    """Run Deep Compression on ``model`` (modified in place) and optionally write ``output`` (.lnz).

    ``train`` (sized iterable of batches) is needed for retraining (epochs > 0), which runs through
    :func:`lightnn.train.fit` with callbacks: :class:`~lightnn.train.Masks` on an
    :class:`~lightnn.train.AGPSchedule` (prune), :class:`~lightnn.train.SharedWeights` (share),
    :class:`~lightnn.train.Distillation` from the uncompressed model (``distill_weight``); ``val`` for accuracies.
    ``stages`` selects ``prune`` and/or ``share``. Returns ``(model, report)``; ``report["stages"]`` lists
    size, compression ratio, accuracy and seconds per stage, ``report["layers"]`` the per-layer table.
    """
    cfg = config or DeepConfig()
    say = log or (lambda s: None)
    for name, ep in (("prune", cfg.prune_epochs), ("share", cfg.share_epochs)):
        if name in stages and ep > 0 and train is None:
            raise LightnnError(f"the {name} stage retrains for {ep} epoch(s): pass training data (or set its epochs to 0)")
    acc = (lambda m: evaluate(m, val, amp=cfg.amp)) if val is not None else (lambda m: None)
    ib, wb = cfg.index_bits, cfg.weight_bits
    t0 = time.perf_counter()
    base = size_breakdown(model, index_bits=ib, weight_bits=None)
    original = base["original_bytes"]
    a0 = acc(model)
    stage_rows = [{"stage": "original", "bytes": original, "ratio": 1.0, "accuracy": a0,
                   "seconds": time.perf_counter() - t0}]
    say(f"original: {_fmt_bytes(original)}" + (f", top-1 {a0:.2f}%" if a0 is not None else ""))
    tensors = base["tensors"]
    report_half = None
    teacher = None
    if cfg.distill_weight > 0:  # the model as it came in, frozen, teaches every retraining stage
        teacher = copy.deepcopy(model).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)

    if "prune" in stages:
        t0 = time.perf_counter()
        pruner = MagnitudePruner(model, cfg.sparsity, scope=cfg.scope, schedule=cfg.schedule)
        if cfg.schedule == "oneshot" or cfg.prune_epochs <= 0 or train is None:
            pruner.update(1, 1)
            schedule = None
        else:  # AGP: the masks grow along the first ramp_fraction of the retraining
            schedule = AGPSchedule(pruner.update, ramp_fraction=cfg.ramp_fraction, updates=cfg.mask_updates)
        if train is not None and cfg.prune_epochs > 0:
            _retrain(model, train, cfg.prune_epochs, cfg.prune_lr, cfg, [Masks(lambda: pruner.masks, schedule)],
                     teacher, cfg.weight_decay)
        if cfg.schedule == "agp" and pruner.current != pruner.sparsity:
            pruner.update(1, 1)  # too few steps for the ramp to finish: land on the final sparsity
        pruner.step()
        if cfg.other_dtype == "float16" and "share" not in stages:
            report_half = round_others_to_half(model)
        sizes = size_breakdown(model, index_bits=ib, weight_bits=None)
        a = acc(model)
        stage_rows.append({"stage": "pruned (P)", "bytes": sizes["pruned_bytes"],
                           "ratio": original / sizes["pruned_bytes"], "accuracy": a,
                           "seconds": time.perf_counter() - t0})
        tensors = sizes["tensors"]
        say(f"pruned: {_fmt_bytes(sizes['pruned_bytes'])} ({original / sizes['pruned_bytes']:.1f}x)"
            + (f", top-1 {a:.2f}%" if a is not None else ""))

    if "share" in stages:
        t0 = time.perf_counter()
        shared = share_weights(model, wb, init=cfg.kmeans_init)
        if train is not None and cfg.share_epochs > 0:
            _retrain(model, train, cfg.share_epochs, cfg.share_lr, cfg,
                     [SharedWeights([p.centroids for p in shared.values()], train=cfg.share_train)], teacher, 0.0)
        finalize_sharing(model)
        if cfg.other_dtype == "float16":
            report_half = round_others_to_half(model)
        sizes = size_breakdown(model, index_bits=ib, weight_bits=wb)
        a = acc(model)
        stage_rows.append({"stage": "pruned + shared (P+Q)", "bytes": sizes["shared_bytes"],
                           "ratio": original / sizes["shared_bytes"], "accuracy": a,
                           "seconds": time.perf_counter() - t0})
        tensors = sizes["tensors"]
        say(f"shared: {_fmt_bytes(sizes['shared_bytes'])} ({original / sizes['shared_bytes']:.1f}x)"
            + (f", top-1 {a:.2f}%" if a is not None else ""))

    report: dict[str, Any] = {"model": model_name(model),
                              "config": asdict(cfg), "stages": stage_rows}
    if report_half is not None:
        report["float16_others"] = report_half
    if output is not None:
        t0 = time.perf_counter()
        info = save_lnz(output, model, index_bits=ib, weight_bits=wb if "share" in stages else None,
                        meta={**dict(meta or {}), "stages": stage_rows})
        on_disk = Path(output).stat().st_size
        tensors = info["tensors"]
        # the file must decode to exactly these weights: check, then measure accuracy of the decoded model
        dev = next(model.parameters()).device
        reloaded = load(output).to(dev)
        ref, got = model.state_dict(), reloaded.state_dict()
        bad = [k for k in ref if not torch.equal(ref[k].cpu(), got[k].cpu())]
        if bad:
            raise RuntimeError(f"{output}: decoded weights differ from the compressed model in {bad[:5]}")
        a = acc(reloaded)
        stage_rows.append({"stage": "+ Huffman (P+Q+H), file on disk" if "share" in stages else "+ Huffman, file on disk",
                           "bytes": on_disk, "ratio": original / on_disk, "accuracy": a,
                           "seconds": time.perf_counter() - t0, "file": str(output)})
        say(f"file: {output} {_fmt_bytes(on_disk)} ({original / on_disk:.1f}x)" + (f", top-1 {a:.2f}%" if a is not None else ""))
    report["layers"] = layer_table(tensors)
    report["density"] = layer_density(model)
    return model, report
