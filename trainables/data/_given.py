"""Splits the user gives instead of the loader's seeded one (``data.split_column``,
``data.paths``): the split names, the checks of a split column's values, and the rows of
each split.

Either way every row carries a split *code* (its index in :data:`SPLITS`): read from the
Parquet column ``data.split_column``, or the split whose file of ``data.paths`` holds the
row (the files taken one after another, in the order of :data:`SPLITS`). Rows keep their
file order inside each split. The ``holdout`` rows (optional) join the training split after
its own rows: :attr:`UserSplit.holdout` says where they are in it, so a training-time
decision (RHO-LOSS's irreducible-loss model, a stage gate) can keep off them while the
teacher bank still covers them.

What a user's split must hold besides rows (:func:`distinct_files`, :func:`check_trained`):

- No file of ``data.paths`` twice (the same resolved path, or the same bytes under another
  name): the same rows in two splits would put training rows in the test set.
- Every class of the val and test rows has training rows (the ``train`` rows; holdout rows
  do not count, as a training-time decision may keep the student off them). A class with
  training rows but none in val or test is fine: a small val set may miss one.
"""

from __future__ import annotations

import filecmp
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainables.data._base import DataError

SPLITS = ("train", "val", "test", "holdout")  # a split's code is its index here
REQUIRED = SPLITS[:3]  # every one needs a row; holdout is optional
_EVERY = "every one of train, val and test needs at least one row"
_ALLOWED = "train, val, test or holdout"
_SHOWN = 3  # distinct bad values a message quotes
_SHOWN_LABELS = 5  # labels without training rows a message quotes


@dataclass(frozen=True)
class UserSplit:
    """Row indices (into the data as read: the file, or the files one after another) of each
    split, in file order. ``train`` holds the training rows, then the holdout rows;
    ``holdout``: int64 positions *within* ``train`` of the holdout rows, None when the user
    reserved none."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    holdout: np.ndarray | None

    @classmethod
    def from_codes(cls, codes: np.ndarray, rows: np.ndarray | None = None) -> UserSplit:
        """The split of rows whose codes are ``codes``; ``rows``: their indices in the data
        (default ``0..len(codes)-1``), when only some rows are kept (``data.max_examples``)."""
        if rows is None:
            rows = np.arange(len(codes), dtype=np.int64)
        rows = rows.astype(np.int64, copy=False)
        train, val, test, holdout = (rows[codes == code] for code in range(len(SPLITS)))
        if not len(holdout):
            return cls(train, val, test, None)
        positions = np.arange(len(train), len(train) + len(holdout), dtype=np.int64)
        return cls(np.concatenate([train, holdout]), val, test, positions)


def paths_of(paths: Any) -> list[tuple[str, str]]:
    """``(split, file)`` of ``data.paths`` (a :class:`~trainables.config.DataPaths`), in the
    order of :data:`SPLITS`, leaving out a holdout not given."""
    return [(name, getattr(paths, name)) for name in SPLITS if getattr(paths, name) is not None]


def distinct_files(paths: Any) -> None:
    """Refuse a file of ``data.paths`` given for two splits: the same resolved path, or a
    file with the same bytes (compared only when the sizes match, so distinct files cost a
    ``stat`` each). A file that cannot be read is left to its own pass to report."""
    seen: list[tuple[str, str, Path]] = []
    for name, file in paths_of(paths):
        path = Path(file).resolve()
        for earlier, earlier_file, earlier_path in seen:
            if path == earlier_path:
                same = f"{file!r} is also the file of data.paths.{earlier}"
            elif _same_bytes(path, earlier_path):
                same = f"{file!r} holds the same bytes as data.paths.{earlier} {earlier_file!r}"
            else:
                continue
            raise DataError(
                f"data.paths.{name}: {same}; the same rows in two splits leak one into the "
                "other: give each split its own file"
            )
        seen.append((name, file, path))


def _same_bytes(one: Path, other: Path) -> bool:
    try:
        return one.stat().st_size == other.stat().st_size and filecmp.cmp(one, other, shallow=False)
    except OSError:
        return False


def check_trained(
    present: dict[str, np.ndarray], subject: Callable[[str, str], str], training: str
) -> None:
    """Refuse val or test labels without a training row; a training label missing from val
    or test is fine (a small val set may miss a class). ``present``: split -> table of the
    labels its rows hold (the ``train`` rows are the training rows, not the holdout rows: a
    training-time decision may keep the student off those); ``subject(split, labels)``: the
    message's start, naming the field, the split and the labels; ``training``: what holds
    the training rows."""
    for name in REQUIRED[1:]:
        table = present.get(name)
        unseen = np.flatnonzero(table & ~present["train"]) if table is not None else ()
        if len(unseen):
            shown = ", ".join(str(v) for v in unseen[:_SHOWN_LABELS])
            if len(unseen) > _SHOWN_LABELS:
                shown += f" and {len(unseen) - _SHOWN_LABELS} more"
            labels, verb = (
                (f"labels {shown}", "do not occur")
                if len(unseen) > 1
                else (f"label {shown}", "does not occur")
            )
            raise DataError(
                f"{subject(name, labels)} {verb} in the training split ({training}); every "
                "class of val and test needs training rows"
            )


def codes_of_files(sizes: list[tuple[str, int]]) -> np.ndarray:
    """Each row's split code for files of ``(split, rows)`` read one after another."""
    return np.repeat(
        np.array([SPLITS.index(name) for name, _ in sizes], dtype=np.int8),
        [rows for _, rows in sizes],
    )


