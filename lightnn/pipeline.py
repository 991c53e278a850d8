"""The main job behind ``lightnn run``: design -> measure -> train -> select -> prune -> quantize -> deploy -> report.

Stages (each prints one line, writes its results into ``state.json`` in the run folder, and is skipped when a
re-run finds it done, so an interrupted run resumes where it stopped; training itself resumes from ``last.pt``):

1. ``data``: load the dataset (default: the CIFAR-10 sample shipped in the package) and carve a seeded validation split.
2. ``candidates``: for every model in the config: profile (params, MACs, memory traffic), train briefly, evaluate,
   export to ONNX (BN folded) and measure ONNX Runtime latency at each batch size.
3. ``select``: the best accuracy-per-latency model by MnasNet's soft reward ACC x (LAT / T)^w, w = -0.07, with T the
   baseline's latency (the first model, a ResNet, is the baseline).
4. ``search`` (off unless ``search.enabled``): the automatic compression search of ``lightnn search compress``
   (:func:`lightnn.search.job.search_compress`) on the selected model; its folder is ``search/`` in the run folder
   and its best model per constraint is reported next to the stages.
5. ``prune``: dependency-aware channel pruning of the selected model to a MACs budget, fine-tuning, re-measuring.
6. ``quantize``: ONNX Runtime static int8 (per-channel weights, pre-processing) of the pruned model, with parity,
   accuracy, size and latency measured against its fp32 export in the same process. It ships the int8 model (or a
   mixed one, slow op types kept in float) only where that is faster than fp32 at the deployment batch, else fp32.
7. ``report``: ``report.md``, ``report.json``, ``pareto.png`` and ``stages.png``.

Libraries doing the heavy lifting: PyTorch (training), ONNX (export), ONNX Runtime (latency, int8), matplotlib (plots).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
import torch.nn as nn

from .errors import LightnnError
from .utils.checks import Number
from .utils.io import atomic_write_json, atomic_write_text
from .utils.runfolder import lock_folder, remove_partial_writes

if TYPE_CHECKING:
    from .export.quantize import QuantReport

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent / "configs" / "run.yaml"
STAGES = ("data", "candidates", "select", "search", "prune", "quantize", "report")


def default_config() -> dict[str, Any]:
    import yaml

    return yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())


def _deep_update(base: dict, new: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (new or {}).items():
        out[k] = _deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def resolve_config(user: dict | None = None, **overrides: Any) -> dict[str, Any]:
    """The default config, updated by a user config (nested keys merge), then by explicit overrides.

    Every key must be one of :data:`SCHEMA` (an unknown one is refused, naming it and the allowed ones) and every
    value must have its type and range (``train.epochs: ten``, ``train.batch_size: 8.5``, ``prune.target_macs:
    lots`` are refused naming the key); each ``models`` entry is built on the meta device first, so an unknown,
    unbuildable or oversized architecture is refused before any work."""
    check_keys(user or {})
    cfg = _deep_update(default_config(), user or {})
    for k, v in overrides.items():
        if v is not None:
            cfg[k] = v
    _validate(cfg)
    return cfg


class _OneOf:
    """A config value from a fixed set (``None`` in ``values`` allows null)."""

    def __init__(self, *values: Any) -> None:
        self.values = values

    def __call__(self, v: Any) -> Any:
        if isinstance(v, bool) and not any(isinstance(x, bool) for x in self.values) or v not in self.values:
            raise LightnnError(f"must be one of {[x for x in self.values]}, got {v!r}")
        return v


class _Registered:
    """A config value naming an entry of a registry, read when the value is checked (so a criterion or method
    registered after import is accepted): ``names`` returns the allowed names."""

    def __init__(self, names: Callable[[], Any]) -> None:
        self.names = names

    def __call__(self, v: Any) -> Any:
        allowed = list(self.names())
        if not isinstance(v, str) or v not in allowed:
            raise LightnnError(f"must be one of {allowed}, got {v!r}")
        return v


def _criteria() -> list[str]:
    from .compress.importance import criteria

    return criteria()


def _calibration_methods() -> tuple[str, ...]:
    from .export.quantize import CALIBRATION_METHODS

    return CALIBRATION_METHODS


def _optional(check: Number) -> Callable[[Any], Any]:
    return lambda v: None if v is None else check(v)


def _round_to(v: Any) -> int | str:
    if v == "auto":
        return v
    try:
        return Number(int, 1)(v)
    except argparse.ArgumentTypeError:
        raise LightnnError(f"must be a positive integer or 'auto', got {v!r}") from None


def _positive_ints(v: Any) -> list[int]:
    if not isinstance(v, list) or not v:
        raise LightnnError(f"must be a non-empty list of batch sizes, got {v!r}")
    return [Number(int, 1)(b) for b in v]


# every key a `lightnn run` config may hold -> its check (type, range); nested mappings are sections
SCHEMA: dict[str, Any] = {
    "output": str, "seed": Number(int, 0), "threads": Number(int, 1), "progress": bool,
    "data": {"path": str, "val_fraction": Number(float, 0, 1, lo_open=True, hi_open=True),
             "max_train_images": _optional(Number(int, 1)), "max_val_images": _optional(Number(int, 1)),
             "skip_corrupt": bool},
    "models": list,
    "train": {"epochs": Number(int, 1), "batch_size": Number(int, 1), "lr": Number(float, 0, lo_open=True),
              "weight_decay": Number(float, 0), "schedule": _OneOf("cosine", "onecycle", "constant"),
              "warmup_epochs": Number(float, 0), "label_smoothing": Number(float, 0, 1, hi_open=True)},
    "select": {"latency_batch": Number(int, 1), "reward_w": Number(float)},
    "prune": {"enabled": bool, "target_macs": Number(float, 0.05, 1, hi_open=True),
              "criterion": _Registered(_criteria), "round_to": _round_to,
              "finetune_epochs": Number(float, 0, lo_open=True), "finetune_lr": Number(float, 0, lo_open=True), "distill": bool,
              "search_steps": Number(int, 1)},
    "search": {"enabled": bool, "trials": Number(int, 1), "sampler": _OneOf("random", "tpe", "cmaes", "nsga2"),
               "objectives": str, "constraints": list, "knobs": list,
               "target_macs": _optional(Number(float, 0, 1, lo_open=True, hi_open=True)),
               "finetune_epochs": list, "final_epochs": Number(float, 0), "eval_limit": _optional(Number(int, 1)),
               "workers": Number(int, 1)},
    "quantize": {"enabled": bool, "method": _Registered(_calibration_methods),
                 "calibration_images": Number(int, 1)},
    "latency": {"batches": _positive_ints, "threads": Number(int, 1), "warmup": Number(int, 0),
                "runs": Number(int, 1)},
}


def check_keys(cfg: Any, schema: dict | None = None, where: str = "") -> None:
    """Refuse keys :data:`SCHEMA` does not have (a misspelt key would otherwise be silently ignored) and sections
    that are not mappings."""
    schema = SCHEMA if schema is None else schema
    if not isinstance(cfg, dict):
        raise LightnnError(f"config {where.rstrip('.') or 'file'!r} must be a mapping, got {cfg!r}")
    for k, v in cfg.items():
        if k not in schema:
            raise LightnnError(f"config has unknown key {where + str(k)!r}; allowed "
                               f"{'in ' + repr(where.rstrip('.')) if where else 'at the top level'}: "
                               f"{', '.join(schema)}")
        if isinstance(schema[k], dict):
            check_keys(v, schema[k], f"{where}{k}.")


def _check_values(cfg: dict, schema: dict, where: str = "") -> None:
    """Check (and normalize: ``"1e-3"`` -> 0.001) every value against :data:`SCHEMA`, naming the key."""
    for k, check in schema.items():
        key = f"{where}{k}"
        if k not in cfg:
            if k in ("skip_corrupt", "search_steps", "search"):  # optional keys (absent from older run folders' configs)
                continue
            raise LightnnError(f"config is missing {key!r}")
        v = cfg[k]
        if isinstance(check, dict):
            if not isinstance(v, dict):
                raise LightnnError(f"config {key!r} must be a mapping, got {v!r}")
            _check_values(v, check, key + ".")
        elif check in (str, bool, list):
            if not isinstance(v, check):
                what = {str: "a string", bool: "true or false", list: "a list"}[check]
                raise LightnnError(f"config {key!r} must be {what}, got {v!r}")
        else:
            try:
                cfg[k] = check(v)
            except (argparse.ArgumentTypeError, LightnnError) as e:
                raise LightnnError(f"config {key!r} {e}") from None


def _validate(cfg: dict) -> None:
    _check_values(cfg, SCHEMA)
    models = cfg.get("models")
    if not models or not isinstance(models, list):
        raise LightnnError("config 'models' must be a non-empty list of {name: ..., <arch args>} entries")
    from .models import model_info
    from .models.size_check import check_model_args

    for i, m in enumerate(models):
        if not isinstance(m, dict) or not isinstance(m.get("name"), str):
            raise LightnnError(f"config 'models' entry {m!r} needs a 'name'")
        model_info(m["name"])  # unknown names fail here, before any work
        arch = {k: v for k, v in m.items() if k not in ("name", "label")}
        check_model_args(m["name"], arch, num_classes=10, what=f"config models[{i}]")
    if len({m.get("label") or m["name"] for m in models}) < len(models):
        raise LightnnError("config 'models' lists a model twice: give the entries distinct 'label's")


@dataclass
class Ctx:
    cfg: dict
    out: Path
    state: dict
    log: Callable[[str], None]

    def save(self) -> None:
        atomic_write_json(self.out / "state.json", self.state)


def _stage_line(log, i: int, name: str, msg: str) -> None:
    log(f"[{i}/{len(STAGES)}] {name:<10} {msg}")


# -- measuring helpers ---------------------------------------------------------------------------------------------

def _normalized(data, mean, std, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(N, C, H, W) float32 normalized images and int64 labels as numpy (what ONNX Runtime is fed)."""
    x = data.images[:limit] if limit else data.images
    y = data.labels[:limit] if limit else data.labels
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    xf = (x.float() / 255.0 - m) / s
    return xf.numpy().astype(np.float32), y.numpy().astype(np.int64)


