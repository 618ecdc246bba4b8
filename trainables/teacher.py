"""Ray Tune entry point for the teacher (single worker, runs inline in the Tune trial)."""

from __future__ import annotations

from typing import Any

from ray import tune

from trainables.config import TeacherConfig
from trainables.loops import teacher_loop
from trainables.student import require_tune


def train_teacher(config: dict[str, Any]) -> None:
    """Tune function trainable: train a teacher and write its run.

    ``config`` is a :class:`~trainables.config.TeacherConfig` as a dict. Reports ``step``,
    ``samples_seen``, ``wall_time_s``, ``train_loss``, ``val_accuracy``, ``val_loss`` every
    ``eval_every`` steps; writes the run (weights at every kept checkpoint, history, scores)
    to ``output_dir`` at the end, from which :func:`trainables.bank.build_bank` builds the
    bank (or, with ``fold`` set, a cross-fitting run's scores of its held-out fold).
    Runs only as a Tune trial: elsewhere it raises :class:`RuntimeError` at once (to train a
    teacher in this process use :func:`trainables.bank.teacher_bank`).
    """
    require_tune("train_teacher", elsewhere="trainables.bank.teacher_bank trains one here")
    cfg = TeacherConfig.model_validate(config)
    for record in teacher_loop(cfg):
        tune.report(record)
