"""The training loops through real PyTorch on digits (no Ray)."""

import inspect
import math

import pytest

from trainables.bank import build_bank, teacher_bank
from trainables.config import (
    CurriculumConfig,
    DistillConfig,
    OptimConfig,
    PacingConfig,
    ScheduleConfig,
    StageConfig,
    StudentConfig,
    TeacherConfig,
)
from trainables.distill import open_bank
from trainables.loops import (
    StudentRun,
    build_student,
    repeated_loop,
    student_loop,
    teacher_loop,
    train_step,
)

CURVE_KEYS = {
    "step", "samples_seen", "wall_time_s", "val_accuracy", "val_loss", "train_loss", "ce_loss",
    "kd_loss", "curriculum_fraction", "temperature", "alpha", "teacher_checkpoint", "stage",
    "easy_accuracy", "hard_accuracy", "teacher_agreement", "best_val_accuracy", "steps_to_target",
}  # fmt: skip


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    home = tmp_path_factory.mktemp("teacher")
    out = home / "outputs"
    cfg = TeacherConfig(
        optim=OptimConfig(lr=1e-3, batch_size=64, steps=300), eval_every=10,
        output_dir=str(home / "run"),
    )  # fmt: skip
    records = list(teacher_loop(cfg))
    build_bank(cfg, home / "run", out, use_ray=False)
    assert [r["step"] for r in records] == list(range(10, 301, 10))
    assert records[-1]["val_accuracy"] > 0.93
    scores = open_bank(out).scores
    assert set(scores) == {
        "confidence",
        "margin",
        "loss",
        "entropy",
        "el2n",
        "forgetting",
        "shapley",
    }
    assert all(len(v) == 1079 for v in scores.values())
    assert len(set(scores["forgetting"])) > 1  # the trajectory saw examples learned and forgotten
    return str(out)


def _student(teacher_dir, **kw):
    base = dict(
        optim=OptimConfig(steps=200, batch_size=32, lr=3e-3),
        eval_every=50,
        teacher_bank=teacher_dir,
    )
    return StudentConfig(**{**base, **kw})


def _records(loop):
    """The records of a ``student_loop`` or ``repeated_loop``, which yield ``(record, run)``."""
    return [record for record, _ in loop]


def test_student_reports_every_curve_metric_and_learns(teacher_dir):
    records = _records(student_loop(_student(teacher_dir)))
    assert [r["step"] for r in records] == [50, 100, 150, 200]
    for r in records:
        assert r.keys() >= CURVE_KEYS
    last = records[-1]
    assert last["val_accuracy"] > 0.9 and "test_accuracy" in last
    assert last["samples_seen"] == 200 * 32
    assert last["best_val_accuracy"] == max(r["val_accuracy"] for r in records)
    assert last["teacher_checkpoint"] == 300
    first_hit = next(r["step"] for r in records if r["val_accuracy"] >= 0.9)
    assert last["steps_to_target"] == first_hit
    # the total is exactly the convention's mix of its parts
    assert last["train_loss"] == pytest.approx(
        0.5 * last["ce_loss"] + 0.5 * last["kd_loss"], rel=1e-4
    )


def test_linear_curriculum_grows_the_allowed_fraction(teacher_dir):
    pacing = PacingConfig(kind="linear", start=0.1, full_at=0.5)
    cfg = _student(teacher_dir, curriculum=CurriculumConfig(kind="paced", pacing=pacing))
    fractions = [r["curriculum_fraction"] for r, _ in student_loop(cfg)]
    # fraction of the batch drawn at steps 50, 100, 150, 200: c((s-1)/200) = min(1, 0.1 + 0.9 * (s-1)/100)
    expected = [min(1.0, 0.1 + 0.9 * (s - 1) / 100) for s in (50, 100, 150, 200)]
    assert fractions == pytest.approx(expected)


