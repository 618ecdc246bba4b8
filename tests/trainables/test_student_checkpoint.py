"""The student's checkpoint (``state.pt``) holds only tensors and plain values and is read
with ``weights_only=True``: a resumed run continues exactly, a crafted pickle is refused."""

import pickle

import pytest
import torch
from ray import tune

from trainables import StudentConfig, train_student, train_student_checkpointed
from trainables.bank import teacher_bank
from trainables.checkpoint import read_state
from trainables.config import (
    CheckpointConfig,
    CurriculumConfig,
    DistillConfig,
    OptimConfig,
    ScheduleConfig,
    TeacherConfig,
)
from trainables.loops import student_loop


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "bank"
    cfg = TeacherConfig(optim=OptimConfig(lr=1e-3, batch_size=64, steps=60), eval_every=20)
    teacher_bank(cfg, out)
    return str(out)


def _student(bank, **kw):
    base = dict(teacher_bank=bank, optim=OptimConfig(steps=30, batch_size=32), eval_every=10)
    return StudentConfig(**{**base, **kw})


def _fit_keeping_every_checkpoint(trainable, config, tmp_path):
    return tune.Tuner(
        trainable,
        param_space=config,
        run_config=tune.RunConfig(
            storage_path=str(tmp_path / "tune"),
            verbose=0,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        ),  # fmt: skip
    ).fit()


def _curve(record):
    return {k: v for k, v in record.items() if k != "wall_time_s"}


CURRICULA = ("none", "paced", "confidence", "self_paced", "focal", "importance", "rho", "staged")


@pytest.mark.parametrize(
    "kw",
    [
        *({"curriculum": CurriculumConfig(kind=kind)} for kind in CURRICULA),
        {"distill": DistillConfig(temperature_schedule=ScheduleConfig(kind="ctkd"))},
        {"optim": OptimConfig(steps=30, batch_size=32, kind="sgd", momentum=0.9)},
    ],
    ids=[*CURRICULA, "ctkd", "sgd-momentum"],
)
def test_a_state_saved_as_the_trainable_does_loads_weights_only_and_resumes_exactly(
    bank, tmp_path, kw
):
    cfg = _student(bank, **kw)
    whole = [_curve(r) for r, _ in student_loop(cfg)]
    for record, run in student_loop(cfg):
        if record["step"] == 10:
            torch.save([run.state_dict()], tmp_path / "state.pt")
            break
    (state,) = torch.load(tmp_path / "state.pt", weights_only=True, map_location="cpu")
    resumed = [_curve(r) for r, _ in student_loop(cfg, resume_from=state)]
    assert resumed == whole[1:]


@pytest.mark.ray
@pytest.mark.parametrize(
    "checkpoint, saved",
    [({}, [30]), ({"every": 1}, [10, 20, 30]), ({"every": 2}, [20, 30]), ({"final": False}, [])],
)
def test_the_trainable_saves_the_reports_its_checkpoint_field_asks_for(
    ray_session, bank, tmp_path, checkpoint, saved
):
    cfg = _student(
        bank, curriculum=CurriculumConfig(kind="paced"), checkpoint=CheckpointConfig(**checkpoint)
    )
    results = _fit_keeping_every_checkpoint(train_student, cfg.model_dump(), tmp_path)
    assert results[0].error is None
    steps = []
    for checkpoint_, _ in results[0].best_checkpoints:
        with checkpoint_.as_directory() as directory:
            (state,) = read_state(directory)  # weights_only
            steps.append(state["step"])
    assert sorted(steps) == saved


@pytest.mark.ray
def test_the_old_checkpointed_name_saves_every_report(ray_session, bank, tmp_path):
    config = _student(bank).model_dump()
    results = _fit_keeping_every_checkpoint(train_student_checkpointed, config, tmp_path)
    assert results[0].error is None and len(results[0].best_checkpoints) == 3


class _Payload:
    """Unpickling this runs code: it writes ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def test_a_crafted_checkpoint_is_refused_without_running_its_code(bank, tmp_path):
    checkpoint, marker = tmp_path / "checkpoint", tmp_path / "marker"
    checkpoint.mkdir()
    torch.save([{"step": 10, "model": _Payload(marker)}], checkpoint / "state.pt")
    torch.load(checkpoint / "state.pt", weights_only=False)  # the payload is live...
    assert marker.read_text() == "ran"
    marker.unlink()
    with pytest.raises(pickle.UnpicklingError, match="exec"):
        read_state(checkpoint)  # what the trainables resume from
    assert not marker.exists()  # ...and was never run


@pytest.mark.parametrize("entry", ["train_student", "student_worker"])
def test_both_entry_points_refuse_a_crafted_checkpoint_to_resume_from(
    bank, tmp_path, monkeypatch, entry
):
    import ray.train

    import trainables.student

    checkpoint, marker = tmp_path / "checkpoint", tmp_path / "marker"
    checkpoint.mkdir()
    torch.save([{"step": 10, "model": _Payload(marker)}], checkpoint / "state.pt")
    # as if Tune (or Ray Train) handed the trial this checkpoint to resume from
    monkeypatch.setattr(trainables.student, "require_tune", lambda *a, **k: None)
    monkeypatch.setattr(tune, "get_checkpoint", lambda: tune.Checkpoint.from_directory(checkpoint))

    class _Context:
        def get_world_rank(self):
            return 0

        def get_world_size(self):
            return 1

    monkeypatch.setattr(ray.train, "get_context", _Context)
    monkeypatch.setattr(
        ray.train, "get_checkpoint", lambda: ray.train.Checkpoint.from_directory(checkpoint)
    )
    with pytest.raises(pickle.UnpicklingError, match="exec"):
        getattr(trainables.student, entry)(_student(bank).model_dump())
    assert not marker.exists()