def _profile_row(model: nn.Module, input_size: tuple[int, int, int]) -> dict[str, Any]:
    from .profile import profile

    rep = profile(model, (1, *input_size), strict=True)
    return {"params": int(rep.params), "macs": int(rep.macs), "memory_bytes": int(rep.memory_bytes)}


def _ort_latency(onnx_path: Path, input_size, cfg: dict) -> dict[str, dict]:
    from .runtime import OrtSession

    lc = cfg["latency"]
    sess = OrtSession(onnx_path, threads=int(lc["threads"]))
    out = {}
    for b in lc["batches"]:
        lat = sess.latency(int(b), warmup=int(lc["warmup"]), runs=int(lc["runs"]), input_size=tuple(input_size))
        out[str(b)] = lat.to_dict()
    return out


def _onnx_top1(onnx_path: Path, x: np.ndarray, y: np.ndarray, threads: int) -> float:
    from .runtime import OrtSession
    from .train import array_batches, evaluate

    return float(evaluate(OrtSession(onnx_path, threads=threads), array_batches(x, y, 128))["top1"])


def _lat_fields(lat: dict[str, dict]) -> dict[str, float]:
    return {f"latency_b{b}_ms": v["median_ms"] for b, v in lat.items()} | \
           {f"latency_b{b}_iqr_ms": v["iqr_ms"] for b, v in lat.items()}


