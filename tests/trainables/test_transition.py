"""The teacher's phase transition: a threshold below which there is none (a flat teacher), the
curve it is measured on (training rows, never validation), and ``two_shot`` from checkpoint
``transition`` refusing a teacher without one (Panigrahi et al. 2024)."""

import math

import numpy as np
import pytest
from pydantic import ValidationError

from trainables.bank import build_bank
from trainables.config import (
    ModelConfig,
    OptimConfig,
    StudentConfig,
    TeacherConfig,
    TeacherScheduleConfig,
)
from trainables.distill import open_bank, open_run
from trainables.distill._checkpoints import detect_transition, required_rise, steepest_rise
from trainables.loops import _teacher as teacher_module
from trainables.loops import build_student, missing_transition, teacher_loop

STEPS = [100, 200, 300, 400, 500, 600, 700]


def test_a_flat_curve_has_no_transition():
    flat = [0.500, 0.500, 0.501, 0.504, 0.502, 0.503, 0.503]  # rises by 0.004 at most
    assert detect_transition(STEPS, flat, window=3) is None
    assert steepest_rise(STEPS, flat, window=3)["rise"] == pytest.approx(0.004)


def test_a_steep_curve_has_its_window():
    steep = [0.50, 0.51, 0.50, 0.62, 0.90, 0.99, 1.00]  # rises .11 .40 .37 .10 over 2
    window = {"start": 300, "end": 500, "rise": pytest.approx(0.40), "step": 500}
    assert detect_transition(STEPS, steep, window=2) == window
    assert detect_transition(STEPS, steep, window=2, rows=4096) == window
    assert detect_transition(STEPS, steep, window=2, min_rise=0.41) is None


def test_the_required_rise_covers_the_noise_of_the_rows_measured():
    # 3 standard errors of the difference of two accuracies on 100 rows at 0.5 and 0.6
    noise = 3 * math.sqrt((0.5 * 0.5 + 0.6 * 0.4) / 100)
    assert required_rise(0.5, 0.6, min_rise=0.05, rows=100) == pytest.approx(noise)
    assert required_rise(0.5, 0.6, min_rise=0.05, rows=100_000) == 0.05
    assert required_rise(0.5, 0.6, min_rise=0.05) == 0.05
    curve = [0.5, 0.5, 0.5, 0.6, 0.6, 0.6, 0.6]  # a rise of 0.1: noise on 100 rows
    assert detect_transition(STEPS, curve, rows=100) is None
    assert detect_transition(STEPS, curve, rows=10_000) is not None


def test_the_threshold_settings_are_validated_with_their_field():
    for field, bad in [
        ("transition_min_rise", -0.1), ("transition_min_rise", 1.0),
        ("transition_holdout_fraction", -0.1), ("transition_holdout_fraction", 0.6),
    ]:  # fmt: skip
        with pytest.raises(ValidationError, match=field):
            TeacherConfig(**{field: bad})
    assert TeacherConfig().transition_min_rise == 0.05


def _train_teacher(home, **kw):
    cfg = TeacherConfig(
        model=ModelConfig(hidden=[16]), eval_every=5, checkpoint_every=5,
        output_dir=str(home / "run"), **kw,
    )  # fmt: skip
    records = list(teacher_loop(cfg))
    build_bank(cfg, home / "run", home / "bank", use_ray=False, progress=lambda line: None)
    return cfg, records


@pytest.fixture(scope="module")
def flat_bank(tmp_path_factory):
    """A teacher that cannot learn (SGD at lr 1e-9): its accuracy is flat."""
    home = tmp_path_factory.mktemp("flat")
    _train_teacher(home, optim=OptimConfig(kind="sgd", lr=1e-9, batch_size=32, steps=20))
    return home / "bank"


def test_a_flat_teacher_banks_no_transition_and_says_what_it_measured(flat_bank):
    bank = open_bank(flat_bank)
    assert bank.transition is None and open_run(flat_bank.parent / "run").transition is None
    assert abs(bank.metrics["transition_rise"]) < 0.05
    assert bank.metrics["transition_required_rise"] == pytest.approx(0.05)
    assert all("train_accuracy" in r for r in bank.history)  # the curve: training rows


