from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainables.data._check import read_file, split_sizes


@dataclass(frozen=True)
class Splits:
    """Features (float32, shape ``(n, d)``) and integer labels (int64, shape ``(n,)``)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    # Optional per-example difficulty from the user's data (``data.difficulty_column``).
    difficulty_train: np.ndarray | None = None
    difficulty_val: np.ndarray | None = None
    difficulty_test: np.ndarray | None = None

    @property
    def num_features(self) -> int:
        return int(self.x_train.shape[1])

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {name!r}")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")


def load_splits(
    *,
    kind: str,
    path: str | None = None,
    label_column: str = "label",
    difficulty_column: str | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    standardize: bool = True,
    n_bits: int = 50,
    k: int = 4,
    train_size: int = 100_000,
    holdout_size: int = 4096,
    label_noise: float = 0.0,
) -> Splits:
    """Load a dataset and split it into train / validation / test, deterministically.

    The split is a seeded permutation (same ``split_seed`` -> same split on every node).
    Standardisation uses the training split's mean and standard deviation only.
    """
    difficulty = None
    if kind == "sparse_parity":
        return sparse_parity(
            n_bits=n_bits, k=k, train_size=train_size, holdout_size=holdout_size,
            label_noise=label_noise, seed=split_seed,
        )  # fmt: skip
    if kind == "digits":
        if difficulty_column is not None:
            raise ValueError("data.difficulty_column: digits has no difficulty column")
        x, y = _load_digits()
    elif kind == "file":
        if path is None:
            raise ValueError("data.path is required when data.kind is 'file'")
        table = read_file(path, label_column, difficulty_column)  # checks it on the way
        x, y, difficulty = table.x, table.y, table.difficulty
    else:
        raise ValueError(f"data.kind must be 'digits' or 'file', got {kind!r}")
    return _split(x, y, difficulty, val_fraction, test_fraction, split_seed, standardize)


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


def _split(
    x: np.ndarray,
    y: np.ndarray,
    difficulty: np.ndarray | None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    standardize: bool,
) -> Splits:
    n = len(y)
    order = np.random.default_rng(seed).permutation(n)
    _, n_val, n_test = split_sizes(n, val_fraction, test_fraction)
    val, test, train = np.split(order, [n_val, n_val + n_test])
    if standardize:
        mean = x[train].mean(axis=0)
        std = x[train].std(axis=0)
        std[std == 0] = 1.0
        x = (x - mean) / std
    x = x.astype(np.float32)
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
    )
