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
  (flattened into features in column order); no nulls anywhere.
- Features are finite and within float32's range (they are trained as float32); difficulty
  values are finite.
- Labels are the class indices ``0..C-1``, each present at least once, with
  ``2 <= C <= MAX_CLASSES``. Other labels are refused, not remapped: remap them with
  ``np.unique(y, return_inverse=True)``.
- At least ``MIN_ROWS`` rows, and ``data.val_fraction`` / ``data.test_fraction`` leave each
  of the train, validation and test splits at least one row. (Whether the training split
  holds every class is not checked: that depends on the seeded split.)

The check keeps nothing: its memory is one batch of rows (for Parquet, one row group) and a
``MAX_CLASSES`` table of the labels seen, whatever the file's size or its labels' values.
"""

from __future__ import annotations

import contextlib
import itertools
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainables.data._base import MIN_ROWS, DataError, DataInfo, example_shape, split_sizes

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
    ``(n,)``), difficulty (float64 ``(n,)`` or None), the number of classes, and each
    example's own shape (``.npz``: ``x.shape[1:]``; Parquet: ``(d,)``)."""

    x: np.ndarray
    y: np.ndarray
    difficulty: np.ndarray | None
    num_classes: int
    example_shape: tuple[int, ...]


def file_info(data: Any) -> DataInfo:
    """Check a ``file`` dataset (a :class:`~trainables.config.DataConfig`) in one streaming
    pass that keeps nothing; raise :class:`DataError` naming the first problem."""
    tally = _pass(Path(data.path), data.label_column, data.difficulty_column, keep=False)
    num_classes = tally.num_classes()
    split_sizes(tally.rows, data.val_fraction, data.test_fraction)
    return DataInfo(
        example_shape=example_shape(data.shape, tally.example_shape),
        tokens=False,
        num_classes=num_classes,
        vocab_size=None,
        pad_id=None,
        rows=tally.rows,
    )


def read_file(path: str | Path, label_column: str, difficulty_column: str | None) -> FileData:
    """Load a data file, checking it on the way (the rules of :func:`file_info`)."""
    tally = _pass(Path(path), label_column, difficulty_column, keep=True)
    return FileData(
        num_classes=tally.num_classes(),
        x=np.concatenate(tally.x),
        y=np.concatenate(tally.y),
        difficulty=np.concatenate(tally.difficulty) if tally.difficulty else None,
        example_shape=tally.example_shape,
    )


# --- the pass: the rules, applied batch by batch ------------------------------------------


