"""Each training row's source: ``data.source_column`` (a Parquet column or .npz array, read
through a single file, ``data.split_column`` and ``data.paths``) and ``data.noisy_source``
(a seeded share of the training rows relabelled at random). Rows are told apart by a
feature ``id`` equal to the row's position in the file (``standardize: false``), so each
training row's source is checked against the value written for it; every refusal is one
line naming ``data.source_column`` (or ``data.noisy_source``), the value, the file and what
is allowed."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from test_token_data import refused  # tests/trainables is on sys.path (tests/conftest.py)

from trainables.config import DataConfig
from trainables.data import check_data, load_splits

ROWS = 40
NAMES = np.array(["web", "books", "code", "web"] * 10)  # row i's source (strings)
NUMBERS = np.array([10, 2, 300, 2] * 10)  # row i's source (integers)


def parquet(tmp_path, name="d.parquet", *, rows=ROWS, start=0, **more) -> str:
    """Columns ``id`` (the row's position: the one feature) and ``label`` (id % 3), plus
    ``more``."""
    ids = np.arange(start, start + rows)
    columns = {"id": ids.astype(np.float64), "label": ids % 3} | more
    pq.write_table(pa.table(columns), tmp_path / name)
    return str(tmp_path / name)


def npz(tmp_path, name="d.npz", *, rows=ROWS, start=0, **more) -> str:
    ids = np.arange(start, start + rows)
    np.savez(tmp_path / name, x=ids.astype(np.float32)[:, None], y=ids % 3, **more)
    return str(tmp_path / name)


def file_cfg(path, **fields) -> DataConfig:
    return DataConfig(kind="file", path=path, standardize=False, **fields)


def sources_of_rows(splits) -> np.ndarray:
    """Each training row's source name, by its code."""
    return np.array(splits.source_names)[splits.source_train]


def ids(splits) -> np.ndarray:
    return splits.x_train[:, 0].astype(np.int64)


# -- data.source_column ---------------------------------------------------------------------


def test_a_parquet_string_column_names_each_training_rows_source(tmp_path):
    cfg = file_cfg(parquet(tmp_path, src=NAMES), source_column="src")
    splits = load_splits(cfg)
    assert splits.source_names == ("books", "code", "web")  # sorted by name
    assert splits.source_train.dtype == np.int64
    assert splits.source_train.shape == (len(splits.x_train),)
    np.testing.assert_array_equal(sources_of_rows(splits), NAMES[ids(splits)])
    assert check_data(cfg).source_names == ("books", "code", "web")


def test_the_source_column_is_never_a_feature(tmp_path):
    plain = load_splits(file_cfg(parquet(tmp_path, "plain.parquet")))
    cfg = file_cfg(parquet(tmp_path, src=NAMES), source_column="src")
    assert load_splits(cfg).num_features == plain.num_features == 1
    assert check_data(cfg).example_shape == (1,)
    assert plain.source_train is None and plain.source_names is None
    assert check_data(file_cfg(parquet(tmp_path, "plain.parquet"))).source_names is None


def test_an_integer_column_names_sources_by_value_sorted_as_numbers(tmp_path):
    cfg = file_cfg(parquet(tmp_path, src=NUMBERS.astype(np.int32)), source_column="src")
    splits = load_splits(cfg)
    assert splits.source_names == ("2", "10", "300")  # not "10" < "2" < "300"
    np.testing.assert_array_equal(sources_of_rows(splits), NUMBERS[ids(splits)].astype(str))
    assert check_data(cfg).source_names == ("2", "10", "300")


def test_a_dictionary_encoded_string_column_is_read_too(tmp_path):
    table = pa.table({"id": np.arange(40.0), "label": np.arange(40) % 3,
                      "src": pa.array(NAMES).dictionary_encode()})  # fmt: skip
    pq.write_table(table, tmp_path / "d.parquet")
    splits = load_splits(file_cfg(str(tmp_path / "d.parquet"), source_column="src"))
    np.testing.assert_array_equal(sources_of_rows(splits), NAMES[ids(splits)])


@pytest.mark.parametrize("values", [NAMES, NUMBERS, NAMES.astype("S")], ids=["str", "int", "bytes"])
def test_an_npz_array_names_each_training_rows_source(tmp_path, values):
    cfg = file_cfg(npz(tmp_path, src=values), source_column="src")
    splits = load_splits(cfg)
    want = values.astype(str) if values.dtype.kind != "S" else np.char.decode(values)
    np.testing.assert_array_equal(sources_of_rows(splits), want[ids(splits)])
    assert splits.num_features == 1
    assert check_data(cfg).source_names == splits.source_names


def test_a_source_only_val_or_test_rows_hold_is_no_source(tmp_path):
    split = np.array(["train"] * 20 + ["val"] * 10 + ["test"] * 10)
    src = np.where(split == "train", NAMES, "only-held-out")
    cfg = file_cfg(parquet(tmp_path, split=split, src=src), source_column="src",
                   split_column="split")  # fmt: skip
    splits = load_splits(cfg)
    assert splits.source_names == ("books", "code", "web")
    np.testing.assert_array_equal(sources_of_rows(splits), NAMES[:20])
    assert check_data(cfg).source_names == ("books", "code", "web")


def test_with_a_split_column_holdout_rows_carry_their_sources(tmp_path):
    split = np.array(["train"] * 24 + ["val"] * 6 + ["test"] * 6 + ["holdout"] * 4)
    src = np.where(split == "holdout", "kept-aside", NAMES)
    cfg = file_cfg(parquet(tmp_path, split=split, src=src), source_column="src",
                   split_column="split")  # fmt: skip
    splits = load_splits(cfg)
    order = np.r_[0:24, 36:40]  # training rows, then holdout rows
    np.testing.assert_array_equal(ids(splits), order)
    np.testing.assert_array_equal(sources_of_rows(splits), src[order])
    assert splits.source_names == ("books", "code", "kept-aside", "web")
    assert splits.num_features == 1  # neither 'split' nor 'src' is a feature
    assert check_data(cfg).source_names == splits.source_names


@pytest.mark.parametrize("write", [parquet, npz])
def test_with_paths_train_and_holdout_files_name_sources_val_and_test_may(tmp_path, write):
    paths = {
        "train": write(tmp_path, "tr" + _suffix(write), rows=20, src=NAMES[:20]),
        "val": write(tmp_path, "va" + _suffix(write), rows=6, start=100),  # no column
        "test": write(
            tmp_path, "te" + _suffix(write), rows=6, start=200, src=np.array(["test-only"] * 6)
        ),  # fmt: skip
        "holdout": write(
            tmp_path, "ho" + _suffix(write), rows=3, start=300, src=np.array(["aside"] * 3)
        ),  # fmt: skip
    }
    cfg = DataConfig(kind="file", paths=paths, source_column="src", standardize=False)
    splits = load_splits(cfg)
    np.testing.assert_array_equal(ids(splits), np.r_[0:20, 300:303])
    assert splits.source_names == ("aside", "books", "code", "web")
    np.testing.assert_array_equal(sources_of_rows(splits), [*NAMES[:20], "aside", "aside", "aside"])
    assert splits.num_features == 1  # the test file's source column is no feature either
    np.testing.assert_array_equal(splits.x_test[:, 0], np.arange(200, 206))
    assert check_data(cfg).source_names == splits.source_names


def _suffix(write) -> str:
    return ".parquet" if write is parquet else ".npz"


# -- data.source_column: refusals ------------------------------------------------------------


def test_a_missing_column_is_refused(tmp_path):
    path = parquet(tmp_path)
    refused(file_cfg(path, source_column="src"),
            "data.source_column: 'src' is not a column of", path, "columns: id, label",
            "strings or integers")  # fmt: skip


def test_a_missing_array_is_refused(tmp_path):
    path = npz(tmp_path)
    refused(file_cfg(path, source_column="src"),
            "data.source_column: 'src' is not an array of", path, "arrays: x, y",
            "strings or integers")  # fmt: skip


def test_a_column_with_a_null_is_refused(tmp_path):
    src = pa.array([*NAMES[:7], None, *NAMES[8:]])
    path = parquet(tmp_path, src=src)
    refused(file_cfg(path, source_column="src"),
            "data.source_column: column 'src' of", path, "has a null at row 7",
            "a string or an integer")  # fmt: skip


@pytest.mark.parametrize("values", [np.arange(40) * 0.5, np.arange(40) % 2 == 0],
                         ids=["float", "bool"])  # fmt: skip
def test_a_column_of_other_values_is_refused(tmp_path, values):
    path = parquet(tmp_path, src=values)
    refused(file_cfg(path, source_column="src"),
            "data.source_column: column 'src' of", path, "holds", "values; allowed: strings "
            "or integers")  # fmt: skip


def test_npz_arrays_of_other_values_or_shapes_are_refused(tmp_path):
    refused(
        file_cfg(npz(tmp_path, "f.npz", src=np.arange(40) * 0.5), source_column="src"),
        "data.source_column: array 'src' of",
        "f.npz",
        "dtype float64",
        "strings or integers",
    )
    refused(
        file_cfg(npz(tmp_path, "o.npz", src=NAMES.astype(object)), source_column="src"),
        "data.source_column: array 'src' of",
        "o.npz",
        "Python objects",
    )
    refused(
        file_cfg(npz(tmp_path, "t.npz", src=NAMES.reshape(20, 2)), source_column="src"),
        "data.source_column: array 'src' of",
        "t.npz",
        "shape (20, 2)",
        "1-D",
    )
    refused(file_cfg(npz(tmp_path, "x.npz"), source_column="x"),
            "data.source_column: 'x' is the features or labels array")  # fmt: skip


def test_a_column_of_a_value_per_row_is_refused_as_no_sources(tmp_path):
    from trainables.data._sources import MAX_SOURCES

    rows = MAX_SOURCES + 1
    path = parquet(tmp_path, rows=rows, src=np.arange(rows))
    refused(file_cfg(path, source_column="src"), "data.source_column: column 'src' of", path,
            f"more than {MAX_SOURCES:,} distinct values")  # fmt: skip


def test_a_holdout_file_without_the_column_is_refused(tmp_path):
    paths = {
        "train": parquet(tmp_path, "tr.parquet", rows=20, src=NAMES[:20]),
        "val": parquet(tmp_path, "va.parquet", rows=6, start=100),
        "test": parquet(tmp_path, "te.parquet", rows=6, start=200),
        "holdout": parquet(tmp_path, "ho.parquet", rows=3, start=300),
    }
    refused(DataConfig(kind="file", paths=paths, source_column="src"),
            "data.source_column: 'src' is not a column of", paths["holdout"])  # fmt: skip


def test_files_whose_sources_differ_in_kind_are_refused(tmp_path):
    paths = {
        "train": parquet(tmp_path, "tr.parquet", rows=20, src=NAMES[:20]),
        "val": parquet(tmp_path, "va.parquet", rows=6, start=100, src=np.arange(6)),
        "test": parquet(tmp_path, "te.parquet", rows=6, start=200),
    }
    refused(DataConfig(kind="file", paths=paths, source_column="src"),
            "data.source_column: column 'src' of", paths["val"], "holds integer values but",
            paths["train"], "holds string values")  # fmt: skip


def test_a_source_column_on_another_kind_is_a_config_error():
    with pytest.raises(ValidationError, match="source_column: only allowed when kind is 'file'"):
        DataConfig(kind="digits", source_column="src")


# -- data.noisy_source -----------------------------------------------------------------------


def test_noisy_source_relabels_an_exact_fraction_of_the_training_rows():
    clean = load_splits(DataConfig(kind="digits"))
    splits = load_splits(DataConfig(kind="digits", noisy_source=0.25))
    n_train = len(clean.y_train)  # 1797 - 2 * round(0.2 * 1797) = 1079
    assert n_train == 1079
    noisy = splits.source_train == 1
    assert noisy.sum() == round(0.25 * 1079) == 270
    assert splits.source_names == ("clean", "noisy")
    assert splits.source_train.dtype == np.int64 and set(np.unique(splits.source_train)) == {0, 1}
    np.testing.assert_array_equal(splits.x_train, clean.x_train)  # the same rows
    np.testing.assert_array_equal(splits.y_train[~noisy], clean.y_train[~noisy])
    assert splits.y_train.min() >= 0 and splits.y_train.max() < 10
    # a random label is the true one with probability 1/10: about 243 of the 270 change
    changed = int((splits.y_train[noisy] != clean.y_train[noisy]).sum())
    assert 200 < changed < 270
    assert check_data(DataConfig(kind="digits", noisy_source=0.25)).source_names == (
        "clean",
        "noisy",
    )


def test_noisy_source_labels_are_uniform_over_the_classes():
    splits = load_splits(DataConfig(kind="digits", noisy_source=0.9))
    counts = np.bincount(splits.y_train[splits.source_train == 1], minlength=10)
    assert counts.sum() == round(0.9 * 1079) == 971
    # 971 draws over 10 classes: each count 97.1 +- 9.3 (one standard deviation)
    assert counts.min() > 60 and counts.max() < 135


def test_noisy_source_is_seeded_and_the_same_on_every_load():
    one = load_splits(DataConfig(kind="digits", noisy_source=0.3))
    two = load_splits(DataConfig(kind="digits", noisy_source=0.3))
    np.testing.assert_array_equal(one.source_train, two.source_train)
    np.testing.assert_array_equal(one.y_train, two.y_train)
    other = load_splits(DataConfig(kind="digits", noisy_source=0.3, split_seed=1))
    assert other.source_train.sum() == one.source_train.sum()
    assert not np.array_equal(other.x_train, one.x_train)  # another split, other rows


def test_noisy_source_leaves_validation_and_test_untouched():
    clean = load_splits(DataConfig(kind="digits"))
    splits = load_splits(DataConfig(kind="digits", noisy_source=0.5))
    for name in ("val", "test"):
        for got, want in zip(splits.split(name), clean.split(name), strict=True):
            np.testing.assert_array_equal(got, want)


def test_noisy_source_draws_from_holdout_rows_too(tmp_path):
    split = np.array(["train"] * 200 + ["val"] * 30 + ["test"] * 30 + ["holdout"] * 100)
    path = parquet(tmp_path, rows=360, split=split)
    cfg = file_cfg(path, split_column="split", noisy_source=0.5)
    splits = load_splits(cfg)
    assert len(splits.source_train) == 300 and splits.source_train.sum() == 150
    assert 0 < splits.source_train[splits.holdout].sum() < 100  # holdout rows drawn as well
    np.testing.assert_array_equal(splits.y_val, np.arange(200, 230) % 3)
    assert check_data(cfg).source_names == ("clean", "noisy")


@pytest.mark.parametrize(
    "data",
    [
        {"kind": "sparse_parity", "n_bits": 8, "k": 2, "train_size": 100, "holdout_size": 20},
        {"kind": "module", "factory": "userdata:pairs"},
    ],
    ids=["sparse_parity", "module"],
)
def test_noisy_source_works_on_every_labelled_kind(data):
    cfg = DataConfig(**data, noisy_source=0.2)
    splits = load_splits(cfg)
    n_train = len(splits.y_train)
    assert splits.source_train.sum() == round(0.2 * n_train)
    assert splits.source_names == check_data(cfg).source_names == ("clean", "noisy")
    clean = load_splits(DataConfig(**data))
    np.testing.assert_array_equal(splits.y_test, clean.y_test)


def test_a_noisy_source_that_rounds_to_no_row_is_refused():
    refused(DataConfig(kind="sparse_parity", train_size=100, noisy_source=0.004),
            "data.noisy_source: 0.004 of the 100 training rows makes no row noisy",
            "'clean' and 'noisy'")  # fmt: skip
    refused(DataConfig(kind="sparse_parity", train_size=100, noisy_source=0.996),
            "makes every row noisy")  # fmt: skip


def test_noisy_source_on_a_modules_token_sequences_is_refused():
    refused(DataConfig(kind="module", factory="userdata:sequences", noisy_source=0.2),
            "data.noisy_source: 0.2 needs labelled data")  # fmt: skip


def test_noisy_source_on_token_kinds_is_a_config_error():
    with pytest.raises(ValidationError, match="noisy_source: needs labelled data"):
        DataConfig(kind="pcfg", noisy_source=0.2)


# -- the teacher bank's key -------------------------------------------------------------------


def test_the_teacher_key_ignores_unset_sources_and_covers_set_ones():
    from search.spec import validate_spec
    from search.teacher import teacher_key

    plain = validate_spec({"name": "k", "data": {"kind": "digits"}})
    noisy = validate_spec({"name": "k", "data": {"kind": "digits", "noisy_source": 0.2}})
    other = validate_spec({"name": "k", "data": {"kind": "digits", "noisy_source": 0.3}})
    assert teacher_key(plain) == "7ea8ed0340e8671e"  # as before data had sources
    assert len({teacher_key(plain), teacher_key(noisy), teacher_key(other)}) == 3
