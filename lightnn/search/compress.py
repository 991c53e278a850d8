"""Automatic compression as a study (PocketFlow's missing hyper-parameter optimizer, done small and resumable).

A trial takes a trained model through lightnn's own stages with sampled knobs, fine-tunes it briefly and
measures it:

1. ``blocks``: remove the ``k`` residual blocks that cost the least accuracy when removed alone (ranked once, on
   the search split, when the evaluator starts) -- :func:`lightnn.compress.remove_blocks`;
2. ``channels``: one pruning weight per *stage* (the channel groups whose layers produce the same spatial size);
   with a MACs budget (``target_macs``) the weights are scaled by one factor bisected until the model meets it
   (:func:`lightnn.compress.budget_search`), so every trial is feasible on lightnn's counter by construction and
   the sampler only chooses *where* to cut; without one, the weights are the ratios themselves;
3. ``lowrank``: truncated-SVD factorization keeping a sampled share of each layer's energy;
4. ``bits``: k-means weight sharing with sampled bits per layer; with ``bits_budget`` the bits are lowered by one
   shift bisected until their average (weighted by each layer's weights) is at most the budget;
5. ``finetune``: a brief fine-tune (sampled epochs, learning rate, distillation weight from the uncompressed
   model as teacher) on the training images outside the search split -- :func:`lightnn.train.fit`;
6. ``int8``: ONNX Runtime static int8, with the op types the trial keeps in float;

then it reports ``top1`` on the search split (a stratified share of the *training* images: the held-out
validation images are never seen by the search), ``macs``, ``params``, ``bytes`` (the deployable file: the
``.lnz`` for fp32 or k-means weights, the int8 ONNX file for int8), ``latency`` (ONNX Runtime, at
``latency_batch`` and ``latency_threads``) and ``predicted_latency`` (from a latency table, when given).

:class:`CompressEvaluator` is the picklable ``evaluate`` of :func:`lightnn.search.run_study`: each worker process
loads the checkpoint and the data once. :meth:`CompressEvaluator.build` replays the chosen knobs with the full
fine-tune budget on all the training images and scores the result on the validation split.
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn as nn

from .objectives import SearchError

__all__ = ["KNOB_FAMILIES", "INT8_CHOICES", "CompressSearchConfig", "CompressEvaluator", "stage_groups",
           "project_bits", "average_bits"]

KNOB_FAMILIES = ("channels", "blocks", "lowrank", "bits", "int8", "finetune")
# int8 choice -> ONNX op types kept in float ("none": no int8 at all)
INT8_CHOICES = {"none": None, "all": (), "conv": ("MatMul", "Gemm", "Add"), "conv+gemm": ("Add",)}


def _pair(name: str, v: Any, low: float, high: float | None = None) -> tuple[float, float]:
    try:
        a, b = (float(x) for x in v)
    except (TypeError, ValueError):
        raise SearchError(f"{name} must be a pair (low, high) of numbers, got {v!r}") from None
    if not (low <= a <= b and (high is None or b <= high)):
        raise SearchError(f"{name} must satisfy {low} <= low <= high" + (f" <= {high}" if high is not None else "")
                          + f", got {v!r}")
    return a, b


@dataclass
class CompressSearchConfig:
    """What a compression search varies and how it scores. Ranges are ``(low, high)`` pairs.

    ``knobs``: the families searched (:data:`KNOB_FAMILIES`); a family left out keeps its fixed setting
    (no channel pruning, no block removal, no low-rank, no sharing, fp32, and the fine-tune of ``finetune_epochs``
    / ``lr`` / ``kd_weight``'s lower ends).
    """

    knobs: Sequence[str] = ("channels", "finetune")
    target_macs: float | None = None  # fraction of the input model's MACs every trial is projected onto
    max_ratio: float = 0.9  # the largest share of a group's channels a trial removes
    max_blocks: int = 3
    lowrank_energy: Sequence[float] = (0.8, 1.0)  # energy kept; 1.0 leaves a layer whole
    bits: Sequence[int] = (2, 8)  # k-means bits per layer
    bits_budget: float | None = None  # average bits per weight (weighted by weights) the trial is projected onto
    int8: Sequence[str] = tuple(INT8_CHOICES)
    finetune_epochs: Sequence[float] = (0.05, 0.3)
    lr: Sequence[float] = (0.002, 0.05)
    kd_weight: Sequence[float] = (0.0, 0.9)
    final_epochs: float = 5.0  # fine-tune of the chosen model(s)
    val_fraction: float = 0.1  # the held-out validation split of the data (as the checkpoint was trained with)
    split_seed: int = 0
    search_fraction: float = 0.1  # of the remaining training images: the split trials are scored on
    eval_limit: int | None = None  # score on a seeded subset of the search split (None: all of it)
    criterion: str = "l1"
    round_to: int = 4
    batch_size: int = 128
    latency_batch: int = 1
    latency_threads: int = 1
    latency_runs: int = 20
    latency_table: str | None = None
    calib_images: int = 256
    bn_images: int = 1024  # training images batch-norm statistics are re-estimated on after the edit (0: off)
    device: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CompressSearchConfig":
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise SearchError(f"unknown search compress key(s) {unknown}; known: {known}")
        return cls(**dict(d))

    def __post_init__(self) -> None:
        if isinstance(self.knobs, str):
            self.knobs = [k.strip() for k in self.knobs.split(",") if k.strip()]
        self.knobs = tuple(dict.fromkeys(self.knobs))
        bad = [k for k in self.knobs if k not in KNOB_FAMILIES]
        if bad or not self.knobs:
            raise SearchError(f"knobs must name families among {', '.join(KNOB_FAMILIES)}, got {list(self.knobs)}")
        if self.target_macs is not None and not 0.0 < float(self.target_macs) < 1.0:
            raise SearchError(f"target_macs must be a fraction in (0, 1) of the model's MACs, got {self.target_macs!r}")
        if not 0.0 < float(self.max_ratio) < 1.0:
            raise SearchError(f"max_ratio must be in (0, 1), got {self.max_ratio!r}")
        self.lowrank_energy = _pair("lowrank_energy", self.lowrank_energy, 0.01, 1.0)
        lo, hi = _pair("bits", self.bits, 1, 16)
        self.bits = (int(lo), int(hi))
        if self.bits_budget is not None and not self.bits[0] <= float(self.bits_budget):
            raise SearchError(f"bits_budget {self.bits_budget} is below the fewest bits a layer may take "
                              f"({self.bits[0]})")
        self.int8 = tuple(self.int8)
        if not self.int8 or any(c not in INT8_CHOICES for c in self.int8):
            raise SearchError(f"int8 choices must be among {list(INT8_CHOICES)}, got {list(self.int8)}")
        self.finetune_epochs = _pair("finetune_epochs", self.finetune_epochs, 0.0)
        self.lr = _pair("lr", self.lr, 1e-6)
        self.kd_weight = _pair("kd_weight", self.kd_weight, 0.0, 1.0)
        for name in ("val_fraction", "search_fraction"):
            if not 0.0 < float(getattr(self, name)) < 1.0:
                raise SearchError(f"{name} must be a fraction in (0, 1), got {getattr(self, name)!r}")
        for name, low in (("max_blocks", 0), ("round_to", 1), ("batch_size", 1), ("latency_batch", 1),
                          ("latency_threads", 1), ("latency_runs", 1), ("calib_images", 1), ("bn_images", 0), ("split_seed", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise SearchError(f"{name} must be a whole number >= {low}, got {v!r}")
        if not float(self.final_epochs) >= 0:
            raise SearchError(f"final_epochs must be >= 0, got {self.final_epochs!r}")


# ---------------------------------------------------------------------------------------------------------------
# knobs -> model


def stage_groups(model: nn.Module, x: torch.Tensor, graph: Any) -> dict[str, int]:
    """``{group name: stage index}``: a prunable group's stage is the largest output spatial size among the layers
    producing its channels; stages are numbered from the largest size down (ResNet-20: 32, 16, 8 -> 0, 1, 2)."""
    sizes: dict[str, int] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            hooks.append(m.register_forward_hook(
                lambda mod, inp, out, name=name: sizes.__setitem__(name, int(out[0, 0].numel()) if out.dim() == 4 else 1)))
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    group_size = {}
    for g in graph.prunable_groups():
        outs = [sizes.get(layer, 1) for layer, dim in g.members if dim == "out" and layer in sizes]
        group_size[g.name] = max(outs, default=1)
    levels = sorted(set(group_size.values()), reverse=True)
    return {name: levels.index(s) for name, s in group_size.items()}


def average_bits(bits: Mapping[str, int], weights: Mapping[str, int]) -> float:
    total = sum(weights[n] for n in bits)
    return sum(bits[n] * weights[n] for n in bits) / max(total, 1)


def project_bits(wanted: Mapping[str, float], weights: Mapping[str, int], budget: float | None,
                 low: int, high: int) -> dict[str, int]:
    """Whole bits per layer from sampled (real) ones: ``round(wanted - shift)`` clamped to ``[low, high]``, with the
    smallest shift (bisected) that brings the weight-weighted average to at most ``budget``."""
    def at(shift: float) -> dict[str, int]:
        return {n: int(min(high, max(low, round(b - shift)))) for n, b in wanted.items()}

    if budget is None or average_bits(at(0.0), weights) <= budget:
        return at(0.0)
    lo, hi = 0.0, float(high - low) + 1.0
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if average_bits(at(mid), weights) <= budget else (mid, hi)
    return at(hi)


@dataclass
class _State:
    """What a worker process loads once: the model, the splits, the block ranking, the reference metrics."""

    model: nn.Module
    x: torch.Tensor
    size: tuple[int, int, int]
    norm: dict
    train: Any  # training images outside the search split (trial fine-tunes)
    search: Any  # the search split (trial scores)
    full_train: Any  # every training image (final fine-tune)
    val: Any  # the held-out validation split (final scores)
    stages: dict[str, int]
    n_stages: int
    blocks: list[str]  # removable blocks, least harmful first
    layers: dict[str, int]  # shareable layer -> weights
    table: Any = None
    reference: dict[str, float] = field(default_factory=dict)


class CompressEvaluator:
    """``evaluate(params, trial) -> metrics`` for :func:`lightnn.search.run_study` over a trained checkpoint.

    ``checkpoint``: a lightnn checkpoint (weights only are read) or ``.lnz``; ``data``: what
    :func:`lightnn.data.load_dataset` takes. Picklable: a worker process rebuilds its state on first use.
    """

    def __init__(self, checkpoint: str | os.PathLike, data: str | os.PathLike, config: CompressSearchConfig | None = None,
                 *, log: Callable[[str], None] | None = None) -> None:
        self.checkpoint = str(checkpoint)
        self.data = str(data)
        self.config = config or CompressSearchConfig()
        self._log = log
        self._state: _State | None = None

    def __getstate__(self) -> dict:
        d = dict(self.__dict__)
        d["_state"], d["_log"] = None, None
        return d

    def _say(self, msg: str) -> None:
        if self._log is not None:
            self._log(msg)

    # -- state ----------------------------------------------------------------------------------------------------

    @property
    def state(self) -> _State:
        if self._state is None:
            self._state = self._load()
        return self._state

    def _load(self) -> _State:
        from ..checkpoint import load_any
        from ..compress import build_dependency_graph, prunable_layers, removable_blocks
        from ..data import load_dataset, split_indices
        from ..models import model_normalization

        cfg = self.config
        model = load_any(self.checkpoint).cpu().eval()
        full_train = load_dataset(self.data, "train", val_fraction=cfg.val_fraction, seed=cfg.split_seed)
        val = load_dataset(self.data, "val", val_fraction=cfg.val_fraction, seed=cfg.split_seed)
        tr_idx, se_idx = split_indices(full_train.labels, cfg.search_fraction, cfg.split_seed + 1)
        train, search = full_train.subset(tr_idx, "train"), full_train.subset(se_idx, "search")
        if cfg.eval_limit and cfg.eval_limit < len(search):
            g = torch.Generator().manual_seed(cfg.split_seed)
            search = search.subset(torch.randperm(len(search), generator=g)[: cfg.eval_limit], "search")
        size = tuple(getattr(model, "default_input_size", None) or full_train.image_size)
        x = torch.randn(1, *size)
        norm = model_normalization(model)
        if not norm:
            mean, std = full_train.channel_stats()
            norm = {"mean": list(mean), "std": list(std)}
        graph = build_dependency_graph(model, x)
        stages = stage_groups(model, x, graph)
        table = None
        if cfg.latency_table:
            from ..profile import load_table

            table = load_table(cfg.latency_table)
        st = _State(model, x, size, norm, train, search, full_train, val, stages,
                    1 + max(stages.values(), default=-1), [], {}, table)
        self._state = st
        if not stages and "channels" in cfg.knobs:
            raise SearchError(f"{self.checkpoint!r}: the model has no prunable channel groups; leave 'channels' out "
                              "of the knobs")
        blocks = removable_blocks(model, x)
        if "blocks" in cfg.knobs:
            if not blocks:
                raise SearchError(f"{self.checkpoint!r}: the model has no removable residual blocks; leave 'blocks' "
                                  "out of the knobs")
            from ..compress import block_sensitivity, rank_blocks

            self._say(f"ranking {len(blocks)} removable blocks on the search split ...")
            blocks = rank_blocks(block_sensitivity(model, blocks, self._top1))
        st.blocks = blocks
        st.layers = {n: int(m.weight.numel()) for n, m in prunable_layers(model).items()}
        st.reference = self._measure(model, None)
        return st

    # -- the space ------------------------------------------------------------------------------------------------

    def space(self) -> dict[str, dict[str, Any]]:
        """The Optuna search space of this model and config (knob -> range)."""
        cfg, st = self.config, self.state
        sp: dict[str, dict[str, Any]] = {}
        if "channels" in cfg.knobs:
            low = 0.05 if cfg.target_macs is not None else 0.0  # projected weights: all zero would cut nothing
            for s in range(st.n_stages):
                sp[f"prune_stage{s}"] = {"type": "float", "low": low, "high": cfg.max_ratio}
        if "blocks" in cfg.knobs:
            sp["remove_blocks"] = {"type": "int", "low": 0, "high": min(cfg.max_blocks, len(st.blocks))}
        if "lowrank" in cfg.knobs:
            sp["lowrank_energy"] = {"type": "float", "low": cfg.lowrank_energy[0], "high": cfg.lowrank_energy[1]}
        if "bits" in cfg.knobs:
            for n in st.layers:
                sp[f"bits:{n}"] = {"type": "float", "low": cfg.bits[0] - 0.49, "high": cfg.bits[1] + 0.49}
        if "int8" in cfg.knobs:
            sp["int8"] = {"type": "categorical", "choices": list(cfg.int8)}
        if "finetune" in cfg.knobs:
            sp["finetune_epochs"] = {"type": "float", "low": cfg.finetune_epochs[0], "high": cfg.finetune_epochs[1]}
            sp["lr"] = {"type": "float", "low": cfg.lr[0], "high": cfg.lr[1], "log": True}
            sp["kd_weight"] = {"type": "float", "low": cfg.kd_weight[0], "high": cfg.kd_weight[1]}
        return sp

    def reference(self) -> dict[str, float]:
        """The uncompressed model's metrics (what ``macs<=0.5x`` is relative to)."""
        return dict(self.state.reference)

    # -- applying knobs -------------------------------------------------------------------------------------------

    def _top1(self, model: nn.Module, data: Any = None) -> float:
        from ..train import evaluate

        st = self.state
        dev = self.config.device or "cpu"
        try:
            return float(evaluate(model.to(dev), data if data is not None else st.search, batch_size=256,
                                  device=dev, mean=st.norm["mean"], std=st.norm["std"])["top1"])
        finally:
            model.cpu()

    def _ratios(self, model: nn.Module, weights: Sequence[float], graph: Any, macs_target: float | None
                ) -> tuple[dict[str, float], float, nn.Module]:
        """Per-group ratios from per-stage weights (projected onto ``macs_target`` when given)."""
        from ..compress import budget_search, prune_channels
        from ..compress.sensitivity import count_macs

        cfg, st = self.config, self.state
        stages = stage_groups(model, st.x, graph)

        def ratios(t: float) -> dict[str, float]:
            return {g: min(cfg.max_ratio, max(0.0, t * weights[s])) for g, s in stages.items()}

        def apply(t: float) -> nn.Module:
            return prune_channels(model, st.x, ratios(t), criterion=cfg.criterion, round_to=cfg.round_to, graph=graph)

        if macs_target is None:
            return ratios(1.0), 1.0, apply(1.0)
        if count_macs(model, st.x) <= macs_target:
            return ratios(0.0), 0.0, copy.deepcopy(model)
        t_max = cfg.max_ratio / max(min(weights), 1e-6)
        found = budget_search(apply, lambda m: count_macs(m, st.x), macs_target, 0.0, t_max, 14,
                              infeasible=lambda c: f"even removing {cfg.max_ratio:.0%} of every group's channels "
                                                   f"keeps {c / st.reference['macs']:.1%} of the MACs, above the "
                                                   f"budget {cfg.target_macs:.1%}")
        return ratios(found.knob), found.knob, found.value

    def apply(self, params: Mapping[str, Any], seed: int = 0) -> tuple[nn.Module, dict[str, Any]]:
        """The compressed (not yet fine-tuned) model for ``params`` and what was done; batch-norm statistics are
        re-estimated on ``bn_images`` training images (shuffled with ``seed``) after any edit."""
        from ..compress import build_dependency_graph, remove_blocks
        from ..compress.lowrank import factorize

        cfg, st = self.config, self.state
        model = copy.deepcopy(st.model)
        done: dict[str, Any] = {}
        k = int(params.get("remove_blocks", 0))
        if k:
            model = remove_blocks(model, st.blocks[:k], st.x)
            done["removed_blocks"] = st.blocks[:k]
        if "channels" in cfg.knobs:
            w = [float(params[f"prune_stage{s}"]) for s in range(st.n_stages)]
            target = cfg.target_macs * st.reference["macs"] if cfg.target_macs is not None else None
            graph = build_dependency_graph(model, st.x)
            ratios, t, model = self._ratios(model, w, graph, target)
            done["stage_ratios"] = [min(cfg.max_ratio, t * v) for v in w]
            done["scale"] = t
        energy = float(params.get("lowrank_energy", 1.0))
        if energy < 1.0:
            rep = factorize(model, energy=energy, input_size=st.size)
            done["lowrank"] = {"energy": energy, "layers": len(rep.to_dict().get("layers", []))}
        if "bits" in cfg.knobs:
            from ..compress import prunable_layers, share_weights

            layers = {n: int(m.weight.numel()) for n, m in prunable_layers(model).items()}
            wanted = {n: float(params.get(f"bits:{n}", cfg.bits[1])) for n in layers}
            bits = project_bits(wanted, layers, cfg.bits_budget, *cfg.bits)
            share_weights(model, bits)
            done["bits"] = bits
            done["average_bits"] = average_bits(bits, layers)
        if cfg.bn_images and done:
            from ..train import recalibrate_bn

            done["bn_images"] = recalibrate_bn(model, st.train, images=cfg.bn_images, batch_size=cfg.batch_size,
                                               mean=st.norm["mean"], std=st.norm["std"], seed=seed)
            model.eval()
        return model, done

    def finetune(self, model: nn.Module, params: Mapping[str, Any], seed: int, epochs: float | None = None,
                 train: Any = None, output_dir: str | os.PathLike | None = None, verbose: bool = False
                 ) -> dict[str, Any]:
        """Fine-tune ``model`` in place with the trial's (or fixed) settings; ``epochs`` overrides the trial's."""
        from ..train import AuxLoss, Distillation, TrainConfig, fit

        cfg, st = self.config, self.state
        ep = float(params.get("finetune_epochs", cfg.finetune_epochs[0])) if epochs is None else float(epochs)
        lr = float(params.get("lr", cfg.lr[0]))
        kd = float(params.get("kd_weight", cfg.kd_weight[0]))
        if ep <= 0:
            return {"epochs": 0.0, "lr": lr, "kd_weight": kd}
        tc = TrainConfig(epochs=ep, lr=lr, batch_size=cfg.batch_size, schedule="cosine", device=cfg.device,
                         seed=int(seed) % (2 ** 31), mean=tuple(st.norm["mean"]), std=tuple(st.norm["std"]),
                         progress=False, verbose=verbose)
        callbacks = [AuxLoss()] + ([Distillation(copy.deepcopy(st.model), weight=kd)] if kd > 0 else [])
        t0 = time.perf_counter()
        res = fit(model, train if train is not None else st.train, None, tc, callbacks=callbacks,
                  output_dir=output_dir, resume=output_dir is not None)
        model.cpu().eval()
        return {"epochs": ep, "lr": lr, "kd_weight": kd, "steps": res.get("steps"),
                "seconds": time.perf_counter() - t0}

    def _finalize(self, model: nn.Module) -> None:
        from ..compress import finalize_sharing
        from ..compress.share import SharedWeight

        if any(isinstance(m, SharedWeight) for m in model.modules()):
            finalize_sharing(model)

    # -- measuring ------------------------------------------------------------------------------------------------

    def _image_set(self, data: Any, index: torch.Tensor | None = None) -> Any:
        """Normalized float32 images and labels of an :class:`~lightnn.data.ImageData` for ONNX Runtime."""
        from ..export.calib import ImageSet

        st = self.state
        imgs, labels = (data.images, data.labels) if index is None else (data.images[index], data.labels[index])
        m = torch.tensor(st.norm["mean"], dtype=torch.float32).view(1, -1, 1, 1)
        s = torch.tensor(st.norm["std"], dtype=torch.float32).view(1, -1, 1, 1)
        x = ((imgs.float() / 255.0 - m) / s).numpy()
        return ImageSet(x, labels.numpy(), list(getattr(data, "classes", [])), "search split")

    def _measure(self, model: nn.Module, int8: str | None, data: Any = None, keep: str | os.PathLike | None = None
                 ) -> dict[str, float]:
        """top1, macs, params, bytes, latency (and predicted_latency) of a finished model; ``int8`` (a key of
        :data:`INT8_CHOICES`) scores and times its ONNX Runtime int8 form instead. ``keep``: a folder the
        deployable files are written to."""
        from ..compress import save_lnz
        from ..compress.sensitivity import count_macs
        from ..export import export_onnx
        from ..export.quantize import evaluate_onnx, quantize_int8
        from ..runtime import OrtSession

        cfg, st = self.config, self.state
        out: dict[str, float] = {"macs": count_macs(model, st.x), "params": float(sum(p.numel() for p in model.parameters()))}
        with tempfile.TemporaryDirectory(prefix="lightnn-trial-") as d:
            folder = Path(keep) if keep is not None else Path(d)
            folder.mkdir(parents=True, exist_ok=True)
            lnz = folder / "model.lnz"
            out["lnz_bytes"] = float(save_lnz(lnz, model)["file_bytes"])
            onnx = export_onnx(model, folder / "model.onnx", st.size, batch_size=cfg.latency_batch,
                               dynamic_batch=True)
            scored = onnx
            if int8 and INT8_CHOICES[int8] is not None:
                g = torch.Generator().manual_seed(0)
                calib = self._image_set(st.train, torch.randperm(len(st.train), generator=g)[: cfg.calib_images])
                scored = quantize_int8(onnx, folder / "model.int8.onnx", calib,
                                       op_types_to_keep_float=INT8_CHOICES[int8])
                out["bytes"] = float(scored.stat().st_size)
                evalset = self._image_set(data if data is not None else st.search)
                out["top1"] = float(evaluate_onnx(scored, evalset, threads=torch.get_num_threads()))
            else:
                out["bytes"] = out["lnz_bytes"]
                out["top1"] = self._top1(model, data)
            sess = OrtSession(scored, threads=cfg.latency_threads)
            out["latency"] = float(sess.latency(batch=cfg.latency_batch, warmup=3, runs=cfg.latency_runs).median_ms)
        if st.table is not None:
            from ..profile import predict_latency

            out["predicted_latency"] = float(predict_latency(model, st.size, st.table).total_ms)
        return out

    # -- the evaluate of run_study ----------------------------------------------------------------------------------

    def __call__(self, params: Mapping[str, Any], trial: Any) -> dict[str, float]:
        t0 = time.perf_counter()
        model, done = self.apply(params, trial.seed)
        t1 = time.perf_counter()
        ft = self.finetune(model, params, trial.seed)
        self._finalize(model)
        metrics = self._measure(model, params.get("int8", "none"))
        metrics.update(apply_s=t1 - t0, finetune_s=float(ft.get("seconds", 0.0)))
        if "average_bits" in done:
            metrics["average_bits"] = float(done["average_bits"])
        if "scale" in done:
            metrics["ratio_scale"] = float(done["scale"])
        lat = f", latency {metrics['latency']:.3f} ms" if "latency" in metrics else ""
        self._say(f"  trial {trial.number}: top-1 {metrics['top1']:.2f}%, {metrics['macs'] / 1e6:.2f} M MACs{lat} "
                  f"({time.perf_counter() - t0:.1f} s)")
        return metrics

    def build(self, params: Mapping[str, Any], *, seed: int = 0, epochs: float | None = None,
              output: str | os.PathLike | None = None, verbose: bool = False) -> tuple[nn.Module, dict[str, Any]]:
        """The chosen compression retrained with the full budget (``epochs``, default ``final_epochs``) on every
        training image, scored on the validation split; with ``output`` its deployable files (``model.lnz``,
        ``model.onnx``, ``model.int8.onnx`` when int8) and the fine-tune's run folder are written there."""
        cfg, st = self.config, self.state
        ep = cfg.final_epochs if epochs is None else float(epochs)
        t0 = time.perf_counter()
        model, done = self.apply(params, seed)
        ft = self.finetune(model, params, seed, epochs=ep, train=st.full_train,
                           output_dir=Path(output) / "finetune" if output is not None and ep > 0 else None,
                           verbose=verbose)
        self._finalize(model)
        metrics = self._measure(model, params.get("int8", "none"), data=st.val, keep=output)
        return model, {"params": dict(params), "applied": done, "finetune": ft, "metrics": metrics,
                       "seconds": time.perf_counter() - t0, "scored_on": f"validation split ({len(st.val)} images)"}

    def describe(self) -> dict[str, Any]:
        """The splits and settings, for reports."""
        st = self.state
        return {"checkpoint": self.checkpoint, "data": self.data, "config": asdict(self.config),
                "images": {"trial_train": len(st.train), "search": len(st.search), "final_train": len(st.full_train),
                           "val": len(st.val)},
                "stages": st.n_stages, "groups": len(st.stages), "removable_blocks": st.blocks}