def empty_file(field: str, file: str) -> DataError:
    """A file of ``data.paths`` without rows."""
    if field.endswith(".holdout"):
        return DataError(
            f"{field}: {file} has no rows; a holdout file needs at least one (leave "
            "data.paths.holdout out for none)"
        )
    return DataError(f"{field}: {file} has no rows; {_EVERY}")


def found(counts: np.ndarray) -> str:
    """``train 800, val 200``: the splits with rows."""
    return ", ".join(f"{name} {int(n)}" for name, n in zip(SPLITS, counts, strict=True) if n)


def missing(counts: np.ndarray) -> str | None:
    """The first of train, val and test with no rows, or None."""
    return next((name for name, n in zip(REQUIRED, counts, strict=False) if n == 0), None)


def check_kept(data: Any, codes: np.ndarray, kept: np.ndarray, source: str) -> None:
    """Refuse a ``data.max_examples`` that keeps no row of a split the data itself has;
    ``source`` says where the splits come from (a column, or the files)."""
    counts = np.bincount(codes[kept], minlength=len(SPLITS))
    absent = missing(counts)
    if absent is not None:
        have = int(np.count_nonzero(codes == SPLITS.index(absent)))
        raise DataError(
            f"data.max_examples: {data.max_examples} rows spread evenly over the {len(codes)} "
            f"of {source} keep no {absent!r} rows (the data has {have}; kept: "
            f"{found(counts)}); raise data.max_examples"
        )


class SplitColumn:
    """The values of ``data.split_column`` met so far, batch by batch: the rows of each
    split, the rows with another value (and the first few such values), and, with ``keep``,
    each row's split code."""

    def __init__(self, name: str, file: str, *, keep: bool) -> None:
        self.name = name
        self.file = file
        self.subject = f"data.split_column: column {name!r} of {file}"
        self.keep = keep
        self.rows = 0
        self.counts = np.zeros(len(SPLITS), dtype=np.int64)
        self.bad_rows = 0
        self.first_bad: int | None = None
        self.bad_values: list[str] = []  # the first _SHOWN + 1 distinct, quoted
        self.codes: list[np.ndarray] = []

    def check_schema(self, schema: Any) -> None:
        """Refuse a file (its Arrow ``schema``) without the column, or whose column does not
        hold strings; checked before any other column, so a wrong name is reported as such,
        not as the feature or label problem it causes."""
        import pyarrow as pa

        if self.name not in schema.names:
            raise DataError(
                f"data.split_column: {self.name!r} is not a column of {self.file} (columns: "
                f"{', '.join(schema.names)})"
            )
        arrow_type = schema.field(self.name).type
        if pa.types.is_dictionary(arrow_type):
            arrow_type = arrow_type.value_type
        if not (pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)):
            raise DataError(
                f"{self.subject} holds {arrow_type} values, not the split names {_ALLOWED}"
            )

    def add(self, column: Any) -> np.ndarray:
        """Count one batch of the column (an Arrow array of strings); return each row's
        split code (-1: another value, refused by :meth:`finish`)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if column.null_count:
            row = int(np.argmax(column.is_null().to_numpy(zero_copy_only=False)))
            raise DataError(
                f"{self.subject} has a null at row {self.rows + row}; every row needs one of "
                f"{_ALLOWED}"
            )
        if pa.types.is_dictionary(column.type):
            column = column.dictionary_decode()
        found_at = pc.index_in(column, value_set=pa.array(SPLITS, column.type))
        codes = found_at.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int8)
        bad = codes < 0
        if bad.any():
            at = np.flatnonzero(bad)
            if self.first_bad is None:
                self.first_bad = self.rows + int(at[0])
            self.bad_rows += len(at)
            for value in pc.unique(column.take(pa.array(at[: 64 * _SHOWN]))).to_pylist():
                shown = repr(value) if len(value) <= 30 else repr(value[:27] + "...")
                if len(self.bad_values) <= _SHOWN and shown not in self.bad_values:
                    self.bad_values.append(shown)
        self.counts += np.bincount(codes[~bad], minlength=len(SPLITS))
        if self.keep:
            self.codes.append(codes)
        self.rows += len(codes)
        return codes

    def finish(self) -> np.ndarray | None:
        """Refuse other values and missing splits (once the whole column is read); return
        each row's split code (with ``keep``)."""
        if self.bad_rows:
            shown = ", ".join(self.bad_values[:_SHOWN])
            more = ", ..." if len(self.bad_values) > _SHOWN else ""
            raise DataError(
                f"{self.subject} has {self.bad_rows} of {self.rows} rows with a value other "
                f"than {_ALLOWED}: {shown}{more} (first at row {self.first_bad})"
            )
        absent = missing(self.counts)
        if absent is not None:
            raise DataError(
                f"{self.subject} has no {absent!r} rows (values found: "
                f"{found(self.counts) or 'none'}); {_EVERY}"
            )
        if not self.keep:
            return None
        return np.concatenate(self.codes) if self.codes else np.zeros(0, dtype=np.int8)

    @property
    def holdout(self) -> int | None:
        """Rows the column reserves as holdout (None: none)."""
        return int(self.counts[SPLITS.index("holdout")]) or None
