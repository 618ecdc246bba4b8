import json
import os
import pickle
import stat

import numpy as np
import pyarrow as pa
import pytest

from trainables.distill import (
    BankCorruptError,
    _files,
    bank_complete,
    open_bank,
    verify_bank,
    write_bank,
)


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
        dense = out.outputs(split).dense()
        assert dense.dtype == np.float32 and dense.shape == array.shape
        np.testing.assert_array_equal(dense, array)
        assert len(out.outputs(split)) == len(array)
    assert out.step == 80 and out.metrics == {"val_accuracy": 0.5} and out.history == [{"step": 80}]
    assert out.checkpoints == [80] and out.shape == (4,)
    assert out.layout.top_k is None and out.top_k is None
    assert (tmp_path / "t" / "shards" / "step-000000080" / "train-00000.arrow").is_file()


def test_a_split_across_several_shards_reads_back_whole_and_by_rows(tmp_path):
    rng = np.random.default_rng(3)
    logits = {
        s: rng.normal(size=(n, 3, 5)).astype(np.float32)  # per-token: (positions, vocab)
        for s, n in [("train", 1000), ("val", 130), ("test", 7)]
    }
    per_shard = 100  # examples of 60 bytes: shard_mb set so that 100 fit in one shard
    bank = write_bank(tmp_path / "b", logits, step=5, metrics={}, shard_mb=per_shard * 60 / 2**20)
    opened = open_bank(bank)
    assert opened.shape == (3, 5)
    shards = sorted(p.name for p in (bank / "shards" / "step-000000005").glob("*.arrow"))
    assert [n for n in shards if n.startswith("train-")] == [
        f"train-{i:05d}.arrow" for i in range(10)
    ]
    assert [n for n in shards if n.startswith("val-")] == ["val-00000.arrow", "val-00001.arrow"]
    for split, array in logits.items():
        outputs = opened.outputs(split)
        assert len(outputs) == len(array)
        np.testing.assert_array_equal(outputs.dense(), array)
        rows = rng.integers(0, len(array), size=257)  # random, repeated, across every shard
        got = outputs.gather(rows)["logits"]
        np.testing.assert_array_equal(got, array[rows].reshape(len(rows), -1))
    rows = np.array([999, 0, 100, 99, 500, 500, 101])  # shard edges, out of order
    np.testing.assert_array_equal(
        opened.outputs("train").gather(rows)["logits"], logits["train"][rows].reshape(7, -1)
    )


def test_several_checkpoints_each_read_back(tmp_path):
    rng = np.random.default_rng(4)
    by_step = {
        step: {s: rng.normal(size=(n, 4)).astype(np.float32)
               for s, n in [("train", 6), ("val", 2), ("test", 2)]}
        for step in (10, 20, 30)
    }  # fmt: skip
    opened = open_bank(write_bank(tmp_path / "b", by_step, metrics={}))
    assert opened.checkpoints == [10, 20, 30] and opened.step == 30
    for step, splits in by_step.items():
        for split, array in splits.items():
            np.testing.assert_array_equal(opened.outputs(split, step).dense(), array)
    np.testing.assert_array_equal(opened.outputs("val").dense(), by_step[30]["val"])
    with pytest.raises(ValueError, match="not in the bank"):
        opened.outputs("val", 15)


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
    assert not (tmp_path / "t" / "manifest.json").exists()
    # only whole shards with their records: no hidden partial file left behind either
    left = sorted(p.relative_to(tmp_path / "t").as_posix() for p in (tmp_path / "t").rglob("*")
                  if p.is_file())  # fmt: skip
    assert left == ["shards/step-000000001/train-00000.arrow",
                    "shards/step-000000001/train-00000.arrow.json"]  # fmt: skip
    with pytest.raises(FileNotFoundError, match="missing or incomplete"):
        open_bank(tmp_path / "t")


# Integrity: manifest.json holds each file's size and checksum; a damaged bank is never read.


def _big_bank(tmp_path, name="bank"):
    """A bank with two checkpoints whose shards are large enough to damage 800 bytes of (two
    shards per split and checkpoint)."""
    rng = np.random.default_rng(1)
    by_step = {
        step: {
            s: rng.normal(size=(n, 10)).astype(np.float32)
            for s, n in [("train", 2000), ("val", 300), ("test", 300)]
        }
        for step in (400, 800)
    }
    return write_bank(
        tmp_path / name, by_step, metrics={"val_accuracy": 0.5},
        scores={"confidence": rng.random(2000)}, shard_mb=1000 * 40 / 2**20,
    )  # fmt: skip


