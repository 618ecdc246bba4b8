"""Splits the user gives (``data.split_column``, ``data.paths``) instead of the loader's seeded
one: every row lands in the split the user named, in file order (checked by content: a
feature or first token equal to the row's id); holdout rows join the training split and
``Splits.holdout`` marks them; every refusal is one line naming the field and the value."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from test_token_data import refused  # tests/trainables is on sys.path (tests/conftest.py)

from trainables.config import DataConfig
from trainables.data import (
    ConcatRows,
    IndexRows,
    check_data,
    data_files,
    load_splits,
)

# the split of row i of a 40-row file: 0..23 train, 24..31 val, 32..39 test, but interleaved
# (a row's split is not its position) and with 'holdout' rows where asked
LABELS = np.arange(40) % 3


def names(holdout: bool = False) -> list[str]:
    out = ["train"] * 24 + ["val"] * 8 + ["test"] * 8
    if holdout:
        out[3] = out[10] = out[17] = "holdout"
    order = np.random.default_rng(0).permutation(40)
    return [out[i] for i in order]


def rows_of(split: list[str], name: str) -> np.ndarray:
    return np.array([i for i, s in enumerate(split) if s == name], dtype=np.int64)


def spec_error(data: dict) -> list[str]:
    """The spec's error lines for a ``data`` section (as ``python -m search validate`` prints
    them)."""
    from search.spec import SpecError, validate_spec

    with pytest.raises(SpecError) as caught:
        validate_spec({"name": "s", "data": data})
    return str(caught.value).splitlines()


def every(store) -> np.ndarray:
    return store[np.arange(len(store))]


# -- file: .parquet with a split column -----------------------------------------------------


def parquet_table(tmp_path, split=None, name="d.parquet", *, rows=None, start=0, **more) -> str:
    """Columns ``id`` (the row's id, a feature), ``label`` (id % 3), ``split`` (if given)."""
    rows = len(split) if rows is None else rows
    ids = np.arange(start, start + rows, dtype=np.float64)
    columns = {"id": ids, "label": np.arange(start, start + rows) % 3}
    columns |= ({} if split is None else {"split": split}) | more
    pq.write_table(pa.table(columns), tmp_path / name)
    return str(tmp_path / name)


def test_split_column_puts_each_row_in_its_named_split_in_file_order(tmp_path):
    split = names()
    path = parquet_table(tmp_path, split, hard=np.arange(40) * 0.5)
    cfg = DataConfig(
        kind="file", path=path, split_column="split", standardize=False,
        difficulty_column="hard",
    )  # fmt: skip
    splits = load_splits(cfg)
    for name in ("train", "val", "test"):
        x, y = splits.split(name)
        want = rows_of(split, name)
        np.testing.assert_array_equal(x[:, 0], want)  # feature 'id' only: 'split' is not one
        np.testing.assert_array_equal(y, want % 3)
        np.testing.assert_array_equal(getattr(splits, f"difficulty_{name}"), want * 0.5)
    assert splits.example_shape == (1,) and splits.holdout is None
    info = check_data(cfg)
    assert (info.rows, info.holdout, info.num_classes, info.example_shape) == (40, None, 3, (1,))


def test_split_column_ignores_the_split_seed(tmp_path):
    path = parquet_table(tmp_path, names())
    one = load_splits(DataConfig(kind="file", path=path, split_column="split", split_seed=1))
    two = load_splits(DataConfig(kind="file", path=path, split_column="split", split_seed=2))
    np.testing.assert_array_equal(one.x_test, two.x_test)


def test_split_column_holdout_rows_follow_the_training_rows(tmp_path):
    split = names(holdout=True)
    path = parquet_table(tmp_path, split)
    cfg = DataConfig(kind="file", path=path, split_column="split", standardize=False)
    splits = load_splits(cfg)
    train, holdout = rows_of(split, "train"), rows_of(split, "holdout")
    np.testing.assert_array_equal(splits.x_train[:, 0], np.concatenate([train, holdout]))
    assert splits.holdout.dtype == np.int64
    np.testing.assert_array_equal(splits.x_train[splits.holdout, 0], holdout)
    np.testing.assert_array_equal(splits.holdout, np.arange(len(train), len(train) + 3))
    assert check_data(cfg).holdout == 3 and check_data(cfg).rows == 40


def test_standardisation_uses_the_user_training_split_only(tmp_path):
    split = names()
    path = parquet_table(tmp_path, split)
    splits = load_splits(DataConfig(kind="file", path=path, split_column="split"))
    train = rows_of(split, "train").astype(np.float64)
    want = (rows_of(split, "test") - train.mean()) / train.std()
    np.testing.assert_allclose(splits.x_test[:, 0], want, rtol=1e-6)


def test_split_column_dictionary_strings_are_read_too(tmp_path):
    split = names()
    table = pa.table({
        "id": np.arange(40.0), "label": LABELS,
        "split": pa.array(split).dictionary_encode(),
    })  # fmt: skip
    pq.write_table(table, tmp_path / "d.parquet")
    cfg = DataConfig(kind="file", path=str(tmp_path / "d.parquet"), split_column="split",
                     standardize=False)  # fmt: skip
    np.testing.assert_array_equal(load_splits(cfg).x_val[:, 0], rows_of(split, "val"))


# -- file: .npz and .parquet, one file per split ---------------------------------------------


def npz_split(tmp_path, name, ids, shape=(2,)) -> str:
    x = np.broadcast_to(np.asarray(ids, np.float32).reshape(-1, *[1] * len(shape)),
                        (len(ids), *shape))  # fmt: skip
    np.savez(tmp_path / name, x=x, y=np.asarray(list(ids), dtype=np.int64) % 3)
    return str(tmp_path / name)


def test_paths_npz_one_file_per_split(tmp_path):
    paths = {
        "train": npz_split(tmp_path, "tr.npz", range(0, 20)),
        "val": npz_split(tmp_path, "va.npz", range(100, 105)),
        "test": npz_split(tmp_path, "te.npz", [200, 202, 201]),  # no class 0: fine here
    }
    cfg = DataConfig(kind="file", paths=paths, standardize=False)
    splits = load_splits(cfg)
    np.testing.assert_array_equal(splits.x_train[:, 0], np.arange(20))
    np.testing.assert_array_equal(splits.x_val[:, 1], np.arange(100, 105))
    np.testing.assert_array_equal(splits.x_test[:, 0], [200, 202, 201])  # file order
    np.testing.assert_array_equal(splits.y_test, [200 % 3, 202 % 3, 201 % 3])
    assert splits.num_classes == 3 and splits.holdout is None
    info = check_data(cfg)
    assert (info.rows, info.num_classes, info.example_shape) == (28, 3, (2,))


def test_paths_npz_holdout_file_joins_the_training_split(tmp_path):
    paths = {
        "train": npz_split(tmp_path, "tr.npz", range(0, 20)),
        "val": npz_split(tmp_path, "va.npz", range(100, 105)),
        "test": npz_split(tmp_path, "te.npz", range(200, 205)),
        "holdout": npz_split(tmp_path, "ho.npz", range(300, 304)),
    }
    cfg = DataConfig(kind="file", paths=paths, standardize=False)
    splits = load_splits(cfg)
    np.testing.assert_array_equal(splits.x_train[:, 0], [*range(20), *range(300, 304)])
    np.testing.assert_array_equal(splits.x_train[splits.holdout, 0], np.arange(300, 304))
    assert check_data(cfg).holdout == 4 and check_data(cfg).rows == 34


def test_paths_parquet_val_and_test_may_each_miss_a_training_class(tmp_path):
    train = str(tmp_path / "tr.parquet")
    pq.write_table(pa.table({"id": np.arange(12.0), "label": np.arange(12) % 4}), train)
    val = str(tmp_path / "va.parquet")
    pq.write_table(pa.table({"id": [50.0, 51.0], "label": [3, 3]}), val)  # one class
    test = parquet_table(tmp_path, name="te.parquet", rows=4, start=60)  # no class 3
    cfg = DataConfig(kind="file", paths={"train": train, "val": val, "test": test},
                     standardize=False)  # fmt: skip
    splits = load_splits(cfg)
    assert splits.num_classes == 4
    np.testing.assert_array_equal(splits.x_train[:, 0], np.arange(12))
    np.testing.assert_array_equal(splits.x_val[:, 0], [50, 51])
    np.testing.assert_array_equal(splits.y_val, [3, 3])
    np.testing.assert_array_equal(splits.x_test[:, 0], [60, 61, 62, 63])
    info = check_data(cfg)
    assert (info.rows, info.num_classes, info.example_shape) == (18, 4, (1,))


# -- tokens: .npy, one file per split (memory-mapped) ----------------------------------------


def token_rows(first_ids, length=5, vocab=50) -> np.ndarray:
    """Rows whose first token is the row's id and the rest anything below ``vocab``."""
    first = np.asarray(first_ids)
    rest = np.random.default_rng(int(first[0])).integers(0, vocab, (len(first), length - 1))
    return np.column_stack([first, rest]).astype(np.int32)


def save_npy_splits(directory, arrays: dict) -> dict[str, str]:
    """Each split's token array as ``<directory>/<split>.npy``: ``data.paths``."""
    paths = {}
    for name, array in arrays.items():
        np.save(directory / f"{name}.npy", array)
        paths[name] = str(directory / f"{name}.npy")
    return paths


def test_paths_npy_tokens_stay_memory_mapped_per_split(tmp_path):
    arrays = {"train": token_rows(range(0, 20)), "val": token_rows(range(20, 26)),
              "test": token_rows(range(26, 31))}  # fmt: skip
    paths = save_npy_splits(tmp_path, arrays)
    cfg = DataConfig(kind="tokens", paths=paths, vocab_size=50)
    splits = load_splits(cfg)
    for name, array in arrays.items():
        store = getattr(splits, f"x_{name}")
        assert isinstance(store, IndexRows) and isinstance(store.base, np.memmap)
        assert Path(store.base.filename) == (tmp_path / f"{name}.npy").resolve()
        np.testing.assert_array_equal(every(store), array)
    copy = pickle.loads(pickle.dumps(splits.x_val))
    assert isinstance(copy.base, np.memmap)  # shipped by file name, not copied
    info = check_data(cfg)
    assert (info.rows, info.example_shape, info.vocab_size, info.holdout) == (31, (5,), 50, None)


def test_paths_npy_holdout_is_a_view_of_its_own_memmap(tmp_path):
    arrays = {"train": token_rows(range(0, 20)), "val": token_rows(range(20, 26)),
              "test": token_rows(range(26, 31)), "holdout": token_rows(range(31, 35))}  # fmt: skip
    paths = save_npy_splits(tmp_path, arrays)
    splits = load_splits(DataConfig(kind="tokens", paths=paths))
    train = splits.x_train
    assert isinstance(train, ConcatRows) and len(train) == 24
    assert all(isinstance(p, IndexRows) and isinstance(p.base, np.memmap) for p in train.parts)
    np.testing.assert_array_equal(every(train)[:, 0], np.arange(0, 24) + np.r_[[0] * 20, [11] * 4])
    np.testing.assert_array_equal(train[splits.holdout], arrays["holdout"])
    picked = np.array([22, 1, 23, 0])
    np.testing.assert_array_equal(train[picked][:, 0], [33, 1, 34, 0])  # order kept
    np.testing.assert_array_equal(train[5:7][:, 0], [5, 6])
    copy = pickle.loads(pickle.dumps(train))
    assert all(isinstance(p.base, np.memmap) for p in copy.parts)
    np.testing.assert_array_equal(every(copy), every(train))
    assert splits.vocab_size == int(max(a.max() for a in arrays.values())) + 1


def test_paths_npy_tokens_are_never_copied_whole(tmp_path, monkeypatch):
    import tracemalloc

    from trainables.data import _tokens

    monkeypatch.setattr(_tokens, "_BATCH_BYTES", 64 << 10)
    rng = np.random.default_rng(0)
    paths = {}
    for name, rows in [("train", 100_000), ("val", 500), ("test", 500), ("holdout", 500)]:
        np.save(tmp_path / f"{name}.npy", rng.integers(0, 1000, (rows, 32), dtype=np.int32))
        paths[name] = str(tmp_path / f"{name}.npy")  # train: 12.8 MB on disk
    cfg = DataConfig(kind="tokens", paths=paths, vocab_size=1000)
    tracemalloc.start()
    try:
        splits = load_splits(cfg)
        check_data(cfg)
        batch = splits.x_train[np.arange(99_900, 100_156)]  # train rows, then holdout rows
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak  # index arrays (8 bytes a row), chunks, a batch; never 12.8 MB
    train, holdout = (np.load(paths[n], mmap_mode="r") for n in ("train", "holdout"))
    np.testing.assert_array_equal(batch, np.concatenate([train[99_900:], holdout[:156]]))


def test_paths_max_examples_spreads_over_the_files_in_turn(tmp_path):
    arrays = {"train": token_rows(range(0, 60)), "val": token_rows(range(60, 80)),
              "test": token_rows(range(80, 100))}  # fmt: skip
    paths = save_npy_splits(tmp_path, arrays)
    splits = load_splits(DataConfig(kind="tokens", paths=paths, max_examples=50))
    assert (len(splits.x_train), len(splits.x_val), len(splits.x_test)) == (30, 10, 10)
    np.testing.assert_array_equal(every(splits.x_val)[:, 0], np.arange(60, 80, 2))
    np.save(tmp_path / "tiny.npy", token_rows([61]))  # one val row: 10 of 81 rows miss it
    tiny = {**paths, "val": str(tmp_path / "tiny.npy")}
    message = refused(DataConfig(kind="tokens", paths=tiny, max_examples=10))
    assert message.startswith(
        "data.max_examples: 10 rows spread evenly over the 81 of the data.paths files keep no "
        "'val' rows (the data has 1; kept: train 8, test 2)"
    ), message


# -- tokens: Parquet list<int> with a split column -------------------------------------------


def test_tokens_parquet_split_column_with_holdout(tmp_path):
    split = names(holdout=True)
    sequences = [[i] + [7] * (1 + i % 4) for i in range(40)]  # ragged: padded with V
    pq.write_table(pa.table({"tokens": sequences, "split": split}), tmp_path / "t.parquet")
    cfg = DataConfig(kind="tokens", path=str(tmp_path / "t.parquet"), split_column="split")
    splits = load_splits(cfg)
    assert splits.vocab_size == 40 and splits.pad_id == 40 and splits.example_shape == (5,)
    train, holdout = rows_of(split, "train"), rows_of(split, "holdout")
    np.testing.assert_array_equal(every(splits.x_train)[:, 0], np.concatenate([train, holdout]))
    np.testing.assert_array_equal(every(splits.x_test)[:, 0], rows_of(split, "test"))
    np.testing.assert_array_equal(splits.x_train[splits.holdout][:, 0], holdout)
    row = every(splits.x_val)[0]
    n = int(row[0])
    np.testing.assert_array_equal(row, [n] + [7] * (1 + n % 4) + [40] * (3 - n % 4))
    info = check_data(cfg)
    assert (info.rows, info.holdout, info.pad_id) == (40, 3, 40)


def test_tokens_parquet_paths_pad_to_the_longest_of_any_file(tmp_path):
    def write(name, sequences):
        pq.write_table(pa.table({"tokens": sequences}), tmp_path / name)
        return str(tmp_path / name)

    paths = {
        "train": write("tr.parquet", [[i, 1, 2] for i in range(12)]),  # not ragged itself
        "val": write("va.parquet", [[20, 1, 2, 3, 4]] * 2),
        "test": write("te.parquet", [[30, 1], [31, 1, 2]]),
    }
    splits = load_splits(DataConfig(kind="tokens", paths=paths))
    assert splits.example_shape == (5,) and splits.vocab_size == 32 and splits.pad_id == 32
    np.testing.assert_array_equal(splits.x_train[[3]], [[3, 1, 2, 32, 32]])
    np.testing.assert_array_equal(every(splits.x_test), [[30, 1, 32, 32, 32], [31, 1, 2, 32, 32]])


# -- refusals: the data --------------------------------------------------------------------


def test_a_split_column_without_test_rows_is_refused_naming_what_it_found(tmp_path):
    path = parquet_table(tmp_path, ["train"] * 30 + ["val"] * 10)
    message = refused(DataConfig(kind="file", path=path, split_column="split"))
    assert message == (
        f"data.split_column: column 'split' of {path!r} has no 'test' rows (values found: "
        "train 30, val 10); every one of train, val and test needs at least one row"
    )


def test_unknown_split_values_are_refused_with_the_first_few(tmp_path):
    split = names()
    split[5], split[9], split[12], split[30] = "dev", "Train", "dev", "validation"
    path = parquet_table(tmp_path, split)
    message = refused(DataConfig(kind="file", path=path, split_column="split"))
    assert message.startswith(f"data.split_column: column 'split' of {path!r} has 4 of 40 rows")
    assert "'dev', 'Train', 'validation'" in message and "(first at row 5)" in message
    assert "train, val, test or holdout" in message


def test_tokens_split_column_refusals(tmp_path):
    sequences = [[i, 1] for i in range(20)]
    pq.write_table(pa.table({"tokens": sequences, "split": ["train"] * 15 + [None] * 5,
                             "n": list(range(20))}), tmp_path / "t.parquet")  # fmt: skip
    path = str(tmp_path / "t.parquet")
    refused(DataConfig(kind="tokens", path=path, split_column="split"),
            "data.split_column: column 'split'", "has a null at row 15")  # fmt: skip
    refused(DataConfig(kind="tokens", path=path, split_column="n"),
            f"data.split_column: column 'n' of {path!r} holds int64 values, not the split "
            "names train, val, test or holdout")  # fmt: skip
    refused(DataConfig(kind="tokens", path=path, split_column="nope"),
            "data.split_column: 'nope' is not a column of", "columns: tokens, split, n")  # fmt: skip


def test_an_empty_split_file_is_refused_naming_the_split(tmp_path):
    paths = {
        "train": npz_split(tmp_path, "tr.npz", range(0, 20)),
        "val": npz_split(tmp_path, "va.npz", []),
        "test": npz_split(tmp_path, "te.npz", range(200, 205)),
    }
    message = refused(DataConfig(kind="file", paths=paths))
    assert message == (
        f"data.paths.val: {paths['val']!r} has no rows; every one of train, val and test "
        "needs at least one row"
    )
    np.save(tmp_path / "e.npy", np.zeros((0, 5), np.int32))
    np.save(tmp_path / "a.npy", token_rows(range(20)))
    np.save(tmp_path / "b.npy", token_rows(range(20, 25)))
    tokens = {"train": str(tmp_path / "a.npy"), "val": str(tmp_path / "b.npy"),
              "test": str(tmp_path / "e.npy")}  # fmt: skip
    refused(DataConfig(kind="tokens", paths=tokens), "data.paths.test: ", "has no rows")


def test_files_that_disagree_are_refused_naming_both(tmp_path):
    tr = npz_split(tmp_path, "tr.npz", range(20), shape=(2,))
    other = npz_split(tmp_path, "va.npz", range(5), shape=(3,))
    te = npz_split(tmp_path, "te.npz", range(30, 35), shape=(2,))
    message = refused(DataConfig(kind="file", paths={"train": tr, "val": other, "test": te}))
    assert message.startswith(f"data.paths.val: {other!r} array 'x' holds examples of shape (3,)")
    assert f"data.paths.train {tr!r}" in message and "same example shape" in message

    train = parquet_table(tmp_path, name="tr.parquet", rows=12)
    val = parquet_table(tmp_path, name="va.parquet", rows=3, start=20)
    more = parquet_table(tmp_path, name="te.parquet", rows=3, extra=np.zeros(3))
    message = refused(DataConfig(kind="file", paths={"train": train, "val": val, "test": more}))
    assert message == (
        f"data.paths.test: {more!r} has feature columns id, extra but data.paths.train "
        f"{train!r} has id; every split's file needs the same feature columns"
    )
    ints = str(tmp_path / "ints.parquet")
    pq.write_table(pa.table({"id": np.arange(3), "label": [0, 1, 2]}), ints)
    message = refused(DataConfig(kind="file", paths={"train": train, "val": ints, "test": val}))
    assert "data.paths.val" in message and "feature column 'id' holds integer values" in message

    np.save(tmp_path / "a.npy", token_rows(range(20), length=5))
    np.save(tmp_path / "b.npy", token_rows(range(5), length=6))
    np.save(tmp_path / "c.npy", token_rows(range(30, 35), length=5))
    tokens = {"train": str(tmp_path / "a.npy"), "val": str(tmp_path / "b.npy"),
              "test": str(tmp_path / "c.npy")}  # fmt: skip
    refused(DataConfig(kind="tokens", paths=tokens),
            "data.paths.val: ", "holds sequences of 6 tokens but data.paths.train",
            "same length")  # fmt: skip


def test_too_few_rows_in_all_the_files(tmp_path):
    paths = {
        name: npz_split(tmp_path, f"{name}.npz", range(3 * i, 3 * i + 3))
        for i, name in enumerate(("train", "val", "test"))
    }
    refused(DataConfig(kind="file", paths=paths), "data.paths: the files hold 9 rows in all")


# -- refusals: what would leak between the splits or leave a class untrained --------------


def labelled(tmp_path, name, labels, start=0) -> str:
    """A Parquet file of feature ``id`` (from ``start``) and the given labels."""
    ids = np.arange(start, start + len(labels), dtype=np.float64)
    pq.write_table(pa.table({"id": ids, "label": np.asarray(labels)}), tmp_path / name)
    return str(tmp_path / name)


def test_paths_val_or_test_labels_without_training_rows_are_refused(tmp_path):
    # the classes are those of all the files (0..14), but 10..14 have no training row
    paths = {
        "train": labelled(tmp_path, "tr.parquet", np.arange(20) % 10),
        "val": labelled(tmp_path, "va.parquet", np.arange(10), start=100),
        "test": labelled(tmp_path, "te.parquet", np.arange(5, 15), start=200),
    }
    message = refused(DataConfig(kind="file", paths=paths))
    assert message == (
        "data.paths.test: labels 10, 11, 12, 13, 14 do not occur in the training split "
        "(data.paths.train); every class of val and test needs training rows"
    )
    # the same seen from the training file: it lacks a class val has
    paths["train"] = labelled(tmp_path, "tr.parquet", np.arange(20) % 9)
    paths["test"] = labelled(tmp_path, "te.parquet", np.arange(9), start=200)
    message = refused(DataConfig(kind="file", paths=paths))
    assert message.startswith("data.paths.val: label 9 does not occur in the training split")
    many = {
        "train": npz_split(tmp_path, "tr.npz", range(0, 30)),  # labels 0, 1, 2 (id % 3)
        "val": npz_split(tmp_path, "va.npz", range(100, 105)),
        "test": str(tmp_path / "te.npz"),
    }
    np.savez(many["test"], x=np.zeros((9, 2)), y=np.arange(3, 12))
    refused(DataConfig(kind="file", paths=many),
            "data.paths.test: labels 3, 4, 5, 6, 7 and 4 more do not occur")  # fmt: skip


def test_holdout_rows_are_not_training_rows_for_the_class_check(tmp_path):
    paths = {
        "train": labelled(tmp_path, "tr.parquet", np.arange(20) % 2),
        "val": labelled(tmp_path, "va.parquet", [0, 1, 2], start=100),
        "test": labelled(tmp_path, "te.parquet", [0, 1], start=200),
        "holdout": labelled(tmp_path, "ho.parquet", [2, 2], start=300),
    }
    refused(DataConfig(kind="file", paths=paths),
            "data.paths.val: label 2 does not occur in the training split")  # fmt: skip


def test_split_column_val_or_test_labels_without_training_rows_are_refused(tmp_path):
    split = ["train"] * 20 + ["val"] * 10 + ["test"] * 10
    labels = np.r_[np.arange(20) % 10, np.arange(10), np.arange(5, 15)]
    path = parquet_table(tmp_path, split, rows=40)
    pq.write_table(pq.read_table(path).set_column(1, "label", pa.array(labels)), path)
    message = refused(DataConfig(kind="file", path=path, split_column="split"))
    assert message == (
        f"data.split_column: labels 10, 11, 12, 13, 14 of the 'test' rows of column 'split' "
        f"of {path!r} do not occur in the training split (its 'train' rows); every class of "
        "val and test needs training rows"
    )
    # accepted: val without class 5 (a training class), classes 10..14 on holdout rows only
    labels[25] = 0
    split[20:] = ["val"] * 10 + ["test"] * 5 + ["holdout"] * 5
    pq.write_table(pa.table({"id": np.arange(40.0), "label": labels, "split": split}), path)
    splits = load_splits(DataConfig(kind="file", path=path, split_column="split"))
    assert splits.num_classes == 15 and len(splits.holdout) == 5


def test_a_file_given_for_two_splits_is_refused_naming_both_fields(tmp_path, monkeypatch):
    tr = npz_split(tmp_path, "tr.npz", range(0, 20))
    va = npz_split(tmp_path, "va.npz", range(100, 105))
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    again = "../tr.npz"  # the training file under another name
    message = refused(DataConfig(kind="file", paths={"train": tr, "val": va, "test": again}))
    assert message == (
        "data.paths.test: '../tr.npz' is also the file of data.paths.train; the same rows in "
        "two splits leak one into the other: give each split its own file"
    )
    copy = tmp_path / "copy.npz"
    copy.write_bytes(Path(va).read_bytes())
    message = refused(DataConfig(kind="file", paths={"train": tr, "val": va, "test": str(copy)}))
    assert message == (
        f"data.paths.test: {str(copy)!r} holds the same bytes as data.paths.val {va!r}; the "
        "same rows in two splits leak one into the other: give each split its own file"
    )
    hold = {"train": tr, "val": va, "test": npz_split(tmp_path, "te.npz", range(200, 205)),
            "holdout": tr}  # fmt: skip
    refused(DataConfig(kind="file", paths=hold),
            "data.paths.holdout: ", "is also the file of data.paths.train")  # fmt: skip
    np.save(tmp_path / "a.npy", token_rows(range(20)))
    np.save(tmp_path / "b.npy", token_rows(range(20, 25)))
    tokens = {"train": str(tmp_path / "a.npy"), "val": str(tmp_path / "b.npy"),
              "test": str(tmp_path / "a.npy")}  # fmt: skip
    refused(DataConfig(kind="tokens", paths=tokens),
            "data.paths.test: ", "is also the file of data.paths.train")  # fmt: skip


def test_a_numeric_split_column_is_refused_naming_it_not_a_feature(tmp_path):
    split = names()
    path = parquet_table(tmp_path, split, f0=np.arange(40.0))
    message = refused(DataConfig(kind="file", path=path, split_column="f0"))
    assert message == (
        f"data.split_column: column 'f0' of {path!r} holds double values, not the split names "
        "train, val, test or holdout"
    )


# -- pandas index columns are not features -------------------------------------------------


def pandas_file(tmp_path, name, ids, *, split=None, index=None) -> str:
    """A Parquet file written by pandas from a filtered frame: columns ``id`` (a feature),
    ``label`` (id % 3), ``split`` (if given), and the frame's index (``__index_level_0__``,
    or the named column ``index``)."""
    import pandas as pd

    ids = np.asarray(ids)
    frame = pd.DataFrame({"id": ids.astype(np.float64), "label": ids % 3}, index=ids * 7 + 1)
    if split is not None:
        frame["split"] = split
    if index is not None:
        frame.index.name = index
    frame.to_parquet(tmp_path / name)
    return str(tmp_path / name)


def test_a_pandas_index_is_not_a_feature_of_one_file(tmp_path):
    path = pandas_file(tmp_path, "d.parquet", np.arange(0, 80, 2))  # not a range: a column
    schema = pq.read_schema(path)
    assert "__index_level_0__" in schema.names  # what the loader must leave out
    cfg = DataConfig(kind="file", path=path, standardize=False)
    splits = load_splits(cfg)
    assert splits.example_shape == (1,) and check_data(cfg).example_shape == (1,)
    np.testing.assert_array_equal(
        np.sort(np.concatenate([splits.x_train, splits.x_val, splits.x_test])[:, 0]),
        np.arange(0, 80, 2),
    )
    named = pandas_file(tmp_path, "n.parquet", np.arange(0, 80, 2), index="row")
    assert "row" in pq.read_schema(named).names
    assert check_data(DataConfig(kind="file", path=named)).example_shape == (1,)


def test_a_pandas_index_is_not_a_feature_of_a_user_split(tmp_path):
    split = names()
    path = pandas_file(tmp_path, "d.parquet", np.arange(40), split=split)
    splits = load_splits(DataConfig(kind="file", path=path, split_column="split",
                                    standardize=False))  # fmt: skip
    assert splits.example_shape == (1,)
    np.testing.assert_array_equal(splits.x_val[:, 0], rows_of(split, "val"))
    paths = {
        "train": pandas_file(tmp_path, "tr.parquet", np.arange(0, 40, 2)),
        "val": pandas_file(tmp_path, "va.parquet", [101, 103, 105]),
        "test": pandas_file(tmp_path, "te.parquet", [201, 202, 204], index="row"),
    }
    splits = load_splits(DataConfig(kind="file", paths=paths, standardize=False))
    assert splits.example_shape == (1,)
    np.testing.assert_array_equal(splits.x_test[:, 0], [201, 202, 204])


def test_a_pandas_index_may_still_be_the_label_column(tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"id": np.arange(40.0), "label": np.arange(40) % 3}).set_index("label")
    frame.to_parquet(tmp_path / "d.parquet")
    splits = load_splits(DataConfig(kind="file", path=str(tmp_path / "d.parquet")))
    assert splits.example_shape == (1,) and splits.num_classes == 3


