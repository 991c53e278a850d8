"""Loss terms: label-smoothed cross-entropy (Szegedy et al., 2016, "Rethinking the Inception Architecture",
section 7), auxiliary-head losses (Inception-v3's auxiliary classifier) and knowledge distillation
(Hinton et al., 2015, "Distilling the Knowledge in a Neural Network")."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["distillation_loss", "classification_loss", "split_outputs"]


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float = 4.0) -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)) * T^2 (Hinton et al. 2015, eq. 2 and the T^2 gradient-scale remark)."""
    t = float(temperature)
    log_p = F.log_softmax(student_logits.float() / t, dim=1)
    q = F.log_softmax(teacher_logits.float() / t, dim=1)
    return F.kl_div(log_p, q, reduction="batchmean", log_target=True) * (t * t)


def split_outputs(outputs) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A model's training output: logits, or a tuple ``(logits, *aux)`` (Inception's auxiliary head)."""
    if isinstance(outputs, (tuple, list)):
        return outputs[0], list(outputs[1:])
    return outputs, []


def classification_loss(outputs, targets: torch.Tensor, *, label_smoothing: float = 0.0,
                        aux_weight: float = 0.4) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy on the logits plus ``aux_weight`` x cross-entropy on every auxiliary output shaped like the
    logits (Inception-v3 weighs its auxiliary classifier 0.4 in torchvision's reference recipe); other extra
    outputs (gates, features) are left to an ``ExtraLoss`` callback. Returns (loss, logits). (:func:`fit` calls it
    with ``aux_weight=0`` and adds the auxiliary term through its ``AuxLoss`` callback.)"""
    logits, aux = split_outputs(outputs)
    loss = F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)
    for a in aux:
        if isinstance(a, torch.Tensor) and a.shape == logits.shape and aux_weight:
            loss = loss + aux_weight * F.cross_entropy(a.float(), targets, label_smoothing=label_smoothing)
    return loss, logits