def _shard(bank, step, split, i=0):
    return bank / "shards" / f"step-{step:09d}" / f"{split}-{i:05d}.arrow"


def _overwrite_middle(path, n=800):
    """What the tester did: ``n`` bytes of 0x7f (floats of 3.4e38) in the middle of a file."""
    size = path.stat().st_size
    with open(path, "r+b") as file:
        file.seek(size // 2 - n // 2)
        file.write(b"\x7f" * n)
    assert path.stat().st_size == size


def _one_line_naming(error, path, problem):
    message = str(error.value)
    assert "\n" not in message and str(path) in message and problem in message, message


def test_bytes_overwritten_inside_a_shard_are_caught_naming_the_shard(tmp_path):
    bank = _big_bank(tmp_path)
    damaged = _shard(bank, 800, "train", 1)
    _overwrite_middle(damaged)
    opened = open_bank(bank)  # the manifest and the scores only
    outputs = opened.outputs("train")
    outputs.gather(np.arange(10))  # the first shard is intact
    with pytest.raises(BankCorruptError) as error:
        outputs.gather(np.array([5, 1500]))
    _one_line_naming(error, damaged, "corrupt (checksum mismatch)")
    assert isinstance(error.value, ValueError) and error.value.path == damaged
    assert error.value.bank == bank
    with pytest.raises(BankCorruptError, match="checksum mismatch"):
        open_bank(bank).outputs("train").dense()
    assert not bank_complete(bank)


def test_a_truncated_shard_is_caught_naming_the_shard(tmp_path):
    bank = _big_bank(tmp_path)
    damaged = _shard(bank, 800, "val")
    os.truncate(damaged, damaged.stat().st_size // 2)
    with pytest.raises(BankCorruptError) as error:
        open_bank(bank).outputs("val").dense()
    _one_line_naming(error, damaged, "truncated")


def test_a_missing_shard_is_caught_naming_the_shard(tmp_path):
    bank = _big_bank(tmp_path)
    damaged = _shard(bank, 800, "test")
    damaged.unlink()
    with pytest.raises(BankCorruptError) as error:
        open_bank(bank).outputs("test").gather(np.array([0]))
    _one_line_naming(error, damaged, "missing")
    with pytest.raises(BankCorruptError, match="missing"):
        verify_bank(bank)


def test_a_missing_scores_file_is_caught_naming_the_file(tmp_path):
    bank = _big_bank(tmp_path)
    (bank / "scores.arrow").unlink()
    with pytest.raises(BankCorruptError) as error:
        open_bank(bank)
    _one_line_naming(error, bank / "scores.arrow", "missing")


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],  # cut short: not JSON
        lambda text: text.replace('"val_accuracy": 0.5', '"val_accuracy": 0.9'),  # still JSON
        lambda text: text.replace('"format": 4', '"format": 3'),  # an older bank's manifest
    ],
    ids=["unreadable", "altered", "old-format"],
)
def test_a_damaged_manifest_is_caught_naming_it(tmp_path, damage):
    bank = _big_bank(tmp_path)
    manifest = bank / "manifest.json"
    text = manifest.read_text()
    assert damage(text) != text
    manifest.write_text(damage(text))
    with pytest.raises(BankCorruptError) as error:
        open_bank(bank)
    _one_line_naming(error, manifest, "manifest.json")
    assert not bank_complete(bank)
    with pytest.raises(BankCorruptError, match="manifest.json"):
        verify_bank(bank)


def test_a_shard_not_listed_in_the_manifest_is_never_read(tmp_path):
    bank = _big_bank(tmp_path)
    manifest = bank / "manifest.json"
    body = json.loads(manifest.read_text())
    name = "shards/step-000000800/train-00001.arrow"
    del body["files"][name]
    _files.write_json(manifest, {k: v for k, v in body.items() if k != "meta_sha256"})
    with pytest.raises(BankCorruptError) as error:
        open_bank(bank).outputs("train").dense()
    _one_line_naming(error, bank / name, "not listed in the manifest")


