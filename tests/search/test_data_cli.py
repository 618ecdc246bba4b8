"""A bad data file fails ``python -m search validate|run`` before anything starts: exit 2, one
line naming the column or array, no Ray; a good one is accepted."""

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from search.cli import main

FEATURE_DTYPES = ["bool", "int8", "int32", "int64", "uint16", "float16", "float32", "float64"]
# labels: what the strategy writes in the label column / array 'y'
LABELS = ["contiguous"] * 2 + ["absent", "float", "negative", "one_class", "gaps"]
_REMEDY = "remap labels to 0..C-1, e.g. with np.unique(y, return_inverse=True)"


@dataclass
class DataFile:
    """A data file as drawn, and what the drawing made wrong with it (the test's oracle:
    decided from what was injected, not from the code under test)."""

    suffix: str
    write: object  # path -> None
    label_column: str = "label"
    # problem -> patterns, one of which the error line must match
    problems: dict[str, list[str]] = field(default_factory=dict)


@st.composite
def data_files(draw):
    suffix = draw(st.sampled_from([".npz", ".parquet"]))
    broken = draw(st.booleans())  # else: a valid file (about half the examples)
    rows = draw(st.integers(0 if broken else 10, 50))
    n_features = draw(st.integers(0 if broken else 1, 4))
    dtypes = draw(st.lists(st.sampled_from(FEATURE_DTYPES), min_size=4, max_size=4))
    if suffix == ".npz":
        dtypes = [dtypes[0]] * 4  # one array: one dtype
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    columns = {}
    for i, dtype in enumerate(dtypes[:n_features]):
        values = rng.normal(size=rows) * 10
        values = np.abs(values) if dtype.startswith("uint") else values
        columns[f"f{i}"] = (values > 0) if dtype == "bool" else values.astype(dtype)
    label = draw(st.sampled_from(["label", "target"])) if suffix == ".parquet" else "y"
    data = DataFile(suffix, None, label_column=label)
    problems = data.problems
    names_features = "array 'x'" if suffix == ".npz" else "feature column '{}'"
    names_labels = re.escape("array 'y'" if suffix == ".npz" else f"column {label!r}") + ".*"

    if rows < 10:
        problems["rows"] = [f"^error: data.path: .* has {rows} rows; need at least 10$"]
    if n_features == 0:
        problems["features"] = ["has no feature columns", "array 'x' has no features"]

    floats = [name for name, values in columns.items() if values.dtype.kind == "f"]
    bad_value = draw(st.sampled_from([None, np.nan, np.inf, -np.inf])) if broken else None
    if bad_value is not None and floats and rows:
        name = draw(st.sampled_from(floats))
        row = draw(st.integers(0, rows - 1))
        columns[name][row] = bad_value
        text = "NaN" if np.isnan(bad_value) else str(bad_value)
        where = re.escape(names_features.format(name))
        problems["non-finite"] = [f"^error: data.path: .*{where} has {text} at row {row}\\b"]

    if broken and suffix == ".parquet" and columns and rows and draw(st.integers(0, 3)) == 0:
        name = draw(st.sampled_from(sorted(columns)))
        row = draw(st.integers(0, rows - 1))
        values = columns[name].tolist()
        values[row] = None
        columns[name] = pa.array(values)
        problems["null"] = [f"feature column {name!r} has a null at row {row};"]

    if broken and draw(st.integers(0, 4)) == 0:  # a string feature
        columns["s"] = np.array([f"v{i}" for i in range(rows)], dtype=str)
        problems["string"] = [re.escape(names_features.format("s")) + " must be numeric"]

    kind = draw(st.sampled_from(LABELS)) if broken else "contiguous"
    classes = draw(st.integers(2, 5))
    labels = np.array(draw(st.permutations([i % classes for i in range(rows)])), dtype=np.int64)
    if kind == "contiguous" and 0 < rows < classes:
        problems["labels"] = [names_labels + "missing"]  # a class is missing
    if kind == "float":
        labels = labels + 0.5
        problems["labels"] = [names_labels + "labels must be integers"]
    elif kind == "negative" and rows:
        labels = labels - 1
        row = int(np.argmax(labels < 0))
        problems["labels"] = [names_labels + f"label -1 at row {row} is negative"]
    elif kind == "one_class" and rows:
        labels = np.full(rows, draw(st.integers(0, 3)))
        problems["labels"] = [names_labels + rf"every label is {labels[0]} \(one class\)"]
    elif kind == "gaps" and rows:
        values = draw(st.lists(st.sampled_from([1, 3, 7, 100, 2**40]), min_size=1, max_size=4))
        labels = np.resize(np.array(values, dtype=np.int64), rows)
        problems["labels"] = [names_labels + re.escape(_REMEDY), names_labels + "one class"]
    elif kind == "absent":
        problems["labels"] = [f"data.label_column: {label!r} is not a column", "'y' is missing"]

    mismatch = broken and suffix == ".npz" and kind != "absent" and draw(st.integers(0, 4)) == 0
    if mismatch:
        labels = np.resize(labels, rows + 1)
        problems["lengths"] = [f"array 'x' has {rows} rows but array 'y' has {rows + 1} labels"]

    compressed = draw(st.booleans())
    truncate = draw(st.one_of(st.none(), st.none(), st.floats(0.0, 0.95))) if broken else None
    if truncate is not None:
        problems["truncated"] = [r"^error: data.path: .* is not a readable (\.npz|Parquet) file \("]

    def write(path):
        if suffix == ".npz":
            x = np.column_stack(list(columns.values())) if columns else np.zeros((rows, 0))
            arrays = {"x": x} | ({} if kind == "absent" else {"y": labels})
            (np.savez_compressed if compressed else np.savez)(path, **arrays)
        else:
            table = dict(columns) | ({} if kind == "absent" else {label: labels})
            if not table:
                table = {"other": pa.array([], pa.int64())}
            pq.write_table(pa.table(table), path, compression="snappy" if compressed else None)
        if truncate is not None:
            data = path.read_bytes()
            path.write_bytes(data[: int(len(data) * truncate)])

    data.write = write
    return data


