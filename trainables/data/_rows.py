"""Row stores that gather on demand: an index view over an array or memory map
(:class:`IndexRows`), one over a user's map-style dataset (:class:`DatasetRows`), and the
rows of several stores one after another (:class:`ConcatRows`).

A split of a large token file is ``IndexRows(memmap, rows)``: nothing is copied until the
engine asks for a batch, ``store[indices]``, which reads only those rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from trainables.data._base import DataError


class RowStore(Protocol):
    """What the engine needs of a split's examples (an ``np.ndarray`` is one)."""

    shape: tuple[int, ...]
    dtype: np.dtype

    def __len__(self) -> int: ...

    def __getitem__(self, indices: np.ndarray) -> np.ndarray: ...


def _indices(key: Any, length: int) -> np.ndarray:
    """An index array from an int, a slice or an integer array (negative ints count back)."""
    if isinstance(key, slice):
        return np.arange(length, dtype=np.int64)[key]
    indices = np.asarray(key, dtype=np.int64)
    if indices.size and (indices.min() < -length or indices.max() >= length):
        raise IndexError(f"row index out of range for {length} rows")
    return np.where(indices < 0, indices + length, indices)


class IndexRows:
    """Rows ``base[rows[i]]`` of an array (often an ``np.memmap``), gathered on demand and
    returned as ``dtype`` (int64 for token ids). Gathers read the base in sorted row order
    (sequential reads of a memory map) and return rows in the order asked for. Pickles by
    file name when the base is a memory map, so shipping a split never copies the file."""

    def __init__(self, base: np.ndarray, rows: np.ndarray, dtype: Any = np.int64) -> None:
        self.base = base
        self.rows = np.asarray(rows, dtype=np.int64)
        self.dtype = np.dtype(dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.base.shape[1:])

    @property
    def ndim(self) -> int:
        return self.base.ndim

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: Any) -> np.ndarray:
        indices = _indices(key, len(self.rows))
        picked = self.rows[indices.reshape(-1)]
        order = np.argsort(picked, kind="stable")
        out = np.empty((len(picked), *self.base.shape[1:]), dtype=self.dtype)
        out[order] = self.base[picked[order]]
        return out.reshape(*indices.shape, *self.base.shape[1:])

    def __getstate__(self) -> dict[str, Any]:
        state = {"rows": self.rows, "dtype": self.dtype, "base": self.base}
        if isinstance(self.base, np.memmap) and self.base.filename is not None:
            base = self.base
            state["base"] = None
            state["memmap"] = {
                "filename": base.filename,
                "dtype": base.dtype,
                "shape": base.shape,
                "offset": base.offset,
                "order": "F" if base.flags.f_contiguous and not base.flags.c_contiguous else "C",
            }
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.rows, self.dtype, self.base = state["rows"], state["dtype"], state["base"]
        if self.base is None:
            self.base = np.memmap(mode="r", **state["memmap"])

    def __repr__(self) -> str:
        return f"IndexRows({len(self)} of {type(self.base).__name__} {self.base.shape})"


class ConcatRows:
    """The rows of several stores one after another (e.g. a training split's rows from the
    file of ``data.paths.train`` followed by its holdout rows from ``data.paths.holdout``),
    gathered on demand from each; every part has the same example shape and ``dtype``.
    Pickles as its parts (an :class:`IndexRows` over a memory map, by file name)."""

    def __init__(self, parts: list[Any]) -> None:
        assert parts and len({p.shape[1:] for p in parts}) == 1, "parts must share a shape"
        self.parts = list(parts)
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])
        self.dtype = np.dtype(self.parts[0].dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return (int(self.starts[-1]), *self.parts[0].shape[1:])

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, key: Any) -> np.ndarray:
        indices = _indices(key, len(self))
        flat = indices.reshape(-1)
        out = np.empty((len(flat), *self.shape[1:]), dtype=self.dtype)
        part_of = np.searchsorted(self.starts, flat, side="right") - 1
        for i, part in enumerate(self.parts):
            mine = np.flatnonzero(part_of == i)
            if len(mine):
                out[mine] = part[flat[mine] - self.starts[i]]
        return out.reshape(*indices.shape, *self.shape[1:])

    def __repr__(self) -> str:
        return f"ConcatRows({len(self)} rows of {len(self.parts)} stores)"


class DatasetRows:
    """Items ``dataset[rows[i]]`` of a user's map-style dataset (each a 1-D token sequence),
    gathered on demand and stacked as ``dtype``. ``check`` (if given) sees each gathered batch
    with the dataset indices of its rows, and raises for bad ones."""

    def __init__(
        self,
        dataset: Any,
        rows: np.ndarray,
        item_shape: tuple[int, ...],
        dtype: Any = np.int64,
        check: Callable[[np.ndarray, np.ndarray], None] | None = None,
    ) -> None:
        self.dataset = dataset
        self.rows = np.asarray(rows, dtype=np.int64)
        self.item_shape = tuple(item_shape)
        self.dtype = np.dtype(dtype)
        self.check = check

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.item_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.item_shape)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: Any) -> np.ndarray:
        indices = _indices(key, len(self.rows))
        picked = self.rows[indices.reshape(-1)]
        out = np.empty((len(picked), *self.item_shape), dtype=self.dtype)
        for i, row in enumerate(picked):
            item = np.asarray(self.dataset[int(row)])
            if item.shape != self.item_shape:
                raise DataError(
                    f"data.factory: item {row} has shape {item.shape} but item 0 has "
                    f"{self.item_shape}; every item must have the same shape"
                )
            out[i] = item
        if self.check is not None:
            self.check(out, picked)
        return out.reshape(*indices.shape, *self.item_shape)

    def __repr__(self) -> str:
        return f"DatasetRows({len(self)} of {type(self.dataset).__name__})"
