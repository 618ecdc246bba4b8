"""The data kinds' two entry points: :func:`load_splits` (a trial's three splits) and
:func:`check_data` (the driver's check before anything starts), each dispatching on
``data.kind``; plus the generated kinds (``digits``, ``sparse_parity``)."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from trainables.data._base import (
    DataError,
    DataInfo,
    Splits,
    example_shape,
    split_features,
    split_sizes,
)
from trainables.data._check import file_info, read_file
from trainables.data._dataset import dataset_info, load_dataset
from trainables.data._given import paths_of
from trainables.data._pcfg import load_pcfg, pcfg_info
from trainables.data._sources import noisy_names, with_noisy_source
from trainables.data._text import load_text, text_files, text_info
from trainables.data._tokens import load_tokens, tokens_info

DIGITS = DataInfo(example_shape=(64,), tokens=False, num_classes=10, vocab_size=None,
                  pad_id=None, rows=1797)  # fmt: skip


def load_splits(cfg: Any) -> Splits:
    """Load the dataset ``cfg`` (a :class:`~trainables.config.DataConfig`) and split it into
    train / validation / test, deterministically.

    The split of a table (``digits``, ``file``, ``tokens``, ``text``, ``module``) is a seeded
    permutation (same ``split_seed`` -> same split on every node), unless the user gives the
    split (``file`` and ``tokens``: ``data.split_column`` or ``data.paths``; see
    :mod:`trainables.data._given`); generated kinds draw each split from ``split_seed``.
    Standardisation uses the training split's mean and standard deviation only. Files are
    checked on the way, by the rules of :func:`check_data`. The training rows' sources
    (``data.source_column``, ``data.noisy_source``; :mod:`trainables.data._sources`) are
    set here, so every consumer sees the same rows, sources and (noisy) labels.
    """
    return with_noisy_source(_load(cfg), cfg)


def _load(cfg: Any) -> Splits:
    """The splits of ``cfg``'s kind, before ``data.noisy_source``."""
    kind = cfg.kind
    if kind == "sparse_parity":
        return sparse_parity(
            n_bits=cfg.n_bits, k=cfg.k, train_size=cfg.train_size,
            holdout_size=cfg.holdout_size, label_noise=cfg.label_noise, seed=cfg.split_seed,
        )  # fmt: skip
    loaders = {"tokens": load_tokens, "text": load_text, "pcfg": load_pcfg, "module": load_dataset}
    if kind in loaders:
        return loaders[kind](cfg)
    if kind == "digits":
        _no_difficulty(cfg)
        x, y = _load_digits()
        difficulty, natural, given, sources = None, DIGITS.example_shape, None, None
    elif kind == "file":
        table = read_file(cfg)  # checks it
        x, y, difficulty, natural = table.x, table.y, table.difficulty, table.example_shape
        given, sources = table.split, table.source
    else:
        raise ValueError(f"data.kind: {kind!r} is not a data kind")
    return split_features(
        x, y, difficulty, shape=example_shape(cfg.shape, natural),
        val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.split_seed,
        standardize=cfg.standardize, given=given, sources=sources,
    )  # fmt: skip


def check_data(data: Any) -> DataInfo:
    """Check ``data`` (a :class:`~trainables.config.DataConfig`) before anything starts and
    say what it holds; raise :class:`DataError` (one line naming the field and the value)
    for the first problem. Keeps nothing big: files are read in a streaming pass or in
    chunks, generated data is not generated, a ``module`` dataset is asked for its length
    and its first item."""
    kind = data.kind
    if kind == "digits":
        _no_difficulty(data)
        shape = example_shape(data.shape, DIGITS.example_shape)
        train_rows, _, _ = split_sizes(DIGITS.rows, data.val_fraction, data.test_fraction)
        return DataInfo(
            shape, False, DIGITS.num_classes, None, None, DIGITS.rows,
            source_names=noisy_names(data, train_rows),
        )  # fmt: skip
    if kind == "sparse_parity":
        rows = data.train_size + 2 * data.holdout_size
        return DataInfo(
            (data.n_bits,), False, 2, None, None, rows,
            source_names=noisy_names(data, data.train_size),
        )  # fmt: skip
    checks = {"file": file_info, "tokens": tokens_info, "text": text_info, "pcfg": pcfg_info,
              "module": dataset_info}  # fmt: skip
    if kind not in checks:
        raise ValueError(f"data.kind: {kind!r} is not a data kind")
    return checks[kind](data)


def _no_difficulty(data: Any) -> None:
    if data.difficulty_column is not None:
        raise DataError(
            f"data.difficulty_column: {data.difficulty_column!r}: digits has no difficulty column"
        )


def sparse_parity(
    *, n_bits: int, k: int, train_size: int, holdout_size: int, label_noise: float, seed: int
) -> Splits:
    """(n, k) sparse parity: x uniform in {-1, +1}^n, y = 1 when the product of the first k
    coordinates is -1 (an odd number of -1s). A finite training set (so a teacher's logits on
    it can be banked); label noise flips training labels only; validation and test are clean.
    """
    if not 1 <= k <= n_bits:
        raise ValueError(f"data.k must be in [1, n_bits={n_bits}], got {k}")
    rng = np.random.default_rng([seed, 0x9A11])

    def draw(size: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=(size, n_bits))
        return x, (np.prod(x[:, :k], axis=1) < 0).astype(np.int64)

    x_train, y_train = draw(train_size)
    flip = rng.random(train_size) < label_noise
    y_train = np.where(flip, 1 - y_train, y_train)
    (x_val, y_val), (x_test, y_test) = draw(holdout_size), draw(holdout_size)
    return Splits(x_train, y_train, x_val, y_val, x_test, y_test, num_classes=2)


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits (1797 8x8 images, 10 classes), read from the file scikit-learn
    ships without importing scikit-learn: its import costs ~1 s, paid by every fresh Tune
    trial actor before its first step."""
    package = importlib.util.find_spec("sklearn")  # locates the package, does not import it
    roots = package.submodule_search_locations if package else None
    shipped = Path(roots[0]) / "datasets" / "data" / "digits.csv.gz" if roots else None
    if shipped is None or not shipped.is_file():  # a layout we do not know: ask sklearn
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.data.astype(np.float32), bunch.target.astype(np.int64)
    with gzip.open(shipped, "rt") as rows:
        data = np.loadtxt(rows, delimiter=",", dtype=np.float32)
    return np.ascontiguousarray(data[:, :-1]), data[:, -1].astype(np.int64)


def data_files(data: Any) -> list[Path]:
    """The files ``data`` (a :class:`~trainables.config.DataConfig`) reads, in order: what a
    content hash of the data covers (generated data and ``module`` datasets read none). With
    ``data.paths``, every split's file (train, val, test, then holdout)."""
    if data.kind in ("file", "tokens") and data.paths is not None:
        return [Path(file) for _, file in paths_of(data.paths)]
    if data.kind in ("file", "tokens"):
        return [Path(data.path)]
    if data.kind == "text":
        return [Path(f) for f in text_files(data.path)[0]]
    return []