def test_same_seed_same_run(teacher_dir):
    cfg = _student(
        teacher_dir,
        curriculum=CurriculumConfig(kind="paced"),
        distill=DistillConfig(temperature=2.0, alpha=0.2),
    )
    a, b = _records(student_loop(cfg)), _records(student_loop(cfg))
    assert [r["val_loss"] for r in a] == [r["val_loss"] for r in b]


def test_labels_only_student_ignores_the_teacher_term(teacher_dir):
    records = _records(student_loop(_student(teacher_dir, distill=DistillConfig(alpha=1.0))))
    assert all(math.isclose(r["train_loss"], r["ce_loss"], rel_tol=1e-5) for r in records)


def test_missing_teacher_outputs_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="teacher_bank is required"):
        next(student_loop(StudentConfig()))
    with pytest.raises(FileNotFoundError, match="missing or incomplete"):
        next(student_loop(StudentConfig(teacher_bank=str(tmp_path / "none"))))


def test_staged_curriculum_moves_through_stages_with_their_settings(teacher_dir):
    stages = [
        StageConfig(band=(0.0, 0.5), temperature=8.0, alpha=0.2, augment=0.5, length=0.5),
        StageConfig(band=(0.0, 1.0), temperature=2.0, alpha=0.8, length=0.5),
    ]
    records = _records(
        student_loop(
            _student(teacher_dir, curriculum=CurriculumConfig(kind="staged", stages=stages))
        )
    )
    assert [(r["stage"], r["temperature"], r["alpha"]) for r in records] == [
        (0, 8.0, 0.2), (0, 8.0, 0.2), (1, 2.0, 0.8), (1, 2.0, 0.8)
    ]  # fmt: skip
    assert [r["curriculum_fraction"] for r in records] == pytest.approx(
        [0.5, 0.5, 1.0, 1.0], abs=1e-3
    )
    assert records[-1]["val_accuracy"] > 0.85


def test_threshold_gate_advances_before_the_stage_length(teacher_dir):
    cur = CurriculumConfig(
        kind="staged", progression="threshold", gate_threshold=0.5,
        stages=[StageConfig(band=(0.0, 0.5), length=0.9), StageConfig(band=(0.0, 1.0), length=0.1)],
    )  # fmt: skip
    stages = [r["stage"] for r, _ in student_loop(_student(teacher_dir, curriculum=cur))]
    # the gate opened at the first evaluation (records show the stage trained in), long
    # before 90% of the run
    assert stages == [0, 1, 1, 1]


def test_temperature_schedules_reach_the_loss(teacher_dir):
    cosine = DistillConfig(
        temperature=8.0, temperature_schedule=ScheduleConfig(kind="cosine", end=1.0)
    )
    temps = [r["temperature"] for r, _ in student_loop(_student(teacher_dir, distill=cosine))]
    assert temps == pytest.approx(
        [1 + 3.5 * (1 + math.cos(math.pi * (s - 1) / 200)) for s in (50, 100, 150, 200)]
    )
    ctkd = DistillConfig(temperature=4.0, temperature_schedule=ScheduleConfig(kind="ctkd"))
    temps = [r["temperature"] for r, _ in student_loop(_student(teacher_dir, distill=ctkd))]
    assert temps[0] != 4.0 and all(1 < t < 21 for t in temps)  # learned, within CTKD's range


@pytest.mark.parametrize(
    "kind", ["none", "paced", "confidence", "self_paced", "focal", "importance", "rho", "staged"]
)
def test_every_curriculum_kind_trains(teacher_dir, kind):
    records = _records(student_loop(_student(teacher_dir, curriculum=CurriculumConfig(kind=kind))))
    assert records[-1]["val_accuracy"] > 0.85, kind


def test_pruning_and_anti_curriculum(teacher_dir):
    cur = CurriculumConfig(
        kind="paced", order="hard_first", prune_fraction=0.5, prune_by="forgetting"
    )
    records = _records(student_loop(_student(teacher_dir, curriculum=cur)))
    assert records[-1]["samples_seen"] == 200 * 32


