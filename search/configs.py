"""A trial's runnable config from its results: :func:`config_of` (public, ``search.config_of``)
and :func:`rebuild_config`, which ``confirm`` uses too.

A trials row holds every setting of the trial's :class:`~trainables.config.StudentConfig` as a
``config.<dotted.path>`` cell (null where the trial's kind did not use it), so the config is
rebuilt from the row alone and checked cell by cell. A Population Based Training trial changed
its settings as it ran: its config is the schedule it followed (the one ``pbt_schedule.yaml``
exports for the best trial), read from PBT's policy log in the sweep's Tune directory.
"""

from __future__ import annotations

import json
import math
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from analysis.tables import config_column, config_path, config_row, trials_schema
from search.errors import SweepInputError
from trainables.config import StudentConfig, nest, settings

__all__ = ["KEPT", "RebuildError", "checkpoint_of", "config_of", "rebuild_config"]

KEPT = ("seed", "repeats", "arm", "teacher_bank")  # paths confirm sets itself


def _leaf_annotations(model: type[BaseModel], prefix: str = "") -> dict[str, Any]:
    """Each leaf field's annotation by dotted path, walked like the trials columns
    (:func:`analysis.tables.config_fields`)."""
    out: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        annotation, path = info.annotation, f"{prefix}{name}"
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(options) == 1:
            annotation = options[0]
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out.update(_leaf_annotations(annotation, f"{path}."))
        else:
            out[path] = annotation
    return out


def _textual(annotation: Any) -> bool:
    """Whether a field holds text only (so a string cell is its value, never JSON text)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _textual(args[0])
    if origin in (typing.Union, types.UnionType):
        return all(_textual(a) for a in args if a is not type(None))
    if origin is typing.Literal:
        return all(isinstance(a, str) for a in args)
    return annotation is str


_ANNOTATIONS = _leaf_annotations(StudentConfig)
_SCHEMA = trials_schema(StudentConfig)


def _decoded(path: str, value: Any) -> Any:
    """A cell as the value it was written from: a string column of a field that is not text
    only holds non-string values as JSON text (:func:`analysis.tables.config_row`)."""
    if not isinstance(value, str) or _textual(_ANNOTATIONS.get(path, str)):
        return value
    try:
        return json.loads(value)
    except ValueError:  # a string value of a mixed field, e.g. "transition"
        return value


class RebuildError(SweepInputError):
    """A trials row from which the trial's config cannot be rebuilt."""


def rebuild_config(
    row: dict[str, Any], base: dict[str, Any], *, keep: tuple[str, ...] = KEPT
) -> StudentConfig:
    """The student config a trial ran, from its trials row: the row's settings (its
    ``config.*`` cells; null ones are settings the trial did not use) over ``base`` (the sweep's
    student config, ``SweepSpec.student_config(bank).model_dump()``), validated. ``seed``,
    ``repeats``, ``arm`` and ``teacher_bank`` are ``base``'s.

    A null cell may also be a used setting whose value is None (``distill.top_k``: all the bank
    keeps); such settings are set to None. The result is checked: its settings, written as the
    sink writes them, must be the row's cells. :class:`RebuildError` names the trial and the
    setting otherwise. ``keep``: the config paths taken from ``base``, not the row."""
    trial = row.get("trial_id")
    values = {
        path: _decoded(path, row[name])
        for name in _SCHEMA.names
        if (path := config_path(name)) is not None and path not in keep and name in row
    }
    tree = nest({p: v for p, v in values.items() if v is not None}, into=base)
    for _ in range(8):  # each pass may make more settings used; a few always settle it
        try:
            model = StudentConfig.model_validate(tree)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc']) or 'config'}: {error['msg']}"
                for error in exc.errors()
            )
            raise RebuildError(
                f"sweep: trial {trial}'s config cannot be rebuilt from its trials row: {problems}"
            ) from None
        used = settings(model)
        unset = {p: None for p, v in values.items() if v is None and used.get(p) is not None}
        if not unset:
            break
        tree = nest(unset, into=tree)
    written = config_row(settings(model), _SCHEMA)
    for path in values:
        cell = row[config_column(path)]
        if written.get(config_column(path)) != cell:
            raise RebuildError(
                f"sweep: trial {trial}'s config cannot be rebuilt from its trials row: "
                f"{path} is {cell!r} there but {written.get(config_column(path))!r} rebuilt"
            )
    return model


