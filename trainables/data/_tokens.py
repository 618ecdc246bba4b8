"""Pre-tokenized sequences (``data.kind: tokens``): a ``.npy`` array or a Parquet column.

- ``.npy``: a 2-D ``(rows, L)`` integer array, opened as a read-only memory map and never
  copied whole: each split is an :class:`~trainables.data._rows.IndexRows` view that reads
  only the rows a batch asks for. The data has no padding unless ``data.pad_id`` says which
  of its ids is padding.
- ``.parquet``: the column ``data.tokens_column``, a ``list<int>`` (or large or fixed-size
  list) of token ids per row, read into memory and padded to the longest sequence with
  ``data.pad_id`` if given, else with ``V`` (an extra id, :data:`Splits.pad_id`). When every
  sequence has the same length nothing is padded.

The vocabulary ``V`` is ``data.vocab_size``, else the largest id + 1; ids must lie in
``[0, V)`` and ``data.pad_id`` (if given) too. At most ``data.max_examples`` rows, spread
evenly over the file. Every check reads the data in chunks of about ``_BATCH_BYTES``, so a
file larger than memory is checked, and loaded, in bounded memory.

Splits the user gives (:mod:`trainables.data._given`): ``data.split_column``, a string
column of the Parquet file beside the ids (its codes, one byte a row, are kept); or
``data.paths``, one file per split, all ``.npy`` or all Parquet. Their vocabulary is that of
all the files together, and so is the padding: Parquet files are padded to the longest
sequence of any of them (a file with shorter sequences only is padded too), while ``.npy``
files, each its own memory map, must have the same length. No file may be given for two
splits (nor a copy of it: the same bytes). ``data.max_examples`` spreads its rows evenly
over the files one after another, so each split keeps its share.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainables.data._base import (
    MIN_ROWS,
    DataError,
    DataInfo,
    Splits,
    evenly,
    inferred_vocabulary,
    seeded_split,
    split_sizes,
    too_few_rows,
)
from trainables.data._given import (
    SplitColumn,
    UserSplit,
    check_kept,
    codes_of_files,
    distinct_files,
    empty_file,
    paths_of,
)
from trainables.data._rows import ConcatRows, IndexRows

_BATCH_BYTES = 16 << 20  # bytes of token ids read per step of a pass


@dataclass(frozen=True)
class _Scan:
    """What one pass over the ids found: rows, padded length, id range, (when loading a
    Parquet column) the padded ids themselves, and (with ``data.split_column``) each row's
    split code."""

    rows: int
    length: int
    lowest: int
    highest: int
    ragged: bool  # sequences of different lengths (padding needed)
    ids: np.ndarray | None = None
    codes: np.ndarray | None = None  # each row's split code (data.split_column)


@dataclass(frozen=True)
class _File:
    """One file of the data (``field``: ``data.path`` or ``data.paths.<split>``) and what
    its pass found."""

    field: str
    path: Path
    scan: _Scan

    @property
    def name(self) -> str:
        return repr(str(self.path))


def tokens_info(data: Any) -> DataInfo:
    """Check a ``tokens`` dataset in a bounded-memory pass; keep nothing (but a split
    column's codes, a byte a row)."""
    files = _files(data, keep=False)
    vocab, pad = _vocabulary(data, files)
    length = max(f.scan.length for f in files)
    if data.paths is None and data.split_column is None:
        rows = len(evenly(files[0].scan.rows, data.max_examples))
        split_sizes(rows, data.val_fraction, data.test_fraction)
        return DataInfo((length,), True, vocab, vocab, pad, rows)
    train, val, test, holdout = _selection(data, files)
    rows = len(train) + len(val) + len(test)
    held = None if holdout is None else len(holdout)
    return DataInfo((length,), True, vocab, vocab, pad, rows, holdout=held)


def load_tokens(data: Any) -> Splits:
    """Load a ``tokens`` dataset (checking it on the way) as three index views: of the
    ``.npy`` memory map(s), or of the Parquet ids padded in memory."""
    files = _files(data, keep=True)
    vocab, pad = _vocabulary(data, files)
    train, val, test, holdout = _selection(data, files)
    if files[0].path.suffix == ".npy":
        bases = [np.load(f.path, mmap_mode="r") for f in files]
        starts = np.cumsum([0] + [f.scan.rows for f in files])
    else:
        bases, starts = [_joined(files, pad)], np.zeros(1, dtype=np.int64)
    return Splits(
        x_train=_view(bases, starts, train),
        y_train=None,
        x_val=_view(bases, starts, val),
        y_val=None,
        x_test=_view(bases, starts, test),
        y_test=None,
        num_classes=vocab,
        tokens=True,
        vocab_size=vocab,
        pad_id=pad,
        holdout=holdout,
    )


def _files(data: Any, *, keep: bool) -> list[_File]:
    """The pass over ``data.path``, or over each file of ``data.paths`` (each needs a row,
    all together ``MIN_ROWS``; ``.npy`` files the same length)."""
    if data.paths is None:
        path = Path(data.path)
        return [_File("data.path", path, _scan(path, data, "data.path", keep=keep))]
    distinct_files(data.paths)
    files: list[_File] = []
    for split, file in paths_of(data.paths):
        field, path = f"data.paths.{split}", Path(file)
        one = _File(field, path, _scan(path, data, field, keep=keep, alone=False))
        if files and path.suffix == ".npy" and one.scan.length != files[0].scan.length:
            raise DataError(
                f"{field}: {one.name} holds sequences of {one.scan.length} tokens but "
                f"{files[0].field} {files[0].name} holds {files[0].scan.length}; .npy files "
                "are not padded, so every split's file needs the same length (Parquet files "
                "are padded to the longest)"
            )
        files.append(one)
    rows = sum(f.scan.rows for f in files)
    if rows < MIN_ROWS:
        raise DataError(f"data.paths: the files hold {rows} rows in all; need at least {MIN_ROWS}")
    return files


def _scan(path: Path, data: Any, field: str, *, keep: bool, alone: bool = True) -> _Scan:
    """One file's pass; ``alone``: the only file (``MIN_ROWS`` rows, else one)."""
    if path.suffix == ".npy":
        return _npy_scan(path, data.vocab_size, field, alone)
    return _parquet_scan(path, data, keep=keep, field=field, alone=alone)


def _selection(
    data: Any, files: list[_File]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Rows (of the files one after another) of train (holdout rows last), validation and
    test, and the holdout rows' positions in train: the seeded split of the rows
    ``data.max_examples`` keeps, or the user's."""
    kept = evenly(sum(f.scan.rows for f in files), data.max_examples)
    if data.paths is None and data.split_column is None:
        train, val, test = seeded_split(
            len(kept), data.val_fraction, data.test_fraction, data.split_seed
        )
        return kept[train], kept[val], kept[test], None
    if data.paths is None:
        codes = files[0].scan.codes
        source = f"{files[0].name} (split by data.split_column {data.split_column!r})"
    else:
        codes = codes_of_files([(f.field.removeprefix("data.paths."), f.scan.rows) for f in files])
        source = "the data.paths files"
    if data.max_examples is not None:
        check_kept(data, codes, kept, source)
    split = UserSplit.from_codes(codes[kept], kept)
    return split.train, split.val, split.test, split.holdout


def _view(bases: list[Any], starts: np.ndarray, rows: np.ndarray) -> Any:
    """The row store of ``rows`` (of the bases one after another, ``starts`` their first
    rows): an index view of one base, or of each base in turn (a training split whose
    holdout rows are in their own file). With several bases ``rows`` ascend: a split's rows
    are in file order, and the holdout file comes after the training file."""
    if len(bases) == 1:
        return IndexRows(bases[0], rows)
    cuts = np.searchsorted(rows, starts)  # starts ends with the total
    parts = [
        IndexRows(base, rows[cuts[i] : cuts[i + 1]] - starts[i])
        for i, base in enumerate(bases)
        if cuts[i + 1] > cuts[i]
    ]
    return parts[0] if len(parts) == 1 else ConcatRows(parts)


def _joined(files: list[_File], pad: int | None) -> np.ndarray:
    """The Parquet files' padded ids as one array (the one file's own, not copied), padded
    to the longest sequence of any file with ``pad``."""
    length = max(f.scan.length for f in files)
    if len(files) == 1:
        base = files[0].scan.ids
    else:
        dtype = _id_dtype(max(f.scan.highest for f in files))
        base = np.full((sum(f.scan.rows for f in files), length), _FILL, dtype=dtype)
        start = 0
        for f in files:
            base[start : start + f.scan.rows, : f.scan.length] = f.scan.ids
            start += f.scan.rows
    if _ragged(files):
        base[base == _FILL] = pad  # padded in memory
    return base


def _ragged(files: list[_File]) -> bool:
    """Whether the sequences differ in length (in a file, or from one file to another)."""
    return any(f.scan.ragged for f in files) or len({f.scan.length for f in files}) > 1


def _vocabulary(data: Any, files: list[_File]) -> tuple[int, int | None]:
    """``(V, pad_id)``, checking ``data.pad_id`` against the vocabulary (the scans have
    checked the ids)."""
    top = max(files, key=lambda f: f.scan.highest)
    file = top.name
    vocab = data.vocab_size
    if vocab is None:
        vocab = inferred_vocabulary(top.scan.highest, file)
    pad = data.pad_id if data.pad_id is not None else (vocab if _ragged(files) else None)
    if data.pad_id is not None and data.pad_id >= vocab:
        raise DataError(
            f"data.pad_id: {data.pad_id} is outside the vocabulary 0..{vocab - 1} of {file}; "
            "set data.vocab_size above it, or leave data.pad_id unset to pad with vocab_size"
        )
    return vocab, pad


# --- .npy ---------------------------------------------------------------------------------


def _npy_scan(path: Path, vocab_size: int | None, field: str, alone: bool) -> _Scan:
    """Header checks, then the id range in chunks of rows of the memory map (ids must be
    ``>= 0`` and, when given, ``< vocab_size``)."""
    file = repr(str(path))
    ids = _open_npy(path, file, field)
    rows, length = ids.shape
    if alone:
        too_few_rows(f"{field}: {file}", rows)
    elif rows == 0:
        raise empty_file(field, file)
    if length == 0:
        raise DataError(f"{field}: {file} holds empty sequences (shape {ids.shape})")
    lowest, highest = None, None
    step = max(1, _BATCH_BYTES // (length * ids.dtype.itemsize))
    for start in range(0, rows, step):
        chunk = np.asarray(ids[start : start + step])
        low, high = int(chunk.min()), int(chunk.max())
        if low < 0:
            row, column = np.argwhere(chunk < 0)[0]
            raise DataError(
                f"{field}: token id {chunk[row, column]} in {file} (row {start + row}) is "
                "negative; ids must be in [0, vocab_size)"
            )
        if vocab_size is not None and high >= vocab_size:
            row, column = np.argwhere(chunk >= vocab_size)[0]
            raise DataError(
                f"data.vocab_size: token id {chunk[row, column]} in {file} (row {start + row}) "
                f"is >= vocab_size {vocab_size}"
            )
        lowest = low if lowest is None else min(lowest, low)
        highest = high if highest is None else max(highest, high)
    return _Scan(rows, length, lowest, highest, ragged=False)


def _open_npy(path: Path, file: str, field: str) -> np.ndarray:
    """The file as a read-only memory map, after checking its header (2-D, integer)."""
    try:
        with open(path, "rb") as stream:
            version = np.lib.format.read_magic(stream)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read(stream)
    except (OSError, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise DataError(f"{field}: {file} is not a readable .npy file ({reason})") from None
    dtype = np.dtype(dtype)
    if dtype.hasobject or dtype.kind not in "iu":
        raise DataError(
            f"{field}: {file} must hold integer token ids, got dtype {dtype}; save the "
            "array as an integer type, e.g. np.int32"
        )
    if len(shape) != 2:
        raise DataError(
            f"{field}: {file} must be a 2-D (rows, seq_len) array of token ids, got shape "
            f"{tuple(shape)}"
        )
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise DataError(f"{field}: {file} is not a readable .npy file ({reason})") from None


# --- .parquet -----------------------------------------------------------------------------

_FILL = -1  # where a Parquet row is padded, until the padding id is known


def _parquet_scan(path: Path, data: Any, *, keep: bool, field: str, alone: bool) -> _Scan:
    """One pass over the column (and ``data.split_column``'s), batch by batch; with
    ``keep``, also the ids, padded with ``_FILL`` to the longest sequence."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    file, name = repr(str(path)), data.tokens_column
    subject = f"data.tokens_column: column {name!r} of {file}"
    try:
        reader = pq.ParquetFile(path)
        schema = reader.schema_arrow
    except (pa.ArrowException, OSError, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise DataError(f"{field}: {file} is not a readable Parquet file ({reason})") from None
    splits = None
    if data.split_column is not None:
        splits = SplitColumn(data.split_column, file, keep=True)
        splits.check_schema(schema)
    if name not in schema.names:
        raise DataError(
            f"data.tokens_column: {name!r} is not a column of {file} (columns: "
            f"{', '.join(schema.names)})"
        )
    kind = schema.field(name).type
    is_list = pa.types.is_list(kind) or pa.types.is_large_list(kind)
    if not (is_list or pa.types.is_fixed_size_list(kind)) or not pa.types.is_integer(
        kind.value_type
    ):
        raise DataError(f"{subject} must be a list of integer token ids (list<int>), got {kind}")
    rows, length, shortest, lowest, highest = 0, 0, np.iinfo(np.int64).max, 0, -1
    kept_lengths: list[np.ndarray] = []
    kept_values: list[np.ndarray] = []
    columns = [name] if splits is None else [name, splits.name]
    try:
        for batch in reader.iter_batches(batch_size=_parquet_batch_rows(reader), columns=columns):
            column = batch.column(0)
            if splits is not None:
                splits.add(batch.column(1))
            if column.null_count:
                row = int(np.argmax(column.is_null().to_numpy(zero_copy_only=False)))
                raise DataError(f"{subject} has a null at row {rows + row}; no missing values")
            lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
            values = pc.list_flatten(column)
            if values.null_count:
                first = int(np.argmax(values.is_null().to_numpy(zero_copy_only=False)))
                row = rows + int(np.searchsorted(np.cumsum(lengths), first, side="right"))
                raise DataError(f"{subject} has a null id at row {row}; no missing values")
            if len(lengths) and lengths.min() == 0:
                row = rows + int(np.argmin(lengths))
                raise DataError(f"{subject} has an empty sequence at row {row}")
            ids = values.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
            if len(ids):
                lowest, highest = min(lowest, int(ids.min())), max(highest, int(ids.max()))
            if lowest < 0:
                at = int(np.argmax(ids < 0))
                row = rows + int(np.searchsorted(np.cumsum(lengths), at, side="right"))
                raise DataError(
                    f"{subject}: token id {ids[at]} (row {row}) is negative; ids must be in "
                    "[0, vocab_size)"
                )
            if data.vocab_size is not None and highest >= data.vocab_size:
                at = int(np.argmax(ids >= data.vocab_size))
                row = rows + int(np.searchsorted(np.cumsum(lengths), at, side="right"))
                raise DataError(
                    f"data.vocab_size: token id {ids[at]} in {file} (row {row}) is >= "
                    f"vocab_size {data.vocab_size}"
                )
            if keep:
                kept_lengths.append(lengths.astype(np.int64))
                kept_values.append(ids.astype(_id_dtype(highest)))
            rows += len(lengths)
            if len(lengths):
                length = max(length, int(lengths.max()))
                shortest = min(shortest, int(lengths.min()))
    except (pa.ArrowException, OSError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise DataError(f"{field}: {file} is not a readable Parquet file ({reason})") from None
    if alone:
        too_few_rows(f"{field}: {file}", rows)
    elif rows == 0:
        raise empty_file(field, file)
    codes = splits.finish() if splits is not None else None
    padded = None
    if keep:
        padded = _pad(np.concatenate(kept_lengths), kept_values, length, _id_dtype(highest))
    return _Scan(rows, length, lowest, highest, shortest < length, padded, codes)


def _pad(lengths: np.ndarray, values: list[np.ndarray], length: int, dtype: Any) -> np.ndarray:
    """Sequences (concatenated ``values``, cut by ``lengths``) as rows of ``length``, with
    ``_FILL`` after each sequence's end."""
    flat = np.concatenate(values)
    out = np.full((len(lengths), length), _FILL, dtype=dtype)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.cumsum(lengths) - lengths
    out[rows, np.arange(len(flat)) - np.repeat(starts, lengths)] = flat
    return out


def _id_dtype(highest: int) -> Any:
    """A compact signed type for ids up to ``highest`` + 1 (the padding id) and ``_FILL``."""
    return np.int32 if highest + 1 < np.iinfo(np.int32).max else np.int64


def _parquet_batch_rows(reader: Any) -> int:
    meta = reader.metadata
    row_bytes = 8
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        if group.num_rows:
            row_bytes = max(row_bytes, -(-group.total_byte_size // group.num_rows))
    return max(1, _BATCH_BYTES // row_bytes)
