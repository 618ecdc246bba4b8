"""The results contract: what a sweep writes, where, and how to read it back.

The writer (:class:`search.sink.ParquetSink`, ``search.teacher``) and every reader
(``analysis``, a user's notebook or DuckDB query) go through this module; nothing else names
a column, a directory or a file pattern.

Layout of one sweep, ``<storage>/<sweep>/``::

    trials/   one row per finished, failed or stopped trial    trial-<run>-<trial_id>.parquet
    curves/   one row per report of every trial                part-<run>-<000000>.parquet
    stages/   one row per curriculum stage of every trial      stage-<run>-<trial_id>.parquet
    teacher/  one row per teacher evaluation                   teacher.parquet
    optuna.journal                                             the Optuna study (STUDY_NAME)
    manifest.json                                              the spec (SWEEP_MANIFEST)
    confirm/  the confirmation runs (``python -m search confirm``): a sweep directory of its
              own (trials/, curves/, stages/, with CONFIRM_RECORD), one trials row per
              (configuration, fresh seed)

``<run>`` is a random token per driver run (:func:`new_token`), followed by ``.<segment>`` (a
count) in files written in segments (see Compaction), so two runs of a sweep (a resume) never
write the same file. A storage root holding several sweeps is read as one table per kind
(:func:`load_trials` and friends accept either).

Columns (types in :data:`CURVE_SCHEMA`, :data:`STAGE_SCHEMA`, :data:`TEACHER_SCHEMA` and
:func:`trials_schema`):

- ``trials``: :data:`TRIAL_HEAD` (``sweep``, ``trial_id``, ``status``, ``error``, ``seed``),
  one ``config.<dotted.path>`` column per leaf of the trainable's config model
  (:func:`config_column`; typed from the model by :func:`config_fields`, so every file of the
  table has one schema: lists are Arrow lists, lists of models lists of structs; a setting
  that the trial's own values make irrelevant is null), then :data:`TRIAL_METRICS`.
- ``curves``: ``sweep``, ``trial_id`` and :data:`CURVE_REPORTED`, the names taken from each
  report. For the language-model tasks ``*_accuracy`` are token accuracies and ``*_loss``
  mean token cross-entropies over the counted positions, and ``val_perplexity`` (curves and
  trials) and ``test_perplexity`` (trials) are set; they are null for ``classify``.
- ``stages``: ``sweep``, ``trial_id``, ``stage``, ``first_step``, ``last_step`` and
  :data:`STAGE_VALUES` (the last evaluation in the stage).
- ``teacher``: ``sweep``, :data:`TEACHER_RECORD` (from the bank's history) and
  :data:`TEACHER_MARKS`.

Atomic writes: every file is written under a hidden temporary name (``.<name>.<hex>.tmp``)
and renamed into place (:func:`write_parquet_atomic`), so a reader sees a whole file or
none. Names starting with ``.`` or ``_`` are never part of a table (:func:`is_hidden`):
pyarrow.dataset and pandas skip them, and as a temporary does not end in ``.parquet``, a
``*.parquet`` glob (DuckDB, polars) skips it too.

Compaction: a run writes each table's files in segments of ``compact_every`` files (64 by
default; token ``<run>.<segment>``). While the sweep runs, each full segment is merged into
``compact-<run>.<first>.<last>.parquet`` (:func:`merged_file`: the segments it holds), and
every 8 merged files of one size that follow one another into one 8 times larger, the files
merged deleted afterwards; when the run ends, all its files of a table are merged into one.
A merged file's span names exactly the segments whose files it holds: a segment whose merge
failed (a full disk, a damaged file) keeps its files, is merged on its own by a later merge,
and no merged file spans it meanwhile. So a running sweep of 10,000 trials holds about 15
files per table, not 10,000, and a finished one a file per table and run. A file is skipped
once a merged file of its run holds its segments (:func:`coverage`; a run of an earlier
version wrote ``compact-<run>.parquet``, holding all its files), so no row is read twice or
missed while merged files are deleted: :func:`table_files` lists again when a merge ran
while it listed, and :func:`load_trials` and friends read again when a listed file was
merged away meanwhile.

Your own queries (DuckDB, polars, pandas): the files of a table are
``<sweep>/<table>/*.parquet`` (``<storage>/*/<table>/*.parquet`` for every sweep under a
storage root; no hive partitioning: pass ``hive_partitioning=false`` to DuckDB's
``read_parquet`` and polars' ``scan_parquet``, ``union_by_name=true`` / ``how=
"diagonal_relaxed"`` when sweeps of different versions are mixed). A finished sweep's glob
is exact (unless its driver was killed in the middle of a merge). On a running sweep a glob
can count rows twice in the instant between a merged file's rename and the deletion of the
files it holds: give the reader the list :func:`table_files` returns instead
(``duckdb.read_parquet([str(f) for f in files])``, ``polars.scan_parquet(files)``); curve
rows still only in the write-ahead log are in :func:`load_curves` alone.

Write-ahead log: before a curve row is buffered, the writer appends it as one JSON object per
line to ``curves/_wal-<run>.jsonl`` (:class:`WriteAheadLog`), and empties the log once the
rows are in Parquet. A killed driver's rows survive there: :func:`load_curves` includes them
(:func:`read_wal`), and the next run of the sweep moves them into a Parquet part.

Growth: a table whose files lack some columns (written by an older version) reads them as
nulls; a column that an older version wrote as JSON text and a newer one as an Arrow list is
read as the list.

Damaged files: a file that is not readable Parquet (truncated by a full disk or an
interrupted copy, overwritten) makes the loaders raise :class:`CorruptResultsError`, naming
the file and what moving it out of its directory costs (:func:`read_table_file`). Nothing is
skipped silently: the table's other files, the other tables and the write-ahead logs stay
readable once it is moved.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

# --- directories and files ------------------------------------------------------------------

TRIALS, CURVES, STAGES, TEACHER = "trials", "curves", "stages", "teacher"
TABLES = (TRIALS, CURVES, STAGES, TEACHER)
TEACHER_FILE = "teacher.parquet"  # the teacher table's one file
STUDY_NAME = "students"  # the sweep's Optuna study (search writes it, analysis reads it)
STUDY_JOURNAL = "optuna.journal"  # its default storage, in the sweep directory
SWEEP_MANIFEST = "manifest.json"  # the sweep's spec (``spec``: metric, mode, objectives, ...)
# Confirmation: the best searched configurations and every baseline re-run on fresh seeds, in
# ``<sweep>/confirm/`` laid out as a sweep of its own; rows are labelled ``config.arm`` =
# ``confirm:<trial_id>`` / ``confirm:baseline:<name>``, one row per (configuration, seed).
CONFIRM = "confirm"
# What was confirmed, ``<sweep>/confirm/confirm.json`` (:func:`read_confirm_record`): ``sweep``;
# the selection ``metric``, ``mode`` and ``split``; ``report_metric`` / ``report_mode`` (the
# test-split metric compared); ``searched`` (finished searched configurations when last run);
# ``selected``: one ``{trial_id, arm, value, rank, of}`` per confirmed configuration (its
# rank by the metric among the ``of`` searched trials at the latest confirm; null once it is
# no finished searched trial); ``baselines`` (arms);
# ``seeds``; ``created``, ``updated``, ``runs``.
CONFIRM_RECORD = "confirm.json"
CONFIRM_ARM = "confirm:"  # the prefix of a confirmation row's arm
# The version of this contract a sweep was started under (in its manifest's fingerprint): 2
# names Optuna parameters and config columns by dotted path, writes nulls for unused settings
# and lists as Arrow lists. A sweep started under another version is not resumed.
RESULTS_FORMAT = 2
WAL_PREFIX = "_wal-"  # the curves' write-ahead logs: hidden from Parquet readers
_KINDS = {CURVES: "part", TRIALS: "trial", STAGES: "stage"}  # a run's file prefix per table
_COMPACT = "compact"
_LISTINGS = 20  # how often a reader lists a table again that compaction changed meanwhile


class ResultsError(ValueError):
    """The results path holds no readable table of the requested kind."""


class CorruptResultsError(ResultsError):
    """A file of a table is not readable Parquet. The message names the file and what
    moving it out of its directory costs; :attr:`path` is the file, :attr:`table` its table
    (``trials``, ``curves``, ``stages``, ``teacher``, or None)."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path, self.reason = Path(path), reason
        self.table = self.path.parent.name if self.path.parent.name in TABLES else None
        cost = _LOSS.get(self.table, "its rows are missing from the table")
        super().__init__(
            f"results: {self.path} is not a readable Parquet file ({reason}); move it out of "
            f"{self.path.parent}: the other files stay readable, and {cost}"
        )

    def __reduce__(self):  # picklable (e.g. raised in a Ray task) despite two arguments
        return type(self), (self.path, self.reason)


