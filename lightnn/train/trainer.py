"""The trainer: :func:`fit` and :func:`evaluate`.

Recipe knobs follow the CIFAR/ImageNet practice the papers report: SGD with Nesterov momentum, cosine or
one-cycle schedule with linear warm-up, label smoothing (Inception-v3), no weight decay on norm weights and
biases (Goyal et al. 2017), optional bf16 autocast and channels-last on GPUs, Inception's auxiliary-head loss,
knowledge distillation from a teacher (Hinton et al. 2015), and hooks for compression methods: ``step_hook``
(alias ``mask_hook``) runs after every optimizer step (Deep Compression keeps pruned weights at zero with it),
``extra_loss`` adds a term (versatile filters' orthogonality loss, SkipNet's reward).

With ``output_dir`` each epoch atomically writes ``last.pt`` (a lightnn checkpoint holding the optimizer, schedule,
epoch and RNG states), ``metrics.jsonl`` (one JSON object per epoch) and ``config.yaml`` (the resolved
configuration); the run ends with ``model.pt`` (weights + metadata, no optimizer). ``resume=True`` continues from
``last.pt`` and reproduces the uninterrupted run: batches depend only on (seed, epoch, rank) and every RNG state
is restored.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CheckpointError, DataError, LightnnError
from ..data.datasets import ImageData
from ..data.loader import BatchLoader
from ..utils.runfolder import lock_folder, remove_partial_writes
from . import distributed as dist_utils
from .losses import classification_loss, distillation_loss, split_outputs
from .schedule import lr_lambda

__all__ = ["fit", "evaluate", "seed_everything", "param_groups", "check_num_classes", "check_input_size",
           "check_finite", "check_output", "non_finite_tensors", "pick_precision", "bf16_is_fast", "TTA_MODES"]

TTA_MODES = (None, "flip")


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
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def check_num_classes(model: nn.Module, num_classes: int, where: str) -> None:
    """Raise :class:`DataError` when the model's classifier does not match the data's class count."""
    m = getattr(model, "module", model)
    n = getattr(m, "num_classes", None)
    if isinstance(n, int) and n > 0 and n != num_classes:
        name = getattr(m, "lightnn_name", type(m).__name__)
        raise DataError(f"model {name!r} has {n} output classes but data {where!r} has {num_classes} classes; "
                        f"build it with num_classes={num_classes}")


def _loader(data: Any, *, batch_size: int, train: bool, device: torch.device, seed: int, mean, std,
            channels_last: bool, augment: bool = True, cutout: int = 0) -> Any:
    if isinstance(data, ImageData):
        return BatchLoader(data, batch_size, shuffle=train, augment=train and augment, mean=mean, std=std,
                           device=device, drop_last=train and len(data) > batch_size, seed=seed,
                           channels_last=channels_last, cutout=cutout if train else 0)
    return data  # any iterable of (x, y) batches; set_epoch is used when it has one


def _data_name(data: Any) -> str:
    d = getattr(data, "data", data)
    return getattr(d, "source", type(d).__name__)


def _num_classes(data: Any) -> int | None:
    d = getattr(data, "data", data)
    n = getattr(d, "num_classes", None)
    return n if isinstance(n, int) else None


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


@torch.no_grad()
def evaluate(model: nn.Module, data: Any, *, batch_size: int = 256, device: str | torch.device | None = None,
             amp: bool = False, mean=None, std=None, progress: bool = False, tta: str | None = None) -> dict[str, Any]:
    """Accuracy and loss of ``model`` on ``data`` (an :class:`ImageData` or an iterable of ``(x, y)`` batches).

    ``tta="flip"`` averages the class probabilities of each image and its horizontal mirror (test-time
    augmentation; twice the compute), the evaluation of the fast-CIFAR-training recipes; the loss is then the
    negative log of the averaged probability.

    Normalization (for :class:`ImageData`): ``mean``/``std`` if given, else ``model.lightnn_normalize`` (set by
    :func:`fit` and stored in checkpoints' ``meta["normalize"]``), else the data's own channel statistics.
    Under torch.distributed each rank evaluates its shard and the counts are summed over ranks.

    Returns a dict: ``top1``, ``top5`` (percent, 0-100), ``loss`` (mean cross-entropy), ``n`` (images),
    ``per_class`` (top-1 % per class), ``confusion`` (rows true class, columns prediction), ``classes``.
    """
    m = getattr(model, "module", model)
    if tta not in TTA_MODES:
        raise LightnnError(f"tta must be one of {[t for t in TTA_MODES if t]} or None, got {tta!r}")
    dev = torch.device(device) if device is not None else next(m.parameters()).device
    if isinstance(data, ImageData):
        if mean is None or std is None:
            norm = getattr(m, "lightnn_normalize", None)
            mean, std = (norm["mean"], norm["std"]) if norm else data.channel_stats()
        data = BatchLoader(data, batch_size, shuffle=False, augment=False, mean=mean, std=std, device=dev)
    k = _num_classes(data)
    if k is not None:
        check_num_classes(m, k, _data_name(data))
    was_training = m.training
    m.eval()
    m.to(dev)
    stats = torch.zeros(4, dtype=torch.float64, device=dev)  # n, correct1, correct5, loss sum
    conf = None
    try:
        it = data
        if progress:
            from tqdm import tqdm
            it = tqdm(data, desc="eval", leave=False, disable=dist_utils.rank() != 0)
        for x, y in it:
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            with _autocast(dev, amp):
                logits, _ = split_outputs(m(x))
                if tta == "flip":
                    flipped, _ = split_outputs(m(x.flip(3)))
            logits = logits.float()
            if tta == "flip":  # log of the averaged probabilities: top-k and the loss read it like logits
                logits = torch.logsumexp(torch.stack([logits.log_softmax(1), flipped.float().log_softmax(1)]),
                                         0) - math.log(2.0)
            if k is None:
                k = logits.shape[1]
            if logits.shape[1] != k:
                raise DataError(f"model outputs {logits.shape[1]} classes but data {_data_name(data)!r} has {k}")
            if conf is None:
                conf = torch.zeros(k * k, dtype=torch.float64, device=dev)
            top = logits.topk(min(5, k), dim=1).indices
            hit = top == y[:, None]
            stats[0] += y.numel()
            stats[1] += hit[:, 0].sum()
            stats[2] += hit.any(1).sum()
            stats[3] += F.cross_entropy(logits, y, reduction="sum")
            conf += torch.bincount(y * k + top[:, 0], minlength=k * k).double()
    finally:
        m.train(was_training)
    if conf is None:
        raise DataError(f"data {_data_name(data)!r} yielded no batches to evaluate")
    dist_utils.all_reduce_sum(stats)
    dist_utils.all_reduce_sum(conf)
    n, c1, c5, ls = stats.tolist()
    cm = conf.view(k, k).long().cpu()
    row = cm.sum(1).clamp_min(1)
    classes = getattr(getattr(data, "data", data), "classes", None) or [str(i) for i in range(k)]
    return {"top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "loss": ls / n, "n": int(n),
            "per_class": (100.0 * cm.diag() / row).tolist(), "confusion": cm.tolist(), "classes": list(classes)}


def fit(model: nn.Module, train: Any, val: Any = None, *, epochs: int = 30, batch_size: int = 128,
        lr: float = 0.1, momentum: float = 0.9, nesterov: bool = True, weight_decay: float = 5e-4,
        schedule: str = "cosine", warmup_epochs: float = 0.0, min_lr: float = 0.0, label_smoothing: float = 0.0,
        augment: bool = True, amp: bool | None = None, channels_last: bool | None = None,
        compile: bool | str = False, device: str | torch.device | None = None, seed: int = 0,
        teacher: nn.Module | str | os.PathLike | None = None, kd_temperature: float = 4.0, kd_weight: float = 0.5,
        aux_weight: float = 0.4, extra_loss: Callable[[nn.Module, Any, torch.Tensor], torch.Tensor] | None = None,
        step_hook: Callable[[nn.Module], None] | None = None, mask_hook: Callable[[nn.Module], None] | None = None,
        on_epoch_end: Callable[[int, dict, nn.Module], None] | None = None, grad_clip: float | None = None,
        output_dir: str | os.PathLike | None = None, resume: bool | str | os.PathLike = False,
        config: dict | None = None, progress: bool = True, verbose: bool = True,
        mean: Iterable[float] | None = None, std: Iterable[float] | None = None,
        ema: float | None = None, cutout: int = 0, overwrite: bool | None = None) -> dict[str, Any]:
    """Train ``model`` in place on ``train`` and report on ``val`` each epoch.

    Args:
        model: any ``nn.Module``; in train mode it may return ``(logits, aux...)`` (Inception's aux head).
        train, val: :class:`~lightnn.data.ImageData` (wrapped in a :class:`~lightnn.data.BatchLoader`: seeded
            shuffling, pad+crop+flip when ``augment``) or any iterable of ``(x, y)`` batches (``set_epoch(e)`` is
            called when it has one). ``val`` may be None.
        epochs, batch_size, lr, momentum, nesterov, weight_decay: SGD; weight decay skips norms and biases.
            ``batch_size`` is the total over all DDP processes (each rank takes ``batch_size / world_size``).
        schedule: ``"cosine"``, ``"onecycle"`` or ``"constant"``, stepped every iteration, with ``warmup_epochs``
            of linear warm-up; ``min_lr`` is the cosine floor.
        label_smoothing: epsilon of the smoothed cross-entropy.
        amp: bf16 autocast. Default: on for CUDA; on a CPU with AMX (:func:`bf16_is_fast`) and a single process,
            :func:`pick_precision` times one batch both ways and takes the faster (it depends on the model);
            otherwise off. channels_last: default on with amp (the layout oneDNN and cuDNN want for bf16).
        compile: run the training forward and backward (and the teacher's forward) through ``torch.compile``
            (TorchInductor; needs a C compiler on CPU). True for its default mode, or a mode name
            (``"reduce-overhead"``: CUDA graphs, for launch-bound small models on a GPU; ``"max-autotune"``). The
            first step pays the compilation (tens of seconds); memory-bound small-input models gain most.
            Evaluation stays eager. The precision probe (``amp`` and ``channels_last`` left to None) then times
            compiled steps, which costs two more compilations before training starts. ``"auto"`` times eager and
            compiled (default mode) steps on the first batch (each precision the probe would try, or the forced
            one) and compiles only when that is more than 3% faster; the choice and the timings are stored as
            ``precision_probe`` in ``config.yaml``, and a resumed run keeps it. Under DDP, or with fewer images
            than one batch, ``"auto"`` trains eager.
        teacher: a model or a checkpoint path; the loss becomes ``(1 - kd_weight) * CE + kd_weight * KD`` with
            KD = T^2 KL(softmax(t/T) || softmax(s/T)) at T = ``kd_temperature``.
        aux_weight: weight of the cross-entropy on auxiliary logits.
        extra_loss: ``fn(model, outputs, targets) -> scalar`` added to the loss (outputs as the model returned them).
        step_hook / mask_hook: ``fn(model)`` called after every optimizer step (e.g. re-apply pruning masks).
        on_epoch_end: ``fn(epoch, record, model)`` after each epoch's checkpoint is written.
        output_dir: where ``last.pt``, ``model.pt``, ``metrics.jsonl`` and ``config.yaml`` go (rank 0 writes).
        resume: True (``output_dir/last.pt`` if it exists) or a checkpoint path: continue that run.
        config: extra resolved configuration stored in ``config.yaml`` and the checkpoints' ``meta``.
        mean, std: input normalization (default: the training data's channel statistics).
        ema: decay of an exponential moving average of the weights and BN statistics, updated after every
            optimizer step (``torch.optim.swa_utils.AveragedModel``; 0.999 averages over about the last thousand
            steps). Validation then scores the average (``val_top1``; the trained weights' score is
            ``val_top1_raw``), ``model.pt`` holds the average, ``last.pt`` holds both so a resumed run continues
            the same average, and ``model`` ends holding the averaged weights.
        cutout: side of the square each training image gets painted over in the mean colour (Cutout; 8 is the
            CIFAR-10 choice of the fast-training recipes, 16 the paper's for long runs); 0 = off.
        overwrite: what a fresh (not resumed) run does when ``output_dir`` holds another run's ``model.pt``,
            ``last.pt`` or ``metrics.jsonl``: None (default) replaces them as it goes, False refuses
            (:func:`check_output`), True deletes them (and ``config.yaml``) first.

    Safety: rank 0 holds a lock on ``output_dir`` while it writes there (a second run on the same folder is
    refused, naming the holder), removes the partial files a killed run left, and checks before writing anything
    that the model takes the data's images (:func:`check_input_size`). An epoch that ends with a non-finite loss,
    weight or batch-norm statistic stops the run before it is saved (:func:`check_finite`).

    Returns:
        dict with ``history`` (one record per epoch: lr, train_loss, train_top1, val_top1, val_top5, val_loss,
        epoch_time_s, images_per_s), ``final`` (the last record), ``best_val_top1``, ``train_time_s``,
        ``normalize`` and ``output_dir``.
    """
    _check_numbers(epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, weight_decay=weight_decay,
                   warmup_epochs=warmup_epochs, min_lr=min_lr, kd_temperature=kd_temperature, aux_weight=aux_weight,
                   cutout=cutout, grad_clip=grad_clip)
    if not 0.0 <= kd_weight <= 1.0:
        raise LightnnError(f"kd_weight must be in [0, 1], got {kd_weight}")
    if not 0.0 <= label_smoothing < 1.0:
        raise LightnnError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    check_compile_mode(compile)
    hooks = [h for h in (step_hook, mask_hook) if h is not None]
    if ema is not None:
        if not 0.0 < float(ema) < 1.0:
            raise LightnnError(f"ema decay must be in (0, 1), e.g. 0.999, got {ema}")
        if hooks:
            raise LightnnError("ema cannot be combined with step_hook/mask_hook: the average would not keep the "
                               "hook's constraint (pruned weights at zero); train without ema")
    if cutout and not isinstance(train, ImageData):
        raise LightnnError(f"cutout={cutout} needs training data that lightnn batches itself (an ImageData); "
                           f"{_data_name(train)!r} is an iterable of batches (e.g. --stream): add Cutout to its "
                           f"transforms instead")
    dev = dist_utils.init_from_env(str(device) if device is not None else None)
    rank, world = dist_utils.rank(), dist_utils.world_size()
    probe_precision = amp is None and channels_last is None and dev.type == "cpu" and world == 1 \
        and bf16_is_fast(dev)
    amp = bf16_is_fast(dev) if amp is None else bool(amp)
    channels_last = amp if channels_last is None else bool(channels_last)

    if isinstance(train, ImageData) and (mean is None or std is None):
        mean, std = train.channel_stats()
    mean = [float(v) for v in mean] if mean is not None else None
    std = [float(v) for v in std] if std is not None else None
    k = _num_classes(train)
    if k is not None:
        check_num_classes(model, k, _data_name(train))
    check_input_size(model, train)
    if world > 1 and batch_size % world:
        raise LightnnError(f"batch_size {batch_size} must divide by the {world} DDP processes (it is the total batch)")
    precision = None
    out = Path(output_dir) if output_dir is not None else None
    ckpt_path = _resume_path(resume, out)
    auto = compile == "auto"
    if (probe_precision or auto) and ckpt_path is not None:
        # a resumed run keeps the precision and the compile choice it started with
        prev = _stored_config(ckpt_path)
        if probe_precision and "amp" in prev:
            amp, channels_last, probe_precision = bool(prev["amp"]), bool(prev.get("channels_last", prev["amp"])), False
            precision = prev.get("precision_probe")
        if auto and prev.get("compile", "auto") != "auto":
            compile, auto = prev["compile"], False
    if (probe_precision or auto) and world == 1 and isinstance(train, ImageData) and len(train) >= batch_size:
        # AMX CPU, nothing forced: bf16 + channels-last is not faster for every model, so time both on one batch;
        # compile="auto": time eager and compiled steps and keep the faster
        first = next(iter(BatchLoader(train, batch_size, augment=augment, mean=mean, std=std, device=dev)))
        cands = ((False, False), (True, True)) if probe_precision else ((amp, channels_last),)
        precision = pick_precision(model, first, dev, compile=compile, candidates=cands)
        amp, channels_last = precision["amp"], precision["channels_last"]
        if auto:
            compile = precision["compile"]
        if verbose:
            print(_probe_message(precision, amp, channels_last, auto), flush=True)
    elif auto:
        compile = False
        if verbose:
            print("compile auto: no training step could be timed here (DDP, data that is not an ImageData, or "
                  "fewer images than one batch), so training runs eager", flush=True)
    train_loader = _loader(train, batch_size=batch_size // world, train=True, device=dev, seed=seed, mean=mean, std=std,
                           channels_last=channels_last, augment=augment, cutout=cutout)
    val_loader = _loader(val, batch_size=max(batch_size, 256), train=False, device=dev, seed=seed, mean=mean,
                         std=std, channels_last=channels_last) if val is not None else None
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise DataError(f"training data {_data_name(train)!r} gives no batches at batch_size={batch_size}")

    model.to(dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if mean is not None:
        model.lightnn_normalize = {"mean": mean, "std": std}
    if isinstance(teacher, (str, os.PathLike)):
        from ..checkpoint import load_any
        teacher = load_any(teacher)
    if teacher is not None:
        teacher = teacher.to(dev).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        if channels_last:
            teacher.to(memory_format=torch.channels_last)

    opt = torch.optim.SGD(param_groups(model, weight_decay), lr=lr, momentum=momentum,
                          nesterov=nesterov and momentum > 0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lr_lambda(schedule, epochs * steps_per_epoch, int(round(warmup_epochs * steps_per_epoch)),
                       min_ratio=min_lr / lr if lr > 0 else 0.0))
    torch.manual_seed(seed + rank)  # dropout and other in-model randomness

    resolved = {**(config or {}), "epochs": epochs, "batch_size": batch_size, "lr": lr, "momentum": momentum,
                "nesterov": nesterov, "weight_decay": weight_decay, "schedule": schedule,
                "warmup_epochs": warmup_epochs, "min_lr": min_lr, "label_smoothing": label_smoothing,
                "augment": augment, "cutout": cutout, "amp": amp, "channels_last": channels_last,
                "compile": compile if isinstance(compile, str) else bool(compile),
                "seed": seed,
                "kd_temperature": kd_temperature if teacher is not None else None,
                "kd_weight": kd_weight if teacher is not None else None, "aux_weight": aux_weight,
                "world_size": world, "device": str(dev), "normalize": {"mean": mean, "std": std},
                "ema": ema, "precision_probe": precision}
    history: list[dict] = []
    start_epoch = 0
    best = -1.0
    ema_model = None
    train_state: dict = {}
    if ckpt_path is not None:
        start_epoch, history, best, train_state = _restore(ckpt_path, model, opt, sched, dev)
        if verbose and rank == 0:
            print(f"resuming from {ckpt_path} after epoch {start_epoch}")
    if ema is not None:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema_model = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(float(ema)), use_buffers=True)
        if ckpt_path is not None:
            if "ema" not in train_state:
                raise CheckpointError(f"cannot resume with ema: {str(ckpt_path)!r} was written by a run without ema "
                                      f"(drop --ema or start a new run)")
            ema_model.load_state_dict(train_state["ema"])

    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    teach = teacher
    if compile:
        net = _compiled(net, compile)
        teach = _compiled(teacher, compile) if teacher is not None else None

    loop = _Loop(model=model, net=net, teach=teach, opt=opt, sched=sched, loader=train_loader,
                 steps=steps_per_epoch, dev=dev, amp=amp, label_smoothing=label_smoothing, aux_weight=aux_weight,
                 kd_weight=kd_weight, kd_temperature=kd_temperature, extra_loss=extra_loss, hooks=hooks,
                 ema_model=ema_model, grad_clip=grad_clip, compile=compile, k=k, train_name=_data_name(train),
                 bar=progress and rank == 0)
    t_run = time.perf_counter()
    with _output_lock(out if rank == 0 else None):
        if out is not None and rank == 0:
            _prepare_output(out, resume, ckpt_path, overwrite, verbose)
            _write_config(out / "config.yaml", resolved)
        for epoch in range(start_epoch, epochs):
            t0 = time.perf_counter()
            acc = _train_epoch(loop, epoch, epochs, first=epoch == start_epoch)
            train_time = time.perf_counter() - t0
            rec: dict[str, Any] = {"epoch": epoch + 1, "lr": sched.get_last_lr()[0],
                                   "train_loss": acc[2].item() / acc[0].item(),
                                   "train_top1": 100.0 * acc[1].item() / acc[0].item(),
                                   "images_per_s": acc[0].item() / train_time}
            if val_loader is not None and math.isfinite(rec["train_loss"]):
                ev = evaluate(model if ema_model is None else ema_model.module, val_loader, amp=amp, device=dev)
                rec.update(val_top1=ev["top1"], val_top5=ev["top5"], val_loss=ev["loss"], val_images=ev["n"])
                if ema_model is not None:
                    rec["val_top1_raw"] = evaluate(model, val_loader, amp=amp, device=dev)["top1"]
            check_finite(model, rec, lr)  # before anything of this epoch is saved
            if "val_top1" in rec:
                best = max(best, rec["val_top1"])
            rec["epoch_time_s"] = time.perf_counter() - t0
            history.append(rec)
            if verbose and rank == 0:
                msg = (f"epoch {epoch + 1}/{epochs}  loss {rec['train_loss']:.4f}  train {rec['train_top1']:.2f}%  "
                       f"{rec['images_per_s']:.0f} img/s")
                if "val_top1" in rec:
                    msg += f"  val top1 {rec['val_top1']:.2f}%  top5 {rec['val_top5']:.2f}%"
                print(msg, flush=True)
            if out is not None and rank == 0:
                train_state = {"epoch": epoch + 1, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                               "rng": _rng_state(), "history": history, "best_val_top1": best}
                if ema_model is not None:
                    train_state["ema"] = ema_model.state_dict()
                _save(out / "last.pt", model, resolved, rec, train_state)
                _write_metrics(out / "metrics.jsonl", history)
            dist_utils.barrier()
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, rec, model)

        total = time.perf_counter() - t_run
        final = history[-1] if history else {}
        if ema_model is not None:  # the model ends as the average it was validated as
            model.load_state_dict(ema_model.module.state_dict())
        if out is not None and rank == 0:
            _save(out / "model.pt", model, resolved, final, None)
    return {"history": history, "final": final, "best_val_top1": best if best >= 0 else None,
            "train_time_s": total, "normalize": {"mean": mean, "std": std},
            "output_dir": str(out) if out is not None else None}


# argument -> (integer?, lowest allowed, whether the lowest is allowed itself)
_NUMBERS = {"epochs": (True, 1, True), "batch_size": (True, 1, True), "lr": (False, 0.0, True),
            "momentum": (False, 0.0, True), "weight_decay": (False, 0.0, True), "warmup_epochs": (False, 0.0, True),
            "min_lr": (False, 0.0, True), "kd_temperature": (False, 0.0, False), "aux_weight": (False, 0.0, True),
            "cutout": (True, 0, True), "grad_clip": (False, 0.0, False)}


def _check_numbers(**values: Any) -> None:
    """Raise :class:`LightnnError` naming the first argument of :func:`fit` that is not a finite number in range
    (None is allowed for ``grad_clip``)."""
    for name, v in values.items():
        integer, lo, closed = _NUMBERS[name]
        if v is None and name == "grad_clip":
            continue
        kind = "an integer" if integer else "a number"
        ok = isinstance(v, numbers.Integral if integer else numbers.Real)
        ok = ok and not isinstance(v, bool) and math.isfinite(v) and (v >= lo if closed else v > lo)
        if not ok:
            raise LightnnError(f"{name} must be {kind} {'>=' if closed else '>'} {lo}, got {v!r}")


@dataclass
class _Loop:
    """What one training epoch needs; fixed for the whole run."""

    model: nn.Module
    net: nn.Module
    teach: nn.Module | None
    opt: torch.optim.Optimizer
    sched: Any
    loader: Any
    steps: int
    dev: torch.device
    amp: bool
    label_smoothing: float
    aux_weight: float
    kd_weight: float
    kd_temperature: float
    extra_loss: Callable | None
    hooks: list
    ema_model: nn.Module | None
    grad_clip: float | None
    compile: bool | str
    k: int | None
    train_name: str
    bar: bool


def _train_epoch(lp: _Loop, epoch: int, epochs: int, first: bool) -> torch.Tensor:
    """One pass over the training data; returns (images, correct, loss sum) summed over the DDP ranks."""
    if hasattr(lp.loader, "set_epoch"):
        lp.loader.set_epoch(epoch)
    lp.net.train()
    acc = torch.zeros(3, dtype=torch.float64, device=lp.dev)  # n, correct, loss sum
    it: Iterable = lp.loader
    bar = None
    if lp.bar:
        from tqdm import tqdm
        bar = tqdm(lp.loader, total=lp.steps, desc=f"epoch {epoch + 1}/{epochs}", leave=False, dynamic_ncols=True)
        it = bar
    for step, (x, y) in enumerate(it):
        x, y = x.to(lp.dev, non_blocking=True), y.to(lp.dev, non_blocking=True)
        first_step = first and step == 0
        try:
            with _autocast(lp.dev, lp.amp):
                outputs = lp.net(x)
                loss, logits = classification_loss(outputs, y, label_smoothing=lp.label_smoothing,
                                                   aux_weight=lp.aux_weight)
                if lp.teach is not None:
                    with torch.no_grad():
                        t_logits, _ = split_outputs(lp.teach(x))
                    loss = (1.0 - lp.kd_weight) * loss + lp.kd_weight * distillation_loss(logits, t_logits,
                                                                                          lp.kd_temperature)
                if lp.extra_loss is not None:
                    loss = loss + lp.extra_loss(lp.model, outputs, y)
            if first_step and lp.k is not None and logits.shape[1] != lp.k:
                raise DataError(f"model outputs {logits.shape[1]} classes but data {lp.train_name!r} has {lp.k}")
            lp.opt.zero_grad(set_to_none=True)
            loss.backward()
        except RuntimeError as e:
            if lp.compile and first_step and _is_compile_error(e):
                raise LightnnError(_compile_failure(lp.model, e)) from e
            raise
        if lp.grad_clip:
            nn.utils.clip_grad_norm_(lp.model.parameters(), lp.grad_clip)
        lp.opt.step()
        lp.sched.step()
        for h in lp.hooks:
            h(lp.model)
        if lp.ema_model is not None:
            lp.ema_model.update_parameters(lp.model)
        with torch.no_grad():
            acc[0] += y.numel()
            acc[1] += (logits.argmax(1) == y).sum()
            acc[2] += loss.detach().double() * y.numel()
        if bar is not None and step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lp.sched.get_last_lr()[0]:.4f}")
    if bar is not None:
        bar.close()
    return dist_utils.all_reduce_sum(acc)


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
        name = getattr(m, "lightnn_name", type(m).__name__)
        designed = getattr(m, "default_input_size", None)
        hint = f"; it is built for {'x'.join(map(str, designed))}" if designed else ""
        raise DataError(f"model {name!r} cannot take the {'x'.join(map(str, x.shape[1:]))} images of data "
                        f"{_data_name(data)!r} ({str(e).splitlines()[0][:160]}){hint}: resize them (--image-size) "
                        f"or pick a model for this size") from None
    finally:
        m.train(was_training)


# ----------------------------------------------------------------------------------------------------------------


_COMPILE_MODES = {"default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs", "auto"}


def check_compile_mode(compile: bool | str) -> None:
    """Raise LightnnError unless ``compile`` is a bool, one of torch.compile's mode names, or "auto" (lightnn's:
    compile only when a timed compiled step is faster than an eager one)."""
    if isinstance(compile, str) and compile not in _COMPILE_MODES:
        raise LightnnError(f"compile mode {compile!r} is not one of {sorted(_COMPILE_MODES)}")


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
    name = getattr(model, "lightnn_name", None)
    if name is not None and ck.get("model") != name:
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
    if getattr(model, "lightnn_name", None) is None:
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
