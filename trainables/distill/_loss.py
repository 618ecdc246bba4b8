from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class KDLoss(NamedTuple):
    """The loss and its two parts (``kd`` already includes ``T^2``): scalars from
    :func:`kd_loss`, ``(batch,)`` tensors from :func:`kd_loss_per_example`."""

    total: torch.Tensor
    ce: torch.Tensor
    kd: torch.Tensor


def _check(temperature: float | torch.Tensor, alpha: float) -> None:
    if not isinstance(temperature, torch.Tensor) and temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")


def kd_loss_per_example(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float | torch.Tensor,
    alpha: float,
    form: str = "hinton",
) -> KDLoss:
    """Per-example Hinton et al. (2015) loss, each part of shape ``(batch,)``:
    ``alpha * CE_i + (1 - alpha) * T^2 * KL_i(p_teacher^T || p_student^T)``, ``KL_i`` summed
    over classes. Shapes and arguments as :func:`kd_loss`; ``temperature`` may be a scalar
    tensor that requires grad (a learned temperature).

    ``form="progressive"`` is the loss of Panigrahi et al. (2024)'s code instead:
    ``alpha * CE_i + (1 - alpha) * CE_i(softmax(teacher / T), softmax(student))``, the
    temperature on the teacher only and no ``T^2``, so a near-zero ``T`` (down to 1e-20) means
    the teacher's hard argmax labels."""
    _check(temperature, alpha)
    ce = F.cross_entropy(student_logits, labels, reduction="none")
    if form == "progressive":
        p_teacher = F.softmax(teacher_logits.detach().double() / temperature, dim=-1).to(
            student_logits.dtype
        )
        kd = -(p_teacher * F.log_softmax(student_logits, dim=-1)).sum(dim=-1)
        return KDLoss(total=alpha * ce + (1.0 - alpha) * kd, ce=ce, kd=kd)
    if form != "hinton":
        raise ValueError(f"form must be 'hinton' or 'progressive', got {form!r}")
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1)
    kd = temperature**2 * kl
    return KDLoss(total=alpha * ce + (1.0 - alpha) * kd, ce=ce, kd=kd)


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float | torch.Tensor,
    alpha: float,
    form: str = "hinton",
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
        form: ``hinton`` (above) or ``progressive`` (see :func:`kd_loss_per_example`).
    """
    parts = kd_loss_per_example(
        student_logits, teacher_logits, labels, temperature=temperature, alpha=alpha, form=form
    )
    return KDLoss(*(part.mean() for part in parts))
