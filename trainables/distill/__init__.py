"""Distillation: the KD loss and the teacher's stored outputs (plain PyTorch/NumPy)."""

from trainables.distill._bank import (
    FORMAT as BANK_FORMAT,
)
from trainables.distill._bank import (
    Layout,
    SplitOutputs,
    TeacherBank,
    bank_complete,
    open_bank,
    verify_bank,
    write_bank,
)
from trainables.distill._files import BankCorruptError
from trainables.distill._loss import (
    KDLoss,
    kd_loss,
    kd_loss_from_log_probs,
    kd_loss_per_example,
    kd_token_parts,
    teacher_log_probs,
)
from trainables.distill._run import RunWriter, TeacherRun, open_run, run_intact

__all__ = [
    "BANK_FORMAT",
    "BankCorruptError",
    "KDLoss",
    "Layout",
    "RunWriter",
    "SplitOutputs",
    "TeacherBank",
    "TeacherRun",
    "bank_complete",
    "kd_loss",
    "kd_loss_from_log_probs",
    "kd_loss_per_example",
    "kd_token_parts",
    "open_bank",
    "open_run",
    "run_intact",
    "teacher_log_probs",
    "verify_bank",
    "write_bank",
]
