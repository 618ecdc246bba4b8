"""Ray Tune entry point for the student (single worker, runs inline in the Tune trial)."""

from __future__ import annotations

from typing import Any

from ray import tune

from trainables.config import StudentConfig
from trainables.loops import student_loop


def train_student(config: dict[str, Any]) -> None:
    """Tune function trainable: distil a stored teacher into a student under a schedule.

    ``config`` is a :class:`~trainables.config.StudentConfig` as a nested dict (unknown keys
    are rejected). Use it in your own Ray job::

        from ray import tune
        from trainables import StudentConfig, train_student

        base = StudentConfig(teacher_outputs="/path/to/teacher_outputs").model_dump()
        tune.Tuner(train_student, param_space=base).fit()

    Reports, every ``eval_every`` steps, the metrics listed in
    :func:`trainables.loops.student_loop`.
    """
    cfg = StudentConfig.model_validate(config)
    for record in student_loop(cfg):
        tune.report(record)
