"""A damaged teacher bank is never read silently: the teacher phase rebuilds a damaged shard
alone from the teacher's run; a damaged teacher run is moved aside and trained again; a
student trial reading a damaged bank fails naming the damaged file."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from ray import tune

from search.spec import load_spec
from search.teacher import ensure_teacher
from trainables import OptimConfig, StudentConfig, train_student
from trainables.distill import open_bank, open_run, verify_bank

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"


def _spec(storage, name):
    # shards of 0.01 MiB: the training split of digits (1079 x 10 float32 logits) in 5 shards
    return load_spec(
        QUICKSTART,
        ["teacher.optim.steps=100", "teacher.bank.shard_mb=0.01", f"storage={storage}",
         f"name={name}"],
    )  # fmt: skip


def _overwrite_middle(path, n=800):
    """800 bytes of 0x7f (floats of 3.4e38) in the middle of a file, as the tester did."""
    size = path.stat().st_size
    with open(path, "r+b") as file:
        file.seek(size // 2 - n // 2)
        file.write(b"\x7f" * n)


def _shard(bank, split, i=0):
    return bank / "shards" / f"step-{open_bank(bank).step:09d}" / f"{split}-{i:05d}.arrow"


def _files(bank):
    """Each file of the bank's shards and its mtime."""
    return {p.relative_to(bank).as_posix(): p.stat().st_mtime_ns
            for p in (bank / "shards").rglob("*") if p.is_file()}  # fmt: skip


@pytest.fixture(scope="module")
def built(ray_session, tmp_path_factory):
    """A storage root whose teacher bank the teacher phase has built once."""
    storage = tmp_path_factory.mktemp("storage")
    return storage, ensure_teacher(_spec(storage, "first"))


def _copy(built, tmp_path):
    """A copy of the built storage (the other tests keep the intact bank): its bank and the
    teacher's run beside it."""
    storage = tmp_path / "storage"
    shutil.copytree(built[0] / "_teachers", storage / "_teachers")
    bank = storage / "_teachers" / built[1].parent.name / built[1].name
    return storage, bank, bank.parent / "teacher"


@pytest.mark.ray
def test_an_intact_bank_is_reused(built, capsys):
    storage, bank = built
    assert bank.parent.parent == storage / "_teachers" and bank.name.startswith("bank-")
    assert (bank.parent / "teacher" / "run.json").is_file()
    assert ensure_teacher(_spec(storage, "second")) == bank
    out = capsys.readouterr().out
    assert f"teacher: reusing {bank}" in out and "training" not in out and "bank:" not in out


@pytest.mark.ray
def test_a_damaged_shard_is_rebuilt_alone_from_the_teachers_run(built, tmp_path, capsys):
    storage, bank, run = _copy(built, tmp_path)
    before = {split: open_bank(bank).outputs(split).dense().copy()
              for split in ("train", "val", "test")}  # fmt: skip
    assert len(open_bank(bank).shards[str(open_bank(bank).step)]["train"]) == 5
    run_json, files = (run / "run.json").read_bytes(), _files(bank)
    run_stamp = (run / "run.json").stat().st_mtime_ns
    damaged = _shard(bank, "train", 2)
    _overwrite_middle(damaged)

    assert ensure_teacher(_spec(storage, "after")) == bank
    lines = capsys.readouterr().out.splitlines()
    (said,) = [line for line in lines if str(damaged) in line]
    assert said == f"teacher: {damaged} is corrupt (checksum mismatch); building it again"
    assert not any(line.startswith("teacher: training") for line in lines)  # not retrained
    (planned,) = [line for line in lines if line.startswith("bank: ") and "to build" in line]
    assert planned.startswith("bank: 1 of 9 shards to build") and planned.endswith(", 8 kept")
    assert not (storage / "after" / "tune" / "teacher").exists()  # no teacher trial ran
    assert (run / "run.json").read_bytes() == run_json  # the same run, untouched
    assert (run / "run.json").stat().st_mtime_ns == run_stamp
    assert not list(run.parent.glob(".teacher.corrupt-*"))
    after = _files(bank)
    rebuilt = {"shards/step-000000100/train-00002.arrow",
               "shards/step-000000100/train-00002.arrow.json"}  # fmt: skip
    assert after.keys() == files.keys()
    assert {name for name in files if after[name] != files[name]} == rebuilt  # only that one
    verify_bank(bank)  # the rebuilt bank is whole
    opened = open_bank(bank)
    assert opened.extra["run_id"] == open_run(run).run_id
    for split, values in before.items():  # and reads as it did before the damage
        np.testing.assert_array_equal(opened.outputs(split).dense(), values)


