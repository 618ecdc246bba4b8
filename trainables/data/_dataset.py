"""A user's map-style dataset (``data.kind: module``).

``data.factory`` (``"package.module:function"``) is imported and called with ``data.kwargs``
where the trial runs; it returns a map-style ``torch.utils.data.Dataset`` (anything with
``__len__`` and ``__getitem__``). Its items decide the task's data:

- ``(x, label)`` pairs: classification. ``x`` is numeric of one shape for every item (the
  example shape; ``data.shape`` may reshape it), ``label`` an integer class index ``0..C-1``.
  Every item is read once at load (features are standardised on the training split as for
  files, when ``data.standardize``).
- a 1-D integer sequence (tensor, array or list), the same length for every item: token data
  (``tokens=True``). Items are read on demand, a batch at a time; ids must lie in ``[0, V)``.
  ``V`` is ``data.vocab_size``, else the dataset's ``vocab_size`` attribute, else the
  largest id + 1 (a pass over every item); ``data.pad_id`` says which id is padding.

The split is the seeded permutation files use. :func:`dataset_info` calls the factory and
reads item 0; it reads every item (one at a time, keeping only labels or the largest id)
only to count classes or the vocabulary when neither ``data.vocab_size`` nor a dataset
attribute (``num_classes``, ``classes``, ``vocab_size``) gives it. No torch import is needed:
items are converted with ``np.asarray``.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainables.data._base import (
    DataError,
    DataInfo,
    Splits,
    example_shape,
    inferred_vocabulary,
    seeded_split,
    split_features,
    split_sizes,
    too_few_rows,
)
from trainables.data._rows import DatasetRows
from trainables.data._sources import noisy_names, unlabelled


@dataclass(frozen=True)
class _Items:
    """A dataset opened and its item 0 read: token sequences or ``(x, label)`` pairs, and the
    shape of a sequence or of ``x``."""

    dataset: Any
    spec: str
    rows: int
    tokens: bool
    shape: tuple[int, ...]


def dataset_info(data: Any) -> DataInfo:
    """Import and call the factory, read item 0 (and, when the count of classes or ids is not
    declared, every item's label or ids, one at a time)."""
    items = _open(data)
    train_rows, _, _ = split_sizes(items.rows, data.val_fraction, data.test_fraction)
    if items.tokens:
        if data.noisy_source is not None:
            raise unlabelled(data)
        vocab = _vocabulary(items, data)
        pad = _pad_id(items, data, vocab)
        return DataInfo(items.shape, True, vocab, vocab, pad, items.rows)
    labels = np.fromiter((label for _, _, label in _pairs(items)), np.int64, count=items.rows)
    shape = example_shape(data.shape, items.shape)
    return DataInfo(
        shape, False, _classes(items, labels), None, None, items.rows,
        source_names=noisy_names(data, train_rows),
    )  # fmt: skip


def load_dataset(data: Any) -> Splits:
    """The dataset's splits: token items as on-demand row stores, pairs read into memory."""
    items = _open(data)
    if items.tokens:
        return _token_splits(items, data)
    x, y = _read_pairs(items)
    shape = example_shape(data.shape, items.shape)
    splits = split_features(
        x, y, None, shape=shape, val_fraction=data.val_fraction,
        test_fraction=data.test_fraction, seed=data.split_seed, standardize=data.standardize,
    )  # fmt: skip
    return dataclasses.replace(splits, num_classes=_classes(items, y))


# --- opening ------------------------------------------------------------------------------


def open_factory(spec: str, kwargs: dict[str, Any]) -> Any:
    """Import ``"package.module:function"`` and call it with ``kwargs``."""
    module_name, colon, name = spec.partition(":")
    if not colon or not module_name or not name:
        raise DataError(f"data.factory: {spec!r} must be 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an import runs user code: any error is the user's to see
        raise DataError(
            f"data.factory: {spec!r} cannot be imported ({type(exc).__name__}: {_reason(exc)}); "
            "the factory is imported where the trial runs, so its package must be importable "
            "there (installed, or shipped in the job's runtime_env)"
        ) from exc
    factory = getattr(module, name, None)
    if not callable(factory):
        raise DataError(f"data.factory: {spec!r}: module {module_name!r} has no function {name!r}")
    try:
        return factory(**kwargs)
    except Exception as exc:
        raise DataError(
            f"data.factory: {spec!r} raised {type(exc).__name__}: {_reason(exc)} (called with "
            f"data.kwargs {kwargs})"
        ) from exc


def _open(data: Any) -> _Items:
    spec = data.factory
    dataset = open_factory(spec, dict(data.kwargs))
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise DataError(
            f"data.factory: {spec!r} returned a {type(dataset).__name__}, not a map-style "
            "torch.utils.data.Dataset (it needs __len__ and __getitem__; an IterableDataset "
            "cannot be split)"
        )
    rows = len(dataset)
    if rows == 0:
        raise DataError(f"data.factory: {spec!r} returned an empty dataset")
    too_few_rows(f"data.factory: {spec!r}", rows)
    item = _item(dataset, 0, spec)
    if isinstance(item, (tuple, list)) and not _is_sequence_of_ids(item):
        if len(item) != 2:
            raise DataError(
                f"data.factory: item 0 of {spec!r} is a {type(item).__name__} of {len(item)} "
                "values; items must be (x, label) pairs or 1-D token sequences"
            )
        x = _features(item[0], 0, spec)
        _label(item[1], 0, spec)
        return _Items(dataset, spec, rows, False, x.shape or (1,))
    ids = _ids(item, 0, spec)
    return _Items(dataset, spec, rows, True, ids.shape)


def _is_sequence_of_ids(item: Any) -> bool:
    """A plain list of ints is a token sequence; a tuple or list of two arrays is a pair."""
    return isinstance(item, list) and all(isinstance(v, (int, np.integer)) for v in item)


def _item(dataset: Any, index: int, spec: str) -> Any:
    try:
        return dataset[index]
    except Exception as exc:
        raise DataError(
            f"data.factory: item {index} of {spec!r} cannot be read ({type(exc).__name__}: "
            f"{_reason(exc)})"
        ) from exc


def _features(value: Any, index: int, spec: str) -> np.ndarray:
    x = np.asarray(value)
    if x.dtype.kind not in "biuf":
        raise DataError(
            f"data.factory: x of item {index} of {spec!r} must be numeric, got dtype {x.dtype}"
        )
    return x


def _label(value: Any, index: int, spec: str) -> int:
    label = np.asarray(value)
    if label.ndim != 0 or label.dtype.kind not in "iu":
        raise DataError(
            f"data.factory: label of item {index} of {spec!r} must be an integer class index, "
            f"got {label.dtype} of shape {label.shape}"
        )
    if label < 0:
        raise DataError(
            f"data.factory: label {int(label)} of item {index} of {spec!r} is negative; labels "
            "must be the class indices 0..C-1"
        )
    return int(label)


def _ids(value: Any, index: int, spec: str) -> np.ndarray:
    ids = np.asarray(value)
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise DataError(
            f"data.factory: item {index} of {spec!r} has shape {ids.shape} and dtype "
            f"{ids.dtype}; a token item must be a 1-D integer sequence (or give (x, label) "
            "pairs)"
        )
    if len(ids) == 0:
        raise DataError(f"data.factory: item {index} of {spec!r} is an empty sequence")
    return ids


def _reason(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= 120 else text[:117] + "..."


# --- (x, label) pairs ---------------------------------------------------------------------


def _pairs(items: _Items) -> Any:
    """Each item's ``(index, x, label)``, checked (pairs, one shape, finite, labels >= 0)."""
    for index in range(items.rows):
        item = _item(items.dataset, index, items.spec)
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise DataError(
                f"data.factory: item {index} of {items.spec!r} is not an (x, label) pair like "
                "item 0"
            )
        x = _features(item[0], index, items.spec)
        if (x.shape or (1,)) != items.shape:
            raise DataError(
                f"data.factory: x of item {index} of {items.spec!r} has shape {x.shape} but "
                f"item 0's has {items.shape}; every item must have the same shape"
            )
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise DataError(
                f"data.factory: x of item {index} of {items.spec!r} is not finite; features "
                "must be finite"
            )
        yield index, x, _label(item[1], index, items.spec)


def _read_pairs(items: _Items) -> tuple[np.ndarray, np.ndarray]:
    x = np.empty((items.rows, math.prod(items.shape)), dtype=np.float32)
    y = np.empty(items.rows, dtype=np.int64)
    for index, features, label in _pairs(items):
        x[index], y[index] = features.reshape(-1), label
    _two_classes(items, y)
    return x, y


def _classes(items: _Items, labels: np.ndarray) -> int:
    """The number of classes: the dataset's declared count (every label must lie below it),
    else the largest label + 1. One rule for the check and the load."""
    counted = _two_classes(items, labels)
    declared = _declared_classes(items.dataset)
    if declared is None:
        return counted
    if counted > declared:
        index = int(np.argmax(labels >= declared))
        raise DataError(
            f"data.factory: label {int(labels[index])} of item {index} of {items.spec!r} is >= "
            f"the {declared} classes the dataset declares (num_classes / classes)"
        )
    return declared


def _two_classes(items: _Items, labels: np.ndarray) -> int:
    classes = int(labels.max()) + 1
    if len(np.unique(labels)) < 2:
        raise DataError(
            f"data.factory: every label of {items.spec!r} is {labels[0]} (one class); need at "
            "least 2"
        )
    return classes


def _declared_classes(dataset: Any) -> int | None:
    """Classes a dataset declares: an int ``num_classes``, or the length of a ``classes``
    list (torchvision's); None when it declares neither."""
    declared = getattr(dataset, "num_classes", None)
    if isinstance(declared, (int, np.integer)) and not isinstance(declared, bool):
        return int(declared)
    classes = getattr(dataset, "classes", None)
    if isinstance(classes, (list, tuple)):
        return len(classes)
    return None


# --- token sequences ----------------------------------------------------------------------


def _vocabulary(items: _Items, data: Any) -> int:
    """``data.vocab_size``, the dataset's ``vocab_size``, or the largest id + 1: one pass over
    every item either way, so an id outside a declared vocabulary stops the sweep here."""
    declared = next(
        (int(v) for v in (data.vocab_size, getattr(items.dataset, "vocab_size", None))
         if v is not None), None,
    )  # fmt: skip
    field = "data.vocab_size" if data.vocab_size is not None else "the dataset's vocab_size"
    highest = 0
    for index in range(items.rows):
        ids = _sequence(items, index)
        if ids.min() < 0:
            raise DataError(
                f"data.factory: item {index} of {items.spec!r} holds token id {ids.min()}; "
                "ids must be in [0, vocab_size)"
            )
        highest = max(highest, int(ids.max()))
        if declared is not None and highest >= declared:
            raise DataError(
                f"{field}: token id {highest} in item {index} of {items.spec!r} is >= "
                f"vocab_size {declared}"
            )
    return declared if declared is not None else inferred_vocabulary(highest, repr(items.spec))


def _sequence(items: _Items, index: int) -> np.ndarray:
    ids = _ids(_item(items.dataset, index, items.spec), index, items.spec)
    if ids.shape != items.shape:
        raise DataError(
            f"data.factory: item {index} of {items.spec!r} has shape {ids.shape} but item 0 has "
            f"{items.shape}; every item must have the same shape"
        )
    return ids


def _pad_id(items: _Items, data: Any, vocab: int) -> int | None:
    if data.pad_id is not None and data.pad_id >= vocab:
        raise DataError(
            f"data.pad_id: {data.pad_id} is outside the vocabulary 0..{vocab - 1} of "
            f"{items.spec!r}; set data.vocab_size above it"
        )
    return data.pad_id


@dataclass(frozen=True)
class _IdRange:
    """Checks each gathered batch of a dataset's token ids lies in ``[0, vocab)`` (the ids
    are not all read up front when the vocabulary is declared). Picklable, unlike a closure."""

    vocab: int
    spec: str

    def __call__(self, batch: np.ndarray, rows: np.ndarray) -> None:
        bad = (batch < 0) | (batch >= self.vocab)
        if bad.any():
            row, column = np.argwhere(bad)[0]
            raise DataError(
                f"data.vocab_size: token id {batch[row, column]} in item {rows[row]} of "
                f"{self.spec!r} is outside [0, {self.vocab})"
            )


def _token_splits(items: _Items, data: Any) -> Splits:
    vocab = _vocabulary(items, data)
    pad = _pad_id(items, data, vocab)
    check = _IdRange(vocab, items.spec)
    train, val, test = seeded_split(
        items.rows, data.val_fraction, data.test_fraction, data.split_seed
    )

    def rows(which: np.ndarray) -> DatasetRows:
        return DatasetRows(items.dataset, which, items.shape, check=check)

    return Splits(
        x_train=rows(train),
        y_train=None,
        x_val=rows(val),
        y_val=None,
        x_test=rows(test),
        y_test=None,
        num_classes=vocab,
        tokens=True,
        vocab_size=vocab,
        pad_id=pad,
    )