_RUN_AGAIN = "running the sweep again (`python -m search run` with its spec)"
# What moving a damaged file out of each table's directory costs, and how to get it back.
_LOSS = {
    TRIALS: f"{_RUN_AGAIN} runs new trials in place of the ones it recorded",
    CURVES: "its learning-curve rows are lost (the trials table keeps final and best metrics)",
    STAGES: "its stage rows are lost (they summarise the curves table, which keeps each report)",
    TEACHER: f"{_RUN_AGAIN} writes it again from the teacher's saved outputs",
}


def new_token() -> str:
    """A fresh run token: the part of a file name that says which driver run wrote it."""
    return secrets.token_hex(4)


def part_file(token: str, index: int) -> str:
    """The name of a run's ``index``-th ``curves`` part."""
    return f"part-{token}-{index:06d}.parquet"


def trial_file(token: str, trial_id: str) -> str:
    """The name of the ``trials`` file of one trial, written by run ``token``."""
    return f"trial-{token}-{trial_id}.parquet"


def stage_file(token: str, trial_id: str) -> str:
    """The name of the ``stages`` file of one trial, written by run ``token``."""
    return f"stage-{token}-{trial_id}.parquet"


def compact_file(token: str) -> str:
    """The name of the file that holds all of run ``token``'s files of one table."""
    return f"{_COMPACT}-{token}.parquet"


