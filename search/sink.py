"""Stream Tune results into append-only Parquet tables as trials report.

``<sweep_dir>/curves/``: one row per report; ``<sweep_dir>/trials/``: one row per finished or
failed trial (columns per DESIGN.md); ``<sweep_dir>/stages/``: one row per curriculum stage of
each finished or failed trial. Every file is written under a hidden temporary name and
renamed into place, so readers (pandas, pyarrow.dataset, DuckDB) never see a torn file, and a
crashed sweep keeps every row flushed before the crash (at most ``flush_every_s`` of curve rows
are lost).
"""

from __future__ import annotations

import json
import os
import secrets
import time
import types
import typing
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel
from ray import tune

from analysis._tables import WAL_PREFIX, read_wal, table_files

CURVE_SCHEMA = pa.schema(
    [
        ("sweep", pa.string()),
        ("trial_id", pa.string()),
        ("step", pa.int64()),
        ("samples_seen", pa.int64()),
        ("wall_time_s", pa.float64()),
        ("val_accuracy", pa.float64()),
        ("val_loss", pa.float64()),
        ("train_loss", pa.float64()),
        ("ce_loss", pa.float64()),
        ("kd_loss", pa.float64()),
        ("curriculum_fraction", pa.float64()),
        ("temperature", pa.float64()),
        ("alpha", pa.float64()),
        ("teacher_checkpoint", pa.int64()),
        ("stage", pa.int64()),
        ("easy_accuracy", pa.float64()),
        ("hard_accuracy", pa.float64()),
        ("teacher_agreement", pa.float64()),
    ]
)

# Final and best metrics of a trial; ``steps`` is the last reported ``step``; ``*_seeds``: each
# repeat's final value (the scalar columns are their mean).
TRIAL_METRICS = pa.schema(
    [
        ("val_accuracy", pa.float64()),
        ("best_val_accuracy", pa.float64()),
        ("steps_to_target", pa.int64()),
        ("steps_to_target_capped", pa.int64()),
        ("steps", pa.int64()),
        ("samples_seen", pa.int64()),
        ("wall_time_s", pa.float64()),
        ("test_accuracy", pa.float64()),
        ("repeats", pa.int64()),
        ("val_accuracy_seeds", pa.list_(pa.float64())),
        ("best_val_accuracy_seeds", pa.list_(pa.float64())),
        ("test_accuracy_seeds", pa.list_(pa.float64())),
        ("steps_to_target_capped_seeds", pa.list_(pa.int64())),
        ("node_id", pa.string()),
    ]
)

# One row per teacher evaluation (written by ``search.teacher`` from the bank's history).
TEACHER_SCHEMA = pa.schema(
    [
        ("sweep", pa.string()),
        ("step", pa.int64()),
        ("samples_seen", pa.int64()),
        ("wall_time_s", pa.float64()),
        ("train_loss", pa.float64()),
        ("val_accuracy", pa.float64()),
        ("val_loss", pa.float64()),
        ("is_kept", pa.bool_()),
        ("in_transition", pa.bool_()),
        ("is_transition_checkpoint", pa.bool_()),
    ]
)

# One row per (trial, curriculum stage): where the stage began and ended, and the last
# evaluation in it (for non-staged curricula, one stage: the whole run).
STAGE_SCHEMA = pa.schema(
    [
        ("sweep", pa.string()),
        ("trial_id", pa.string()),
        ("stage", pa.int64()),
        ("first_step", pa.int64()),
        ("last_step", pa.int64()),
        ("val_accuracy", pa.float64()),
        ("easy_accuracy", pa.float64()),
        ("hard_accuracy", pa.float64()),
        ("temperature", pa.float64()),
        ("alpha", pa.float64()),
    ]
)

_TRIAL_HEAD = pa.schema(
    [
        ("sweep", pa.string()),
        ("trial_id", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("seed", pa.int64()),
    ]
)


def flatten_config(config: dict[str, Any], prefix: str = "config.") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"config.a.b": 1}``; lists become JSON strings."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_config(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(list(value))
        else:
            flat[name] = value
    return flat


_SCALARS = {bool: pa.bool_(), int: pa.int64(), float: pa.float64(), str: pa.string()}