def _spec(directory: Path, data: DataFile) -> Path:
    path = directory / f"data{data.suffix}"
    data.write(path)
    spec = directory / "spec.yaml"
    spec.write_text(
        f"name: prop\nstorage: {json.dumps(str(directory / 'out'))}\n"
        f"data: {{kind: file, path: {json.dumps(str(path))}, label_column: {data.label_column}}}\n"
    )
    return spec


@settings(max_examples=50, deadline=None)
@given(data_files())
def test_validate_refuses_exactly_the_bad_files_naming_the_problem(data):
    from unittest import mock

    import ray

    with tempfile.TemporaryDirectory() as directory:
        spec = _spec(Path(directory), data)
        out, err = io.StringIO(), io.StringIO()
        # no Ray started (a test session may have one running already: ray.init must not run)
        no_ray = mock.patch.object(ray, "init", side_effect=AssertionError("ray.init called"))
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), no_ray:
            code = main(["validate", str(spec)])
        assert not (Path(directory) / "out").exists()
        if not data.problems:
            assert code == 0, err.getvalue()
            assert "is a valid sweep spec" in out.getvalue()
            return
        assert code == 2, data.problems
        lines = err.getvalue().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: data."), lines
        patterns = [p for found in data.problems.values() for p in found]
        assert any(re.search(p, lines[0]) for p in patterns), (lines[0], data.problems)


