from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

FLOAT64_BELOW = 1e-30  # a progressive-form T below this is applied in float64


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


def _check_form(form: str) -> None:
    if form not in ("hinton", "progressive"):
        raise ValueError(f"form must be 'hinton' or 'progressive', got {form!r}")


def teacher_log_probs(
    teacher_logits: torch.Tensor, temperature: float | torch.Tensor, form: str = "hinton"
) -> torch.Tensor:
    """``log softmax(teacher / T)``, the teacher's side of the KD loss; no gradient.

    For ``form="progressive"`` a near-zero ``T`` must give exact hard labels: ``logits / T``
    stays finite in float32 down to ``T`` of about ``1e-30`` (for logits below ~1e8), and
    below :data:`FLOAT64_BELOW` (or for a learned, tensor ``T``) it is computed in float64. The
    student loop calls this once per batch, on the batch's rows of the bank."""
    _check_form(form)
    logits = teacher_logits.detach()
    tiny = isinstance(temperature, torch.Tensor) or temperature < FLOAT64_BELOW
    if form == "progressive" and tiny:
        return F.log_softmax(logits.double() / temperature, dim=-1).to(teacher_logits.dtype)
    return F.log_softmax(logits / temperature, dim=-1)


def kd_loss_per_example(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float | torch.Tensor,
    alpha: float,
    form: str = "hinton",
) -> KDLoss:
    """:func:`kd_loss` per example, each part of shape ``(batch,)`` (``KL_i`` summed over
    classes); ``temperature`` may be a scalar tensor that requires grad (a learned temperature).
    """
    _check(temperature, alpha)
    return kd_loss_from_log_probs(
        student_logits, teacher_log_probs(teacher_logits, temperature, form), labels,
        temperature=temperature, alpha=alpha, form=form,
    )  # fmt: skip


def kd_loss_from_log_probs(
    student_logits: torch.Tensor,
    log_p_teacher: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float | torch.Tensor,
    alpha: float,
    form: str = "hinton",
) -> KDLoss:
    """:func:`kd_loss_per_example` from the teacher's :func:`teacher_log_probs` at the same
    ``temperature`` and ``form`` (arguments are not re-checked: this is the per-step path)."""
    ce = F.cross_entropy(student_logits, labels, reduction="none")
    if form == "progressive":
        kd = -(log_p_teacher.exp() * F.log_softmax(student_logits, dim=-1)).sum(dim=-1)
    else:
        log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
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
        form: ``hinton`` (above) or ``progressive``: the loss of Panigrahi et al. (2024)'s
            code, ``alpha * CE + (1 - alpha) * CE(softmax(teacher / T), softmax(student))``,
            the temperature on the teacher only and no ``T^2``, so a near-zero ``T`` (down to
            1e-20) means the teacher's hard argmax labels.
    """
    parts = kd_loss_per_example(
        student_logits, teacher_logits, labels, temperature=temperature, alpha=alpha, form=form
    )
    return KDLoss(*(part.mean() for part in parts))


def kd_token_parts(
    student_logits: torch.Tensor,
    log_p_teacher: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float | torch.Tensor,
    alpha: float,
    form: str = "hinton",
    ignore_index: int = -100,
) -> tuple[KDLoss, torch.Tensor]:
    """Per-token KD for the language-model tasks: :func:`kd_loss_from_log_probs` at every
    position whose target is not ``ignore_index`` (masked positions for masked LM, non-padding
    for causal LM), then averaged per sequence.

    Args:
        student_logits, log_p_teacher: ``(batch, positions, vocab)``.
        targets: ``(batch, positions)``.

    Returns:
        The parts per sequence, each ``(batch,)``: the mean over the sequence's counted tokens
        (0 for a sequence with none), and the counts ``(batch,)``. The batch's loss is the mean
        over its counted tokens, ``sum(part * count) / sum(count)`` (DESIGN's convention).
        Every position is computed and the uncounted ones are zeroed, so there is no
        data-dependent shape and no host sync.
    """
    counted = targets != ignore_index
    vocab = student_logits.shape[-1]
    per_token = kd_loss_from_log_probs(
        student_logits.reshape(-1, vocab), log_p_teacher.reshape(-1, vocab),
        targets.reshape(-1).masked_fill(~counted.reshape(-1), 0),
        temperature=temperature, alpha=alpha, form=form,
    )  # fmt: skip
    return per_sequence_means(per_token, counted)


def per_sequence_means(per_token: KDLoss, counted: torch.Tensor) -> tuple[KDLoss, torch.Tensor]:
    """Each part of flat per-token losses ``(batch * positions,)`` as its mean over each
    sequence's ``counted`` tokens ``(batch, positions)`` (0 with none), and the counts; no host
    sync."""
    weight = counted.float()  # float32 even under bf16 autocast: exact counts and means
    counts = weight.sum(dim=1)
    scale = 1.0 / counts.clamp(min=1.0)

    def per_sequence(part: torch.Tensor) -> torch.Tensor:
        return (part.reshape(counted.shape) * weight).sum(dim=1) * scale

    return KDLoss(*(per_sequence(part) for part in per_token)), counts
