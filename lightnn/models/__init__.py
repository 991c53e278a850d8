"""Model zoo: ``create_model(name, ...)`` and ``list_models(pattern)``; one file per family."""

from ._registry import ModelInfo, create_model, is_model, list_models, model_info, register_model, set_checkpoint_loader
from .record import ModelRecord, model_name, model_normalization, record_edit, record_of, record_update, set_record

__all__ = ["create_model", "list_models", "model_info", "is_model", "register_model", "ModelInfo", "set_checkpoint_loader",
           "ModelRecord", "record_of", "set_record", "record_edit", "record_update", "model_name",
           "model_normalization"]
