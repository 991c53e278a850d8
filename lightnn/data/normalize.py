"""One normalization record: the per-channel ``mean`` and ``std`` a model's inputs were normalized with.

Images are scaled to [0, 1] and then ``(x - mean) / std`` per channel. A model's training normalization travels
with it (:class:`lightnn.record.ModelRecord`, checkpoint and ``.lnz`` metadata, ONNX metadata), so evaluation,
calibration and deployment use the same statistics instead of guessing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import LightnnError

__all__ = ["Normalization"]


@dataclass(frozen=True)
class Normalization:
    """Per-channel input statistics; validated on construction (same length, finite, std > 0)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        try:
            mean = tuple(float(v) for v in self.mean)
            std = tuple(float(v) for v in self.std)
        except (TypeError, ValueError):
            raise LightnnError(f"normalization mean/std must be lists of numbers, got mean={self.mean!r}, "
                               f"std={self.std!r}") from None
        if not mean or len(mean) != len(std):
            raise LightnnError(f"normalization mean and std must have one value per channel each, got "
                               f"{len(mean)} and {len(std)} values")
        if not all(math.isfinite(v) for v in mean + std) or min(std) <= 0:
            raise LightnnError(f"normalization needs finite means and std > 0, got mean={list(mean)}, std={list(std)}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def channels(self) -> int:
        return len(self.mean)

    @classmethod
    def of(cls, value: "Normalization | Mapping[str, Any] | None") -> "Normalization | None":
        """A :class:`Normalization` from itself, a ``{"mean": [...], "std": [...]}`` mapping, or None."""
        if value is None or isinstance(value, cls):
            return value
        if not isinstance(value, Mapping) or "mean" not in value or "std" not in value:
            raise LightnnError(f"normalization must be a mapping with 'mean' and 'std', got {str(value)[:80]!r}")
        return cls(tuple(value["mean"]), tuple(value["std"]))

    def to_dict(self) -> dict[str, list[float]]:
        """The plain form checkpoints and configs store: ``{"mean": [...], "std": [...]}``."""
        return {"mean": list(self.mean), "std": list(self.std)}
