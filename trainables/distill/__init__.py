"""Distillation: the KD loss and the teacher's stored outputs (plain PyTorch/NumPy)."""

from trainables.distill._loss import (
    KDLoss,
    kd_loss,
    kd_loss_from_log_probs,
    kd_loss_per_example,
    teacher_log_probs,
)
from trainables.distill._teacher_outputs import (
    BankWriter,
    TeacherOutputs,
    read_teacher_outputs,
    teacher_outputs_complete,
    write_teacher_outputs,
)

__all__ = [
    "BankWriter",
    "KDLoss",
    "TeacherOutputs",
    "kd_loss",
    "kd_loss_from_log_probs",
    "kd_loss_per_example",
    "read_teacher_outputs",
    "teacher_log_probs",
    "teacher_outputs_complete",
    "write_teacher_outputs",
]
