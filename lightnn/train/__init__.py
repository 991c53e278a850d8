"""Training and evaluation (``lightnn.train``): :func:`fit`, :func:`evaluate`, losses, schedules, DDP helpers.

Typical use::

    from lightnn import create_model
    from lightnn.data import load_dataset
    from lightnn.train import fit, evaluate

    train, val = load_dataset("sample", "train"), load_dataset("sample", "val")
    model = create_model("resnet20", num_classes=train.num_classes)
    fit(model, train, val, epochs=30, lr=0.1, output_dir="runs/r20")
    print(evaluate(model, val)["top1"])
"""

from .losses import classification_loss, distillation_loss
from .schedule import SCHEDULES, lr_lambda
from .trainer import (bf16_is_fast, check_finite, check_input_size, check_num_classes, check_output, evaluate, fit,
                      param_groups, pick_precision, seed_everything)

__all__ = ["fit", "evaluate", "seed_everything", "check_output", "check_input_size", "check_finite", "param_groups",
           "check_num_classes", "pick_precision", "bf16_is_fast", "distillation_loss", "classification_loss",
           "lr_lambda", "SCHEDULES"]
