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
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CheckpointError, DataError, LightnnError
from ..data.datasets import ImageData
from ..data.loader import BatchLoader
from . import distributed as dist_utils
from .losses import classification_loss, distillation_loss, split_outputs
from .schedule import lr_lambda

__all__ = ["fit", "evaluate", "param_groups", "check_num_classes", "pick_precision", "bf16_is_fast", "TTA_MODES"]

TTA_MODES = (None, "flip")


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
        ema: float | None = None, cutout: int = 0) -> dict[str, Any]:
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

    Returns:
        dict with ``history`` (one record per epoch: lr, train_loss, train_top1, val_top1, val_top5, val_loss,
        epoch_time_s, images_per_s), ``final`` (the last record), ``best_val_top1``, ``train_time_s``,
        ``normalize`` and ``output_dir``.
    """
    if epochs < 1:
        raise LightnnError(f"epochs must be >= 1, got {epochs}")
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

    if out is not None and rank == 0:
        _write_config(out / "config.yaml", resolved)

    t_run = time.perf_counter()
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        net.train()
        acc = torch.zeros(3, dtype=torch.float64, device=dev)  # n, correct, loss sum
        it: Iterable = train_loader
        bar = None
        if progress and rank == 0:
            from tqdm import tqdm
            bar = tqdm(train_loader, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{epochs}", leave=False,
                       dynamic_ncols=True)
            it = bar
        for step, (x, y) in enumerate(it):
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            first = step == 0 and epoch == start_epoch
            try:
                with _autocast(dev, amp):
                    outputs = net(x)
                    loss, logits = classification_loss(outputs, y, label_smoothing=label_smoothing,
                                                       aux_weight=aux_weight)
                    if teach is not None:
                        with torch.no_grad():
                            t_logits, _ = split_outputs(teach(x))
                        loss = (1.0 - kd_weight) * loss + kd_weight * distillation_loss(logits, t_logits,
                                                                                        kd_temperature)
                    if extra_loss is not None:
                        loss = loss + extra_loss(model, outputs, y)
                if first and k is not None and logits.shape[1] != k:
                    raise DataError(f"model outputs {logits.shape[1]} classes but data {_data_name(train)!r} has {k}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
            except RuntimeError as e:
                if compile and first and _is_compile_error(e):
                    raise LightnnError(_compile_failure(model, e)) from e
                raise
            if grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            sched.step()
            for h in hooks:
                h(model)
            if ema_model is not None:
                ema_model.update_parameters(model)
            with torch.no_grad():
                acc[0] += y.numel()
                acc[1] += (logits.argmax(1) == y).sum()
                acc[2] += loss.detach().double() * y.numel()
            if bar is not None and step % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{sched.get_last_lr()[0]:.4f}")
        if bar is not None:
            bar.close()
        dist_utils.all_reduce_sum(acc)
        if not torch.isfinite(acc[2]):
            raise LightnnError(f"training diverged at epoch {epoch + 1} (loss is {acc[2].item()}); lower lr")
        train_time = time.perf_counter() - t0
        rec: dict[str, Any] = {"epoch": epoch + 1, "lr": sched.get_last_lr()[0],
                               "train_loss": acc[2].item() / acc[0].item(),
                               "train_top1": 100.0 * acc[1].item() / acc[0].item(),
                               "images_per_s": acc[0].item() / train_time}
        if val_loader is not None:
            ev = evaluate(model if ema_model is None else ema_model.module, val_loader, amp=amp, device=dev)
            rec.update(val_top1=ev["top1"], val_top5=ev["top5"], val_loss=ev["loss"], val_images=ev["n"])
            if ema_model is not None:
                rec["val_top1_raw"] = evaluate(model, val_loader, amp=amp, device=dev)["top1"]
            best = max(best, ev["top1"])
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