# -- stages --------------------------------------------------------------------------------------------------------

def _stage_data(ctx: Ctx):
    from .data import load_dataset

    d = ctx.cfg["data"]
    kw = dict(val_fraction=float(d["val_fraction"]), seed=int(ctx.cfg["seed"]),
              skip_corrupt=bool(d.get("skip_corrupt")))
    train = load_dataset(d["path"], "train", **kw)
    val = load_dataset(d["path"], "val", **kw)
    if d.get("max_train_images") and len(train) > int(d["max_train_images"]):
        g = torch.Generator().manual_seed(int(ctx.cfg["seed"]))
        train = train.subset(torch.randperm(len(train), generator=g)[: int(d["max_train_images"])].sort().values)
    if d.get("max_val_images") and len(val) > int(d["max_val_images"]):
        g = torch.Generator().manual_seed(int(ctx.cfg["seed"]) + 1)
        val = val.subset(torch.randperm(len(val), generator=g)[: int(d["max_val_images"])].sort().values)
    ctx.state["data"] = {"source": train.source, "train_images": len(train), "val_images": len(val),
                         "classes": train.classes, "image_size": list(train.image_size)}
    return train, val


def _train_cfg(ctx: Ctx, epochs: int | None = None, lr: float | None = None) -> dict:
    t = dict(ctx.cfg["train"])
    if epochs is not None:
        t["epochs"] = epochs
    if lr is not None:
        t["lr"] = lr
    return t


def _fit(model, train, val, ctx: Ctx, out_dir: Path, tcfg: dict):
    from .train import AuxLoss, TrainConfig, fit

    config = TrainConfig(epochs=int(tcfg["epochs"]), batch_size=int(tcfg["batch_size"]), lr=float(tcfg["lr"]),
                         weight_decay=float(tcfg["weight_decay"]), schedule=tcfg["schedule"],
                         warmup_epochs=float(tcfg["warmup_epochs"]), label_smoothing=float(tcfg["label_smoothing"]),
                         device="cpu", seed=int(ctx.cfg["seed"]), progress=bool(ctx.cfg.get("progress", True)),
                         verbose=False)
    return fit(model, train, val, config, callbacks=[AuxLoss()], output_dir=out_dir, resume=True)


def _export_and_measure(model: nn.Module, name: str, ctx: Ctx, val_xy, input_size) -> dict[str, Any]:
    from .export.onnx import check_parity, export_onnx

    path = ctx.out / "models" / f"{name}.onnx"
    export_onnx(model, path, input_size=input_size)
    x, y = val_xy
    parity = check_parity(model, path, inputs=x[:64])
    row = {"onnx": str(path.relative_to(ctx.out)), "size_bytes": path.stat().st_size,
           "parity_max_abs_diff": float(parity.max_abs_diff), "parity_top1_agreement": float(parity.top1_agreement),
           "onnx_top1": _onnx_top1(path, x, y, int(ctx.cfg["latency"]["threads"]))}
    lat = _ort_latency(path, input_size, ctx.cfg)
    row["latency"] = lat
    row.update(_lat_fields(lat))
    return row


def _stage_candidates(ctx: Ctx, train, val) -> None:
    from .checkpoint import save_checkpoint
    from .models import create_model
    from .train import check_input_size, seed_everything

    done = ctx.state.setdefault("candidates", {})
    size = tuple(train.image_size)
    for i, spec in enumerate(ctx.cfg["models"]):
        spec = dict(spec)
        name = spec.pop("name")
        key = spec.pop("label", None) or name
        if key in done:
            ctx.log(f"    {key}: done earlier (top-1 {done[key]['top1']:.1f}%), skipped")
            continue
        seed_everything(int(ctx.cfg["seed"]))  # each candidate's initial weights depend on the seed alone
        model = create_model(name, num_classes=len(train.classes), in_chans=size[0], **spec)
        check_input_size(model, train)
        row: dict[str, Any] = {"name": key, "model": name, "arch_kwargs": spec, "baseline": i == 0}
        row.update(_profile_row(model, size))
        t0 = time.perf_counter()
        res = _fit(model, train, val, ctx, ctx.out / "train" / key, _train_cfg(ctx))
        row["train_time_s"] = round(time.perf_counter() - t0, 1)
        row["top1"] = float(res["final"]["val_top1"])
        row["top5"] = float(res["final"].get("val_top5", float("nan")))
        row["normalize"] = res["normalize"]
        ckpt = save_checkpoint(ctx.out / "models" / f"{key}.pt", model, meta={"normalize": res["normalize"],
                                                                                 "top1": row["top1"]})
        row["checkpoint"] = str(ckpt.relative_to(ctx.out))
        val_xy = _normalized(val, res["normalize"]["mean"], res["normalize"]["std"])
        row.update(_export_and_measure(model, key, ctx, val_xy, size))
        done[key] = row
        ctx.save()
        ctx.log(f"    {key}: {row['params'] / 1e6:.2f} M params, {row['macs'] / 1e6:.1f} M MACs, "
                f"top-1 {row['top1']:.1f}%, ORT {row['latency_b1_ms']:.2f} ms @1, "
                f"{row.get('latency_b32_ms', float('nan')):.2f} ms @32")


