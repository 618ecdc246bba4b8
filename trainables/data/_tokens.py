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
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainables.data._base import (
    DataError,
    DataInfo,
    Splits,
    evenly,
    inferred_vocabulary,
    seeded_split,
    split_sizes,
    too_few_rows,
)
from trainables.data._rows import IndexRows

_BATCH_BYTES = 16 << 20  # bytes of token ids read per step of a pass


@dataclass(frozen=True)
class _Scan:
    """What one pass over the ids found: rows, padded length, id range, and (when loading a
    Parquet column) the padded ids themselves."""

    rows: int
    length: int
    lowest: int
    highest: int
    ragged: bool  # sequences of different lengths (padding needed)
    ids: np.ndarray | None = None


def tokens_info(data: Any) -> DataInfo:
    """Check a ``tokens`` dataset in a bounded-memory pass; keep nothing."""
    path = Path(data.path)
    if path.suffix == ".npy":
        scan = _npy_scan(path, data.vocab_size)
    else:
        scan = _parquet_scan(path, data, keep=False)
    vocab, pad = _vocabulary(data, scan, repr(str(path)))
    rows = len(evenly(scan.rows, data.max_examples))
    split_sizes(rows, data.val_fraction, data.test_fraction)
    return DataInfo((scan.length,), True, vocab, vocab, pad, rows)


def load_tokens(data: Any) -> Splits:
    """Load a ``tokens`` dataset (checking it on the way) as three index views."""
    path = Path(data.path)
    if path.suffix == ".npy":
        scan = _npy_scan(path, data.vocab_size)
        base = np.load(path, mmap_mode="r")
    else:
        scan = _parquet_scan(path, data, keep=True)
        base = scan.ids
    vocab, pad = _vocabulary(data, scan, repr(str(path)))
    rows = evenly(scan.rows, data.max_examples)
    train, val, test = seeded_split(
        len(rows), data.val_fraction, data.test_fraction, data.split_seed
    )
    if scan.ragged:
        base[base == _FILL] = pad  # a Parquet column, padded in memory
    return Splits(
        x_train=IndexRows(base, rows[train]),
        y_train=None,
        x_val=IndexRows(base, rows[val]),
        y_val=None,
        x_test=IndexRows(base, rows[test]),
        y_test=None,
        num_classes=vocab,
        tokens=True,
        vocab_size=vocab,
        pad_id=pad,
    )


def _vocabulary(data: Any, scan: _Scan, file: str) -> tuple[int, int | None]:
    """``(V, pad_id)``, checking ``data.pad_id`` against the vocabulary (the scans have
    checked the ids)."""
    vocab = data.vocab_size
    if vocab is None:
        vocab = inferred_vocabulary(scan.highest, file)
    pad = data.pad_id if data.pad_id is not None else (vocab if scan.ragged else None)
    if data.pad_id is not None and data.pad_id >= vocab:
        raise DataError(
            f"data.pad_id: {data.pad_id} is outside the vocabulary 0..{vocab - 1} of {file}; "
            "set data.vocab_size above it, or leave data.pad_id unset to pad with vocab_size"
        )
    return vocab, pad


# --- .npy ---------------------------------------------------------------------------------


def _npy_scan(path: Path, vocab_size: int | None) -> _Scan:
    """Header checks, then the id range in chunks of rows of the memory map (ids must be
    ``>= 0`` and, when given, ``< vocab_size``)."""
    file = repr(str(path))
    ids = _open_npy(path, file)
    rows, length = ids.shape
    too_few_rows(f"data.path: {file}", rows)
    if length == 0:
        raise DataError(f"data.path: {file} holds empty sequences (shape {ids.shape})")
    lowest, highest = None, None
    step = max(1, _BATCH_BYTES // (length * ids.dtype.itemsize))
    for start in range(0, rows, step):
        chunk = np.asarray(ids[start : start + step])
        low, high = int(chunk.min()), int(chunk.max())
        if low < 0:
            row, column = np.argwhere(chunk < 0)[0]
            raise DataError(
                f"data.path: token id {chunk[row, column]} in {file} (row {start + row}) is "
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


def _open_npy(path: Path, file: str) -> np.ndarray:
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
        raise DataError(f"data.path: {file} is not a readable .npy file ({reason})") from None
    dtype = np.dtype(dtype)
    if dtype.hasobject or dtype.kind not in "iu":
        raise DataError(
            f"data.path: {file} must hold integer token ids, got dtype {dtype}; save the "
            "array as an integer type, e.g. np.int32"
        )
    if len(shape) != 2:
        raise DataError(
            f"data.path: {file} must be a 2-D (rows, seq_len) array of token ids, got shape "
            f"{tuple(shape)}"
        )
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise DataError(f"data.path: {file} is not a readable .npy file ({reason})") from None


# --- .parquet -----------------------------------------------------------------------------

_FILL = -1  # where a Parquet row is padded, until the padding id is known


def _parquet_scan(path: Path, data: Any, *, keep: bool) -> _Scan:
    """One pass over the column, batch by batch; with ``keep``, also the ids, padded with
    ``_FILL`` to the longest sequence."""
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
        raise DataError(f"data.path: {file} is not a readable Parquet file ({reason})") from None
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
    try:
        for batch in reader.iter_batches(batch_size=_parquet_batch_rows(reader), columns=[name]):
            column = batch.column(0)
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
        raise DataError(f"data.path: {file} is not a readable Parquet file ({reason})") from None
    too_few_rows(f"data.path: {file}", rows)
    padded = None
    if keep:
        padded = _pad(np.concatenate(kept_lengths), kept_values, length, _id_dtype(highest))
    return _Scan(rows, length, lowest, highest, shortest < length, padded)


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
