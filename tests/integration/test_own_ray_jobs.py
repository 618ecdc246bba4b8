"""The trainables in a user's own Ray jobs, through public names only (the README's "Use in
your own Ray job"): a teacher bank from ``search.teacher_bank``, the student in the user's
own Tune grid and own PBT, in the user's own ``TorchTrainer`` (DDP really in sync), a student
loaded back from its checkpoint, a trial's config from a sweep's results run again."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ray import train, tune
from ray.train.torch import TorchTrainer

import search
from analysis import load_trials
from search.errors import SweepInputError
from trainables import (
    CheckpointConfig,
    CurriculumConfig,
    DataConfig,
    OptimConfig,
    StudentConfig,
    TeacherConfig,
    distributed_student,
    load_student,
    student_worker,
    train_student,
    train_teacher,
)
from trainables.data import load_splits


def test_these_tests_use_public_names_only(public_only):
    public_only(__file__)
    with pytest.raises(AssertionError, match="trainables.loops._build"):
        public_only(code="from trainables.loops._build import make_model")


@pytest.fixture(scope="module")
def bank(ray_session, tmp_path_factory):
    """A small digits teacher, trained and banked on the session's Ray."""
    storage = tmp_path_factory.mktemp("storage")
    teacher = TeacherConfig(optim=OptimConfig(lr=1e-3, batch_size=64, steps=200), eval_every=100)
    path = search.teacher_bank(teacher, data=DataConfig(kind="digits"), storage=storage)
    assert search.teacher_bank(teacher, storage=storage) == path  # found again by its hash
    return str(path)


def test_a_bad_teacher_bank_request_names_every_problem_before_anything_starts(tmp_path):
    with pytest.raises(SweepInputError) as caught:
        search.teacher_bank(
            {"optim": {"lr": -1.0}, "colour": "red"}, data={"kind": "nope"}, storage=tmp_path
        )
    message = str(caught.value)
    assert "teacher.optim.lr" in message and "teacher.colour" in message and "data" in message
    assert "\n" not in message and not any(tmp_path.iterdir())


def _student(bank: str, **kw) -> StudentConfig:
    return StudentConfig(
        teacher_bank=bank, optim=OptimConfig(steps=100, batch_size=32), eval_every=50, **kw
    )


def _test_accuracy(model: torch.nn.Module, cfg: StudentConfig) -> float:
    data = load_splits(cfg.data)
    with torch.no_grad():
        logits = model(torch.as_tensor(np.asarray(data.x_test), dtype=torch.float32))
    return (logits.argmax(dim=1).numpy() == data.y_test).mean().item()


@pytest.mark.ray
def test_own_tune_grid_then_each_student_loads_back_with_its_test_accuracy(bank, tmp_path):
    space = _student(bank).model_dump()
    space["curriculum"]["kind"] = tune.grid_search(["none", "paced"])
    space["distill"]["temperature"] = tune.grid_search([2.0, 4.0])
    results = tune.Tuner(
        train_student,
        param_space=space,
        tune_config=tune.TuneConfig(reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0),
    ).fit()
    assert [r.error for r in results] == [None] * 4
    for result in results:
        model, cfg = load_student(result.checkpoint)
        assert cfg.distill.temperature == result.config["distill"]["temperature"]
        assert not model.training
        assert _test_accuracy(model, cfg) == pytest.approx(result.metrics["test_accuracy"])
        same, _ = load_student(result.path)  # a trial's directory: its latest checkpoint
        pairs = zip(model.state_dict().values(), same.state_dict().values(), strict=True)
        assert all(torch.equal(a, b) for a, b in pairs)
    with pytest.raises(FileNotFoundError, match="checkpoints of 4 trials"):
        load_student(tmp_path)  # the experiment's directory: whose student would be a guess
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_student(None)  # a failed trial's Result.checkpoint


@pytest.mark.ray
def test_own_pbt_with_reused_actors_continues_from_checkpoints(bank, tmp_path):
    from ray.tune.schedulers import PopulationBasedTraining

    space = _student(bank, checkpoint=CheckpointConfig(every=1)).model_dump()
    space["optim"]["steps"], space["eval_every"] = 200, 25
    alphas = [0.1, 0.3, 0.5, 0.7, 0.9]  # a list: PBT moves to a neighbour, within bounds
    space["distill"]["alpha"] = tune.choice(alphas)
    pbt = PopulationBasedTraining(  # the bottom half exploits the top at every evaluation
        time_attr="step", perturbation_interval=25, quantile_fraction=0.5,
        hyperparam_mutations={"distill": {"alpha": alphas}},
    )  # fmt: skip
    results = tune.Tuner(
        train_student,
        param_space=space,
        tune_config=tune.TuneConfig(
            scheduler=pbt, metric="val_accuracy", mode="max", num_samples=4, reuse_actors=True
        ),
        run_config=tune.RunConfig(
            storage_path=str(tmp_path),
            name="pbt",
            verbose=0,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        ),  # fmt: skip
    ).fit()
    assert [r.error for r in results] == [None] * 4
    assert all(r.metrics["step"] == 200 for r in results)
    assert (tmp_path / "pbt" / "pbt_global.txt").read_text().strip()  # trials exploited others
    for result in results:
        # An exploit continues from the donor's latest checkpoint, at its step (which may be
        # behind or ahead of the trial's own: PBT here is asynchronous), never from scratch:
        # the first evaluation (step 25) is reported once, by the trial's fresh start.
        steps = result.metrics_dataframe["step"].tolist()
        assert steps.count(25) == 1 and steps[-1] == 200, steps


