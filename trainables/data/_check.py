"""Reading and checking a user's data file (``data.kind: file``): one streaming pass, one set
of rules.

:func:`file_info` runs the pass before anything starts (``check_data``, from ``python -m
search validate|run|submit`` and ``run_sweep``) and keeps nothing; :func:`read_file` runs the
same pass and keeps the arrays (each trial's ``load_splits``), so a file the check accepts is
a file a trial can load.

What a data file must look like:

- ``.npz``: array ``x`` (numeric: int, uint, float or bool; one row per example, any
  trailing shape, e.g. ``(n, 3, 32, 32)`` images, kept as the example shape) and array ``y``
  (1-D integer labels, ``len(y) == len(x)``); optionally the array named by
  ``data.difficulty_column`` (numeric, one value per row). Object arrays are refused (they
  need pickle).
- ``.parquet``: the integer column ``data.label_column``; optionally the numeric column
  ``data.difficulty_column``; every other column is a feature: a number (int, uint, float or
  bool), or a list or fixed-size list of numbers holding the same count in every row
  (flattened into features in column order); no nulls anywhere. A pandas index stored in
  the file (the columns its ``pandas`` schema metadata lists in ``index_columns``, and any
  ``__index_level_N__``, as ``DataFrame.to_parquet`` writes a filtered frame's index) is
  not a feature: a row's original position must not become a model input. It may still be
  the label, difficulty or split column.
- ``data.source_column`` (optional): in a ``.npz`` a 1-D array of one value per row, in a
  Parquet file a column, not a feature, of strings or integers (no nulls) naming each row's
  source (:mod:`trainables.data._sources`); at most ``MAX_SOURCES`` distinct values.
- Features are finite and within float32's range (they are trained as float32); difficulty
  values are finite.
- Labels are the class indices ``0..C-1``, each present at least once, with
  ``2 <= C <= MAX_CLASSES``. Other labels are refused, not remapped: remap them with
  ``np.unique(y, return_inverse=True)``.
- At least ``MIN_ROWS`` rows, and ``data.val_fraction`` / ``data.test_fraction`` leave each
  of the train, validation and test splits at least one row. (Whether the training split
  holds every class is not checked: that depends on the seeded split.)

Splits the user gives (:mod:`trainables.data._given`):

- ``data.split_column`` (Parquet): a string column, not a feature, naming each row's split
  (``train``, ``val``, ``test`` or ``holdout``); each of train, val and test needs a row.
- ``data.paths``: one file per split, each by the rules above but for the row count (each
  needs a row; all together ``MIN_ROWS``) and the classes, which are those of all the files
  together (a val or test file may lack a class). The files must agree: the same format,
  the same feature columns (or array ``x`` example shape) and the same kind of values
  (bool, integer or float) in each; no file may be given for two splits (the same resolved
  path, or the same bytes). The train and holdout files need ``data.source_column`` when it
  is set; a val or test file may lack it, and every file holding it holds the same kind of
  values (strings or integers).
- Either way every label of the val and test rows occurs in the ``train`` rows (holdout rows
  do not count); a training label missing from val or test is fine.

The check keeps nothing: its memory is one batch of rows (for Parquet, one row group) and a
``MAX_CLASSES`` table of the labels seen (one per split: per file of ``data.paths``, four
with ``data.split_column``), whatever the file's size or its labels' values; with
``data.source_column``, also a table of the distinct sources and an int32 code per row (and
an int8 split code per row with ``data.split_column``), to name the training rows' sources.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import re
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainables.data._base import (
    MIN_ROWS,
    DataError,
    DataInfo,
    example_shape,
    seeded_split,
    split_sizes,
    training_sources,
)
from trainables.data._given import (
    SPLITS,
    SplitColumn,
    UserSplit,
    check_trained,
    codes_of_files,
    distinct_files,
    empty_file,
    paths_of,
)
from trainables.data._sources import (
    SourceTable,
    noisy_names,
    npz_source_codes,
    npz_source_type,
    parquet_source_codes,
    parquet_source_type,
)

__all__ = ["MIN_ROWS", "DataError", "FileData", "file_info", "read_file", "split_sizes"]

MAX_CLASSES = 100_000  # a label table of this size costs 100 kB; a student's logits, far more
_BATCH_BYTES = 16 << 20  # rows read per step of the pass: about this many bytes
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_NUMERIC = "biuf"  # numpy dtype kinds: bool, int, uint, float
_INTEGER = "iu"
_REMAP = "remap labels to 0..C-1, e.g. with np.unique(y, return_inverse=True)"


@dataclass(frozen=True)
class FileData:
    """What :func:`read_file` returns: features (float32, ``(n, d)``), labels (int64,
    ``(n,)``), difficulty (float64 ``(n,)`` or None), the number of classes, each
    example's own shape (``.npz``: ``x.shape[1:]``; Parquet: ``(d,)``), and the split the
    user gave (``data.split_column`` or ``data.paths``; None: the loader's seeded split), and
    (``data.source_column``) each row's source code (int32 ``(n,)``; -1 in a val or test
    file without the column) with the values the codes stand for. With ``data.paths`` the
    rows are the files' rows one after another."""

    x: np.ndarray
    y: np.ndarray
    difficulty: np.ndarray | None
    num_classes: int
    example_shape: tuple[int, ...]
    split: UserSplit | None = None
    source: tuple[np.ndarray, list[Any]] | None = None