# -- refusals: the configuration (one spec line each) ----------------------------------------


def test_configuration_refusals_name_the_field(tmp_path):
    path = parquet_table(tmp_path, names())
    tr = npz_split(tmp_path, "tr.npz", range(20))
    np.save(tmp_path / "t.npy", token_rows(range(20)))
    npy = str(tmp_path / "t.npy")
    both = {"train": path, "val": path, "test": path}
    cases = {
        "data.split_column: 'split' needs a .parquet data.path; " + repr(tr):
            {"kind": "file", "path": tr, "split_column": "split"},
        "data.split_column: 'split' needs a .parquet data.path; " + repr(npy):
            {"kind": "tokens", "path": npy, "split_column": "split"},
        "data.path: not allowed together with data.paths":
            {"kind": "file", "path": path, "paths": both},
        "data.paths.test: required field is missing":
            {"kind": "file", "paths": {"train": path, "val": path}},
        "data.paths.val: file 'nope.parquet' does not exist":
            {"kind": "file", "paths": {**both, "val": "nope.parquet"}},
        f"data.paths.val: {tr!r} is .npz but train {path!r} is .parquet":
            {"kind": "file", "paths": {**both, "val": tr}},
        f"data.paths.test: {npy!r} must end in .npz or .parquet for kind 'file'":
            {"kind": "file", "paths": {**both, "test": npy}},
        "data.split_column: 'split' is not allowed together with data.paths":
            {"kind": "file", "paths": both, "split_column": "split"},
        "data.split_column: only allowed when kind is 'file' or 'tokens' (kind is 'digits')":
            {"kind": "digits", "split_column": "split"},
        "data.paths: only allowed when kind is 'file' or 'tokens' (kind is 'text')":
            {"kind": "text", "path": path, "paths": both},
        "data.split_column: 'label' is data.label_column":
            {"kind": "file", "path": path, "split_column": "label"},
        "data.test_fraction: 0.1 is not used when data.split_column gives the splits":
            {"kind": "file", "path": path, "split_column": "split", "test_fraction": 0.1},
        "data.val_fraction: 0.3 is not used when data.paths gives the splits":
            {"kind": "file", "paths": both, "val_fraction": 0.3},
    }  # fmt: skip
    for expected, data in cases.items():
        lines = spec_error(data)
        assert len(lines) == 1 and lines[0].startswith(expected), (lines, expected)
    unknown = spec_error({"kind": "file", "paths": {**both, "tset": path}})
    assert unknown == ["data.paths.tset: unknown key; allowed: holdout, test, train, val"]


