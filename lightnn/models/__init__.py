"""Model zoo: ``create_model(name, ...)`` and ``list_models(pattern)``; one file per family."""

from ._registry import ModelInfo, create_model, is_model, list_models, model_info, register_model, set_checkpoint_loader

__all__ = ["create_model", "list_models", "model_info", "is_model", "register_model", "ModelInfo", "set_checkpoint_loader"]