def file_info(data: Any) -> DataInfo:
    """Check a ``file`` dataset (a :class:`~trainables.config.DataConfig`) in one streaming
    pass that keeps nothing; raise :class:`DataError` naming the first problem."""
    checked = _check(data, keep=False)
    return DataInfo(
        example_shape=example_shape(data.shape, checked.example_shape),
        tokens=False,
        num_classes=checked.num_classes,
        vocab_size=None,
        pad_id=None,
        rows=checked.rows,
        holdout=checked.holdout,
        source_names=checked.source_names or noisy_names(data, checked.train_rows),
    )


def read_file(data: Any) -> FileData:
    """Load the file(s) of a ``file`` dataset, checking them on the way (the rules of
    :func:`file_info`)."""
    checked = _check(data, keep=True)
    tallies = checked.tallies
    return FileData(
        num_classes=checked.num_classes,
        x=np.concatenate([x for t in tallies for x in t.x]),
        y=np.concatenate([y for t in tallies for y in t.y]),
        difficulty=(
            np.concatenate([d for t in tallies for d in t.difficulty])
            if data.difficulty_column is not None
            else None
        ),
        example_shape=tallies[0].example_shape,
        split=checked.split,
        source=checked.source,
    )


@dataclass(frozen=True)
class _Checked:
    """The checked pass(es) over a dataset's file(s)."""

    tallies: list[_Tally]
    num_classes: int
    rows: int
    example_shape: tuple[int, ...]
    split: UserSplit | None  # the user's split (with ``keep``, or ``data.source_column``)
    holdout: int | None  # rows the user reserved as holdout
    train_rows: int  # rows of the training split, holdout rows included
    source: tuple[np.ndarray, list[Any]] | None = None  # see FileData.source
    source_names: tuple[str, ...] | None = None  # the training rows' sources


def _check(data: Any, *, keep: bool) -> _Checked:
    """One pass over ``data.path`` (split by fractions or by ``data.split_column``), or over
    each file of ``data.paths``."""
    if data.paths is not None:
        return _check_paths(data, keep=keep)
    table = SourceTable(data.source_column) if data.source_column is not None else None
    tally = _pass(
        Path(data.path), data.label_column, data.difficulty_column, keep=keep,
        split_column=data.split_column, sources=table,
    )  # fmt: skip
    num_classes = tally.num_classes()
    if tally.splits is None:
        train_rows, _, _ = split_sizes(tally.rows, data.val_fraction, data.test_fraction)
        checked = _Checked(
            [tally], num_classes, tally.rows, tally.example_shape, None, None, train_rows
        )
        if table is None:
            return checked
        train, _, _ = seeded_split(
            tally.rows, data.val_fraction, data.test_fraction, data.split_seed
        )
        return _with_sources(checked, table, train)
    codes = tally.splits.finish()
    check_trained(
        dict(zip(SPLITS, tally.by_split, strict=True)),
        lambda name, labels: (
            f"data.split_column: {labels} of the {name!r} rows of column "
            f"{data.split_column!r} of {tally.file}"
        ),
        "its 'train' rows",
    )
    split = UserSplit.from_codes(codes) if codes is not None else None
    holdout = tally.splits.holdout
    train_rows = int(tally.splits.counts[SPLITS.index("train")]) + (holdout or 0)
    checked = _Checked(
        [tally], num_classes, tally.rows, tally.example_shape, split, holdout, train_rows
    )
    return checked if table is None else _with_sources(checked, table, split.train)