def run_token(path: str | os.PathLike) -> str | None:
    """The run token in a table file's name (``part-``, ``trial-``, ``stage-`` or
    ``compact-``), or None for any other name (e.g. ``teacher.parquet``)."""
    name = Path(path).name
    if not name.endswith(".parquet") or is_hidden(name):
        return None
    parts = name.removesuffix(".parquet").split("-")
    if parts[0] == _COMPACT and len(parts) == 2:
        return parts[1]
    if parts[0] in _KINDS.values() and len(parts) >= 3:
        return parts[1]
    return None


def is_compact(path: str | os.PathLike) -> bool:
    return Path(path).name.startswith(f"{_COMPACT}-") and run_token(path) is not None


def segment_token(run: str, segment: int) -> str:
    """The token in the names of run ``run``'s ``segment``-th segment of files of a table."""
    return f"{run}.{segment:06d}"


def merged_file(run: str, first: int, last: int) -> str:
    """The name of the file holding run ``run``'s segments ``first`` to ``last`` of a table."""
    return f"{_COMPACT}-{run}.{first:06d}.{last:06d}.parquet"


def coverage(path: str | os.PathLike) -> tuple[str, float, float] | None:
    """``(run, first, last)``: the run and the span of its segments a table file holds (a
    loose file its own segment; a run's files written without segments count as segment 0,
    and its ``compact-<run>.parquet`` holds them all), or None for another name."""
    token = run_token(path)
    if token is None:
        return None
    run, *span = token.split(".")
    try:
        numbers = [int(n) for n in span]
    except ValueError:
        return None
    if is_compact(path):
        if not numbers:
            return run, 0, math.inf
        return (run, numbers[0], numbers[1]) if len(numbers) == 2 else None
    if len(numbers) > 1:
        return None
    return run, numbers[0] if numbers else 0, numbers[0] if numbers else 0


def run_files(directory: str | os.PathLike, token: str) -> list[Path]:
    """Run ``token``'s files in one table directory (not its compact file), sorted."""
    files = Path(directory).glob(f"*-{token}-*.parquet")
    return sorted(f for f in files if not is_compact(f) and run_token(f) == token)


def is_hidden(name: str) -> bool:
    """In-flight temporaries and write-ahead logs: never part of a table."""
    return name.startswith((".", "_"))


def write_parquet_atomic(table: pa.Table, path: str | os.PathLike) -> None:
    """Write ``table`` to ``path`` so that readers see either nothing or the whole file: it is
    written under a hidden temporary name in the same directory, then renamed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --- the write-ahead log ----------------------------------------------------------------------


def wal_path(curves_dir: str | os.PathLike, token: str) -> Path:
    """Run ``token``'s write-ahead log in a ``curves`` directory."""
    return Path(curves_dir) / f"{WAL_PREFIX}{token}.jsonl"