def test_default_fractions_beside_a_user_split_are_accepted_and_recorded_as_unused(tmp_path):
    from trainables.config import settings

    path = parquet_table(tmp_path, names())
    cfg = DataConfig(kind="file", path=path, split_column="split", val_fraction=0.2)
    used = settings(cfg, "data.")
    assert used["data.val_fraction"] is None and used["data.test_fraction"] is None
    assert used["data.split_column"] == "split"
    with pytest.raises(ValidationError):
        DataConfig(kind="file", path=path, split_column="split", val_fraction=0.25)
    again = DataConfig.model_validate(cfg.model_dump())  # a trial's config, dumped and read
    assert again == cfg


# -- the teacher bank's key covers every file ------------------------------------------------


def test_every_file_of_paths_is_hashed_into_the_teacher_key(tmp_path):
    from search.spec import validate_spec
    from search.teacher import teacher_key

    paths = {
        "train": npz_split(tmp_path, "tr.npz", range(0, 20)),
        "val": npz_split(tmp_path, "va.npz", range(100, 105)),
        "test": npz_split(tmp_path, "te.npz", range(200, 205)),
    }
    spec = validate_spec({"name": "k", "data": {"kind": "file", "paths": paths}})
    assert [str(p) for p in data_files(spec.data)] == [paths["train"], paths["val"], paths["test"]]
    before = teacher_key(spec)
    npz_split(tmp_path, "te.npz", range(300, 305))  # same name, new contents
    assert teacher_key(spec) != before
    assert teacher_key(spec) == teacher_key(spec)


def test_the_default_teacher_key_changes_only_on_purpose():
    """The teacher key of the default digits spec, pinned: a change to it trains every user's
    teacher again. This version changed it on purpose (the transition's new fields); the
    unset user-split fields must not change it."""
    from search.spec import validate_spec
    from search.teacher import teacher_key

    spec = validate_spec({"name": "k", "data": {"kind": "digits"}})
    assert teacher_key(spec) == "7ea8ed0340e8671e"