def _with_sources(checked: _Checked, table: SourceTable, train: np.ndarray) -> _Checked:
    """``checked`` with the sources of ``data.source_column``: each row's code and the
    training rows' (``train``: their indices) source names."""
    codes = np.concatenate([c for t in checked.tallies for c in t.source_codes])
    _, names = training_sources(codes, table.values, train)
    return dataclasses.replace(checked, source=(codes, table.values), source_names=names)


def _check_paths(data: Any, *, keep: bool) -> _Checked:
    """Each file of ``data.paths`` by the rules of one file, then together: they agree with
    the training file, hold ``MIN_ROWS`` rows in all, and their labels are the classes
    ``0..C-1``, each present in some file, and every val and test label in the training file;
    no file twice."""
    distinct_files(data.paths)
    table = SourceTable(data.source_column) if data.source_column is not None else None
    tallies: list[_Tally] = []
    for name, file in paths_of(data.paths):
        field = f"data.paths.{name}"
        tally = _pass(
            Path(file), data.label_column, data.difficulty_column, keep=keep, field=field,
            sources=table, sources_required=name in ("train", "holdout"),
        )  # fmt: skip
        if tally.rows == 0:
            raise empty_file(field, tally.file)
        if tallies:
            _agree(tallies[0], tally)
        tallies.append(tally)
    rows = sum(t.rows for t in tallies)
    present = np.logical_or.reduce([t.present for t in tallies])
    npz = Path(data.paths.train).suffix == ".npz"
    label_subject = (
        "data.paths: array 'y' of the files"
        if npz
        else f"data.label_column: column {data.label_column!r} of the data.paths files"
    )
    num_classes = _classes(
        present, rows, f"data.paths: the files hold {rows} rows in all", label_subject
    )
    check_trained(
        {t.field.removeprefix("data.paths."): t.present for t in tallies},
        lambda name, labels: f"data.paths.{name}: {labels}",
        "data.paths.train",
    )
    sizes = [(t.field.removeprefix("data.paths."), t.rows) for t in tallies]
    split = UserSplit.from_codes(codes_of_files(sizes)) if keep or table else None
    holdout = dict(sizes).get("holdout")
    train_rows = dict(sizes)["train"] + (holdout or 0)
    checked = _Checked(
        tallies, num_classes, rows, tallies[0].example_shape, split, holdout, train_rows
    )
    return checked if table is None else _with_sources(checked, table, split.train)


def _agree(train: _Tally, other: _Tally) -> None:
    """Refuse a file of ``data.paths`` whose features differ from the training file's."""
    there = f"{train.field} {train.file}"
    if list(other.layout) != list(train.layout):
        raise DataError(
            f"{other.field}: {other.file} has feature columns {', '.join(other.layout)} but "
            f"{there} has {', '.join(train.layout)}; every split's file needs the same "
            "feature columns"
        )
    for name, (family, shape) in other.layout.items():
        want_family, want_shape = train.layout[name]
        what = f"array {name!r}" if other.npz else f"feature column {name!r}"
        if shape != want_shape:
            raise DataError(
                f"{other.field}: {other.file} {what} holds {shape} but {want_shape} in "
                f"{there}; every split's file needs the same example shape"
            )
        if family != want_family:
            raise DataError(
                f"{other.field}: {other.file} {what} holds {family} values but {want_family} "
                f"values in {there}; every split's file needs the same kind of values"
            )


# --- the pass: the rules, applied batch by batch ------------------------------------------


