import os
import pickle
import stat

import numpy as np
import pyarrow as pa
import pytest

from trainables.distill import (
    BankCorruptError,
    BankWriter,
    _bank,
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


# Integrity: meta.json holds each file's size and checksum; a damaged bank is never read.


def _big_bank(tmp_path, name="bank"):
    """A bank with two checkpoints whose files are large enough to damage 800 bytes of."""
    rng = np.random.default_rng(1)
    with BankWriter(tmp_path / name) as writer:
        for step in (400, 800):
            writer.add_checkpoint(
                step,
                {
                    s: rng.normal(size=(n, 10)).astype(np.float32)
                    for s, n in [("train", 2000), ("val", 300), ("test", 300)]
                },
            )
        return writer.commit(metrics={"val_accuracy": 0.5}, scores={"confidence": rng.random(2000)})


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


def test_bytes_overwritten_inside_a_logits_file_are_caught_naming_the_file(tmp_path):
    bank = _big_bank(tmp_path)
    damaged = bank / "step-000000800" / "train.arrow"
    _overwrite_middle(damaged)
    with pytest.raises(BankCorruptError) as error:
        open_bank(bank)
    _one_line_naming(error, damaged, "corrupt (checksum mismatch)")
    assert isinstance(error.value, ValueError) and error.value.path == damaged
    assert not bank_complete(bank)


def test_a_truncated_file_is_caught_naming_the_file(tmp_path):
    bank = _big_bank(tmp_path)
    damaged = bank / "step-000000800" / "val.arrow"
    os.truncate(damaged, damaged.stat().st_size // 2)
    with pytest.raises(BankCorruptError) as error:
        open_bank(bank)
    _one_line_naming(error, damaged, "truncated")


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
        lambda text: text.replace('"format": 3', '"format": 2'),  # an older bank's meta
    ],
    ids=["unreadable", "altered", "old-format"],
)
def test_a_damaged_meta_json_is_caught_naming_it(tmp_path, damage):
    bank = _big_bank(tmp_path)
    meta = bank / "meta.json"
    text = meta.read_text()
    assert damage(text) != text
    meta.write_text(damage(text))
    with pytest.raises(BankCorruptError) as error:
        open_bank(bank)
    _one_line_naming(error, meta, "meta.json")
    assert not bank_complete(bank)


def test_a_damaged_earlier_checkpoint_fails_when_read_and_in_a_full_check(tmp_path):
    bank = _big_bank(tmp_path)
    damaged = bank / "step-000000400" / "test.arrow"
    _overwrite_middle(damaged)
    opened = open_bank(bank)  # reads only the final checkpoint and the scores
    with pytest.raises(BankCorruptError) as error:
        opened.checkpoint_logits(400)
    _one_line_naming(error, damaged, "checksum mismatch")
    with pytest.raises(BankCorruptError, match="step-000000400"):
        verify_bank(bank)
    assert not bank_complete(bank)


def test_a_clean_bank_is_hashed_once_per_process(tmp_path, monkeypatch):
    bank = _big_bank(tmp_path)
    hashed = []
    real = _bank._sha256
    monkeypatch.setattr(_bank, "_sha256", lambda path: hashed.append(path) or real(path))
    first = open_bank(bank)
    assert sorted(p.relative_to(bank).as_posix() for p in hashed) == [
        "scores.arrow",
        *(f"step-000000800/{s}.arrow" for s in ("test", "train", "val")),
    ]
    second = open_bank(bank)
    second.checkpoint_logits(800)
    assert len(hashed) == 4  # nothing hashed again
    np.testing.assert_array_equal(first.logits["train"], second.logits["train"])
    first.checkpoint_logits(400)
    verify_bank(bank)
    assert len(hashed) == 7  # the other checkpoint's three files, once


def test_a_file_changed_after_its_check_is_checked_again(tmp_path):
    bank = _big_bank(tmp_path)
    open_bank(bank)
    damaged = bank / "step-000000800" / "train.arrow"
    before = damaged.stat().st_mtime_ns
    _overwrite_middle(damaged)
    os.utime(damaged, ns=(before + 10**9, before + 10**9))  # as a later write would
    with pytest.raises(BankCorruptError, match="checksum mismatch"):
        open_bank(bank)


def test_the_error_survives_pickling_as_ray_ships_it(tmp_path):
    error = BankCorruptError(tmp_path / "b" / "scores.arrow", "missing", tmp_path / "b")
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) and again.path == error.path and again.bank == error.bank


def test_a_committed_bank_has_the_modes_of_a_plain_mkdir_and_open(tmp_path):
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
