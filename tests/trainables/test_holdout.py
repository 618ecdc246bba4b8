"""Training-time decisions use a holdout carved from the training split, never the validation
split: RHO-LOSS's irreducible-loss model and the staged curriculum's gate (Mindermann et al.
2022: the irreducible-loss model is fit on a holdout, apart from the data the target model
selects from)."""

import dataclasses

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from trainables.config import CurriculumConfig, OptimConfig, StageConfig, StudentConfig, TaskConfig
from trainables.curriculum import RhoSampler
from trainables.data import Splits
from trainables.distill import write_bank
from trainables.loops import (
    build_student,
    carve_holdout,
    evaluate_run,
    student_holdout,
    student_loop,
    train_step,
)
from trainables.loops._batches import SplitData, evaluate, split_data
from trainables.loops._common import load_data
from trainables.loops._setup import batch_sampler, fit_irreducible_loss
from trainables.tasks import make_task


def test_a_carved_holdout_is_seeded_sized_and_sorted():
    a = carve_holdout(1000, 0.1, seed=3)
    assert len(a) == 100 and list(a) == sorted(set(a)) and a[0] >= 0 and a[-1] < 1000
    np.testing.assert_array_equal(a, carve_holdout(1000, 0.1, seed=3))  # deterministic
    assert not np.array_equal(a, carve_holdout(1000, 0.1, seed=4))  # the trial's seed
    assert len(carve_holdout(5, 0.01, seed=0)) == 1  # at least one row
    assert len(carve_holdout(1000, 0.5, seed=0, most=40)) == 40
    np.testing.assert_array_equal(carve_holdout(10, 0.1, seed=0, given=[7, 2, 7]), [2, 7])
    with pytest.raises(ValueError, match="indices into its 10 training rows, got 3..10"):
        carve_holdout(10, 0.1, seed=0, given=[3, 10])
    with pytest.raises(ValueError, match="data.paths.holdout: 10 of the 10 training rows"):
        carve_holdout(10, 0.1, seed=0, given=np.arange(10))


def test_holdout_fractions_are_validated_with_their_field():
    for field in ("rho_holdout_fraction", "gate_holdout_fraction"):
        for bad in (0.0, 0.6):
            with pytest.raises(ValidationError, match=field):
                CurriculumConfig(**{field: bad})
    assert CurriculumConfig(rho_holdout_fraction=0.5).rho_holdout_fraction == 0.5


def test_only_runs_that_decide_hold_rows_out():
    assert student_holdout(CurriculumConfig(kind="none"), 100, seed=0) is None
    assert student_holdout(CurriculumConfig(kind="staged"), 100, seed=0) is None  # fixed
    rho = student_holdout(CurriculumConfig(kind="rho", rho_holdout_fraction=0.2), 100, seed=0)
    gate = CurriculumConfig(kind="staged", progression="plateau", gate_holdout_fraction=0.3)
    assert len(rho) == 20 and len(student_holdout(gate, 100, seed=0)) == 30
    given = np.array([5, 6])
    np.testing.assert_array_equal(
        student_holdout(CurriculumConfig(kind="rho"), 100, seed=0, given=given), given
    )


def _marked_splits(n_train=60, n_val=40, n_test=20, features=4):
    """Classification data whose first feature names the row: ``i`` for training row ``i``,
    ``-1 - i`` for validation row ``i`` and ``-1000 - i`` for test row ``i``."""
    rng = np.random.default_rng(0)

    def x(ids):
        out = rng.normal(size=(len(ids), features)).astype(np.float32)
        out[:, 0] = ids
        return out

    def y(n):
        return rng.integers(0, 3, n)

    return Splits(
        x(np.arange(n_train)), y(n_train), x(-1 - np.arange(n_val)), y(n_val),
        x(-1000 - np.arange(n_test)), y(n_test), num_classes=3,
    )  # fmt: skip


class _Recorder(nn.Module):
    """A linear model that records the row ids (first feature) of every input it sees."""

    def __init__(self, seen: list[tuple[bool, np.ndarray]]) -> None:
        super().__init__()
        self.seen, self.linear = seen, nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((self.training, x[:, 0].detach().numpy().astype(np.int64)))
        return self.linear(x)


def test_the_irreducible_loss_model_never_sees_a_validation_row(monkeypatch):
    data = _marked_splits()
    task = make_task(TaskConfig(), vocab_size=None, pad_id=None, tokens=False)
    splits = split_data(data, task, torch.device("cpu"))
    gathered: list[tuple[str, np.ndarray]] = []
    host = SplitData.host

    def spy(self, rows):
        gathered.append((self.split, self.index[rows] if self.index is not None else rows))
        return host(self, rows)

    monkeypatch.setattr(SplitData, "host", spy)
    holdout = carve_holdout(len(data.x_train), 0.25, seed=1)
    seen: list[tuple[bool, np.ndarray]] = []
    losses = fit_irreducible_loss(
        lambda: _Recorder(seen), splits["train"], holdout, steps=25, seed=1, batch_size=8
    )
    assert losses.shape == (len(data.x_train),)  # one per training row
    assert {split for split, _ in gathered} == {"train"}  # no val (or test) row gathered
    fitted = np.concatenate([ids for training, ids in seen if training])
    assert len(fitted) == 25 * 8 and set(fitted) <= set(holdout)  # fit on the holdout alone
    assert (np.concatenate([ids for _, ids in seen]) >= 0).all()  # never a val or test row