def config_of(
    trial: str | Mapping[str, Any], results: str | os.PathLike | None = None
) -> StudentConfig:
    """The :class:`~trainables.config.StudentConfig` a trial ran: pass it to
    ``trainables.train_student`` (``param_space=config_of(...).model_dump()``) to run the
    trial again; on the CPU it reproduces the trial's metrics (same seed, same settings).

    ``trial``: a trial id (then ``results``, the sweep's directory ``<storage>/<name>`` or a
    confirmation's ``<sweep>/confirm``, is required) or the trial's row of
    ``analysis.load_trials(...)`` (a dict, e.g. from ``.to_pylist()``, or a pandas row).

    A PBT or PB2 trial is different: it changed its settings as it ran and continued from
    other trials' weights, so no config reproduces its metrics. With ``results`` given, its
    config is the schedule it followed (its settings' changes as ``step`` schedules, as
    ``pbt_schedule.yaml`` exports the best trial's), to replay in a plain run; from a row
    alone, its final settings.

    Raises :class:`KeyError` for an unknown trial id and :class:`RebuildError` when the row's
    settings no longer make a valid config (a sweep of another version).
    """
    if isinstance(trial, str):
        if results is None:
            raise ValueError("results: a trial id needs the sweep's directory (results=...)")
        row = _row(Path(results), trial)
    elif isinstance(trial, Mapping) or (hasattr(trial, "to_dict") and hasattr(trial, "name")):
        row = _plain_row(trial.to_dict() if hasattr(trial, "to_dict") else dict(trial))
    else:
        raise TypeError(
            f"trial: pass a trial id or one trials row (a dict or a pandas row), got "
            f"{type(trial).__name__}"
        )
    if "trial_id" not in row:
        raise TypeError("trial: a trials row has a trial_id; this mapping has none")
    own = {path: row.get(config_column(path)) for path in KEPT}
    own["seed"] = row.get("seed") if own["seed"] is None else own["seed"]
    base = nest({p: v for p, v in own.items() if v is not None}, StudentConfig().model_dump())
    cfg = rebuild_config(row, base)
    if results is None or (row.get("config.arm") or "search") != "search":
        return cfg
    return _followed(Path(results), row["trial_id"], cfg)


def _row(results: Path, trial_id: str) -> dict[str, Any]:
    from analysis import load_trials

    table = load_trials(results)
    rows = [r for r in table.to_pylist() if r["trial_id"] == trial_id]
    if not rows:
        raise KeyError(
            f"trial_id: {trial_id!r} is not a trial of {str(results)!r} ({table.num_rows} "
            "trials; analysis.load_trials lists them)"
        )
    return rows[0]


def _plain_row(row: dict[str, Any]) -> dict[str, Any]:
    """A pandas row as the Arrow row it came from: NaN -> None, NumPy values -> Python."""

    def plain(value: Any) -> Any:
        if hasattr(value, "tolist"):  # a NumPy scalar or array
            value = value.tolist()
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return {key: plain(value) for key, value in row.items()}


def _followed(sweep_dir: Path, trial_id: str, cfg: StudentConfig) -> StudentConfig:
    """``cfg`` as the schedule the trial followed when the sweep is population based."""
    from analysis.tables import read_sweep_manifest

    spec = (read_sweep_manifest(sweep_dir) or {}).get("spec") or {}
    if (spec.get("scheduler") or {}).get("kind") not in ("pbt", "pb2"):
        return cfg
    from search.schedulers import pbt_replay

    logs = [
        log for experiment in _experiments(sweep_dir)
        if (log := experiment / f"pbt_policy_{trial_id}.txt").is_file()
    ]  # fmt: skip
    experiment = logs[-1].parent if logs else sweep_dir / "tune" / "students"
    tree = cfg.model_dump()
    replay = pbt_replay(
        experiment, trial_id, tree, steps=cfg.optim.steps, eval_every=cfg.eval_every
    )
    return StudentConfig.model_validate({**tree, **replay})


def checkpoint_of(results: str | os.PathLike, trial_id: str) -> Path:
    """The directory of the latest checkpoint of trial ``trial_id`` of the sweep at
    ``results`` (``<storage>/<name>``, or ``<sweep>/confirm``): by default the student its
    last report saved. Load it with ``trainables.load_student``. :class:`KeyError` for a
    trial the sweep does not have; :class:`FileNotFoundError` naming the trial when it has
    no checkpoint (it failed before its end, or ran with ``student.checkpoint.final:
    false``)."""
    from trainables.checkpoint import latest_checkpoint

    _row(Path(results), trial_id)  # KeyError (one line) for a trial the sweep does not have
    trial_dirs = [
        d for experiment in _experiments(Path(results)) for d in sorted(experiment.iterdir())
        if d.is_dir() and _names_trial(d.name, trial_id)
    ]  # fmt: skip
    for trial_dir in reversed(trial_dirs):  # a resumed sweep's later experiment first
        try:
            return latest_checkpoint(trial_dir)
        except FileNotFoundError:
            continue
    raise FileNotFoundError(
        f"trial_id: trial {trial_id!r} of {str(results)!r} has no student checkpoint (it "
        "failed or stopped before its end, or ran with student.checkpoint.final: false)"
    )


def _experiments(sweep_dir: Path) -> list[Path]:
    """The sweep's Tune experiments of student trials, in the order its runs made them
    (``students``, ``students-1``, ..., or a confirmation's ``confirm-<n>``)."""
    found = [
        d for d in (sweep_dir / "tune").glob("*") if d.is_dir() and d.name != "teacher"
    ]  # fmt: skip

    def run(directory: Path) -> tuple[str, int]:
        stem, _, number = directory.name.rpartition("-")
        return (stem, int(number)) if number.isdigit() else (directory.name, 0)

    return sorted(found, key=run)


def _names_trial(name: str, trial_id: str) -> bool:
    """Whether a trial directory's name is trial ``trial_id``'s (``<id>_<settings>`` as the
    sweep names them, or Tune's ``<trainable>_<id>_<n>_...``)."""
    return name == trial_id or name.startswith(f"{trial_id}_") or f"_{trial_id}_" in name
