"""Run one configuration with several seeds in lockstep and report their mean."""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from typing import Any

from trainables.config import StudentConfig
from trainables.loops._student import student_loop

# Integer fields that are the same for every seed (or where the mean is not meaningful).
_FIRST = ("step", "samples_seen", "teacher_checkpoint", "stage")
# Per-seed final metrics listed in the last record as ``<name>_seeds``.
SEED_METRICS = ("val_accuracy", "best_val_accuracy", "test_accuracy", "steps_to_target_capped")


def repeated_loop(
    cfg: StudentConfig,
    *,
    resume_from: list[dict[str, Any]] | None = None,
    states: list | None = None,
    **worker: Any,
) -> Iterator[dict[str, Any]]:
    """:func:`student_loop` for seeds ``cfg.seed .. cfg.seed + cfg.repeats - 1``, advanced
    together: each record is the mean over seeds (``steps_to_target`` only once every seed has
    reached the target). A seed that stops early (``stop_at_target``) holds its last record
    until all have stopped. Every record adds ``repeats`` and ``<metric>_seeds``, each seed's
    value (:data:`SEED_METRICS`; ``test_accuracy_seeds`` in the last record), so a trial
    stopped early by a scheduler still has them. ``worker`` is passed on (``rank``,
    ``world_size``, ``wrap_model``). ``states`` / ``resume_from``: as :func:`student_loop`'s,
    a list with one state per seed."""
    seeds = [[] for _ in range(cfg.repeats)]
    loops = [
        student_loop(
            cfg.model_copy(update={"seed": cfg.seed + i}), states=seeds[i],
            resume_from=resume_from[i] if resume_from else None, **worker,
        )
        for i in range(cfg.repeats)
    ]  # fmt: skip
    latest = [next(loop) for loop in loops]
    while not all(_done(r) for r in latest):
        _keep(states, seeds)
        yield mean_record(latest)
        latest = [r if _done(r) else next(loop) for r, loop in zip(latest, loops, strict=True)]
    _keep(states, seeds)
    yield mean_record(latest)


def _keep(states: list | None, seeds: list[list]) -> None:
    if states is not None:
        states[:] = [[s[0] for s in seeds]]


def _done(record: dict[str, Any]) -> bool:
    return "test_accuracy" in record  # only a run's last record has it


def mean_record(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over seeds of each metric (first seed's value for :data:`_FIRST` fields)."""
    out: dict[str, Any] = {}
    for key, value in records[0].items():
        values = [r.get(key) for r in records]
        if key in _FIRST:
            out[key] = value
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
