"""Token data (``tokens``, ``text``, ``pcfg``), user datasets (``module``) and data shapes:
hand-checked small cases, and every refusal as one line naming the field and the value."""

from __future__ import annotations

import pickle
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainables.config import DataConfig
from trainables.data import (
    DataError,
    DataInfo,
    IndexRows,
    check_data,
    load_splits,
    pcfg_grammar,
    pcfg_sample,
)


def refused(cfg: DataConfig, *fragments: str, load: bool = True) -> str:
    """``check_data`` (and, with ``load``, ``load_splits``) refuse ``cfg`` with one line
    holding every fragment; the same line from both."""
    with pytest.raises(DataError) as checked:
        check_data(cfg)
    message = str(checked.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    if load:
        with pytest.raises(DataError) as loaded:
            load_splits(cfg)
        assert str(loaded.value) == message
    return message


def every_row(splits) -> np.ndarray:
    return np.concatenate(
        [s[np.arange(len(s))] for s in (splits.x_train, splits.x_val, splits.x_test)]
    )


# -- tokens: .npy --------------------------------------------------------------------------------


def ids(rows=50, length=6, vocab=20, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, size=(rows, length)).astype(np.int32)


def npy(tmp_path, array, name="t.npy") -> str:
    np.save(tmp_path / name, array)
    return str(tmp_path / name)


def test_npy_tokens_stay_memory_mapped_and_split_by_index_views(tmp_path):
    array = ids()
    cfg = DataConfig(kind="tokens", path=npy(tmp_path, array))
    splits = load_splits(cfg)
    assert splits.tokens and splits.y_train is None and splits.pad_id is None
    assert splits.vocab_size == splits.num_classes == int(array.max()) + 1
    assert splits.example_shape == (6,) and splits.num_features == 6
    for store in (splits.x_train, splits.x_val, splits.x_test):
        assert isinstance(store, IndexRows) and isinstance(store.base, np.memmap)
        assert store.dtype == np.int64
    assert (len(splits.x_train), len(splits.x_val), len(splits.x_test)) == (30, 10, 10)
    rows = np.concatenate([splits.x_train.rows, splits.x_val.rows, splits.x_test.rows])
    assert sorted(rows) == list(range(50))  # disjoint and complete
    picked = np.array([7, 0, 3, 3])
    batch = splits.x_train[picked]
    assert batch.dtype == np.int64
    np.testing.assert_array_equal(batch, array[splits.x_train.rows[picked]])  # order kept
    again = load_splits(cfg)
    np.testing.assert_array_equal(again.x_val.rows, splits.x_val.rows)
    assert check_data(cfg) == DataInfo((6,), True, splits.vocab_size, splits.vocab_size, None, 50)


def test_npy_tokens_are_never_copied_whole(tmp_path, monkeypatch):
    from trainables.data import _tokens

    monkeypatch.setattr(_tokens, "_BATCH_BYTES", 64 << 10)
    array = ids(rows=100_000, length=32, vocab=1000)  # 12.8 MB on disk
    cfg = DataConfig(kind="tokens", path=npy(tmp_path, array), vocab_size=1000)
    tracemalloc.start()
    try:
        splits = load_splits(cfg)
        check_data(cfg)
        batch = splits.x_train[np.arange(256)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 << 20  # chunks, index arrays and a batch; never the 12.8 MB of ids
    np.testing.assert_array_equal(batch, array[splits.x_train.rows[:256]])


def test_index_view_of_a_memmap_pickles_by_file_name(tmp_path):
    splits = load_splits(DataConfig(kind="tokens", path=npy(tmp_path, ids(rows=5000, length=64))))
    blob = pickle.dumps(splits.x_train)
    assert len(blob) < 100_000  # the 3000 row indices, not the 2.5 MB of ids
    copy = pickle.loads(blob)
    assert isinstance(copy.base, np.memmap)
    np.testing.assert_array_equal(copy[np.arange(10)], splits.x_train[np.arange(10)])


def test_tokens_vocab_pad_and_max_examples(tmp_path):
    path = npy(tmp_path, ids(rows=100))
    splits = load_splits(
        DataConfig(kind="tokens", path=path, vocab_size=32, pad_id=0, max_examples=20)
    )
    assert (splits.vocab_size, splits.num_classes, splits.pad_id) == (32, 32, 0)
    rows = np.concatenate([splits.x_train.rows, splits.x_val.rows, splits.x_test.rows])
    assert sorted(rows) == list(range(0, 100, 5))  # 20 rows spread evenly
    assert check_data(DataConfig(kind="tokens", path=path, max_examples=20)).rows == 20


# -- tokens: Parquet list<int> ---------------------------------------------------------------------


def parquet(tmp_path, column, name="t.parquet", **more) -> str:
    pq.write_table(pa.table({"tokens": column, **more}), tmp_path / name)
    return str(tmp_path / name)


SEQUENCES = [[1, 2, 3], [4], [5, 6]] * 4  # 12 rows, longest 3, largest id 6


def test_parquet_sequences_are_padded_to_the_longest_with_V(tmp_path):
    path = parquet(tmp_path, SEQUENCES, other=list(range(12)))
    splits = load_splits(
        DataConfig(kind="tokens", path=path, val_fraction=0.25, test_fraction=0.25)
    )
    assert (splits.vocab_size, splits.pad_id, splits.example_shape) == (7, 7, (3,))
    expected = np.array([[1, 2, 3], [4, 7, 7], [5, 6, 7]] * 4)
    np.testing.assert_array_equal(splits.x_train[np.arange(6)], expected[splits.x_train.rows])
    assert every_row(splits).dtype == np.int64
    info = check_data(DataConfig(kind="tokens", path=path, val_fraction=0.25, test_fraction=0.25))
    assert info == DataInfo((3,), True, 7, 7, 7, 12)


def test_parquet_padding_uses_the_given_pad_id(tmp_path):
    path = parquet(tmp_path, SEQUENCES)
    splits = load_splits(DataConfig(kind="tokens", path=path, pad_id=0))
    assert (splits.vocab_size, splits.pad_id) == (7, 0)
    assert sorted(map(tuple, every_row(splits))) == sorted([(1, 2, 3), (4, 0, 0), (5, 6, 0)] * 4)


def test_parquet_sequences_of_one_length_need_no_padding(tmp_path):
    path = parquet(tmp_path, pa.array([[i, i + 1] for i in range(10)], pa.list_(pa.int16(), 2)))
    splits = load_splits(DataConfig(kind="tokens", path=path))
    assert (splits.vocab_size, splits.pad_id, splits.example_shape) == (11, None, (2,))
    assert check_data(DataConfig(kind="tokens", path=path)).pad_id is None


# -- tokens: refusals ------------------------------------------------------------------------------


def test_token_id_beyond_the_vocabulary_names_file_row_and_vocab(tmp_path):
    array = ids(rows=40, vocab=200)
    array[17, 3] = 300
    path = npy(tmp_path, array, "x.npy")
    refused(DataConfig(kind="tokens", path=path, vocab_size=256),
            f"data.vocab_size: token id 300 in {path!r} (row 17) is >= vocab_size 256")  # fmt: skip


@pytest.mark.parametrize(
    ("array", "fragments"),
    [
        (np.full((20, 4), -2, np.int64), ["data.path: token id -2", "(row 0) is negative"]),
        (
            np.zeros((20, 4, 2), np.int64),
            ["data.path: ", "must be a 2-D (rows, seq_len)", "(20, 4, 2)"],
        ),
        (np.zeros(20, np.int64), ["must be a 2-D", "(20,)"]),
        (np.zeros((20, 4), np.float32), ["data.path: ", "must hold integer token ids", "float32"]),
        (np.zeros((20, 0), np.int64), ["data.path: ", "holds empty sequences", "(20, 0)"]),
        (np.zeros((9, 4), np.int64), ["data.path: ", "has 9 rows; need at least 10"]),
    ],
    ids=["negative", "3-d", "1-d", "float", "empty", "9-rows"],
)
def test_bad_npy_token_files_are_refused(tmp_path, array, fragments):
    path = npy(tmp_path, array)
    message = refused(DataConfig(kind="tokens", path=path), *fragments)
    assert repr(path) in message


def test_npy_that_is_not_an_array_is_refused(tmp_path):
    (tmp_path / "t.npy").write_text("not numpy")
    refused(DataConfig(kind="tokens", path=str(tmp_path / "t.npy")), "is not a readable .npy file")


def test_pad_id_outside_the_vocabulary_is_refused(tmp_path):
    refused(DataConfig(kind="tokens", path=npy(tmp_path, ids(vocab=20)), pad_id=40),
            "data.pad_id: 40 is outside the vocabulary 0..19")  # fmt: skip


@pytest.mark.parametrize(
    ("column", "fields", "fragments"),
    [
        (SEQUENCES[:11] + [None], {}, ["data.tokens_column: column 'tokens'", "null at row 11"]),
        (SEQUENCES[:5] + [[1, None]] + SEQUENCES[6:], {}, ["column 'tokens'", "null id at row 5"]),
        (SEQUENCES[:3] + [[]] + SEQUENCES[4:], {}, ["column 'tokens'", "empty sequence at row 3"]),
        ([[0.5, 1.0]] * 12, {}, ["data.tokens_column: ", "list of integer token ids", "double>"]),
        (list(range(12)), {}, ["list of integer token ids", "int64"]),
        (
            SEQUENCES,
            {"vocab_size": 5},
            ["data.vocab_size: token id 5", "(row 2) is >= vocab_size 5"],
        ),
        (SEQUENCES[:4] + [[3, -1]] + SEQUENCES[5:], {}, ["token id -1", "(row 4) is negative"]),
        (
            SEQUENCES,
            {"tokens_column": "ids"},
            ["data.tokens_column: 'ids' is not a column", "columns: tokens"],
        ),
        (SEQUENCES[:9], {}, ["data.path: ", "has 9 rows; need at least 10"]),
    ],
    ids=[
        "null-row",
        "null-id",
        "empty",
        "floats",
        "not-a-list",
        "vocab",
        "negative",
        "no-column",
        "9-rows",
    ],
)
def test_bad_parquet_token_columns_are_refused(tmp_path, column, fields, fragments):
    refused(DataConfig(kind="tokens", path=parquet(tmp_path, column), **fields), *fragments)


# -- text --------------------------------------------------------------------------------------------


def corpus(tmp_path) -> tuple[Path, bytes]:
    """Three text files (one empty, one in __pycache__, one not text) and their joined bytes."""
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    (root / "__pycache__").mkdir()
    (root / "b.py").write_bytes(b"print('b')\n" * 5)
    (root / "a.txt").write_bytes(b"0123456789" * 4)
    (root / "sub" / "c.txt").write_bytes(b"caf\xc3\xa9 " * 7)
    (root / "empty.txt").write_bytes(b"")
    (root / "__pycache__" / "x.txt").write_bytes(b"skipped" * 20)
    (root / "notes.md").write_bytes(b"skipped" * 20)
    joined = b"\n".join([b"0123456789" * 4, b"print('b')\n" * 5, b"caf\xc3\xa9 " * 7])
    return root, joined


def windows_of(stream: bytes, length: int) -> list[bytes]:
    return [stream[i : i + length] for i in range(0, len(stream) - length + 1, length)]


def text_rows(splits) -> list[bytes]:
    return [bytes(r.astype(np.uint8)) for r in every_row(splits)]


def test_text_windows_are_exact_bytes_of_the_sorted_joined_files(tmp_path):
    root, stream = corpus(tmp_path)  # 40 + 1 + 55 + 1 + 42 = 139 bytes
    cfg = DataConfig(kind="text", path=str(root), seq_len=8)
    splits = load_splits(cfg)
    expected = windows_of(stream, 8)
    assert len(stream) == 139 and len(expected) == 17
    assert sorted(text_rows(splits)) == sorted(expected)
    assert (splits.vocab_size, splits.num_classes, splits.pad_id, splits.example_shape) == (
        256,
        256,
        None,
        (8,),
    )
    assert check_data(cfg) == DataInfo((8,), True, 256, 256, None, 17)


def test_text_max_examples_reads_only_evenly_spread_windows(tmp_path):
    root, stream = corpus(tmp_path)
    splits = load_splits(DataConfig(kind="text", path=str(root), seq_len=4, max_examples=10))
    every = windows_of(stream, 4)  # 34 windows; pick 0, 3, 6, 10, ...
    chosen = [every[(i * 34) // 10] for i in range(10)]
    assert len(every) == 34
    assert sorted(text_rows(splits)) == sorted(chosen)
    assert any(b"\n" in w for w in chosen)  # a window across a file boundary holds the separator


def test_text_glob_and_single_file(tmp_path):
    root, _ = corpus(tmp_path)
    globbed = load_splits(DataConfig(kind="text", path=str(root / "s*" / "*.txt"), seq_len=4))
    assert sorted(text_rows(globbed)) == sorted(windows_of(b"caf\xc3\xa9 " * 7, 4))
    everything = load_splits(DataConfig(kind="text", path=str(root / "**" / "*.txt"), seq_len=4))
    stream = b"\n".join([b"skipped" * 20, b"0123456789" * 4, b"caf\xc3\xa9 " * 7])  # "_" < "a"
    assert sorted(text_rows(everything)) == sorted(windows_of(stream, 4))  # a glob takes any file
    single = load_splits(DataConfig(kind="text", path=str(root / "a.txt"), seq_len=4))
    assert sorted(text_rows(single)) == sorted(windows_of(b"0123456789" * 4, 4))


def test_stdlib_text_loads_the_windows_asked_for():
    cfg = DataConfig(kind="text", path="{stdlib}", max_examples=2000)
    info = check_data(cfg)
    splits = load_splits(cfg)
    assert (
        info.rows == 2000 and len(splits.x_train) + len(splits.x_val) + len(splits.x_test) == 2000
    )
    text = b"".join(text_rows(splits))
    assert b"def " in text and b"import " in text  # Python sources
    assert (splits.vocab_size, splits.pad_id) == (256, None)


def test_stdlib_stands_for_this_pythons_standard_library():
    import sysconfig

    from trainables.data._text import expand, text_files

    assert expand("{stdlib}/json") == sysconfig.get_paths()["stdlib"] + "/json"
    files, sizes = text_files("{stdlib}/json")
    assert any(f.endswith("json/decoder.py") for f in files) and (sizes > 0).all()
    assert not any("site-packages" in f for f in text_files("{stdlib}")[0])


@pytest.mark.parametrize(
    ("make", "fields", "fragments"),
    [
        (
            lambda p: None,
            {"path": "missing/*.txt"},
            ["data.path: 'missing/*.txt' matched no files"],
        ),
        (lambda p: None, {"path": "missing.txt"}, ["data.path: 'missing.txt' does not exist"]),
        (
            lambda p: (p / "d").mkdir(),
            {"path": "d"},
            ["data.path: 'd' has no text files (*.txt or *.py)"],
        ),
        (
            lambda p: (p / "x.txt").write_bytes(b""),
            {"path": "x.txt"},
            ["data.path: 'x.txt' is empty"],
        ),
        (
            lambda p: (p / "x.txt").write_bytes(b"ok \xff\xfe"),
            {"path": "x.txt"},
            ["data.path: 'x.txt' is not UTF-8 text", "offset 3"],
        ),
        (
            lambda p: (p / "x.txt").write_bytes(b"a" * 639),
            {"path": "x.txt"},
            [
                "data.path: 'x.txt' holds 639 bytes of text",
                "9 windows of data.seq_len 64",
                "at least 10 windows (640 bytes)",
            ],
        ),
    ],
    ids=["glob", "missing", "no-text-files", "empty", "not-utf8", "too-short"],
)
def test_bad_text_is_refused(tmp_path, monkeypatch, make, fields, fragments):
    monkeypatch.chdir(tmp_path)
    make(tmp_path)
    refused(DataConfig(kind="text", **fields), *fragments)


# -- pcfg --------------------------------------------------------------------------------------------


def derives(grammar, tokens: list[int]) -> bool:
    """CYK for the leveled grammar: can the root derive exactly ``tokens``?"""
    n = len(tokens)
    # spans[s] = set of (i, j) that symbol s of the current level derives
    spans = [{(i, i + 1) for i in range(n) if tokens[i] == t} for t in range(grammar.vocab_size)]
    for rhs, lengths in zip(reversed(grammar.rhs), reversed(grammar.lengths), strict=True):
        above = []
        for symbol in range(rhs.shape[0]):
            derived = set()
            for rule in range(rhs.shape[1]):
                body = rhs[symbol, rule, : lengths[symbol, rule]]
                ends = {i: {i} for i in range(n + 1)}  # start -> reachable ends
                for part in body:
                    ends = {
                        i: {j for m in e for (a, j) in spans[part] if a == m}
                        for i, e in ends.items()
                    }
                derived |= {(i, j) for i, e in ends.items() for j in e}
            above.append(derived)
        spans = above
    return (0, n) in spans[0]


def test_pcfg_sequences_are_derivable_from_the_root():
    grammar = pcfg_grammar(levels=3, symbols=3, rules=2, vocab_size=3, seed=1)
    sequences = pcfg_sample(grammar, 40, seq_len=27, rng=np.random.default_rng(0))  # 3**3: no cut
    for row in sequences:
        tokens = [int(t) for t in row if t != 3]
        assert 8 <= len(tokens) <= 27 and derives(grammar, tokens)
    noise = np.random.default_rng(1).integers(0, 3, size=(40, 12))
    assert not all(derives(grammar, list(row)) for row in noise)  # the check can say no


def test_pcfg_grammar_is_leveled_seeded_and_uniform():
    grammar = pcfg_grammar(levels=4, symbols=5, rules=3, vocab_size=7, seed=2)
    assert [r.shape for r in grammar.rhs] == [(1, 3, 3), (5, 3, 3), (5, 3, 3), (5, 3, 3)]
    for level, (rhs, lengths) in enumerate(zip(grammar.rhs, grammar.lengths, strict=True)):
        below = 7 if level == 3 else 5
        assert set(np.unique(lengths)) <= {2, 3}
        for symbol in range(rhs.shape[0]):
            bodies = {tuple(rhs[symbol, r, : lengths[symbol, r]]) for r in range(3)}
            assert len(bodies) == 3 and all(0 <= s < below for b in bodies for s in b)
            assert (rhs[symbol][np.arange(3)[None, :] >= lengths[symbol][:, None]] == -1).all()
    again = pcfg_grammar(levels=4, symbols=5, rules=3, vocab_size=7, seed=2)
    assert all(np.array_equal(a, b) for a, b in zip(grammar.rhs, again.rhs, strict=True))
    one = pcfg_grammar(levels=1, symbols=1, rules=2, vocab_size=5, seed=0)
    first = pcfg_sample(one, 4000, seq_len=3, rng=np.random.default_rng(0))[:, :2]
    bodies = [tuple(one.rhs[0][0, r, :2]) for r in range(2)]
    share = np.mean([tuple(row) == bodies[0] for row in first])
    assert abs(share - 0.5) < 0.05  # the root's two rules are equally likely


def test_pcfg_splits_are_deterministic_and_padded_with_V():
    cfg = DataConfig(kind="pcfg", train_size=200, holdout_size=50, seq_len=64, split_seed=3)
    a, b = load_splits(cfg), load_splits(cfg)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert (
        a.x_train.shape == (200, 64) and a.x_val.shape == (50, 64) and a.x_train.dtype == np.int64
    )
    assert (a.vocab_size, a.num_classes, a.pad_id, a.y_train) == (3, 3, 3, None)
    for row in a.x_train:  # real ids, then padding only
        real = row[row != 3]
        assert (real < 3).all() and (row[len(real) :] == 3).all()
    more = load_splits(cfg.model_copy(update={"train_size": 300}))
    np.testing.assert_array_equal(more.x_val, a.x_val)  # each split has its own stream
    other = load_splits(cfg.model_copy(update={"split_seed": 4}))
    assert not np.array_equal(other.x_train, a.x_train)
    assert check_data(cfg) == DataInfo((64,), True, 3, 3, 3, 300)


def test_pcfg_cut_to_seq_len_needs_no_padding():
    cfg = DataConfig(
        kind="pcfg", pcfg_levels=4, seq_len=16, train_size=100, holdout_size=10, vocab_size=8
    )
    splits = load_splits(cfg)  # every derivation has >= 2**4 = 16 terminals
    assert splits.pad_id is None and splits.x_train.max() < 8
    assert check_data(cfg).pad_id is None


def test_pcfg_generates_20k_sequences():
    cfg = DataConfig(kind="pcfg", train_size=20_000, holdout_size=10, seq_len=64, pcfg_levels=5)
    splits = load_splits(cfg)
    assert splits.x_train.shape == (20_000, 64)


# -- module ------------------------------------------------------------------------------------------


@pytest.fixture
def userdata(monkeypatch):
    """``userdata`` importable, as a user's installed package would be."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    yield
    sys.modules.pop("userdata", None)
    sys.modules.pop("userdata.broken_import", None)


def module(factory: str, **fields) -> DataConfig:
    kwargs = fields.pop("kwargs", {})
    return DataConfig(kind="module", factory=f"userdata:{factory}", kwargs=kwargs, **fields)


def test_module_pairs_are_split_like_a_file(userdata):
    cfg = module("pairs", kwargs={"rows": 40, "classes": 3, "shape": [2, 3]}, standardize=False)
    splits = load_splits(cfg)
    assert not splits.tokens and splits.num_classes == 3 and splits.example_shape == (2, 3)
    assert splits.x_train.dtype == np.float32 and splits.y_train.dtype == np.int64
    for x, y in zip(splits.x_train, splits.y_train, strict=True):
        first = int(x[0, 0])  # item i is i + arange(6), label i % 3
        np.testing.assert_array_equal(x.reshape(-1), first + np.arange(6))
        assert y == first % 3
    ordered = load_splits(module("pairs", kwargs={"rows": 40}, standardize=False, shape=[6]))
    assert ordered.example_shape == (6,)
    assert check_data(cfg) == DataInfo((2, 3), False, 3, None, None, 40)


def test_module_token_sequences_are_gathered_on_demand(userdata):
    cfg = module("sequences", kwargs={"rows": 30, "length": 8, "vocab": 11}, pad_id=0)
    splits = load_splits(cfg)
    assert splits.tokens and splits.y_train is None
    assert (splits.vocab_size, splits.num_classes, splits.pad_id, splits.example_shape) == (
        11,
        11,
        0,
        (8,),
    )
    rows = splits.x_train.rows[[4, 1]]
    np.testing.assert_array_equal(
        splits.x_train[np.array([4, 1])], (rows[:, None] + np.arange(8)) % 11
    )
    assert check_data(cfg) == DataInfo((8,), True, 11, 11, 0, 30)
    declared = module("sequences", kwargs={"vocab": 11, "declared": 50})
    assert load_splits(declared).vocab_size == 50 and check_data(declared).vocab_size == 50


def test_module_ids_beyond_a_declared_vocabulary_are_refused_before_anything_starts(userdata):
    cfg = module("sequences", kwargs={"vocab": 11}, vocab_size=4)
    pattern = r"^data.vocab_size: token id 7 in item 0 of 'userdata:sequences' is >= vocab_size 4$"
    with pytest.raises(DataError, match=pattern):
        check_data(cfg)
    with pytest.raises(DataError, match=pattern):
        load_splits(cfg)


def test_module_labels_beyond_the_declared_classes_are_refused_by_check_and_load(userdata):
    import userdata as factories

    class Declared(factories.Pairs):
        num_classes = 2  # but labels are index % 3

    factories.declared_two = lambda: Declared(30, 3, (2,))
    cfg = module("declared_two")
    pattern = r"label 2 of item 2 of 'userdata:declared_two' is >= the 2 classes"
    with pytest.raises(DataError, match=pattern):
        check_data(cfg)
    with pytest.raises(DataError, match=pattern):
        load_splits(cfg)


@pytest.mark.parametrize(
    ("factory", "fields", "fragments"),
    [
        (
            "nothing",
            {},
            ["data.factory: 'userdata:nothing': module 'userdata' has no function 'nothing'"],
        ),
        (
            "not_a_dataset",
            {},
            ["data.factory: 'userdata:not_a_dataset' returned a int", "map-style"],
        ),
        ("stream", {}, ["returned a Stream, not a map-style", "IterableDataset"]),
        ("empty", {}, ["data.factory: 'userdata:empty' returned an empty dataset"]),
        (
            "ragged",
            {},
            ["data.factory: item 5 of 'userdata:ragged' has shape (7,) but item 0 has (6,)"],
        ),
        (
            "broken",
            {"kwargs": {"size": 3}},
            ["data.factory: 'userdata:broken' raised RuntimeError: no such corpus", "{'size': 3}"],
        ),
        (
            "pairs",
            {"kwargs": {"rows": 9}},
            ["data.factory: 'userdata:pairs' has 9 rows; need at least 10"],
        ),
        ("pairs", {"kwargs": {"classes": 1}}, ["every label of 'userdata:pairs' is 0 (one class)"]),
        ("pairs", {"shape": [5]}, ["data.shape: [5] holds 5 values, the examples have 6 features"]),
    ],
    ids=[
        "no-function",
        "not-a-dataset",
        "iterable",
        "empty",
        "ragged",
        "raises",
        "9-rows",
        "one-class",
        "shape",
    ],
)
def test_bad_module_datasets_are_refused(userdata, factory, fields, fragments):
    refused(module(factory, **fields), *fragments)


def test_a_factory_that_cannot_be_imported_says_where_it_is_imported(userdata):
    cfg = DataConfig(kind="module", factory="userdata.broken_import:make")
    message = refused(cfg, "data.factory: 'userdata.broken_import:make' cannot be imported",
                      "ModuleNotFoundError", "imported where the trial runs")  # fmt: skip
    assert "a_package_that_is_not_installed" in message
    refused(
        DataConfig(kind="module", factory="no_colon"),
        "data.factory: 'no_colon' must be 'package.module:function'",
    )


# -- shapes of features ------------------------------------------------------------------------------


def test_npz_images_keep_their_shape(tmp_path):
    x = np.random.default_rng(0).normal(size=(30, 1, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(30) % 3)
    cfg = DataConfig(kind="file", path=str(tmp_path / "d.npz"), standardize=False)
    splits = load_splits(cfg)
    assert splits.x_train.shape == (18, 1, 4, 4) and splits.num_features == 16
    assert check_data(cfg).example_shape == (1, 4, 4)
    flat = load_splits(cfg.model_copy(update={"shape": [16]}))
    np.testing.assert_array_equal(flat.x_train, splits.x_train.reshape(18, 16))
    standardized = load_splits(cfg.model_copy(update={"standardize": True}))
    np.testing.assert_allclose(standardized.x_train.mean(axis=0), 0.0, atol=1e-5)  # per element


def test_parquet_list_columns_become_features_in_column_order(tmp_path):
    rows = 12
    table = pa.table({
        "a": np.arange(rows, dtype=np.float64),
        "pix": pa.array([[i, 10 * i, 100 * i] for i in range(rows)], pa.list_(pa.int32())),
        "fixed": pa.array([[-i, -2 * i] for i in range(rows)], pa.list_(pa.float32(), 2)),
        "label": np.arange(rows) % 2,
    })  # fmt: skip
    pq.write_table(table, tmp_path / "d.parquet")
    cfg = DataConfig(kind="file", path=str(tmp_path / "d.parquet"), standardize=False)
    splits = load_splits(cfg)
    assert splits.example_shape == (6,) and check_data(cfg).example_shape == (6,)
    for x, y in zip(splits.x_train, splits.y_train, strict=True):
        i = x[0]
        np.testing.assert_array_equal(x, [i, i, 10 * i, 100 * i, -i, -2 * i])
        assert y == i % 2
    image = load_splits(cfg.model_copy(update={"shape": [2, 3]}))
    assert image.x_train.shape == (len(splits.x_train), 2, 3)


@pytest.mark.parametrize(
    ("column", "fragments"),
    [
        (
            [[1.0, 2.0]] * 7 + [[1.0]] + [[1.0, 2.0]] * 4,
            ["data.path: ", "feature column 'pix' has 1 values at row 7 but 2 in its first row"],
        ),
        (
            [[1.0, 2.0]] * 3 + [[1.0, None]] + [[1.0, 2.0]] * 8,
            ["feature column 'pix' has a null value", "row 3"],
        ),
        (
            pa.array([[]] * 12, pa.list_(pa.float64())),
            ["feature column 'pix' has an empty list at row 0"],
        ),
        ([["a"]] * 12, ["feature column 'pix' must be numeric", "or a list of numbers", "string>"]),
        (
            [[1.0, 2.0]] * 5 + [[1.0, np.nan]] + [[1.0, 2.0]] * 6,
            ["feature column 'pix' has NaN at row 5, column 1"],
        ),
    ],
    ids=["ragged", "null", "empty", "strings", "nan"],
)
def test_bad_parquet_list_columns_are_refused(tmp_path, column, fragments):
    pq.write_table(pa.table({"pix": column, "label": np.arange(12) % 2}), tmp_path / "d.parquet")
    cfg = DataConfig(kind="file", path=str(tmp_path / "d.parquet"))
    message = refused(cfg, *fragments)
    assert repr(cfg.path) in message


def test_data_shape_must_hold_the_features(tmp_path):
    refused(DataConfig(kind="digits", shape=[1, 8, 9]),
            "data.shape: [1, 8, 9] holds 72 values, the examples have 64 features")  # fmt: skip
    digits = load_splits(DataConfig(kind="digits", shape=[1, 8, 8]))
    assert digits.x_train.shape == (1079, 1, 8, 8) and digits.example_shape == (1, 8, 8)


def test_whole_lines_trims_each_window_to_its_lines_and_pads(tmp_path):
    from trainables.data._text import whole_lines

    windows = np.frombuffer(b"ab\ncdef\ngh" + b"abcdefghij" + b"abcdefg\nhi", np.uint8)
    out = whole_lines(windows.reshape(3, 10).copy())
    pad = 256
    # starts after the first newline (in the first half), ends after the last one
    assert out[0].tolist() == list(b"cdef\n") + [pad] * 5
    assert out[1].tolist() == list(b"abcdefghij")  # no newline: the window as it is
    assert out[2].tolist() == list(b"abcdefg\n") + [pad] * 2  # first newline in the 2nd half
    (tmp_path / "t.txt").write_text(
        "".join(f"line {i} " + "x" * (i % 7) + "\n" for i in range(300))
    )
    data = DataConfig(kind="text", path=str(tmp_path / "t.txt"), seq_len=32, whole_lines=True)
    splits = load_splits(data)
    rows = splits.x_train[np.arange(len(splits.x_train))]
    assert splits.pad_id == 256 and check_data(data).pad_id == 256
    real = rows != 256
    assert len(set(real.sum(axis=1))) > 1  # lengths vary
    last_real = real.sum(axis=1) - 1
    assert (rows[np.arange(len(rows)), last_real] == ord("\n")).all()


def test_files_of_a_text_directory_that_are_not_utf8_are_left_out_and_named(tmp_path):
    (tmp_path / "a.txt").write_bytes(bytes(range(256)) * 4)  # binary: not UTF-8
    (tmp_path / "b.txt").write_text("héllo wörld\n" * 100)
    data = DataConfig(kind="text", path=str(tmp_path), seq_len=16)
    info = check_data(data)
    assert info.notes == (
        f"data.path: 1 file(s) that are not UTF-8 text are left out: {str(tmp_path / 'a.txt')!r}",
    )
    splits = load_splits(data)
    rows = splits.x_train[np.arange(len(splits.x_train))]
    assert not np.isin(rows, [0xC0, 0xC1, 0xFF]).any()  # bytes UTF-8 never holds: a.txt's
    (tmp_path / "b.txt").unlink()
    with pytest.raises(DataError, match="holds no UTF-8 text"):
        check_data(data)
