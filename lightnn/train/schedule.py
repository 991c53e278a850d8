"""Per-step learning-rate schedules: cosine (Loshchilov & Hutter, 2017, SGDR without restarts) with linear
warm-up (Goyal et al., 2017), one-cycle (Smith & Topin, 2018) and constant."""

from __future__ import annotations

import math
from typing import Callable

from ..errors import LightnnError

__all__ = ["lr_lambda", "SCHEDULES"]

SCHEDULES = ("cosine", "onecycle", "constant")


def lr_lambda(schedule: str, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.0,
              onecycle_div: float = 25.0, onecycle_final_div: float = 1e4) -> Callable[[int], float]:
    """A multiplier of the base learning rate for each optimizer step (``torch.optim.lr_scheduler.LambdaLR``).

    - cosine: linear warm-up from 1/warmup to 1 over ``warmup_steps``, then 0.5 (1 + cos(pi t)) down to ``min_ratio``.
    - onecycle: cosine ramp from 1/``onecycle_div`` up to 1 over ``warmup_steps`` (30% of training when 0), then
      cosine down to 1/(``onecycle_div`` x ``onecycle_final_div``); momentum is not cycled.
    - constant: warm-up, then 1 (fine-tuning).
    """
    if schedule not in SCHEDULES:
        raise LightnnError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    total = max(1, int(total_steps))
    warm = max(0, min(int(warmup_steps), total))

    def cos_interp(a: float, b: float, t: float) -> float:
        return b + (a - b) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, t))))

    if schedule == "onecycle":
        up = warm if warm > 0 else max(1, int(0.3 * total))
        start, end = 1.0 / onecycle_div, 1.0 / (onecycle_div * onecycle_final_div)

        def f(step: int) -> float:
            if step < up:
                return cos_interp(start, 1.0, step / up)
            return cos_interp(1.0, end, (step - up) / max(1, total - up))
        return f

    def g(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if schedule == "constant":
            return 1.0
        return cos_interp(1.0, min_ratio, (step - warm) / max(1, total - warm))
    return g