def config_fields(model: type[BaseModel], prefix: str = "config.") -> list[pa.Field]:
    """One typed column per leaf of a pydantic config model, named like :func:`flatten_config`.

    ``X | None`` is typed as ``X``; literals as strings; lists and tuples as JSON strings.
    Typing from the model (not from one config's values) keeps every file of the table on
    the same schema whatever values a trial takes.
    """
    fields = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if typing.get_origin(annotation) in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = options[0] if len(options) == 1 else str
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            fields += config_fields(annotation, f"{prefix}{name}.")
        else:
            fields.append(pa.field(f"{prefix}{name}", _SCALARS.get(annotation, pa.string())))
    return fields


def trials_schema(config_model: type[BaseModel]) -> pa.Schema:
    """The trials table's schema: head, one typed column per config leaf, then metrics."""
    return pa.schema(list(_TRIAL_HEAD) + config_fields(config_model) + list(TRIAL_METRICS))


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` so that readers see either nothing or the whole file."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


class ParquetSink(tune.Callback):
    """Tune callback writing ``curves`` and ``trials`` rows for one sweep.

    Args:
        sweep_dir: ``<storage>/<sweep>``; tables go to its ``curves/`` and ``trials/``.
        sweep: the sweep name, written in every row.
        config_model: the trainable's config model (e.g. ``StudentConfig``); fixes the
            ``config.*`` columns and their types, so every file of the table has one schema.
        flush_every_s: curve rows are buffered at most this long (and flushed whenever a trial
            ends and when the experiment ends).
    """

    def __init__(
        self, sweep_dir: str | os.PathLike, sweep: str, config_model: type[BaseModel],
        *, flush_every_s: float = 2.0,
    ) -> None:  # fmt: skip
        self.curves_dir = Path(sweep_dir) / "curves"
        self.trials_dir = Path(sweep_dir) / "trials"
        self.stages_dir = Path(sweep_dir) / "stages"
        self._stages: dict[str, dict[int, dict[str, Any]]] = {}
        self._last_step: dict[str, int] = {}  # per trial: the last step written
        self._written: set[str] = set()  # trials whose row is written
        self.sweep = sweep
        self.trials_schema = trials_schema(config_model)
        self.flush_every_s = flush_every_s
        self._buffer: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()
        self._token = secrets.token_hex(4)  # distinguishes this run's files from others'
        self._parts = 0
        self._wal = None

    def setup(self, **info: Any) -> None:
        for directory in (self.curves_dir, self.trials_dir, self.stages_dir):
            directory.mkdir(parents=True, exist_ok=True)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        step, last = result.get("step"), self._last_step.get(trial.trial_id)
        if step is not None and last is not None and step <= last:
            # A retried trial replaying steps it already reported (restarted from scratch or
            # from an older checkpoint; the same seed reproduces them): one row per step.
            return
        if step is not None:
            self._last_step[trial.trial_id] = step
        row = {"sweep": self.sweep, "trial_id": trial.trial_id}
        row.update({name: result.get(name) for name in CURVE_SCHEMA.names[2:]})
        self._buffer.append(row)
        self._log(row)
        if row["stage"] is not None:
            stages = self._stages.setdefault(trial.trial_id, {})
            stage = stages.setdefault(row["stage"], {"first_step": row["step"]})
            stage.update({k: row[k] for k in STAGE_SCHEMA.names[5:]}, last_step=row["step"])
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._write_trial(trial, status="TERMINATED", error=None)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._write_trial(trial, status="ERROR", error=_error_message(trial))

    def on_experiment_end(self, trials, **info) -> None:
        # Trials the experiment stopped before they ended (time budget, Ctrl-C): Tune calls
        # no trial hook for them. Recorded as STOPPED; `run` again runs them once more.
        for trial in trials:
            if trial.trial_id not in self._written and trial.last_result:
                self._write_trial(trial, status="STOPPED", error=None)
        self.flush()
        if self._wal is not None:
            self._wal.close()
            Path(self._wal.name).unlink(missing_ok=True)
            self._wal = None
        for directory in (self.curves_dir, self.trials_dir, self.stages_dir):
            compact(directory, self._token)

    def _log(self, row: dict[str, Any]) -> None:
        """Append the row to this run's write-ahead log before it is buffered: a killed driver
        loses no reported row (see :func:`recover_curves`)."""
        if self._wal is None:
            self._wal = open(self.curves_dir / f"{WAL_PREFIX}{self._token}.jsonl", "a")  # noqa: SIM115
        self._wal.write(json.dumps(row) + "\n")
        self._wal.flush()  # into the OS: survives SIGKILL of this process

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._buffer:
            return
        table = pa.Table.from_pylist(self._buffer, schema=CURVE_SCHEMA)
        write_parquet_atomic(
            table, self.curves_dir / f"part-{self._token}-{self._parts:06d}.parquet"
        )
        self._parts += 1
        self._buffer = []
        if self._wal is not None:  # its rows are in Parquet now
            self._wal.truncate(0)
            self._wal.seek(0)

    def _write_trial(self, trial, *, status: str, error: str | None) -> None:
        self.flush()
        self._written.add(trial.trial_id)
        last = trial.last_result or {}
        row = {"sweep": self.sweep, "trial_id": trial.trial_id, "status": status, "error": error}
        row["seed"] = trial.config.get("seed")
        for name, value in flatten_config(trial.config).items():
            if name in self.trials_schema.names:
                is_text = self.trials_schema.field(name).type == pa.string()
                row[name] = (
                    json.dumps(value)
                    if is_text and not isinstance(value, (str, type(None)))
                    else value
                )
        row.update({name: last.get(name) for name in TRIAL_METRICS.names})
        row["steps"] = last.get("step")
        table = pa.Table.from_pylist([row], schema=self.trials_schema)
        write_parquet_atomic(
            table, self.trials_dir / f"trial-{self._token}-{trial.trial_id}.parquet"
        )
        stages = self._stages.pop(trial.trial_id, {})
        if stages:
            rows = [
                {"sweep": self.sweep, "trial_id": trial.trial_id, "stage": stage, **values}
                for stage, values in sorted(stages.items())
            ]
            table = pa.Table.from_pylist(rows, schema=STAGE_SCHEMA)
            write_parquet_atomic(
                table, self.stages_dir / f"stage-{self._token}-{trial.trial_id}.parquet"
            )


def compact(directory: Path, token: str) -> None:
    """Merge one run's files in ``directory`` (``<kind>-<token>-*.parquet``) into
    ``compact-<token>.parquet``, then delete them: readers of a finished sweep open a few
    files, not one per trial. Readers skip a run's files once its compact file exists
    (``analysis._tables``), so no row is seen twice or missed while the files are deleted."""
    files = sorted(directory.glob(f"*-{token}-*.parquet"))
    if len(files) < 2:
        return
    table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
    write_parquet_atomic(table, directory / f"compact-{token}.parquet")
    for f in files:
        f.unlink()


def recover_curves(sweep_dir: Path) -> int:
    """Move the rows of dead runs' write-ahead logs into a Parquet part (skipping rows a part
    already holds); return how many were recovered. Call only when no run of the sweep is
    alive (the sweep does, before resuming)."""
    curves_dir = Path(sweep_dir) / "curves"
    logs = sorted(curves_dir.glob(f"{WAL_PREFIX}*.jsonl"))
    rows = read_wal(curves_dir)
    if rows:
        seen = set()
        for part in table_files(sweep_dir, "curves"):
            done = pq.read_table(part, columns=["trial_id", "step"]).to_pylist()
            seen |= {(r["trial_id"], r["step"]) for r in done}
        rows = [r for r in rows if (r["trial_id"], r["step"]) not in seen]
        if rows:
            table = pa.Table.from_pylist(rows, schema=CURVE_SCHEMA)
            write_parquet_atomic(
                table, curves_dir / f"part-recovered-{secrets.token_hex(4)}.parquet"
            )
    for path in logs:
        path.unlink()
    return len(rows)


def _error_message(trial) -> str:
    """The last line of the trial's exception (e.g. ``ValueError: ...``), not the traceback."""
    text = ""
    try:
        exc = trial.get_pickled_error()
        if exc is not None:
            text = str(exc)
    except Exception:  # noqa: BLE001 - a missing or unreadable error file must not kill the sink
        pass
    if not text and trial.error_file and Path(trial.error_file).is_file():
        text = Path(trial.error_file).read_text()
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"