class WriteAheadLog:
    """Run ``token``'s log of curve rows not yet in Parquet: one JSON object per line, each
    line flushed to the OS as it is written (it survives a SIGKILL of the writer)."""

    def __init__(self, curves_dir: str | os.PathLike, token: str) -> None:
        self.path = wal_path(curves_dir, token)
        self._file = None

    def append(self, row: dict[str, Any]) -> None:
        if self._file is None:
            self._file = open(self.path, "a")  # noqa: SIM115 - held open across appends
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def clear(self) -> None:
        """The logged rows are in Parquet now: forget them."""
        if self._file is not None:
            self._file.truncate(0)
            self._file.seek(0)

    def remove(self) -> None:
        """The run ended with every row in Parquet: close and delete the log."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self.path.unlink(missing_ok=True)


def read_wal(curves_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Curve rows in a ``curves`` directory's write-ahead logs: rows a running sweep has not
    yet written to Parquet, or a killed one never did (until its next run recovers them). A
    line cut short by a kill is skipped."""
    rows = []
    for path in sorted(Path(curves_dir).glob(f"{WAL_PREFIX}*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


# --- schemas ----------------------------------------------------------------------------------

_KEYS = [("sweep", pa.string()), ("trial_id", pa.string())]

_CURVE_REPORTED = [
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
    ("val_perplexity", pa.float64()),  # the language-model tasks only
    # bandit and mixture curricula only: the arms (difficulty buckets or sources) and the
    # probability of drawing each at this evaluation
    ("arm_names", pa.list_(pa.string())),
    ("arm_probs", pa.list_(pa.float64())),
]
CURVE_SCHEMA = pa.schema(_KEYS + _CURVE_REPORTED)
CURVE_REPORTED = tuple(name for name, _ in _CURVE_REPORTED)  # taken from each report

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
        ("val_loss", pa.float64()),
        ("val_perplexity", pa.float64()),  # the language-model tasks only
        ("test_perplexity", pa.float64()),
        ("repeats", pa.int64()),
        ("val_accuracy_seeds", pa.list_(pa.float64())),
        ("best_val_accuracy_seeds", pa.list_(pa.float64())),
        ("test_accuracy_seeds", pa.list_(pa.float64())),
        ("steps_to_target_capped_seeds", pa.list_(pa.int64())),
        ("val_perplexity_seeds", pa.list_(pa.float64())),  # the language-model tasks only
        ("test_perplexity_seeds", pa.list_(pa.float64())),
        ("node_id", pa.string()),
    ]
)
TRIAL_HEAD = pa.schema(
    _KEYS + [("status", pa.string()), ("error", pa.string()), ("seed", pa.int64())]
)

# One row per (trial, curriculum stage): where the stage began and ended, and the last
# evaluation in it (for non-staged curricula, one stage: the whole run).
_STAGE_VALUES = [
    ("val_accuracy", pa.float64()),
    ("easy_accuracy", pa.float64()),
    ("hard_accuracy", pa.float64()),
    ("temperature", pa.float64()),
    ("alpha", pa.float64()),
]
STAGE_SCHEMA = pa.schema(
    _KEYS
    + [("stage", pa.int64()), ("first_step", pa.int64()), ("last_step", pa.int64())]
    + _STAGE_VALUES
)
STAGE_VALUES = tuple(name for name, _ in _STAGE_VALUES)  # curve columns: the stage's last

# One row per teacher evaluation: the bank's history record, and what the sweep marks on it.
_TEACHER_RECORD = [
    ("step", pa.int64()),
    ("samples_seen", pa.int64()),
    ("wall_time_s", pa.float64()),
    ("train_loss", pa.float64()),
    ("val_accuracy", pa.float64()),
    ("val_loss", pa.float64()),
    ("val_perplexity", pa.float64()),  # the language-model tasks only
    # the curve the phase transition is detected on (never validation): the teacher's
    # accuracy on its training split, or on a holdout of it that it never trains on (for the
    # language-model tasks, the mean over sequences of each one's token accuracy)
    ("train_accuracy", pa.float64()),
    ("holdout_accuracy", pa.float64()),
]
_TEACHER_MARKS = [
    ("is_kept", pa.bool_()),
    ("in_transition", pa.bool_()),
    ("is_transition_checkpoint", pa.bool_()),
]
TEACHER_SCHEMA = pa.schema([("sweep", pa.string())] + _TEACHER_RECORD + _TEACHER_MARKS)
TEACHER_RECORD = tuple(name for name, _ in _TEACHER_RECORD)
TEACHER_MARKS = tuple(name for name, _ in _TEACHER_MARKS)