def test_run_on_a_bad_file_exits_2_with_one_line_before_anything_starts(tmp_path):
    x = np.random.default_rng(0).normal(size=(40, 3))
    x[11, 1] = np.nan
    pq.write_table(
        pa.table({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "label": np.arange(40) % 4}),
        tmp_path / "d.parquet",
    )
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: bad\nstorage: out\ndata: {kind: file, path: d.parquet}\n")
    result = subprocess.run(
        [sys.executable, "-m", "search", "run", str(spec)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    where = os.path.realpath(tmp_path / "d.parquet")  # made absolute where the command runs
    assert result.stderr.splitlines() == [
        f"error: data.path: {where!r} feature column 'b' has NaN at row 11: features must be finite"
    ]
    assert not (tmp_path / "out").exists()  # no sweep, no teacher directory


def test_validate_checks_a_user_split_column(tmp_path):
    """A split column without ``test`` rows: exit 2, one line naming ``data.split_column``;
    the same file with them: exit 0."""
    x = np.random.default_rng(0).normal(size=(40, 2))
    labels = np.arange(40) % 2

    def validate(split: list[str]) -> subprocess.CompletedProcess:
        table = {"a": x[:, 0], "b": x[:, 1], "label": labels, "split": split}
        pq.write_table(pa.table(table), tmp_path / "d.parquet")
        spec = tmp_path / "spec.yaml"
        spec.write_text(
            "name: mine\nstorage: out\ndata: {kind: file, path: d.parquet, split_column: split}\n"
        )
        return subprocess.run(
            [sys.executable, "-m", "search", "validate", str(spec)],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    bad = validate(["train"] * 30 + ["val"] * 10)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.splitlines() == [
        "error: data.split_column: column 'split' of 'd.parquet' has no 'test' rows (values "
        "found: train 30, val 10); every one of train, val and test needs at least one row"
    ]
    good = validate(["train"] * 24 + ["val"] * 6 + ["test"] * 6 + ["holdout"] * 4)
    assert good.returncode == 0, good.stderr
    assert "is a valid sweep spec" in good.stdout
    assert not (tmp_path / "out").exists()


def test_validate_refuses_a_user_split_that_leaks_or_misreads(tmp_path):
    """One line each, exit 2: a numeric ``--set data.split_column`` (named as such, not as the
    feature it leaves), a training file given as the test file, test labels without training
    rows."""
    rng = np.random.default_rng(0)

    def write(name: str, rows: int, labels: np.ndarray, **more) -> None:
        table = {"f0": rng.normal(size=rows), "label": labels} | more
        pq.write_table(pa.table(table), tmp_path / name)

    def validate(data: str, *sets: str) -> subprocess.CompletedProcess:
        spec = tmp_path / "spec.yaml"
        spec.write_text(f"name: mine\nstorage: out\ndata: {data}\n")
        return subprocess.run(
            [sys.executable, "-m", "search", "validate", str(spec), *[f"--set={s}" for s in sets]],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    write("d.parquet", 40, np.arange(40) % 2, split=["train"] * 30 + ["val"] * 5 + ["test"] * 5)
    write("tr.parquet", 30, np.arange(30) % 10)
    write("va.parquet", 10, np.arange(10))
    write("te.parquet", 10, np.arange(5, 15))
    cases = {
        "error: data.split_column: column 'f0' of 'd.parquet' holds double values, not the "
        "split names train, val, test or holdout":
            validate("{kind: file, path: d.parquet, split_column: split}", "data.split_column=f0"),
        "error: data.paths.test: 'tr.parquet' is also the file of data.paths.train; the same "
        "rows in two splits leak one into the other: give each split its own file":
            validate("{kind: file, paths: {train: tr.parquet, val: va.parquet, test: tr.parquet}}"),
        "error: data.paths.test: labels 10, 11, 12, 13, 14 do not occur in the training split "
        "(data.paths.train); every class of val and test needs training rows":
            validate("{kind: file, paths: {train: tr.parquet, val: va.parquet, test: te.parquet}}"),
    }  # fmt: skip
    for line, result in cases.items():
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.splitlines() == [line]
    assert not (tmp_path / "out").exists()
