"""Each training row's *source*: where it came from, for curricula that mix or choose between
sources. Two ways to have sources (:attr:`trainables.config.DataConfig.sources`):

- ``data.source_column`` (``kind: file``): a Parquet column (strings, or integers; no nulls)
  or a 1-D ``.npz`` array (strings or integers, one value per row) naming each row's source.
  It is not a feature. With ``data.paths`` the train and holdout files need it; a val or
  test file may hold it (then checked by the same rules, and not a feature) or not.
- ``data.noisy_source: f`` (classification data): after the split, ``round(f * n_train)``
  training rows (holdout rows included in the draw) get a label drawn uniformly from
  ``0..C-1`` and form source ``noisy``, the rest source ``clean``. The rows are a seeded
  permutation of the training rows and the labels a seeded draw (both seeded by
  ``[split_seed, _NOISY_SALT]``): a function of the data config alone, so the teacher and
  every student see the same labels. A drawn label equals the true one with probability
  ``1/C``, so about ``f * (1 - 1/C)`` of the training labels are actually wrong. Validation
  and test rows are untouched.

A source is a name of the *training* rows (holdout included): a value only val or test rows
hold is no source. Names are sorted (by name for strings; integers by value, then written
as ``str(value)``), and a row's source code is its name's index: :attr:`Splits.source_train`
and :attr:`Splits.source_names`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from trainables.data._base import DataError, Splits

NOISY_NAMES = ("clean", "noisy")
_NOISY_SALT = 0x5A1C  # the noisy rows' seed beside split_seed: not the seeded split's stream
MAX_SOURCES = 10_000  # distinct source values a column may hold: sources, not row ids
_ALLOWED = "strings or integers naming each row's source"
_STRING, _INTEGER = "string", "integer"


# --- data.source_column ------------------------------------------------------------------


class SourceTable:
    """The distinct values of ``data.source_column`` met so far, over every file of the
    dataset: a value's code is its order of first appearance (:meth:`codes`). All values
    are of one family, strings or integers; the first file read decides which."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.values: list[Any] = []
        self._index: dict[Any, int] = {}
        self.family: str | None = None
        self._first: str = ""  # the file that decided the family

    def agree(self, family: str | None, subject: str, kind: str) -> None:
        """Refuse a column or array of ``family`` (string, integer, or None: another kind of
        values, described as ``kind``) that is not a source or differs from the files read
        before."""
        if family is None:
            raise DataError(f"{subject} holds {kind} values; allowed: {_ALLOWED}")
        if self.family is None:
            self.family, self._first = family, subject
        elif family != self.family:
            raise DataError(
                f"{subject} holds {family} values but {self._first} holds {self.family} "
                "values; every file's source column needs the same kind of values"
            )

    def codes(self, values: np.ndarray, subject: str) -> np.ndarray:
        """Each of ``values`` (a 1-D array of str or int) as its code (int32)."""
        if len(values) == 0:
            return np.zeros(0, dtype=np.int32)
        distinct, inverse = np.unique(values, return_inverse=True)
        local = np.empty(len(distinct), dtype=np.int32)
        for i, value in enumerate(distinct.tolist()):
            code = self._index.get(value)
            if code is None:
                if len(self.values) >= MAX_SOURCES:
                    raise DataError(
                        f"{subject} holds more than {MAX_SOURCES:,} distinct values; a source "
                        "names a group of rows (a dataset, a domain), not a row"
                    )
                code = self._index[value] = len(self.values)
                self.values.append(value)
            local[i] = code
        return local[inverse.reshape(-1)]


def parquet_source_type(table: SourceTable, schema: Any, file: str, required: bool) -> bool:
    """Check the source column of a Parquet file's Arrow ``schema``: there (when
    ``required``), holding strings or integers; return whether the file has it."""
    import pyarrow as pa

    name = table.name
    if name not in schema.names:
        if not required:
            return False
        raise DataError(
            f"data.source_column: {name!r} is not a column of {file} (columns: "
            f"{', '.join(schema.names)}); name a column of {_ALLOWED}"
        )
    arrow_type = schema.field(name).type
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    subject = f"data.source_column: column {name!r} of {file}"
    family = (
        _STRING
        if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)
        else _INTEGER
        if pa.types.is_integer(arrow_type)
        else None
    )
    table.agree(family, subject, str(arrow_type))
    return True


def parquet_source_codes(table: SourceTable, column: Any, file: str, start: int) -> np.ndarray:
    """A batch of the Parquet source column (an Arrow array; ``start``: its first row in the
    file) as codes; a null is refused."""
    import pyarrow as pa

    subject = f"data.source_column: column {table.name!r} of {file}"
    if column.null_count:
        row = int(np.argmax(column.is_null().to_numpy(zero_copy_only=False)))
        raise DataError(
            f"{subject} has a null at row {start + row}; every row needs a source, a string or "
            "an integer"
        )
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    values = column.to_numpy(zero_copy_only=False)
    if table.family == _STRING:
        values = values.astype(str)
    return table.codes(values, subject)