# --- config columns ---------------------------------------------------------------------------

CONFIG_PREFIX = "config."


def config_column(path: str) -> str:
    """The trials column of a config field, by its dotted path: ``distill.temperature`` ->
    ``config.distill.temperature``."""
    return f"{CONFIG_PREFIX}{path}"


def config_path(column: str) -> str | None:
    """The dotted config path of a trials column, or None for a column that is not config."""
    return column.removeprefix(CONFIG_PREFIX) if column.startswith(CONFIG_PREFIX) else None


_SCALARS = {bool: pa.bool_(), int: pa.int64(), float: pa.float64(), str: pa.string()}


def _is_model(annotation: Any) -> bool:
    from pydantic import BaseModel

    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def arrow_type(annotation: Any) -> pa.DataType:
    """The Arrow type of a config field's annotation.

    ``bool`` / ``int`` / ``float`` / ``str`` as themselves; ``X | None`` as ``X``; a
    ``Literal`` of one scalar type as that type; ``list[X]``, ``tuple[X, ...]`` and tuples of
    one element type as ``list<X>``; a model (in a list) as a struct of its fields, or the
    whole list as JSON text where the model holds a mapping (a mix's stages); anything
    else, including unions such as ``int | Literal["transition"]``, as a string (non-string
    values written as JSON text).
    """
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return arrow_type(args[0])
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return arrow_type(options[0]) if len(options) == 1 else pa.string()
    if origin is typing.Literal:
        kinds = {type(a) for a in args}
        return _SCALARS[kinds.pop()] if len(kinds) == 1 and kinds <= set(_SCALARS) else pa.string()
    if origin in (list, tuple, set, frozenset):
        items = [a for a in args if a is not Ellipsis]
        if items and _is_model(items[0]) and _holds_mapping(items[0]):
            return pa.string()  # a struct cannot hold a mapping: the list as JSON text
        if items and all(a == items[0] for a in items):
            return pa.list_(arrow_type(items[0]))
        return pa.string()
    if _is_model(annotation):
        return pa.struct(
            [
                pa.field(name, arrow_type(f.annotation))
                for name, f in annotation.model_fields.items()
            ]
        )
    return _SCALARS.get(annotation, pa.string())


def _holds_mapping(model: type) -> bool:
    """Whether a model has a ``dict`` field (directly, or optional)."""
    for info in model.model_fields.values():
        annotation = info.annotation
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if typing.get_origin(annotation) in (typing.Union, types.UnionType) and options:
            annotation = options[0]
        if typing.get_origin(annotation) is dict or annotation is dict:
            return True
    return False


def config_fields(model: type, prefix: str = "") -> list[pa.Field]:
    """One typed column per leaf of a pydantic config model, named :func:`config_column` of
    its dotted path (nested models are walked; lists of models are struct lists).

    Typing from the model, not from one config's values, keeps every file of the table on
    the same schema whatever values (or nulls) a trial has.
    """
    fields = []
    for name, info in model.model_fields.items():
        annotation, path = info.annotation, f"{prefix}{name}"
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(options) == 1:
            annotation = options[0]
        if _is_model(annotation):
            fields += config_fields(annotation, f"{path}.")
        else:
            fields.append(pa.field(config_column(path), arrow_type(annotation)))
    return fields


def trials_schema(model: type) -> pa.Schema:
    """The trials table's schema for a trainable's config model: :data:`TRIAL_HEAD`, its
    config columns (:func:`config_fields`), then :data:`TRIAL_METRICS`."""
    return pa.schema(list(TRIAL_HEAD) + config_fields(model) + list(TRIAL_METRICS))


def config_row(values: dict[str, Any], schema: pa.Schema) -> dict[str, Any]:
    """``{dotted.path: value}`` as cells of the schema's config columns: tuples become lists,
    a non-string value in a string column JSON text, a value the column's type cannot hold
    null; paths without a column are dropped, columns without a path left out."""
    row = {}
    for path, value in values.items():
        name = config_column(path)
        if name in schema.names:
            row[name] = _cell(value, schema.field(name).type)
    return row


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _cell(value: Any, type_: pa.DataType) -> Any:
    if value is None:
        return None
    value = _plain(value)
    if pa.types.is_string(type_):
        return value if isinstance(value, str) else json.dumps(value, default=str)
    try:
        pa.scalar(value, type=type_)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        return None
    return value


