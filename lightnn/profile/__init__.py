"""Measurement: params, multiply-adds, memory traffic and activation memory (:func:`profile`), and measured
latency (:func:`measure_latency`, with pluggable backends).

``lightnn.profile(model, input_size)`` works on any ``nn.Module``; see :mod:`lightnn.profile.counter` for what is
counted and :mod:`lightnn.profile.ops` for the op table.
"""

import sys
import types

from .counter import (DATA_MOVEMENT_MODULES, LayerRow, ProfileReport, profile, register_data_movement_module)
from .latency import (LatencyBackend, LatencyResult, interleaved, latency_backends, measure_latency, percentile,
                      register_latency_backend, time_callable)
from .ops import register_op

__all__ = ["profile", "ProfileReport", "LayerRow", "register_op", "register_data_movement_module",
           "DATA_MOVEMENT_MODULES", "measure_latency", "LatencyResult", "LatencyBackend", "register_latency_backend",
           "latency_backends", "percentile", "time_callable", "interleaved"]


class _CallableModule(types.ModuleType):
    """Importing the subpackage ``lightnn.profile`` rebinds the attribute ``lightnn.profile`` (which
    ``lightnn/__init__.py`` defines as a function) to this module; making the module callable keeps
    ``lightnn.profile(model, input_size)`` working either way."""

    def __call__(self, *args, **kwargs) -> ProfileReport:
        return profile(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
