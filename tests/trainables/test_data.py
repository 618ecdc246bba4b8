import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainables.config import DataConfig
from trainables.data import load_splits


def test_digits_split_is_deterministic_disjoint_and_complete():
    a = load_splits(DataConfig(kind="digits", split_seed=0))
    b = load_splits(DataConfig(kind="digits", split_seed=0))
    np.testing.assert_array_equal(a.x_train, b.x_train)
    sizes = (len(a.y_train), len(a.y_val), len(a.y_test))
    assert sizes == (1079, 359, 359)  # round(1797 * 0.2) = 359 for val and test
    assert a.num_classes == 10 and a.num_features == 64
    assert a.x_train.dtype == np.float32 and a.y_train.dtype == np.int64
    # standardised on the training split only
    np.testing.assert_allclose(a.x_train.mean(axis=0), 0.0, atol=1e-5)
    rows = (
        {tuple(r) for r in a.x_train} | {tuple(r) for r in a.x_val} | {tuple(r) for r in a.x_test}
    )
    assert len(rows) > 1700  # splits hold (nearly all distinct) images, not copies of one another
    c = load_splits(DataConfig(kind="digits", split_seed=1))
    assert not np.array_equal(a.y_val, c.y_val)


def test_digits_read_directly_match_scikit_learn():
    from sklearn.datasets import load_digits

    from trainables.data._splits import _load_digits

    x, y = _load_digits()
    bunch = load_digits()
    np.testing.assert_array_equal(x, bunch.data.astype(np.float32))
    np.testing.assert_array_equal(y, bunch.target)
    assert x.dtype == np.float32 and y.dtype == np.int64 and x.flags.c_contiguous


def test_digits_load_without_importing_scikit_learn():
    import subprocess
    import sys

    probe = "import sys; from trainables.config import DataConfig; "
    probe += "from trainables.data import load_splits; load_splits(DataConfig(kind='digits')); "
    probe += "print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _toy(n=50):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 3)).astype(np.float32), rng.integers(0, 3, size=n)


def test_npz_and_parquet_files_load_the_same_rows(tmp_path):
    x, y = _toy()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    pq.write_table(
        pa.table({"f0": x[:, 0], "f1": x[:, 1], "f2": x[:, 2], "target": y}), tmp_path / "d.parquet"
    )
    a = load_splits(DataConfig(kind="file", path=str(tmp_path / "d.npz"), standardize=False))
    b = load_splits(
        DataConfig(
            kind="file", path=str(tmp_path / "d.parquet"), label_column="target", standardize=False
        )
    )
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert (len(a.y_train), len(a.y_val), len(a.y_test)) == (30, 10, 10)


def test_bad_files_name_the_problem(tmp_path):
    x, y = _toy()
    np.savez(tmp_path / "no_y.npz", x=x)
    with pytest.raises(ValueError, match="needs arrays 'x' and 'y'"):
        load_splits(DataConfig(kind="file", path=str(tmp_path / "no_y.npz")))
    pq.write_table(pa.table({"f0": x[:, 0], "y": y}), tmp_path / "d.parquet")
    with pytest.raises(ValueError, match="label_column: 'label' is not a column"):
        load_splits(DataConfig(kind="file", path=str(tmp_path / "d.parquet")))
    np.savez(tmp_path / "float_y.npz", x=x, y=y + 0.5)
    with pytest.raises(ValueError, match="labels must be integers"):
        load_splits(DataConfig(kind="file", path=str(tmp_path / "float_y.npz")))