# --- reading ----------------------------------------------------------------------------------


def _reason(exc: BaseException) -> str:
    """Arrow's reason on one line, without the path it repeats."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return re.sub(r"^Could not open Parquet input source '[^']*': ", "", text)


def read_table_file(path: str | os.PathLike, columns: list[str] | None = None) -> pa.Table:
    """One Parquet file of a table (``columns``: only these); :class:`CorruptResultsError`,
    naming it, if it is not readable Parquet. A file deleted meanwhile (a run compacting its
    files) or not permitted raises FileNotFoundError or PermissionError as usual."""
    try:
        return pq.read_table(path, columns=columns)
    except (FileNotFoundError, PermissionError):
        raise
    except (pa.ArrowException, OSError) as exc:
        raise CorruptResultsError(path, _reason(exc)) from None


def table_files(results: str | os.PathLike, table: str) -> list[Path]:
    """The Parquet files of one table under ``results`` (one sweep's directory, or a storage
    root of several sweeps), sorted: hidden temporaries left out, and a file left out once
    a merged file of its run holds its segments (:func:`coverage`)."""
    root = Path(results)
    if not root.is_dir():
        raise ResultsError(f"results: {str(root)!r} is not a directory")
    pattern = f"{table}/*.parquet" if is_sweep_dir(root) else f"*/{table}/*.parquet"
    # (one sweep: never its confirm/ directory's tables)
    for _ in range(_LISTINGS):
        files = sorted(f for f in root.glob(pattern) if not is_hidden(f.name))
        compacts = {f for f in files if is_compact(f)}
        # A merge that ran while the directory was read may have deleted files the listing
        # missed, its merged file appearing after the listing passed its place: list again
        # until no merged file is new.
        if set(root.glob(pattern.replace("*.parquet", f"{_COMPACT}-*.parquet"))) <= compacts:
            break
    spans: dict[tuple[Path, str], list[tuple[float, float, Path]]] = {}
    for f in compacts:
        if (span := coverage(f)) is not None:
            spans.setdefault((f.parent, span[0]), []).append((span[1], span[2], f))
    return [f for f in files if not _held_elsewhere(f, spans)]


def _held_elsewhere(path: Path, spans: dict) -> bool:
    """Whether a merged file other than ``path`` holds ``path``'s segments (a loose file
    and a merged file of the same one segment: the merged file holds it)."""
    span = coverage(path)
    if span is None:
        return False
    run, first, last = span
    loose = not is_compact(path)
    return any(
        other != path and a <= first and last <= b and (b - a > last - first or loose)
        for a, b, other in spans.get((path.parent, run), ())
    )


def is_sweep_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is one sweep's directory (it holds the sweep's manifest or one of its
    tables), as opposed to a storage root of several sweeps."""
    root = Path(path)
    if (root / SWEEP_MANIFEST).is_file():
        return True
    # without a manifest (tables copied on their own): a table directory holding table files
    # (a storage root's sweep that happens to be named like a table holds directories)
    return any(
        next((root / t).glob("*.parquet"), None) or next((root / t).glob(f"{WAL_PREFIX}*"), None)
        for t in TABLES
        if (root / t).is_dir()
    )


def _load(results: str | os.PathLike, table: str) -> pa.Table | None:
    """The table's files under ``results`` as one table (None when there are none). A file
    compacted away between listing and reading (a running sweep) makes it list again."""
    for attempt in range(_LISTINGS):
        files = table_files(results, table)
        if not files:
            return None
        by_sweep: dict[Path, list[Path]] = {}
        for f in files:
            by_sweep.setdefault(f.parent, []).append(f)
        try:
            return _merge([_load_sweep(group) for group in by_sweep.values()])
        except FileNotFoundError:
            if attempt == _LISTINGS - 1:
                raise
    raise AssertionError("unreachable")


def _require(results: str | os.PathLike, table: str) -> pa.Table:
    loaded = _load(results, table)
    if loaded is None:
        raise ResultsError(f"results: no {table!r} table under {str(results)!r}")
    return loaded


