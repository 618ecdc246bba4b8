"""Stream Tune results into append-only Parquet tables as trials report.

``<sweep_dir>/curves/``: one row per report; ``<sweep_dir>/trials/``: one row per finished or
failed trial (columns per DESIGN.md). Every file is written under a hidden temporary name and
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
        self.sweep = sweep
        self.trials_schema = trials_schema(config_model)
        self.flush_every_s = flush_every_s
        self._buffer: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()
        self._token = secrets.token_hex(4)  # distinguishes this run's files from others'
        self._parts = 0

    def setup(self, **info: Any) -> None:
        self.curves_dir.mkdir(parents=True, exist_ok=True)
        self.trials_dir.mkdir(parents=True, exist_ok=True)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        row = {"sweep": self.sweep, "trial_id": trial.trial_id}
        row.update({name: result.get(name) for name in CURVE_SCHEMA.names[2:]})
        self._buffer.append(row)
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._write_trial(trial, status="TERMINATED", error=None)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._write_trial(trial, status="ERROR", error=_error_message(trial))

    def on_experiment_end(self, trials, **info) -> None:
        self.flush()

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

    def _write_trial(self, trial, *, status: str, error: str | None) -> None:
        self.flush()
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
        write_parquet_atomic(table, self.trials_dir / f"{trial.trial_id}.parquet")


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