def test_a_damaged_earlier_checkpoint_fails_when_read_and_in_a_full_check(tmp_path):
    bank = _big_bank(tmp_path)
    damaged = _shard(bank, 400, "test")
    _overwrite_middle(damaged)
    opened = open_bank(bank)
    opened.outputs("test").dense()  # the final checkpoint is intact
    with pytest.raises(BankCorruptError) as error:
        opened.outputs("test", 400).dense()
    _one_line_naming(error, damaged, "checksum mismatch")
    with pytest.raises(BankCorruptError, match="step-000000400"):
        verify_bank(bank)
    assert not bank_complete(bank)


def test_a_clean_bank_is_hashed_once_per_process(tmp_path, monkeypatch):
    bank = _big_bank(tmp_path)
    hashed = []
    real = _files.sha256_file
    monkeypatch.setattr(_files, "sha256_file", lambda path: hashed.append(path) or real(path))
    first = open_bank(bank)
    assert [p.relative_to(bank).as_posix() for p in hashed] == ["scores.arrow"]
    train = first.outputs("train").dense()
    assert sorted(p.relative_to(bank).as_posix() for p in hashed) == [
        "scores.arrow",
        "shards/step-000000800/train-00000.arrow",
        "shards/step-000000800/train-00001.arrow",
    ]
    second = open_bank(bank)
    np.testing.assert_array_equal(second.outputs("train").dense(), train)
    assert len(hashed) == 3  # nothing hashed again
    first.outputs("val", 400).dense()
    assert len(hashed) == 4  # one shard of the other checkpoint, once
    verify_bank(bank)
    files = json.loads((bank / "manifest.json").read_text())["files"]
    assert len(files) == 1 + 2 * (2 + 1 + 1) and len(hashed) == len(files)  # each once
    verify_bank(bank)
    assert bank_complete(bank) and len(hashed) == len(files)


def test_a_file_changed_after_its_check_is_checked_again(tmp_path):
    bank = _big_bank(tmp_path)
    verify_bank(bank)  # every file checked, and remembered as checked
    damaged = _shard(bank, 800, "train")
    before = damaged.stat().st_mtime_ns
    _overwrite_middle(damaged)
    os.utime(damaged, ns=(before + 10**9, before + 10**9))  # as a later write would
    with pytest.raises(BankCorruptError, match="checksum mismatch"):
        open_bank(bank).outputs("train").gather(np.array([0]))
    with pytest.raises(BankCorruptError, match="checksum mismatch"):
        verify_bank(bank)


def test_a_file_replaced_after_its_check_is_checked_again(tmp_path):
    bank = _big_bank(tmp_path)
    verify_bank(bank)
    damaged = _shard(bank, 800, "val")
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stamp = damaged.stat()
    replacement = damaged.with_name(".replacement")
    replacement.write_bytes(bytes(data))  # same size; a new inode
    os.utime(replacement, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # even the same mtime
    os.replace(replacement, damaged)
    with pytest.raises(BankCorruptError, match="checksum mismatch"):
        open_bank(bank).outputs("val").dense()
    assert not bank_complete(bank)


def test_verify_bank_and_bank_complete(tmp_path):
    assert not bank_complete(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="missing or incomplete"):
        verify_bank(tmp_path / "nothing")
    bank = _big_bank(tmp_path)
    verify_bank(bank)
    assert bank_complete(bank)
    _overwrite_middle(bank / "scores.arrow", n=16)
    assert not bank_complete(bank)
    with pytest.raises(BankCorruptError, match="scores.arrow"):
        verify_bank(bank)


def test_the_error_survives_pickling_as_ray_ships_it(tmp_path):
    error = BankCorruptError(tmp_path / "b" / "scores.arrow", "missing", tmp_path / "b")
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) and again.path == error.path and again.bank == error.bank


def test_a_written_bank_has_the_modes_of_a_plain_mkdir_and_open(tmp_path):
    old = os.umask(0o002)  # group-writable: 0o775 / 0o664, neither 0o700 nor the default
    try:
        bank = _big_bank(tmp_path)
        os.mkdir(tmp_path / "plain")
        (tmp_path / "plain.txt").write_text("")
    finally:
        os.umask(old)
    dir_mode = stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    file_mode = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert (dir_mode, file_mode) == (0o775, 0o664)
    assert stat.S_IMODE(bank.stat().st_mode) == dir_mode
    for path in bank.rglob("*"):
        want = dir_mode if path.is_dir() else file_mode
        assert stat.S_IMODE(path.stat().st_mode) == want, path