def _load_sweep(files: list[Path]) -> pa.Table:
    """One dataset scan (threaded, fast over thousands of small files) on the schema of the
    first and last file: a sweep resumed by a newer version may have grown columns, which
    read as nulls in the older files. If the files' types conflict, or one is damaged, each
    is read alone (:func:`read_table_file` names a damaged one)."""
    try:
        schema = pa.unify_schemas([pq.read_schema(files[0]), pq.read_schema(files[-1])])
        return ds.dataset(files, schema=schema, format="parquet").to_table()
    except (FileNotFoundError, PermissionError):
        raise
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError):
        return _merge([read_table_file(f) for f in files])


def _merge(tables: list[pa.Table]) -> pa.Table:
    """Concatenate tables whose columns may differ: missing columns are nulls, and a column
    that is JSON text in some tables and a list or struct in others becomes the latter (or,
    if some text is not such JSON, text everywhere)."""
    if len(tables) == 1:
        return tables[0]
    types_of: dict[str, list[pa.DataType]] = {}
    for t in tables:
        for field in t.schema:
            types_of.setdefault(field.name, []).append(field.type)
    for name, kinds in types_of.items():
        nested = [k for k in kinds if pa.types.is_nested(k)]
        if nested and any(pa.types.is_string(k) or pa.types.is_large_string(k) for k in kinds):
            try:
                tables = [_retype(t, name, nested[-1], json.loads) for t in tables]
            except (ValueError, TypeError):  # not JSON of that type: keep it as text
                tables = [_retype(t, name, pa.string(), json.dumps) for t in tables]
    return pa.concat_tables(tables, promote_options="permissive")


def _retype(table: pa.Table, name: str, type_: pa.DataType, convert) -> pa.Table:
    if name not in table.column_names or table.schema.field(name).type == type_:
        return table
    values = [None if v is None else convert(v) for v in table[name].to_pylist()]
    index = table.column_names.index(name)
    return table.set_column(index, pa.field(name, type_), pa.array(values, type=type_))


# Schema metadata key of a loaded trials table: the sweeps' objectives (see
# :func:`sweep_objectives`), so a query of the table knows which way each was searched.
OBJECTIVES_KEY = b"analysis.objectives"


def sweep_objectives(results: str | os.PathLike) -> dict[str, Any]:
    """What the sweeps under ``results`` searched for, from their manifests:
    ``{"metric": <the first objective, or None>, "modes": {metric: "max" | "min"},
    "report": <the test metric a comparison reports: test_perplexity for a language model,
    else test_accuracy; None when the sweeps differ>}``.

    Over several sweeps (a storage root), a metric they rank in different directions is left
    out of ``modes``, and ``metric`` is None unless every sweep searched the same one. Sweeps
    without a manifest add nothing (the queries then fall back to each metric's usual
    direction)."""
    root = Path(results)
    if (root / SWEEP_MANIFEST).is_file():
        dirs = [root]
    else:
        dirs = [found.parent for found in sorted(root.glob(f"*/{SWEEP_MANIFEST}"))]
    firsts, modes, conflicting, reports = set(), {}, set(), set()
    for directory in dirs:
        spec = (read_sweep_manifest(directory) or {}).get("spec")
        if not isinstance(spec, dict):
            continue
        task = (spec.get("task") or {}).get("kind")
        reports.add("test_perplexity" if task in ("masked_lm", "causal_lm") else "test_accuracy")
        pairs = [(o.get("metric"), o.get("mode")) for o in spec.get("objectives") or []]
        pairs = pairs or [(spec.get("metric"), spec.get("mode"))]
        pairs = [(m, d) for m, d in pairs if isinstance(m, str) and d in ("max", "min")]
        if not pairs:
            continue
        firsts.add(pairs[0][0])
        for metric, mode in pairs:
            if modes.setdefault(metric, mode) != mode:
                conflicting.add(metric)
    for metric in conflicting:
        del modes[metric]
    metric = next(iter(firsts)) if len(firsts) == 1 else None
    report = next(iter(reports)) if len(reports) == 1 else None
    return {"metric": metric if metric in modes else None, "modes": modes, "report": report}


def with_objectives(table: pa.Table, objectives: dict[str, Any]) -> pa.Table:
    """``table`` carrying ``objectives`` (:func:`sweep_objectives`) in its schema metadata."""
    metadata = dict(table.schema.metadata or {})
    metadata[OBJECTIVES_KEY] = json.dumps(objectives).encode()
    return table.replace_schema_metadata(metadata)