class _Tally:
    """Rows and labels seen so far, and (with ``keep``) the checked batches themselves."""

    def __init__(self, file: str, label_subject: str, keep: bool) -> None:
        self.file = file
        self.label_subject = label_subject
        self.keep = keep
        self.rows = 0
        self.example_shape: tuple[int, ...] = ()
        self.present = np.zeros(MAX_CLASSES, dtype=bool)
        self.x: list[np.ndarray] = []
        self.y: list[np.ndarray] = []
        self.difficulty: list[np.ndarray] = []

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

    def add(self, x: np.ndarray, y: np.ndarray, difficulty: np.ndarray | None) -> None:
        """Count a checked batch, and keep it if asked to."""
        self.rows += len(x)
        if self.keep:
            self.x.append(x)
            self.y.append(y)
            if difficulty is not None:
                self.difficulty.append(difficulty)

    def num_classes(self) -> int:
        """The checks only the whole file can answer: row count, classes."""
        if self.rows < MIN_ROWS:
            raise DataError(
                f"data.path: {self.file} has {self.rows} rows; need at least {MIN_ROWS}"
            )
        seen = np.flatnonzero(self.present)
        num_classes = int(seen[-1]) + 1
        if len(seen) == 1:
            raise DataError(
                f"{self.label_subject}: every label is {seen[0]} (one class); need at least 2"
            )
        if len(seen) < num_classes:
            missing = np.setdiff1d(np.arange(num_classes), seen)
            shown = ", ".join(str(v) for v in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            found = ", ".join(str(v) for v in seen[:5]) + (", ..." if len(seen) > 5 else "")
            raise DataError(
                f"{self.label_subject}: labels must be the class indices 0..C-1, each present; "
                f"found {len(seen)} distinct labels ({found}), missing {shown}{more}: {_REMAP}"
            )
        return num_classes


def _pass(path: Path, label_column: str, difficulty_column: str | None, *, keep: bool) -> _Tally:
    file = repr(str(path))
    if path.suffix == ".npz":
        tally = _Tally(file, f"data.path: {file} array 'y'", keep)
        _npz_pass(path, file, difficulty_column, tally)
    elif path.suffix == ".parquet":
        tally = _Tally(file, f"data.label_column: column {label_column!r} of {file}", keep)
        _parquet_pass(path, file, label_column, difficulty_column, tally)
    else:
        raise DataError(f"data.path: {file} must end in .npz or .parquet")
    return tally


def _reason(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= 120 else text[:117] + "..."


def _kind(dtype: np.dtype) -> str:
    return "object" if dtype.hasobject else dtype.kind


# --- .npz ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Npy:
    """An array of a .npz, known from its header alone."""

    member: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool


def _npz_pass(path: Path, file: str, difficulty_column: str | None, tally: _Tally) -> None:
    try:
        with zipfile.ZipFile(path) as archive, contextlib.ExitStack() as streams:
            arrays = {
                name.removesuffix(".npy"): _npy_header(archive, name)
                for name in archive.namelist()
                if name.endswith(".npy")
            }
            _npz_schema(file, arrays, difficulty_column)
            tally.example_shape = arrays["x"].shape[1:] or (1,)
            difficulty = arrays.get(difficulty_column) if difficulty_column else None
            x_subject = f"data.path: {file} array 'x'"
            d_subject = f"data.difficulty_column: array {difficulty_column!r} of {file}"
            x_array, rows = arrays["x"], arrays["x"].shape[0]
            no_difficulty = itertools.repeat((0, None), -(-rows // _batch_rows(x_array)))

            def batches(array: _Npy) -> Iterator[tuple[int, np.ndarray]]:
                stream = streams.enter_context(archive.open(array.member))
                return _npy_batches(stream, array, like=x_array)

            both = zip(
                batches(x_array),
                batches(arrays["y"]),
                batches(difficulty) if difficulty else no_difficulty,
                strict=True,
            )
            for (start, x), (_, y), (_, d) in both:
                x = tally.features(x_subject, x, start)
                y = tally.labels(y, start)
                if d is not None:
                    d = tally.difficulty_values(d_subject, d, start)
                tally.add(x, y, d)
    except DataError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise DataError(f"data.path: {file} is not a readable .npz file ({_reason(exc)})") from None


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


def _npz_schema(file: str, arrays: dict[str, _Npy], difficulty_column: str | None) -> None:
    """The rules a .npz's headers answer: names, dtypes, shapes, lengths."""
    listed = ", ".join(arrays) or "none"
    for name in ("x", "y"):
        if name not in arrays:
            raise DataError(
                f"data.path: {file} needs arrays 'x' and 'y'; array {name!r} is missing "
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
    checks = [("x", _NUMERIC, "numeric (int, uint, float or bool)", "data.path")]
    checks.append(("y", _INTEGER, "integer class indices 0..C-1", "data.path"))
    if difficulty_column is not None:
        checks.append((difficulty_column, _NUMERIC, "numeric", "data.difficulty_column"))
    for name, kinds, allowed, field in checks:
        array = arrays[name]
        subject = f"{field}: {file} array {name!r}"
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
        raise DataError(f"data.path: {file} array 'y' must be 1-D, got shape {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise DataError(
            f"data.path: {file} array 'x' has {x.shape[0]} rows but array 'y' has "
            f"{y.shape[0]} labels; need one label per row"
        )
    if len(x.shape) > 1 and int(np.prod(x.shape[1:])) == 0:
        raise DataError(f"data.path: {file} array 'x' has no features (shape {x.shape})")
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
    path: Path, file: str, label_column: str, difficulty_column: str | None, tally: _Tally
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        reader = pq.ParquetFile(path)
        schema = reader.schema_arrow
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(
            f"data.path: {file} is not a readable Parquet file ({_reason(exc)})"
        ) from None
    features = _parquet_schema(file, schema, label_column, difficulty_column)
    subjects = {name: f"data.path: {file} feature column {name!r}" for name in features} | {
        label_column: tally.label_subject
    }
    if difficulty_column is not None:
        subjects[difficulty_column] = (
            f"data.difficulty_column: column {difficulty_column!r} of {file}"
        )
    widths: dict[str, int] = {}  # values per row of each list column, from its first row
    try:
        for batch in reader.iter_batches(batch_size=_parquet_batch_rows(reader)):
            start = tally.rows
            columns = {}
            for name in schema.names:
                column = batch.column(name)
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
            d = None
            if difficulty_column is not None:
                d = tally.difficulty_values(
                    subjects[difficulty_column], columns[difficulty_column], start
                )
            tally.add(x, y, d)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(
            f"data.path: {file} is not a readable Parquet file ({_reason(exc)})"
        ) from None
    tally.example_shape = (sum(widths.get(name, 1) for name in features),)


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
    file: str, schema: Any, label_column: str, difficulty_column: str | None
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
    features = [n for n in names if n not in (label_column, difficulty_column)]
    if not features:
        raise DataError(
            f"data.path: {file} has no feature columns (columns: {listed}); every column "
            "but data.label_column and data.difficulty_column is a feature"
        )
    for name in features:
        kind = schema.field(name).type
        element = kind.value_type if _is_list(kind) else kind
        if _arrow_kind(element) not in _NUMERIC:
            raise DataError(
                f"data.path: {file} feature column {name!r} must be numeric (int, uint, "
                f"float or bool) or a list of numbers, got {kind}; every column but "
                "data.label_column and data.difficulty_column is a feature"
            )
    return features


def _arrow_kind(arrow_type: Any) -> str:
    """The numpy dtype kind an Arrow column converts to ('object' for strings, lists...)."""
    try:
        return _kind(np.dtype(arrow_type.to_pandas_dtype()))
    except (NotImplementedError, TypeError, ValueError):
        return "object"
