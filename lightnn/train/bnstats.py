"""Re-estimating batch-norm statistics after an edit (pruning, block removal, low-rank, weight sharing).

An edited network keeps the running means and variances of the layers it had: they no longer describe the
activations the edited layers produce, and scored as it is a pruned ResNet looks far worse than it is (EagleEye,
Li et al. 2020: pruning candidates ranked after re-estimating the statistics rank as they do after fine-tuning).
:func:`recalibrate_bn` replaces them by the plain average over a few training batches, without augmentation,
with no weight changed.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn

__all__ = ["recalibrate_bn"]


def recalibrate_bn(model: nn.Module, data: Any, *, images: int = 1024, batch_size: int = 128,
                   mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                   device: str | torch.device = "cpu", seed: int = 0) -> int:
    """Reset every batch-norm layer's running statistics and re-estimate them as the cumulative average over
    ``images`` training images (seeded shuffle of ``data``, an :class:`~lightnn.data.ImageData`, or any iterable
    of ``(x, y)`` batches). Weights are untouched; the model's train/eval mode and each layer's momentum are
    restored. Returns the number of images used (0 when the model has no batch norm)."""
    from ..data import BatchLoader

    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return 0
    was = model.training
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    batches = (BatchLoader(data, batch_size, shuffle=True, augment=False, mean=mean, std=std, seed=seed)
               if hasattr(data, "images") else data)
    seen = 0
    model.to(device).train()
    try:
        with torch.no_grad():
            for x, _ in batches:
                if seen >= images:
                    break
                x = torch.as_tensor(x)[: images - seen].to(device)
                model(x)
                seen += len(x)
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        model.train(was)
    return seen