class _AllRanks(train.UserCallback):
    """Every rank's reported metrics (Ray Train keeps only rank 0's), into a JSON file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def after_report(self, run_context, metrics, checkpoint) -> None:
        with open(self.path, "a") as file:
            file.write(json.dumps(metrics) + "\n")


@pytest.mark.ray
@pytest.mark.slow
def test_own_torch_trainer_with_two_workers_keeps_ranks_in_sync(bank, tmp_path):
    reports = tmp_path / "reports.jsonl"
    config = _student(bank, curriculum=CurriculumConfig(kind="paced")).model_dump()
    result = TorchTrainer(
        student_worker,
        train_loop_config=config,
        scaling_config=train.ScalingConfig(num_workers=2),
        run_config=train.RunConfig(
            storage_path=str(tmp_path), name="ddp", callbacks=[_AllRanks(str(reports))]
        ),
    ).fit()
    assert result.error is None
    assert result.metrics["step"] == 100 and "test_accuracy" in result.metrics
    lines = [json.loads(line) for line in reports.read_text().splitlines()]
    assert [len(ranks) for ranks in lines] == [2, 2]
    for rank0, rank1 in lines:
        # the same parameters on both ranks: the same validation loss to the last bit...
        assert rank0["val_loss"] == rank1["val_loss"]
        assert rank0["val_accuracy"] == rank1["val_accuracy"]
        assert rank0["samples_seen"] == rank1["samples_seen"] == 32 * 2 * rank0["step"]
        # ...from different shards of each global batch
        assert rank0["train_loss"] != rank1["train_loss"]
    model, cfg = load_student(result.checkpoint)
    assert _test_accuracy(model, cfg) == pytest.approx(result.metrics["test_accuracy"])


def test_the_tune_trainable_outside_tune_fails_at_once_naming_the_right_entry_point(bank):
    with pytest.raises(RuntimeError, match="tune.Tuner.*student_worker"):
        train_student(_student(bank).model_dump())
    with pytest.raises(RuntimeError, match="TorchTrainer.*train_student"):
        student_worker(_student(bank).model_dump())
    with pytest.raises(RuntimeError, match=r"tune.Tuner\(distributed_student"):
        distributed_student(2)(_student(bank).model_dump())
    with pytest.raises(RuntimeError, match="trainables.bank.teacher_bank"):
        train_teacher(TeacherConfig().model_dump())


@pytest.mark.ray
@pytest.mark.slow
def test_the_tune_trainable_inside_a_torch_trainer_fails_the_run_with_one_clear_error(
    bank, tmp_path
):
    trainer = TorchTrainer(
        train_student,
        train_loop_config=_student(bank).model_dump(),
        scaling_config=train.ScalingConfig(num_workers=1),
        run_config=train.RunConfig(storage_path=str(tmp_path), name="wrong"),
    )
    with pytest.raises(Exception, match="student_worker"):
        trainer.fit()


@pytest.mark.ray
def test_a_sweeps_trial_runs_again_from_its_config_and_its_student_loads(example_sweep, tmp_path):
    sweep = example_sweep(
        "quickstart.yaml", "again", "num_samples=2", "baselines=[labels_only]",
        "student.optim.steps=100", "student.eval_every=50", "teacher.optim.steps=200",
    )  # fmt: skip
    trials = load_trials(sweep).to_pylist()
    row = next(r for r in trials if r["config.arm"] == "search")
    cfg = search.config_of(row["trial_id"], sweep)
    assert cfg == search.config_of(row)  # a row alone is enough
    assert cfg == search.config_of(load_trials(sweep).to_pandas().iloc[trials.index(row)])
    with pytest.raises(KeyError, match="trial_id: 'nope'"):
        search.config_of("nope", sweep)
    with pytest.raises(KeyError, match="trial_id: 'nope'"):
        search.checkpoint_of(sweep, "nope")
    with pytest.raises(TypeError, match="a trial id or one trials row"):
        search.config_of(5, sweep)
    again = tune.Tuner(
        train_student,
        param_space=cfg.model_dump(),
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0),
    ).fit()[0]
    assert again.error is None
    assert again.metrics["step"] == row["steps"]
    for metric in ("val_accuracy", "test_accuracy", "best_val_accuracy", "val_loss"):
        assert again.metrics[metric] == pytest.approx(row[metric], abs=1e-9), metric
    model, loaded = load_student(search.checkpoint_of(sweep, row["trial_id"]))
    assert loaded == cfg
    assert _test_accuracy(model, loaded) == pytest.approx(row["test_accuracy"])
