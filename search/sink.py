"""Stream Tune results into the sweep's Parquet tables as trials report.

The tables, their columns, file names and write-ahead log are the results contract of
:mod:`analysis.tables` (read its docstring); this module is its writer. A user streaming their
own Tune run into the tables adds ``ParquetSink(sweep_dir, name, MyConfigModel)`` to the run's
callbacks. The schemas are re-exported here for code written against earlier versions.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ValidationError
from ray import tune

from analysis.tables import (
    CURVE_REPORTED,
    CURVE_SCHEMA,
    CURVES,
    STAGE_SCHEMA,
    STAGE_VALUES,
    STAGES,
    TEACHER_SCHEMA,
    TRIAL_HEAD,
    TRIAL_METRICS,
    TRIALS,
    WAL_PREFIX,
    ResultsError,
    WriteAheadLog,
    config_column,
    config_fields,
    config_row,
    coverage,
    is_compact,
    merged_file,
    new_token,
    part_file,
    read_table_file,
    read_wal,
    segment_token,
    stage_file,
    table_files,
    trial_file,
    trials_schema,
    write_parquet_atomic,
)
from search.errors import SweepStorageError, storage_problem
from trainables.config import StrictModel, flatten, settings

__all__ = [
    "CURVE_SCHEMA",
    "STAGE_SCHEMA",
    "TEACHER_SCHEMA",
    "TRIAL_HEAD",
    "TRIAL_METRICS",
    "ParquetSink",
    "merge_run",
    "merge_segment",
    "config_fields",
    "flatten_config",
    "recover_curves",
    "trial_settings",
    "trials_schema",
    "write_parquet_atomic",
]

log = logging.getLogger(__name__)


def trial_settings(config: dict[str, Any], config_model: type[BaseModel]) -> dict[str, Any]:
    """What a trial's config used, as ``{dotted.path: value}``: the config validated with
    ``config_model`` and read through :func:`trainables.config.settings` (null where the
    config's own values make a setting irrelevant). A config that does not validate, or a
    model that is not one of ours (a user's own Tune run), is flattened as it is."""
    try:
        model = config_model.model_validate(config)
    except (ValidationError, TypeError, ValueError):  # the sink must not fail a sweep
        return flatten(config)
    return settings(model) if isinstance(model, StrictModel) else flatten(config)


def flatten_config(config: dict[str, Any]) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"config.a.b": 1}``: a config dict by column (lists stay lists;
    kept for earlier callers, see :func:`analysis.tables.config_row`)."""
    return {config_column(path): value for path, value in flatten(config).items()}


class ParquetSink(tune.Callback):
    """Tune callback writing ``curves``, ``trials`` and ``stages`` rows for one sweep
    (:mod:`analysis.tables`).

    Args:
        sweep_dir: ``<storage>/<sweep>``; tables go to its ``curves/``, ``trials/`` and
            ``stages/``.
        sweep: the sweep name, written in every row.
        config_model: the trainable's config model (e.g. ``StudentConfig``); fixes the
            ``config.*`` columns and their types, so every file of the table has one schema,
            and says which settings a trial used (:func:`trial_settings`).
        flush_every_s: curve rows are buffered at most this long (and flushed whenever a trial
            ends and when the experiment ends).
        compact_every: while the sweep runs, every this many files of a table are merged into
            one, and every 8 merged files of one size into one (:func:`merge_segment`), so a
            running sweep reads as fast as a finished one; when the experiment ends, all of
            the run's files of a table are merged into one (:func:`merge_run`). A merge
            that fails (a full disk, a damaged file) leaves its files as they are, read as
            they are: it is tried again at the next merge and at the end, where a failure
            is logged, not raised.
        on_written: called with a trial's id once its ``trials`` row is on disk (the sweep
            tells its study the trial's result only then: see ``WithBaselines.tell``).
    """

    def __init__(
        self, sweep_dir: str | os.PathLike, sweep: str, config_model: type[BaseModel],
        *, flush_every_s: float = 2.0, on_written: Callable[[str], None] | None = None,
        compact_every: int = 64,
    ) -> None:  # fmt: skip
        if compact_every < 2:
            raise ValueError(f"compact_every must be >= 2, got {compact_every}")
        self.compact_every = compact_every
        self.on_written = on_written
        self.storage_error: SweepStorageError | None = None  # a trial failed on the disk
        self.curves_dir = Path(sweep_dir) / CURVES
        self.trials_dir = Path(sweep_dir) / TRIALS
        self.stages_dir = Path(sweep_dir) / STAGES
        self._stages: dict[str, dict[int, dict[str, Any]]] = {}
        self._last_step: dict[str, int] = {}  # per trial: the last step written
        self._written: set[str] = set()  # trials whose row is written
        self.sweep = sweep
        self.config_model = config_model
        self.trials_schema = trials_schema(config_model)
        self.flush_every_s = flush_every_s
        self._buffer: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()
        self._parts = 0
        self._run = new_token()  # distinguishes this run's files from others'
        self._wal = WriteAheadLog(self.curves_dir, self._run)
        # Per table directory: the segment being written, and how many files it holds.
        self._segments: dict[Path, tuple[int, int]] = {}

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
        row.update({name: result.get(name) for name in CURVE_REPORTED})
        # Into the write-ahead log before the buffer: a killed driver loses no reported row.
        self._wal.append(row)
        self._buffer.append(row)
        if row["stage"] is not None:
            stages = self._stages.setdefault(trial.trial_id, {})
            stage = stages.setdefault(row["stage"], {"first_step": row["step"]})
            stage.update({k: row[k] for k in STAGE_VALUES}, last_step=row["step"])
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._write_trial(trial, status="TERMINATED", error=None)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        error = _error_message(trial)
        problem = storage_problem(RuntimeError(error), self.trials_dir.parent)
        if problem is not None:  # the disk failed, not the trial: it runs again on resume
            self.storage_error = problem
            self._write_trial(trial, status="STOPPED", error=error)
        else:
            self._write_trial(trial, status="ERROR", error=error)

    def on_experiment_end(self, trials, **info) -> None:
        # Trials the experiment stopped before they ended (time budget, Ctrl-C): Tune calls
        # no trial hook for them. Recorded as STOPPED; `run` again runs them once more.
        for trial in trials:
            if trial.trial_id not in self._written and trial.last_result:
                self._write_trial(trial, status="STOPPED", error=None)
        self.flush()
        self._wal.remove()
        unmerged = []
        for directory, (segment, _) in self._segments.items():
            try:
                merge_run(directory, self._run, segment)
            except (OSError, ResultsError) as exc:  # the files stay readable as they are
                unmerged.append(f"{directory.name} ({_first_line(exc)})")
        self._segments.clear()
        if unmerged:
            log.warning(
                "results: the sweep's files of %s were not merged; each is read as it is",
                ", ".join(unmerged),
            )

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._buffer:
            return
        table = pa.Table.from_pylist(self._buffer, schema=CURVE_SCHEMA)
        token = self._token(self.curves_dir)
        write_parquet_atomic(table, self.curves_dir / part_file(token, self._parts))
        self._parts += 1
        self._buffer = []
        self._wal.clear()  # its rows are in Parquet now
        self._wrote(self.curves_dir)

    def _token(self, directory: Path) -> str:
        """The token of the next file written in ``directory``."""
        return segment_token(self._run, self._segments.setdefault(directory, (0, 0))[0])

    def _wrote(self, directory: Path) -> None:
        """One more file in ``directory``'s segment: once it holds ``compact_every`` files,
        it is merged, and the next file starts the next segment."""
        segment, count = self._segments[directory]
        if count + 1 < self.compact_every:
            self._segments[directory] = (segment, count + 1)
            return
        self._segments[directory] = (segment + 1, 0)
        # a merge that fails (a full disk) leaves the files readable as they are; the next
        # merge tries them again
        with contextlib.suppress(OSError, ResultsError):
            merge_segment(directory, self._run, segment)

    def _write_trial(self, trial, *, status: str, error: str | None) -> None:
        self.flush()
        self._written.add(trial.trial_id)
        last = trial.last_result or {}
        row = {"sweep": self.sweep, "trial_id": trial.trial_id, "status": status, "error": error}
        row["seed"] = trial.config.get("seed")
        used = trial_settings(trial.config, self.config_model)
        row.update(config_row(used, self.trials_schema))
        row.update({name: last.get(name) for name in TRIAL_METRICS.names})
        row["steps"] = last.get("step")
        table = pa.Table.from_pylist([row], schema=self.trials_schema)
        token = self._token(self.trials_dir)
        write_parquet_atomic(table, self.trials_dir / trial_file(token, trial.trial_id))
        stages = self._stages.pop(trial.trial_id, {})
        if stages:
            rows = [
                {"sweep": self.sweep, "trial_id": trial.trial_id, "stage": stage, **values}
                for stage, values in sorted(stages.items())
            ]
            table = pa.Table.from_pylist(rows, schema=STAGE_SCHEMA)
            token = self._token(self.stages_dir)
            write_parquet_atomic(table, self.stages_dir / stage_file(token, trial.trial_id))
        if self.on_written is not None:
            self.on_written(trial.trial_id)
        self._wrote(self.trials_dir)
        if stages:
            self._wrote(self.stages_dir)


MERGE_FANOUT = 8  # merged files of one size that are merged into one


def merge_segment(directory: Path, run: str, segment: int) -> None:
    """Merge run ``run``'s files of ``segment`` in a table directory into one
    (:func:`analysis.tables.merged_file`), and likewise the files of each earlier segment
    whose merge failed (a full disk, a file unreadable for a while); then, while the
    last :data:`MERGE_FANOUT` merged files of the run hold equally many segments, one after
    the other, those into one: a running sweep holds about ``MERGE_FANOUT - 1`` files per
    size (each size 8 times the one before), and each row is rewritten a few times (log 8 of
    the segments) in all.

    A merged file's name spans exactly the segments merged into it, never one left loose:
    readers skip a loose file only once a merged file holds its rows
    (:func:`analysis.tables.coverage`). The first merge that fails is raised once the others
    ran; its segment's files stay as they are, read as they are."""
    _, loose, _ = _run_files(directory, run)
    by_segment: dict[int, list[Path]] = {}
    for number, path in loose:
        if number <= segment:
            by_segment.setdefault(number, []).append(path)
    failure: OSError | ResultsError | None = None
    for number, files in sorted(by_segment.items()):
        try:
            _merge(directory, files, (run, number, number))
        except (OSError, ResultsError) as exc:
            failure = failure or exc
    while True:
        merged = _run_files(directory, run)[0][-MERGE_FANOUT:]
        sizes = {last - first for first, last, _ in merged}
        gaps = [a for (_, a, _), (b, _, _) in itertools.pairwise(merged) if a + 1 != b]
        if len(merged) < MERGE_FANOUT or len(sizes) > 1 or gaps:
            break
        _merge(directory, [f for *_, f in merged], (run, merged[0][0], merged[-1][1]))
    if failure is not None:
        raise failure


def merge_run(directory: Path, run: str, last_segment: int) -> None:
    """Merge all of run ``run``'s files in a table directory (its merged files and every
    loose file of its segments, up to ``last_segment``, whichever merged earlier or not) into
    one: a finished sweep's table is a file per run. Files a merged file already holds (a
    merge whose deletions failed) are deleted."""
    merged, loose, held = _run_files(directory, run)
    files = [f for *_, f in merged] + [f for _, f in loose]
    if len(files) > 1:
        last = max([last_segment, *(b for _, b, _ in merged), *(n for n, _ in loose)])
        _merge(directory, files, (run, 0, last))
    for path in held:
        path.unlink(missing_ok=True)


def _run_files(
    directory: Path, run: str
) -> tuple[list[tuple[int, int, Path]], list[tuple[int, Path]], list[Path]]:
    """Run ``run``'s files in ``directory``: its merged files no other merged file holds, as
    ``(first, last, path)``; its loose files no merged file holds, as ``(segment, path)``
    (both in order); and the files a merged file holds (left by a merge whose deletions
    failed)."""
    spans, singles = [], []
    for path in Path(directory).glob(f"*-{run}.*.parquet"):
        span = coverage(path)
        if span is None or span[0] != run:
            continue
        if is_compact(path):
            spans.append((int(span[1]), int(span[2]), path))
        else:
            singles.append((int(span[1]), path))
    spans.sort()
    merged = [s for s in spans if not any(_holds(o, s[:2]) for o in spans if o is not s)]
    loose = sorted(s for s in singles if not any(_holds(o, (s[0], s[0])) for o in merged))
    held = [s[2] for s in spans if s not in merged]
    kept = {path for _, path in loose}
    held += [path for _, path in singles if path not in kept]
    return merged, loose, held


def _holds(merged: tuple[int, int, Path], span: tuple[int, int]) -> bool:
    """Whether a merged file holds the segments of ``span``."""
    return merged[0] <= span[0] and span[1] <= merged[1]


def _merge(directory: Path, files: list[Path], span: tuple[str, int, int]) -> None:
    """``files`` into the merged file of ``span`` (written whole under a temporary name,
    then renamed), then deleted: readers skip them once it exists."""
    if not files:
        return
    table = pa.concat_tables([read_table_file(f) for f in files], promote_options="default")
    write_parquet_atomic(table, Path(directory) / merged_file(*span))
    for f in files:
        f.unlink()


def recover_curves(sweep_dir: Path) -> int:
    """Move the rows of dead runs' write-ahead logs into a Parquet part (skipping rows a part
    already holds); return how many were recovered. Call only when no run of the sweep is
    alive (the sweep does, before resuming). A damaged part raises
    :class:`analysis.tables.CorruptResultsError` naming it, before anything is changed."""
    curves_dir = Path(sweep_dir) / CURVES
    logs = sorted(curves_dir.glob(f"{WAL_PREFIX}*.jsonl"))
    rows = read_wal(curves_dir)
    if rows:
        seen = set()
        for part in table_files(sweep_dir, CURVES):
            done = read_table_file(part, columns=["trial_id", "step"]).to_pylist()
            seen |= {(r["trial_id"], r["step"]) for r in done}
        rows = [r for r in rows if (r.get("trial_id"), r.get("step")) not in seen]
        if rows:
            table = pa.Table.from_pylist(rows, schema=CURVE_SCHEMA)
            write_parquet_atomic(table, curves_dir / part_file(new_token(), 0))
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


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
