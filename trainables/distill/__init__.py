"""Distillation: the KD loss and the teacher's stored outputs (plain PyTorch/NumPy)."""

from trainables.distill._loss import KDLoss, kd_loss
from trainables.distill._teacher_outputs import (
    TeacherOutputs,
    read_teacher_outputs,
    teacher_outputs_complete,
    write_teacher_outputs,
)

__all__ = [
    "KDLoss",
    "TeacherOutputs",
    "kd_loss",
    "read_teacher_outputs",
    "teacher_outputs_complete",
    "write_teacher_outputs",
]
