"""Run one configuration with several seeds in lockstep and report their mean."""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from typing import Any

from trainables.config import StudentConfig
from trainables.loops._build import StudentRun
from trainables.loops._student import student_loop

# Integer fields that are the same for every seed (or where the mean is not meaningful).
_FIRST = ("step", "samples_seen", "teacher_checkpoint", "stage")
# Per-seed final metrics listed in the last record as ``<name>_seeds``.
SEED_METRICS = (
    "val_accuracy", "best_val_accuracy", "test_accuracy", "steps_to_target_capped",
    "val_perplexity", "test_perplexity",  # the language-model tasks only
)  # fmt: skip


def repeated_loop(
    cfg: StudentConfig,
    *,
    resume_from: list[dict[str, Any]] | None = None,
    **worker: Any,
) -> Iterator[tuple[dict[str, Any], list[StudentRun]]]:
    """:func:`student_loop` for seeds ``cfg.seed .. cfg.seed + cfg.repeats - 1``, advanced
    together, yielding ``(record, runs)``: the mean record over seeds (``steps_to_target`` only
    once every seed has reached the target) and one :class:`StudentRun` per seed. A seed that
    stops early (``stop_at_target``) holds its last record and state until all have stopped.
    Every record adds ``repeats`` and ``<metric>_seeds``, each seed's value
    (:data:`SEED_METRICS`; ``test_accuracy_seeds`` in the last record), so a trial stopped
    early by a scheduler still has them. ``worker`` is passed on (``rank``, ``world_size``,
    ``wrap_model``). ``resume_from``: one ``run.state_dict()`` per seed, as
    ``[run.state_dict() for run in runs]``."""
    loops = [
        student_loop(
            cfg.model_copy(update={"seed": cfg.seed + i}),
            resume_from=resume_from[i] if resume_from else None, **worker,
        )
        for i in range(cfg.repeats)
    ]  # fmt: skip
    latest = [next(loop) for loop in loops]
    while not all(is_last(record) for record, _ in latest):
        yield mean_record([record for record, _ in latest]), [run for _, run in latest]
        latest = [
            (record, run) if is_last(record) else next(loop)
            for (record, run), loop in zip(latest, loops, strict=True)
        ]
    yield mean_record([record for record, _ in latest]), [run for _, run in latest]


def is_last(record: dict[str, Any]) -> bool:
    """Whether ``record`` is a run's last (only it has ``test_accuracy``)."""
    return "test_accuracy" in record


def mean_record(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over seeds of each metric (first seed's value for :data:`_FIRST` fields)."""
    out: dict[str, Any] = {}
    for key, value in records[0].items():
        values = [r.get(key) for r in records]
        if key in _FIRST or key == "arm_names":
            out[key] = value
        elif key == "arm_probs":  # per arm, the mean over seeds (the same arms in every seed)
            arms = zip(*values, strict=True) if None not in values else None
            out[key] = None if arms is None else [statistics.fmean(p) for p in arms]
        elif key == "steps_to_target":
            out[key] = None if None in values else round(statistics.fmean(values))
        elif key == "steps_to_target_capped":
            out[key] = round(statistics.fmean(values))
        elif None not in values:  # test_accuracy: only once every seed has it
            out[key] = statistics.fmean(values)
    out["step"] = max(r["step"] for r in records)
    for key in SEED_METRICS:
        if all(key in r for r in records):
            out[f"{key}_seeds"] = [r[key] for r in records]
    out["repeats"] = len(records)
    return out