def mnas_reward(acc: float, lat: float, target: float, w: float = -0.07) -> float:
    """MnasNet's soft multi-objective reward ACC x (LAT / T)^w (alpha = beta = w)."""
    return acc * (lat / target) ** w


def _select_batch(cfg: dict) -> int:
    b = int(cfg["select"]["latency_batch"])
    batches = [int(x) for x in cfg["latency"]["batches"]]
    return b if b in batches else batches[-1]


def _stage_select(ctx: Ctx) -> str:
    rows = list(ctx.state["candidates"].values())
    b = str(_select_batch(ctx.cfg))
    base = next(r for r in rows if r["baseline"])
    target = base[f"latency_b{b}_ms"]
    w = float(ctx.cfg["select"]["reward_w"])
    scores = {r["name"]: mnas_reward(r["top1"], r[f"latency_b{b}_ms"], target, w) for r in rows}
    best = max(scores, key=scores.get)
    ctx.state["select"] = {"best": best, "scores": scores, "latency_batch": int(b), "target_ms": target, "w": w,
                           "baseline": base["name"]}
    return best


def _stage_prune(ctx: Ctx, train, val) -> None:
    from .checkpoint import load_model, save_checkpoint
    from .compress.stages import PruneConfig, prune_to_budget
    from .models import model_normalization, record_update

    best = ctx.state["select"]["best"]
    row0 = ctx.state["candidates"][best]
    model = load_model(ctx.out / row0["checkpoint"])
    record_update(model, normalize=row0["normalize"])
    size = tuple(train.image_size)
    pc, tc = ctx.cfg["prune"], ctx.cfg["train"]
    # one uniform ratio over all channel groups, bisected until the shrunk model meets the MACs budget, then the
    # training recipe of the candidates (at the prune stage's epochs and rate) with the unpruned model as teacher
    cfg = PruneConfig(target_macs=float(pc["target_macs"]), plan="uniform", criterion=pc["criterion"],
                      round_to=pc["round_to"], search_steps=int(pc.get("search_steps", 8)), eval_limit=None,
                      finetune_epochs=float(pc["finetune_epochs"]), lr=float(pc["finetune_lr"]),
                      weight_decay=float(tc["weight_decay"]), label_smoothing=float(tc["label_smoothing"]),
                      schedule=tc["schedule"], warmup_epochs=float(tc["warmup_epochs"]),
                      distill=bool(pc.get("distill", True)), batch_size=int(tc["batch_size"]), device="cpu",
                      seed=int(ctx.cfg["seed"]))
    pruned, rep = prune_to_budget(model, cfg, train, val, progress=bool(ctx.cfg.get("progress", True)),
                                  finetune_dir=ctx.out / "train" / f"{best}-pruned")
    row: dict[str, Any] = {"name": f"{best}-pruned", "model": row0["model"],
                           "uniform_ratio": round(rep["plan"]["ratio"], 4)}
    row.update(_profile_row(pruned, size))
    row["finetune_time_s"] = round(rep["seconds"].get("finetune", 0.0), 1)
    row["top1_before_finetune"] = rep["top1"]["pruned"]
    final = rep.get("finetune_final") or {"val_top1": rep["top1"]["pruned"]}
    row["top1"] = float(final["val_top1"])
    row["normalize"] = model_normalization(pruned)
    ckpt = save_checkpoint(ctx.out / "models" / f"{best}-pruned.pt", pruned, meta={"normalize": row["normalize"]})
    row["checkpoint"] = str(ckpt.relative_to(ctx.out))
    val_xy = _normalized(val, row["normalize"]["mean"], row["normalize"]["std"])
    row.update(_export_and_measure(pruned, f"{best}-pruned", ctx, val_xy, size))
    ctx.state["prune"] = row