def test_two_shot_from_the_transition_refuses_a_flat_teacher_in_one_line(flat_bank):
    base = dict(teacher_bank=str(flat_bank), optim=OptimConfig(steps=10), eval_every=5)
    two_shot = TeacherScheduleConfig(kind="two_shot", checkpoint="transition")
    with pytest.raises(ValueError) as refused:
        build_student(StudentConfig(teacher_schedule=two_shot, **base))
    (line,) = str(refused.value).splitlines()
    bank = open_bank(flat_bank)
    rise = bank.metrics["transition_rise"]
    assert line == (
        "teacher_schedule.checkpoint: 'transition' with two_shot needs the teacher's phase "
        f"transition, but the teacher bank {flat_bank} shows none: its steepest rise in "
        f"accuracy over 3 evaluations is {rise:.3f}, below the 0.050 required "
        "(teacher.transition_min_rise 0.05); set teacher_schedule.checkpoint to one of the "
        "kept steps (5, 10, 15, 20) or lower teacher.transition_min_rise (the teacher is then "
        "trained again)"
    )
    assert missing_transition(bank, where="x", field="student.teacher_schedule.checkpoint")
    # a kept step, and the schedules that do not read the transition, still work
    for schedule in (
        TeacherScheduleConfig(kind="two_shot", checkpoint=10),
        TeacherScheduleConfig(kind="lockstep"),
        TeacherScheduleConfig(kind="explicit", steps=[5, 20], switches=[0.5]),
        TeacherScheduleConfig(kind="final"),  # its unused checkpoint stays 'transition'
    ):
        build_student(StudentConfig(teacher_schedule=schedule, **base))


def test_the_transition_is_measured_on_a_holdout_the_teacher_never_trains_on(tmp_path, monkeypatch):
    pools = []
    sampler = teacher_module.ShuffleSampler

    def spy(pool, *args, **kwargs):
        pools.append(np.asarray(pool))
        return sampler(pool, *args, **kwargs)

    monkeypatch.setattr(teacher_module, "ShuffleSampler", spy)
    cfg, records = _train_teacher(
        tmp_path, optim=OptimConfig(lr=1e-3, batch_size=64, steps=150),
        transition_holdout_fraction=0.2,
    )  # fmt: skip
    (pool,) = pools
    holdout = teacher_module.teacher_holdout(cfg, teacher_module.load_data(cfg.data))
    assert len(holdout) == round(0.2 * 1079) and not set(pool) & set(holdout)
    assert len(pool) + len(holdout) == 1079
    assert all("holdout_accuracy" in r and "train_accuracy" not in r for r in records)
    bank = open_bank(tmp_path / "bank")
    assert bank.transition is not None  # digits: a steep rise, on rows it never saw
    assert bank.transition["checkpoint"] in bank.checkpoints
    assert bank.metrics["transition_rise"] == pytest.approx(bank.transition["rise"])


def test_the_transition_is_found_on_the_training_curve_never_on_validation(tmp_path, monkeypatch):
    """A history whose validation accuracy jumps while the training curve stays flat has no
    transition; and the teacher loop hands the detector its training curve."""
    flat = [
        {"step": s, "val_accuracy": v, "train_accuracy": 0.5}
        for s, v in [(10, 0.1), (20, 0.1), (30, 0.9), (40, 0.95), (50, 0.95)]
    ]
    cfg = TeacherConfig(transition_window=1)
    assert teacher_module.find_transition(cfg, flat, "train_accuracy", 1000)[0] is None
    assert teacher_module.find_transition(cfg, flat, "val_accuracy", 1000)[0] is not None
    curves = []
    real = teacher_module.find_transition

    def spy(cfg, history, curve, rows):
        curves.append(curve)
        return real(cfg, history, curve, rows)

    monkeypatch.setattr(teacher_module, "find_transition", spy)
    _, records = _train_teacher(tmp_path, optim=OptimConfig(lr=1e-3, batch_size=64, steps=20))
    assert curves == ["train_accuracy"]
    assert all("train_accuracy" in r for r in records)


def test_the_refusal_suggests_a_lower_threshold_only_where_it_set_the_bar():
    from types import SimpleNamespace

    def bank(need):
        return SimpleNamespace(
            transition=None, checkpoints=[10, 20],
            metrics={"transition_rise": 0.01, "transition_required_rise": need},
            extra={"teacher": {"transition_min_rise": 0.05, "transition_window": 3}},
        )  # fmt: skip

    noisy = missing_transition(bank(0.08), where="t")  # the noise of few rows set the bar
    assert "0.080 required (three standard errors" in noisy
    assert "lower teacher.transition_min_rise" not in noisy
    assert noisy.endswith("one of the kept steps (10, 20)")
    assert "or lower teacher.transition_min_rise" in missing_transition(bank(0.05), where="t")
