"""The trainables as a user imports them into their own Ray Tune job (README example)."""

import pytest
from ray import tune

from trainables import OptimConfig, StudentConfig, TeacherConfig, train_student, train_teacher
from trainables.bank import build_bank
from trainables.distill import open_bank, open_run


@pytest.mark.ray
def test_teacher_then_students_in_a_users_own_tuner(ray_session, tmp_path):
    run, outputs = tmp_path / "run", tmp_path / "teacher"
    teacher_cfg = TeacherConfig(
        optim=OptimConfig(lr=1e-3, batch_size=64, steps=200), output_dir=str(run)
    )
    teacher = tune.Tuner(
        train_teacher,
        param_space=teacher_cfg.model_dump(),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), verbose=0),
    ).fit()
    assert teacher[0].error is None and teacher[0].metrics["step"] == 200
    assert open_run(run).step == 200
    build_bank(teacher_cfg, run, outputs)  # on the same Ray, as Ray Data actors
    assert open_bank(outputs).step == 200

    base = StudentConfig(
        teacher_bank=str(outputs), optim=OptimConfig(steps=100), eval_every=50
    ).model_dump()
    base["distill"]["temperature"] = tune.loguniform(1, 8)
    results = tune.Tuner(
        train_student,
        param_space=base,
        tune_config=tune.TuneConfig(num_samples=2, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), verbose=0),
    ).fit()
    assert [r.error for r in results] == [None, None]
    temperatures = {r.metrics["temperature"] for r in results}
    assert len(temperatures) == 2 and all(1 <= t <= 8 for t in temperatures)


@pytest.mark.ray
def test_unknown_config_key_fails_the_trial_naming_the_key(ray_session, tmp_path):
    config = StudentConfig(teacher_bank=str(tmp_path)).model_dump()
    config["distill"]["temprature"] = 2.0
    results = tune.Tuner(
        train_student,
        param_space=config,
        run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), verbose=0),
    ).fit()
    assert "distill.temprature" in str(results[0].error)
