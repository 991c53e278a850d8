"""The training recipe of :func:`lightnn.train.fit` as one typed, validated value (:class:`TrainConfig`).

Only hyperparameters live here: what to train with (teachers, moving averages, masks, fake quantization, step
limits) are callbacks (:mod:`lightnn.train.callbacks`); where a run writes (``output_dir``, ``resume``,
``overwrite``) are arguments of :func:`fit`, because they describe one invocation on one machine, not the recipe
that a resumed or repeated run must share.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, fields
from typing import Any, Mapping

import torch

from ..errors import LightnnError
from .schedule import SCHEDULES

__all__ = ["TrainConfig", "COMPILE_MODES", "check_compile_mode"]

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs", "auto")


def check_compile_mode(compile: bool | str) -> None:
    """Raise LightnnError unless ``compile`` is a bool, one of torch.compile's mode names, or "auto" (lightnn's:
    compile only when a timed compiled step is faster than an eager one)."""
    if isinstance(compile, str) and compile not in COMPILE_MODES:
        raise LightnnError(f"compile mode {compile!r} is not one of {sorted(COMPILE_MODES)}")
    if not isinstance(compile, (bool, str)):
        raise LightnnError(f"compile must be True, False or a mode name, got {compile!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run of :func:`lightnn.train.fit`.

    - ``epochs``: passes over the training data, fractions allowed (0.5 trains half an epoch of steps; Deep
      Compression's retraining stages use that); ``batch_size``: the total over all DDP processes.
    - ``lr``, ``momentum``, ``nesterov``, ``weight_decay``: SGD; weight decay skips norms and biases.
    - ``schedule``: ``"cosine"``, ``"onecycle"`` or ``"constant"``, stepped every iteration, after
      ``warmup_epochs`` of linear warm-up; ``min_lr`` is the cosine floor.
    - ``label_smoothing``: epsilon of the smoothed cross-entropy (Szegedy et al. 2016).
    - ``augment``: pad + crop + flip of lightnn's own loader; ``cutout``: side of the square each training image
      gets painted over in the mean colour (DeVries & Taylor 2017; 0 = off). Cutout is part of that loader's batch
      augmentation (it paints the uint8 batch before normalization, drawn from the loader's seeded generator), so
      it is a setting here rather than a callback.
    - ``amp`` / ``channels_last``: bf16 autocast and the channels-last layout; None lets the device decide (on a
      CPU with AMX by timing one batch both ways). ``compile``: train through ``torch.compile`` (True, a mode name,
      or ``"auto"``: only when a timed compiled step is faster).
    - ``device``: where to train (None: CUDA when available); ``seed``: batches, augmentation and dropout.
    - ``grad_clip``: clip the gradient norm to this (None: no clipping).
    - ``progress``: a progress bar per epoch; ``verbose``: one line per epoch.
    - ``mean`` / ``std``: input normalization per channel (None: the training data's channel statistics).
    """

    epochs: float = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    label_smoothing: float = 0.0
    augment: bool = True
    cutout: int = 0
    amp: bool | None = None
    channels_last: bool | None = None
    compile: bool | str = False
    device: str | torch.device | None = None
    seed: int = 0
    grad_clip: float | None = None
    progress: bool = True
    verbose: bool = True
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        # number -> (integer?, lowest allowed, whether the lowest itself is allowed)
        limits = {"epochs": (False, 0.0, False), "batch_size": (True, 1, True), "lr": (False, 0.0, True),
                  "momentum": (False, 0.0, True), "weight_decay": (False, 0.0, True),
                  "warmup_epochs": (False, 0.0, True), "min_lr": (False, 0.0, True), "cutout": (True, 0, True),
                  "seed": (True, 0, True), "grad_clip": (False, 0.0, False)}
        for name, (integer, lo, closed) in limits.items():
            v = getattr(self, name)
            if v is None and name == "grad_clip":
                continue
            ok = isinstance(v, numbers.Integral if integer else numbers.Real) and not isinstance(v, bool)
            ok = ok and math.isfinite(v) and (v >= lo if closed else v > lo)
            if not ok:
                kind = "an integer" if integer else "a number"
                raise LightnnError(f"{name} must be {kind} {'>=' if closed else '>'} {lo}, got {v!r}")
        if not isinstance(self.label_smoothing, numbers.Real) or not 0.0 <= self.label_smoothing < 1.0:
            raise LightnnError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.schedule not in SCHEDULES:
            raise LightnnError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        for name in ("nesterov", "augment", "progress", "verbose"):
            if not isinstance(getattr(self, name), bool):
                raise LightnnError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("amp", "channels_last"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), bool):
                raise LightnnError(f"{name} must be true, false or None (decided by the device), "
                                   f"got {getattr(self, name)!r}")
        check_compile_mode(self.compile)
        if self.device is not None and not isinstance(self.device, (str, torch.device)):
            raise LightnnError(f"device must be a device name such as 'cpu' or 'cuda:0', got {self.device!r}")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if v is None:
                continue
            try:
                vals = tuple(float(x) for x in v)
            except (TypeError, ValueError):
                raise LightnnError(f"{name} must be a list of per-channel numbers, got {v!r}") from None
            if not vals or not all(math.isfinite(x) for x in vals) or (name == "std" and min(vals) <= 0):
                raise LightnnError(f"{name} must be finite per-channel numbers{' > 0' if name == 'std' else ''}, "
                                   f"got {v!r}")
            object.__setattr__(self, name, vals)  # frozen: normalize lists to tuples once, here
        if (self.mean is None) != (self.std is None):
            raise LightnnError("mean and std go together: give both or neither")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, where: str = "training configuration") -> "TrainConfig":
        """Build from a mapping (a YAML section); a key that is not a field is named, with the known ones."""
        if not isinstance(d, Mapping):
            raise LightnnError(f"{where} must be a mapping of settings, got {type(d).__name__}")
        _check_keys(d, where)
        return cls(**dict(d))

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with ``changes`` applied; an unknown key is named."""
        _check_keys(changes, "fit() setting")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists, strings) for ``config.yaml`` and checkpoints."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["mean"] = list(self.mean) if self.mean is not None else None
        d["std"] = list(self.std) if self.std is not None else None
        d["device"] = str(self.device) if self.device is not None else None
        return d


# old fit() keywords that became callbacks: the error for them says which
_MOVED = {"teacher": "Distillation(teacher, temperature, weight)", "kd_weight": "Distillation(..., weight=)",
          "kd_temperature": "Distillation(..., temperature=)", "ema": "EMA(decay)", "aux_weight": "AuxLoss(weight)",
          "extra_loss": "ExtraLoss(fn)", "step_hook": "Masks(...) or LambdaCallback(on_step_end=...)",
          "mask_hook": "Masks(...)", "on_epoch_end": "LambdaCallback(on_epoch_end=...)",
          "max_steps": "MaxSteps(n)", "max_seconds": "TimeLimit(seconds)"}


def _check_keys(d: Mapping[str, Any], where: str) -> None:
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(d) - known)
    if not unknown:
        return
    moved = [f"{k} -> callbacks=[{_MOVED[k]}]" for k in unknown if k in _MOVED]
    hint = f" ({'; '.join(moved)}, from lightnn.train.callbacks)" if moved else ""
    raise LightnnError(f"unknown {where} key(s) {unknown}{hint}; known: {sorted(known)}")