def table_objectives(table: Any) -> dict[str, Any]:
    """The objectives a loaded trials table carries (a pyarrow Table's schema metadata, or a
    DataFrame's ``attrs["objectives"]``); empty ones for a table built by hand."""
    if isinstance(table, pa.Table):
        raw = (table.schema.metadata or {}).get(OBJECTIVES_KEY)
        found = json.loads(raw) if raw else None
    else:
        found = getattr(table, "attrs", {}).get("objectives")
    if not isinstance(found, dict):
        return {"metric": None, "modes": {}, "report": None}
    return {
        "metric": found.get("metric"), "modes": dict(found.get("modes") or {}),
        "report": found.get("report"),
    }  # fmt: skip


def load_trials(results: str | os.PathLike) -> pa.Table:
    """The ``trials`` table: one row per finished, failed or stopped trial. It carries the
    sweeps' objectives (:func:`table_objectives`), so the queries select each metric in the
    direction the sweep searched it."""
    return with_objectives(_require(results, TRIALS), sweep_objectives(results))


def confirm_dirs(results: str | os.PathLike) -> list[Path]:
    """The confirmation directories under ``results`` (a sweep's directory, or a storage
    root of several sweeps) that hold a ``trials`` table."""
    root = Path(results)
    if not root.is_dir():
        raise ResultsError(f"results: {str(root)!r} is not a directory")
    found = [root / CONFIRM] if is_sweep_dir(root) else sorted(root.glob(f"*/{CONFIRM}"))
    return [d for d in found if d.is_dir() and table_files(d, TRIALS)]


def load_confirm(results: str | os.PathLike) -> pa.Table:
    """The confirmation runs' ``trials`` rows (``<sweep>/confirm/trials``; of every sweep
    under a storage root); :class:`ResultsError` when no sweep there was confirmed."""
    dirs = confirm_dirs(results)
    if not dirs:
        raise ResultsError(
            f"results: no confirmation runs under {str(results)!r}; run "
            "`python -m search confirm SWEEP_DIR` first"
        )
    table = _merge([_require(d, TRIALS) for d in dirs])
    return with_objectives(table, sweep_objectives(results))


def read_confirm_record(confirm_dir: str | os.PathLike) -> dict[str, Any] | None:
    """A confirmation's record (:data:`CONFIRM_RECORD` in ``confirm_dir``) as a dict, or None
    when it has none or it is unreadable."""
    try:
        data = json.loads((Path(confirm_dir) / CONFIRM_RECORD).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("selected"), list) else None


def read_sweep_manifest(sweep_dir: str | os.PathLike) -> dict[str, Any] | None:
    """A sweep's ``manifest.json`` as a dict, or None when it has none or it is unreadable
    (an analysis of bare tables still works, with the defaults of each query)."""
    try:
        data = json.loads((Path(sweep_dir) / SWEEP_MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def load_curves(results: str | os.PathLike) -> pa.Table:
    """The ``curves`` table: one row per report of every trial, including rows still only in
    a write-ahead log (a running or killed sweep)."""
    root = Path(results)
    dirs: Iterable[Path] = [root / CURVES] if is_sweep_dir(root) else root.glob(f"*/{CURVES}")
    # the logs first: a row leaves a log only once its Parquet part is in place
    pending = [row for d in dirs for row in read_wal(d)]
    table = _load(results, CURVES)
    if table is None and pending:
        return pa.Table.from_pylist(pending, schema=CURVE_SCHEMA)
    if table is None:
        raise ResultsError(f"results: no {CURVES!r} table under {str(results)!r}")
    if not pending:
        return table
    keys = zip(table["sweep"].to_pylist(), table["trial_id"].to_pylist(),
               table["step"].to_pylist(), strict=True)  # fmt: skip
    seen = set(keys)
    extra = [r for r in pending if (r.get("sweep"), r.get("trial_id"), r.get("step")) not in seen]
    if not extra:
        return table
    return pa.concat_tables([table, pa.Table.from_pylist(extra, schema=table.schema)])


def load_teacher(results: str | os.PathLike) -> pa.Table:
    """The ``teacher`` table: one row per teacher evaluation."""
    return _require(results, TEACHER)


def load_stages(results: str | os.PathLike) -> pa.Table:
    """The ``stages`` table: one row per curriculum stage of every finished or failed trial."""
    return _require(results, STAGES)