def _stage_search(ctx: Ctx) -> None:
    from .search.compress import CompressSearchConfig
    from .search.job import infeasible_message, search_compress

    sc, d = ctx.cfg["search"], ctx.cfg["data"]
    best = ctx.state["select"]["best"]
    ckpt = ctx.out / ctx.state["candidates"][best]["checkpoint"]
    conf = CompressSearchConfig(knobs=tuple(sc["knobs"]), target_macs=sc.get("target_macs"),
                                finetune_epochs=tuple(sc["finetune_epochs"]), final_epochs=float(sc["final_epochs"]),
                                eval_limit=sc.get("eval_limit"), val_fraction=float(d["val_fraction"]),
                                split_seed=int(ctx.cfg["seed"]), batch_size=int(ctx.cfg["train"]["batch_size"]),
                                latency_threads=int(ctx.cfg["latency"]["threads"]))
    summary = search_compress(ckpt, d["path"], ctx.out / "search", config=conf, objectives=sc["objectives"],
                              constraints=sc.get("constraints") or None, trials=int(sc["trials"]),
                              sampler=sc["sampler"], seed=int(ctx.cfg["seed"]), workers=int(sc["workers"]),
                              log=lambda m: ctx.log("           " + m))
    if not summary["feasible"]:
        ctx.log("           " + infeasible_message(summary))
    ctx.state["search"] = {
        "model": best, "folder": "search", "trials": len(summary["trials"]), "front": summary["front"],
        "feasible": summary["feasible"],
        "shipped": {s: {"for": t["for"], "trial": t["trial"], "folder": f"search/best/{s}",
                        "top1": summary["builds"][s]["val_metrics"]["top1"],
                        "macs": summary["builds"][s]["val_metrics"]["macs"],
                        "latency_ms": summary["builds"][s]["val_metrics"]["latency"]}
                    for s, t in summary["targets"].items()}}


def _stage_quantize(ctx: Ctx, train, val) -> None:
    from .export.calib import ImageSet
    from .export.quantize import quantize_report

    row0 = ctx.state["prune"]
    fp32 = ctx.out / row0["onnx"]
    int8 = ctx.out / "models" / f"{row0['name']}-int8.onnx"
    norm = row0["normalize"]
    calib_x, _ = _normalized(train, norm["mean"], norm["std"], limit=int(ctx.cfg["quantize"]["calibration_images"]))
    val_x, val_y = _normalized(val, norm["mean"], norm["std"])
    lc = ctx.cfg["latency"]
    batches = [int(b) for b in lc["batches"]]
    deploy = _select_batch(ctx.cfg)
    # the deployment batch goes first: quantize_report searches for a mixed model (slow op types kept in float)
    # when int8 is not faster than fp32 at its first batch
    rep = quantize_report(fp32, int8, calib_x, val_data=ImageSet(val_x, val_y, list(val.classes), "val"),
                          method=ctx.cfg["quantize"]["method"], batches=[deploy] + [b for b in batches if b != deploy],
                          threads=int(lc["threads"]), runs=int(lc["runs"]),
                          mixed_path=ctx.out / "models" / f"{row0['name']}-mixed.onnx")
    d = rep.as_dict()
    lat = {b: d["latency"][f"int8@{b}"] for b in map(str, batches)}
    int8_path = Path(rep.int8_path)
    kind, shipped, why = ship_decision(rep, fp32, deploy)
    row = {"name": f"{row0['name']}-int8", "onnx": str(int8_path.relative_to(ctx.out)),
           "size_bytes": int8_path.stat().st_size, "top1": rep.int8_top1, "fp32_top1_ort": rep.fp32_top1,
           "top1_agreement": rep.top1_agreement, "method": rep.method, "kept_float": rep.kept_float,
           "speedup_vs_fp32": {b: rep.speedup[b] for b in map(str, batches)}, "verdict": rep.verdict,
           "latency": lat, "params": row0["params"], "macs": row0["macs"], "memory_bytes": row0["memory_bytes"],
           "deploy_batch": deploy, "shipped": kind, "shipped_onnx": str(shipped.relative_to(ctx.out)),
           "shipped_why": why}
    if rep.mixed_path is not None:
        row["mixed"] = {"onnx": str(Path(rep.mixed_path).relative_to(ctx.out)), "size_bytes": rep.mixed_bytes,
                        "top1": rep.mixed_top1, "top1_agreement": rep.mixed_agreement,
                        "speedup_vs_fp32": {b: rep.mixed_speedup[b] for b in map(str, batches)},
                        "latency": {b: d["latency"][f"mixed@{b}"] for b in map(str, batches)}}
    row.update(_lat_fields(lat))
    ctx.state["quantize"] = row


