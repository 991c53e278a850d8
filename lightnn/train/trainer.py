"""The trainer: :func:`fit`, the one training loop of lightnn.

Recipe knobs follow the CIFAR/ImageNet practice the papers report (:class:`~lightnn.train.TrainConfig`): SGD with
Nesterov momentum, cosine or one-cycle schedule with linear warm-up, label smoothing (Inception-v3), no weight decay
on norm weights and biases (Goyal et al. 2017), optional bf16 autocast and channels-last. Every method that changes
the loop is a callback (:mod:`lightnn.train.callbacks`): knowledge distillation (Hinton et al. 2015), a moving
average of the weights, Inception's auxiliary-head loss, extra loss terms, pruning masks and their schedules (Deep
Compression keeps pruned weights at zero with them), trained weight sharing, QAT observers, step and time limits.

With ``output_dir`` each epoch atomically writes ``last.pt`` (a lightnn checkpoint holding the optimizer, schedule,
epoch, RNG and callback states), ``metrics.jsonl`` (one JSON object per epoch) and ``config.yaml`` (the resolved
configuration); the run ends with ``model.pt`` (weights + metadata, no optimizer). ``resume=True`` continues from
``last.pt`` and reproduces the uninterrupted run: batches depend only on (seed, epoch, rank) and every RNG state
is restored.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
import torch.nn as nn

from ..errors import CheckpointError, DataError, LightnnError
from ..models import model_name, record_update
from ..data.datasets import ImageData
from ..data.loader import BatchLoader
from ..utils.runfolder import lock_folder, remove_partial_writes
from . import distributed as dist_utils
from .callbacks import Callback, TrainState
from .config import TrainConfig, check_compile_mode
from .evaluate import TTA_MODES, check_num_classes, data_name as _data_name, evaluate, num_classes as _num_classes
from .losses import classification_loss
from .schedule import lr_lambda

__all__ = ["fit", "evaluate", "seed_everything", "param_groups", "check_num_classes", "check_input_size",
           "check_finite", "check_output", "non_finite_tensors", "pick_precision", "bf16_is_fast", "TTA_MODES",
           "check_compile_mode"]


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) generators from ``seed``: call it before a model is built,
    so its initial weights, like the batches :func:`fit` draws from its own ``seed``, depend on the seed alone."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weight decay on conv/linear weights, none on norm weights and biases (any parameter with
    ndim <= 1), the exclusion of Goyal et al. 2017 that the recipes in the papers use."""
    return _weight_decay_groups(model.parameters(), weight_decay)


def _loader(data: Any, *, batch_size: int, train: bool, device: torch.device, seed: int, mean, std,
            channels_last: bool, augment: bool = True, cutout: int = 0) -> Any:
    if isinstance(data, ImageData):
        return BatchLoader(data, batch_size, shuffle=train, augment=train and augment, mean=mean, std=std,
                           device=device, drop_last=train and len(data) > batch_size, seed=seed,
                           channels_last=channels_last, cutout=cutout if train else 0)
    return data  # any iterable of (x, y) batches; set_epoch is used when it has one