def npz_source_type(
    table: SourceTable, arrays: dict[str, Any], file: str, rows: int, required: bool
) -> bool:
    """Check the source array of a .npz (``arrays``: name -> header with ``shape`` and
    ``dtype``; ``rows``: rows of ``x``): there (when ``required``), 1-D, one value per row,
    strings or integers; return whether the file has it."""
    name = table.name
    if name in ("x", "y"):
        raise DataError(
            f"data.source_column: {name!r} is the features or labels array; name a separate "
            f"array of {_ALLOWED}"
        )
    if name not in arrays:
        if not required:
            return False
        raise DataError(
            f"data.source_column: {name!r} is not an array of {file} (arrays: "
            f"{', '.join(arrays)}); name an array of {_ALLOWED}"
        )
    array = arrays[name]
    subject = f"data.source_column: array {name!r} of {file}"
    if array.dtype.hasobject:
        raise DataError(
            f"{subject} holds Python objects (dtype object), which need pickle (not allowed); "
            f"allowed: {_ALLOWED} (a str or int array)"
        )
    family = {"U": _STRING, "S": _STRING, "i": _INTEGER, "u": _INTEGER}.get(array.dtype.kind)
    table.agree(family, subject, f"dtype {array.dtype}")
    if len(array.shape) != 1 or array.shape[0] != rows:
        raise DataError(
            f"{subject} has shape {array.shape}; need a 1-D array of one value per row of "
            f"'x' ({rows} rows)"
        )
    return True


def npz_source_codes(table: SourceTable, values: np.ndarray, file: str, start: int) -> np.ndarray:
    """A batch of a .npz source array as codes (bytes are read as UTF-8)."""
    subject = f"data.source_column: array {table.name!r} of {file}"
    if values.dtype.kind == "S":
        try:
            values = np.char.decode(values, "utf-8")
        except UnicodeDecodeError:
            raise DataError(
                f"{subject} holds bytes that are not UTF-8 text in rows {start}..."
                f"{start + len(values) - 1}; allowed: {_ALLOWED}"
            ) from None
    return table.codes(values, subject)


# --- data.noisy_source -------------------------------------------------------------------


def noisy_rows(fraction: float, train_rows: int) -> int:
    """The training rows ``data.noisy_source`` makes noisy: ``round(fraction * train_rows)``,
    which must leave each of the sources clean and noisy a row."""
    count = round(fraction * train_rows)
    if not 1 <= count <= train_rows - 1:
        which = "no" if count < 1 else "every"
        raise DataError(
            f"data.noisy_source: {fraction} of the {train_rows} training rows makes {which} "
            "row noisy; each of the sources 'clean' and 'noisy' needs a training row: "
            f"choose a fraction between {1 / train_rows:.3g} and {1 - 1 / train_rows:.3g}"
        )
    return count


def noisy_names(data: Any, train_rows: int) -> tuple[str, ...] | None:
    """The source names of ``data.noisy_source`` (checking its row count), or None without
    it: for the driver's check (:class:`~trainables.data.DataInfo`)."""
    if data.noisy_source is None:
        return None
    noisy_rows(data.noisy_source, train_rows)
    return NOISY_NAMES


def with_noisy_source(splits: Splits, data: Any) -> Splits:
    """``splits`` with ``data.noisy_source`` applied (unchanged without it): the noisy
    training rows' labels drawn again uniformly from ``0..C-1``, ``source_train`` 1 on them
    and 0 elsewhere, ``source_names`` ``("clean", "noisy")``."""
    fraction = data.noisy_source
    if fraction is None:
        return splits
    if splits.y_train is None:
        raise unlabelled(data)
    n_train = len(splits.y_train)
    count = noisy_rows(fraction, n_train)
    rng = np.random.default_rng([data.split_seed, _NOISY_SALT])
    rows = rng.permutation(n_train)[:count]
    y_train = splits.y_train.copy()
    y_train[rows] = rng.integers(0, splits.num_classes, size=count, dtype=np.int64)
    source = np.zeros(n_train, dtype=np.int64)
    source[rows] = 1
    return dataclasses.replace(
        splits, y_train=y_train, source_train=source, source_names=NOISY_NAMES
    )


def unlabelled(data: Any) -> DataError:
    """The refusal of ``data.noisy_source`` on data that turned out to be token sequences
    (a ``module`` dataset's; the configuration refuses the token kinds)."""
    given = (
        f"data.factory {data.factory!r}" if data.kind == "module" else f"data.kind {data.kind!r}"
    )
    return DataError(
        f"data.noisy_source: {data.noisy_source} needs labelled data; {given} gives token "
        "sequences (no labels to make noisy)"
    )
