import numpy as np
import pyarrow as pa
import pytest

from trainables.distill import bank_complete, open_bank, write_bank


def _logits():
    rng = np.random.default_rng(0)
    return {
        s: rng.normal(size=(n, 4)).astype(np.float32)
        for s, n in [("train", 9), ("val", 3), ("test", 2)]
    }


def test_round_trip(tmp_path):
    logits = _logits()
    write_bank(
        tmp_path / "t", logits, step=80, metrics={"val_accuracy": 0.5}, history=[{"step": 80}]
    )
    out = open_bank(tmp_path / "t")
    for split, array in logits.items():
        np.testing.assert_array_equal(out.logits[split], array)
    assert out.step == 80 and out.metrics == {"val_accuracy": 0.5} and out.history == [{"step": 80}]


def test_a_write_that_dies_midway_leaves_nothing_that_reads_as_complete(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = pa.ipc.new_file

    def dies_on_second_split(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(pa.ipc, "new_file", dies_on_second_split)
    with pytest.raises(OSError, match="disk full"):
        write_bank(tmp_path / "t", _logits(), step=1, metrics={})
    assert not bank_complete(tmp_path / "t")
    assert list(tmp_path.iterdir()) == []  # no temporary directory left behind either
    with pytest.raises(FileNotFoundError, match="missing or incomplete"):
        open_bank(tmp_path / "t")