class _Tally:
    """Rows and labels seen so far, and (with ``keep``) the checked batches themselves;
    ``field`` names the file in messages (``data.path``, or ``data.paths.<split>``)."""

    def __init__(self, file: str, label_subject: str, keep: bool, field: str, npz: bool) -> None:
        self.file = file
        self.label_subject = label_subject
        self.keep = keep
        self.field = field
        self.npz = npz
        self.rows = 0
        self.example_shape: tuple[int, ...] = ()
        # feature column (or array 'x') -> (kind of values, values per row): what the files
        # of data.paths must agree on
        self.layout: dict[str, tuple[str, str]] = {}
        self.splits: SplitColumn | None = None  # data.split_column's values
        self.present = np.zeros(MAX_CLASSES, dtype=bool)
        # with data.split_column: the labels of each split's rows (a row of SPLITS order)
        self.by_split: np.ndarray | None = None
        self.x: list[np.ndarray] = []
        self.y: list[np.ndarray] = []
        self.difficulty: list[np.ndarray] = []
        # data.source_column: the table of its values (shared by the files of data.paths),
        # whether this file holds the column, and each row's code (kept even without keep)
        self.sources: SourceTable | None = None
        self.has_source = False
        self.source_codes: list[np.ndarray] = []

    @staticmethod
    def features(subject: str, values: np.ndarray, start: int) -> np.ndarray:
        """Check a batch of features (rows first); return it as float32 ``(rows, -1)``."""
        values = values.reshape(len(values), -1)
        if values.dtype.kind == "f":
            if values.dtype.itemsize <= 4:
                bad = ~np.isfinite(values)
            else:  # NaN compares false: one pass finds NaN, inf and what float32 cannot hold
                bad = ~(np.abs(values) <= _FLOAT32_MAX)
            if bad.any():
                row, column = np.argwhere(bad)[0]
                at = f"row {start + row}" + (f", column {column}" if values.shape[1] > 1 else "")
                value = values[row, column]
                what = "NaN" if np.isnan(value) else f"{value:g}"
                raise DataError(
                    f"{subject} has {what} at {at}: features must be finite"
                    + ("" if np.isnan(value) or np.isinf(value) else " and within float32")
                )
        return values.astype(np.float32, copy=False)

    def labels(self, values: np.ndarray, start: int) -> np.ndarray:
        """Check a batch of labels (integers), note the classes seen; return it as int64."""
        if len(values) == 0:
            return values.astype(np.int64)
        for bad, why in [
            (values < 0, "is negative"),
            (values >= MAX_CLASSES, f"is not below MAX_CLASSES = {MAX_CLASSES:,}"),
        ]:
            if bad.any():
                row = int(np.argmax(bad))
                raise DataError(
                    f"{self.label_subject}: label {values[row]} at row {start + row} {why}; "
                    f"labels must be the class indices 0..C-1: {_REMAP}"
                )
        values = values.astype(np.int64)
        self.present[values] = True
        return values

    @staticmethod
    def difficulty_values(subject: str, values: np.ndarray, start: int) -> np.ndarray:
        """Check a batch of difficulty values; return it as float64 ``(rows,)``."""
        values = values.astype(np.float64).reshape(-1)
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.argmax(bad))
            raise DataError(f"{subject} has {values[row]} at row {start + row}: must be finite")
        return values

    def add(
        self,
        x: np.ndarray,
        y: np.ndarray,
        difficulty: np.ndarray | None,
        source: np.ndarray | None = None,
    ) -> None:
        """Count a checked batch, and keep it if asked to (its source codes always)."""
        self.rows += len(x)
        if source is not None:
            self.source_codes.append(source)
        if self.keep:
            self.x.append(x)
            self.y.append(y)
            if difficulty is not None:
                self.difficulty.append(difficulty)

    def num_classes(self) -> int:
        """The checks only the whole file can answer: row count, classes."""
        return _classes(
            self.present, self.rows, f"{self.field}: {self.file} has {self.rows} rows",
            self.label_subject,
        )  # fmt: skip