def ship_decision(rep: QuantReport, fp32_path: Path, batch: int) -> tuple[str, Path, str]:
    """Which model the quantize stage ships: ``("int8" | "mixed" | "fp32", path, why)``.

    The fastest of the models :func:`~lightnn.export.quantize.quantize_report` timed side by side at the deployment
    batch: the int8 model, the mixed one (slow op types kept in float, when the search found one) or the fp32 ONNX
    model. A quantized model ships only when it is strictly faster than fp32, so the deployed model is never slower
    than the float one.
    """
    b = str(batch)
    f_ms = rep.latency[f"fp32@{b}"]["median_ms"]
    options = {"int8": (rep.speedup[b], rep.latency[f"int8@{b}"]["median_ms"], Path(rep.int8_path), "int8")}
    if rep.mixed_path is not None:
        options["mixed"] = (rep.mixed_speedup[b], rep.latency[f"mixed@{b}"]["median_ms"], Path(rep.mixed_path),
                            f"int8 with {', '.join(rep.kept_float)} kept in float")
    kind = max(options, key=lambda k: options[k][0])
    s, q_ms, path, what = options[kind]
    nums = f"{what} {q_ms:.2f} ms vs fp32 {f_ms:.2f} ms median at batch {b}, {s:.2f}x"
    others = "; ".join(f"{w} {ms:.2f} ms, {sp:.2f}x" for k, (sp, ms, _, w) in options.items() if k != kind)
    if s > 1.0:
        return kind, path, (f"{kind} is faster than fp32 at the deployment batch ({nums}"
                            + (f"; {others}" if others else "") + ")")
    i_s, i_ms = options["int8"][:2]
    head = f"int8 is not faster than fp32 at the deployment batch (int8 {i_ms:.2f} ms vs fp32 {f_ms:.2f} ms median " \
           f"at batch {b}, {i_s:.2f}x)"
    if "mixed" in options:
        m_s, m_ms, _, m_what = options["mixed"]
        return "fp32", Path(fp32_path), (f"{head}; keeping the slow op types in float helped but not enough "
                                         f"({m_what} {m_ms:.2f} ms, {m_s:.2f}x)")
    return "fp32", Path(fp32_path), f"{head}; no mixed model (slow op types kept in float) was faster either"


# -- report --------------------------------------------------------------------------------------------------------

def _fmt(v, f="{:.2f}"):
    return "-" if v is None else f.format(v)


def stage_rows(state: dict, batches: list[int] | None = None) -> list[dict]:
    """One row per pipeline stage: baseline, selected model, pruned, int8."""
    cands = state["candidates"]
    base = next(r for r in cands.values() if r["baseline"])
    best = cands[state["select"]["best"]]
    rows = [dict(base, stage="baseline"), dict(best, stage="selected")]
    if "prune" in state:
        rows.append(dict(state["prune"], stage="pruned"))
    if "quantize" in state:
        rows.append(dict(state["quantize"], stage="int8"))
    for r in rows:
        for b in map(str, batches or state["config"]["latency"]["batches"]):
            k = f"latency_b{b}_ms"
            if r.get(k) and base.get(k):
                r[f"speedup_b{b}"] = base[k] / r[k]
    return rows


