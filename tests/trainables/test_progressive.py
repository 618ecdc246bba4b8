"""Progressive distillation: transition detection, checkpoint schedules, the paper's loss form,
sparse parity data, and the teacher bank's checkpoints through the real loops."""

import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from trainables.bank import build_bank, teacher_bank
from trainables.config import (
    DataConfig,
    DistillConfig,
    ModelConfig,
    OptimConfig,
    StudentConfig,
    TeacherConfig,
    TeacherScheduleConfig,
)
from trainables.data import sparse_parity
from trainables.distill import bank_complete, kd_loss, open_bank, open_run, run_intact
from trainables.distill._checkpoints import (
    CheckpointSchedule,
    detect_transition,
    transition_checkpoint,
)
from trainables.loops import student_loop, teacher_loop
from trainables.loops._teacher import checkpoint_steps


def test_detects_the_steepest_rise():
    steps = [100, 200, 300, 400, 500, 600, 700]
    acc = [0.50, 0.51, 0.50, 0.62, 0.90, 0.99, 1.00]
    t = detect_transition(steps, acc, window=2)
    # rises over 2 intervals: .00, .11, .40, .37, .10 -> window 300..500, midpoint (0.5+0.9)/2 = 0.7
    assert t == {"start": 300, "end": 500, "rise": pytest.approx(0.40), "step": 500}
    assert transition_checkpoint(t, [250, 400, 600, 700]) == 400  # inside the window, nearest
    assert transition_checkpoint(None, [250, 700]) == 700
    assert detect_transition([100], [0.5]) is None


def test_checkpoint_schedules_by_hand():
    kept = (100, 200, 300, 400)
    lockstep = CheckpointSchedule("lockstep", kept, total_steps=500)
    assert [lockstep(s) for s in (1, 100, 101, 399, 400, 450)] == [100, 100, 200, 400, 400, 400]
    assert CheckpointSchedule("lockstep", kept, 500, ratio=2.0)(150) == 300
    two = CheckpointSchedule("two_shot", kept, total_steps=100, first=200, switch_at=0.3)
    assert [two(s) for s in (1, 30, 31, 100)] == [200, 200, 400, 400]
    uniform = CheckpointSchedule("uniform_k", kept, total_steps=100, k=2)
    assert [uniform(s) for s in (1, 50, 51, 100)] == [100, 100, 400, 400]
    explicit = CheckpointSchedule(
        "explicit", kept, total_steps=10, steps=(300, 100, 400), switches=(0.2, 0.5)
    )
    assert [explicit(s) for s in range(1, 11)] == [300, 300, 100, 100, 100, 400, 400, 400, 400, 400]
    assert CheckpointSchedule("final", kept, 10)(1) == 400
    with pytest.raises(ValueError, match="not in the bank"):
        CheckpointSchedule("two_shot", kept, 10, first=150)


def test_progressive_loss_form_by_hand():
    s, t, y = torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([[2.0, 1.0]]), torch.tensor([1])
    # T = 1: teacher p = softmax([2, 1]); student log q = [log 1/4, log 3/4]; no T^2
    p = torch.softmax(t, dim=1)[0]
    expected_kd = -(p[0] * math.log(0.25) + p[1] * math.log(0.75))
    loss = kd_loss(s, t, y, temperature=1.0, alpha=0.0, form="progressive")
    assert loss.kd.item() == pytest.approx(expected_kd.item(), rel=1e-6)
    # T -> 0: the teacher's hard argmax label (class 0) even at 1e-20
    hard = kd_loss(s, t, y, temperature=1e-20, alpha=0.0, form="progressive")
    assert hard.kd.item() == pytest.approx(-math.log(0.25), rel=1e-6)
    # below FLOAT64_BELOW, logits / T would overflow float32 (large logits): float64 there
    big = t * 1e7
    for tiny in (1e-25, 1e-34):
        hard = kd_loss(s, big, y, temperature=tiny, alpha=0.0, form="progressive")
        assert hard.kd.item() == pytest.approx(-math.log(0.25), rel=1e-6)
    assert loss.ce.item() == pytest.approx(-math.log(0.75), rel=1e-6)


def test_sparse_parity_labels_and_noise():
    data = sparse_parity(n_bits=10, k=3, train_size=2000, holdout_size=500, label_noise=0.2, seed=0)
    parity = (np.prod(data.x_test[:, :3], axis=1) < 0).astype(int)
    np.testing.assert_array_equal(data.y_test, parity)  # holdouts are clean
    noisy = np.mean(data.y_train != (np.prod(data.x_train[:, :3], axis=1) < 0))
    assert 0.17 < noisy < 0.23
    assert set(np.unique(data.x_train)) == {-1.0, 1.0}


