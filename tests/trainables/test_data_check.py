"""A user's data file is checked before anything starts (``check_data``), and a trial's
loader (``load_splits``) applies the same rules: every bad file is refused with one line
naming the field, the file, the column or array and the problem."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainables.config import DataConfig
from trainables.data import DataError, check_data, load_splits

ROWS = 30


def _x(rows=ROWS, features=3, dtype=np.float32):
    return np.random.default_rng(0).normal(size=(rows, features)).astype(dtype)


def _y(rows=ROWS, classes=3):
    return np.arange(rows) % classes


def _npz(**arrays):
    def write(path):
        np.savez(path, **arrays)

    return ".npz", write


def _parquet(columns):
    def write(path):
        pq.write_table(pa.table(columns), path)

    return ".parquet", write


def _with(array, row, column, value):
    array = array.copy()
    array[row, column] = value
    return array


def _truncated(suffix, write):
    def write_half(path):
        write(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    return suffix, write_half


def _text(suffix):
    return suffix, lambda path: path.write_text("f0,f1,label\n1,2,0\n")


def _features(x=None, **more):
    x = _x() if x is None else x
    return {f"f{i}": x[:, i] for i in range(x.shape[1])} | more


# (id, file, DataConfig fields, fragments the one-line message must hold)
BAD = [
    # .npz
    ("npz-nan", _npz(x=_with(_x(), 7, 2, np.nan), y=_y()), {},
     ["data.path: ", "array 'x' has NaN at row 7, column 2", "finite"]),
    ("npz-inf", _npz(x=_with(_x(), 4, 0, -np.inf), y=_y()), {}, ["array 'x' has -inf at row 4"]),
    ("npz-beyond-float32", _npz(x=_with(_x(dtype=np.float64), 3, 1, 1e39), y=_y()), {},
     ["array 'x' has 1e+39 at row 3, column 1", "float32"]),
    ("npz-no-y", _npz(x=_x()), {}, ["data.path: ", "array 'y' is missing", "arrays: x"]),
    ("npz-no-x", _npz(y=_y()), {}, ["array 'x' is missing"]),
    ("npz-object-x", _npz(x=np.array([[1, "a"]] * ROWS, dtype=object), y=_y()), {},
     ["array 'x' holds Python objects", "pickle"]),
    ("npz-string-x", _npz(x=np.array([["a", "b"]] * ROWS), y=_y()), {},
     ["array 'x' must be numeric", "<U1"]),
    ("npz-float-y", _npz(x=_x(), y=_y() + 0.5), {},
     ["array 'y'", "labels must be integers", "float64"]),
    ("npz-2d-y", _npz(x=_x(), y=np.stack([_y(), _y()], axis=1)), {},
     ["array 'y' must be 1-D", "(30, 2)"]),
    ("npz-mismatched-lengths", _npz(x=_x(), y=_y(ROWS - 1)), {},
     ["array 'x' has 30 rows but array 'y' has 29 labels"]),
    ("npz-0-rows", _npz(x=np.zeros((0, 3), np.float32), y=np.zeros(0, np.int64)), {},
     ["data.path: ", "has 0 rows; need at least 10"]),
    ("npz-9-rows", _npz(x=_x(9), y=_y(9)), {}, ["has 9 rows; need at least 10"]),
    ("npz-no-features", _npz(x=np.zeros((ROWS, 0)), y=_y()), {}, ["array 'x' has no features"]),
    ("npz-one-class", _npz(x=_x(), y=np.full(ROWS, 2)), {},
     ["array 'y'", "every label is 2 (one class)"]),
    ("npz-gaps", _npz(x=_x(), y=np.array([3, 7, 100] * 10)), {},
     ["array 'y'", "(3, 7, 100)", "missing 0, 1, 2, 4, 5 and 93 more",
      "np.unique(y, return_inverse=True)"]),
    ("npz-2**40", _npz(x=_x(), y=np.array([0, 1, 2**40] * 10)), {},
     ["array 'y'", "label 1099511627776 at row 2", "MAX_CLASSES = 100,000"]),
    ("npz-negative", _npz(x=_x(), y=_y() - 1), {}, ["array 'y'", "label -1 at row 0 is negative"]),
    ("npz-truncated", _truncated(*_npz(x=_x(), y=_y())), {},
     ["data.path: ", "is not a readable .npz file"]),
    ("npz-not-a-zip", _text(".npz"), {}, ["is not a readable .npz file"]),
    ("npz-difficulty-missing", _npz(x=_x(), y=_y()), {"difficulty_column": "d"},
     ["data.difficulty_column: 'd' is not an array", "arrays: x, y"]),
    ("npz-difficulty-length", _npz(x=_x(), y=_y(), d=np.ones(ROWS + 1)),
     {"difficulty_column": "d"}, ["data.difficulty_column: ", "array 'd'", "(31,)", "30 rows"]),
    ("npz-difficulty-nan", _npz(x=_x(), y=_y(), d=np.r_[np.ones(ROWS - 1), np.nan]),
     {"difficulty_column": "d"}, ["data.difficulty_column: ", "array 'd'", "nan at row 29"]),
    # .parquet
    ("parquet-string-feature", _parquet(_features(name=["a"] * ROWS, label=_y())), {},
     ["data.path: ", "feature column 'name' must be numeric", "got string"]),
    ("parquet-nan", _parquet(_features(_with(_x(), 5, 1, np.nan), label=_y())), {},
     ["data.path: ", "feature column 'f1' has NaN at row 5"]),
    ("parquet-null-feature", _parquet(_features(label=_y()) | {"f0": [1.0] * 12 + [None] * 18}),
     {}, ["feature column 'f0' has a null at row 12"]),
    ("parquet-no-label", _parquet(_features(target=_y())), {},
     ["data.label_column: 'label' is not a column", "columns: f0, f1, f2, target"]),
    ("parquet-float-label", _parquet(_features(label=_y() + 0.5)), {},
     ["data.label_column: ", "column 'label'", "labels must be integers", "double"]),
    ("parquet-null-label", _parquet(_features(label=[0, 1, None] * 10)), {},
     ["data.label_column: ", "column 'label'", "null at row 2"]),
    ("parquet-one-class", _parquet(_features(y=np.zeros(ROWS, np.int64))),
     {"label_column": "y"}, ["data.label_column: ", "column 'y'", "one class"]),
    ("parquet-gaps", _parquet(_features(label=np.array([3, 7, 100] * 10))), {},
     ["data.label_column: ", "column 'label'", "missing 0, 1, 2",
      "np.unique(y, return_inverse=True)"]),
    ("parquet-2**40", _parquet(_features(label=np.array([0, 2**40, 1] * 10))), {},
     ["column 'label'", "label 1099511627776 at row 1", "MAX_CLASSES"]),
    ("parquet-0-rows", _parquet({"f0": pa.array([], pa.float32()), "label": pa.array([], pa.int64())}),
     {}, ["data.path: ", "has 0 rows; need at least 10"]),
    ("parquet-9-rows", _parquet(_features(_x(9), label=_y(9))), {}, ["has 9 rows"]),
    ("parquet-no-features", _parquet({"label": _y()}), {}, ["has no feature columns"]),
    ("parquet-truncated", _truncated(*_parquet(_features(label=_y()))), {},
     ["data.path: ", "is not a readable Parquet file"]),
    ("parquet-csv", _text(".parquet"), {}, ["is not a readable Parquet file"]),
    ("parquet-difficulty-string", _parquet(_features(label=_y(), d=["x"] * ROWS)),
     {"difficulty_column": "d"}, ["data.difficulty_column: ", "column 'd'", "numeric", "string"]),
    ("parquet-difficulty-inf", _parquet(_features(label=_y(), d=[1.0] * 29 + [np.inf])),
     {"difficulty_column": "d"}, ["data.difficulty_column: ", "column 'd'", "inf at row 29"]),
    ("parquet-difficulty-is-label", _parquet(_features(label=_y())),
     {"difficulty_column": "label"}, ["data.difficulty_column: 'label' is data.label_column"]),
    # splits
    ("split-no-val-rows", _npz(x=_x(), y=_y()), {"val_fraction": 0.01},
     ["data.val_fraction: 0.01 of 30 rows rounds to 0 rows"]),
    ("split-no-test-rows", _npz(x=_x(), y=_y()), {"test_fraction": 0.01},
     ["data.test_fraction: 0.01 of 30 rows rounds to 0 rows"]),
    ("split-no-train-rows", _npz(x=_x(10), y=_y(10)), {"val_fraction": 0.49, "test_fraction": 0.49},
     ["data.val_fraction: 0.49 and data.test_fraction 0.49 of 10 rows leave no training rows"]),
]  # fmt: skip


def _config(tmp_path, case, fields):
    suffix, write = case
    path = tmp_path / f"data{suffix}"
    write(path)
    return DataConfig(kind="file", path=str(path), **fields)


@pytest.mark.parametrize(("name", "case", "fields", "fragments"), BAD, ids=[b[0] for b in BAD])
def test_bad_file_is_refused_with_one_line_naming_the_problem(
    tmp_path, name, case, fields, fragments
):
    cfg = _config(tmp_path, case, fields)
    with pytest.raises(DataError) as refused:
        check_data(cfg)
    message = str(refused.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
    if not name.startswith("split-") and name != "parquet-difficulty-is-label":
        assert repr(cfg.path) in message  # the file, by the path the spec gave


@pytest.mark.parametrize(
    ("case", "fields", "fragments"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_a_trials_loader_refuses_it_with_the_same_message(tmp_path, case, fields, fragments):
    cfg = _config(tmp_path, case, fields)
    with pytest.raises(DataError) as checked:
        check_data(cfg)
    with pytest.raises(DataError) as loaded:
        load_splits(cfg)
    assert str(loaded.value) == str(checked.value)


def test_row_numbers_count_from_the_start_of_the_file_across_batches(tmp_path, monkeypatch):
    from trainables.data import _check

    monkeypatch.setattr(_check, "_BATCH_BYTES", 64)  # a few rows per batch
    x = _with(_x(), 23, 1, np.inf)
    y = _y()
    y[27] = -5
    np.savez(tmp_path / "d.npz", x=x, y=y)
    pq.write_table(pa.table(_features(x, label=y)), tmp_path / "d.parquet")
    for name in ("d.npz", "d.parquet"):
        with pytest.raises(DataError, match="inf at row 23"):
            check_data(DataConfig(kind="file", path=str(tmp_path / name)))
    x[23, 1] = 0.0
    np.savez(tmp_path / "d.npz", x=x, y=y)
    with pytest.raises(DataError, match="label -5 at row 27 is negative"):
        check_data(DataConfig(kind="file", path=str(tmp_path / "d.npz")))


def test_fortran_order_npz_is_read_row_by_row(tmp_path, monkeypatch):
    from trainables.data import _check

    monkeypatch.setattr(_check, "_BATCH_BYTES", 64)
    x = np.asfortranarray(_x())
    np.savez(tmp_path / "ok.npz", x=x, y=_y())
    splits = load_splits(DataConfig(kind="file", path=str(tmp_path / "ok.npz"), standardize=False))
    rows = np.concatenate([splits.x_train, splits.x_val, splits.x_test])
    assert sorted(map(tuple, rows)) == sorted(map(tuple, np.ascontiguousarray(x)))
    np.savez(tmp_path / "bad.npz", x=np.asfortranarray(_with(x, 17, 2, np.nan)), y=_y())
    with pytest.raises(DataError, match="NaN at row 17, column 2"):
        check_data(DataConfig(kind="file", path=str(tmp_path / "bad.npz")))


@pytest.mark.parametrize(
    "dtype", [np.bool_, np.int8, np.uint16, np.int64, np.float16, np.float32, np.float64]
)
def test_numeric_features_and_integer_labels_of_any_width_are_accepted(tmp_path, dtype):
    x = (_x() > 0) if dtype is np.bool_ else (_x() * 10).astype(dtype)
    y = _y(classes=4).astype(np.uint8)
    np.savez_compressed(tmp_path / "d.npz", x=x, y=y, d=np.linspace(0, 1, ROWS))
    pq.write_table(pa.table(_features(x, label=y, d=np.arange(ROWS))), tmp_path / "d.parquet")
    for name in ("d.npz", "d.parquet"):
        cfg = DataConfig(kind="file", path=str(tmp_path / name), difficulty_column="d")
        check_data(cfg)
        splits = load_splits(cfg.model_copy(update={"standardize": False}))
        assert splits.num_classes == 4 and splits.num_features == 3
        assert splits.x_train.dtype == np.float32 and splits.y_train.dtype == np.int64
        assert len(splits.difficulty_train) == len(splits.y_train) == 18


def test_generated_data_is_described_without_generating_it():
    digits = check_data(DataConfig(kind="digits"))
    assert (digits.example_shape, digits.num_classes, digits.rows) == ((64,), 10, 1797)
    parity = check_data(DataConfig(kind="sparse_parity", n_bits=20, train_size=100))
    assert (parity.example_shape, parity.num_classes, parity.rows) == ((20,), 2, 100 + 2 * 4096)
    assert not digits.tokens and not parity.tokens
