"""Compression stages as library functions of one shape: ``stage(model, config, data) -> (model, report)``.

The CLI (``lightnn compress``), the ``lightnn run`` pipeline and the tests call the same functions:

- :func:`prune_to_budget` (:class:`PruneConfig`): structured pruning under a MACs budget, a measured-latency
  budget or a fixed ratio: optional depth pruning first (remove the residual blocks whose removal costs the least
  accuracy, or the least accuracy per ms saved), then channel pruning with per-group ratios planned from a
  sensitivity analysis (Li et al. 2017) or one uniform ratio, both found by
  :func:`lightnn.compress.budget.budget_search`; the shrunk model is checked against the masked one and
  optionally fine-tuned (with the unpruned model as teacher) through :func:`lightnn.train.fit`;
- :func:`sensitivity_stage` (:class:`SensitivityConfig`): each channel group pruned alone at several ratios;
- :func:`lowrank_stage` (:class:`LowRankConfig`): truncated-SVD factorization.

Deep Compression's stage is :func:`lightnn.compress.deep.deep_compress` (:class:`~lightnn.compress.deep.DeepConfig`).
Configs are dataclasses validated on construction (errors name the field); ``from_dict`` builds one from a YAML
mapping and names unknown keys. A stage leaves its input model unchanged (low-rank factorizes in place) and
returns a model that carries its registry name, arguments and transforms, so :func:`lightnn.checkpoint.save_checkpoint`
writes it as it is.
"""

from __future__ import annotations

import importlib.util
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn as nn

from ..errors import LightnnError
from ..models import model_normalization, record_update
from .budget import budget_search
from .channel import build_dependency_graph, prune_channels, resolve_round_to, verify_shrink
from .importance import CRITERIA

__all__ = ["SensitivityConfig", "PruneConfig", "LowRankConfig", "prune_to_budget", "sensitivity_stage",
           "lowrank_stage", "deployment_latency", "table_latency"]

Log = Callable[[str], None] | None
LatencyFn = Callable[[nn.Module], float]
_MAX_UNIFORM = 0.95  # the largest uniform ratio the budget search tries


def _from_dict(cls, d: Mapping[str, Any]):
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise LightnnError(f"unknown {cls.__name__} key(s) {unknown}; known: {known}")
    return cls(**dict(d))


def _fraction(name: str, v: Any, what: str, *, closed_low: bool = False) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise LightnnError(f"{name} must be a number, got {v!r}") from None
    if not ((0.0 <= f if closed_low else 0.0 < f) and f < 1.0):
        where = f" {what}" if what else ""
        raise LightnnError(f"{name} must be a fraction in {'[0' if closed_low else '(0'}, 1){where}, got {v!r}")
    return f