def test_checkpoint_steps():
    assert checkpoint_steps(100, every=30, log_spaced=0) == {30, 60, 90, 100}
    assert checkpoint_steps(1000, every=None, log_spaced=4) == {1, 10, 100, 1000}


@pytest.fixture(scope="module")
def digits_bank(tmp_path_factory):
    out = tmp_path_factory.mktemp("bank") / "b"
    cfg = TeacherConfig(
        optim=OptimConfig(lr=1e-3, batch_size=64, steps=200),
        eval_every=50,
        checkpoint_every=25,
    )
    teacher_bank(cfg, out)
    return out


def test_bank_keeps_every_checkpoint_with_its_logits(digits_bank):
    bank = open_bank(digits_bank)
    assert bank.checkpoints == list(range(25, 201, 25)) and bank.step == 200
    early, final = bank.outputs("val", 25).dense(), bank.outputs("val", 200).dense()
    assert early.shape == final.shape == (359, 10) and not np.allclose(early, final)
    np.testing.assert_array_equal(final, bank.outputs("val").dense())
    assert bank.transition is not None and bank.transition["checkpoint"] in bank.checkpoints
    run = open_run(digits_bank / "teacher")  # the teacher's weights at every kept checkpoint
    assert run.checkpoints == bank.checkpoints and run.step == 200
    for step in bank.checkpoints:
        assert (digits_bank / "teacher" / f"step-{step:09d}.pt").is_file()


def test_student_follows_the_checkpoint_schedule(digits_bank):
    base = dict(teacher_bank=str(digits_bank), optim=OptimConfig(steps=200), eval_every=50)
    lock = StudentConfig(teacher_schedule=TeacherScheduleConfig(kind="lockstep"), **base)
    assert [r["teacher_checkpoint"] for r, _ in student_loop(lock)] == [50, 100, 150, 200]
    two = StudentConfig(
        teacher_schedule=TeacherScheduleConfig(kind="two_shot", checkpoint=50, switch_at=0.5),
        **base,
    )
    assert [r["teacher_checkpoint"] for r, _ in student_loop(two)] == [50, 50, 200, 200]
    hard = StudentConfig(
        distill=DistillConfig(loss="progressive", temperature=1e-4, alpha=0.0), **base
    )
    *_, (last, _) = student_loop(hard)
    assert last["val_accuracy"] > 0.85


def test_a_loaded_teacher_is_banked_without_training(digits_bank, tmp_path):
    cfg = TeacherConfig(
        init_from=str(digits_bank / "teacher" / "step-000000200.pt"), train=False,
        output_dir=str(tmp_path / "run"),
    )  # fmt: skip
    assert list(teacher_loop(cfg)) == []
    build_bank(cfg, tmp_path / "run", tmp_path / "loaded", use_ray=False)
    bank = open_bank(tmp_path / "loaded")
    assert bank.checkpoints == [0]
    np.testing.assert_allclose(
        bank.outputs("val").dense(), open_bank(digits_bank).outputs("val").dense(), atol=1e-5
    )


_BUILD = """
import sys
from trainables.config import DataConfig, ModelConfig, OptimConfig, TeacherConfig
from trainables.loops import teacher_loop
cfg = TeacherConfig(
    data=DataConfig(kind="sparse_parity", n_bits=20, k=3, train_size=20000, holdout_size=1000),
    model=ModelConfig(hidden=[256]), optim=OptimConfig(steps=100000), eval_every=50,
    checkpoint_every=50, output_dir=sys.argv[1],
)
for record in teacher_loop(cfg):
    print(record["step"], flush=True)
"""


def test_a_teacher_run_killed_midway_leaves_nothing_that_reads_as_complete(tmp_path):
    final = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", _BUILD, str(final)], stdout=subprocess.PIPE, text=True
    )
    try:
        for _ in range(4):  # a few checkpoints are on disk in the temporary build
            assert proc.stdout.readline().strip(), "the build ended early"
        building = [p for p in tmp_path.iterdir() if p.name.startswith(".run.")]
        assert building and any(building[0].glob("step-*.pt"))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(0.1)
    assert not final.exists() and not run_intact(final)
    with pytest.raises(FileNotFoundError, match="no teacher run"):
        open_run(final)
    # a later run to the same place is unaffected by the debris and completes, as does its bank
    cfg = TeacherConfig(
        data=DataConfig(kind="sparse_parity", n_bits=20, k=3, train_size=2000, holdout_size=100),
        model=ModelConfig(hidden=[16]), optim=OptimConfig(steps=20), eval_every=10,
        output_dir=str(final),
    )  # fmt: skip
    list(teacher_loop(cfg))
    assert run_intact(final)
    build_bank(cfg, final, tmp_path / "bank", use_ray=False)
    assert bank_complete(tmp_path / "bank")
