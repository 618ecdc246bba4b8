"""What every data kind shares: the error, the two result types (:class:`Splits` for a trial,
:class:`DataInfo` for the driver's check) and the one splitting rule.

Row stores: a split's examples are any object with ``__len__``, ``.shape``, ``.dtype`` and
``store[indices] -> np.ndarray`` (a copy of those rows, in that order): an ``np.ndarray``, or
an index view of :mod:`trainables.data._rows` over a memory map or a user's dataset. The
engine only ever gathers rows by index arrays, so a store never needs to be whole in memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

MIN_ROWS = 10  # examples a dataset needs in all (each split also needs one)


class DataError(ValueError):
    """Data a sweep cannot use; the message is one line naming the field (``data.path: ...``),
    the value (the file, column, array or setting) and what is allowed."""


@dataclass(frozen=True)
class Splits:
    """A dataset as train / validation / test row stores.

    ``x_*``: shape ``(n, *example_shape)``; float32 features or images, or token ids (gathered
    as int64, shape ``(n, L)``) when ``tokens``. ``y_*``: int64 class labels ``(n,)``, or None
    for token data (the targets are the tokens). ``num_classes``: the classes, or the
    vocabulary ``V`` for token data (real ids ``0..V-1``; ``pad_id`` marks padding, None when
    the data has none). ``holdout``: int64 positions *within the training split* of the rows
    the user reserved for training-time decisions (``data.split_column`` value ``holdout``,
    or ``data.paths.holdout``; they come after the training rows), None when the user
    reserved none. ``source_train``: int64 ``(n_train,)``, each training row's source (holdout
    rows included) as an index into ``source_names``, the sources' names (sorted: strings by
    name, integers by value written as ``str(value)``; ``("clean", "noisy")`` with
    ``data.noisy_source``); both None when the data has no sources (see
    :mod:`trainables.data._sources`).
    """

    x_train: Any
    y_train: np.ndarray | None
    x_val: Any
    y_val: np.ndarray | None
    x_test: Any
    y_test: np.ndarray | None
    num_classes: int
    # Optional per-example difficulty from the user's data (``data.difficulty_column``).
    difficulty_train: np.ndarray | None = None
    difficulty_val: np.ndarray | None = None
    difficulty_test: np.ndarray | None = None
    tokens: bool = False
    vocab_size: int | None = None
    pad_id: int | None = None
    holdout: np.ndarray | None = None
    source_train: np.ndarray | None = None
    source_names: tuple[str, ...] | None = None

    @property
    def example_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def num_features(self) -> int:
        return math.prod(self.example_shape)

    def split(self, name: str) -> tuple[Any, np.ndarray | None]:
        if name not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {name!r}")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")


@dataclass(frozen=True)
class DataInfo:
    """What the driver learns from checking the data (nothing big is kept): the example shape
    (for tokens ``(L,)``, the padded length), whether examples are token sequences, the
    classes (or ``V``), the vocabulary and padding id of token data, the examples in all
    (train + validation + test, holdout rows included), notes on what the loader leaves
    out, the rows the user reserved as holdout (None: none; see :attr:`Splits.holdout`), and
    the names of the training rows' sources (None: the data has none; see
    :attr:`Splits.source_names`)."""

    example_shape: tuple[int, ...]
    tokens: bool
    num_classes: int
    vocab_size: int | None
    pad_id: int | None
    rows: int
    notes: tuple[str, ...] = ()  # what the loader leaves out, for the driver to print
    holdout: int | None = None
    source_names: tuple[str, ...] | None = None


def split_sizes(rows: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """Rows of the (train, validation, test) splits; each must get at least one."""
    n_val, n_test = round(rows * val_fraction), round(rows * test_fraction)
    n_train = rows - n_val - n_test
    for field, size, fraction in [
        ("data.val_fraction", n_val, val_fraction),
        ("data.test_fraction", n_test, test_fraction),
    ]:
        if size < 1:
            raise DataError(
                f"{field}: {fraction} of {rows} rows rounds to 0 rows; each split needs at "
                "least one row: raise the fraction or add rows"
            )
    if n_train < 1:
        raise DataError(
            f"data.val_fraction: {val_fraction} and data.test_fraction {test_fraction} of "
            f"{rows} rows leave no training rows; lower them or add rows"
        )
    return n_train, n_val, n_test


def seeded_split(
    rows: int, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices of (train, validation, test): a seeded permutation cut in three, so the
    same ``split_seed`` gives the same split on every node."""
    order = np.random.default_rng(seed).permutation(rows)
    _, n_val, n_test = split_sizes(rows, val_fraction, test_fraction)
    val, test, train = np.split(order, [n_val, n_val + n_test])
    return train, val, test