def bf16_is_fast(device: torch.device | str) -> bool:
    """Whether bf16 autocast speeds training up on ``device``: CUDA GPUs, and CPUs with AMX tiles (oneDNN runs
    bf16 convolutions and matmuls on them, about 2x fp32 for ResNet-20 on a 2-core Sapphire Rapids slice)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return True
    if dev.type == "cpu":
        probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
        return bool(probe()) if probe is not None else False
    return False


def pick_precision(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], device: torch.device | str,
                   steps: int = 2, compile: bool | str = False,
                   candidates: Iterable[tuple[bool, bool]] = ((False, False), (True, True))) -> dict[str, Any]:
    """Time a few training steps of a copy of ``model`` on ``batch`` in each ``(amp, channels_last)`` candidate
    (default: fp32 contiguous and bf16 autocast + channels-last) and return the fastest:
    ``{"amp", "channels_last", "step_s", "fp32_s", "bf16_cl_s", "compile"}`` (median seconds per step after the
    warm-up steps: the winner's, fp32's and bf16 + channels-last's; a candidate not timed has None).

    Which one wins depends on the model as much as on the machine: on an AMX CPU bf16 + channels-last trains
    ResNet-20 2.1x faster than fp32, but ShuffleNet V2 and IGCV3 (channel shuffles, grouped 1x1 convolutions)
    1.2-1.8x slower. The copy is trained with plain SGD, so ``model`` (weights, BN statistics) is untouched.

    ``compile`` (True or a mode name, as in :func:`fit`) times the copies through ``torch.compile`` instead, because
    the compiled winner can differ from the eager one (IGCV3-CIFAR 0.25 on this machine: fp32 eager, bf16 compiled).
    Each precision then pays one compilation (its first step, reported as ``compile_s``: the larger of the two) and
    one more warm-up step before the timed ones.

    ``compile="auto"`` times every candidate both eager and compiled (default mode) and returns ``"compile": True``
    only when the fastest compiled step beats the fastest eager one by more than 3% (compiling is not always faster:
    a pruned MobileNetV2-CIFAR on this machine steps in 801 ms compiled, 720 ms eager); the four timings are under
    ``"eager"`` and ``"compiled"``, and ``fp32_s`` / ``bf16_cl_s`` are those of the chosen way.
    """
    check_compile_mode(compile)
    dev = torch.device(device)
    x, y = batch
    x, y = x.to(dev), y.to(dev)
    candidates = [(bool(a), bool(c)) for a, c in candidates]
    if not candidates:
        raise LightnnError("pick_precision needs at least one (amp, channels_last) candidate")
    if compile == "auto":
        eager = _time_steps(model, x, y, dev, steps, False, candidates)
        compiled = _time_steps(model, x, y, dev, steps, True, candidates)
        best_e, best_c = min(eager["times"].values()), min(compiled["times"].values())
        use = compiled if best_c < 0.97 * best_e else eager
        out = _precision_record(use["times"], bool(use is compiled))
        out["eager"] = _precision_record(eager["times"], False)
        out["compiled"] = _precision_record(compiled["times"], True)
        out["compile_s"] = compiled["compile_s"]
        return out
    timed = _time_steps(model, x, y, dev, steps, compile, candidates)
    out = _precision_record(timed["times"], compile if isinstance(compile, str) else bool(compile))
    if compile:
        out["compile_s"] = timed["compile_s"]
    return out


def _precision_record(times: dict[tuple[bool, bool], float], compile: bool | str) -> dict[str, Any]:
    amp, cl = min(times, key=times.get)
    return {"amp": amp, "channels_last": cl, "step_s": times[(amp, cl)], "fp32_s": times.get((False, False)),
            "bf16_cl_s": times.get((True, True)), "compile": compile}


def _time_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, dev: torch.device, steps: int,
                compile: bool | str, candidates: list[tuple[bool, bool]]) -> dict[str, Any]:
    """Median seconds per training step of a copy of ``model`` for each (amp, channels_last) candidate."""
    import copy
    import statistics

    warmup = 2 if compile else 1
    times: dict[tuple[bool, bool], float] = {}
    first_step: list[float] = []
    for amp, cl in candidates:
        net = copy.deepcopy(getattr(model, "module", model)).to(dev).train()
        xi = x.contiguous(memory_format=torch.channels_last) if cl else x.contiguous()
        if cl:
            net.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=1e-3)
        run = _compiled(net, compile) if compile else net
        ts = []
        for i in range(steps + warmup):
            t = time.perf_counter()
            try:
                with _autocast(dev, amp):
                    loss, _ = classification_loss(run(xi), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
            except RuntimeError as e:
                if compile and i == 0 and _is_compile_error(e):
                    raise LightnnError(_compile_failure(model, e)) from e
                raise
            opt.step()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            ts.append(time.perf_counter() - t)
        times[(amp, cl)] = statistics.median(ts[warmup:])
        first_step.append(ts[0])
        del net, opt, run
    return {"times": times, "compile_s": max(first_step)}


def _probe_message(precision: dict[str, Any], amp: bool, channels_last: bool, auto: bool) -> str:
    name = ("bf16" if amp else "fp32") + (" + channels-last" if channels_last else "")
    ms = lambda v: "-" if v is None else f"{v * 1e3:.0f} ms"  # noqa: E731
    if auto:
        e, c = precision["eager"], precision["compiled"]
        return (f"compile auto: training {'compiled' if precision['compile'] else 'eager'} in {name} (one training "
                f"step: eager {ms(e['step_s'])}, compiled {ms(c['step_s'])}; fp32 {ms(e['fp32_s'])} / "
                f"{ms(c['fp32_s'])}, bf16 + channels-last {ms(e['bf16_cl_s'])} / {ms(c['bf16_cl_s'])})")
    how = "compiled " if precision["compile"] else ""
    return (f"precision: {name} (one {how}training step takes {ms(precision['fp32_s'])} in fp32, "
            f"{ms(precision['bf16_cl_s'])} in bf16 + channels-last)")


def _compiled(module: nn.Module, compile: bool | str) -> nn.Module:
    """``torch.compile(module)`` in the mode ``compile`` names (True, "default" or "auto": the default mode)."""
    kw = {"mode": compile} if isinstance(compile, str) and compile not in ("default", "auto") else {}
    return torch.compile(module, **kw)


def _compile_failure(model: nn.Module, e: BaseException) -> str:
    return (f"torch.compile could not compile {type(model).__name__} for training "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); train without compile")


def _autocast(device: torch.device, amp: bool):
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _weight_decay_groups(params: Iterable[nn.Parameter], weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for p in params:
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def fit(model: nn.Module, train: Any, val: Any = None, config: TrainConfig | Mapping[str, Any] | None = None, *,
        callbacks: Sequence[Callback] = (), output_dir: str | os.PathLike | None = None,
        resume: bool | str | os.PathLike = False, overwrite: bool | None = None,
        extra_config: Mapping[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """Train ``model`` in place on ``train`` and report on ``val`` each epoch.

    Args:
        model: any ``nn.Module``; in train mode it may return ``(logits, aux...)`` (see :class:`AuxLoss`).
        train, val: :class:`~lightnn.data.ImageData` (wrapped in a :class:`~lightnn.data.BatchLoader`: seeded
            shuffling, pad+crop+flip when ``augment``) or any sized iterable of ``(x, y)`` batches
            (``set_epoch(e)`` is called when it has one). ``val`` may be None.
        config: the :class:`~lightnn.train.TrainConfig` (or a mapping of its fields); ``**overrides`` replace
            fields of it (``fit(m, data, epochs=2, lr=0.05)``); an unknown key is named.
        callbacks: :class:`~lightnn.train.callbacks.Callback` objects, called in list order (``Distillation``,
            ``EMA``, ``AuxLoss``, ``ExtraLoss``, ``Masks``, ``SharedWeights``, ``QATObservers``, ``MaxSteps``,
            ``TimeLimit``, ``LambdaCallback``).
        output_dir: where ``last.pt``, ``model.pt``, ``metrics.jsonl`` and ``config.yaml`` go (rank 0 writes).
        resume: True (``output_dir/last.pt`` if it exists) or a checkpoint path: continue that run.
        overwrite: what a fresh (not resumed) run does when ``output_dir`` holds another run's ``model.pt``,
            ``last.pt`` or ``metrics.jsonl``: None (default) replaces them as it goes, False refuses
            (:func:`check_output`), True deletes them (and ``config.yaml``) first.
        extra_config: more resolved configuration stored in ``config.yaml`` and the checkpoints' ``meta``.

    The run takes ``ceil(epochs x batches per epoch)`` optimizer steps (fewer when a callback limits them), the
    last epoch possibly partial; ``batch_size`` is the total over all DDP processes. ``amp`` None: bf16 autocast on
    CUDA; on a CPU with AMX (:func:`bf16_is_fast`) and a single process :func:`pick_precision` times one batch
    both ways and takes the faster (it depends on the model); otherwise off. ``channels_last`` None follows amp.
    ``compile`` runs the training forward and backward (and a teacher's forward) through ``torch.compile``
    (True, a mode name, or ``"auto"``: time eager and compiled steps on the first batch and compile only when that
    is more than 3% faster; the choice and the timings are stored as ``precision_probe`` in ``config.yaml``, and a
    resumed run keeps it). Evaluation stays eager.

    Safety: rank 0 holds a lock on ``output_dir`` while it writes there (a second run on the same folder is
    refused, naming the holder), removes the partial files a killed run left, and checks before writing anything
    that the model takes the data's images (:func:`check_input_size`). An epoch that ends with a non-finite loss,
    weight or batch-norm statistic stops the run before it is saved (:func:`check_finite`).

    Returns:
        dict with ``history`` (one record per epoch: lr, train_loss, train_top1, val_top1, val_top5, val_loss,
        epoch_time_s, images_per_s), ``final`` (the last record), ``best_val_top1``, ``train_time_s``, ``steps``,
        ``normalize`` and ``output_dir``.
    """
    cfg = _config(config, overrides)
    cbs = _check_callbacks(callbacks)
    if cfg.cutout and not isinstance(train, ImageData):
        raise LightnnError(f"cutout={cfg.cutout} needs training data that lightnn batches itself (an ImageData); "
                           f"{_data_name(train)!r} is an iterable of batches (e.g. --stream): add Cutout to its "
                           f"transforms instead")
    dev = dist_utils.init_from_env(str(cfg.device) if cfg.device is not None else None)
    rank, world = dist_utils.rank(), dist_utils.world_size()
    mean, std = cfg.mean, cfg.std
    if isinstance(train, ImageData) and mean is None:
        mean, std = train.channel_stats()
    mean = [float(v) for v in mean] if mean is not None else None
    std = [float(v) for v in std] if std is not None else None
    k = _num_classes(train)
    if k is not None:
        check_num_classes(model, k, _data_name(train))
    check_input_size(model, train)
    if world > 1 and cfg.batch_size % world:
        raise LightnnError(f"batch_size {cfg.batch_size} must divide by the {world} DDP processes (it is the total "
                           f"batch)")
    out = Path(output_dir) if output_dir is not None else None
    ckpt_path = _resume_path(resume, out)
    cfg, precision = _choose_precision(model, train, cfg, dev, world, ckpt_path, mean, std)
    train_loader = _loader(train, batch_size=cfg.batch_size // world, train=True, device=dev, seed=cfg.seed,
                           mean=mean, std=std, channels_last=cfg.channels_last, augment=cfg.augment,
                           cutout=cfg.cutout)
    val_loader = _loader(val, batch_size=max(cfg.batch_size, 256), train=False, device=dev, seed=cfg.seed,
                         mean=mean, std=std, channels_last=cfg.channels_last) if val is not None else None
    state = _setup(model, cfg, cbs, train_loader, dev, rank, world, mean, std)
    resolved = _resolved(cfg, cbs, extra_config, world, dev, mean, std, precision)
    run = _Run(train_loader=train_loader, val_loader=val_loader, out=out, resume=resume, ckpt_path=ckpt_path,
               overwrite=overwrite, resolved=resolved, k=k, train_name=_data_name(train),
               bar=cfg.progress and rank == 0, normalize={"mean": mean, "std": std})
    if ckpt_path is not None:
        run.start_epoch, run.history, run.best, ts = _restore(ckpt_path, model, state.optimizer, state.scheduler, dev)
        state.step = int(state.scheduler.last_epoch)  # the schedule counts every optimizer step taken
        _restore_callbacks(cbs, ts, ckpt_path)
        if cfg.verbose and rank == 0:
            print(f"resuming from {ckpt_path} after epoch {run.start_epoch}")
    state.net = _wrap(model, dev, world, cfg.compile)
    return _run_epochs(state, run)


def _config(config: TrainConfig | Mapping[str, Any] | None, overrides: Mapping[str, Any]) -> TrainConfig:
    if config is None:
        cfg = TrainConfig()
    elif isinstance(config, TrainConfig):
        cfg = config
    elif isinstance(config, Mapping):
        cfg = TrainConfig.from_dict(config)
    else:
        raise LightnnError(f"fit() config must be a TrainConfig or a mapping of its fields, got "
                           f"{type(config).__name__}")
    return cfg.replace(**overrides) if overrides else cfg


def _check_callbacks(callbacks: Sequence[Callback]) -> list[Callback]:
    if isinstance(callbacks, Callback):
        callbacks = [callbacks]
    cbs = list(callbacks or ())
    for i, cb in enumerate(cbs):
        if not isinstance(cb, Callback):
            raise LightnnError(f"callbacks[{i}] is a {type(cb).__name__}, not a lightnn.train.callbacks.Callback "
                               f"(wrap a function in LambdaCallback)")
    return cbs


def _choose_precision(model: nn.Module, train: Any, cfg: TrainConfig, dev: torch.device, world: int,
                      ckpt_path: Path | None, mean, std) -> tuple[TrainConfig, dict | None]:
    """Decide amp, channels_last and compile where the config leaves them open (see :func:`fit`)."""
    probe = cfg.amp is None and cfg.channels_last is None and dev.type == "cpu" and world == 1 and bf16_is_fast(dev)
    amp = bf16_is_fast(dev) if cfg.amp is None else cfg.amp
    channels_last = amp if cfg.channels_last is None else cfg.channels_last
    compile, precision = cfg.compile, None
    auto = compile == "auto"
    if (probe or auto) and ckpt_path is not None:
        # a resumed run keeps the precision and the compile choice it started with
        prev = _stored_config(ckpt_path)
        if probe and "amp" in prev:
            amp, channels_last, probe = bool(prev["amp"]), bool(prev.get("channels_last", prev["amp"])), False
            precision = prev.get("precision_probe")
        if auto and prev.get("compile", "auto") != "auto":
            compile, auto = prev["compile"], False
    if (probe or auto) and world == 1 and isinstance(train, ImageData) and len(train) >= cfg.batch_size:
        # AMX CPU, nothing forced: bf16 + channels-last is not faster for every model, so time both on one batch;
        # compile="auto": time eager and compiled steps and keep the faster
        first = next(iter(BatchLoader(train, cfg.batch_size, augment=cfg.augment, mean=mean, std=std, device=dev)))
        cands = ((False, False), (True, True)) if probe else ((amp, channels_last),)
        precision = pick_precision(model, first, dev, compile=compile, candidates=cands)
        amp, channels_last = precision["amp"], precision["channels_last"]
        if auto:
            compile = precision["compile"]
        if cfg.verbose:
            print(_probe_message(precision, amp, channels_last, auto), flush=True)
    elif auto:
        compile = False
        if cfg.verbose:
            print("compile auto: no training step could be timed here (DDP, data that is not an ImageData, or "
                  "fewer images than one batch), so training runs eager", flush=True)
    return cfg.replace(amp=bool(amp), channels_last=bool(channels_last), compile=compile), precision


def _setup(model: nn.Module, cfg: TrainConfig, cbs: list[Callback], train_loader: Any, dev: torch.device,
           rank: int, world: int, mean, std) -> TrainState:
    """Model on the device, optimizer, schedule and callbacks started: the state of a fresh run."""
    try:
        steps_per_epoch = len(train_loader)
    except TypeError:
        raise LightnnError(f"training data {_data_name(train_loader)!r} has no length: fit needs an ImageData or a "
                           f"sized iterable of (x, y) batches (a list, a BatchLoader, a DataLoader)") from None
    if steps_per_epoch == 0:
        raise DataError(f"training data {_data_name(train_loader)!r} gives no batches at batch_size={cfg.batch_size}")
    total = int(math.ceil(cfg.epochs * steps_per_epoch))  # 0.5 epochs of 5 batches: 3 steps
    for cb in cbs:
        total = int(cb.steps(total))
    if total < 1:
        raise LightnnError(f"the run would take no optimizer step ({cfg.epochs} epochs of {steps_per_epoch} batches)")
    model.to(dev)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if mean is not None:
        record_update(model, normalize={"mean": mean, "std": std})
    params = [p for p in model.parameters() if p.requires_grad]
    for cb in cbs:
        params = list(cb.parameters(model, params))
    opt = torch.optim.SGD(_weight_decay_groups(params, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum,
                          nesterov=cfg.nesterov and cfg.momentum > 0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lr_lambda(cfg.schedule, total, int(round(cfg.warmup_epochs * steps_per_epoch)),
                       min_ratio=cfg.min_lr / cfg.lr if cfg.lr > 0 else 0.0))
    state = TrainState(model=model, config=cfg, device=dev, optimizer=opt, scheduler=sched, callbacks=cbs,
                       total_steps=total, steps_per_epoch=steps_per_epoch,
                       epochs=int(math.ceil(total / steps_per_epoch)), rank=rank, world_size=world)
    for cb in cbs:  # before the seed below: a teacher built from a checkpoint must not shift the run's RNG
        cb.on_fit_start(state)
    torch.manual_seed(cfg.seed + rank)  # dropout and other in-model randomness
    return state


def _resolved(cfg: TrainConfig, cbs: list[Callback], extra: Mapping[str, Any] | None, world: int,
              dev: torch.device, mean, std, precision: dict | None) -> dict[str, Any]:
    """What ``config.yaml`` and the checkpoints record: the recipe as run, and each callback's settings."""
    d = cfg.to_dict()
    for k in ("progress", "verbose", "mean", "std", "device"):
        d.pop(k)
    d["compile"] = cfg.compile if isinstance(cfg.compile, str) else bool(cfg.compile)
    resolved = {**dict(extra or {}), **d, "kd_temperature": None, "kd_weight": None, "aux_weight": None,
                "ema": None}
    for cb in cbs:
        resolved.update(cb.config())
    resolved.update(world_size=world, device=str(dev), normalize={"mean": mean, "std": std},
                    precision_probe=precision)
    return resolved


def _wrap(model: nn.Module, dev: torch.device, world: int, compile: bool | str) -> nn.Module:
    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    return _compiled(net, compile) if compile else net


@dataclass
class _Run:
    """The run folder and data side of one :func:`fit` call (the training side is its :class:`TrainState`)."""

    train_loader: Any
    val_loader: Any
    out: Path | None
    resume: Any
    ckpt_path: Path | None
    overwrite: bool | None
    resolved: dict
    k: int | None
    train_name: str
    bar: bool
    normalize: dict
    start_epoch: int = 0
    history: list | None = None
    best: float = -1.0


def _run_epochs(state: TrainState, run: _Run) -> dict[str, Any]:
    history = run.history if run.history is not None else []
    best, out, rank, cfg = run.best, run.out, state.rank, state.config
    t_run = time.perf_counter()
    with _output_lock(out if rank == 0 else None):
        if out is not None and rank == 0:
            _prepare_output(out, run.resume, run.ckpt_path, run.overwrite, cfg.verbose)
            _write_config(out / "config.yaml", run.resolved)
        for epoch in range(run.start_epoch, state.epochs):
            if state.stop or state.step >= state.total_steps:
                break
            state.epoch = epoch
            t0 = time.perf_counter()
            acc = _train_epoch(state, run, first=epoch == run.start_epoch)
            rec = _epoch_record(state, run, acc, time.perf_counter() - t0)
            if "val_top1" in rec:
                best = max(best, rec["val_top1"])
            rec["epoch_time_s"] = time.perf_counter() - t0
            history.append(rec)
            if cfg.verbose and rank == 0:
                print(_epoch_line(rec, state.epochs), flush=True)
            if out is not None and rank == 0:
                train_state = {"epoch": epoch + 1, "optimizer": state.optimizer.state_dict(),
                               "scheduler": state.scheduler.state_dict(), "rng": _rng_state(), "history": history,
                               "best_val_top1": best, "callbacks": _callback_states(state.callbacks)}
                _save(out / "last.pt", state.model, run.resolved, rec, train_state)
                _write_metrics(out / "metrics.jsonl", history)
            dist_utils.barrier()
            for cb in state.callbacks:
                cb.on_epoch_end(state, rec)
        total = time.perf_counter() - t_run
        final = history[-1] if history else {}
        for cb in state.callbacks:
            cb.on_fit_end(state)
        if out is not None and rank == 0:
            _save(out / "model.pt", state.model, run.resolved, final, None)
    return {"history": history, "final": final, "best_val_top1": best if best >= 0 else None,
            "train_time_s": total, "steps": state.step, "normalize": run.normalize,
            "output_dir": str(out) if out is not None else None}


def _epoch_line(rec: dict, epochs: int) -> str:
    msg = (f"epoch {rec['epoch']}/{epochs}  loss {rec['train_loss']:.4f}  train {rec['train_top1']:.2f}%  "
           f"{rec['images_per_s']:.0f} img/s")
    if "val_top1" in rec:
        msg += f"  val top1 {rec['val_top1']:.2f}%  top5 {rec['val_top5']:.2f}%"
    return msg


def _epoch_record(state: TrainState, run: _Run, acc: torch.Tensor, train_time: float) -> dict[str, Any]:
    """The epoch's metrics (validation included), checked finite before anything of the epoch is saved."""
    n = max(acc[0].item(), 1.0)
    rec: dict[str, Any] = {"epoch": state.epoch + 1, "lr": state.scheduler.get_last_lr()[0],
                           "train_loss": acc[2].item() / n, "train_top1": 100.0 * acc[1].item() / n,
                           "images_per_s": acc[0].item() / train_time}
    if run.val_loader is not None and math.isfinite(rec["train_loss"]):
        scored = next((m for m in (cb.eval_model(state) for cb in state.callbacks) if m is not None), state.model)
        amp, dev = state.config.amp, state.device
        ev = evaluate(scored, run.val_loader, amp=amp, device=dev)
        rec.update(val_top1=ev["top1"], val_top5=ev["top5"], val_loss=ev["loss"], val_images=ev["n"])
        if scored is not state.model:  # a callback's model (a moving average) was scored: also the trained one
            rec["val_top1_raw"] = evaluate(state.model, run.val_loader, amp=amp, device=dev)["top1"]
    for cb in state.callbacks:
        cb.on_epoch_metrics(state, rec)
    check_finite(state.model, rec, state.config.lr)
    return rec


def _train_epoch(state: TrainState, run: _Run, first: bool) -> torch.Tensor:
    """One pass over the training data (or the part of it the step budget leaves); returns (images, correct,
    loss sum) summed over the DDP ranks."""
    loader = run.train_loader
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(state.epoch)
    state.net.train()
    for cb in state.callbacks:
        cb.on_epoch_start(state)
    acc = torch.zeros(3, dtype=torch.float64, device=state.device)  # n, correct, loss sum
    it: Iterable = loader
    bar = None
    if run.bar:
        from tqdm import tqdm
        bar = tqdm(loader, total=min(state.steps_per_epoch, state.total_steps - state.step),
                   desc=f"epoch {state.epoch + 1}/{state.epochs}", leave=False, dynamic_ncols=True)
        it = bar
    for i, (x, y) in enumerate(it):
        x, y = x.to(state.device, non_blocking=True), y.to(state.device, non_blocking=True)
        loss, logits = _train_step(state, run, x, y, first and i == 0)
        with torch.no_grad():
            acc[0] += y.numel()
            acc[1] += (logits.argmax(1) == y).sum()
            acc[2] += loss.detach().double() * y.numel()
        if bar is not None and i % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{state.scheduler.get_last_lr()[0]:.4f}")
        if state.world_size > 1 and any(cb.may_stop for cb in state.callbacks):
            # every rank stops at the same step, or the next gradient all-reduce would hang
            flag = dist_utils.all_reduce_sum(torch.tensor([float(state.stop)], device=state.device))
            state.stop = bool(flag.item() > 0)
        if state.stop or state.step >= state.total_steps:
            break
    if bar is not None:
        bar.close()
    state.x = state.y = state.outputs = state.logits = None
    return dist_utils.all_reduce_sum(acc)


def _train_step(state: TrainState, run: _Run, x: torch.Tensor, y: torch.Tensor,
                first_step: bool) -> tuple[torch.Tensor, torch.Tensor]:
    cfg, cbs, opt = state.config, state.callbacks, state.optimizer
    for cb in cbs:
        cb.on_step_start(state)
    state.x, state.y = x, y
    try:
        with _autocast(state.device, cfg.amp):
            outputs = state.net(x)
            # auxiliary heads count through the AuxLoss callback, not here
            loss, logits = classification_loss(outputs, y, label_smoothing=cfg.label_smoothing, aux_weight=0.0)
            state.outputs, state.logits = outputs, logits
            for cb in cbs:
                loss = cb.loss(state, loss)
        if first_step and run.k is not None and logits.shape[1] != run.k:
            raise DataError(f"model outputs {logits.shape[1]} classes but data {run.train_name!r} has {run.k}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
    except RuntimeError as e:
        if cfg.compile and first_step and _is_compile_error(e):
            raise LightnnError(_compile_failure(state.model, e)) from e
        raise
    for cb in cbs:
        cb.on_after_backward(state)
    if cfg.grad_clip:
        nn.utils.clip_grad_norm_(state.model.parameters(), cfg.grad_clip)
    opt.step()
    state.scheduler.step()
    state.step += 1
    for cb in cbs:
        cb.on_step_end(state)
    return loss, logits


def _callback_key(cb: Callback, seen: dict[str, int]) -> str:
    key = cb.state_key or type(cb).__name__
    seen[key] = seen.get(key, 0) + 1
    return key if seen[key] == 1 else f"{key}.{seen[key] - 1}"


def _callback_states(cbs: list[Callback]) -> dict[str, dict]:
    seen: dict[str, int] = {}
    out = {}
    for cb in cbs:
        key = _callback_key(cb, seen)
        sd = cb.state_dict()
        if sd is not None:
            out[key] = sd
    return out


def _restore_callbacks(cbs: list[Callback], train_state: dict, path: Path) -> None:
    states = dict(train_state.get("callbacks") or {})
    if "ema" in train_state:  # last.pt written before EMA became a callback
        states.setdefault("ema", train_state["ema"])
    seen: dict[str, int] = {}
    for cb in cbs:
        key = _callback_key(cb, seen)
        if cb.state_dict() is None:
            continue
        if key not in states:
            raise CheckpointError(f"cannot resume with {key}: {str(path)!r} was written by a run without {key} "
                                  f"(drop it or start a new run)")
        cb.load_state_dict(states[key])


def non_finite_tensors(model: nn.Module) -> tuple[list[str], list[str]]:
    """Names of the parameters and of the floating-point buffers (batch-norm statistics) holding NaN or inf."""
    m = getattr(model, "module", model)
    params = [n for n, p in m.named_parameters() if not bool(torch.isfinite(p).all())]
    bufs = [n for n, b in m.named_buffers() if b.is_floating_point() and not bool(torch.isfinite(b).all())]
    return params, bufs


def _names(names: list[str], n: int = 4) -> str:
    return ", ".join(names[:n]) + (f", ... ({len(names) - n} more)" if len(names) > n else "")


def check_finite(model: nn.Module, rec: dict[str, Any], lr: float) -> None:
    """Raise :class:`LightnnError` when an epoch ends with a non-finite loss (``rec``'s ``train_loss`` /
    ``val_loss``), weight or batch-norm statistic: such a model predicts garbage, so the run stops before it is
    saved, naming the epoch and every non-finite quantity."""
    losses = [f"{k} is {rec[k]}" for k in ("train_loss", "val_loss") if k in rec and not math.isfinite(rec[k])]
    params, bufs = non_finite_tensors(model)
    if not (losses or params or bufs):
        return
    parts = losses + ([f"{len(params)} parameter(s) are non-finite ({_names(params)})"] if params else []) \
        + ([f"{len(bufs)} buffer(s) are non-finite ({_names(bufs)})"] if bufs else [])
    raise LightnnError(f"training diverged in epoch {rec.get('epoch')}: {'; '.join(parts)}. Nothing of this epoch "
                       f"was saved; train again with a lower learning rate (--lr, now {lr:g})")


RUN_FILES = ("model.pt", "last.pt", "metrics.jsonl", "config.yaml")


def _resumes_here(out: Path, ckpt_path: Path | None) -> bool:
    return ckpt_path is not None and ckpt_path.resolve().parent == out.resolve()


def check_output(out: str | os.PathLike, resume: bool | str | os.PathLike = False,
                 overwrite: bool | None = False) -> None:
    """Refuse to start a new run in ``out`` when it holds another run's results (``model.pt``, ``last.pt``,
    ``metrics.jsonl``) that the run would replace: unless it resumes from ``out/last.pt`` or ``overwrite`` is
    True (or None: replace silently, the library default). A ``config.yaml`` alone (a run killed in its first
    epoch) holds no results."""
    out = Path(out)
    if overwrite is not False or not out.is_dir():
        return
    if _resumes_here(out, _resume_path(resume, out)):
        return
    found = [f for f in RUN_FILES[:3] if (out / f).exists()]
    if found:
        how = (" (it has no last.pt to resume from): pass" if resume else ": pass --resume to continue it,")
        raise LightnnError(f"output folder {str(out)!r} holds another run ({', '.join(found)}) that this one would "
                           f"replace{how} --overwrite to replace it, or choose another --output")


def _prepare_output(out: Path, resume: bool | str | os.PathLike, ckpt_path: Path | None, overwrite: bool | None,
                    verbose: bool) -> None:
    """Under the output lock, before the first write: refuse or clear another run's files, drop partial writes."""
    check_output(out, resume, overwrite)
    gone = remove_partial_writes(out)
    if gone and verbose:
        print(f"removed {len(gone)} partial file(s) an interrupted run left in {out}", flush=True)
    if overwrite and not _resumes_here(out, ckpt_path):
        for f in RUN_FILES:
            (out / f).unlink(missing_ok=True)


def _output_lock(out: Path | None):
    return lock_folder(out, "training output folder") if out is not None else contextlib.nullcontext()


def check_input_size(model: nn.Module, data: Any) -> None:
    """Run two of ``data``'s images (an :class:`ImageData`) through ``model`` in eval mode and raise
    :class:`DataError` naming the model, the data and the image size when the model cannot take them (LeNet-5's
    28x28 classifier on 32x32 images), before any training output is written. Other data is not checked."""
    if not isinstance(data, ImageData) or len(data) == 0:
        return
    m = getattr(model, "module", model)
    p = next(m.parameters(), None)
    x = data.images[:2].float().to(p.device if p is not None else "cpu")
    was_training = m.training
    m.eval()
    try:
        with torch.no_grad():
            m(x)
    except RuntimeError as e:
        name = model_name(m)
        designed = getattr(m, "default_input_size", None)
        hint = f"; it is built for {'x'.join(map(str, designed))}" if designed else ""
        raise DataError(f"model {name!r} cannot take the {'x'.join(map(str, x.shape[1:]))} images of data "
                        f"{_data_name(data)!r} ({str(e).splitlines()[0][:160]}){hint}: resize them (--image-size) "
                        f"or pick a model for this size") from None
    finally:
        m.train(was_training)


def _is_compile_error(e: BaseException) -> bool:
    """True for errors raised by TorchDynamo / TorchInductor (a backend or compiler failure, an unsupported op)."""
    try:
        from torch._dynamo.exc import TorchDynamoException
    except ImportError:  # pragma: no cover - very old torch
        return False
    return isinstance(e, TorchDynamoException)


def _resume_path(resume: bool | str | os.PathLike, out: Path | None) -> Path | None:
    if resume is False or resume is None:
        return None
    if resume is True:
        if out is None:
            raise LightnnError("resume=True needs output_dir (where last.pt is)")
        p = out / "last.pt"
        return p if p.exists() else None  # nothing to resume yet: start fresh
    p = Path(resume)
    if p.is_dir():
        p = p / "last.pt"
    if not p.exists():
        raise LightnnError(f"cannot resume: checkpoint {str(p)!r} does not exist")
    return p


def _stored_config(path: Path) -> dict:
    """The resolved configuration a checkpoint was trained with ({} when it has none)."""
    from ..checkpoint import read_checkpoint

    ck = read_checkpoint(path)
    meta = ck.get("meta") if isinstance(ck, dict) else None
    cfg = meta.get("config") if isinstance(meta, dict) else None
    return cfg if isinstance(cfg, dict) else {}


def _restore(path: Path, model: nn.Module, opt, sched, dev: torch.device) -> tuple[int, list[dict], float, dict]:
    from ..checkpoint import read_checkpoint

    ck = read_checkpoint(path)
    ts = ck.get("train_state") if isinstance(ck, dict) else None
    if not ts:
        raise CheckpointError(f"{str(path)!r} has no training state to resume from (it is a final model file)")
    name = model_name(model, "")
    if name and ck.get("model") != name:
        raise CheckpointError(f"cannot resume: {str(path)!r} holds model {ck.get('model')!r}, not {name!r}")
    try:
        model.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ts["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise CheckpointError(f"cannot resume from {str(path)!r}: {str(e).splitlines()[0][:200]}") from None
    sched.load_state_dict(ts["scheduler"])
    rng = ts.get("rng", {})
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if rng.get("cuda") and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return int(ts["epoch"]), list(ts.get("history", [])), float(ts.get("best_val_top1", -1.0)), ts


def _rng_state() -> dict:
    st = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _save(path: Path, model: nn.Module, config: dict, rec: dict, train_state: dict | None) -> None:
    from ..checkpoint import save_checkpoint

    meta = {"epoch": rec.get("epoch"), "metrics": rec, "normalize": config.get("normalize"),
            "classes": config.get("classes"), "config": {k: v for k, v in config.items() if _plain(v)}}
    if not model_name(model, ""):
        return  # a model built outside the registry cannot be rebuilt from a checkpoint; metrics are still logged
    save_checkpoint(path, model, meta=meta, train_state=train_state)


def _plain(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str, list, dict, tuple))


def _write_metrics(path: Path, history: list[dict]) -> None:
    from ..utils.io import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in history))


def _write_config(path: Path, config: dict) -> None:
    import yaml

    from ..utils.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(json.loads(json.dumps(config, default=str)), sort_keys=False))