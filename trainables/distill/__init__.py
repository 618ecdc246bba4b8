"""Distillation: the KD loss and the teacher's stored outputs (plain PyTorch/NumPy)."""

from trainables.distill._bank import (
    BankWriter,
    TeacherBank,
    bank_complete,
    open_bank,
    write_bank,
)
from trainables.distill._loss import (
    KDLoss,
    kd_loss,
    kd_loss_from_log_probs,
    kd_loss_per_example,
    teacher_log_probs,
)

__all__ = [
    "BankWriter",
    "KDLoss",
    "TeacherBank",
    "kd_loss",
    "kd_loss_from_log_probs",
    "kd_loss_per_example",
    "open_bank",
    "teacher_log_probs",
    "bank_complete",
    "write_bank",
]
