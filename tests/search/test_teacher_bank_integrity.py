"""A damaged teacher bank is never read silently: the teacher phase moves it aside and
rebuilds it; a student trial reading one fails naming the damaged file."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from ray import tune

from search.spec import load_spec
from search.teacher import ensure_teacher
from trainables import OptimConfig, StudentConfig, train_student
from trainables.distill import open_bank, verify_bank

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"


def _spec(storage, name):
    return load_spec(QUICKSTART, ["teacher.optim.steps=100", f"storage={storage}", f"name={name}"])


def _overwrite_middle(path, n=800):
    """800 bytes of 0x7f (floats of 3.4e38) in the middle of a file, as the tester did."""
    size = path.stat().st_size
    with open(path, "r+b") as file:
        file.seek(size // 2 - n // 2)
        file.write(b"\x7f" * n)


@pytest.fixture(scope="module")
def built(ray_session, tmp_path_factory):
    """A storage root whose teacher bank the teacher phase has built once."""
    storage = tmp_path_factory.mktemp("storage")
    return storage, ensure_teacher(_spec(storage, "first"))


@pytest.mark.ray
def test_an_intact_bank_is_reused(built, capsys):
    storage, bank = built
    assert ensure_teacher(_spec(storage, "second")) == bank
    out = capsys.readouterr().out
    assert f"teacher: reusing {bank}" in out and "training" not in out


@pytest.mark.ray
def test_a_corrupted_bank_is_moved_aside_and_rebuilt(built, tmp_path, capsys):
    storage = tmp_path / "storage"  # a copy: the other tests keep the intact bank
    shutil.copytree(built[0] / "_teachers", storage / "_teachers")
    bank = storage / "_teachers" / built[1].name
    damaged = bank / f"step-{open_bank(bank).step:09d}" / "train.arrow"
    _overwrite_middle(damaged)

    assert ensure_teacher(_spec(storage, "after")) == bank
    lines = capsys.readouterr().out.splitlines()
    (moved,) = [line for line in lines if "moved the bank" in line]
    assert str(damaged) in moved and "corrupt (checksum mismatch)" in moved
    assert any(line.startswith("teacher: training") for line in lines)
    (aside,) = (storage / "_teachers").glob(f".{bank.name}.corrupt-*")
    assert (aside / damaged.relative_to(bank)).read_bytes().count(b"\x7f" * 800) == 1  # kept
    verify_bank(bank)  # the rebuilt bank is whole
    assert np.isfinite(open_bank(bank).logits["train"]).all()


@pytest.mark.ray
def test_a_student_trial_on_a_corrupted_bank_fails_naming_the_file(built, tmp_path):
    bank = tmp_path / "bank"
    shutil.copytree(built[1], bank)
    damaged = bank / f"step-{open_bank(bank).step:09d}" / "train.arrow"
    _overwrite_middle(damaged)
    config = StudentConfig(teacher_bank=str(bank), optim=OptimConfig(steps=50), eval_every=25)
    (result,) = tune.Tuner(
        train_student,
        param_space=config.model_dump(),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), verbose=0),
    ).fit()
    assert result.error is not None and "step" not in (result.metrics or {})  # never trained
    message = f"teacher bank file {damaged} is corrupt (checksum mismatch); delete {bank}"
    assert message in str(result.error)


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
