"""Distillation: the KD loss and the teacher's stored outputs (plain PyTorch/NumPy)."""

from trainables.distill._bank import (
    FORMAT as BANK_FORMAT,
)
from trainables.distill._bank import (
    BankCorruptError,
    BankWriter,
    TeacherBank,
    bank_complete,
    open_bank,
    verify_bank,
    write_bank,
)
from trainables.distill._loss import (
    KDLoss,
    kd_loss,
    kd_loss_from_log_probs,
    kd_loss_per_example,
    kd_token_parts,
    teacher_log_probs,
)

__all__ = [
    "BANK_FORMAT",
    "BankCorruptError",
    "BankWriter",
    "KDLoss",
    "TeacherBank",
    "kd_loss",
    "kd_loss_from_log_probs",
    "kd_token_parts",
    "kd_loss_per_example",
    "open_bank",
    "teacher_log_probs",
    "bank_complete",
    "verify_bank",
    "write_bank",
]
