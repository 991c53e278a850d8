"""lightnn: design, measure, train, compress, search and deploy efficient CNNs on PyTorch.

``lightnn.create_model`` / ``lightnn.list_models`` (the zoo), ``lightnn.profile(model, input_size)`` (the
counter; the module itself is callable, so ``lightnn.profile.measure_latency`` works too) and
``lightnn.save(path, model, record)`` / ``lightnn.load(path) -> (model, record)`` (:class:`ModelRecord`: what a
saved model is, for ``.pt`` and ``.lnz`` files alike).
"""

from __future__ import annotations

from . import profile  # callable module: lightnn.profile(model, input_size)
from . import checkpoint as _checkpoint  # noqa: F401  (create_model(checkpoint=...) loads through it)
from .compress import fileformat as _lnz  # noqa: F401  (registers the .lnz reader of load_any)
from .export import backends as _backends  # noqa: F401  (registers ONNX Runtime into profile's latency backends)
from .errors import LightnnError
from .models import create_model, list_models, model_info
from .record import ModelRecord, load, save

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "model_info", "profile", "ModelRecord", "save", "load", "LightnnError",
           "__version__"]