@pytest.fixture(scope="module")
def digits_bank(tmp_path_factory):
    """A bank of random teacher logits over digits' splits (enough to build students)."""
    data = load_data(StudentConfig().data)
    rng = np.random.default_rng(0)
    n = len(data.x_train)
    logits = {
        name: rng.normal(size=(len(getattr(data, f"x_{name}")), 10)).astype(np.float32)
        for name in ("train", "val", "test")
    }
    out = tmp_path_factory.mktemp("bank") / "b"
    scores = {"confidence": rng.random(n), "forgetting": rng.random(n)}
    write_bank(out, logits, step=10, metrics={"val_accuracy": 0.1}, scores=scores)
    return str(out)


def _student(bank, **curriculum):
    return StudentConfig(
        teacher_bank=bank, optim=OptimConfig(steps=30, batch_size=16), eval_every=10,
        curriculum=CurriculumConfig(**curriculum),
    )  # fmt: skip


def test_rho_never_draws_its_holdout_and_trains(digits_bank, monkeypatch):
    cfg = _student(digits_bank, kind="rho", rho_holdout_steps=20, rho_holdout_fraction=0.2)
    run = build_student(cfg)
    n = len(run.train)
    assert len(run.holdout) == round(0.2 * n)
    np.testing.assert_array_equal(run.holdout, build_student(cfg).holdout)  # same seed
    assert np.intersect1d(run.sampler.pool, run.holdout).size == 0
    assert len(run.sampler.pool) + len(run.holdout) == n
    drawn = []
    next_batch = RhoSampler.next_batch

    def spy(self, scorer=None):
        batch = next_batch(self, scorer)
        drawn.append(batch.indices)
        return batch

    monkeypatch.setattr(RhoSampler, "next_batch", spy)
    records = [record for record, _ in student_loop(cfg)]  # the real path, end to end
    assert [r["step"] for r in records] == [10, 20, 30] and "test_accuracy" in records[-1]
    assert len(drawn) == 30 and not set(np.concatenate(drawn)) & set(run.holdout)


def test_rho_uses_the_datas_own_holdout_rows(digits_bank, monkeypatch):
    from trainables.loops import _build

    data = load_data(StudentConfig().data)
    given = np.arange(0, len(data.x_train), 7)
    if "holdout" in Splits.__dataclass_fields__:
        held = dataclasses.replace(data, holdout=given)
    else:  # before the data's holdout field exists: the attribute the loops read

        @dataclasses.dataclass(frozen=True)
        class WithHoldout(Splits):
            holdout: np.ndarray | None = None

        fields = {k: getattr(data, k) for k in Splits.__dataclass_fields__}
        held = WithHoldout(**fields, holdout=given)
    monkeypatch.setattr(_build, "load_data", lambda cfg: held)
    run = build_student(_student(digits_bank, kind="rho", rho_holdout_steps=5))
    np.testing.assert_array_equal(run.holdout, given)
    assert np.intersect1d(run.sampler.pool, given).size == 0


def test_pruning_and_resume_keep_the_holdout_out(digits_bank):
    cfg = _student(digits_bank, kind="rho", rho_holdout_steps=5, prune_fraction=0.5)
    run = build_student(cfg)
    assert np.intersect1d(run.sampler.pool, run.holdout).size == 0
    kept = len(run.train) - len(run.holdout)  # prune drops half of the rows it may train on
    assert len(run.sampler.pool) == kept - kept // 2
    # a sampler rebuilt for a resumed run (same config and seed) has the same pool and
    # continues the same sequence from its state
    again = batch_sampler(
        cfg.curriculum, run.targets.teacher, batch_size=16, total_steps=30, seed=cfg.seed,
        irreducible_loss=np.zeros(len(run.train)), holdout=run.holdout,
    )  # fmt: skip
    np.testing.assert_array_equal(again.pool, run.sampler.pool)


def test_the_stage_gate_reads_its_holdout_not_the_validation_split(digits_bank, monkeypatch):
    stages = [StageConfig(band=(0.0, 0.5), length=0.9), StageConfig(length=0.1)]
    cfg = _student(
        digits_bank, kind="staged", progression="threshold", gate_threshold=0.99,
        stages=stages, order="hard_first",
    )  # fmt: skip
    run = build_student(cfg)
    assert run.gate is not None and len(run.gate) == len(run.holdout)
    assert np.intersect1d(run.sampler.pool, run.holdout).size == 0
    fed = []
    update = run.controller.update
    monkeypatch.setattr(run.controller, "update", lambda p, a=None: fed.append(a) or update(p, a))
    for step in range(1, 11):
        train_step(run, step)
    evaluate_run(run, 10, 0.0)
    gate = evaluate(run.model, run.gate)
    band = run.gate_rank <= 0.5  # hard first: the hardest half of the holdout
    assert fed[-1] == pytest.approx(gate.correct[band].nanmean().item())
    hardest = np.argsort(-run.targets.teacher.scores["confidence"][run.holdout])
    assert band[torch.from_numpy(hardest[: len(hardest) // 2])].all()


def test_a_gated_run_resumes_exactly_over_the_same_holdout(digits_bank):
    cfg = _student(
        digits_bank, kind="staged", progression="plateau", gate_patience=1,
        stages=[StageConfig(band=(0.0, 0.5), length=0.9), StageConfig(length=0.1)],
    )  # fmt: skip
    straight = [record for record, _ in student_loop(cfg)]
    loop = student_loop(cfg)
    _, run = next(loop)  # after step 10
    state = run.state_dict()
    resumed = [record for record, _ in student_loop(cfg, resume_from=state)]
    assert [r["val_loss"] for r in resumed] == [r["val_loss"] for r in straight[1:]]
    assert [r["stage"] for r in resumed] == [r["stage"] for r in straight[1:]]
