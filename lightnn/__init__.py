"""lightnn: design, measure, train, compress, search and deploy efficient CNNs on PyTorch."""

from __future__ import annotations

from typing import Any

from .errors import LightnnError
from .models import create_model, list_models, model_info

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "model_info", "profile", "LightnnError", "__version__"]


def profile(model: Any, input_size: Any = (1, 3, 224, 224), **kwargs: Any):
    """Count params, multiply-adds, FLOPs and memory traffic of any ``nn.Module`` (see :mod:`lightnn.profile`)."""
    from .profile import profile as _profile

    return _profile(model, input_size, **kwargs)