def _classes(present: np.ndarray, rows: int, too_few: str, label_subject: str) -> int:
    """The classes of labels ``present`` (a table of the labels seen) in ``rows`` rows:
    ``MIN_ROWS`` rows (``too_few``: the start of the message otherwise), labels ``0..C-1``
    each present, ``C >= 2``."""
    if rows < MIN_ROWS:
        raise DataError(f"{too_few}; need at least {MIN_ROWS}")
    seen = np.flatnonzero(present)
    num_classes = int(seen[-1]) + 1
    if len(seen) == 1:
        raise DataError(f"{label_subject}: every label is {seen[0]} (one class); need at least 2")
    if len(seen) < num_classes:
        missing = np.setdiff1d(np.arange(num_classes), seen)
        shown = ", ".join(str(v) for v in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        found = ", ".join(str(v) for v in seen[:5]) + (", ..." if len(seen) > 5 else "")
        raise DataError(
            f"{label_subject}: labels must be the class indices 0..C-1, each present; "
            f"found {len(seen)} distinct labels ({found}), missing {shown}{more}: {_REMAP}"
        )
    return num_classes


def _pass(
    path: Path,
    label_column: str,
    difficulty_column: str | None,
    *,
    keep: bool,
    field: str = "data.path",
    split_column: str | None = None,
    sources: SourceTable | None = None,
    sources_required: bool = True,
) -> _Tally:
    """One file's pass; ``field`` names it in messages; ``split_column`` (Parquet only: the
    configuration refuses it elsewhere) is read into :attr:`_Tally.splits`; ``sources``:
    the table of ``data.source_column``'s values (the column is read into it, and must be
    there when ``sources_required``)."""
    file = repr(str(path))
    if path.suffix == ".npz":
        tally = _Tally(file, f"{field}: {file} array 'y'", keep, field, npz=True)
        tally.sources = sources
        _npz_pass(path, file, difficulty_column, tally, sources_required)
    elif path.suffix == ".parquet":
        label_subject = f"data.label_column: column {label_column!r} of {file}"
        tally = _Tally(file, label_subject, keep, field, npz=False)
        tally.sources = sources
        if split_column is not None:
            # its codes are kept with sources too: they say which rows' sources are named
            tally.splits = SplitColumn(split_column, file, keep=keep or sources is not None)
            tally.by_split = np.zeros((len(SPLITS), MAX_CLASSES), dtype=bool)
        _parquet_pass(path, file, label_column, difficulty_column, tally, sources_required)
    else:
        raise DataError(f"{field}: {file} must end in .npz or .parquet")
    if sources is not None and not tally.has_source:  # a val or test file without it
        tally.source_codes = [np.full(tally.rows, -1, dtype=np.int32)]
    return tally


def _reason(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= 120 else text[:117] + "..."


def _kind(dtype: np.dtype) -> str:
    return "object" if dtype.hasobject else dtype.kind


def _family(dtype: np.dtype) -> str:
    """A feature's kind of values, which the files of ``data.paths`` must share (an int8
    and an int64 column agree; an int and a float column do not)."""
    return {"b": "bool", "i": "integer", "u": "integer", "f": "float"}.get(dtype.kind, "other")


# --- .npz ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Npy:
    """An array of a .npz, known from its header alone."""

    member: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool


def _npz_pass(
    path: Path, file: str, difficulty_column: str | None, tally: _Tally, sources_required: bool
) -> None:
    try:
        with zipfile.ZipFile(path) as archive, contextlib.ExitStack() as streams:
            arrays = {
                name.removesuffix(".npy"): _npy_header(archive, name)
                for name in archive.namelist()
                if name.endswith(".npy")
            }
            _npz_schema(file, arrays, difficulty_column, tally.field)
            table = tally.sources
            tally.has_source = table is not None and npz_source_type(
                table, arrays, file, arrays["x"].shape[0], sources_required
            )
            tally.example_shape = arrays["x"].shape[1:] or (1,)
            tally.layout = {
                "x": (_family(arrays["x"].dtype), f"examples of shape {tally.example_shape}")
            }
            difficulty = arrays[difficulty_column] if difficulty_column else None
            x_subject = f"{tally.field}: {file} array 'x'"
            d_subject = f"data.difficulty_column: array {difficulty_column!r} of {file}"
            x_array, rows = arrays["x"], arrays["x"].shape[0]
            steps = -(-rows // _batch_rows(x_array))

            def batches(array: _Npy | None) -> Iterator[tuple[int, np.ndarray | None]]:
                if array is None:  # an optional array the file does not hold: None per batch
                    return itertools.repeat((0, None), steps)
                stream = streams.enter_context(archive.open(array.member))
                return _npy_batches(stream, array, like=x_array)

            source = arrays[table.name] if tally.has_source else None
            both = zip(
                batches(x_array),
                batches(arrays["y"]),
                batches(difficulty),
                batches(source),
                strict=True,
            )
            for (start, x), (_, y), (_, d), (_, s) in both:
                x = tally.features(x_subject, x, start)
                y = tally.labels(y, start)
                if d is not None:
                    d = tally.difficulty_values(d_subject, d, start)
                if s is not None:
                    s = npz_source_codes(table, s, file, start)
                tally.add(x, y, d, s)
    except DataError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise DataError(
            f"{tally.field}: {file} is not a readable .npz file ({_reason(exc)})"
        ) from None


def _npy_header(archive: zipfile.ZipFile, member: str) -> _Npy:
    with archive.open(member) as stream:
        version = np.lib.format.read_magic(stream)
        read = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0  # 3.0 differs only in the text encoding
        )
        shape, fortran_order, dtype = read(stream)
    return _Npy(member, tuple(shape), np.dtype(dtype), bool(fortran_order))


def _npz_schema(
    file: str, arrays: dict[str, _Npy], difficulty_column: str | None, field: str
) -> None:
    """The rules a .npz's headers answer: names, dtypes, shapes, lengths."""
    listed = ", ".join(arrays) or "none"
    for name in ("x", "y"):
        if name not in arrays:
            raise DataError(
                f"{field}: {file} needs arrays 'x' and 'y'; array {name!r} is missing "
                f"(arrays: {listed})"
            )
    if difficulty_column is not None:
        if difficulty_column in ("x", "y"):
            raise DataError(
                f"data.difficulty_column: {difficulty_column!r} is the features or labels "
                "array; name a separate array of per-row difficulty"
            )
        if difficulty_column not in arrays:
            raise DataError(
                f"data.difficulty_column: {difficulty_column!r} is not an array of {file} "
                f"(arrays: {listed})"
            )
    checks = [("x", _NUMERIC, "numeric (int, uint, float or bool)", field)]
    checks.append(("y", _INTEGER, "integer class indices 0..C-1", field))
    if difficulty_column is not None:
        checks.append((difficulty_column, _NUMERIC, "numeric", "data.difficulty_column"))
    for name, kinds, allowed, named in checks:
        array = arrays[name]
        subject = f"{named}: {file} array {name!r}"
        if array.dtype.hasobject:
            raise DataError(
                f"{subject} holds Python objects (dtype object), which need pickle (not "
                f"allowed): save {allowed} arrays"
            )
        if _kind(array.dtype) not in kinds:
            what = ": labels must be integers" if name == "y" else f" must be {allowed}"
            raise DataError(f"{subject}{what}, got dtype {array.dtype}")
        if not array.shape:
            raise DataError(f"{subject} must have one entry per row, got a 0-d array")
    x, y = arrays["x"], arrays["y"]
    if len(y.shape) != 1:
        raise DataError(f"{field}: {file} array 'y' must be 1-D, got shape {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise DataError(
            f"{field}: {file} array 'x' has {x.shape[0]} rows but array 'y' has "
            f"{y.shape[0]} labels; need one label per row"
        )
    if len(x.shape) > 1 and int(np.prod(x.shape[1:])) == 0:
        raise DataError(f"{field}: {file} array 'x' has no features (shape {x.shape})")
    if difficulty_column is not None:
        d = arrays[difficulty_column]
        if d.shape[0] != x.shape[0] or int(np.prod(d.shape[1:])) != 1:
            raise DataError(
                f"data.difficulty_column: array {difficulty_column!r} of {file} has shape "
                f"{d.shape}; need one value per row of 'x' ({x.shape[0]} rows)"
            )


def _npy_batches(stream: Any, array: _Npy, like: _Npy) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first row, rows)`` of an array, reading it from its open member; batches line
    up with those of ``like`` (the features)."""
    rows = array.shape[0] if array.shape else 0
    row_items = int(np.prod(array.shape[1:]))
    batch = _batch_rows(like)
    _skip_header(stream)
    if array.fortran_order and len(array.shape) > 1:  # column-major: no row batches
        whole = _read_exact(stream, rows * row_items * array.dtype.itemsize, array)
        values = np.frombuffer(whole, array.dtype).reshape(array.shape, order="F")
        for start in range(0, rows, batch):
            yield start, values[start : start + batch]
        return
    for start in range(0, rows, batch):
        count = min(batch, rows - start)
        data = _read_exact(stream, count * row_items * array.dtype.itemsize, array)
        yield start, np.frombuffer(data, array.dtype).reshape(count, *array.shape[1:])


def _skip_header(stream: Any) -> None:
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        np.lib.format.read_array_header_1_0(stream)
    else:
        np.lib.format.read_array_header_2_0(stream)


def _read_exact(stream: Any, size: int, array: _Npy) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise ValueError(f"{array.member} ends before the end of its data")
    return data


def _batch_rows(array: _Npy) -> int:
    row_bytes = int(np.prod(array.shape[1:])) * array.dtype.itemsize
    return max(1, _BATCH_BYTES // max(row_bytes, 1))


# --- .parquet -----------------------------------------------------------------------------


def _parquet_pass(
    path: Path,
    file: str,
    label_column: str,
    difficulty_column: str | None,
    tally: _Tally,
    sources_required: bool,
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        reader = pq.ParquetFile(path)
        schema = reader.schema_arrow
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(
            f"{tally.field}: {file} is not a readable Parquet file ({_reason(exc)})"
        ) from None
    splits = tally.splits
    if splits is not None:  # first: a wrong column here makes the real one look a feature
        splits.check_schema(schema)
    table = tally.sources  # the same, for the source column
    tally.has_source = table is not None and parquet_source_type(
        table, schema, file, sources_required
    )
    features = _parquet_schema(
        file, schema, label_column, difficulty_column, tally.field,
        splits.name if splits else None, table.name if table else None,
    )  # fmt: skip
    read = [*features, label_column]  # not the pandas index: nothing reads it
    read += [difficulty_column] if difficulty_column is not None else []
    read += [splits.name] if splits is not None else []
    read += [table.name] if tally.has_source else []
    subjects = {name: f"{tally.field}: {file} feature column {name!r}" for name in features} | {
        label_column: tally.label_subject
    }
    if difficulty_column is not None:
        subjects[difficulty_column] = (
            f"data.difficulty_column: column {difficulty_column!r} of {file}"
        )
    widths: dict[str, int] = {}  # values per row of each list column, from its first row
    try:
        for batch in reader.iter_batches(batch_size=_parquet_batch_rows(reader), columns=read):
            start = tally.rows
            columns, codes, source = {}, None, None
            for name in read:
                column = batch.column(name)
                if splits is not None and name == splits.name:
                    codes = splits.add(column)
                    continue
                if tally.has_source and name == table.name:
                    source = parquet_source_codes(table, column, file, start)
                    continue
                if column.null_count:
                    row = int(np.argmax(column.is_null().to_numpy(zero_copy_only=False)))
                    raise DataError(
                        f"{subjects[name]} has a null at row {start + row}; no missing "
                        "values allowed"
                    )
                if _is_list(column.type):
                    columns[name] = _list_values(subjects[name], column, start, widths, name)
                else:
                    columns[name] = column.to_numpy(zero_copy_only=False)
            x = np.column_stack([tally.features(subjects[n], columns[n], start) for n in features])
            y = tally.labels(columns[label_column], start)
            if codes is not None:  # rows of another value: refused once the column is read
                named = codes >= 0
                tally.by_split[codes[named], y[named]] = True
            d = None
            if difficulty_column is not None:
                d = tally.difficulty_values(
                    subjects[difficulty_column], columns[difficulty_column], start
                )
            tally.add(x, y, d, source)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(
            f"{tally.field}: {file} is not a readable Parquet file ({_reason(exc)})"
        ) from None
    tally.example_shape = (sum(widths.get(name, 1) for name in features),)
    for name in features:
        kind = schema.field(name).type
        element = _family(np.dtype((kind.value_type if _is_list(kind) else kind).to_pandas_dtype()))
        per_row = f"lists of {widths[name]} values" if name in widths else "one value a row"
        tally.layout[name] = (element, per_row)


def _parquet_batch_rows(reader: Any) -> int:
    """Rows per batch of the pass: about ``_BATCH_BYTES`` of decoded data, from the row groups'
    recorded sizes (list columns make a row wide), at least 8 bytes per column."""
    meta = reader.metadata
    row_bytes = 8 * meta.num_columns
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        if group.num_rows:
            row_bytes = max(row_bytes, -(-group.total_byte_size // group.num_rows))
    return max(1, _BATCH_BYTES // row_bytes)


def _is_list(arrow_type: Any) -> bool:
    import pyarrow as pa

    return (
        pa.types.is_list(arrow_type)
        or pa.types.is_large_list(arrow_type)
        or pa.types.is_fixed_size_list(arrow_type)
    )


def _list_values(
    subject: str, column: Any, start: int, widths: dict[str, int], name: str
) -> np.ndarray:
    """A list column's values as ``(rows, width)``; every row must hold ``width`` values (the
    count of the column's first row) and none may be null."""
    import pyarrow.compute as pc

    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64)
    values = pc.list_flatten(column)
    if values.null_count:
        first = int(np.argmax(values.is_null().to_numpy(zero_copy_only=False)))
        row = int(np.searchsorted(np.cumsum(lengths), first, side="right"))
        raise DataError(
            f"{subject} has a null value in its list at row {start + row}; no missing values "
            "allowed"
        )
    if len(lengths) == 0:
        return np.zeros((0, widths.get(name, 0)))
    width = widths.setdefault(name, int(lengths[0]))
    if width == 0:
        raise DataError(f"{subject} has an empty list at row {start}; features need values")
    bad = lengths != width
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(
            f"{subject} has {lengths[row]} values at row {start + row} but {width} in its first "
            "row; every row of a list column must hold the same number of values"
        )
    return values.to_numpy(zero_copy_only=False).reshape(len(lengths), width)


