"""Callbacks of :func:`lightnn.train.fit`: everything a training method adds to plain SGD on cross-entropy.

A callback is an object with any of the hooks of :class:`Callback` (subclass it, or wrap functions in
:class:`LambdaCallback`). :func:`fit` calls them in list order, with the run's :class:`TrainState`:

- ``parameters(model, params)`` once, before the optimizer is built: which parameters are trained;
- ``steps(total)`` once: how many optimizer steps the run may take (the learning-rate schedule spans the result);
- ``on_fit_start(state)`` after the optimizer exists, before a resumed run's states are restored;
- per epoch ``on_epoch_start(state)``; per step ``on_step_start(state)`` (before the forward),
  ``loss(state, loss) -> loss`` (inside autocast; ``state.x``, ``state.y``, ``state.outputs``, ``state.logits``
  hold the batch), ``on_after_backward(state)`` (gradient edits, before clipping and the step),
  ``on_step_end(state)`` (after the optimizer and schedule step: re-apply masks, update averages);
- ``eval_model(state)``: a module to validate instead of the trained one (a moving average);
- ``on_epoch_metrics(state, record)``: add to the epoch's metrics before they are checked, logged and saved;
- ``on_epoch_end(state, record)`` after the epoch's checkpoint is written (stop a run, prune a search trial);
- ``on_fit_end(state)`` before ``model.pt`` is written;
- ``state_dict()`` / ``load_state_dict(d)``: what ``last.pt`` keeps so a resumed run continues the same way;
- ``config()``: settings recorded in ``config.yaml``.

``state.stop = True`` ends the run after the current step (a callback that may do so sets ``may_stop``).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import LightnnError
from .losses import distillation_loss, split_outputs

__all__ = ["Callback", "TrainState", "LambdaCallback", "Distillation", "EMA", "AuxLoss", "ExtraLoss", "Masks",
           "AGPSchedule", "SharedWeights", "QATObservers", "MaxSteps", "TimeLimit"]


@dataclass
class TrainState:
    """What a callback sees of a run. ``step`` counts the optimizer steps taken (over all epochs, resumed ones
    included); ``epoch`` is the current epoch (0-based); ``net`` is what the forward runs (``model``, or its DDP /
    compiled wrapper); ``config`` is the resolved :class:`~lightnn.train.TrainConfig` (amp, channels_last and
    compile decided)."""

    model: nn.Module
    config: Any
    device: torch.device
    optimizer: torch.optim.Optimizer
    scheduler: Any
    callbacks: list
    total_steps: int
    steps_per_epoch: int
    epochs: int
    net: nn.Module | None = None
    epoch: int = 0
    step: int = 0
    rank: int = 0
    world_size: int = 1
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    outputs: Any = None
    logits: torch.Tensor | None = None
    stop: bool = False
    extras: dict = field(default_factory=dict)


class Callback:
    """No-op hooks; override the ones a method needs (see the module docstring for when each runs)."""

    #: the entry of this callback's state in ``last.pt`` (default: the class name)
    state_key: str | None = None
    #: True when the callback keeps the weights in a constrained set (masks): a moving average would leave it
    constrains_weights: bool = False
    #: True when the callback may set ``state.stop`` (under DDP the ranks then agree on it after every step)
    may_stop: bool = False

    def parameters(self, model: nn.Module, params: list[nn.Parameter]) -> list[nn.Parameter]:
        return params

    def steps(self, total: int) -> int:
        return total

    def config(self) -> dict[str, Any]:
        return {}

    def on_fit_start(self, state: TrainState) -> None: ...

    def on_epoch_start(self, state: TrainState) -> None: ...

    def on_step_start(self, state: TrainState) -> None: ...

    def loss(self, state: TrainState, loss: torch.Tensor) -> torch.Tensor:
        return loss

    def on_after_backward(self, state: TrainState) -> None: ...

    def on_step_end(self, state: TrainState) -> None: ...

    def eval_model(self, state: TrainState) -> nn.Module | None:
        return None

    def on_epoch_metrics(self, state: TrainState, record: dict) -> None: ...

    def on_epoch_end(self, state: TrainState, record: dict) -> None: ...

    def on_fit_end(self, state: TrainState) -> None: ...

    def state_dict(self) -> dict | None:
        """None: nothing to keep for a resumed run."""
        return None

    def load_state_dict(self, state: dict) -> None: ...


_HOOKS = ("on_fit_start", "on_epoch_start", "on_step_start", "loss", "on_after_backward", "on_step_end",
          "on_epoch_metrics", "on_epoch_end", "on_fit_end")


class LambdaCallback(Callback):
    """Hooks from plain functions, e.g. ``LambdaCallback(on_step_end=lambda s: log(s.step))``."""

    may_stop = True

    def __init__(self, **hooks: Callable) -> None:
        unknown = sorted(set(hooks) - set(_HOOKS))
        if unknown:
            raise LightnnError(f"LambdaCallback got unknown hook(s) {unknown}; known: {list(_HOOKS)}")
        for name, fn in hooks.items():
            if not callable(fn):
                raise LightnnError(f"LambdaCallback hook {name} must be callable, got {type(fn).__name__}")
            setattr(self, name, fn)


def _fraction(name: str, v: Any, *, open_low: bool = False, open_high: bool = False) -> float:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ok = ok and (v > 0 if open_low else v >= 0) and (v < 1 if open_high else v <= 1)
    if not ok:
        lo, hi = "(" if open_low else "[", ")" if open_high else "]"
        raise LightnnError(f"{name} must be in {lo}0, 1{hi}, got {v!r}")
    return float(v)


class Distillation(Callback):
    """Knowledge distillation (Hinton et al. 2015): the loss becomes ``(1 - weight) * loss + weight * KD`` with
    KD = T^2 KL(softmax(t/T) || softmax(s/T)) at T = ``temperature``, t the teacher's logits on the same batch.

    ``teacher`` is a module (moved to the run's device, put in eval mode and frozen, in place) or a checkpoint
    path. With ``compile`` the teacher's forward is compiled too.
    """

    def __init__(self, teacher: nn.Module | str | os.PathLike, temperature: float = 4.0, weight: float = 0.5) -> None:
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not temperature > 0 \
                or not math.isfinite(temperature):
            raise LightnnError(f"kd_temperature must be a number > 0, got {temperature!r}")
        if teacher is None:
            raise LightnnError("Distillation needs a teacher: a model or a checkpoint path")
        self.weight = _fraction("kd_weight", weight)
        self.temperature = float(temperature)
        self.teacher = teacher
        self._run: nn.Module | None = None

    def config(self) -> dict[str, Any]:
        return {"kd_temperature": self.temperature, "kd_weight": self.weight}

    def on_fit_start(self, state: TrainState) -> None:
        if isinstance(self.teacher, (str, os.PathLike)):
            from ..checkpoint import load_any

            self.teacher = load_any(self.teacher)
        t = self.teacher.to(state.device).eval()
        for p in t.parameters():
            p.requires_grad_(False)
        if state.config.channels_last:
            t.to(memory_format=torch.channels_last)
        if state.config.compile:
            from .trainer import _compiled

            t = _compiled(t, state.config.compile)
        self._run = t

    def loss(self, state: TrainState, loss: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t_logits, _ = split_outputs(self._run(state.x))
        return (1.0 - self.weight) * loss + self.weight * distillation_loss(state.logits, t_logits, self.temperature)


class EMA(Callback):
    """An exponential moving average of the weights and BN statistics, updated after every optimizer step
    (``torch.optim.swa_utils.AveragedModel``; 0.999 averages over about the last thousand steps).

    Validation scores the average (``val_top1``; the trained weights' score is ``val_top1_raw``), ``last.pt``
    keeps the average so a resumed run continues it, and the model ends holding the averaged weights (which
    ``model.pt`` stores). Refused next to callbacks that constrain the weights (masks): the average of masked
    weights is not masked.
    """

    state_key = "ema"

    def __init__(self, decay: float) -> None:
        if not isinstance(decay, (int, float)) or isinstance(decay, bool) or not 0.0 < float(decay) < 1.0:
            raise LightnnError(f"ema decay must be in (0, 1), e.g. 0.999, got {decay}")
        self.decay = float(decay)
        self.averaged: nn.Module | None = None

    def config(self) -> dict[str, Any]:
        return {"ema": self.decay}

    def on_fit_start(self, state: TrainState) -> None:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        bad = [type(c).__name__ for c in state.callbacks if getattr(c, "constrains_weights", False)]
        if bad:
            raise LightnnError(f"EMA cannot be combined with {', '.join(bad)}: the average would not keep their "
                               f"constraint (pruned weights at zero); train without ema")
        self.averaged = AveragedModel(state.model, multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=True)

    def on_step_end(self, state: TrainState) -> None:
        self.averaged.update_parameters(state.model)

    def eval_model(self, state: TrainState) -> nn.Module | None:
        return self.averaged.module

    def on_fit_end(self, state: TrainState) -> None:
        state.model.load_state_dict(self.averaged.module.state_dict())

    def state_dict(self) -> dict | None:
        return self.averaged.state_dict() if self.averaged is not None else {}

    def load_state_dict(self, state: dict) -> None:
        self.averaged.load_state_dict(state)


class AuxLoss(Callback):
    """Adds ``weight`` x cross-entropy on every auxiliary output shaped like the logits (a model returning
    ``(logits, aux, ...)`` in train mode, as Inception-v3 does; 0.4 is torchvision's reference recipe), with the
    run's label smoothing. Other extra outputs (gates, features) are left to :class:`ExtraLoss`."""

    def __init__(self, weight: float = 0.4) -> None:
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not weight >= 0 \
                or not math.isfinite(weight):
            raise LightnnError(f"aux_weight must be a number >= 0, got {weight!r}")
        self.weight = float(weight)

    def config(self) -> dict[str, Any]:
        return {"aux_weight": self.weight}

    def loss(self, state: TrainState, loss: torch.Tensor) -> torch.Tensor:
        _, aux = split_outputs(state.outputs)
        for a in aux:
            if isinstance(a, torch.Tensor) and a.shape == state.logits.shape and self.weight:
                loss = loss + self.weight * F.cross_entropy(a.float(), state.y,
                                                            label_smoothing=state.config.label_smoothing)
        return loss


class ExtraLoss(Callback):
    """Adds ``fn(model, outputs, targets)`` (a scalar; ``outputs`` as the model returned them) to the loss:
    versatile filters' orthogonality term, a gate's sparsity or REINFORCE term."""

    def __init__(self, fn: Callable[[nn.Module, Any, torch.Tensor], torch.Tensor]) -> None:
        if not callable(fn):
            raise LightnnError(f"ExtraLoss needs a function fn(model, outputs, targets), got {type(fn).__name__}")
        self.fn = fn

    def loss(self, state: TrainState, loss: torch.Tensor) -> torch.Tensor:
        return loss + self.fn(state.model, state.outputs, state.y)


@dataclass
class AGPSchedule:
    """When Deep Compression's gradual pruning recomputes its masks (Zhu & Gupta 2017, automated gradual pruning):
    ``updates`` times along the first ``ramp_fraction`` of the run, each time calling ``update(t, n)`` (progress
    ``t`` of ``n`` along the sparsity ramp) one interval ahead, so training sees the mask it will be held to."""

    update: Callable[[int, int], Any]
    ramp_fraction: float = 0.6
    updates: int = 20

    def __call__(self, step: int, total: int) -> None:
        n = max(1, int(total * self.ramp_fraction))
        every = max(1, n // max(1, self.updates))
        if step <= n and (step % every == 0 or step == n):
            self.update(min(step + every, n), n)


class Masks(Callback):
    """Keeps masked weights at zero: ``weight[~mask] = 0`` for each named layer at the start and after every
    optimizer step (pruned weights stay pruned through retraining).

    ``masks``: ``{module name: keep-mask of its weight}`` (bool, or nonzero = keep), or a function returning the
    current mapping (a pruner whose masks a schedule recomputes). ``schedule``: ``fn(step, total)`` called before
    every step (e.g. :class:`AGPSchedule`).
    """

    constrains_weights = True

    def __init__(self, masks: Mapping[str, torch.Tensor] | Callable[[], Mapping[str, torch.Tensor]],
                 schedule: Callable[[int, int], Any] | None = None) -> None:
        if not (callable(masks) or isinstance(masks, Mapping)):
            raise LightnnError(f"Masks needs a mapping of layer name -> mask or a function returning one, "
                               f"got {type(masks).__name__}")
        if schedule is not None and not callable(schedule):
            raise LightnnError(f"Masks schedule must be a function fn(step, total), got {type(schedule).__name__}")
        self.masks, self.schedule = masks, schedule

    def _current(self) -> Mapping[str, torch.Tensor]:
        return self.masks() if callable(self.masks) else self.masks

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        for name, mask in self._current().items():
            try:
                w = model.get_submodule(name).weight
            except AttributeError:
                raise LightnnError(f"Masks: the model has no layer {name!r} with a weight") from None
            if mask.shape != w.shape:
                raise LightnnError(f"Masks: mask of {name!r} is {tuple(mask.shape)}, its weight {tuple(w.shape)}")
            keep = mask if mask.dtype == torch.bool else mask != 0
            w.masked_fill_(~keep.to(w.device), 0.0)

    def on_fit_start(self, state: TrainState) -> None:
        self.apply(state.model)

    def on_step_start(self, state: TrainState) -> None:
        if self.schedule is not None:
            self.schedule(state.step, state.total_steps)

    def on_step_end(self, state: TrainState) -> None:
        self.apply(state.model)


class SharedWeights(Callback):
    """Trained weight sharing (Deep Compression stage 2, Han et al. 2016 Sec. 3.3): trains the codebooks of
    layers whose weight is ``centroids[index]``. The gradient of each centroid is the sum of its member weights'
    gradients (Eq. 3); that sum is the backward of the lookup itself (``lightnn.compress.share``), so no gradient
    edit is needed here. ``train="centroids"`` trains only ``centroids`` (the paper), ``"all"`` also every other
    trainable parameter (biases, batch norm)."""

    def __init__(self, centroids: Iterable[nn.Parameter], train: str = "centroids") -> None:
        if train not in ("centroids", "all"):
            raise LightnnError(f"share_train must be 'centroids' or 'all', got {train!r}")
        self.centroids = list(centroids)
        if not self.centroids and train == "centroids":
            raise LightnnError("SharedWeights got no centroids to train: share the model's weights first")
        self.train = train

    def parameters(self, model: nn.Module, params: list[nn.Parameter]) -> list[nn.Parameter]:
        ids = {id(p) for p in model.parameters()}
        if any(id(c) not in ids for c in self.centroids):
            raise LightnnError("SharedWeights: the centroids are not parameters of the model being trained")
        return list(self.centroids) if self.train == "centroids" else params


class QATObservers(Callback):
    """Quantization-aware training's activation observers (modules for which ``is_observer`` is true, e.g. the
    ranges :func:`lightnn.export.prepare_qat` inserts): checks the model has some, optionally freezes their ranges
    after ``freeze_after`` optimizer steps (Jacob et al. 2018 Sec. 3; Krishnamoorthi 2018 Sec. 3.3: late in
    fine-tuning the ranges stop moving, so the weights adapt to fixed quantization grids), and leaves the model in
    eval mode with ``qat_steps`` set to the steps taken."""

    def __init__(self, is_observer: Callable[[nn.Module], bool], freeze_after: int | None = None) -> None:
        if freeze_after is not None and (not isinstance(freeze_after, int) or isinstance(freeze_after, bool)
                                         or freeze_after < 0):
            raise LightnnError(f"freeze_observers_after must be a step count >= 0, got {freeze_after!r}")
        self.is_observer, self.freeze_after = is_observer, freeze_after
        self.observers: list[nn.Module] = []

    def config(self) -> dict[str, Any]:
        return {"qat_freeze_observers_after": self.freeze_after}

    def _frozen(self, state: TrainState) -> bool:
        return self.freeze_after is not None and state.step >= self.freeze_after

    def on_fit_start(self, state: TrainState) -> None:
        self.observers = [m for m in state.model.modules() if self.is_observer(m)]
        if not self.observers:
            raise LightnnError("QAT: the model has no fake-quantized layers; prepare it with "
                               "lightnn.export.prepare_qat first")

    def on_epoch_start(self, state: TrainState) -> None:
        if self._frozen(state):  # fit put every module in train mode: an observer in eval mode stops updating
            for m in self.observers:
                m.eval()

    def on_step_end(self, state: TrainState) -> None:
        self.on_epoch_start(state)

    def on_fit_end(self, state: TrainState) -> None:
        state.model.qat_steps = state.step
        state.model.eval()


class MaxSteps(Callback):
    """Stop after ``n`` optimizer steps in all; the learning-rate schedule spans them (quick runs)."""

    def __init__(self, n: int) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise LightnnError(f"max_steps must be an integer >= 1, got {n!r}")
        self.n = n

    def steps(self, total: int) -> int:
        return min(total, self.n)

    def config(self) -> dict[str, Any]:
        return {"max_steps": self.n}


class TimeLimit(Callback):
    """Stop after the first step that ends more than ``seconds`` after this run started (the schedule is not
    shortened: the run stops part-way along it)."""

    may_stop = True

    def __init__(self, seconds: float) -> None:
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not seconds > 0:
            raise LightnnError(f"max_seconds must be a number > 0, got {seconds!r}")
        self.seconds = float(seconds)
        self._t0 = 0.0

    def config(self) -> dict[str, Any]:
        return {"max_seconds": self.seconds}

    def on_fit_start(self, state: TrainState) -> None:
        self._t0 = time.perf_counter()

    def on_step_end(self, state: TrainState) -> None:
        if time.perf_counter() - self._t0 > self.seconds:
            state.stop = True
