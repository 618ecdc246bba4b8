from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class KDLoss(NamedTuple):
    """The loss and its two parts, each a scalar tensor (``kd`` already includes ``T^2``)."""

    total: torch.Tensor
    ce: torch.Tensor
    kd: torch.Tensor


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float,
    alpha: float,
) -> KDLoss:
    """Hinton et al. (2015) knowledge-distillation loss.

    ``total = alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(p_teacher^T || p_student^T)``

    where ``p^T = softmax(logits / T)`` and the KL divergence is summed over classes and averaged
    over the batch (PyTorch's ``batchmean``). The ``T^2`` factor keeps the soft-target gradients
    on the same scale as the hard-label ones when ``T`` changes. ``alpha = 1`` is labels only,
    ``alpha = 0`` is teacher only.

    Args:
        student_logits: ``(batch, classes)``.
        teacher_logits: ``(batch, classes)``; treated as constants (no gradient flows into them).
        labels: ``(batch,)`` integer class indices.
        temperature: ``T > 0``.
        alpha: weight of the label loss, in ``[0, 1]``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    ce = F.cross_entropy(student_logits, labels)
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    kd = temperature**2 * kl
    return KDLoss(total=alpha * ce + (1.0 - alpha) * kd, ce=ce, kd=kd)