def write_report(ctx: Ctx) -> None:
    from .report.plots import plot_pareto, plot_stages

    st = ctx.state
    cands = list(st["candidates"].values())
    rows = stage_rows(st)
    bs = [str(b) for b in ctx.cfg["latency"]["batches"]]
    lines = [f"# lightnn run report", "",
             f"- date: {st['meta']['date']}; machine: {st['meta']['machine']}; torch {st['meta']['torch']}; "
             f"ONNX Runtime {st['meta']['onnxruntime']}; {ctx.cfg['latency']['threads']} thread(s)",
             f"- data: {st['data']['source']} ({st['data']['train_images']} train / {st['data']['val_images']} val "
             f"images, {len(st['data']['classes'])} classes, {'x'.join(map(str, st['data']['image_size']))})",
             f"- MACs = multiply-adds (FLOPs = 2 x MACs); memory traffic = activations read + written + weights "
             f"(ShuffleNet V2's MAC); latency = median over {ctx.cfg['latency']['runs']} runs in ONNX Runtime "
             f"(IQR in brackets); accuracy = validation top-1 after {ctx.cfg['train']['epochs']} epoch(s)",
             "", "## Candidates (design -> measure -> train)", "",
             "| model | params (M) | MACs (M) | memory traffic (MB) | top-1 (%) | train time (s) | "
             + " | ".join(f"latency b{b} (ms)" for b in bs) + " | MnasNet reward |",
             "|---|---:|---:|---:|---:|---:|" + "---:|" * len(bs) + "---:|"]
    for r in cands:
        lat = " | ".join(f"{r[f'latency_b{b}_ms']:.2f} ({r[f'latency_b{b}_iqr_ms']:.2f})" for b in bs)
        mark = " (baseline)" if r["baseline"] else (" **selected**" if r["name"] == st["select"]["best"] else "")
        lines.append(f"| {r['name']}{mark} | {r['params'] / 1e6:.3f} | {r['macs'] / 1e6:.2f} | "
                     f"{r['memory_bytes'] / 1e6:.2f} | {r['top1']:.2f} | {r['train_time_s']:.0f} | {lat} | "
                     f"{st['select']['scores'][r['name']]:.2f} |")
    sel = st["select"]
    lines += ["", f"Selection: the highest ACC x (LAT/T)^{sel['w']} at batch {sel['latency_batch']}, "
                  f"T = {sel['target_ms']:.2f} ms (the baseline {sel['baseline']}): **{sel['best']}**.", "",
              "## Stages (select -> prune -> quantize -> deploy)", "",
              "| stage | model | params (M) | MACs (M) | memory traffic (MB) | top-1 (%) | size on disk (KB) | "
              + " | ".join(f"latency b{b} (ms)" for b in bs) + " | "
              + " | ".join(f"speed-up b{b} vs baseline" for b in bs) + " |",
              "|---|---|---:|---:|---:|---:|---:|" + "---:|" * (2 * len(bs))]
    for r in rows:
        lat = " | ".join(f"{r[f'latency_b{b}_ms']:.2f} ({r[f'latency_b{b}_iqr_ms']:.2f})" for b in bs)
        sp = " | ".join(f"{r.get(f'speedup_b{b}', float('nan')):.2f}x" for b in bs)
        lines.append(f"| {r['stage']} | {r['name']} | {r['params'] / 1e6:.3f} | {r['macs'] / 1e6:.2f} | "
                     f"{r['memory_bytes'] / 1e6:.2f} | {_fmt(r.get('top1'))} | {r['size_bytes'] / 1e3:.1f} | "
                     f"{lat} | {sp} |")
    if "prune" in st:
        p = st["prune"]
        lines += ["", f"Pruning: uniform channel ratio {p['uniform_ratio']:.3f} (dependency-aware groups, widths "
                      f"rounded to multiples of {ctx.cfg['prune']['round_to']}) to reach "
                      f"{ctx.cfg['prune']['target_macs']:.0%} of the MACs; top-1 {p['top1_before_finetune']:.2f}% "
                      f"before and {p['top1']:.2f}% after {ctx.cfg['prune']['finetune_epochs']} fine-tuning "
                      f"epoch(s) with the unpruned model as teacher."]
    if "search" in st:
        se = st["search"]
        lines += ["", f"Automatic compression search (`search/report.md`) on {se['model']}: {se['trials']} trials, "
                      f"Pareto front of {len(se['front'])}" + ("" if se["feasible"] else
                                                             ", no trial met the constraints") + "."]
        for s_, b in se["shipped"].items():
            lines.append(f"- {b['for']}: trial {b['trial']} rebuilt in `{b['folder']}/`: top-1 {b['top1']:.2f}%, "
                         f"{b['macs'] / 1e6:.2f} M MACs, {b['latency_ms']:.3f} ms")
    if "quantize" in st:
        q = st["quantize"]
        sp = ", ".join(f"batch {b}: {s:.2f}x" for b, s in q["speedup_vs_fp32"].items())
        lines += ["", f"int8 (ONNX Runtime static, {q['method']} calibration, per-channel weights): top-1 "
                      f"{_fmt(q['top1'])}% vs fp32 {_fmt(q['fp32_top1_ort'])}% (top-1 agreement "
                      f"{_fmt(q['top1_agreement'], '{:.1f}')}%); speed-up over the fp32 ONNX model: {sp}."]
        if q.get("mixed"):
            m = q["mixed"]
            msp = ", ".join(f"batch {b}: {s:.2f}x" for b, s in m["speedup_vs_fp32"].items())
            lines += ["", f"Mixed model (`{m['onnx']}`, {', '.join(q['kept_float'])} kept in float, "
                          f"{m['size_bytes'] / 1e3:.1f} KB): top-1 {_fmt(m['top1'])}% (top-1 agreement with fp32 "
                          f"{_fmt(m['top1_agreement'], '{:.1f}')}%); speed-up over the fp32 ONNX model: {msp}."]
        if q.get("verdict"):
            lines += ["", q["verdict"]]
        if q.get("shipped"):
            lines += ["", f"**Shipped: {q['shipped']}** (`{q['shipped_onnx']}`): {q['shipped_why']}."]
    lines += ["", "## Parity (ONNX vs PyTorch)", "", "| model | max abs diff | top-1 agreement |", "|---|---:|---:|"]
    for r in cands + ([st["prune"]] if "prune" in st else []):
        lines.append(f"| {r['name']} | {r['parity_max_abs_diff']:.2e} | {r['parity_top1_agreement']:.3f} |")
    lines += ["", "## Files", "", "- `report.json` (everything above, for scripts), `state.json` (resume state), "
              "`config.yaml` (the resolved configuration)",
              "- `pareto.png` (accuracy vs latency, marker area ~ MACs), `stages.png` (size and latency per stage)",
              "- `models/`: PyTorch checkpoints (`.pt`, rebuild with `lightnn.create_model(name, checkpoint=...)`) "
              f"and ONNX models (`.onnx`; the deployable one is `{_deployable(st)}`)", ""]
    atomic_write_text(ctx.out / "report.md", "\n".join(lines))
    pts = cands + ([dict(st["prune"])] if "prune" in st else []) + ([dict(st["quantize"])] if "quantize" in st else [])
    b = str(_select_batch(ctx.cfg))
    plot_pareto(pts, ctx.out / "pareto.png", latency_key=f"latency_b{b}_ms",
                title=f"Accuracy vs ONNX Runtime latency at batch {b} (marker area ~ MACs)")
    plot_stages(rows, ctx.out / "stages.png")
    atomic_write_json(ctx.out / "report.json", {"meta": st["meta"], "config": ctx.cfg, "data": st["data"],
                                                "candidates": cands, "select": st["select"], "stages": rows})


def _deployable(st: dict) -> str:
    """The ONNX file the run ships: the quantize stage's choice, else the last fp32 model (no int8 stage)."""
    if st.get("quantize", {}).get("shipped_onnx"):
        return st["quantize"]["shipped_onnx"]
    if "quantize" in st:  # a run folder from before the stage chose between int8 and fp32
        return st["quantize"]["onnx"]
    return (st.get("prune") or st["candidates"][st["select"]["best"]])["onnx"]


# -- driver --------------------------------------------------------------------------------------------------------

def _meta() -> dict[str, str]:
    import onnxruntime

    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()} {platform.processor() or ''} {__import__('os').cpu_count()} cores".strip(),
            "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}