def test_stage_schedule_interpolates_the_temperature_across_stages(teacher_dir):
    distill = DistillConfig(
        temperature=8.0, temperature_schedule=ScheduleConfig(kind="stage", end=2.0)
    )
    stages = [
        StageConfig(band=(0.0, 0.5), length=0.25),
        StageConfig(band=(0.0, 0.8), length=0.25),
        StageConfig(length=0.5),
    ]
    cfg = _student(
        teacher_dir, distill=distill, curriculum=CurriculumConfig(kind="staged", stages=stages)
    )
    assert [(r["stage"], r["temperature"]) for r, _ in student_loop(cfg)] == [
        (0, 8.0),
        (1, 5.0),
        (2, 2.0),
        (2, 2.0),
    ]


def test_a_users_difficulty_column_orders_the_curriculum(tmp_path):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from trainables.config import DataConfig

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    hardness = np.abs(x[:, 0])  # the user's own (here: arbitrary) difficulty
    table = pa.table({**{f"f{i}": x[:, i] for i in range(4)}, "label": y, "hardness": hardness})
    pq.write_table(table, tmp_path / "data.parquet")
    data = DataConfig(
        kind="file", path=str(tmp_path / "data.parquet"), difficulty_column="hardness"
    )
    out = tmp_path / "teacher"
    teacher = TeacherConfig(
        data=data,
        model={"hidden": [16]},
        optim=OptimConfig(steps=100),
        eval_every=50,
    )
    teacher_bank(teacher, out)
    scores = open_bank(out).scores["column"]
    assert len(scores) == 180  # the training split's rows, their values taken from the column
    assert np.abs(scores[:, None] - hardness[None, :]).min(axis=1).max() < 1e-6
    cur = CurriculumConfig(
        kind="paced", score="column", pacing=PacingConfig(kind="linear", start=0.3, full_at=0.5)
    )
    student = StudentConfig(
        data=data,
        teacher_bank=str(out),
        optim=OptimConfig(steps=100),
        eval_every=50,
        curriculum=cur,
    )
    assert _records(student_loop(student))[-1]["val_accuracy"] > 0.8


def test_column_score_without_a_difficulty_column_is_a_clear_error(teacher_dir):
    cfg = _student(teacher_dir, curriculum=CurriculumConfig(kind="paced", score="column"))
    with pytest.raises(
        ValueError,
        match="curriculum.score: 'column' is not available \\(set data.difficulty_column\\)",
    ):
        next(student_loop(cfg))


def test_repeats_report_the_mean_of_their_seeds_in_lockstep(teacher_dir):
    cfg = _student(teacher_dir, repeats=3, seed=5)
    records = _records(repeated_loop(cfg))
    alone = [_records(student_loop(cfg.model_copy(update={"seed": 5 + i}))) for i in range(3)]
    assert [r["step"] for r in records] == [50, 100, 150, 200]
    for k, record in enumerate(records):
        for key in ("val_accuracy", "train_loss", "kd_loss", "easy_accuracy"):
            expected = sum(run[k][key] for run in alone) / 3
            assert record[key] == pytest.approx(expected, rel=1e-12), key
    last = records[-1]
    assert last["repeats"] == 3
    assert last["val_accuracy_seeds"] == [run[-1]["val_accuracy"] for run in alone]
    assert last["test_accuracy"] == pytest.approx(
        sum(run[-1]["test_accuracy"] for run in alone) / 3
    )
    assert len(set(last["val_accuracy_seeds"])) > 1  # the seeds really differ


def test_a_seed_that_stops_at_target_waits_for_the_others(teacher_dir):
    cfg = _student(teacher_dir, repeats=3, target_accuracy=0.9, stop_at_target=True)
    records = _records(repeated_loop(cfg))
    last = records[-1]
    reached = last["steps_to_target_capped_seeds"]
    assert len(reached) == 3 and max(reached) <= 200
    assert last["step"] == max(reached)  # the run ends when the slowest seed reaches the target
    assert last["steps_to_target"] == round(sum(reached) / 3)
    assert (
        all("test_accuracy" not in r for r in records[:-1])
        and len(last["test_accuracy_seeds"]) == 3
    )


