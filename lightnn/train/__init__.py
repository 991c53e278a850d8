"""Training and evaluation (``lightnn.train``): one training loop (:func:`fit`, configured by a
:class:`TrainConfig`, extended by callbacks), one :func:`evaluate` (PyTorch modules and ONNX models), losses,
schedules, DDP helpers.

Typical use::

    from lightnn import create_model
    from lightnn.data import load_dataset
    from lightnn.train import EMA, TrainConfig, evaluate, fit

    train, val = load_dataset("sample", "train"), load_dataset("sample", "val")
    model = create_model("resnet20", num_classes=train.num_classes)
    fit(model, train, val, TrainConfig(epochs=30, lr=0.1), callbacks=[EMA(0.999)], output_dir="runs/r20")
    print(evaluate(model, val)["top1"])
"""

from .callbacks import (EMA, AGPSchedule, AuxLoss, Callback, Distillation, ExtraLoss, LambdaCallback, Masks, MaxSteps,
                        QATObservers, SharedWeights, TimeLimit, TrainState)
from .bnstats import recalibrate_bn
from .config import TrainConfig
from .evaluate import array_batches, evaluate
from .losses import classification_loss, distillation_loss
from .schedule import SCHEDULES, lr_lambda
from .trainer import (bf16_is_fast, check_finite, check_input_size, check_num_classes, check_output, fit, param_groups,
                      pick_precision, seed_everything)

__all__ = ["fit", "TrainConfig", "evaluate", "array_batches", "seed_everything", "check_output", "check_input_size",
           "check_finite", "param_groups", "recalibrate_bn", "check_num_classes", "pick_precision", "bf16_is_fast",
           "distillation_loss", "classification_loss", "lr_lambda", "SCHEDULES", "Callback", "TrainState",
           "LambdaCallback", "Distillation", "EMA", "AuxLoss", "ExtraLoss", "Masks", "AGPSchedule", "SharedWeights",
           "QATObservers", "MaxSteps", "TimeLimit"]