def _parquet_schema(
    file: str,
    schema: Any,
    label_column: str,
    difficulty_column: str | None,
    field: str,
    split_column: str | None,
    source_column: str | None = None,
) -> list[str]:
    """The rules a Parquet schema answers; return the feature columns' names."""
    names = list(schema.names)
    listed = ", ".join(names)
    if label_column not in names:
        raise DataError(
            f"data.label_column: {label_column!r} is not a column of {file} (columns: {listed})"
        )
    if difficulty_column is not None:
        if difficulty_column == label_column:
            raise DataError(
                f"data.difficulty_column: {difficulty_column!r} is data.label_column; name "
                "a separate column of per-row difficulty"
            )
        if difficulty_column not in names:
            raise DataError(
                f"data.difficulty_column: {difficulty_column!r} is not a column of {file} "
                f"(columns: {listed})"
            )
    label_type = schema.field(label_column).type
    if _arrow_kind(label_type) not in _INTEGER:
        raise DataError(
            f"data.label_column: column {label_column!r} of {file}: labels must be integers "
            f"(class indices 0..C-1), got {label_type}"
        )
    if difficulty_column is not None:
        difficulty_type = schema.field(difficulty_column).type
        if _arrow_kind(difficulty_type) not in _NUMERIC:
            raise DataError(
                f"data.difficulty_column: column {difficulty_column!r} of {file} must be "
                f"numeric (int, uint, float or bool), got {difficulty_type}"
            )
    index = _pandas_index(schema)
    taken = (label_column, difficulty_column, split_column, source_column)
    features = [n for n in names if n not in taken and n not in index]
    others = ", ".join(
        ["data.label_column", "data.difficulty_column"]
        + (["data.split_column"] if split_column is not None else [])
        + (["data.source_column"] if source_column is not None else [])
        + (["the pandas index"] if index else [])
    )
    others = " and ".join(others.rsplit(", ", 1))
    if not features:
        raise DataError(
            f"{field}: {file} has no feature columns (columns: {listed}); every column "
            f"but {others} is a feature"
        )
    for name in features:
        kind = schema.field(name).type
        element = kind.value_type if _is_list(kind) else kind
        if _arrow_kind(element) not in _NUMERIC:
            raise DataError(
                f"{field}: {file} feature column {name!r} must be numeric (int, uint, "
                f"float or bool) or a list of numbers, got {kind}; every column but "
                f"{others} is a feature"
            )
    return features


def _pandas_index(schema: Any) -> set[str]:
    """The columns holding a pandas index (those the ``pandas`` schema metadata names in
    ``index_columns``, and any ``__index_level_N__``): not features, since an index of a
    filtered frame is each row's original position. A range index is stored as metadata, in
    no column."""
    names = {n for n in schema.names if re.fullmatch(r"__index_level_\d+__", n)}
    try:
        listed = (schema.pandas_metadata or {}).get("index_columns", [])
    except ValueError:  # metadata that is not JSON: no index known from it
        listed = []
    return names | {n for n in listed if isinstance(n, str) and n in schema.names}


def _arrow_kind(arrow_type: Any) -> str:
    """The numpy dtype kind an Arrow column converts to ('object' for strings, lists...)."""
    try:
        return _kind(np.dtype(arrow_type.to_pandas_dtype()))
    except (NotImplementedError, TypeError, ValueError):
        return "object"
