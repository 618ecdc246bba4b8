"""Teacher and student trainables for Ray Tune, and the plain-PyTorch engine beneath them.

The Ray-facing entry points are :func:`train_teacher` and :func:`train_student`; the engine
lives in ``curriculum/``, ``distill/``, ``data/``, ``models/`` and ``loops/`` and never imports
Ray. Importing this package does not import Ray either: the entry points load it on first use.
"""

from __future__ import annotations

from typing import Any

from trainables.config import (
    CurriculumConfig,
    DataConfig,
    DistillConfig,
    ModelConfig,
    OptimConfig,
    StudentConfig,
    TeacherConfig,
)

__all__ = [
    "CurriculumConfig",
    "DataConfig",
    "DistillConfig",
    "ModelConfig",
    "OptimConfig",
    "StudentConfig",
    "TeacherConfig",
    "distributed_student",
    "train_student",
    "train_student_checkpointed",
    "train_teacher",
]


def __getattr__(name: str) -> Any:
    if name in ("train_student", "train_student_checkpointed", "distributed_student"):
        import trainables.student

        return getattr(trainables.student, name)
    if name == "train_teacher":
        from trainables.teacher import train_teacher

        return train_teacher
    raise AttributeError(f"module 'trainables' has no attribute {name!r}")