def example_shape(shape: list[int] | None, natural: tuple[int, ...]) -> tuple[int, ...]:
    """The per-example shape: ``data.shape`` when given (it must hold the same values as the
    data's own ``natural`` shape), else ``natural``."""
    if shape is None:
        return tuple(natural)
    held, features = math.prod(shape), math.prod(natural)
    if held != features:
        raise DataError(
            f"data.shape: {list(shape)} holds {held} values, the examples have {features} features"
        )
    return tuple(shape)


def split_features(
    x: np.ndarray,
    y: np.ndarray,
    difficulty: np.ndarray | None,
    *,
    shape: tuple[int, ...],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    standardize: bool,
    given: Any = None,
    sources: tuple[np.ndarray, list[Any]] | None = None,
) -> Splits:
    """Split features ``x`` (``(n, d)``) and labels ``y`` (``(n,)``) by the seeded split, or
    by ``given`` (a :class:`~trainables.data._given.UserSplit`) when the user gave one;
    ``sources``: each row's source code ``(n,)`` and the values the codes stand for
    (``data.source_column``), which give the training rows' sources; standardise each
    feature with the training split's mean and standard deviation only (holdout rows
    included: they are training rows); reshape each example to ``shape``
    (``prod(shape) == d``)."""
    if given is None:
        train, val, test = seeded_split(len(y), val_fraction, test_fraction, seed)
        holdout = None
    else:
        train, val, test, holdout = given.train, given.val, given.test, given.holdout
    if standardize:
        mean = x[train].mean(axis=0)
        std = x[train].std(axis=0)
        std[std == 0] = 1.0
        x = (x - mean) / std
    x = x.astype(np.float32).reshape(len(x), *shape)
    source_train, source_names = None, None
    if sources is not None:
        source_train, source_names = training_sources(*sources, train)
    return Splits(
        x_train=x[train],
        y_train=y[train],
        x_val=x[val],
        y_val=y[val],
        x_test=x[test],
        y_test=y[test],
        num_classes=int(y.max()) + 1,
        difficulty_train=None if difficulty is None else difficulty[train],
        difficulty_val=None if difficulty is None else difficulty[val],
        difficulty_test=None if difficulty is None else difficulty[test],
        holdout=holdout,
        source_train=source_train,
        source_names=source_names,
    )


def training_sources(
    codes: np.ndarray, values: list[Any], train: np.ndarray
) -> tuple[np.ndarray, tuple[str, ...]]:
    """``(source_train, source_names)`` of the training rows ``train`` (indices into
    ``codes``, each row's code into ``values``): the sources the training rows hold, sorted
    (strings by name, integers by value), and each training row's index among them (int64).
    A value no training row holds is no source."""
    held = codes[train].astype(np.int64)
    assert (held >= 0).all(), "a training row without a source: the check refuses its file"
    used = np.unique(held)
    order = sorted(used.tolist(), key=lambda code: values[code])
    lookup = np.full(len(values), -1, dtype=np.int64)
    lookup[order] = np.arange(len(order), dtype=np.int64)
    return lookup[held], tuple(str(values[code]) for code in order)


def evenly(total: int, at_most: int | None) -> np.ndarray:
    """``min(total, at_most)`` indices of ``0..total-1`` spread evenly (deterministic, sorted):
    how ``data.max_examples`` picks rows or windows."""
    count = total if at_most is None else min(total, at_most)
    return (np.arange(count, dtype=np.int64) * total) // count


def too_few_rows(subject: str, rows: int) -> None:
    """Refuse data with fewer than :data:`MIN_ROWS` examples."""
    if rows < MIN_ROWS:
        raise DataError(f"{subject} has {rows} rows; need at least {MIN_ROWS}")


MAX_VOCAB = 1_000_000  # data.vocab_size's bound: a larger vocabulary is a wrong id, not a model


def inferred_vocabulary(highest: int, subject: str) -> int:
    """The vocabulary ``highest + 1`` of token data that declares none, within the bounds
    ``data.vocab_size`` itself has (2..MAX_VOCAB): an id of 2**40 is a broken file, not a
    vocabulary to build a model for."""
    vocab = highest + 1
    if vocab < 2:
        raise DataError(
            f"data.vocab_size: every token id in {subject} is {highest}, a vocabulary of 1; "
            "a language model needs at least 2 tokens"
        )
    if vocab > MAX_VOCAB:
        raise DataError(
            f"data.vocab_size: token id {highest} in {subject} would need a vocabulary of "
            f"{vocab:,}, above the {MAX_VOCAB:,} allowed; check the ids, or set data.vocab_size"
        )
    return vocab