def _int(name: str, v: Any, low: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise LightnnError(f"{name} must be an integer >= {low}, got {v!r}")
    return v


def _choice(name: str, v: Any, options: Sequence[str]) -> None:
    if v not in options:
        raise LightnnError(f"{name} must be one of {list(options)}, got {v!r}")


@dataclass
class SensitivityConfig:
    """What a sensitivity analysis takes: the ratios each group is pruned alone at, how channels are ranked and
    rounded, layers left alone, and the validation images (``eval_limit``: a seeded subset; None or 0: all)."""

    ratios: Sequence[float] = (0.25, 0.5, 0.75)
    criterion: str = "l1"  # a name in lightnn.compress.importance.CRITERIA
    round_to: int | str = 8  # kept widths are multiples of this; "auto": this CPU's convolution channel block
    exclude: Sequence[str] = ()  # layer paths (wildcards) whose channels stay
    eval_limit: int | None = 2000
    batch_size: int = 128  # evaluation batches are at least 256; fine-tuning uses this size
    device: str | None = None  # None: CUDA when available, else CPU

    from_dict = classmethod(_from_dict)

    def __post_init__(self) -> None:
        if isinstance(self.ratios, str):
            try:
                self.ratios = [float(r) for r in self.ratios.split(",")]
            except ValueError:
                raise LightnnError(f"ratios must be comma-separated fractions, got {self.ratios!r}") from None
        if not isinstance(self.ratios, Sequence) or not self.ratios:
            raise LightnnError(f"ratios must be a non-empty list of fractions, got {self.ratios!r}")
        self.ratios = tuple(_fraction("ratios", r, "of a group's channels") for r in self.ratios)
        _choice("criterion", self.criterion, list(CRITERIA))
        try:  # a number, or "auto" kept as it is (it resolves on the machine that prunes)
            n = resolve_round_to(self.round_to)
        except LightnnError as e:
            raise LightnnError(f"round_to: {e}") from None
        self.round_to = self.round_to if self.round_to == "auto" else n
        self.exclude = (self.exclude,) if isinstance(self.exclude, str) else tuple(self.exclude)
        if self.eval_limit is not None:
            _int("eval_limit", self.eval_limit, 0)
        _int("batch_size", self.batch_size, 1)


@dataclass
class PruneConfig(SensitivityConfig):
    """Everything :func:`prune_to_budget` takes. Exactly one budget: ``target_macs`` or ``target_latency``
    (fractions of the input model's MACs / measured latency to keep) or a fixed ``ratio`` of every group's
    channels (``scope`` "layer": each group; "global": ranked across groups).

    A MACs or latency budget is met by per-group ratios planned from a sensitivity analysis (``plan``
    "sensitivity", needs validation data) or by one uniform ratio (``plan`` "uniform", no data needed);
    ``search_steps`` bisection steps (default 20 under a MACs budget, 8 under a measured one).
    ``remove_blocks`` identity-shortcut residual blocks go first, ranked by ``rank_blocks`` ("accuracy" lost, or
    accuracy lost per ms saved, "latency"); latency is measured at ``latency_batch``, or predicted from the
    ``latency_table`` file (:func:`table_latency`; its batch must be ``latency_batch``). ``finetune_epochs`` > 0
    retrains the pruned model (SGD, ``schedule`` with ``warmup_epochs``, seeded by ``seed``), with the unpruned
    model as teacher when ``distill`` (loss weight ``kd_weight``).
    """

    target_macs: float | None = None
    target_latency: float | None = None
    ratio: float | None = None
    plan: str = "sensitivity"  # sensitivity | uniform
    scope: str = "layer"  # with ratio: layer | global
    remove_blocks: int = 0
    rank_blocks: str = "accuracy"  # accuracy | latency
    latency_batch: int = 1
    latency_table: str | None = None  # a latency table file: its prediction is the latency cost (no measuring)
    search_steps: int | None = None
    finetune_epochs: float = 0.0
    lr: float = 0.01
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    distill: bool = False
    kd_weight: float = 0.5
    schedule: str = "cosine"  # cosine | onecycle | constant
    warmup_epochs: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        given = [n for n in ("target_macs", "target_latency", "ratio") if getattr(self, n) is not None]
        if len(given) != 1:
            raise LightnnError(f"give exactly one of target_macs, target_latency, ratio (got {given or 'none'})")
        if self.target_macs is not None:
            self.target_macs = _fraction("target_macs", self.target_macs, "of the input model's MACs")
        if self.target_latency is not None:
            self.target_latency = _fraction("target_latency", self.target_latency, "of the input model's latency")
        if self.ratio is not None:
            self.ratio = _fraction("ratio", self.ratio, "of every group's channels", closed_low=True)
        _choice("plan", self.plan, ("sensitivity", "uniform"))
        _choice("scope", self.scope, ("layer", "global"))
        _choice("rank_blocks", self.rank_blocks, ("accuracy", "latency"))
        _choice("schedule", self.schedule, ("cosine", "onecycle", "constant"))
        _int("remove_blocks", self.remove_blocks, 0)
        _int("latency_batch", self.latency_batch, 1)
        if self.latency_table is not None and not isinstance(self.latency_table, (str, os.PathLike)):
            raise LightnnError(f"latency_table must be a path to a latency table file, got {self.latency_table!r}")
        if self.latency_table is not None:
            self.latency_table = os.fspath(self.latency_table)
        _int("seed", self.seed, 0)
        if self.search_steps is not None:
            _int("search_steps", self.search_steps, 1)
        for name, low in (("finetune_epochs", 0.0), ("weight_decay", 0.0), ("warmup_epochs", 0.0)):
            if not float(getattr(self, name)) >= low:
                raise LightnnError(f"{name} must be >= {low}, got {getattr(self, name)!r}")
        if not float(self.lr) > 0:
            raise LightnnError(f"lr must be > 0, got {self.lr!r}")
        _fraction("label_smoothing", self.label_smoothing, "", closed_low=True)
        if not 0.0 <= float(self.kd_weight) <= 1.0:
            raise LightnnError(f"kd_weight must be in [0, 1], got {self.kd_weight!r}")

    @property
    def planned(self) -> bool:
        """True when the channel ratios come from a sensitivity analysis."""
        return self.ratio is None and self.plan == "sensitivity"

    def data_needs(self) -> dict[str, str]:
        """``{"val" | "train": why}``: the data this config cannot run without."""
        need = {}
        if self.planned:
            need["val"] = "a sensitivity-planned budget (plan 'sensitivity') measures accuracy"
        if self.remove_blocks:
            need["val"] = "remove_blocks ranks blocks by validation accuracy"
        if self.finetune_epochs > 0:
            need["train"] = "finetune_epochs > 0 retrains the pruned model"
        if _needs_gradients(self.criterion):
            need["train"] = f"the {self.criterion} criterion needs gradients of training batches"
        if "train" in need and "val" not in need and self.finetune_epochs > 0:
            need["val"] = "fine-tuning reports validation accuracy"
        return need


@dataclass
class LowRankConfig:
    """:func:`lowrank_stage`: one ``rank`` for every layer, or keep ``energy`` of each layer's squared singular
    values; ``layers`` / ``exclude``: wildcard patterns over layer names."""

    rank: int | None = None
    energy: float | None = None
    layers: Sequence[str] = ("*",)
    exclude: Sequence[str] = ()

    from_dict = classmethod(_from_dict)

    def __post_init__(self) -> None:
        if (self.rank is None) == (self.energy is None):
            raise LightnnError("low-rank: give exactly one of rank / energy")
        if self.rank is not None:
            _int("rank", self.rank, 1)
        if self.energy is not None and not 0.0 < float(self.energy) <= 1.0:
            raise LightnnError(f"energy must be in (0, 1], got {self.energy!r}")
        self.layers = (self.layers,) if isinstance(self.layers, str) else tuple(self.layers)
        self.exclude = (self.exclude,) if isinstance(self.exclude, str) else tuple(self.exclude)


# -- shared pieces ------------------------------------------------------------------------------------------------

def deployment_latency(input_size: Sequence[int], batch: int = 1, runs: int = 20) -> tuple[LatencyFn, str]:
    """``(model -> median ms at batch, backend)`` on the deployment backend: ONNX Runtime when importable, else
    PyTorch eager; one thread, so the budget does not move with the machine's load."""
    from ..profile.latency import measure_latency

    backend = "onnxruntime" if importlib.util.find_spec("onnxruntime") else "eager"
    size = tuple(input_size)
    return (lambda m: measure_latency(m.cpu(), size, batch=batch, threads=1, runs=runs, backend=backend).median_ms,
            backend)


def table_latency(path: str | os.PathLike, input_size: Sequence[int], batch: int = 1) -> tuple[LatencyFn, str]:
    """``(model -> predicted ms at batch, backend)`` from a latency table file (:func:`lightnn.profile.
    predict_latency`): no model is run end to end; units the table lacks are measured once and added to it."""
    from ..profile import load_table, predict_latency

    table = load_table(path)
    if table.batch != batch:
        raise LightnnError(f"latency_table {str(path)!r} was measured at batch {table.batch}, but latency_batch is "
                           f"{batch}")
    size = tuple(input_size)
    return (lambda m: predict_latency(m.cpu(), size, table).total_ms,
            f"latency table {str(path)!r} ({table.backend}, batch {table.batch}, {table.threads} threads)")


def _device(cfg: SensitivityConfig) -> str:
    return cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")


def _input_size(model: nn.Module, *data: Any) -> tuple[int, ...]:
    size = getattr(model, "default_input_size", None)
    for d in data:
        if size is None and d is not None:
            size = d.image_size
    if size is None:
        raise LightnnError(f"{type(model).__name__} has no default_input_size and no data was given: the stage "
                           "cannot build an example input")
    return tuple(size)


def _normalization(model: nn.Module, train: Any, val: Any) -> dict | None:
    norm = model_normalization(model)
    if norm:
        return norm
    src = train if train is not None else val
    if src is None:
        return None
    mean, std = src.channel_stats()
    return {"mean": list(mean), "std": list(std)}


def _accuracy(val: Any, cfg: SensitivityConfig, norm: dict | None, device: str) -> Callable[[nn.Module], float] | None:
    """Top-1 (%) on a seeded ``eval_limit`` subset of ``val`` (over all classes); the model returns to the CPU."""
    if val is None:
        return None
    from ..train import evaluate

    sub = val
    if cfg.eval_limit and cfg.eval_limit < len(val):
        sub = val.subset(torch.randperm(len(val), generator=torch.Generator().manual_seed(0))[: cfg.eval_limit])

    def acc(m: nn.Module) -> float:
        try:
            return float(evaluate(m.to(device), sub, batch_size=max(256, cfg.batch_size), device=device,
                                  mean=norm["mean"], std=norm["std"])["top1"])
        finally:
            m.cpu()

    return acc


def _analyze(model: nn.Module, x: torch.Tensor, cfg: SensitivityConfig, graph, acc, say, progress: bool) -> dict:
    from .sensitivity import sensitivity_analysis

    say(f"sensitivity analysis of {len(cfg.ratios)} ratios per group ...")
    return sensitivity_analysis(model, x, acc, list(cfg.ratios), criterion=cfg.criterion, round_to=cfg.round_to,
                                graph=graph, progress=progress)


def _graph(model: nn.Module, x: torch.Tensor, cfg: SensitivityConfig, say) -> Any:
    # ops the analysis cannot map freeze the channels they touch; the rest of the graph is pruned
    graph = build_dependency_graph(model, x, on_unsupported="exclude", exclude=list(cfg.exclude))
    for msg in graph.unsupported:
        say(f"note: {msg}; its channels are left as they are")
    return graph


# -- stages -------------------------------------------------------------------------------------------------------

def sensitivity_stage(model: nn.Module, config: SensitivityConfig, train: Any = None, val: Any = None, *,
                      log: Log = None, progress: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Each channel group of ``model`` pruned alone at ``config.ratios``, scored by top-1 on ``val`` (no
    fine-tuning; ``train`` only supplies the normalization when the model has none). Returns the model unchanged
    and ``{"sensitivity": ..., "unsupported": [...]}`` (:func:`lightnn.compress.sensitivity.write_sensitivity`
    writes its table and plot)."""
    if val is None:
        raise LightnnError("val data is required: a sensitivity analysis measures validation accuracy")
    say = log or (lambda s: None)
    model = model.cpu().eval()
    x = torch.randn(1, *_input_size(model, val))
    acc = _accuracy(val, config, _normalization(model, train, val), _device(config))
    graph = _graph(model, x, config, say)
    return model, {"unsupported": graph.unsupported, "sensitivity": _analyze(model, x, config, graph, acc, say,
                                                                             progress)}


@dataclass
class _Run:
    """What every step of one :func:`prune_to_budget` call reads."""

    cfg: PruneConfig
    x: torch.Tensor  # example input (1, C, H, W)
    acc: Callable[[nn.Module], float] | None
    lat: LatencyFn
    backend: str
    say: Callable[[str], None]
    progress: bool
    data_iter: Any  # training batches for the taylor criterion, else None


def _remove_blocks(model: nn.Module, run: _Run) -> tuple[nn.Module, dict[str, Any], float, float]:
    """Depth pruning: the model without its ``remove_blocks`` cheapest blocks, the report, and the factors that
    keep a MACs / latency budget relative to the input model (input cost / cost after block removal)."""
    from .depth import block_sensitivity, rank_blocks, remove_blocks, removable_blocks
    from .sensitivity import count_macs

    cfg, x, acc, lat, backend, say = run.cfg, run.x, run.acc, run.lat, run.backend, run.say

    blocks = removable_blocks(model, x)
    if cfg.remove_blocks > len(blocks):
        raise LightnnError(f"remove_blocks {cfg.remove_blocks}: the model has only {len(blocks)} removable "
                           f"residual blocks ({blocks})")
    say(f"accuracy with each of {len(blocks)} removable blocks removed alone ...")
    bsens = block_sensitivity(model, blocks, acc)
    rep: dict[str, Any] = {"top1_removed_alone": bsens, "rank": cfg.rank_blocks}
    if cfg.rank_blocks == "latency":
        say(f"{backend} latency at batch {cfg.latency_batch} with each block removed alone ...")
        base_ms = lat(model)
        ms = block_sensitivity(model, blocks, lat)
        order = rank_blocks(bsens, baseline=acc(model), latency_removed=ms, baseline_latency=base_ms)
        rep.update(ms_removed_alone=ms, ms=base_ms, latency_backend=backend, latency_batch=cfg.latency_batch)
    else:
        order = rank_blocks(bsens)
    chosen = order[: cfg.remove_blocks]
    shallow = remove_blocks(model, chosen, x).cpu()
    macs_scale = count_macs(model, x) / count_macs(shallow, x)
    latency_scale = lat(model) / lat(shallow) if cfg.target_latency is not None else 1.0
    rep["removed"] = chosen
    say("removed " + ", ".join(f"{b} ({bsens[b]:.2f}%)" for b in chosen))
    return shallow, rep, macs_scale, latency_scale


def _uniform_plan(model: nn.Module, graph, cost_fn: LatencyFn, target: float, what: str, steps: int,
                  run: _Run) -> dict[str, Any]:
    """One ratio for every group, bisected until the pruned model costs at most ``target`` of the model."""
    c0 = cost_fn(model)

    def apply(r: float) -> nn.Module:
        return prune_channels(model, run.x, r, criterion=run.cfg.criterion, round_to=run.cfg.round_to,
                              data=run.data_iter, graph=graph)

    # absolute costs: the bisection compares cost <= target x c0 exactly as the pipeline always did
    found = budget_search(apply, cost_fn, target * c0, 0.0, _MAX_UNIFORM, steps,
                          infeasible=lambda c: f"even a uniform ratio of {_MAX_UNIFORM} keeps {c / c0:.1%} of the "
                                               f"{what}, above the budget {target:.1%}: channel pruning alone cannot "
                                               "meet it (remove blocks first or relax the budget)")
    return {"kind": "uniform", "ratio": found.knob, "cost": found.cost / c0, "budget": {what: target},
            "search": [{"ratio": t["knob"], "cost": t["cost"] / c0, "feasible": t["feasible"]} for t in found.trace]}


def _plan(model: nn.Module, graph, scales: tuple[float, float], report: dict, run: _Run) -> tuple[Any, str]:
    """(ratio or per-group ratios, scope) meeting the budget; records the plan (and sensitivity) in ``report``."""
    from .sensitivity import count_macs, plan_ratios

    cfg, x, lat = run.cfg, run.x, run.lat
    if cfg.ratio is not None:
        return cfg.ratio, cfg.scope
    macs_scale, latency_scale = scales
    what = "macs" if cfg.target_macs is not None else "latency"
    asked = cfg.target_macs if what == "macs" else cfg.target_latency
    target = asked * (macs_scale if what == "macs" else latency_scale)  # relative to the model after block removal
    if target >= 1.0:
        flag = "target_macs" if what == "macs" else "target_latency"
        raise LightnnError(f"removing {cfg.remove_blocks} blocks already leaves {asked / target:.1%} of the {what}, "
                           f"at or below {flag} {asked}: remove fewer blocks or use ratio")
    if what == "latency":
        report["latency_backend"] = run.backend
        run.say(f"latency budget measured with {run.backend}")
    steps = cfg.search_steps or (20 if what == "macs" else 8)
    if cfg.plan == "uniform":
        cost_fn = (lambda m: count_macs(m, x)) if what == "macs" else lat
        report["plan"] = _uniform_plan(model, graph, cost_fn, target, what, steps, run)
        return report["plan"]["ratio"], "layer"
    sens = _analyze(model, x, cfg, graph, run.acc, run.say, run.progress)
    report["sensitivity"] = sens
    report["plan"] = plan_ratios(model, x, sens, target_macs=target if what == "macs" else None,
                                 target_latency=target if what == "latency" else None,
                                 latency_fn=lat if what == "latency" else None, criterion=cfg.criterion,
                                 round_to=cfg.round_to, graph=graph, iters=steps)
    return report["plan"]["ratios"], "layer"


def _finetune(pruned: nn.Module, teacher: nn.Module, train: Any, val: Any, cfg: PruneConfig, norm: dict, device: str,
              progress: bool, verbose: bool, finetune_dir: str | Path | None) -> dict[str, Any]:
    from ..train import AuxLoss, Distillation, TrainConfig, fit  # fit looked up at call time: a test can watch it

    config = TrainConfig(epochs=max(1, round(cfg.finetune_epochs)), lr=cfg.lr, batch_size=cfg.batch_size,
                         weight_decay=cfg.weight_decay, schedule=cfg.schedule, warmup_epochs=cfg.warmup_epochs,
                         label_smoothing=cfg.label_smoothing, device=device, seed=cfg.seed, mean=norm["mean"],
                         std=norm["std"], progress=progress, verbose=verbose)
    callbacks = [AuxLoss()] + ([Distillation(teacher, weight=cfg.kd_weight)] if cfg.distill else [])
    return fit(pruned, train, val, config, callbacks=callbacks, output_dir=finetune_dir,
               resume=finetune_dir is not None)


def prune_to_budget(model: nn.Module, config: PruneConfig, train: Any = None, val: Any = None, *,
                    latency: LatencyFn | None = None, log: Log = None, progress: bool = False,
                    finetune_dir: str | Path | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Structured pruning of ``model`` to ``config``'s budget (see :class:`PruneConfig` and the module docstring).

    ``train`` / ``val`` are :class:`~lightnn.data.ImageData` (:meth:`PruneConfig.data_needs` says which the config
    needs). ``latency(model) -> ms`` replaces the deployment measurement (:func:`deployment_latency`) for a latency
    budget and latency ranking of blocks. Normalization is the model record's, else the training data's
    channel statistics. ``finetune_dir``: the trainer's output folder (an interrupted fine-tune resumes from it).

    Returns ``(pruned, report)``: the pruned model on the CPU, its record holding the edits and the normalization, and a JSON-ready
    report with ``config``, ``unsupported``, ``plan`` (and ``sensitivity``, ``blocks``, ``latency_backend`` when
    used), ``verify_max_diff`` (shrunk vs masked), ``macs`` / ``params`` before and after, ``top1`` (with
    validation data), ``finetune`` / ``finetune_final`` (the trainer's last epoch record) and ``seconds`` (block
    removal + planning, fine-tuning).
    """
    need = config.data_needs()
    for split, why in need.items():
        if {"train": train, "val": val}[split] is None:
            raise LightnnError(f"{split} data is required: {why}")
    from .sensitivity import count_macs

    say = log or (lambda s: None)
    t_start = time.perf_counter()
    device = _device(config)
    model = model.cpu().eval()
    size = _input_size(model, train, val)
    x = torch.randn(1, *size)
    norm = _normalization(model, train, val)
    acc = _accuracy(val, config, norm, device)
    if latency is not None:
        lat, backend = latency, "caller-supplied"
    elif config.latency_table is not None:
        lat, backend = table_latency(config.latency_table, size, config.latency_batch)
    else:
        lat, backend = deployment_latency(size, config.latency_batch)
    data_iter = None
    if _needs_gradients(config.criterion):
        from ..data import BatchLoader

        data_iter = BatchLoader(train, 64, shuffle=True, mean=norm["mean"], std=norm["std"])
    run = _Run(config, x, acc, lat, backend, say, progress, data_iter)
    report: dict[str, Any] = {"config": asdict(config)}
    original, scales = model, (1.0, 1.0)
    if config.remove_blocks:
        model, report["blocks"], *scales = _remove_blocks(model, run)
    graph = _graph(model, x, config, say)
    report["unsupported"] = graph.unsupported
    ratio, scope = _plan(model, graph, tuple(scales), report, run)
    report["seconds"] = {"plan": time.perf_counter() - t_start}
    pruned = prune_channels(model, x, ratio, criterion=config.criterion, scope=scope, round_to=config.round_to,
                            data=data_iter, graph=graph)
    report["verify_max_diff"] = verify_shrink(model, pruned, x)
    report["macs"] = {"before": count_macs(original, x), "after": count_macs(pruned, x)}
    report["params"] = {"before": sum(p.numel() for p in original.parameters()),
                        "after": sum(p.numel() for p in pruned.parameters())}
    if acc is not None:
        report["top1"] = {"before": acc(original), **({"blocks_removed": acc(model)} if config.remove_blocks else {}),
                          "pruned": acc(pruned)}
    if config.finetune_epochs > 0:
        t0 = time.perf_counter()
        res = _finetune(pruned, original, train, val, config, norm, device, progress, log is not None, finetune_dir)
        original.cpu()
        report["top1"]["finetuned"] = acc(pruned)
        report["finetune"] = {"epochs": len(res["history"]), "distill": config.distill, "lr": config.lr,
                              "weight_decay": config.weight_decay, "label_smoothing": config.label_smoothing,
                              "kd_weight": config.kd_weight if config.distill else None}
        report["finetune_final"] = res["final"]
        report["seconds"]["finetune"] = time.perf_counter() - t0
    pruned.cpu()
    record_update(pruned, normalize=norm)
    return pruned, report


def lowrank_stage(model: nn.Module, config: LowRankConfig) -> tuple[nn.Module, dict[str, Any]]:
    """Truncated-SVD factorization of ``model`` (in place; :func:`lightnn.compress.lowrank.factorize`). Returns the
    model and the per-layer report (:func:`lightnn.compress.lowrank.lowrank_table` renders it)."""
    from .lowrank import factorize

    rep = factorize(model, rank=config.rank, energy=config.energy, layers=list(config.layers),
                    exclude=list(config.exclude), input_size=getattr(model, "default_input_size", None))
    return model, rep.to_dict()


def _needs_gradients(criterion: str) -> bool:
    """Whether the registered importance criterion scores from gradients of training batches (taylor)."""
    from .importance import get_criterion

    return bool(getattr(get_criterion(criterion), "needs_gradients", False))