@pytest.mark.ray
def test_a_damaged_teacher_run_is_moved_aside_and_trained_again(built, tmp_path, capsys):
    storage, bank, run = _copy(built, tmp_path)
    old_id = open_run(run).run_id
    weights = run / f"step-{open_run(run).step:09d}.pt"
    size = weights.stat().st_size
    os.truncate(weights, size // 2)
    (bank / "manifest.json").unlink()  # a bank left incomplete: the run is needed again

    assert ensure_teacher(_spec(storage, "after")) == bank
    lines = capsys.readouterr().out.splitlines()
    (moved,) = [line for line in lines if "moved the teacher's run" in line]
    (aside,) = run.parent.glob(".teacher.corrupt-*")
    assert moved == (
        f"teacher: {weights} is truncated ({size // 2} bytes, {size} written); moved the "
        f"teacher's run to {aside}, training again"
    )
    assert (aside / weights.name).stat().st_size == size // 2  # kept as it was found
    assert json.loads((aside / "run.json").read_text())["run_id"] == old_id
    assert any(line.startswith("teacher: training the teacher") for line in lines)
    assert (storage / "after" / "tune" / "teacher").is_dir()  # a teacher trial ran
    new = open_run(run)
    new.verify()
    assert new.run_id != old_id
    # no shard of the old run is kept: every one is built again from the new run
    assert any(line.startswith("bank: 9 of 9 shards to build") for line in lines)
    verify_bank(bank)
    opened = open_bank(bank)
    assert opened.extra["run_id"] == new.run_id
    for name in opened.files:
        if name.endswith(".arrow") and name.startswith("shards/"):
            record = json.loads((bank / f"{name}.json").read_text())
            assert record["run_id"] == new.run_id
    assert np.isfinite(opened.outputs("train").dense()).all()


@pytest.mark.ray
def test_a_student_trial_on_a_corrupted_bank_fails_naming_the_file(built, tmp_path):
    bank = tmp_path / "bank"
    shutil.copytree(built[1], bank)
    damaged = _shard(bank, "train", 1)
    _overwrite_middle(damaged)
    config = StudentConfig(teacher_bank=str(bank), optim=OptimConfig(steps=50), eval_every=25)
    (result,) = tune.Tuner(
        train_student,
        param_space=config.model_dump(),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), verbose=0),
    ).fit()
    assert result.error is not None and "step" not in (result.metrics or {})  # never trained
    error = str(result.error)
    assert f"teacher bank file {damaged} is corrupt (checksum mismatch)" in error
    assert f"or delete {bank}" in error


@pytest.mark.ray
def test_a_failed_teacher_is_one_line_naming_its_error(ray_session, tmp_path):
    """A teacher trial that raises (here: ``init_from`` weights of another shape) ends the
    sweep with one line, the error's own last line, and where Tune kept the whole of it."""
    import torch

    from search.sweep import run_sweep
    from search.teacher import TeacherError

    weights = tmp_path / "other.pt"
    torch.save({"layers.0.weight": torch.zeros(3, 3)}, weights)
    spec = load_spec(
        QUICKSTART,
        ["teacher.optim.steps=50", f"teacher.init_from={weights}", f"storage={tmp_path}",
         "name=failing"],
    )  # fmt: skip
    with pytest.raises(TeacherError) as info:
        run_sweep(spec)
    message = str(info.value)
    assert "\n" not in message and message.startswith("teacher training failed: ")
    assert "Error" in message and f"{tmp_path}/failing/tune" in message
    assert "Unexpected key(s)" in info.value.detail  # the whole error, for whoever digs