def _curve(record):
    return {k: v for k, v in record.items() if k != "wall_time_s"}


def test_student_loop_yields_each_record_with_its_run(teacher_dir):
    cfg = _student(teacher_dir)
    pairs = [(record, run, run.step) for record, run in student_loop(cfg)]
    assert [step for _, _, step in pairs] == [r["step"] for r, _, _ in pairs] == [50, 100, 150, 200]
    runs = {id(run) for _, run, _ in pairs}
    assert len(runs) == 1 and isinstance(pairs[0][1], StudentRun)  # one run, built once


def test_train_step_advances_a_built_run(teacher_dir):
    run = build_student(_student(teacher_dir))
    for step in (1, 2, 3):
        train_step(run, step)
    assert (run.step, run.count, run.samples) == (3, 3, 3 * 32)


def test_train_step_fits_on_one_screen():
    assert len(inspect.getsource(train_step).splitlines()) <= 45


@pytest.mark.parametrize("kind", ["paced", "confidence", "staged", "importance"])
def test_a_run_resumed_from_its_state_continues_exactly(teacher_dir, kind):
    cfg = _student(teacher_dir, curriculum=CurriculumConfig(kind=kind))
    whole = _records(student_loop(cfg))
    records, state = [], None
    for record, run in student_loop(cfg):  # taking a state mid-run changes nothing
        records.append(record)
        if record["step"] == 100:
            state = run.state_dict()
    assert [_curve(r) for r in records] == [_curve(r) for r in whole]
    resumed = _records(student_loop(cfg, resume_from=state))
    assert [r["step"] for r in resumed] == [150, 200]
    assert [_curve(r) for r in resumed] == [_curve(r) for r in whole[2:]]
    changed = cfg.model_copy(update={"distill": DistillConfig(temperature=1.5)})
    assert _records(student_loop(changed, resume_from=state))[0]["temperature"] == 1.5


def test_a_state_after_the_last_step_reports_the_final_record_again(teacher_dir):
    cfg = _student(teacher_dir)
    *_, (last, run) = student_loop(cfg)
    (again,) = _records(student_loop(cfg, resume_from=run.state_dict()))
    assert again["step"] == 200 and again["test_accuracy"] == last["test_accuracy"]
    assert again["val_accuracy"] == last["val_accuracy"] and math.isnan(again["train_loss"])


def test_repeats_resume_from_one_state_per_seed(teacher_dir):
    cfg = _student(teacher_dir, repeats=2)
    whole = _records(repeated_loop(cfg))
    for record, runs in repeated_loop(cfg):
        if record["step"] == 50:
            states = [run.state_dict() for run in runs]
            break
    assert len(states) == 2 and [s["step"] for s in states] == [50, 50]
    resumed = _records(repeated_loop(cfg, resume_from=states))
    assert [_curve(r) for r in resumed] == [_curve(r) for r in whole[1:]]


def test_bf16_autocast_trains_and_a_missing_gpu_is_a_clear_error(teacher_dir):
    records = _records(student_loop(_student(teacher_dir, precision="bf16", device="cpu")))
    assert records[-1]["val_accuracy"] > 0.8
    if not __import__("torch").cuda.is_available():
        with pytest.raises(ValueError, match="device: 'cuda' requested but no CUDA GPU"):
            _records(student_loop(_student(teacher_dir, device="cuda")))


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["none", "staged", "importance"])
def test_on_a_gpu_the_loop_learns_and_resumes_exactly(teacher_dir, kind):
    cfg = _student(teacher_dir, device="cuda", curriculum=CurriculumConfig(kind=kind))
    whole = _records(student_loop(cfg))
    assert whole[-1]["val_accuracy"] > 0.8
    for record, run in student_loop(cfg):
        if record["step"] == 100:
            state = run.state_dict()
            break
    resumed = _records(student_loop(cfg, resume_from=state))
    assert [r["val_accuracy"] for r in resumed] == [r["val_accuracy"] for r in whole[2:]]
