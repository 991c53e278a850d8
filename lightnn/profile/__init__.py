"""Measurement: params, multiply-adds, memory traffic and activation memory (:func:`profile`), and measured
latency (:func:`measure_latency`, with pluggable backends), and predicted latency from a measured table of the
units the runtime fuses (:func:`predict_latency`, :class:`LatencyTable`; see ``docs/latency_model.md``).

``lightnn.profile(model, input_size)`` works on any ``nn.Module``; see :mod:`lightnn.profile.counter` for what is
counted and :mod:`lightnn.profile.ops` for the op table.
"""

import sys
import types

from .counter import (DATA_MOVEMENT_MODULES, LayerRow, ProfileReport, profile, register_data_movement_module)
from .latency import (LatencyBackend, LatencyResult, interleaved, latency_backends, measure_latency, percentile,
                      register_latency_backend, time_callable)
from .latency_table import LatencyTable, device_fingerprint, load_table
from .latency_units import Unit, model_units, register_unit_kind
from .ops import register_op
from .predict import Prediction, build_table, fit_correction, predict_latency

__all__ = ["profile", "ProfileReport", "LayerRow", "register_op", "register_data_movement_module",
           "DATA_MOVEMENT_MODULES", "measure_latency", "LatencyResult", "LatencyBackend", "register_latency_backend",
           "latency_backends", "percentile", "time_callable", "interleaved", "predict_latency", "Prediction",
           "LatencyTable", "load_table", "device_fingerprint", "build_table", "fit_correction", "model_units", "Unit",
           "register_unit_kind"]


class _CallableModule(types.ModuleType):
    """Importing the subpackage ``lightnn.profile`` rebinds the attribute ``lightnn.profile`` (which
    ``lightnn/__init__.py`` defines as a function) to this module; making the module callable keeps
    ``lightnn.profile(model, input_size)`` working either way."""

    def __call__(self, *args, **kwargs) -> ProfileReport:
        return profile(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