def read_state(path: Path) -> dict[str, Any]:
    """A run folder's ``state.json``, checked: a file that is not valid JSON, or whose stages do not fit together,
    raises :class:`LightnnError` naming it (``--fresh`` starts over) instead of failing somewhere later."""
    fix = "pass --fresh to start the run over (or delete it)"
    try:
        state = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise LightnnError(f"run state {str(path)!r} is not valid JSON ({str(e)[:120]}): {fix}") from None
    if not isinstance(state, dict) or not isinstance(state.get("config"), dict) \
            or not isinstance(state.get("done", []), list):
        raise LightnnError(f"run state {str(path)!r} is not a lightnn run state (no 'config' mapping and 'done' "
                           f"list): {fix}")
    for name in state.get("done", []):
        if name not in STAGES or (name not in ("data", "report") and not isinstance(state.get(name), dict)):
            raise LightnnError(f"run state {str(path)!r} lists stage {name!r} as done without its results: {fix}")
    return state


def run(cfg: dict | None = None, output: str | Path | None = None, log: Callable[[str], None] = print,
        fresh: bool = False) -> dict[str, Any]:
    """Run the whole pipeline; returns the final state. Re-running on the same ``output`` resumes.

    The run holds a lock on the folder (:func:`lightnn.utils.runfolder.lock_folder`): a second run on it is
    refused naming the first. Partial files a killed run left are removed before anything else; ``fresh`` deletes
    the earlier run's state, ``models/`` and ``train/`` (the candidates' resume checkpoints) first."""
    cfg = resolve_config(cfg)
    out = Path(output or cfg["output"])
    with lock_folder(out, "run folder"):
        return _run_locked(cfg, out, log, fresh)


def _run_locked(cfg: dict, out: Path, log: Callable[[str], None], fresh: bool) -> dict[str, Any]:
    import shutil

    import yaml

    state_path = out / "state.json"
    if fresh:
        state_path.unlink(missing_ok=True)
        for sub in ("models", "train"):
            shutil.rmtree(out / sub, ignore_errors=True)
    gone = remove_partial_writes(out) + remove_partial_writes(out / "models")
    if gone:
        log(f"removed {len(gone)} partial file(s) an interrupted run left in {out}")
    state: dict[str, Any] = {}
    if state_path.exists():
        state = read_state(state_path)
        if _deep_update(default_config(), state["config"]) != cfg:  # keys added since then take their defaults
            raise LightnnError(f"run folder {str(out)!r} holds a run with another configuration; pass another "
                               f"--output or --fresh to start over")
        log(f"resuming the run in {out} (done: {', '.join(s for s in STAGES if s in state.get('done', [])) or 'nothing'})")
    state.setdefault("config", cfg)
    state.setdefault("done", [])
    state.setdefault("meta", _meta())
    ctx = Ctx(cfg, out, state, log)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
    torch.set_num_threads(int(cfg["threads"]))
    t_all = time.perf_counter()

    def stage(i: int, name: str, fn, *a, describe=None):
        if name in state["done"]:
            _stage_line(log, i, name, "done earlier, skipped")
            return None
        t0 = time.perf_counter()
        _stage_line(log, i, name, "...")
        r = fn(*a)
        state["done"].append(name)
        state.setdefault("times_s", {})[name] = round(time.perf_counter() - t0, 1)
        ctx.save()
        _stage_line(log, i, name, f"done in {time.perf_counter() - t0:.1f} s" + (f": {describe()}" if describe else ""))
        return r

    # data is cheap (cached) and needed by later stages, so it always loads
    _stage_line(log, 1, "data", "...")
    train, val = _stage_data(ctx)
    if "data" not in state["done"]:
        state["done"].append("data")
    ctx.save()
    _stage_line(log, 1, "data", f"{len(train)} train / {len(val)} val images from {state['data']['source']}")
    stage(2, "candidates", _stage_candidates, ctx, train, val,
          describe=lambda: f"{len(state['candidates'])} models trained and measured")
    stage(3, "select", _stage_select, ctx, describe=lambda: f"best accuracy per latency: {state['select']['best']}")
    if cfg.get("search", {}).get("enabled", False):
        stage(4, "search", _stage_search, ctx,
              describe=lambda: f"{state['search']['trials']} trials, {len(state['search']['shipped'])} model(s) "
                               "shipped in search/best/")
    if cfg["prune"].get("enabled", True):
        stage(5, "prune", _stage_prune, ctx, train, val,
              describe=lambda: f"{state['prune']['macs'] / 1e6:.1f} M MACs, top-1 {state['prune']['top1']:.1f}%")
    if cfg["quantize"].get("enabled", True) and "prune" in state:
        stage(6, "quantize", _stage_quantize, ctx, train, val,
              describe=lambda: f"int8 top-1 {_fmt(state['quantize']['top1'])}%, "
                               f"{state['quantize']['size_bytes'] / 1e3:.0f} KB; shipped "
                               f"{state['quantize']['shipped']} ({state['quantize']['shipped_onnx']})")
    state["done"] = [s for s in state["done"] if s != "report"]
    stage(7, "report", write_report, ctx, describe=lambda: f"{out / 'report.md'}")
    log(f"lightnn run finished in {time.perf_counter() - t_all:.0f} s: {out / 'report.md'}")
    return state
