"""Teacher and student trainables for Ray Tune, and the plain-PyTorch engine beneath them.

The Ray-facing entry points are :func:`train_teacher` and :func:`train_student`; the engine
lives in ``curriculum/``, ``distill/``, ``data/``, ``models/`` and ``loops/`` and never imports
Ray. Importing this package does not import Ray either: the entry points load it on first use.
"""

from __future__ import annotations

from typing import Any

from trainables.config import (
    CheckpointConfig,
    CurriculumConfig,
    DataConfig,
    DistillConfig,
    ModelConfig,
    OptimConfig,
    StudentConfig,
    TaskConfig,
    TeacherConfig,
)

__all__ = [
    "CheckpointConfig",
    "CurriculumConfig",
    "DataConfig",
    "DistillConfig",
    "ModelConfig",
    "OptimConfig",
    "StudentConfig",
    "TaskConfig",
    "TeacherConfig",
    "distributed_student",
    "load_student",
    "student_worker",
    "train_student",
    "train_student_checkpointed",
    "train_teacher",
]


def __getattr__(name: str) -> Any:
    if name in (
        "train_student",
        "train_student_checkpointed",
        "distributed_student",
        "student_worker",
    ):
        import trainables.student

        return getattr(trainables.student, name)
    if name == "load_student":
        from trainables.checkpoint import load_student

        return load_student
    if name == "train_teacher":
        from trainables.teacher import train_teacher

        return train_teacher
    raise AttributeError(f"module 'trainables' has no attribute {name!r}")
